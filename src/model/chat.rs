//! Chat templates: an instruct model is prompted as it was tuned, by rendering the prompt as a
//! user turn with the model's own Jinja template (from the GGUF metadata
//! `tokenizer.chat_template` or `tokenizer_config.json`'s `chat_template`) through minijinja,
//! the engine transformers' templates are written for (a Jinja2 subset plus the helpers
//! transformers defines: `raise_exception`, `strftime_now`).
//!
//! `--chat-template auto` uses the model's template when it has one, `none` prompts bare (the
//! editing literature's protocol), and a file path uses that template.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use minijinja::{context, Environment};
use serde::{Deserialize, Serialize};

use super::Model;
use crate::error::{Error, Result};
use crate::util;

/// What `--chat-template` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChatTemplateChoice {
    Auto,
    None,
    File(PathBuf),
}

impl FromStr for ChatTemplateChoice {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim() {
            "auto" => Ok(Self::Auto),
            "none" | "off" => Ok(Self::None),
            "" => Err(Error::Input(
                "--chat-template: give auto, none or a template file".into(),
            )),
            path => Ok(Self::File(PathBuf::from(path))),
        }
    }
}

/// Which template a run used, for its `config.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatTemplateRecord {
    /// `gguf:tokenizer.chat_template`, `tokenizer_config.json`, or the file's path.
    pub origin: String,
    pub sha256: String,
}

/// A compiled chat template.
pub struct ChatTemplate {
    env: Environment<'static>,
    record: ChatTemplateRecord,
    bos_token: String,
    eos_token: String,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("record", &self.record)
            .finish()
    }
}

const NAME: &str = "chat";
/// `strftime_now` renders this fixed date, so a rendered prompt (and a run) is reproducible.
const FIXED_DATE: &str = "26 Jul 2024";

impl ChatTemplate {
    /// Compiles `source`; `origin` says where it came from.
    pub fn new(source: &str, origin: &str, bos_token: &str, eos_token: &str) -> Result<Self> {
        let mut env = Environment::new();
        env.add_function(
            "raise_exception",
            |msg: String| -> std::result::Result<String, minijinja::Error> {
                Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    msg,
                ))
            },
        );
        env.add_function("strftime_now", |_fmt: String| FIXED_DATE.to_string());
        env.add_template_owned(NAME, source.to_string())
            .map_err(|e| Error::Input(format!("chat template from {origin}: {e}")))?;
        let template = Self {
            env,
            record: ChatTemplateRecord {
                origin: origin.to_string(),
                sha256: util::sha256_hex(source.as_bytes()),
            },
            bos_token: bos_token.to_string(),
            eos_token: eos_token.to_string(),
        };
        // A template that cannot render a plain user turn is refused now, not mid-run.
        template.user_turn("test")?;
        Ok(template)
    }

    /// The template `choice` names for `model`: `None` for `none`, and for `auto` when the model
    /// has no template (a base model).
    pub fn resolve(choice: &ChatTemplateChoice, model: &Model) -> Result<Option<Self>> {
        let (source, origin) = match choice {
            ChatTemplateChoice::None => return Ok(None),
            ChatTemplateChoice::Auto => match &model.info.chat_template {
                Some(t) => (t.source.clone(), t.origin.clone()),
                None => return Ok(None),
            },
            ChatTemplateChoice::File(path) => {
                (read_template_file(path)?, path.display().to_string())
            }
        };
        let token = |id: Option<u32>| -> Result<String> {
            id.map_or(Ok(String::new()), |id| model.decode(&[id]))
        };
        let bos = token(model.config.bos_token_id)?;
        let eos = token(model.config.eos_token_ids.first().copied())?;
        Self::new(&source, &origin, &bos, &eos).map(Some)
    }

    /// `content` as the user's message, followed by the assistant's header: the prompt the model
    /// continues with its answer.
    pub fn user_turn(&self, content: &str) -> Result<String> {
        let template = self.env.get_template(NAME).expect("added");
        template
            .render(context! {
                messages => vec![context! { role => "user", content => content }],
                add_generation_prompt => true,
                bos_token => self.bos_token.as_str(),
                eos_token => self.eos_token.as_str(),
            })
            .map_err(|e| {
                Error::Input(format!(
                    "the chat template from {} failed to render: {e}",
                    self.record.origin
                ))
            })
    }

    pub fn record(&self) -> &ChatTemplateRecord {
        &self.record
    }
}

/// A template file: the Jinja source itself, or a `tokenizer_config.json` holding one.
fn read_template_file(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    if path.extension().is_some_and(|e| e == "json") {
        let v: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| Error::bad_file(path, format!("not JSON: {e}")))?;
        return template_of_tokenizer_config(&v)
            .ok_or_else(|| Error::bad_file(path, "has no `chat_template`"));
    }
    Ok(text)
}

/// The chat template a model carries, and where it was found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelChatTemplate {
    pub source: String,
    pub origin: String,
}

/// `chat_template` of a `tokenizer_config.json`: a string, or a list of named templates of
/// which the one named `default` (else the first) is taken.
pub fn template_of_tokenizer_config(v: &serde_json::Value) -> Option<String> {
    match v.get("chat_template")? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Array(list) => {
            let named = |n: &str| {
                list.iter()
                    .find(|t| t.get("name").and_then(|x| x.as_str()) == Some(n))
            };
            named("default")
                .or_else(|| list.first())
                .and_then(|t| t.get("template")?.as_str().map(str::to_string))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHATML: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

    #[test]
    fn a_chatml_template_wraps_the_prompt_as_a_user_turn() {
        let t = ChatTemplate::new(CHATML, "test", "", "").unwrap();
        assert_eq!(
            t.user_turn("The Eiffel Tower is in").unwrap(),
            "<|im_start|>user\nThe Eiffel Tower is in<|im_end|>\n<|im_start|>assistant\n"
        );
        // A prompt template's subject slot passes through untouched.
        assert!(t
            .user_turn("{} is in")
            .unwrap()
            .contains("user\n{} is in<|im_end|>"));
        assert_eq!(t.record().sha256, util::sha256_hex(CHATML.as_bytes()));
    }

    #[test]
    fn llama_style_helpers_and_bad_templates() {
        let llama = "{{ bos_token }}{% if messages[0]['role'] != 'user' %}{{ raise_exception('user first') }}{% endif %}Today {{ strftime_now('%d %b %Y') }}. [INST] {{ messages[0]['content'] }} [/INST]";
        let t = ChatTemplate::new(llama, "test", "<s>", "</s>").unwrap();
        assert_eq!(
            t.user_turn("Hi").unwrap(),
            format!("<s>Today {FIXED_DATE}. [INST] Hi [/INST]")
        );
        let err = ChatTemplate::new("{% for %}", "broken.jinja", "", "").unwrap_err();
        assert!(err.to_string().contains("broken.jinja"), "{err}");
        let err = ChatTemplate::new("{{ raise_exception('no') }}", "raising", "", "").unwrap_err();
        assert!(err.to_string().contains("no"), "{err}");
    }

    #[test]
    fn tokenizer_config_templates_are_strings_or_named_lists() {
        let v = serde_json::json!({"chat_template": "x"});
        assert_eq!(template_of_tokenizer_config(&v).as_deref(), Some("x"));
        let v = serde_json::json!({"chat_template": [
            {"name": "tool_use", "template": "t"},
            {"name": "default", "template": "d"}
        ]});
        assert_eq!(template_of_tokenizer_config(&v).as_deref(), Some("d"));
        assert_eq!(template_of_tokenizer_config(&serde_json::json!({})), None);
        for choice in ["auto", "none", "my.jinja"] {
            assert!(choice.parse::<ChatTemplateChoice>().is_ok());
        }
        assert!("".parse::<ChatTemplateChoice>().is_err());
    }
}
