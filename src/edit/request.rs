//! Edit requests — `(prompt, subject, target)` plus optional evaluation prompts — and their
//! tokenization with the subject-last index (spec §1.2–1.3).

use serde::{Deserialize, Deserializer, Serialize};

use crate::error::{Error, Result};
use crate::model::Model;

/// A prompt whose answer should (neighbour) or should not (paraphrase) follow the edit. The
/// answer is optional: without it, metrics compare against the unedited model's prediction.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Probe {
    pub prompt: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<String>,
}

impl<'de> Deserialize<'de> for Probe {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Full {
                prompt: String,
                answer: Option<String>,
            },
        }
        Ok(match Raw::deserialize(d)? {
            Raw::Text(prompt) => Probe {
                prompt,
                answer: None,
            },
            Raw::Full { prompt, answer } => Probe { prompt, answer },
        })
    }
}

/// One fact to write into the model. `prompt` contains the subject (or `{}` in its place) and
/// ends where the target should follow: "The Eiffel Tower is located in the city of" → "Rome".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EditRequest {
    pub subject: String,
    pub prompt: String,
    pub target: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ground_truth: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paraphrases: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub neighbors: Vec<Probe>,
}

impl EditRequest {
    pub fn new(subject: &str, prompt: &str, target: &str) -> Self {
        Self {
            subject: subject.to_string(),
            prompt: prompt.to_string(),
            target: target.to_string(),
            ground_truth: None,
            paraphrases: vec![],
            neighbors: vec![],
        }
    }

    /// Checks what can be checked without a tokenizer; the message says what is wrong.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Input(m));
        if self.subject.trim().is_empty() {
            return bad("the subject is empty".into());
        }
        if self.prompt.trim().is_empty() {
            return bad("the prompt is empty".into());
        }
        if self.target.trim().is_empty() {
            return bad("the target is empty".into());
        }
        let placeholders = self.prompt.matches("{}").count();
        if placeholders > 1 {
            return bad(format!(
                "the prompt {:?} has more than one {{}} placeholder",
                self.prompt
            ));
        }
        if placeholders == 0 && !self.prompt.contains(&self.subject) {
            return bad(format!(
                "the prompt {:?} does not contain the subject {:?}",
                self.prompt, self.subject
            ));
        }
        if self.prompt.len() > 4000 || self.target.len() > 1000 {
            return bad("the prompt or target is too long".into());
        }
        Ok(())
    }

    /// The prompt with the (first) subject occurrence replaced by `{}`.
    pub fn template(&self) -> String {
        if self.prompt.contains("{}") {
            self.prompt.clone()
        } else {
            self.prompt.replacen(&self.subject, "{}", 1)
        }
    }

    /// The prompt with the subject filled in.
    pub fn filled_prompt(&self) -> String {
        self.template().replacen("{}", &self.subject, 1)
    }

    /// The neighbour prompts that have an answer to keep, as `(prompt, answer)`: the locality
    /// items (a neighbour without an answer has nothing to compare).
    pub fn answered_neighbours(&self) -> Vec<(String, String)> {
        self.neighbors
            .iter()
            .filter_map(|n| n.answer.clone().map(|a| (n.prompt.clone(), a)))
            .collect()
    }

    /// The fact alone: subject, prompt and target, which are all a target optimization reads
    /// (the paraphrases, neighbours and ground truth only evaluate it).
    pub fn fact(&self) -> EditRequest {
        EditRequest::new(&self.subject, &self.prompt, &self.target)
    }

    /// Whether two requests state the same fact, so their targets are optimized alike.
    pub fn same_fact(&self, other: &EditRequest) -> bool {
        self.subject == other.subject && self.prompt == other.prompt && self.target == other.target
    }

    /// A short one-line description for logs.
    pub fn describe(&self) -> String {
        format!("{} → {}", self.filled_prompt(), self.target.trim())
    }
}

/// A tokenized prompt with the position of the subject's last token.
#[derive(Debug, Clone, PartialEq)]
pub struct SubjectPrompt {
    pub ids: Vec<u32>,
    pub subject_last: usize,
}

/// Tokenizes `context.replace("{}", template.replace("{}", subject))` and finds the subject-last
/// index as `len(tokenize(text up to the end of the subject)) − 1` (EasyEdit's definition).
pub fn tokenize_with_subject(
    model: &Model,
    context: &str,
    template: &str,
    subject: &str,
) -> Result<SubjectPrompt> {
    let full_template = context.replacen("{}", template, 1);
    let at = full_template
        .find("{}")
        .ok_or_else(|| Error::Input(format!("template {full_template:?} has no {{}}")))?;
    let text = full_template.replacen("{}", subject, 1);
    let upto_subject = format!("{}{subject}", &full_template[..at]);
    let ids = model.encode(&text)?;
    let prefix_len = model.encode(&upto_subject)?.len();
    if prefix_len == 0 || prefix_len > ids.len() {
        return Err(Error::Input(format!(
            "cannot locate the subject {subject:?} in the tokens of {text:?}"
        )));
    }
    Ok(SubjectPrompt {
        ids,
        subject_last: prefix_len - 1,
    })
}

/// Token ids of `" " + target` (the convention of the editing literature).
pub fn target_ids(model: &Model, target: &str) -> Result<Vec<u32>> {
    if target.trim().is_empty() {
        return Err(Error::Input("the target is empty".into()));
    }
    let ids = model.encode(&format!(" {}", target.trim()))?;
    if ids.is_empty() {
        return Err(Error::Input(format!(
            "the target {target:?} tokenizes to nothing"
        )));
    }
    Ok(ids)
}

/// Reads edit requests from JSONL (one object per line: `subject`, `prompt`, `target`, optional
/// `ground_truth`, `paraphrases`, `neighbors`). Errors name the file and line. With `strict =
/// false`, bad lines are skipped and reported in the second return value instead.
pub fn read_jsonl(path: &std::path::Path, strict: bool) -> Result<(Vec<EditRequest>, Vec<String>)> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        Error::bad_file(
            path,
            format!(
                "not UTF-8 text (invalid byte at offset {})",
                e.utf8_error().valid_up_to()
            ),
        )
    })?;
    let mut requests = Vec::new();
    let mut skipped = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with("//") {
            continue;
        }
        let parsed = serde_json::from_str::<EditRequest>(line)
            .map_err(|e| e.to_string())
            .and_then(|r| r.validate().map(|_| r).map_err(|e| e.to_string()));
        match parsed {
            Ok(r) => requests.push(r),
            Err(e) => {
                let msg = format!("{}:{}: {e}", path.display(), i + 1);
                if strict {
                    return Err(Error::Input(msg));
                }
                skipped.push(msg);
            }
        }
    }
    if requests.is_empty() && skipped.is_empty() {
        return Err(Error::bad_file(path, "no edit requests in the file"));
    }
    Ok((requests, skipped))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::config::Arch;
    use crate::model::random::tiny_model;

    #[test]
    fn validation_messages() {
        let ok = EditRequest::new("Eiffel Tower", "The Eiffel Tower is in", "Rome");
        ok.validate().unwrap();
        assert_eq!(ok.template(), "The {} is in");
        assert_eq!(ok.filled_prompt(), "The Eiffel Tower is in");
        let e = EditRequest::new("Louvre", "The Eiffel Tower is in", "Rome")
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("does not contain the subject"));
        assert!(EditRequest::new("X", "X is", "  ").validate().is_err());
        assert!(EditRequest::new(" ", "X is", "a").validate().is_err());
        assert!(EditRequest::new("X", "{} and {}", "a").validate().is_err());
        EditRequest::new("X", "{} is", "a").validate().unwrap();
    }

    #[test]
    fn probes_accept_strings_and_objects() {
        let r: EditRequest = serde_json::from_str(
            r#"{"subject":"A","prompt":"A is","target":"b","neighbors":["C is",{"prompt":"D is","answer":"e"}]}"#,
        )
        .unwrap();
        assert_eq!(
            r.neighbors[0],
            Probe {
                prompt: "C is".into(),
                answer: None
            }
        );
        assert_eq!(r.neighbors[1].answer.as_deref(), Some("e"));
        assert!(serde_json::from_str::<EditRequest>(
            r#"{"subject":"A","prompt":"A","target":"b","oops":1}"#
        )
        .is_err());
    }

    #[test]
    fn subject_last_index_on_bytes() {
        // The tiny models tokenize byte by byte, so indices are character offsets.
        let m = tiny_model(Arch::Llama, 0);
        let p = tokenize_with_subject(&m, "Ctx. {}", "The {} is in", "Eiffel").unwrap();
        assert_eq!(p.ids.len(), "Ctx. The Eiffel is in".len());
        assert_eq!(p.subject_last, "Ctx. The Eiffel".len() - 1);
        assert_eq!(target_ids(&m, "Rome").unwrap().len(), 5);
        assert!(target_ids(&m, "").is_err());
    }
}
