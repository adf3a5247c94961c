//! The edit stream of `d4s bench`, `d4s sweep` and `d4s targets`: which records, how many, in
//! which question type and prompt template. One definition, so a `targets` run fills exactly the
//! targets a `bench` run with the same flags asks for.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;

use d4s::eval::datasets::{self, EvalCase, QuestionType};
use d4s::model::chat::{ChatTemplate, ChatTemplateChoice, ChatTemplateRecord};
use d4s::model::Model;

#[derive(Args, Debug, Clone)]
pub struct CaseArgs {
    /// Dataset: counterfact, counterfact-train, zsre, zsre-train, mquake, or a file path
    /// (default: counterfact for bench and targets, counterfact-train for sweep).
    #[arg(long)]
    pub data: Option<String>,
    /// Data root for dataset names and probes (default: $D4S_DATA or ../shared/data).
    #[arg(long = "data-dir")]
    pub data_dir: Option<PathBuf>,
    /// Use the MQD question type built from the facts: tf, mc or dg.
    #[arg(long)]
    pub mqd: Option<String>,
    /// Number of edits (cases) to take from the dataset.
    #[arg(long, default_value_t = 100)]
    pub n: usize,
    /// Reject bad dataset records instead of skipping them.
    #[arg(long)]
    pub strict: bool,
    /// Render the edit and evaluation prompts as a user turn of a chat template: `auto` (the
    /// model's own, from its GGUF metadata or tokenizer_config.json; bare prompts if it has
    /// none), `none` (bare prompts, as the editing literature scores), or a template file
    /// (Jinja, or a tokenizer_config.json).
    #[arg(long, default_value = "none", value_name = "auto|none|FILE")]
    pub chat_template: String,
}

/// The cases of a stream and where they came from.
pub struct LoadedCases {
    pub cases: Vec<EvalCase>,
    pub path: PathBuf,
    pub sha256: String,
    pub kind: String,
    pub skipped: usize,
    pub chat_template: Option<ChatTemplateRecord>,
    pub data_dir: Option<PathBuf>,
}

impl CaseArgs {
    pub fn data_dir(&self) -> Option<PathBuf> {
        self.data_dir.clone().or_else(datasets::default_data_dir)
    }

    /// Reads the first `n` usable records of the dataset (`default_name` when none is given),
    /// in the MQD question type and chat template asked for; `seed` draws the MQD choices.
    pub fn load(&self, model: &Model, default_name: &str, seed: u64) -> Result<LoadedCases> {
        let data_dir = self.data_dir();
        let name = self.data.as_deref().unwrap_or(default_name);
        let path = datasets::resolve(name, data_dir.as_deref())?;
        let loaded = datasets::load(&path, None, self.strict, Some(self.n))
            .with_context(|| format!("reading {}", path.display()))?;
        for s in loaded.skipped.iter().take(5) {
            eprintln!("skipped: {s}");
        }
        if loaded.skipped.len() > 5 {
            eprintln!("… and {} more skipped records", loaded.skipped.len() - 5);
        }
        let mut cases = loaded.cases.clone();
        if let Some(q) = &self.mqd {
            let qtype = match q.as_str() {
                "tf" | "true-false" => QuestionType::TrueFalse,
                "mc" | "multiple-choice" => QuestionType::MultipleChoice,
                "dg" | "generated" => QuestionType::DirectlyGenerated,
                other => bail!("--mqd {other:?}: use tf, mc or dg"),
            };
            cases = datasets::mqd(&cases, qtype, seed);
        }
        let choice = self.chat_template.parse::<ChatTemplateChoice>()?;
        let template = ChatTemplate::resolve(&choice, model)?;
        match (&template, self.chat_template.as_str()) {
            (Some(t), _) => {
                println!(
                    "prompts rendered with the chat template from {}",
                    t.record().origin
                );
                cases = cases
                    .iter()
                    .map(|c| c.with_chat_template(t))
                    .collect::<Result<_, _>>()?;
            }
            (None, "auto") => println!("the model has no chat template: bare prompts"),
            (None, _) => {}
        }
        if cases.is_empty() {
            bail!("{}: no usable cases", path.display());
        }
        if cases.len() < self.n {
            eprintln!(
                "note: only {} cases available (asked for {})",
                cases.len(),
                self.n
            );
        }
        Ok(LoadedCases {
            cases,
            path,
            sha256: loaded.sha256.clone(),
            kind: loaded.kind.name().into(),
            skipped: loaded.skipped.len(),
            chat_template: template.map(|t| t.record().clone()),
            data_dir,
        })
    }
}
