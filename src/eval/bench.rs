//! The headless benchmark: a stream of edits from a dataset, a protocol, evaluation points, and
//! everything written to a run folder (spec §4.5).
//!
//! Protocols (named types, not flags):
//! - `Single`: each case is edited into a fresh copy of the model, evaluated, and reset.
//! - `Batch { size }`: cases are edited `size` at a time (`size = n`: one batch edit).
//! - `Sequential`: one case after another with no reset; every `eval_every` edits *all* edits so
//!   far are evaluated on the current model (the forgetting curve), and always after the last one
//!   (the paper's protocol: evaluate all N edits on the final model).
//!
//! Metrics are named by where they come from: `token.*` are EasyEdit's token-level metrics
//! (rewrite / rephrase accuracy, locality against the unedited model's predictions recorded before
//! any edit — EasyEdit issue #643 — and portability), `prob.*` are ROME/MEMIT's CounterFact
//! probability comparisons (efficacy/paraphrase/neighbourhood scores and magnitudes),
//! `multihop` is MQuAKE's instance-wise multi-hop accuracy.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::checkpoint::{self, Checkpoint, CheckpointMeta, CheckpointPolicy};
use super::datasets::{EvalCase, MultiHop};
use super::metrics::{agreement, answer_argmax, fluency, target_nll, token_accuracy};
use super::probes::{ProbeResult, ProbeSet};
use crate::edit::request::target_ids;
use crate::edit::{
    new_editor, EditContext, EditControl, EditRequest, Editor, HParams, StatsCache, TargetCache,
    Timings,
};
use crate::error::{Error, Result};
use crate::model::generate::GenerateOptions;
use crate::model::{matrix_norms, Model};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Protocol {
    Single,
    Batch { size: usize },
    Sequential,
}

impl std::str::FromStr for Protocol {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim().to_ascii_lowercase();
        if s == "single" {
            return Ok(Protocol::Single);
        }
        if s == "sequential" || s == "seq" {
            return Ok(Protocol::Sequential);
        }
        if let Some(k) = s.strip_prefix("batch") {
            let k = k.trim_start_matches([':', '=']);
            let size = if k.is_empty() {
                usize::MAX
            } else {
                k.parse()
                    .map_err(|_| Error::Input(format!("protocol {s:?}: bad batch size")))?
            };
            return Ok(Protocol::Batch { size: size.max(1) });
        }
        Err(Error::Input(format!(
            "unknown protocol {s:?} (single, batch[:k], sequential)"
        )))
    }
}

/// Unedited-model references recorded before any edit.
pub struct Reference {
    /// Per case, per request, per neighbour: argmax tokens at the answer positions.
    pub locality: Vec<Vec<Vec<Vec<u32>>>>,
    /// Per case: how hard its edit target is for the unedited model (the D4S paper's §3.3
    /// "perplexity of the editing objective").
    pub targets: Vec<TargetDifficulty>,
}

/// The perplexity of a case's new target(s) after the bare prompt on the unedited model:
/// `exp` of the mean per-token negative log-likelihood (token-level concatenation, as
/// ROME/MEMIT score CounterFact), averaged over the case's requests in log space.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TargetDifficulty {
    pub nll: f64,
    /// Target tokens (mean over the case's requests).
    pub tokens: f64,
}

impl TargetDifficulty {
    pub fn ppl(&self) -> f64 {
        self.nll.exp()
    }
}

/// Records the locality references of every case on the unedited model.
pub fn reference(model: &mut Model, cases: &[EvalCase]) -> Result<Reference> {
    let mut items = Vec::new();
    let mut shape = Vec::new();
    for c in cases {
        let mut per_req = Vec::new();
        for r in &c.requests {
            let ns: Vec<(String, String)> = r
                .neighbors
                .iter()
                .filter_map(|n| n.answer.clone().map(|a| (n.prompt.clone(), a)))
                .collect();
            per_req.push(ns.len());
            items.extend(ns);
        }
        shape.push(per_req);
    }
    let (argmax, targets) = model.with_unedited(|m| -> Result<_> {
        Ok((answer_argmax(m, &items)?, target_difficulty(m, cases)?))
    })?;
    let mut it = argmax.into_iter().map(|(p, _)| p);
    let locality = shape
        .iter()
        .map(|per_req| {
            per_req
                .iter()
                .map(|&n| (0..n).filter_map(|_| it.next()).collect())
                .collect()
        })
        .collect();
    Ok(Reference { locality, targets })
}

/// [`TargetDifficulty`] of every case on `model` (the caller passes the unedited one).
fn target_difficulty(model: &Model, cases: &[EvalCase]) -> Result<Vec<TargetDifficulty>> {
    let items: Vec<(String, String)> = cases
        .iter()
        .flat_map(|c| c.requests.iter())
        .map(|r| (r.filled_prompt(), r.target.clone()))
        .collect();
    let nll = target_nll(model, &items)?;
    let mut at = 0;
    cases
        .iter()
        .map(|c| {
            let n = c.requests.len();
            let mut tokens = 0;
            for r in &c.requests {
                tokens += target_ids(model, &r.target)?.len();
            }
            let nll_sum: f64 = nll[at..at + n].iter().sum();
            at += n;
            let n = n.max(1) as f64;
            Ok(TargetDifficulty {
                nll: nll_sum / n,
                tokens: tokens as f64 / n,
            })
        })
        .collect()
}

/// Mean metrics over a set of cases.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CaseMetrics {
    pub token: BTreeMap<String, f64>,
    pub prob: BTreeMap<String, f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multihop: Option<f64>,
    /// Generation metrics (`fluency`: ROME/MEMIT's GE, bits) when the cases have generation
    /// prompts and the point measures them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub generation: BTreeMap<String, f64>,
    pub cases: usize,
}

fn mean(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

/// Tokens of prompt plus sample per generation prompt (spec §4.3, as ROME/MEMIT).
const GENERATION_TOKENS: usize = 100;
/// Sampling seed of the fluency generations (fixed, so a point is reproducible).
const GENERATION_SEED: u64 = 42;

/// ROME/MEMIT generation fluency: for each case, one top-5 sample of 100 tokens in all per
/// generation prompt, the mean [`fluency`] of those texts (prompt included, as the reference
/// scores them), averaged over the cases that have generation prompts. `None` when none has.
pub fn generation_fluency(model: &Model, cases: &[&EvalCase]) -> Result<Option<f64>> {
    let mut prompts = Vec::new();
    let mut owner = Vec::new();
    for (i, c) in cases.iter().enumerate() {
        for p in &c.generation_prompts {
            let ids = model.encode(p)?;
            if ids.is_empty() {
                continue;
            }
            prompts.push(ids);
            owner.push(i);
        }
    }
    if prompts.is_empty() {
        return Ok(None);
    }
    let mut per_case: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    for (k, (chunk_p, chunk_o)) in prompts.chunks(16).zip(owner.chunks(16)).enumerate() {
        let seed = GENERATION_SEED.wrapping_add(k as u64);
        let texts = model.sample_to_length(chunk_p, GENERATION_TOKENS, 5, seed)?;
        for (ids, &i) in texts.iter().zip(chunk_o) {
            per_case[i].push(fluency(&model.decode_text(ids)?));
        }
    }
    let means: Vec<f64> = per_case.iter().filter_map(|v| mean(v)).collect();
    Ok(mean(&means))
}

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
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub token: BTreeMap<String, f64>,
    /// This case's probability metrics (es / ps / ns and magnitudes).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub prob: BTreeMap<String, f64>,
    /// Neighbour (locality) prompts whose predicted answer tokens differ from the unedited
    /// model's, with both predictions decoded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changed_neighbours: Vec<NeighbourChange>,
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

/// What [`evaluate`] measures: the means over all items (`metrics.jsonl`) and each case's own.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    pub metrics: CaseMetrics,
    pub cases: Vec<CaseOutcome>,
}

/// Per-item values of one metric with the case (position in `which`) each belongs to: the
/// overall mean is over items, as the field reports it; a case's own value is over its items.
#[derive(Default)]
struct ItemValues {
    values: Vec<f64>,
    owners: Vec<usize>,
}

impl ItemValues {
    fn push(&mut self, owner: usize, v: f64) {
        self.values.push(v);
        self.owners.push(owner);
    }

    fn extend(&mut self, owners: &[usize], values: Vec<f64>) {
        self.owners.extend_from_slice(owners);
        self.values.extend(values);
    }

    fn case_means(&self, n_cases: usize) -> Vec<Option<f64>> {
        let mut sums = vec![(0.0, 0usize); n_cases];
        for (&o, &v) in self.owners.iter().zip(&self.values) {
            sums[o].0 += v;
            sums[o].1 += 1;
        }
        sums.into_iter()
            .map(|(s, k)| (k > 0).then(|| s / k as f64))
            .collect()
    }
}

/// Writes each metric's mean over all items into `total` and each case's mean over its own items
/// into the case's map.
fn record_means(
    all: &BTreeMap<&str, ItemValues>,
    total: &mut BTreeMap<String, f64>,
    outcomes: &mut [CaseOutcome],
    field: fn(&mut CaseOutcome) -> &mut BTreeMap<String, f64>,
) {
    for (name, items) in all {
        let Some(v) = mean(&items.values) else {
            continue;
        };
        total.insert((*name).into(), v);
        let per_case = items.case_means(outcomes.len());
        for (o, v) in outcomes.iter_mut().zip(per_case) {
            if let Some(v) = v {
                field(o).insert((*name).into(), v);
            }
        }
    }
}

/// Evaluates cases on the current model. `which` selects cases by index into `cases`;
/// `with_fluency` adds the generation fluency (about a hundred sampled tokens per generation
/// prompt, so the benchmark measures it only before the first and after the last edit).
pub fn evaluate(
    model: &Model,
    cases: &[EvalCase],
    reference: &Reference,
    which: &[usize],
    multihop: bool,
    with_fluency: bool,
) -> Result<Evaluation> {
    // Items to score, each with its owner: the case's position in `which`.
    let (mut rewrite, mut rewrite_of) = (Vec::new(), Vec::new());
    let (mut rephrase, mut rephrase_of) = (Vec::new(), Vec::new());
    let (mut portability, mut portability_of) = (Vec::new(), Vec::new());
    let (mut spec_items, mut spec_of) = (Vec::new(), Vec::new());
    let mut spec_refs: Vec<&Vec<u32>> = Vec::new();
    let mut nll_items: Vec<(String, String)> = Vec::new();
    // (kind, owner, index into nll_items of the (new, true) pair) for the probability metrics.
    let mut nll_jobs: Vec<(u8, usize, usize)> = Vec::new();
    for (owner, &ci) in which.iter().enumerate() {
        let c = &cases[ci];
        for (ri, r) in c.requests.iter().enumerate() {
            rewrite.push((r.filled_prompt(), r.target.clone()));
            rewrite_of.push(owner);
            for p in &r.paraphrases {
                rephrase.push((p.clone(), r.target.clone()));
                rephrase_of.push(owner);
            }
            let answered: Vec<_> = r
                .neighbors
                .iter()
                .filter_map(|n| n.answer.clone().map(|a| (n.prompt.clone(), a)))
                .collect();
            for (k, item) in answered.iter().enumerate() {
                spec_items.push(item.clone());
                spec_of.push(owner);
                spec_refs.push(&reference.locality[ci][ri][k]);
            }
            if let Some(truth) = &r.ground_truth {
                // efficacy: new vs true on the prompt; paraphrase: the same on each paraphrase;
                // neighbourhood: the neighbour's own answer vs the new target.
                let mut pair = |kind: u8, prompt: &String, other: &String| {
                    nll_jobs.push((kind, owner, nll_items.len()));
                    nll_items.push((prompt.clone(), r.target.clone()));
                    nll_items.push((prompt.clone(), other.clone()));
                };
                pair(0, &r.filled_prompt(), truth);
                for p in &r.paraphrases {
                    pair(1, p, truth);
                }
                for (prompt, ans) in &answered {
                    pair(2, prompt, ans);
                }
            }
        }
        portability_of.extend(std::iter::repeat_n(owner, c.portability.len()));
        portability.extend(c.portability.iter().cloned());
    }
    let mut token: BTreeMap<&str, ItemValues> = BTreeMap::new();
    token
        .entry("efficacy")
        .or_default()
        .extend(&rewrite_of, token_accuracy(model, &rewrite)?);
    token
        .entry("paraphrase")
        .or_default()
        .extend(&rephrase_of, token_accuracy(model, &rephrase)?);
    let post = answer_argmax(model, &spec_items)?;
    let mut changed: Vec<Vec<NeighbourChange>> = vec![Vec::new(); which.len()];
    let specificity = token.entry("specificity").or_default();
    for (k, ((after, _), pre)) in post.iter().zip(&spec_refs).enumerate() {
        let agree = agreement(pre, after);
        specificity.push(spec_of[k], agree);
        if agree < 1.0 {
            changed[spec_of[k]].push(NeighbourChange {
                prompt: spec_items[k].0.clone(),
                answer: spec_items[k].1.clone(),
                before: model.decode(pre)?,
                after: model.decode(after)?,
            });
        }
    }
    token
        .entry("portability")
        .or_default()
        .extend(&portability_of, token_accuracy(model, &portability)?);
    let nll = target_nll(model, &nll_items)?;
    let mut prob: BTreeMap<&str, ItemValues> = BTreeMap::new();
    for &(kind, owner, s) in &nll_jobs {
        let (new, truth) = (nll[s], nll[s + 1]);
        let (p_new, p_true) = ((-new).exp(), (-truth).exp());
        // Efficacy and paraphrase ask for the new target; the neighbourhood for the old answer.
        let (score, magnitude, names) = match kind {
            0 => (new < truth, p_new - p_true, ["es", "em"]),
            1 => (new < truth, p_new - p_true, ["ps", "pm"]),
            _ => (truth < new, p_true - p_new, ["ns", "nm"]),
        };
        prob.entry(names[0])
            .or_default()
            .push(owner, f64::from(score));
        prob.entry(names[1]).or_default().push(owner, magnitude);
    }
    let mut m = CaseMetrics {
        cases: which.len(),
        ..Default::default()
    };
    let mut outcomes: Vec<CaseOutcome> = which
        .iter()
        .zip(changed)
        .map(|(&ci, changed_neighbours)| CaseOutcome {
            index: ci,
            origin: cases[ci].origin.clone(),
            requests: cases[ci]
                .requests
                .iter()
                .map(|r| RequestText {
                    prompt: r.filled_prompt(),
                    target: r.target.clone(),
                })
                .collect(),
            token: BTreeMap::new(),
            prob: BTreeMap::new(),
            changed_neighbours,
        })
        .collect();
    record_means(&token, &mut m.token, &mut outcomes, |o| &mut o.token);
    record_means(&prob, &mut m.prob, &mut outcomes, |o| &mut o.prob);
    if with_fluency {
        let selected: Vec<&EvalCase> = which.iter().map(|&ci| &cases[ci]).collect();
        if let Some(f) = generation_fluency(model, &selected)? {
            m.generation.insert("fluency".into(), f);
        }
    }
    if multihop {
        let mh: Vec<&MultiHop> = which
            .iter()
            .filter_map(|&ci| cases[ci].multi_hop.as_ref())
            .collect();
        if !mh.is_empty() {
            m.multihop = Some(multihop_accuracy(model, &mh)?);
        }
    }
    Ok(Evaluation {
        metrics: m,
        cases: outcomes,
    })
}

/// A short few-shot preamble for multi-hop questions (written for d4s; MQuAKE's own 16-shot
/// prompt file is not available here).
const MULTIHOP_SHOTS: &str =
    "Q: What is the capital of the country where the Eiffel Tower is located?\nA: Paris\n\n\
Q: Who is the head of state of the country whose official language is Japanese?\nA: Naruhito\n\n\
Q: On which continent is the country where Nokia was founded?\nA: Europe\n\n";

/// MQuAKE instance-wise accuracy: a case is right when any of its questions is answered with the
/// new answer or one of its aliases (greedy, up to 16 tokens, first line).
pub fn multihop_accuracy(model: &Model, cases: &[&MultiHop]) -> Result<f64> {
    let mut prompts = Vec::new();
    let mut owner = Vec::new();
    for (i, c) in cases.iter().enumerate() {
        for q in &c.questions {
            prompts.push(model.encode(&format!("{MULTIHOP_SHOTS}Q: {q}\nA:"))?);
            owner.push(i);
        }
    }
    let opts = GenerateOptions {
        max_tokens: 16,
        stop_strings: vec!["\n".into()],
        ..Default::default()
    };
    let mut right = vec![false; cases.len()];
    for (chunk_p, chunk_o) in prompts.chunks(16).zip(owner.chunks(16)) {
        let outs = model.generate_batch_with(chunk_p, &opts, |_, _| true)?;
        for (o, &i) in outs.iter().zip(chunk_o) {
            let text = model.decode_text(o)?;
            let answer = normalize(text.lines().next().unwrap_or(""));
            let c = cases[i];
            if std::iter::once(&c.answer).chain(&c.aliases).any(|a| {
                let a = normalize(a);
                !a.is_empty() && answer.contains(&a)
            }) {
                right[i] = true;
            }
        }
    }
    Ok(right.iter().filter(|&&r| r).count() as f64 / cases.len().max(1) as f64)
}

fn normalize(s: &str) -> String {
    s.trim().trim_end_matches('.').to_lowercase()
}

/// Norms of one edited matrix at an evaluation point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerNorms {
    pub layer: usize,
    /// ‖W‖₁ / numel (the paper's "L1-norm of the editing layer").
    pub l1_mean: f64,
    pub fro: f64,
    /// ‖W − W0‖₁ / numel and ‖W − W0‖_F.
    pub delta_l1_mean: f64,
    pub delta_fro: f64,
}

pub fn layer_norms(model: &Model, layers: &[usize]) -> Result<Vec<LayerNorms>> {
    layers
        .iter()
        .map(|&l| {
            let w = model.edit_weight(l)?;
            let d = (w - model.original_edit_weight(l)?)?;
            let n = w.elem_count() as f64;
            let (l1, fro) = matrix_norms(w)?;
            let (dl1, dfro) = matrix_norms(&d)?;
            Ok(LayerNorms {
                layer: l,
                l1_mean: l1 / n,
                fro,
                delta_l1_mean: dl1 / n,
                delta_fro: dfro,
            })
        })
        .collect()
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
}

/// One line of `edits.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EditRecord {
    pub index: usize,
    pub origin: String,
    pub prob_initial: Option<f64>,
    pub prob_final: Option<f64>,
    pub seconds: f64,
    /// Where the step's time went (statistics, templates, target, keys, solve), per request of
    /// the step; absent for rejected edits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timings: Option<Timings>,
    /// Resident memory of the process right after the edit, in bytes (Linux).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rss_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected: Option<String>,
    /// Target optimizations of this edit answered by the shared cache (an earlier method of the
    /// same command solved them on the unedited model): its `seconds` exclude their cost.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub targets_reused: usize,
    /// Perplexity of the case's new target after its prompt on the unedited model
    /// ([`TargetDifficulty`]), and its length in tokens: what the D4S paper (§3.3) relates the
    /// damage of editing to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ppl: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_tokens: Option<f64>,
    /// The new target of each of the case's requests: what the run's target *diversity* (how
    /// many distinct answers the edits write, the paper's other MQD factor) is computed from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target_new: Vec<String>,
}

pub(crate) fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// Everything a run produces, streamed to the caller as it happens.
pub trait BenchSink {
    fn edit(&mut self, record: &EditRecord) -> Result<()>;
    fn point(&mut self, point: &EvalPoint) -> Result<()>;
    /// Called before each edit with (edits done, total) for progress displays.
    fn progress(&mut self, _done: usize, _total: usize, _phase: &str) {}
    /// Something the user should know that does not stop the run.
    fn warn(&mut self, _message: &str) {}
    /// Each case's outcome at the final point (called once, just before that point).
    fn cases(&mut self, _cases: &[CaseOutcome]) -> Result<()> {
        Ok(())
    }
}

/// A run's inputs (besides the model and the cases).
pub struct BenchRun<'a> {
    pub hparams: HParams,
    pub protocol: Protocol,
    /// Evaluate every k edits (sequential); `None` = only at the end.
    pub eval_every: Option<usize>,
    pub probes: &'a [ProbeSet],
    pub multihop: bool,
    pub stats: &'a mut StatsCache,
    /// Targets of the unedited model shared with the other methods of the command (`None`: always
    /// optimize). The single-edit protocol starts every record from W0, so each method after the
    /// first finds MEMIT-style targets here.
    pub targets: Option<&'a mut TargetCache>,
    /// Write checkpoints (sequential and batch protocols).
    pub checkpoint: Option<CheckpointPolicy>,
    /// The run's identity, recorded in each checkpoint (what a resume must match).
    pub identity: serde_json::Value,
    /// Continue from this checkpoint instead of starting with the unedited model.
    pub resume: Option<Checkpoint>,
    /// Stop (after writing a checkpoint) once this many cases are edited.
    pub stop_after: Option<usize>,
    /// Set from outside (Ctrl-C) to stop the same way after the current step.
    pub interrupt: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
}

/// What [`run`] did.
#[derive(Debug, Clone)]
pub struct BenchOutcome {
    /// The evaluation points of this call (a resumed run's earlier points are in its folder).
    pub points: Vec<EvalPoint>,
    /// False when it stopped early (`stop_after`); the run folder then holds a checkpoint.
    pub complete: bool,
}

fn run_probes(model: &Model, probes: &[ProbeSet]) -> Result<BTreeMap<String, ProbeResult>> {
    probes
        .iter()
        .map(|p| p.run(model, None).map(|r| (p.task().name().to_string(), r)))
        .collect()
}

/// Everything a checkpoint holds, taken from the running state.
fn take_checkpoint(
    model: &Model,
    editor: &dyn Editor,
    progress: (usize, usize, usize),
    probs: &[f64],
    wall_seconds: f64,
    identity: &serde_json::Value,
) -> Result<Checkpoint> {
    let (steps, edits, rejected) = progress;
    let layers = model.touched_layers();
    let weights = layers
        .iter()
        .map(|&l| Ok((l, model.edit_weight(l)?.clone())))
        .collect::<Result<_>>()?;
    let snapshot = editor.snapshot()?;
    Ok(Checkpoint {
        meta: CheckpointMeta {
            format: checkpoint::FORMAT,
            d4s_version: env!("CARGO_PKG_VERSION").into(),
            written: crate::session::journal::now(),
            method: editor.method().name().into(),
            steps,
            edits,
            rejected,
            wall_seconds,
            layers,
            editor_meta: snapshot.meta.clone(),
            identity: identity.clone(),
        },
        weights,
        editor: snapshot,
        probs: probs.to_vec(),
    })
}

/// Runs the protocol over `cases` (all of them), streaming records to `sink`.
pub fn run(
    model: &mut Model,
    cases: &[EvalCase],
    mut spec: BenchRun,
    sink: &mut dyn BenchSink,
) -> Result<BenchOutcome> {
    let t0 = Instant::now();
    let wall_offset = spec.resume.as_ref().map_or(0.0, |c| c.meta.wall_seconds);
    let wall = || wall_offset + t0.elapsed().as_secs_f64();
    if spec.protocol == Protocol::Single && (spec.resume.is_some() || spec.stop_after.is_some()) {
        return Err(Error::Input(
            "checkpoints and --resume are for the sequential and batch protocols (single resets \
             the model after every case)"
                .into(),
        ));
    }
    model.reset_edits();
    let reference = reference(model, cases)?;
    let layers = spec.hparams.layers.clone();
    let mut points = Vec::new();
    let mut probs: Vec<f64> = Vec::new();
    let mut rejected = 0;
    let point = |model: &Model,
                 which: &[usize],
                 edits: usize,
                 probs: &[f64],
                 rejected: usize,
                 with_fluency: bool|
     -> Result<(EvalPoint, Vec<CaseOutcome>)> {
        let eval = evaluate(model, cases, &reference, which, spec.multihop, with_fluency)?;
        let point = EvalPoint {
            edits,
            metrics: eval.metrics,
            probes: run_probes(model, spec.probes)?,
            layers: layer_norms(model, &layers)?,
            edit_prob: mean(probs),
            rejected,
            wall_seconds: wall(),
        };
        Ok((point, eval.cases))
    };
    let steps: Vec<Vec<usize>> = match spec.protocol {
        Protocol::Single | Protocol::Sequential => (0..cases.len()).map(|i| vec![i]).collect(),
        Protocol::Batch { size } => (0..cases.len())
            .collect::<Vec<_>>()
            .chunks(size.min(cases.len()).max(1))
            .map(<[usize]>::to_vec)
            .collect(),
    };
    let mut editor: Box<dyn Editor> = new_editor(spec.hparams.clone());
    let mut done: Vec<usize> = Vec::new();
    let mut single_results: Vec<Evaluation> = Vec::new();
    let mut first_step = 0;
    if let Some(ck) = &spec.resume {
        first_step = resume_from(model, editor.as_mut(), ck, &steps, &spec.hparams)?;
        done = steps[..first_step].concat();
        probs = ck.probs.clone();
        rejected = ck.meta.rejected;
    } else if spec.protocol != Protocol::Single {
        // The unedited model is point 0 (sequential/batch): the baseline of every curve.
        let (p, _) = point(
            model,
            &(0..cases.len()).collect::<Vec<_>>(),
            0,
            &[],
            0,
            true,
        )?;
        sink.point(&p)?;
        points.push(p);
    }
    let mut checkpointed = done.len();
    for (step_no, step) in steps.iter().enumerate().skip(first_step) {
        sink.progress(done.len(), cases.len(), "editing");
        if spec.protocol == Protocol::Single {
            model.reset_edits();
            editor = new_editor(spec.hparams.clone());
        }
        let requests: Vec<EditRequest> = step
            .iter()
            .flat_map(|&i| cases[i].requests.iter().cloned())
            .collect();
        let te = Instant::now();
        let hits_before = spec.targets.as_ref().map_or(0, |t| t.hits());
        let mut cx = EditContext {
            stats: spec.stats,
            targets: spec.targets.as_deref_mut(),
            ctl: EditControl::default(),
        };
        let outcome = editor.apply(model, &mut cx, &requests);
        let seconds = te.elapsed().as_secs_f64();
        let reused = spec.targets.as_ref().map_or(0, |t| t.hits()) - hits_before;
        let rss_bytes = crate::util::resident_memory();
        // What a record says about case `i` whatever the outcome; each arm adds its own.
        let case_record = |i: usize| EditRecord {
            index: i,
            origin: cases[i].origin.clone(),
            prob_initial: None,
            prob_final: None,
            seconds: 0.0,
            timings: None,
            rss_bytes,
            rejected: None,
            targets_reused: 0,
            target_ppl: Some(reference.targets[i].ppl()),
            target_tokens: Some(reference.targets[i].tokens),
            target_new: cases[i].new_targets(),
        };
        match &outcome {
            Ok(o) => {
                let timings = o.timings.per_request(step.len());
                for (k, &i) in step.iter().enumerate() {
                    let t = o.targets.get(k.min(o.targets.len().saturating_sub(1)));
                    probs.extend(t.map(|t| t.prob_final));
                    sink.edit(&EditRecord {
                        prob_initial: t.map(|t| t.prob_initial),
                        prob_final: t.map(|t| t.prob_final),
                        seconds: seconds / step.len() as f64,
                        timings: Some(timings.clone()),
                        targets_reused: reused as usize / step.len(),
                        ..case_record(i)
                    })?;
                }
            }
            Err(Error::Cancelled) => return Err(Error::Cancelled),
            Err(e) => {
                rejected += step.len();
                for &i in step {
                    sink.edit(&EditRecord {
                        seconds,
                        rejected: Some(e.to_string()),
                        ..case_record(i)
                    })?;
                }
            }
        }
        done.extend(step.iter().copied());
        match spec.protocol {
            Protocol::Single => {
                sink.progress(done.len(), cases.len(), "evaluating");
                single_results.push(evaluate(
                    model,
                    cases,
                    &reference,
                    step,
                    spec.multihop,
                    true,
                )?);
            }
            _ => {
                let due = spec
                    .eval_every
                    .is_some_and(|k| done.len().is_multiple_of(k) && done.len() < cases.len());
                if due {
                    sink.progress(done.len(), cases.len(), "evaluating all edits so far");
                    let (p, _) = point(model, &done, done.len(), &probs, rejected, false)?;
                    sink.point(&p)?;
                    points.push(p);
                }
                let interrupted = spec
                    .interrupt
                    .as_ref()
                    .is_some_and(|f| f.load(std::sync::atomic::Ordering::SeqCst));
                let stop = interrupted || spec.stop_after.is_some_and(|s| done.len() >= s);
                let unfinished = done.len() < cases.len();
                if let (Some(policy), true) = (&spec.checkpoint, unfinished) {
                    let every = policy.every.max(1);
                    if due || stop || done.len() / every > checkpointed / every {
                        sink.progress(done.len(), cases.len(), "writing a checkpoint");
                        let ck = take_checkpoint(
                            model,
                            editor.as_ref(),
                            (step_no + 1, done.len(), rejected),
                            &probs,
                            wall(),
                            &spec.identity,
                        )?;
                        // A checkpoint is insurance: failing to write one (a full disk) is
                        // reported and the run goes on with the previous one in place.
                        // The next attempt is at the next multiple either way.
                        checkpointed = done.len();
                        match checkpoint::save(&policy.dir, &ck) {
                            Ok(()) => {}
                            Err(e) if stop => return Err(e),
                            Err(e) => sink.warn(&format!(
                                "could not write the checkpoint after {} edits ({e}); the run \
                                 goes on, and the previous checkpoint (if any) stays",
                                done.len()
                            )),
                        }
                    }
                }
                if stop && unfinished {
                    return Ok(BenchOutcome {
                        points,
                        complete: false,
                    });
                }
            }
        }
    }
    sink.progress(cases.len(), cases.len(), "final evaluation");
    let (last, outcomes) = if spec.protocol == Protocol::Single {
        // Mean of the per-case results, each measured right after its own edit.
        let (mut p, _) = point(model, &[], cases.len(), &probs, rejected, false)?;
        p.metrics = merge_means(single_results.iter().map(|e| &e.metrics));
        let outcomes = single_results.into_iter().flat_map(|e| e.cases).collect();
        (p, outcomes)
    } else {
        point(model, &done, done.len(), &probs, rejected, true)?
    };
    sink.cases(&outcomes)?;
    sink.point(&last)?;
    points.push(last);
    if spec.protocol == Protocol::Single {
        model.reset_edits();
    }
    Ok(BenchOutcome {
        points,
        complete: true,
    })
}

/// Puts a checkpoint's weights and editor state in place; returns the first step to run.
fn resume_from(
    model: &mut Model,
    editor: &mut dyn Editor,
    ck: &Checkpoint,
    steps: &[Vec<usize>],
    hparams: &HParams,
) -> Result<usize> {
    if ck.meta.method != hparams.method.name() {
        return Err(Error::Input(format!(
            "the checkpoint is of a {} run, not {}",
            ck.meta.method,
            hparams.method.name()
        )));
    }
    let first = ck.meta.steps;
    let edits: usize = steps.iter().take(first).map(Vec::len).sum();
    if first > steps.len() || edits != ck.meta.edits {
        return Err(Error::Input(format!(
            "the checkpoint is after {} edits in {first} steps, which does not fit this run's {} \
             steps",
            ck.meta.edits,
            steps.len()
        )));
    }
    for (layer, w) in &ck.weights {
        model.set_edit_weight(*layer, w.clone())?;
    }
    editor.restore_snapshot(model, &ck.editor)?;
    Ok(first)
}

/// Case-weighted means of per-case metric sets.
fn merge_means<'a>(parts: impl IntoIterator<Item = &'a CaseMetrics>) -> CaseMetrics {
    let mut out = CaseMetrics::default();
    let mut sums: BTreeMap<(u8, String), (f64, usize)> = BTreeMap::new();
    let mut mh = (0.0, 0);
    for p in parts {
        out.cases += p.cases;
        for (k, v) in &p.token {
            let e = sums.entry((0, k.clone())).or_default();
            e.0 += v * p.cases as f64;
            e.1 += p.cases;
        }
        for (k, v) in &p.prob {
            let e = sums.entry((1, k.clone())).or_default();
            e.0 += v * p.cases as f64;
            e.1 += p.cases;
        }
        for (k, v) in &p.generation {
            let e = sums.entry((2, k.clone())).or_default();
            e.0 += v * p.cases as f64;
            e.1 += p.cases;
        }
        if let Some(m) = p.multihop {
            mh.0 += m * p.cases as f64;
            mh.1 += p.cases;
        }
    }
    for ((kind, k), (s, n)) in sums {
        let v = s / n.max(1) as f64;
        match kind {
            0 => out.token.insert(k, v),
            1 => out.prob.insert(k, v),
            _ => out.generation.insert(k, v),
        };
    }
    out.multihop = (mh.1 > 0).then(|| mh.0 / mh.1 as f64);
    out
}

/// Where a run's files go.
pub fn method_dir(out: &std::path::Path, method: &str, several: bool) -> PathBuf {
    if several {
        out.join(method)
    } else {
        out.to_path_buf()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edit::Method;
    use crate::eval::testkit::{cases, spec, stats, Memory};
    use crate::model::config::Arch;
    use crate::model::random::tiny_model;

    /// A sequential MEMIT run over `cases` on a tiny model: the edited model and what it wrote.
    fn memit_run(cases: &[EvalCase]) -> (Model, Memory) {
        let stats_dir = tempfile::tempdir().unwrap();
        let mut st = stats(stats_dir.path());
        let mut model = tiny_model(Arch::Llama, 21);
        let mut sink = Memory::default();
        run(
            &mut model,
            cases,
            spec(Method::Memit, &mut st, None, None, None),
            &mut sink,
        )
        .unwrap();
        (model, sink)
    }

    #[test]
    fn every_edit_records_its_target_perplexity_on_the_unedited_model() {
        let cases = cases();
        let items: Vec<(String, String)> = cases
            .iter()
            .map(|c| (c.requests[0].filled_prompt(), c.requests[0].target.clone()))
            .collect();
        let nll_w0 = target_nll(&tiny_model(Arch::Llama, 21), &items).unwrap();
        let (model, sink) = memit_run(&cases);
        // The sequential run leaves the model edited, which scores every target differently:
        // the recorded values are the unedited model's, not the edited one's.
        let nll_edited = target_nll(&model, &items).unwrap();
        assert!(
            nll_edited.iter().zip(&nll_w0).all(|(e, w)| e != w),
            "{nll_edited:?} {nll_w0:?}"
        );
        assert_eq!(sink.records.len(), cases.len());
        for r in &sink.records {
            assert_eq!(r.target_ppl, Some(nll_w0[r.index].exp()), "{r:?}");
            let tokens = target_ids(&model, &cases[r.index].requests[0].target)
                .unwrap()
                .len();
            assert_eq!(r.target_tokens, Some(tokens as f64));
            assert_eq!(r.target_new, [cases[r.index].requests[0].target.clone()]);
        }
        let s = crate::eval::report::summarize("memit", &sink.points, &sink.records).unwrap();
        let t = s.targets.expect("target summary");
        let geometric = (nll_w0.iter().sum::<f64>() / nll_w0.len() as f64).exp();
        assert!((t.ppl - geometric).abs() <= 1e-9 * geometric, "{t:?}");
    }

    #[test]
    fn each_case_outcome_at_the_end_adds_up_to_the_final_point() {
        let cases = cases();
        let (model, sink) = memit_run(&cases);
        let last = &sink.points.last().unwrap().metrics;
        assert_eq!(sink.cases.len(), cases.len());
        for (i, o) in sink.cases.iter().enumerate() {
            assert_eq!((o.index, o.origin.as_str()), (i, cases[i].origin.as_str()));
            assert_eq!(o.requests[0].target, cases[i].requests[0].target);
            assert_eq!(o.requests[0].prompt, cases[i].requests[0].filled_prompt());
            for name in ["es", "ps", "ns"] {
                assert!([0.0, 1.0].contains(&o.prob[name]), "{o:?}");
            }
            // A neighbour is listed as changed exactly when its predictions moved.
            let spe = o.token["specificity"];
            assert_eq!(o.changed_neighbours.is_empty(), spe == 1.0, "{o:?}");
            for n in &o.changed_neighbours {
                assert_ne!(n.before, n.after, "{n:?}");
                assert_eq!(n.answer, " Rome");
            }
        }
        // Five sequential edits move the shared neighbour's prediction somewhere.
        assert!(sink.cases.iter().any(|o| !o.changed_neighbours.is_empty()));
        // One item of each kind per case: the point's means are the means of the cases'.
        for (name, metrics) in [
            ("efficacy", &last.token),
            ("paraphrase", &last.token),
            ("specificity", &last.token),
            ("es", &last.prob),
            ("nm", &last.prob),
        ] {
            let per_case = sink.cases.iter().map(|o| {
                let m = if metrics == &last.token {
                    &o.token
                } else {
                    &o.prob
                };
                m[name]
            });
            let mean = per_case.sum::<f64>() / cases.len() as f64;
            assert!(
                (mean - metrics[name]).abs() < 1e-12,
                "{name}: {mean} {metrics:?}"
            );
        }
        // The outcomes are a pure function of the model and the references, for any selection
        // of cases in any order; the unedited model changes no neighbour.
        let mut model_w0 = tiny_model(Arch::Llama, 21);
        let reference_w0 = reference(&mut model_w0, &cases).unwrap();
        let again = evaluate(
            &model,
            &cases,
            &reference_w0,
            &[0, 1, 2, 3, 4],
            false,
            false,
        )
        .unwrap();
        assert_eq!(again.cases, sink.cases);
        let unedited = evaluate(&model_w0, &cases, &reference_w0, &[4, 1], false, false).unwrap();
        assert_eq!(
            unedited.cases.iter().map(|o| o.index).collect::<Vec<_>>(),
            [4, 1]
        );
        assert!(unedited
            .cases
            .iter()
            .all(|o| o.changed_neighbours.is_empty() && o.token["specificity"] == 1.0));
    }

    #[test]
    fn the_single_protocol_reports_each_case_right_after_its_own_edit() {
        let cases = cases();
        let stats_dir = tempfile::tempdir().unwrap();
        let mut st = stats(stats_dir.path());
        let mut model = tiny_model(Arch::Llama, 21);
        let mut sink = Memory::default();
        let mut run_spec = spec(Method::Memit, &mut st, None, None, None);
        run_spec.protocol = Protocol::Single;
        run(&mut model, &cases, run_spec, &mut sink).unwrap();
        // One point, at the end; the model is reset after the run.
        assert_eq!(sink.points.len(), 1);
        assert_eq!(model.touched_layers(), Vec::<usize>::new());
        let last = &sink.points[0].metrics;
        assert_eq!(last.cases, cases.len());
        assert_eq!(
            sink.cases.iter().map(|o| o.index).collect::<Vec<_>>(),
            (0..cases.len()).collect::<Vec<_>>()
        );
        // Each case is one item of each kind: the merged means are the cases' means.
        for name in ["efficacy", "specificity"] {
            let mean = sink.cases.iter().map(|o| o.token[name]).sum::<f64>() / cases.len() as f64;
            assert!(
                (mean - last.token[name]).abs() < 1e-12,
                "{name}: {mean} {last:?}"
            );
        }
        let es = sink.cases.iter().map(|o| o.prob["es"]).sum::<f64>() / cases.len() as f64;
        assert!((es - last.prob["es"]).abs() < 1e-12, "{es} {last:?}");
    }

    #[test]
    fn fluency_is_measured_before_the_first_and_after_the_last_edit_when_prompts_exist() {
        let mut cases = cases();
        for c in &mut cases[..3] {
            c.generation_prompts = vec![format!("{} is", c.requests[0].subject)];
        }
        let (model, sink) = memit_run(&cases);
        let ge: Vec<Option<f64>> = sink
            .points
            .iter()
            .map(|p| p.metrics.generation.get("fluency").copied())
            .collect();
        assert_eq!(sink.points.len(), 4, "points 0, 2, 4 and the end");
        assert!(ge[1].is_none() && ge[2].is_none(), "{ge:?}");
        for g in [ge[0], ge[3]] {
            // ~100 byte-level tokens of a random model: varied text, a few bits of entropy.
            let g = g.expect("fluency at point 0 and at the end");
            assert!(g > 1.0 && g < 10.0, "{g}");
        }
        // Deterministic: the same model and prompts give the same value.
        let again = generation_fluency(&model, &cases.iter().collect::<Vec<_>>()).unwrap();
        assert_eq!(again, ge[3]);
        // Cases without generation prompts have no fluency, and cost nothing.
        let plain = crate::eval::testkit::cases();
        assert_eq!(
            generation_fluency(&model, &plain.iter().collect::<Vec<_>>()).unwrap(),
            None
        );
        // The summary and the compare table carry it.
        let s = crate::eval::report::summarize("memit", &sink.points, &sink.records).unwrap();
        assert_eq!(s.fluency, ge[3]);
        let md = crate::eval::report::table(&[("run".into(), s)]);
        assert!(md.contains("| GE |"), "{md}");
    }
}
