//! HellaSwag (lm-eval `hellaswag`): context = preprocess(activity_label + ": " + ctx_a + " " +
//! capitalize(ctx_b)), choices = the preprocessed endings; `acc` and `acc_norm`.
//! `preprocess` is lm-eval's: strip, " [title]" → ". ", drop "[…]" spans, replace "  " by " "
//! (one pass, as Python's `str.replace` does). `capitalize` is Python's: first character upper,
//! the rest lower.
//!
//! Reads the HellaSwag jsonl (`ctx_a, ctx_b, activity_label, endings[4], label`; the label may be
//! a number or a string). The data set ships no HellaSwag file; point `hellaswag_file` at one.
//! Few-shot examples come from the end of the file's seeded order and are never evaluated.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::choice::{self, McDoc};
use super::data;
use super::{Prepared, ProbeConfig};
use crate::error::Result;

#[derive(Deserialize)]
struct Record {
    #[serde(default)]
    ind: Option<serde_json::Value>,
    activity_label: String,
    ctx_a: String,
    ctx_b: String,
    endings: Vec<String>,
    label: serde_json::Value,
}

/// The configured file, or `<data>/hellaswag/hellaswag_val.jsonl`.
pub fn file(cfg: &ProbeConfig) -> PathBuf {
    cfg.hellaswag_file
        .clone()
        .unwrap_or_else(|| cfg.data_dir.join("hellaswag").join("hellaswag_val.jsonl"))
}

/// lm-eval's `hellaswag.utils.preprocess`.
pub fn preprocess(text: &str) -> String {
    let text = text.trim().replace(" [title]", ". ");
    let text = drop_bracketed(&text);
    text.replace("  ", " ")
}

/// `re.sub("\\[.*?\\]", "", text)`: removes each "[" and the nearest following "]" (`.` does not
/// cross a newline, so a span never does).
fn drop_bracketed(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find('[') {
        let after = &rest[open + 1..];
        let close = after.find(']').filter(|&c| !after[..c].contains('\n'));
        match close {
            Some(c) => {
                out.push_str(&rest[..open]);
                rest = &after[c + 1..];
            }
            None => {
                out.push_str(&rest[..=open]);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Python's `str.capitalize`.
pub fn capitalize(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first
            .to_uppercase()
            .chain(chars.flat_map(char::to_lowercase))
            .collect(),
        None => String::new(),
    }
}

pub fn load(path: &Path) -> Result<Vec<McDoc>> {
    let records: Vec<(usize, Record)> = data::read_jsonl(path, "HellaSwag")?;
    records
        .into_iter()
        .map(|(line, r)| {
            let label = match &r.label {
                serde_json::Value::Number(n) => n.as_u64(),
                serde_json::Value::String(s) => s.trim().parse().ok(),
                _ => None,
            };
            let gold = label
                .map(|l| l as usize)
                .filter(|&l| l < r.endings.len())
                .ok_or_else(|| {
                    data::bad_record(
                        path,
                        line,
                        format!("label {} is not an ending index", r.label),
                    )
                })?;
            let ctx = format!("{} {}", r.ctx_a, capitalize(&r.ctx_b));
            let context = preprocess(&format!("{}: {ctx}", r.activity_label));
            let key = match r.ind {
                Some(ind) => ind.to_string(),
                None => context.clone(),
            };
            Ok(McDoc {
                key,
                context,
                choices: r.endings.iter().map(|e| preprocess(e)).collect(),
                gold,
            })
        })
        .collect()
}

pub fn prepare(cfg: &ProbeConfig, model: &crate::model::Model, shots: usize) -> Result<Prepared> {
    let docs = load(&file(cfg))?;
    let keys: Vec<String> = docs.iter().map(|d| d.key.clone()).collect();
    let (eval, shot_idx) = data::subset_and_shots(&keys, cfg.limit, cfg.seed, shots);
    let examples: Vec<String> = shot_idx.iter().map(|&i| docs[i].example()).collect();
    let items = eval
        .into_iter()
        .map(|i| {
            choice::prepare(
                model,
                &docs[i],
                &choice::with_shots("", &examples, &docs[i].context),
                true,
            )
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Prepared::mc(items, examples.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preprocess_like_lm_eval() {
        assert_eq!(
            preprocess("  Clean the pan [title] Rinse it. "),
            "Clean the pan. Rinse it."
        );
        assert_eq!(
            preprocess("Add [header] salt [step] and stir."),
            "Add salt and stir."
        );
        // "a " + " " + " d": three spaces, and one pass leaves two (as lm-eval does).
        assert_eq!(preprocess("a [b] [c] d"), "a  d");
        // One pass of "  " → " ": three spaces become two.
        assert_eq!(preprocess("a   b"), "a  b");
        assert_eq!(preprocess("open [ bracket"), "open [ bracket");
        assert_eq!(capitalize("tHE man"), "The man");
        assert_eq!(capitalize(""), "");
    }

    #[test]
    fn loads_records_with_numeric_or_string_labels() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("hs.jsonl");
        std::fs::write(
            &p,
            concat!(
                r#"{"ind": 4, "activity_label": "Removing ice from car", "ctx_a": "Then, the man writes over the snow.", "ctx_b": "then", "endings": [", the man is done.", " he stops [title] Go home.", " a b", " c"], "label": 3}"#,
                "\n",
                r#"{"ind": 9, "activity_label": "Baking", "ctx_a": "A woman mixes.", "ctx_b": "SHE", "endings": ["a", "b", "c", "d"], "label": "1"}"#,
                "\n"
            ),
        )
        .unwrap();
        let docs = load(&p).unwrap();
        assert_eq!(
            docs[0].context,
            "Removing ice from car: Then, the man writes over the snow. Then"
        );
        assert_eq!(docs[0].choices[1], "he stops. Go home.");
        assert_eq!((docs[0].gold, docs[1].gold), (3, 1));
        assert_eq!(docs[1].context, "Baking: A woman mixes. She");
        assert_eq!(docs[0].key, "4");
        std::fs::write(
            &p,
            r#"{"activity_label": "a", "ctx_a": "b", "ctx_b": "c", "endings": ["x"], "label": 2}"#,
        )
        .unwrap();
        assert!(load(&p).unwrap_err().to_string().contains("line 1"));
    }
}
