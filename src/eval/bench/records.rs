//! The run-folder format: what `d4s bench` writes and `d4s compare` reads back.
//!
//! ```text
//! config.json     RunConfig: what produced the run (model, method, hyperparameters, data, …)
//! metrics.jsonl   one EvalPoint per evaluation point
//! edits.jsonl     one EditRecord per edited case
//! cases.jsonl     one CaseOutcome per edited case, at the end of the run
//! ```
//!
//! Metrics are typed structs whose serde names are the names the files have always used
//! (`token.efficacy`, `prob.es`, `generation.fluency`, …), so folders written by earlier versions
//! load unchanged. Field order follows the alphabetical order the earlier maps wrote in, so a
//! point round-trips to the same bytes.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::Protocol;
use crate::edit::Timings;
use crate::error::{Error, Result};
use crate::eval::probes::ProbeResult;
use crate::model::ModelRecord;

/// Each edited case's outcome at the end of a run ([`CaseOutcome`]).
pub const CASES_FILE: &str = "cases.jsonl";
pub const METRICS_FILE: &str = "metrics.jsonl";
pub const EDITS_FILE: &str = "edits.jsonl";
pub const CONFIG_FILE: &str = "config.json";

mod metric;

use metric::none;
pub use metric::{
    CaseMetrics, GenMetric, GenMetrics, GenerationMetrics, Intervals, Metric, ProbMetric,
    ProbMetrics, TokenMetric, TokenMetrics,
};

/// How one edited case stands at an evaluation point: a line of `cases.jsonl`, written for the
/// final point of a run so a user can see *which* edits held, which were lost, and what the
/// neighbours whose answers moved now predict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaseOutcome {
    pub index: usize,
    pub origin: String,
    /// The case's edit requests (prompt with the subject filled in, new target).
    pub requests: Vec<RequestText>,
    /// This case's token metrics (means over its own items; same names as `metrics.jsonl`).
    #[serde(default, skip_serializing_if = "TokenMetrics::is_empty")]
    pub token: TokenMetrics,
    /// This case's probability metrics (es / ps / ns and magnitudes).
    #[serde(default, skip_serializing_if = "ProbMetrics::is_empty")]
    pub prob: ProbMetrics,
    /// This case's generation metrics, where the point decoded.
    #[serde(default, skip_serializing_if = "GenMetrics::is_empty")]
    pub gen: GenMetrics,
    /// The greedy answers behind them: to the edit prompt, then to each paraphrase.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub answers: Vec<String>,
    /// Neighbour (locality) prompts whose predicted answer tokens differ from the unedited
    /// model's, with both predictions decoded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changed_neighbours: Vec<NeighbourChange>,
}

impl CaseOutcome {
    /// The case's own value of a per-edit metric (`None` for the run-level ones: fluency and
    /// multi-hop accuracy are measured over cases, not per case).
    pub fn value(&self, metric: Metric) -> Option<f64> {
        match metric {
            Metric::Token(t) => t.get(&self.token),
            Metric::Prob(p) => p.get(&self.prob),
            Metric::Gen(g) => g.get(&self.gen),
            Metric::Fluency | Metric::Multihop => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestText {
    pub prompt: String,
    pub target: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NeighbourChange {
    pub prompt: String,
    /// The answer the data gives for the neighbour.
    pub answer: String,
    /// The unedited model's argmax tokens at the answer positions (teacher forcing), decoded
    /// with special tokens shown (an end-of-text prediction reads `<|endoftext|>`, not "").
    pub before: String,
    /// The edited model's, decoded.
    pub after: String,
}

/// Norms of one edited matrix at an evaluation point (means over the entries, as the paper
/// plots them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerNorms {
    pub layer: usize,
    /// ‖W‖₁ / numel (the paper's "L1-norm of the editing layer").
    pub l1_mean: f64,
    pub fro: f64,
    /// ‖W − W0‖₁ / numel and ‖W − W0‖_F.
    pub delta_l1_mean: f64,
    pub delta_fro: f64,
    /// ‖W0‖₁ / numel of the unedited matrix: the baseline of the growth factor (absent in runs
    /// of earlier versions, whose point 0 holds it).
    #[serde(default, skip_serializing_if = "none")]
    pub w0_l1_mean: Option<f64>,
}

impl LayerNorms {
    /// ‖W‖₁ / ‖W0‖₁, when the baseline is known.
    pub fn growth(&self) -> Option<f64> {
        self.w0_l1_mean.map(|b| self.l1_mean / b.max(1e-30))
    }
}

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalPoint {
    pub edits: usize,
    pub metrics: CaseMetrics,
    pub probes: BTreeMap<String, ProbeResult>,
    pub layers: Vec<LayerNorms>,
    /// Mean final target probability of the edits so far (the paper's "edit probability").
    pub edit_prob: Option<f64>,
    pub rejected: usize,
    pub wall_seconds: f64,
    /// The evaluated edits split by age into tenths, oldest first (stream protocols, after
    /// the first edit): which edits are lost first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retention: Vec<AgeDecile>,
}

/// One tenth of the edits evaluated at a point, by age: the edits `first ..first + edits` in
/// edit order (decile 0 holds the oldest), with their mean teacher-forced efficacy and
/// paraphrase accuracy (means over the decile's cases).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgeDecile {
    pub decile: usize,
    pub first: usize,
    pub edits: usize,
    #[serde(default, skip_serializing_if = "none")]
    pub efficacy: Option<f64>,
    #[serde(default, skip_serializing_if = "none")]
    pub paraphrase: Option<f64>,
}

/// Splits the outcomes of the edits so far (in edit order, oldest first) into age deciles;
/// with fewer than ten edits some deciles are empty and left out.
pub fn retention_by_age(outcomes: &[CaseOutcome]) -> Vec<AgeDecile> {
    let n = outcomes.len();
    let mean = |cases: &[CaseOutcome], metric: TokenMetric| {
        let v: Vec<f64> = cases.iter().filter_map(|c| metric.get(&c.token)).collect();
        (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
    };
    (0..10)
        .filter_map(|d| {
            let (from, to) = (d * n / 10, (d + 1) * n / 10);
            let cases = &outcomes[from..to];
            (!cases.is_empty()).then(|| AgeDecile {
                decile: d,
                first: from,
                edits: cases.len(),
                efficacy: mean(cases, TokenMetric::Efficacy),
                paraphrase: mean(cases, TokenMetric::Paraphrase),
            })
        })
        .collect()
}

/// One line of `edits.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EditRecord {
    pub index: usize,
    pub origin: String,
    pub prob_initial: Option<f64>,
    /// The target optimization's own final probability. For D4S (and MEMIT, AlphaEdit's first
    /// edit) it is measured on the model the targets were optimized on, not the edited one.
    pub prob_final: Option<f64>,
    /// p(target | prompt) on the model right after this edit landed: exp(−mean token NLL) of
    /// the case's new target after its prompt, averaged over the case's requests. Comparable
    /// across methods, unlike `prob_final`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prob_post: Option<f64>,
    pub seconds: f64,
    /// CPU seconds of the process during the edit (all threads; Linux), per case of the step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_seconds: Option<f64>,
    /// Where the step's time went (statistics, templates, target, keys, solve), per request of
    /// the step; absent for rejected edits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timings: Option<Timings>,
    /// Resident memory of the process right after the edit, in bytes (Linux).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rss_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected: Option<String>,
    /// Target optimizations of this edit answered by the cache that this run did not make (an
    /// earlier method of the same command, or an earlier run with `--target-cache`, solved them
    /// on the unedited model): its `seconds` exclude their cost.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub targets_reused: usize,
    /// Targets of this edit that this run optimized ahead, in one pass at the first step of the
    /// edit's chunk (`target_batch`): that step's `seconds` carry their cost, so a run's mean
    /// seconds per edit is its cost and a median is not.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub targets_ahead: usize,
    /// Perplexity of the case's new target after its prompt on the unedited model
    /// ([`super::evaluate::TargetDifficulty`]), and its length in tokens: what the D4S paper
    /// (§3.3) relates the damage of editing to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ppl: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_tokens: Option<f64>,
    /// The new target of each of the case's requests: what the run's target *diversity* (how
    /// many distinct answers the edits write, the paper's other MQD factor) is computed from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target_new: Vec<String>,
    /// AlphaEdit's null-space projector rank per edited layer after this edit (empty for other
    /// methods): [`crate::edit::EditorReport::projector_rank`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub projector_rank: Vec<usize>,
}

pub(crate) fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// The data a run edits: the file, its content hash and what was taken from it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataRecord {
    pub path: std::path::PathBuf,
    pub sha256: String,
    #[serde(default)]
    pub kind: String,
    /// Cases taken from the file.
    pub n: usize,
    #[serde(default)]
    pub skipped: usize,
    /// The paper's question type built from the facts (`tf`, `mc`, `dg`), if any.
    pub mqd: Option<String>,
    /// The seed of the shuffle that ordered the cases (`--seeds`); absent: the file's order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_seed: Option<u64>,
}

/// The key statistics a run used.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatsRecord {
    pub config: crate::edit::StatsConfig,
    pub corpus_id: String,
}

/// What produced a run (written first, as `config.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    pub d4s_version: String,
    pub started: String,
    pub model: ModelRecord,
    pub method: String,
    /// Kept as written: hyperparameters gain fields across versions, and an older run's must
    /// still load (and must compare equal to itself when resumed).
    pub hparams: serde_json::Value,
    pub data: DataRecord,
    pub protocol: Protocol,
    pub eval_every: Option<usize>,
    /// Only this many cases, a fixed seeded sample, are evaluated (absent: all of them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_sample: Option<usize>,
    pub probes: Vec<String>,
    pub probe_config: crate::eval::probes::ProbeConfig,
    pub stats: StatsRecord,
    pub seed: u64,
    pub threads: usize,
    pub command: String,
    /// Each time the run was continued from a checkpoint: when, after how many edits, and the
    /// command line.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resumed: Vec<Resumed>,
    /// Which points measured the `gen.*` metrics (absent in runs recorded before they existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<super::GenSchedule>,
    /// The chat template the edit and evaluation prompts were rendered with (`None`: bare
    /// prompts, the editing literature's protocol).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat_template: Option<crate::model::chat::ChatTemplateRecord>,
    /// How each metric of the run's files is measured, keyed by its name in them
    /// ([`Metric::protocol`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metric_protocols: BTreeMap<String, String>,
}

/// Every metric's name in the files and the protocol that measures it, for `config.json`.
pub fn metric_protocols() -> BTreeMap<String, String> {
    Metric::ALL
        .iter()
        .map(|m| (m.key(), m.protocol().to_string()))
        .collect()
}

/// A line of [`RunConfig::resumed`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resumed {
    pub at: String,
    pub after_edits: usize,
    pub command: String,
    /// The cases the run planned before this resume, when the resume changed that number
    /// (`data.n` holds the new one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub planned_before: Option<usize>,
}

impl RunConfig {
    /// What a resumed run must share with the original to continue it: the model's weights,
    /// the method and its hyperparameters, the data file's content and the cases taken from it,
    /// the protocol, the evaluation schedule, the probes and the statistics. Not the paths
    /// (a run may be continued from another directory), the thread count or the times.
    pub fn identity(&self) -> serde_json::Value {
        let mut data = serde_json::to_value(&self.data).expect("serializable");
        if let Some(o) = data.as_object_mut() {
            o.remove("path");
        }
        let mut probe_config = serde_json::to_value(&self.probe_config).expect("serializable");
        if let Some(o) = probe_config.as_object_mut() {
            o.remove("data_dir");
        }
        let mut identity = serde_json::json!({
            "model": self.model.sha256,
            "method": self.method,
            "hparams": self.hparams,
            "data": data,
            "protocol": self.protocol,
            "eval_every": self.eval_every,
            "probes": self.probes,
            "probe_config": probe_config,
            "stats": self.stats,
            "seed": self.seed,
        });
        if let Some(n) = self.eval_sample {
            identity["eval_sample"] = serde_json::json!(n);
        }
        // Only when set, so the identities of runs recorded before templates existed hold.
        if let Some(t) = &self.chat_template {
            identity["chat_template"] = serde_json::json!(t.sha256);
        }
        identity
    }

    /// The cases the run plans to edit.
    pub fn planned_edits(&self) -> usize {
        self.data.n
    }
}

/// The non-empty lines of a run folder's JSONL file.
pub(crate) fn jsonl_lines(dir: &Path, name: &str) -> Result<Vec<String>> {
    let p = dir.join(name);
    let text = std::fs::read_to_string(&p).map_err(|e| Error::io(&p, e))?;
    Ok(text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect())
}

/// Reads a run folder's `config.json`.
pub fn load_config(dir: &Path) -> Result<RunConfig> {
    let cfg_path = dir.join(CONFIG_FILE);
    serde_json::from_slice(&std::fs::read(&cfg_path).map_err(|e| Error::io(&cfg_path, e))?)
        .map_err(|e| Error::bad_file(&cfg_path, format!("not a d4s run config: {e}")))
}

/// Parses every line of a run folder's JSONL file as `T`, naming the line of the first bad one.
fn parse_lines<T: serde::de::DeserializeOwned>(dir: &Path, name: &str) -> Result<Vec<T>> {
    jsonl_lines(dir, name)?
        .iter()
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l)
                .map_err(|e| Error::bad_file(dir.join(name), format!("line {}: {e}", i + 1)))
        })
        .collect()
}

/// A run folder read back.
pub struct LoadedRun {
    pub config: RunConfig,
    pub points: Vec<EvalPoint>,
    pub records: Vec<EditRecord>,
}

/// Reads a run folder back.
pub fn load_run(dir: &Path) -> Result<LoadedRun> {
    Ok(LoadedRun {
        config: load_config(dir)?,
        points: parse_lines(dir, METRICS_FILE)?,
        records: parse_lines(dir, EDITS_FILE)?,
    })
}

#[cfg(test)]
mod tests;
