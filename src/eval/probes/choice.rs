//! Multiple-choice documents as lm-evaluation-harness builds them (`doc_to_text`,
//! `doc_to_choice`, `doc_to_target`) and the few-shot prompt around them
//! (`description + example₁ + "\n\n" + … + exampleₙ + "\n\n" + context`, `lm_eval/api/samplers.py`).
//! Shared by ARC, MMLU and HellaSwag, which score `acc` (and `acc_norm`) over their choices.

use super::scoring::{self, Group, FEWSHOT_DELIMITER, TARGET_DELIMITER};
use super::{McItem, Scoring};
use crate::error::{Error, Result};
use crate::model::Model;

/// One question: the text before the answer, the answer texts and the index of the right one.
#[derive(Debug, Clone, PartialEq)]
pub struct McDoc {
    /// Stable identity (id or text) for the seeded subset.
    pub key: String,
    pub context: String,
    pub choices: Vec<String>,
    pub gold: usize,
}

impl McDoc {
    /// The document as a solved few-shot example: context, delimiter, right answer.
    pub fn example(&self) -> String {
        format!(
            "{}{TARGET_DELIMITER}{}",
            self.context, self.choices[self.gold]
        )
    }
}

/// `description + examples (each followed by "\n\n") + context`.
pub fn with_shots(description: &str, examples: &[String], context: &str) -> String {
    let mut s = description.to_string();
    for e in examples {
        s.push_str(e);
        s.push_str(FEWSHOT_DELIMITER);
    }
    s.push_str(context);
    s
}

/// Tokenizes a document behind its few-shot prompt. `norm` adds `acc_norm` (by the characters of
/// each choice, as lm-eval counts them).
pub fn prepare(model: &Model, doc: &McDoc, prompt: &str, norm: bool) -> Result<McItem> {
    if doc.gold >= doc.choices.len() {
        return Err(Error::Input(format!(
            "{}: gold index out of range",
            doc.key
        )));
    }
    let group: Group = scoring::group(model, prompt, &doc.choices)?;
    let char_lens = norm.then(|| doc.choices.iter().map(|c| c.chars().count()).collect());
    Ok(McItem {
        groups: vec![group],
        scoring: Scoring::Choice {
            gold: doc.gold,
            char_lens,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn few_shot_prompt_layout() {
        let d = McDoc {
            key: "k".into(),
            context: "Question: Sky?\nAnswer:".into(),
            choices: vec!["blue".into(), "green".into()],
            gold: 0,
        };
        assert_eq!(d.example(), "Question: Sky?\nAnswer: blue");
        assert_eq!(
            with_shots("Desc.\n\n", &[d.example(), d.example()], "Question: Sea?\nAnswer:"),
            "Desc.\n\nQuestion: Sky?\nAnswer: blue\n\nQuestion: Sky?\nAnswer: blue\n\nQuestion: Sea?\nAnswer:"
        );
        assert_eq!(with_shots("", &[], "Q"), "Q");
    }
}
