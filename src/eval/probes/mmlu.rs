//! MMLU (lm-eval `mmlu`, the `default` template): 57 subjects, test split, few-shot from the
//! first n of the subject's dev split, description "The following are multiple choice questions
//! (with answers) about {subject}.\n\n", context "{question}\nA. …\nB. …\nC. …\nD. …\nAnswer:",
//! choices "A".."D", `acc` over all evaluated questions (lm-eval's size-weighted group mean).
//!
//! Reads Hendrycks' CSVs: `data/{dev,test}/<subject>_{dev,test}.csv`, no header, columns
//! `question, A, B, C, D, answer_letter`. The letters are single tokens after the context, so an
//! item costs one forward of its context (the scoring engine sees that every continuation has
//! one token).

use std::path::{Path, PathBuf};

use super::choice::{self, McDoc};
use super::data;
use super::{Prepared, ProbeConfig};
use crate::error::{Error, Result};
use crate::model::Model;

const LETTERS: [&str; 4] = ["A", "B", "C", "D"];

fn split_dir(root: &Path, split: &str) -> PathBuf {
    root.join("mmlu").join("data").join(split)
}

/// Subjects with a test file, sorted.
pub fn subjects(root: &Path) -> Result<Vec<String>> {
    let dir = split_dir(root, "test");
    data::require(&dir, "MMLU")?;
    let mut out: Vec<String> = std::fs::read_dir(&dir)
        .map_err(|e| Error::io(&dir, e))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_suffix("_test.csv")
                .map(str::to_string)
        })
        .collect();
    out.sort();
    if out.is_empty() {
        return Err(Error::Input(format!(
            "MMLU: no <subject>_test.csv files in {}",
            dir.display()
        )));
    }
    Ok(out)
}

/// "high_school_biology" → "high school biology".
pub fn subject_name(subject: &str) -> String {
    subject.replace('_', " ")
}

pub fn description(subject: &str) -> String {
    format!(
        "The following are multiple choice questions (with answers) about {}.\n\n",
        subject_name(subject)
    )
}

/// Reads one subject CSV into documents (quoted fields may hold commas, quotes and newlines).
pub fn load(path: &Path, subject: &str) -> Result<Vec<McDoc>> {
    data::require(path, "MMLU")?;
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_path(path)
        .map_err(|e| Error::bad_file(path, e.to_string()))?;
    let mut docs = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| Error::bad_file(path, e.to_string()))?;
        let line = record.position().map_or(0, |p| p.line() as usize);
        if record.len() != 6 {
            return Err(data::bad_record(
                path,
                line,
                format!("{} columns, expected 6", record.len()),
            ));
        }
        let answer = record[5].trim();
        let gold = LETTERS
            .iter()
            .position(|&l| l == answer)
            .ok_or_else(|| data::bad_record(path, line, format!("answer {answer:?} is not A-D")))?;
        let question = record[0].trim();
        let options: Vec<&str> = (1..5).map(|i| &record[i]).collect();
        let mut context = question.to_string();
        for (letter, option) in LETTERS.iter().zip(&options) {
            context.push_str(&format!("\n{letter}. {option}"));
        }
        context.push_str("\nAnswer:");
        docs.push(McDoc {
            key: format!("{subject}\u{1f}{question}\u{1f}{}", options.join("\u{1f}")),
            context,
            choices: LETTERS.iter().map(|l| l.to_string()).collect(),
            gold,
        });
    }
    Ok(docs)
}

pub fn prepare(cfg: &ProbeConfig, model: &Model, shots: usize) -> Result<Prepared> {
    let mut docs: Vec<(usize, McDoc)> = Vec::new();
    let subjects = subjects(&cfg.data_dir)?;
    for (s, subject) in subjects.iter().enumerate() {
        let path = split_dir(&cfg.data_dir, "test").join(format!("{subject}_test.csv"));
        docs.extend(load(&path, subject)?.into_iter().map(|d| (s, d)));
    }
    let keys: Vec<String> = docs.iter().map(|(_, d)| d.key.clone()).collect();
    let chosen = data::subset(&keys, cfg.limit, cfg.seed);
    // Few-shot examples per subject, read only for subjects that are evaluated.
    let mut examples: Vec<Option<Vec<String>>> = vec![None; subjects.len()];
    let mut items = Vec::with_capacity(chosen.len());
    for i in chosen {
        let (s, doc) = &docs[i];
        if examples[*s].is_none() {
            examples[*s] = Some(subject_examples(cfg, &subjects[*s], shots)?);
        }
        let shots_text = examples[*s].as_deref().unwrap_or_default();
        let prompt = choice::with_shots(&description(&subjects[*s]), shots_text, &doc.context);
        items.push(choice::prepare(model, doc, &prompt, false)?);
    }
    Ok(Prepared::mc(items, shots))
}

/// The first `shots` dev questions of a subject, solved (lm-eval's `first_n` sampler).
fn subject_examples(cfg: &ProbeConfig, subject: &str, shots: usize) -> Result<Vec<String>> {
    if shots == 0 {
        return Ok(Vec::new());
    }
    let path = split_dir(&cfg.data_dir, "dev").join(format!("{subject}_dev.csv"));
    let dev = load(&path, subject)?;
    if dev.len() < shots {
        return Err(Error::Input(format!(
            "MMLU: {} has {} questions, fewer than the {shots} shots asked for",
            path.display(),
            dev.len()
        )));
    }
    Ok(dev[..shots].iter().map(McDoc::example).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    // Quoted fields with commas, doubled quotes and a newline, as in the real files.
    const FIXTURE: &str = "What is 2+2?,3,4,5,6,B\n\
\"Statement 1 | a, b. Statement 2 | \"\"c\"\".\",\"True, True\",\"False, False\",\"True, False\",\"False, True\",D\n\
\"Two\nlines?\",x,y,z,w,A\n";

    #[test]
    fn parses_quoting_and_builds_the_lm_eval_context() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("algebra_test.csv");
        std::fs::write(&p, FIXTURE).unwrap();
        let docs = load(&p, "college_algebra").unwrap();
        assert_eq!(docs.len(), 3);
        assert_eq!(
            docs[0].context,
            "What is 2+2?\nA. 3\nB. 4\nC. 5\nD. 6\nAnswer:"
        );
        assert_eq!(docs[0].gold, 1);
        assert_eq!(
            docs[1].context,
            "Statement 1 | a, b. Statement 2 | \"c\".\nA. True, True\nB. False, False\nC. True, False\nD. False, True\nAnswer:"
        );
        assert_eq!(docs[1].gold, 3);
        assert!(docs[2].context.starts_with("Two\nlines?\nA. x"));
        assert_eq!(
            docs[0].example(),
            "What is 2+2?\nA. 3\nB. 4\nC. 5\nD. 6\nAnswer: B"
        );
        assert_eq!(
            description("college_algebra"),
            "The following are multiple choice questions (with answers) about college algebra.\n\n"
        );
    }

    #[test]
    fn bad_rows_are_errors_with_their_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x_test.csv");
        std::fs::write(&p, "q,a,b,c,d,A\nq2,a,b,c,d,F\n").unwrap();
        let err = load(&p, "x").unwrap_err().to_string();
        assert!(err.contains("line 2") && err.contains("\"F\""), "{err}");
        std::fs::write(&p, "q,a,b,c,A\n").unwrap();
        assert!(load(&p, "x").unwrap_err().to_string().contains("5 columns"));
    }

    #[test]
    fn subjects_come_from_the_test_files() {
        let dir = tempfile::tempdir().unwrap();
        let test = dir.path().join("mmlu/data/test");
        std::fs::create_dir_all(&test).unwrap();
        for s in ["virology", "abstract_algebra"] {
            std::fs::write(test.join(format!("{s}_test.csv")), FIXTURE).unwrap();
        }
        assert_eq!(
            subjects(dir.path()).unwrap(),
            vec!["abstract_algebra", "virology"]
        );
        let empty = tempfile::tempdir().unwrap();
        let err = subjects(empty.path()).unwrap_err();
        assert!(matches!(err, Error::Input(_)) && err.to_string().contains("mmlu"));
    }
}
