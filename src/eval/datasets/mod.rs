//! Evaluation datasets, read exactly as published (spec §5), into one case type.
//!
//! IMPLEMENTATION IN PROGRESS (helper): loaders for CounterFact (EasyEdit and ROME formats),
//! zsRE (MEND/EasyEdit), MQuAKE, the MQD question types built from CounterFact/zsRE facts, and
//! the user's own JSONL.

use serde::{Deserialize, Serialize};

use crate::edit::EditRequest;

/// A multi-hop question set (MQuAKE): correct if any question's answer matches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MultiHop {
    pub questions: Vec<String>,
    /// The answer after the edits, and its aliases.
    pub answer: String,
    pub aliases: Vec<String>,
}

/// One evaluation case: the edit(s) to apply and the prompts that check them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalCase {
    /// The edits of this case (one for CounterFact/zsRE, up to four for MQuAKE). Each carries
    /// its paraphrases (`paraphrases`) and neighbourhood / locality prompts (`neighbors`, with
    /// the answer they should keep when the data gives one).
    pub requests: Vec<EditRequest>,
    /// Portability questions and answers (zsRE with portability, MQuAKE single hops).
    #[serde(default)]
    pub portability: Vec<(String, String)>,
    #[serde(default)]
    pub multi_hop: Option<MultiHop>,
    /// Free-generation prompts (ROME-format CounterFact) for fluency.
    #[serde(default)]
    pub generation_prompts: Vec<String>,
    /// Where the case came from, e.g. `counterfact-edit.json#17`.
    pub origin: String,
}

// TEMPORARY until the datasets module lands: the signatures the deck loader uses.
/// A loaded dataset.
pub struct Loaded {
    pub cases: Vec<EvalCase>,
    pub skipped: Vec<String>,
}

/// Resolves a dataset name or path.
pub fn resolve(name_or_path: &str, _data_dir: Option<&std::path::Path>) -> crate::error::Result<std::path::PathBuf> {
    Err(crate::error::Error::Input(format!("dataset {name_or_path:?}: dataset loaders are not built yet")))
}

/// Loads a dataset.
pub fn load(path: &std::path::Path, _kind: Option<()>, _strict: bool, _limit: Option<usize>) -> crate::error::Result<Loaded> {
    Err(crate::error::Error::Input(format!("{}: dataset loaders are not built yet", path.display())))
}
