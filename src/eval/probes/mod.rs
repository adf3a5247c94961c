//! Downstream probes of general ability (spec §4.6), scored as EleutherAI's
//! lm-evaluation-harness scores them: ARC-Challenge/Easy, MMLU, TruthfulQA MC, WinoGrande,
//! GSM8K and HellaSwag.
//!
//! [`prepare`] reads a task's data, picks the fixed seeded subset and tokenizes everything once;
//! the [`ProbeSet`] is then [`ProbeSet::run`] at every evaluation point of an experiment (the
//! tokenization does not change when weights are edited).
//!
//! Default shot counts keep each task well under a minute on a 135M model on two CPU cores
//! (see [`Task::default_shots`]); the Open LLM Leaderboard's counts are [`Task::leaderboard_shots`]
//! and can be asked for with [`ProbeConfig::shots`]. Few-shot examples are one fixed seeded set
//! per task (per subject for MMLU), so the engine runs the shared few-shot prefix once; lm-eval
//! draws a new set per question for ARC, GSM8K, WinoGrande and HellaSwag.

pub mod arc;
pub mod choice;
pub mod data;
pub mod generation;
pub mod gsm8k;
pub mod hellaswag;
pub mod mmlu;
pub mod scoring;
pub mod truthfulqa;
pub mod winogrande;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::eval::interval::{self, Interval};
use crate::model::Model;
use scoring::{EngineOptions, Group};

/// A downstream task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Task {
    ArcChallenge,
    ArcEasy,
    Mmlu,
    TruthfulQa,
    Winogrande,
    Gsm8k,
    Hellaswag,
}

impl Task {
    pub const ALL: [Task; 7] = [
        Task::ArcChallenge,
        Task::ArcEasy,
        Task::Mmlu,
        Task::TruthfulQa,
        Task::Winogrande,
        Task::Gsm8k,
        Task::Hellaswag,
    ];

    /// lm-eval's task name.
    pub fn name(self) -> &'static str {
        match self {
            Task::ArcChallenge => "arc_challenge",
            Task::ArcEasy => "arc_easy",
            Task::Mmlu => "mmlu",
            Task::TruthfulQa => "truthfulqa_mc",
            Task::Winogrande => "winogrande",
            Task::Gsm8k => "gsm8k",
            Task::Hellaswag => "hellaswag",
        }
    }

    /// Shots used when [`ProbeConfig::shots`] is `None`: 0 for the log-likelihood tasks (a
    /// 25-shot ARC context is ~40× longer than the question), 3 for GSM8K, whose answers follow
    /// the "#### N" format only after seeing it.
    pub fn default_shots(self) -> usize {
        match self {
            Task::Gsm8k => 3,
            _ => 0,
        }
    }

    /// Open LLM Leaderboard (v1) shot counts.
    pub fn leaderboard_shots(self) -> usize {
        match self {
            Task::ArcChallenge | Task::ArcEasy => 25,
            Task::Hellaswag => 10,
            Task::Mmlu | Task::Winogrande | Task::Gsm8k => 5,
            Task::TruthfulQa => 0,
        }
    }

    /// The metric a task is judged by.
    pub fn headline_metric(self) -> &'static str {
        match self {
            Task::ArcChallenge | Task::ArcEasy | Task::Hellaswag => "acc_norm",
            Task::Mmlu | Task::Winogrande => "acc",
            Task::TruthfulQa => "mc2",
            Task::Gsm8k => "exact_match_flexible",
        }
    }
}

impl std::fmt::Display for Task {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Task {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let norm = s.trim().to_ascii_lowercase().replace('-', "_");
        Ok(match norm.as_str() {
            "arc" | "arc_challenge" => Task::ArcChallenge,
            "arc_easy" => Task::ArcEasy,
            "mmlu" => Task::Mmlu,
            "truthfulqa" | "truthfulqa_mc" => Task::TruthfulQa,
            "winogrande" => Task::Winogrande,
            "gsm8k" => Task::Gsm8k,
            "hellaswag" => Task::Hellaswag,
            _ => {
                return Err(Error::Input(format!(
                    "unknown probe task {s:?}; valid: arc (= arc_challenge), arc_easy, mmlu, \
                     truthfulqa (= truthfulqa_mc), winogrande, gsm8k, hellaswag"
                )))
            }
        })
    }
}

/// Chance level of a task's headline metric: 1/4 for the four-choice tasks (ARC has a few
/// 3- and 5-choice items), 1/2 for WinoGrande, 0 for GSM8K, and for TruthfulQA MC2 the mass of
/// the true answers under equal likelihoods, averaged over TruthfulQA v1 (0.464; MC1's is 0.223).
pub fn chance_level(task: Task) -> f64 {
    match task {
        Task::ArcChallenge | Task::ArcEasy | Task::Mmlu | Task::Hellaswag => 0.25,
        Task::Winogrande => 0.5,
        Task::TruthfulQa => 0.464,
        Task::Gsm8k => 0.0,
    }
}

/// `$D4S_DATA` if set, else `../shared/data` if it exists (relative to the current directory).
pub fn default_data_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("D4S_DATA").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(d));
    }
    let beside = PathBuf::from("../shared/data");
    beside.is_dir().then_some(beside)
}

/// What to evaluate and how much of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProbeConfig {
    /// Root of the data layout of `../shared/data` (`arc/`, `mmlu/`, `truthfulqa/`, …).
    pub data_dir: PathBuf,
    /// Items per task (a fixed seeded subset); `None` = the whole split. GSM8K, which generates,
    /// evaluates a quarter of it ([`gsm8k::LIMIT_DIVISOR`]).
    pub limit: Option<usize>,
    pub seed: u64,
    /// Few-shot examples; `None` = [`Task::default_shots`]. TruthfulQA is always 0-shot (its
    /// preamble is the prompt), as in lm-eval.
    pub shots: Option<usize>,
    /// Most tokens generated per GSM8K answer (lm-eval allows 256; the worked answers of the
    /// few-shot examples are mostly far shorter, and rows that never stop cost every step).
    pub max_gen_tokens: usize,
    /// A HellaSwag jsonl (default `<data_dir>/hellaswag/hellaswag_val.jsonl`).
    pub hellaswag_file: Option<PathBuf>,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        Self {
            data_dir: default_data_dir().unwrap_or_else(|| PathBuf::from("../shared/data")),
            limit: Some(100),
            seed: 1234,
            shots: None,
            max_gen_tokens: 128,
            hellaswag_file: None,
        }
    }
}

/// How one multiple-choice item turns log-likelihoods into metrics.
#[derive(Debug, Clone, PartialEq)]
pub enum Scoring {
    /// One group; `acc`, plus `acc_norm` when the choices' character lengths are given.
    Choice {
        gold: usize,
        char_lens: Option<Vec<usize>>,
    },
    /// One group over the distinct answers; `mc1` and `mc2` pick theirs by index.
    TruthfulQa {
        mc1: Vec<usize>,
        mc1_gold: usize,
        mc2: Vec<usize>,
        mc2_true: Vec<bool>,
    },
    /// Two groups (one per option), one continuation each; `acc`.
    Winogrande { gold: usize },
}

/// A tokenized multiple-choice item.
#[derive(Debug, Clone, PartialEq)]
pub struct McItem {
    pub groups: Vec<Group>,
    pub scoring: Scoring,
}

/// A tokenized generation item.
#[derive(Debug, Clone, PartialEq)]
pub struct GenItem {
    pub prompt: Vec<u32>,
    pub reference: String,
}

#[derive(Debug, Clone)]
enum Items {
    Mc(Vec<McItem>),
    Gen(Vec<GenItem>),
}

/// What a task module hands back: its items and the shots actually used.
pub struct Prepared {
    items: Items,
    shots: usize,
}

impl Prepared {
    fn mc(items: Vec<McItem>, shots: usize) -> Self {
        Self {
            items: Items::Mc(items),
            shots,
        }
    }

    fn gen(items: Vec<GenItem>, shots: usize) -> Self {
        Self {
            items: Items::Gen(items),
            shots,
        }
    }
}

/// Loaded and tokenized once, reused at every evaluation point of an experiment.
#[derive(Debug, Clone)]
pub struct ProbeSet {
    task: Task,
    shots: usize,
    items: Items,
    max_gen_tokens: usize,
    engine: EngineOptions,
}

/// Reads, subsets and tokenizes a task. Missing data is an [`Error::Input`] naming the path.
pub fn prepare(task: Task, cfg: &ProbeConfig, model: &Model) -> Result<ProbeSet> {
    let shots = cfg.shots.unwrap_or(task.default_shots());
    let prepared = match task {
        Task::ArcChallenge | Task::ArcEasy => arc::prepare(task, cfg, model, shots)?,
        Task::Mmlu => mmlu::prepare(cfg, model, shots)?,
        Task::TruthfulQa => truthfulqa::prepare(cfg, model)?,
        Task::Winogrande => winogrande::prepare(cfg, model, shots)?,
        Task::Gsm8k => gsm8k::prepare(cfg, model, shots)?,
        Task::Hellaswag => hellaswag::prepare(cfg, model, shots)?,
    };
    if task == Task::Gsm8k && cfg.max_gen_tokens == 0 {
        return Err(Error::Input("GSM8K needs max_gen_tokens > 0".into()));
    }
    Ok(ProbeSet {
        task,
        shots: prepared.shots,
        items: prepared.items,
        max_gen_tokens: cfg.max_gen_tokens,
        engine: EngineOptions::default(),
    })
}

impl ProbeSet {
    pub fn task(&self) -> Task {
        self.task
    }

    pub fn len(&self) -> usize {
        match &self.items {
            Items::Mc(v) => v.len(),
            Items::Gen(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn shots(&self) -> usize {
        self.shots
    }

    /// Scores the model on the prepared items. `cancel` is polled between forward passes.
    pub fn run(&self, model: &Model, cancel: Option<&AtomicBool>) -> Result<ProbeResult> {
        let start = Instant::now();
        let per_item = match &self.items {
            Items::Mc(items) => self.run_mc(model, items, cancel)?,
            Items::Gen(items) => self.run_gen(model, items, cancel)?,
        };
        let (metrics, intervals) = mean_metrics(&per_item);
        Ok(ProbeResult {
            task: self.task.name().to_string(),
            metrics,
            intervals,
            n: self.len(),
            seconds: start.elapsed().as_secs_f64(),
            shots: self.shots,
        })
    }

    fn run_mc(
        &self,
        model: &Model,
        items: &[McItem],
        cancel: Option<&AtomicBool>,
    ) -> Result<Vec<Vec<(&'static str, f64)>>> {
        let groups: Vec<Group> = items
            .iter()
            .flat_map(|it| it.groups.iter().cloned())
            .collect();
        let lls = scoring::loglikelihoods(model, &groups, &self.engine, cancel)?;
        let mut k = 0;
        Ok(items
            .iter()
            .map(|it| {
                let mine = &lls[k..k + it.groups.len()];
                k += it.groups.len();
                score_item(&it.scoring, mine)
            })
            .collect())
    }

    fn run_gen(
        &self,
        model: &Model,
        items: &[GenItem],
        cancel: Option<&AtomicBool>,
    ) -> Result<Vec<Vec<(&'static str, f64)>>> {
        let prompts: Vec<Vec<u32>> = items.iter().map(|i| i.prompt.clone()).collect();
        let opts = generation::GenOptions {
            max_tokens: self.max_gen_tokens,
            stop: gsm8k::STOP.iter().map(|s| s.to_string()).collect(),
            // One batch for the default 25 items: the step count is set by the longest answer,
            // and each step pays a fixed cost for reading the weights.
            max_rows: 32,
            min_shared: self.engine.min_shared,
        };
        let outputs = generation::generate_until(model, &prompts, &opts, cancel)?;
        Ok(items
            .iter()
            .zip(&outputs)
            .map(|(item, out)| {
                let (strict, flexible) = gsm8k::score(out, &item.reference);
                vec![
                    ("exact_match_strict", strict),
                    ("exact_match_flexible", flexible),
                ]
            })
            .collect())
    }
}

/// The metrics of one multiple-choice item from its log-likelihoods `[group][continuation]`.
pub fn score_item(scoring: &Scoring, lls: &[Vec<f64>]) -> Vec<(&'static str, f64)> {
    match scoring {
        Scoring::Choice { gold, char_lens } => {
            let mut m = vec![("acc", scoring::acc(&lls[0], *gold))];
            if let Some(lens) = char_lens {
                m.push(("acc_norm", scoring::acc_norm(&lls[0], lens, *gold)));
            }
            m
        }
        Scoring::TruthfulQa {
            mc1,
            mc1_gold,
            mc2,
            mc2_true,
        } => {
            let (m1, m2) = truthfulqa::metrics(&lls[0], mc1, *mc1_gold, mc2, mc2_true);
            vec![("mc1", m1), ("mc2", m2)]
        }
        Scoring::Winogrande { gold } => {
            let per_option: Vec<f64> = lls.iter().map(|g| g[0]).collect();
            vec![("acc", scoring::acc(&per_option, *gold))]
        }
    }
}

/// Each metric's mean over the items and its 95% bootstrap interval over them.
fn mean_metrics(
    per_item: &[Vec<(&'static str, f64)>],
) -> (BTreeMap<String, f64>, BTreeMap<String, Interval>) {
    let mut values: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for item in per_item {
        for &(name, v) in item {
            values.entry(name).or_default().push(v);
        }
    }
    let mut means = BTreeMap::new();
    let mut intervals = BTreeMap::new();
    for (name, v) in values {
        if let Some((m, ci)) = interval::mean(&v) {
            means.insert(name.to_string(), m);
            if let Some(ci) = ci {
                intervals.insert(name.to_string(), ci);
            }
        }
    }
    (means, intervals)
}

/// The outcome of one run of a probe set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeResult {
    pub task: String,
    pub metrics: BTreeMap<String, f64>,
    /// 95% bootstrap interval over the items of each metric (absent in results written before
    /// intervals existed).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub intervals: BTreeMap<String, Interval>,
    pub n: usize,
    pub seconds: f64,
    pub shots: usize,
}

impl ProbeResult {
    /// The headline metric per task (acc_norm for ARC/HellaSwag, acc for MMLU/WinoGrande, mc2
    /// for TruthfulQA, exact_match_flexible for GSM8K) and its chance level. `NaN` when the
    /// metric is missing (an empty run, or a result written by something else).
    pub fn headline(&self) -> (String, f64) {
        match Task::from_str(&self.task) {
            Ok(t) => {
                let name = t.headline_metric();
                (
                    name.to_string(),
                    self.metrics.get(name).copied().unwrap_or(f64::NAN),
                )
            }
            Err(_) => match self.metrics.iter().next() {
                Some((k, v)) => (k.clone(), *v),
                None => (String::new(), f64::NAN),
            },
        }
    }

    /// The headline metric's interval, when the result has one.
    pub fn headline_interval(&self) -> Option<Interval> {
        self.intervals.get(&self.headline().0).copied()
    }

    /// Chance level of the headline metric (`NaN` for an unknown task).
    pub fn chance(&self) -> f64 {
        Task::from_str(&self.task).map_or(f64::NAN, chance_level)
    }
}

#[cfg(test)]
mod tests;
