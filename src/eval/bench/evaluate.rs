//! The one evaluation of edited cases, called by the benchmark and by the TUI's worker alike, so
//! the numbers a user watches are the numbers the paper tables hold (spec §4).
//!
//! Metrics are named by where they come from: `token.*` are EasyEdit's token-level metrics
//! (rewrite / rephrase accuracy, locality against the unedited model's predictions recorded before
//! any edit — EasyEdit issue #643 — and portability), `prob.*` are ROME/MEMIT's CounterFact
//! probability comparisons (efficacy/paraphrase/neighbourhood scores and magnitudes),
//! `generation.fluency` their generation fluency, `multihop` MQuAKE's instance-wise multi-hop
//! accuracy, and `gen.*` the same questions answered by greedy decoding instead of teacher
//! forcing ("The Mirage of Model Editing", ACL 2025). Every per-edit metric carries a 95%
//! bootstrap interval over cases ([`crate::eval::interval`]). A mean over a set of cases is over their items, as the field reports it; a case's own
//! value is over its own items.

use std::collections::BTreeMap;

use super::records::{
    CaseMetrics, CaseOutcome, GenMetric, GenMetrics, LayerNorms, Metric, NeighbourChange,
    ProbMetric, ProbMetrics, RequestText, TokenMetric, TokenMetrics,
};
use crate::edit::request::target_ids;
use crate::error::Result;
use crate::eval::datasets::{EvalCase, MultiHop};
use crate::eval::interval::{self, Tally};
use crate::eval::metrics::{
    agreement, answer_argmax, exact_match, fluency, greedy_answers, target_nll, token_accuracy,
    token_f1,
};
use crate::model::generate::GenerateOptions;
use crate::model::{matrix_norms, Model};

/// The unedited model's predictions the locality metrics compare against, recorded before any
/// edit: per case, per request, per answered neighbour, the argmax tokens at the answer positions
/// and, where the run decodes (`gen.*`), the greedy answer.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Reference {
    locality: Vec<Vec<Vec<Vec<u32>>>>,
    /// Empty per request when the references were taken without decoding.
    answers: Vec<Vec<Vec<String>>>,
}

impl Reference {
    /// The references of every case, on the unedited model; `decode` also records the greedy
    /// answers [`GenMetric::Specificity`] compares against.
    pub fn of(model: &mut Model, cases: &[EvalCase], decode: bool) -> Result<Self> {
        let mut r = Reference::default();
        r.extend(model, cases, decode)?;
        Ok(r)
    }

    /// The references of the cases `wanted` says (the others get none, and must not be
    /// evaluated: a bench run's [`super::run::EvalSample`]).
    pub fn of_sample(
        model: &mut Model,
        cases: &[EvalCase],
        wanted: impl Fn(usize) -> bool,
        decode: bool,
    ) -> Result<Self> {
        let mut r = Reference::default();
        r.extend_where(model, cases, wanted, decode)?;
        Ok(r)
    }

    /// Adds the references of more cases (in one batch on the unedited model).
    pub fn extend(&mut self, model: &mut Model, cases: &[EvalCase], decode: bool) -> Result<()> {
        self.extend_where(model, cases, |_| true, decode)
    }

    fn extend_where(
        &mut self,
        model: &mut Model,
        cases: &[EvalCase],
        wanted: impl Fn(usize) -> bool,
        decode: bool,
    ) -> Result<()> {
        let per_request: Vec<Vec<Vec<(String, String)>>> = cases
            .iter()
            .enumerate()
            .map(|(ci, c)| {
                c.requests
                    .iter()
                    .map(|r| {
                        if wanted(ci) {
                            r.answered_neighbours()
                        } else {
                            Vec::new()
                        }
                    })
                    .collect()
            })
            .collect();
        let items: Vec<(String, String)> =
            per_request.iter().flatten().flatten().cloned().collect();
        let (argmax, answers) = model.with_unedited(|m| {
            let argmax = answer_argmax(m, &items)?;
            let answers = if decode {
                greedy_answers(m, &items)?
            } else {
                Vec::new()
            };
            Ok::<_, crate::error::Error>((argmax, answers))
        })?;
        let mut it = argmax.into_iter().map(|(p, _)| p);
        let mut said = answers.into_iter();
        for case in per_request {
            let refs = case
                .iter()
                .map(|ns| ns.iter().filter_map(|_| it.next()).collect())
                .collect();
            self.locality.push(refs);
            let answers = case
                .iter()
                .map(|ns| ns.iter().filter_map(|_| said.next()).collect())
                .collect();
            self.answers.push(answers);
        }
        Ok(())
    }

    /// The cases it holds references for.
    pub fn cases(&self) -> usize {
        self.locality.len()
    }

    /// Takes over another reference's cases, after this one's.
    pub fn append(&mut self, other: Reference) {
        self.locality.extend(other.locality);
        self.answers.extend(other.answers);
    }

    /// Forgets the references of the last case (an undone edit in the TUI).
    pub fn pop(&mut self) {
        self.locality.pop();
        self.answers.pop();
    }

    fn of_neighbour(&self, case: usize, request: usize, neighbour: usize) -> &[u32] {
        &self.locality[case][request][neighbour]
    }

    fn answer_of_neighbour(&self, case: usize, request: usize, neighbour: usize) -> Option<&str> {
        self.answers
            .get(case)?
            .get(request)?
            .get(neighbour)
            .map(String::as_str)
    }
}

/// The perplexity of a case's new target(s) after the bare prompt on the unedited model:
/// `exp` of the mean per-token negative log-likelihood (token-level concatenation, as
/// ROME/MEMIT score CounterFact), averaged over the case's requests in log space.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
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

/// [`TargetDifficulty`] of every case on `model` (the caller passes the unedited one): how hard
/// the edit targets are, the D4S paper's §3.3 "perplexity of the editing objective".
pub fn target_difficulty(model: &Model, cases: &[EvalCase]) -> Result<Vec<TargetDifficulty>> {
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

/// What an evaluation measures besides the teacher-forced and probability metrics, which it
/// always measures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EvalOptions {
    /// MQuAKE's multi-hop accuracy (greedy generation per question).
    pub multihop: bool,
    /// The generation fluency: about a hundred sampled tokens per generation prompt, so the
    /// benchmark measures it only before the first and after the last edit.
    pub fluency: bool,
    /// The `gen.*` metrics: a greedy answer to every prompt, paraphrase and neighbour (the
    /// neighbours' need the references taken with `decode`).
    pub generation: bool,
}

/// The probability comparisons of ROME/MEMIT's CounterFact scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Comparison {
    /// The new target against the true answer, after the edit prompt.
    Efficacy,
    /// The same after a paraphrase.
    Paraphrase,
    /// The neighbour's own answer against the new target, after a neighbour prompt.
    Neighbourhood,
}

impl Comparison {
    /// The score (share of wins) and the magnitude (mean margin) it feeds.
    fn metrics(self) -> (ProbMetric, ProbMetric) {
        match self {
            Comparison::Efficacy => (ProbMetric::Es, ProbMetric::Em),
            Comparison::Paraphrase => (ProbMetric::Ps, ProbMetric::Pm),
            Comparison::Neighbourhood => (ProbMetric::Ns, ProbMetric::Nm),
        }
    }

    /// Whether the winner is the new target (else the other answer must stay ahead).
    fn wants_new(self) -> bool {
        self != Comparison::Neighbourhood
    }
}

/// What [`evaluate`] measures: the means over all items (`metrics.jsonl`) and each case's own,
/// and the per-case tallies behind them.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    pub metrics: CaseMetrics,
    pub cases: Vec<CaseOutcome>,
    pub tallies: Tallies,
}

/// Each per-edit metric's item tallies per evaluated case: what a point's means and their
/// intervals over cases come from, and what the single protocol pools over its one-case
/// evaluations.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tallies(BTreeMap<Metric, Vec<Tally>>);

impl Tallies {
    /// Takes over another evaluation's cases.
    pub fn append(&mut self, other: Tallies) {
        for (metric, t) in other.0 {
            self.0.entry(metric).or_default().extend(t);
        }
    }

    /// Sets each metric's item-weighted mean and its 95% interval over cases.
    pub fn fill(&self, metrics: &mut CaseMetrics) {
        for (&metric, tallies) in &self.0 {
            let Some((mean, ci)) = interval::clustered_mean(tallies) else {
                continue;
            };
            *metric.slot(metrics) = Some(mean);
            if let Some(ci) = ci {
                metrics.intervals.0.insert(metric, ci);
            }
        }
    }
}

/// Per-item values of one metric with the case (position in `which`) each belongs to.
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

    fn tallies(&self, n_cases: usize) -> Vec<Tally> {
        let mut t = vec![Tally::default(); n_cases];
        for (&o, &v) in self.owners.iter().zip(&self.values) {
            t[o].add(v);
        }
        t
    }
}

pub(crate) fn mean(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

/// The items of the selected cases, each with its owner (the case's position in `which`).
#[derive(Default)]
struct Items<'a> {
    rewrite: Vec<(String, String)>,
    rewrite_of: Vec<usize>,
    rephrase: Vec<(String, String)>,
    rephrase_of: Vec<usize>,
    portability: Vec<(String, String)>,
    portability_of: Vec<usize>,
    neighbours: Vec<(String, String)>,
    neighbours_of: Vec<usize>,
    neighbour_refs: Vec<&'a [u32]>,
    neighbour_answers: Vec<Option<&'a str>>,
    /// Pairs (new target, other answer) after one prompt, flattened: item `2k` is the new
    /// target's, `2k + 1` the other's, for `comparisons[k]`.
    nll: Vec<(String, String)>,
    comparisons: Vec<(Comparison, usize)>,
}

impl<'a> Items<'a> {
    fn gather(cases: &[EvalCase], reference: &'a Reference, which: &[usize]) -> Self {
        let mut it = Items::default();
        for (owner, &ci) in which.iter().enumerate() {
            let c = &cases[ci];
            for (ri, r) in c.requests.iter().enumerate() {
                it.rewrite.push((r.filled_prompt(), r.target.clone()));
                it.rewrite_of.push(owner);
                for p in &r.paraphrases {
                    it.rephrase.push((p.clone(), r.target.clone()));
                    it.rephrase_of.push(owner);
                }
                let answered = r.answered_neighbours();
                for (k, item) in answered.iter().enumerate() {
                    it.neighbours.push(item.clone());
                    it.neighbours_of.push(owner);
                    it.neighbour_refs.push(reference.of_neighbour(ci, ri, k));
                    it.neighbour_answers
                        .push(reference.answer_of_neighbour(ci, ri, k));
                }
                if let Some(truth) = &r.ground_truth {
                    let mut compare = |kind: Comparison, prompt: &String, other: &String| {
                        it.comparisons.push((kind, owner));
                        it.nll.push((prompt.clone(), r.target.clone()));
                        it.nll.push((prompt.clone(), other.clone()));
                    };
                    compare(Comparison::Efficacy, &r.filled_prompt(), truth);
                    for p in &r.paraphrases {
                        compare(Comparison::Paraphrase, p, truth);
                    }
                    for (prompt, answer) in &answered {
                        compare(Comparison::Neighbourhood, prompt, answer);
                    }
                }
            }
            it.portability_of
                .extend(std::iter::repeat_n(owner, c.portability.len()));
            it.portability.extend(c.portability.iter().cloned());
        }
        it
    }
}

/// Evaluates the cases `which` (indices into `cases`) on the current model.
pub fn evaluate(
    model: &Model,
    cases: &[EvalCase],
    reference: &Reference,
    which: &[usize],
    options: EvalOptions,
) -> Result<Evaluation> {
    let items = Items::gather(cases, reference, which);
    let mut values: BTreeMap<Metric, ItemValues> = BTreeMap::new();
    let mut measure = |metric, owners: &[usize], scored: &[(String, String)]| -> Result<()> {
        values
            .entry(Metric::Token(metric))
            .or_default()
            .extend(owners, token_accuracy(model, scored)?);
        Ok(())
    };
    measure(TokenMetric::Efficacy, &items.rewrite_of, &items.rewrite)?;
    measure(TokenMetric::Paraphrase, &items.rephrase_of, &items.rephrase)?;
    measure(
        TokenMetric::Portability,
        &items.portability_of,
        &items.portability,
    )?;
    let changed = score_neighbours(model, &items, which.len(), &mut values)?;
    compare_probabilities(model, &items, &mut values)?;
    let mut outcomes = outcomes(cases, which, changed);
    if options.generation {
        let answers = score_generations(model, &items, which.len(), &mut values)?;
        for (o, a) in outcomes.iter_mut().zip(answers) {
            o.answers = a;
        }
    }
    let mut metrics = CaseMetrics {
        cases: which.len(),
        ..Default::default()
    };
    let mut tallies = Tallies::default();
    for (&metric, v) in &values {
        let per_case = v.tallies(which.len());
        for (o, t) in outcomes.iter_mut().zip(&per_case) {
            let slot = match metric {
                Metric::Token(m) => m.slot(&mut o.token),
                Metric::Prob(m) => m.slot(&mut o.prob),
                Metric::Gen(m) => m.slot(&mut o.gen),
                Metric::Fluency | Metric::Multihop => continue,
            };
            *slot = (t.count > 0).then(|| t.sum / t.count as f64);
        }
        tallies.0.insert(metric, per_case);
    }
    tallies.fill(&mut metrics);
    let selected: Vec<&EvalCase> = which.iter().map(|&ci| &cases[ci]).collect();
    if options.fluency {
        metrics.generation.fluency = generation_fluency(model, &selected)?;
    }
    if options.multihop {
        let mh: Vec<&MultiHop> = selected
            .iter()
            .filter_map(|c| c.multi_hop.as_ref())
            .collect();
        if !mh.is_empty() {
            metrics.multihop = Some(multihop_accuracy(model, &mh)?);
        }
    }
    Ok(Evaluation {
        metrics,
        cases: outcomes,
        tallies,
    })
}

/// The `gen.*` metrics: greedy answers to the edit prompts and paraphrases scored against the
/// new target, and the neighbours' answers against the unedited model's (where the references
/// hold them). Returns each case's answers to its prompts, then paraphrases.
fn score_generations(
    model: &Model,
    items: &Items,
    n_cases: usize,
    values: &mut BTreeMap<Metric, ItemValues>,
) -> Result<Vec<Vec<String>>> {
    let mut shown: Vec<Vec<String>> = vec![Vec::new(); n_cases];
    let groups = [
        (
            &items.rewrite,
            &items.rewrite_of,
            GenMetric::EfficacyEm,
            GenMetric::EfficacyF1,
        ),
        (
            &items.rephrase,
            &items.rephrase_of,
            GenMetric::ParaphraseEm,
            GenMetric::ParaphraseF1,
        ),
    ];
    for (scored, owners, em, f1) in groups {
        let answers = greedy_answers(model, scored)?;
        for ((answer, (_, target)), &owner) in answers.iter().zip(scored).zip(owners) {
            values
                .entry(Metric::Gen(em))
                .or_default()
                .push(owner, exact_match(answer, target));
            values
                .entry(Metric::Gen(f1))
                .or_default()
                .push(owner, token_f1(answer, target));
            shown[owner].push(answer.clone());
        }
    }
    let with_reference: Vec<usize> = (0..items.neighbours.len())
        .filter(|&k| items.neighbour_answers[k].is_some())
        .collect();
    let asked: Vec<(String, String)> = with_reference
        .iter()
        .map(|&k| items.neighbours[k].clone())
        .collect();
    let answers = greedy_answers(model, &asked)?;
    for (&k, after) in with_reference.iter().zip(&answers) {
        let before = items.neighbour_answers[k].unwrap_or_default();
        values
            .entry(Metric::Gen(GenMetric::Specificity))
            .or_default()
            .push(items.neighbours_of[k], f64::from(before == after));
    }
    Ok(shown)
}

/// Specificity (agreement with the unedited model's answer tokens) per neighbour, and each
/// case's neighbours whose prediction moved, decoded.
fn score_neighbours(
    model: &Model,
    items: &Items,
    n_cases: usize,
    values: &mut BTreeMap<Metric, ItemValues>,
) -> Result<Vec<Vec<NeighbourChange>>> {
    let post = answer_argmax(model, &items.neighbours)?;
    let mut changed: Vec<Vec<NeighbourChange>> = vec![Vec::new(); n_cases];
    let specificity = values
        .entry(Metric::Token(TokenMetric::Specificity))
        .or_default();
    for (k, ((after, _), pre)) in post.iter().zip(&items.neighbour_refs).enumerate() {
        let agree = agreement(pre, after);
        let owner = items.neighbours_of[k];
        specificity.push(owner, agree);
        if agree < 1.0 {
            changed[owner].push(NeighbourChange {
                prompt: items.neighbours[k].0.clone(),
                answer: items.neighbours[k].1.clone(),
                before: model.decode(pre)?,
                after: model.decode(after)?,
            });
        }
    }
    Ok(changed)
}

/// The probability scores and magnitudes of every comparison.
fn compare_probabilities(
    model: &Model,
    items: &Items,
    values: &mut BTreeMap<Metric, ItemValues>,
) -> Result<()> {
    let nll = target_nll(model, &items.nll)?;
    for (k, &(kind, owner)) in items.comparisons.iter().enumerate() {
        let (new, other) = (nll[2 * k], nll[2 * k + 1]);
        let (p_new, p_other) = ((-new).exp(), (-other).exp());
        let (won, margin) = if kind.wants_new() {
            (new < other, p_new - p_other)
        } else {
            (other < new, p_other - p_new)
        };
        let (score, magnitude) = kind.metrics();
        values
            .entry(Metric::Prob(score))
            .or_default()
            .push(owner, f64::from(won));
        values
            .entry(Metric::Prob(magnitude))
            .or_default()
            .push(owner, margin);
    }
    Ok(())
}

fn outcomes(
    cases: &[EvalCase],
    which: &[usize],
    changed: Vec<Vec<NeighbourChange>>,
) -> Vec<CaseOutcome> {
    which
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
            token: TokenMetrics::default(),
            prob: ProbMetrics::default(),
            gen: GenMetrics::default(),
            answers: Vec::new(),
            changed_neighbours,
        })
        .collect()
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

/// [`LayerNorms`] of the edited matrices of `layers` against the unedited ones.
pub fn layer_norms(model: &Model, layers: &[usize]) -> Result<Vec<LayerNorms>> {
    layers
        .iter()
        .map(|&l| {
            let w = &model.edit_weight_f32(l)?;
            let w0 = &model.original_edit_weight_f32(l)?;
            let d = (w - w0)?;
            let n = w.elem_count() as f64;
            let (l1, fro) = matrix_norms(w)?;
            let (dl1, dfro) = matrix_norms(&d)?;
            let (l1_0, _) = matrix_norms(w0)?;
            Ok(LayerNorms {
                layer: l,
                l1_mean: l1 / n,
                fro,
                delta_l1_mean: dl1 / n,
                delta_fro: dfro,
                w0_l1_mean: Some(l1_0 / n),
            })
        })
        .collect()
}
