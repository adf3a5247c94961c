//! ARC (lm-eval `arc_challenge`, `arc_easy`): "Question: {q}\nAnswer:" with the answer texts as
//! choices; `acc` and `acc_norm`. Reads AI2's jsonl (`id, question{stem, choices[{text,label}]},
//! answerKey`); the gold choice is the one whose label equals `answerKey`, which covers items
//! with 3 or 5 choices and the ones labelled "1".."4".
//!
//! Few-shot examples come from a seeded draw of one pool shared by every item (lm-eval draws per
//! item): ARC-Challenge's train file, and ARC-Easy's dev file because its train file is not in
//! the data set.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::choice::{self, McDoc};
use super::data;
use super::{Prepared, ProbeConfig, Task};
use crate::error::Result;
use crate::model::Model;

#[derive(Deserialize)]
struct Record {
    id: String,
    question: Question,
    #[serde(rename = "answerKey")]
    answer_key: String,
}

#[derive(Deserialize)]
struct Question {
    stem: String,
    choices: Vec<Choice>,
}

#[derive(Deserialize)]
struct Choice {
    text: String,
    label: String,
}

/// (evaluated file, few-shot pool) under the data root.
pub fn files(task: Task, root: &Path) -> (PathBuf, PathBuf) {
    let (dir, test, pool) = match task {
        Task::ArcEasy => ("ARC-Easy", "ARC-Easy-Test.jsonl", "ARC-Easy-Dev.jsonl"),
        _ => (
            "ARC-Challenge",
            "ARC-Challenge-Test.jsonl",
            "ARC-Challenge-Train.jsonl",
        ),
    };
    let d = root.join("arc").join(dir);
    (d.join(test), d.join(pool))
}

/// Reads an ARC jsonl file into documents.
pub fn load(path: &Path) -> Result<Vec<McDoc>> {
    let records: Vec<(usize, Record)> = data::read_jsonl(path, "ARC")?;
    records
        .into_iter()
        .map(|(line, r)| {
            let labels: Vec<&str> = r.question.choices.iter().map(|c| c.label.trim()).collect();
            let gold = labels
                .iter()
                .position(|&l| l == r.answer_key.trim())
                .ok_or_else(|| {
                    data::bad_record(
                        path,
                        line,
                        format!(
                            "answerKey {:?} is not among the labels {labels:?}",
                            r.answer_key
                        ),
                    )
                })?;
            if r.question.choices.len() < 2 {
                return Err(data::bad_record(path, line, "fewer than two choices"));
            }
            Ok(McDoc {
                key: r.id,
                context: format!("Question: {}\nAnswer:", r.question.stem),
                choices: r.question.choices.into_iter().map(|c| c.text).collect(),
                gold,
            })
        })
        .collect()
}

pub fn prepare(task: Task, cfg: &ProbeConfig, model: &Model, shots: usize) -> Result<Prepared> {
    let (test, pool) = files(task, &cfg.data_dir);
    let docs = load(&test)?;
    let examples: Vec<String> = if shots > 0 {
        let pool = load(&pool)?;
        let keys: Vec<String> = pool.iter().map(|d| d.key.clone()).collect();
        data::few_shot(&keys, shots, cfg.seed)
            .into_iter()
            .map(|i| pool[i].example())
            .collect()
    } else {
        Vec::new()
    };
    let keys: Vec<String> = docs.iter().map(|d| d.key.clone()).collect();
    let items = data::subset(&keys, cfg.limit, cfg.seed)
        .into_iter()
        .map(|i| {
            let doc = &docs[i];
            choice::prepare(
                model,
                doc,
                &choice::with_shots("", &examples, &doc.context),
                true,
            )
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Prepared::mc(items, examples.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &str = r#"{"id": "q1", "question": {"stem": "Which is a mammal?", "choices": [{"text": "shark", "label": "A"}, {"text": "whale", "label": "B"}, {"text": "trout", "label": "C"}, {"text": "eel", "label": "D"}]}, "answerKey": "B"}
{"id": "q2", "question": {"stem": "What melts ice?", "choices": [{"text": "heat", "label": "1"}, {"text": "cold", "label": "2"}, {"text": "dark", "label": "3"}, {"text": "wind", "label": "4"}]}, "answerKey": "1"}

{"id": "q3", "question": {"stem": "Pick three.", "choices": [{"text": "one", "label": "A"}, {"text": "two", "label": "B"}, {"text": "three", "label": "C"}]}, "answerKey": "C"}
{"id": "q4", "question": {"stem": "Pick five.", "choices": [{"text": "1", "label": "A"}, {"text": "2", "label": "B"}, {"text": "3", "label": "C"}, {"text": "4", "label": "D"}, {"text": "5", "label": "E"}]}, "answerKey": "E"}
"#;

    fn write(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("arc.jsonl");
        std::fs::write(&p, text).unwrap();
        (dir, p)
    }

    #[test]
    fn loads_letters_numbers_and_3_or_5_choices() {
        let (_d, p) = write(FIXTURE);
        let docs = load(&p).unwrap();
        assert_eq!(docs.len(), 4);
        assert_eq!(docs[0].context, "Question: Which is a mammal?\nAnswer:");
        assert_eq!((docs[0].gold, docs[0].choices[1].as_str()), (1, "whale"));
        assert_eq!((docs[1].gold, docs[1].choices[0].as_str()), (0, "heat"));
        assert_eq!((docs[2].choices.len(), docs[2].gold), (3, 2));
        assert_eq!((docs[3].choices.len(), docs[3].gold), (5, 4));
        assert_eq!(docs[3].key, "q4");
    }

    #[test]
    fn unknown_answer_key_names_file_and_line() {
        let bad = FIXTURE.replace(r#""answerKey": "C""#, r#""answerKey": "Z""#);
        let (_d, p) = write(&bad);
        let err = load(&p).unwrap_err().to_string();
        assert!(
            err.contains("arc.jsonl") && err.contains("line 4") && err.contains("\"Z\""),
            "{err}"
        );
    }
}
