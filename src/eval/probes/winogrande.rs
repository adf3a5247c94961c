//! WinoGrande (lm-eval `winogrande`, partial evaluation): the sentence up to the blank "_" with
//! each option filled in is a context, the text after the blank (" " + rest, stripped) is the
//! continuation scored after both; the option whose context makes the continuation likelier is
//! the answer; `acc`.
//!
//! Reads `winogrande_1.1/dev.jsonl` (`qID, sentence, option1, option2, answer "1"/"2"`). The train
//! split is not in the data set, so few-shot examples (the sentence solved with the right option)
//! come from the end of the seeded order of the dev file and are never evaluated.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::data;
use super::scoring::{self, FEWSHOT_DELIMITER, TARGET_DELIMITER};
use super::{McItem, Prepared, ProbeConfig, Scoring};
use crate::error::Result;
use crate::model::Model;

#[derive(Deserialize)]
struct Record {
    #[serde(rename = "qID")]
    qid: String,
    sentence: String,
    option1: String,
    option2: String,
    answer: String,
}

/// A sentence split at its blank.
#[derive(Debug, Clone, PartialEq)]
pub struct Doc {
    pub key: String,
    /// `sentence[..blank]`.
    pub before: String,
    /// `sentence[blank + 1..].trim()`: lm-eval's `doc_to_target`.
    pub after: String,
    pub options: [String; 2],
    pub gold: usize,
}

impl Doc {
    /// lm-eval's `doc_to_choice`: the two partial contexts.
    pub fn contexts(&self) -> [String; 2] {
        [0, 1].map(|i| format!("{}{}", self.before, self.options[i]))
    }

    /// The continuation scored after either context.
    pub fn continuation(&self) -> String {
        format!("{TARGET_DELIMITER}{}", self.after)
    }

    /// The sentence solved, as a few-shot example.
    pub fn example(&self) -> String {
        format!("{}{}", self.contexts()[self.gold], self.continuation())
    }
}

pub fn file(root: &Path) -> PathBuf {
    root.join("winogrande")
        .join("winogrande_1.1")
        .join("dev.jsonl")
}

pub fn load(path: &Path) -> Result<Vec<Doc>> {
    let records: Vec<(usize, Record)> = data::read_jsonl(path, "WinoGrande")?;
    records
        .into_iter()
        .map(|(line, r)| {
            let blank = r
                .sentence
                .find('_')
                .ok_or_else(|| data::bad_record(path, line, "the sentence has no blank \"_\""))?;
            let gold = match r.answer.trim() {
                "1" => 0,
                "2" => 1,
                other => {
                    return Err(data::bad_record(
                        path,
                        line,
                        format!("answer {other:?} is not \"1\" or \"2\""),
                    ))
                }
            };
            Ok(Doc {
                key: r.qid,
                before: r.sentence[..blank].to_string(),
                after: r.sentence[blank + 1..].trim().to_string(),
                options: [r.option1, r.option2],
                gold,
            })
        })
        .collect()
}

/// Two groups, one per option, each with the shared continuation.
pub fn prepare_doc(model: &Model, doc: &Doc, shots_prefix: &str) -> Result<McItem> {
    let cont = doc.continuation();
    let groups = doc
        .contexts()
        .iter()
        .map(|ctx| {
            let (c, t) = scoring::encode_pair(model, &format!("{shots_prefix}{ctx}"), &cont)?;
            Ok(scoring::Group {
                ctx: c,
                conts: vec![t],
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(McItem {
        groups,
        scoring: Scoring::Winogrande { gold: doc.gold },
    })
}

pub fn prepare(cfg: &ProbeConfig, model: &Model, shots: usize) -> Result<Prepared> {
    let docs = load(&file(&cfg.data_dir))?;
    let keys: Vec<String> = docs.iter().map(|d| d.key.clone()).collect();
    let (eval, shot_idx) = data::subset_and_shots(&keys, cfg.limit, cfg.seed, shots);
    let prefix: String = shot_idx
        .iter()
        .map(|&i| format!("{}{FEWSHOT_DELIMITER}", docs[i].example()))
        .collect();
    let items = eval
        .into_iter()
        .map(|i| prepare_doc(model, &docs[i], &prefix))
        .collect::<Result<Vec<_>>>()?;
    Ok(Prepared::mc(items, shot_idx.len()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::probes::scoring::{loglikelihoods, EngineOptions};
    use crate::model::random::tiny_model;
    use crate::model::Arch;

    const FIXTURE: &str = r#"{"qID": "a-1", "sentence": "Sarah was a better surgeon than Maria so _ got the easier cases.", "option1": "Sarah", "option2": "Maria", "answer": "2"}
{"qID": "a-2", "sentence": "The cup fell off the table because _ was slippery.", "option1": "cup", "option2": "table", "answer": "1"}
{"qID": "a-3", "sentence": "Ending blank is _", "option1": "x", "option2": "y", "answer": "1"}
"#;

    fn docs() -> Vec<Doc> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("dev.jsonl");
        std::fs::write(&p, FIXTURE).unwrap();
        load(&p).unwrap()
    }

    #[test]
    fn splits_at_the_blank() {
        let d = docs();
        assert_eq!(
            d[0].contexts(),
            [
                "Sarah was a better surgeon than Maria so Sarah",
                "Sarah was a better surgeon than Maria so Maria"
            ]
        );
        assert_eq!(d[0].continuation(), " got the easier cases.");
        assert_eq!(d[0].gold, 1);
        assert_eq!(
            d[0].example(),
            "Sarah was a better surgeon than Maria so Maria got the easier cases."
        );
        assert_eq!(
            (d[2].after.as_str(), d[2].continuation().as_str()),
            ("", " ")
        );
    }

    #[test]
    fn bad_records_name_their_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("dev.jsonl");
        std::fs::write(
            &p,
            FIXTURE.replace(
                "\"answer\": \"1\"}\n{\"qID\": \"a-3\"",
                "\"answer\": \"3\"}\n{\"qID\": \"a-3\"",
            ),
        )
        .unwrap();
        assert!(load(&p).unwrap_err().to_string().contains("line 2"));
        std::fs::write(&p, FIXTURE.replace("because _ was", "because it was")).unwrap();
        let err = load(&p).unwrap_err().to_string();
        assert!(err.contains("line 2") && err.contains("blank"), "{err}");
    }

    /// The partial score compares the continuation's log-likelihood after each option's context
    /// (not the options' own likelihoods): the option after which the continuation is likelier wins.
    #[test]
    fn partial_scoring_direction() {
        let model = tiny_model(Arch::Llama, 11);
        let d = &docs()[1];
        let item = prepare_doc(&model, d, "").unwrap();
        // The continuation tokens are the same after both contexts; only the context differs.
        assert_eq!(item.groups[0].conts, item.groups[1].conts);
        assert_eq!(
            item.groups[0].ctx,
            model
                .encode("The cup fell off the table because cup")
                .unwrap()
        );
        let lls = loglikelihoods(&model, &item.groups, &EngineOptions::default(), None).unwrap();
        let (l0, l1) = (lls[0][0], lls[1][0]);
        let better = if l0 >= l1 { 0 } else { 1 };
        for gold in [0, 1] {
            let scored = crate::eval::probes::score_item(&Scoring::Winogrande { gold }, &lls);
            assert_eq!(scored, vec![("acc", f64::from(u8::from(gold == better)))]);
        }
    }
}
