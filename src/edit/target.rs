//! Target vectors by gradient descent (spec §1.7): find the shift δ of one layer's activation at
//! the lookup token that makes the model emit the new target.
//!
//! ```text
//! δ* = argmin_δ  mean_j −(1/T) Σ_m log p(t_m | c_j ⊕ prompt ⊕ t_<m ; a + δ)      (NLL)
//!              + kl_factor · KL(P_δ(· | "{s} is a") ‖ P_0(· | "{s} is a"))          (KL)
//!              + weight_decay · ‖δ‖ / ‖a₀‖²                                        (WD)
//! with Adam, ‖δ‖ ≤ clamp · ‖a₀‖ after every step, stopping when the loss < 0.05.
//! ```
//! `a` is the activation the editor optimizes: the block output at the last edited layer
//! (MEMIT/D4S/AlphaEdit: `z = h₀ + δ`), the MLP output of the edited layer (ROME: `v* = m₀ + δ`),
//! both the attention and MLP outputs (PMET), or a codebook value (GRACE).
//!
//! Speed without changing the result (each lever is checked against the plain computation in the
//! tests): the activations of every layer below the edited one and of every position before the
//! lookup token do not depend on δ (causal attention), so one forward pass caches their keys and
//! values and each step recomputes only the suffix from the edited layer up; and the LM head runs
//! only at the scored positions.

use candle_core::{DType, Tensor, Var};
use candle_nn::optim::{AdamW, Optimizer, ParamsAdamW};

use super::request::{target_ids, tokenize_with_subject, EditRequest};
use super::{EditControl, Progress};
use crate::error::{Error, Result};
use crate::model::generate::target_logprobs;
use crate::model::layers::log_softmax_last;
use crate::model::{Forward, Input, KvCache, Logits, Model, Site, SiteDelta};

/// Hyperparameters of the optimization.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetParams {
    pub steps: usize,
    pub lr: f64,
    pub weight_decay: f64,
    /// `None`: no norm constraint.
    pub clamp_norm_factor: Option<f64>,
    pub kl_factor: f64,
    /// Stop when the loss falls below this (0.05 in every reference implementation).
    pub stop_loss: Option<f64>,
    /// Optional extra early stop: the mean target probability exceeds this.
    pub stop_prob: Option<f64>,
    /// Most-probable early stopping (ENCORE's MPES): stop once the target tokens have been the
    /// top-1 prediction at every rewriting prompt at this many steps.
    pub stop_top1: Option<usize>,
    /// How the NLL term's weight moves during the optimization.
    pub schedule: NllSchedule,
    /// Weight of the NLL term (PMET's `nll_loss_factor`; 1 elsewhere).
    pub nll_factor: f64,
}

/// How the NLL term's weight moves during a target optimization.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NllSchedule {
    /// The same weight throughout (ROME, MEMIT and the methods built on them).
    Constant,
    /// PMET's: once every target token is the argmax, weight the NLL by 0.1 and stop when the
    /// KL term is ≤ 0.01.
    Pmet,
}

/// Whether a target problem keeps the subject's "{subject} is a" distribution close to the
/// unedited model's (the KL term that guards the subject's other facts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KlPrompt {
    SubjectIsA,
    Omitted,
}

/// Where the lookup token is in each prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    SubjectLast,
    /// The last token of the prompt (GRACE).
    PromptLast,
}

/// One optimized activation.
#[derive(Debug, Clone)]
pub struct SiteSpec {
    /// Where δ is added (at `TargetProblem::layer`).
    pub site: Site,
    /// The activation that defines `a₀` (for the clamp, the decay and the result `a₀ + δ`).
    pub reference: Site,
    /// Starting δ (zero when `None`).
    pub init: Option<Vec<f32>>,
    /// Whether the weight decay and clamp apply.
    pub regularized: bool,
}

/// The prompts of one optimization.
#[derive(Debug, Clone)]
pub struct TargetProblem {
    pub layer: usize,
    pub sites: Vec<SiteSpec>,
    /// Rewriting rows: prompt tokens followed by all but the last target token.
    pub rows: Vec<Vec<u32>>,
    pub lookup: Vec<usize>,
    /// Target token ids (the same for every rewriting row).
    pub target: Vec<u32>,
    /// The KL prompt (`"{subject} is a"`) and its lookup index.
    pub kl_row: Option<(Vec<u32>, usize)>,
}

impl TargetProblem {
    /// Rewriting prompts from context templates (`"<ctx>. {}"`), plus the KL prompt if asked.
    pub fn for_request(
        model: &Model,
        request: &EditRequest,
        contexts: &[String],
        lookup: Lookup,
        layer: usize,
        sites: Vec<SiteSpec>,
        kl: KlPrompt,
    ) -> Result<Self> {
        let target = target_ids(model, &request.target)?;
        let template = request.template();
        let mut rows = Vec::new();
        let mut idx = Vec::new();
        for ctx in contexts {
            let p = tokenize_with_subject(model, ctx, &template, &request.subject)?;
            let i = match lookup {
                Lookup::SubjectLast => p.subject_last,
                Lookup::PromptLast => p.ids.len() - 1,
            };
            let mut ids = p.ids;
            ids.extend_from_slice(&target[..target.len() - 1]);
            rows.push(ids);
            idx.push(i);
        }
        let kl_row = match kl {
            KlPrompt::SubjectIsA => {
                let p = tokenize_with_subject(model, "{}", "{} is a", &request.subject)?;
                Some((p.ids, p.subject_last))
            }
            KlPrompt::Omitted => None,
        };
        let longest = rows.iter().map(Vec::len).max().unwrap_or(0);
        if longest > model.config.max_positions {
            return Err(Error::Input(format!(
                "the edit prompt is {longest} tokens, longer than the context window ({})",
                model.config.max_positions
            )));
        }
        Ok(Self {
            layer,
            sites,
            rows,
            lookup: idx,
            target,
            kl_row,
        })
    }

    /// The MEMIT-style problem: δ added to the output of block `layer` at the subject's last
    /// token, `a₀` the block output there (so the target is `z = h₀ + δ`), with the KL prompt.
    /// (Where the MLP output joins the residual directly this is the same as adding δ to the MLP
    /// output; after Gemma-2's post-feedforward norm only the block output makes `z = h₀ + δ`.)
    pub fn residual(
        model: &Model,
        request: &EditRequest,
        contexts: &[String],
        layer: usize,
    ) -> Result<Self> {
        Self::for_request(
            model,
            request,
            contexts,
            Lookup::SubjectLast,
            layer,
            vec![SiteSpec {
                site: Site::BlockOut,
                reference: Site::BlockOut,
                init: None,
                regularized: true,
            }],
            KlPrompt::SubjectIsA,
        )
    }

    /// `(row, absolute position)` of every scored logit: the last prompt token and each target
    /// token but the last, in every rewriting row.
    fn scored_positions(&self) -> Vec<(usize, usize)> {
        let t = self.target.len();
        self.rows
            .iter()
            .enumerate()
            .flat_map(|(r, row)| (row.len() - t..row.len()).map(move |p| (r, p)))
            .collect()
    }
}

/// The outcome for one site.
#[derive(Debug, Clone)]
pub struct SiteResult {
    /// `a₀`: the unshifted activation at the lookup token of the first prompt.
    pub reference: Vec<f64>,
    pub delta: Vec<f64>,
}

impl SiteResult {
    /// `a₀ + δ`.
    pub fn target(&self) -> Vec<f64> {
        self.reference
            .iter()
            .zip(&self.delta)
            .map(|(a, d)| a + d)
            .collect()
    }
}

#[derive(Debug, Clone)]
pub struct TargetResult {
    pub sites: Vec<SiteResult>,
    /// Mean target probability (per-token geometric mean, averaged over prompts) before the
    /// first step and after the last one.
    pub prob_initial: f64,
    pub prob_final: f64,
    pub loss_final: f64,
    pub steps_run: usize,
    /// δ after every step (only when asked for; used by the exactness tests).
    pub trajectory: Vec<Vec<Vec<f32>>>,
}

/// Switches for the speed-ups, so tests can compare against the plain computation.
#[derive(Debug, Clone, Copy)]
pub struct OptimOptions {
    pub prefix_cache: bool,
    pub record_trajectory: bool,
}

impl Default for OptimOptions {
    fn default() -> Self {
        Self {
            prefix_cache: true,
            record_trajectory: false,
        }
    }
}

/// What one step's forward needs, prepared once.
enum Plan {
    /// Recompute everything every step (the reference computation).
    Full {
        rows: Vec<Vec<u32>>,
        lookup: Vec<usize>,
        scored: Vec<(usize, usize)>,
    },
    /// Start at the edited layer, after the cached positions.
    Suffix {
        hidden: Tensor,
        lens: Vec<usize>,
        cache: KvCache,
        scored: Vec<(usize, usize)>,
    },
}

/// Where one problem sits in a batch: its rows and its scored logits.
struct Slot {
    /// First row (its rewriting rows, then its KL row) and row count.
    first_row: usize,
    n_rows: usize,
    /// Its rewriting rows.
    n_rewrite: usize,
    /// First of its scored logits (rewriting positions, then the KL position).
    first_scored: usize,
}

/// One problem's optimization state in a batch.
struct Run {
    deltas: Vec<Var>,
    ref_norms: Vec<f64>,
    adam: AdamW,
    kl_init: Option<Tensor>,
    nll_factor: f64,
    top1_steps: usize,
    targets: Vec<u32>,
    result: TargetResult,
    /// Still optimizing (not stopped early).
    active: bool,
}

/// Runs the optimization. The model must not change while this runs.
pub fn optimize(
    model: &Model,
    problem: &TargetProblem,
    params: &TargetParams,
    opts: OptimOptions,
    ctl: &EditControl,
) -> Result<TargetResult> {
    let mut results = optimize_batch(model, std::slice::from_ref(problem), params, opts, ctl)?;
    Ok(results.remove(0))
}

/// Optimizes several problems at once: their rows go through one forward and one backward pass
/// per step, each with its own δ, Adam state and early stop. A problem's loss depends on its own
/// rows and δ only (attention never crosses rows), so the sum of the losses has each problem's
/// own gradient: every result is its problem's optimization alone, up to the last bits of the
/// wider products (a batch of one is [`optimize`] exactly). A problem that stops early keeps its
/// rows in the pass (frozen) until the last one stops. All problems edit the same layer with the
/// same kinds of sites.
pub fn optimize_batch(
    model: &Model,
    problems: &[TargetProblem],
    params: &TargetParams,
    opts: OptimOptions,
    ctl: &EditControl,
) -> Result<Vec<TargetResult>> {
    let Some(first) = problems.first() else {
        return Ok(vec![]);
    };
    let layer = first.layer;
    if layer >= model.n_layers() {
        return Err(Error::Input(format!(
            "target layer {layer} does not exist (the model has {} layers)",
            model.n_layers()
        )));
    }
    let kinds = |p: &TargetProblem| -> Vec<(Site, Site, bool)> {
        p.sites
            .iter()
            .map(|s| (s.site, s.reference, s.regularized))
            .collect()
    };
    if problems
        .iter()
        .any(|p| p.layer != layer || kinds(p) != kinds(first))
    {
        return Err(Error::Input(
            "a batch of target problems must share the layer and the sites".into(),
        ));
    }
    let d = model.config.d_model;
    // Rows: each problem's rewriting rows, then its KL row; scored logits in the same order.
    let mut all_rows = Vec::new();
    let mut lookup = Vec::new();
    let mut scored = Vec::new();
    let mut slots = Vec::new();
    for p in problems {
        let first_row = all_rows.len();
        let first_scored = scored.len();
        all_rows.extend(p.rows.iter().cloned());
        lookup.extend(p.lookup.iter().copied());
        scored.extend(
            p.scored_positions()
                .into_iter()
                .map(|(r, pos)| (first_row + r, pos)),
        );
        if let Some((kl, i)) = &p.kl_row {
            scored.push((all_rows.len(), *i));
            all_rows.push(kl.clone());
            lookup.push(*i);
        }
        slots.push(Slot {
            first_row,
            n_rows: all_rows.len() - first_row,
            n_rewrite: p.rows.len(),
            first_scored,
        });
    }

    // One plain pass: the reference activations a₀ and, for the cached plan, the keys/values of
    // every position and the hidden states entering the edited layer.
    let mut captures: Vec<(usize, Site)> =
        first.sites.iter().map(|s| (layer, s.reference)).collect();
    if layer > 0 {
        captures.push((layer - 1, Site::BlockOut));
    }
    let base = model.forward(
        Input::Tokens(&all_rows),
        &Forward {
            end_layer: if opts.prefix_cache {
                None
            } else {
                Some(layer + 1)
            },
            captures,
            keep_kv: opts.prefix_cache,
            ..Default::default()
        },
    )?;

    let plan = if opts.prefix_cache {
        let below = if layer > 0 {
            base.capture(layer - 1, Site::BlockOut)?.clone()
        } else {
            model.embed_tokens(&all_rows)?
        };
        // The suffix of a rewriting row starts at its lookup token; a KL row needs nothing after.
        let kl_rows: Vec<bool> = slots
            .iter()
            .flat_map(|s| (0..s.n_rows).map(move |r| r >= s.n_rewrite))
            .collect();
        let lens: Vec<usize> = all_rows
            .iter()
            .zip(&lookup)
            .zip(&kl_rows)
            .map(|((row, &i), &kl)| if kl { 1 } else { row.len() - i })
            .collect();
        let s = *lens.iter().max().unwrap_or(&1);
        let mut parts = Vec::new();
        for (r, (&i, &l)) in lookup.iter().zip(&lens).enumerate() {
            let h = below.narrow(0, r, 1)?.narrow(1, i, l)?;
            parts.push(h.pad_with_zeros(1, 0, s - l)?);
        }
        let hidden = Tensor::cat(&parts, 0)?;
        let cache = base.kv.as_ref().expect("kept").truncated(&lookup);
        let scored = scored.iter().map(|&(r, p)| (r, p - lookup[r])).collect();
        Plan::Suffix {
            hidden,
            lens,
            cache,
            scored,
        }
    } else {
        Plan::Full {
            rows: all_rows.clone(),
            lookup: lookup.clone(),
            scored: scored.clone(),
        }
    };

    let mut runs = Vec::new();
    for (p, slot) in problems.iter().zip(&slots) {
        let mut reference = Vec::new();
        for s in &p.sites {
            let a = base.capture(layer, s.reference)?;
            let at = (slot.first_row, lookup[slot.first_row]);
            reference.push(Model::gather_rows(a, &[at])?.squeeze(0)?);
        }
        let deltas: Vec<Var> = p
            .sites
            .iter()
            .map(|s| {
                let init = s.init.clone().unwrap_or_else(|| vec![0.0; d]);
                Tensor::from_vec(init, d, &model.device).and_then(|t| Var::from_tensor(&t))
            })
            .collect::<candle_core::Result<_>>()?;
        let ref_norms: Vec<f64> = reference.iter().map(l2).collect::<Result<_>>()?;
        let adam = AdamW::new(
            deltas.clone(),
            ParamsAdamW {
                lr: params.lr,
                weight_decay: 0.0,
                ..Default::default()
            },
        )?;
        let targets = (0..slot.n_rewrite)
            .flat_map(|_| p.target.iter().copied())
            .collect();
        let mut sites = Vec::new();
        for a0 in &reference {
            sites.push(SiteResult {
                reference: a0.to_dtype(DType::F64)?.to_vec1::<f64>()?,
                delta: vec![],
            });
        }
        runs.push(Run {
            deltas,
            ref_norms,
            adam,
            kl_init: None,
            nll_factor: params.nll_factor,
            top1_steps: 0,
            targets,
            result: TargetResult {
                sites,
                prob_initial: 0.0,
                prob_final: 0.0,
                loss_final: f64::NAN,
                steps_run: 0,
                trajectory: vec![],
            },
            active: true,
        });
    }

    for it in 0..params.steps.max(1) {
        if ctl.cancelled() {
            return Err(Error::Cancelled);
        }
        let logits = step_logits(model, &plan, layer, problems, &slots, &runs)?;
        let mut total: Option<Tensor> = None;
        let (mut loss_sum, mut prob_sum, mut n_active) = (0.0, 0.0, 0usize);
        for ((p, slot), run) in problems.iter().zip(&slots).zip(runs.iter_mut()) {
            if !run.active {
                continue;
            }
            let step = problem_step(p, slot, run, &logits, params, it)?;
            loss_sum += step.value;
            prob_sum += run.result.prob_final;
            n_active += 1;
            if step.stop {
                run.active = false;
                continue;
            }
            total = Some(match total {
                None => step.loss,
                Some(t) => (t + step.loss)?,
            });
        }
        if n_active > 0 {
            ctl.report(Progress::TargetStep {
                step: it,
                of: params.steps,
                loss: loss_sum / n_active as f64,
                prob: prob_sum / n_active as f64,
            });
        }
        let Some(total) = total else {
            break;
        };
        if it + 1 == params.steps {
            break;
        }
        let grads = total.backward()?;
        for (p, run) in problems.iter().zip(runs.iter_mut()) {
            if !run.active {
                continue;
            }
            run.adam.step(&grads)?;
            for ((s, v), n) in p.sites.iter().zip(&run.deltas).zip(&run.ref_norms) {
                if let (true, Some(c)) = (s.regularized, params.clamp_norm_factor) {
                    let max = c * n;
                    let norm = l2(v.as_tensor())?;
                    if norm > max {
                        v.set(&(v.as_tensor() * (max / norm))?)?;
                    }
                }
            }
            run.result.steps_run = it + 1;
            if opts.record_trajectory {
                run.result.trajectory.push(
                    run.deltas
                        .iter()
                        .map(|v| v.as_tensor().to_vec1::<f32>())
                        .collect::<candle_core::Result<_>>()?,
                );
            }
        }
    }
    runs.into_iter()
        .map(|mut run| {
            for (site, v) in run.result.sites.iter_mut().zip(&run.deltas) {
                site.delta = v.as_tensor().to_dtype(DType::F64)?.to_vec1::<f64>()?;
            }
            Ok(run.result)
        })
        .collect()
}

/// One problem's loss at a step, and whether it stops here.
struct ProblemStep {
    loss: Tensor,
    value: f64,
    stop: bool,
}

/// The loss of one problem from its scored logits (NLL over its rewriting rows, KL at its
/// subject prompt, weight decay of its δ), with its bookkeeping and early stops.
fn problem_step(
    problem: &TargetProblem,
    slot: &Slot,
    run: &mut Run,
    logits: &Tensor,
    params: &TargetParams,
    it: usize,
) -> Result<ProblemStep> {
    let t = problem.target.len();
    let n_rewrite = slot.n_rewrite;
    let n_scored = n_rewrite * t;
    let own = logits.narrow(0, slot.first_scored, n_scored)?;
    let lp = target_logprobs(&own, &run.targets)?.reshape((n_rewrite, t))?;
    let per_prompt_nll = lp.mean(1)?.neg()?;
    let nll = per_prompt_nll.mean_all()?;
    let prob = per_prompt_nll
        .neg()?
        .exp()?
        .mean_all()?
        .to_scalar::<f32>()? as f64;
    let mut loss = (&nll * run.nll_factor)?;
    let mut kl_value = 0.0;
    if problem.kl_row.is_some() {
        let kl_lp = log_softmax_last(&logits.narrow(0, slot.first_scored + n_scored, 1)?)?;
        let init = run.kl_init.get_or_insert_with(|| kl_lp.detach()).clone();
        let kl = (kl_lp.exp()? * (&kl_lp - &init)?)?.sum_all()?;
        kl_value = kl.to_scalar::<f32>()? as f64;
        loss = (loss + (kl * params.kl_factor)?)?;
    }
    for ((s, v), n) in problem.sites.iter().zip(&run.deltas).zip(&run.ref_norms) {
        if s.regularized && params.weight_decay != 0.0 {
            // ‖δ‖ with a tiny floor under the square root: PyTorch's norm has gradient 0 at
            // δ = 0 (the first step), candle's sqrt would give 0/0.
            let norm = (v.as_tensor().sqr()?.sum_all()? + 1e-24)?.sqrt()?;
            let wd = (norm * (params.weight_decay / (n * n).max(1e-12)))?;
            loss = (loss + wd)?;
        }
    }
    let value = loss.to_scalar::<f32>()? as f64;
    if !value.is_finite() {
        return Err(Error::Numeric(format!(
            "target optimization diverged (loss {value}) at step {it}"
        )));
    }
    let r = &mut run.result;
    if it == 0 {
        r.prob_initial = prob;
    }
    r.prob_final = prob;
    r.loss_final = value;
    r.steps_run = it;
    let mut stop =
        params.stop_loss.is_some_and(|s| value < s) || params.stop_prob.is_some_and(|p| prob > p);
    if !stop {
        if let Some(k) = params.stop_top1 {
            if targets_are_argmax(&own, &run.targets)? {
                run.top1_steps += 1;
                stop = run.top1_steps >= k;
            }
        }
    }
    if !stop && params.schedule == NllSchedule::Pmet && targets_are_argmax(&own, &run.targets)? {
        run.nll_factor = 0.1 * params.nll_factor;
        stop = kl_value <= 0.01;
    }
    Ok(ProblemStep { loss, value, stop })
}

fn targets_are_argmax(logits: &Tensor, targets: &[u32]) -> Result<bool> {
    let am = logits.argmax(candle_core::D::Minus1)?.to_vec1::<u32>()?;
    Ok(am.iter().zip(targets).all(|(a, t)| a == t))
}

fn l2(t: &Tensor) -> Result<f64> {
    Ok(t.to_dtype(DType::F64)?
        .sqr()?
        .sum_all()?
        .sqrt()?
        .to_scalar::<f64>()?)
}

/// Each row's δ for one site: a problem's δ on its rows (a batch of one: its δ alone, so the
/// single optimization builds exactly the tensors it always did).
fn row_deltas(slots: &[Slot], runs: &[Run], site: usize) -> Result<Tensor> {
    if let [run] = runs {
        return Ok(run.deltas[site].as_tensor().clone());
    }
    let parts = slots
        .iter()
        .zip(runs)
        .map(|(slot, run)| {
            let v = run.deltas[site].as_tensor();
            v.unsqueeze(0)?.broadcast_as((slot.n_rows, v.dim(0)?))
        })
        .collect::<candle_core::Result<Vec<_>>>()?;
    Ok(Tensor::cat(&parts, 0)?)
}

/// Logits at the scored positions with the current δs.
fn step_logits(
    model: &Model,
    plan: &Plan,
    layer: usize,
    problems: &[TargetProblem],
    slots: &[Slot],
    runs: &[Run],
) -> Result<Tensor> {
    let sites = &problems[0].sites;
    let site_deltas = |positions: &[usize], s: usize| -> Result<Vec<SiteDelta>> {
        sites
            .iter()
            .enumerate()
            .map(|(i, spec)| {
                Ok(SiteDelta {
                    layer,
                    site: spec.site,
                    value: model.delta_at(&row_deltas(slots, runs, i)?, positions, s)?,
                })
            })
            .collect()
    };
    match plan {
        Plan::Full {
            rows,
            lookup,
            scored,
        } => {
            let s = rows.iter().map(Vec::len).max().unwrap_or(0);
            let out = model.forward(
                Input::Tokens(rows),
                &Forward {
                    deltas: site_deltas(lookup, s)?,
                    logits: Logits::At(scored.clone()),
                    ..Default::default()
                },
            )?;
            Ok(out.logits.expect("asked for"))
        }
        Plan::Suffix {
            hidden,
            lens,
            cache,
            scored,
        } => {
            let (b, s, _) = hidden.dims3()?;
            let out = model.forward(
                Input::Hidden {
                    hidden: hidden.clone(),
                    lens: lens.clone(),
                },
                &Forward {
                    start_layer: layer,
                    past: Some(cache),
                    deltas: site_deltas(&vec![0usize; b], s)?,
                    logits: Logits::At(scored.clone()),
                    ..Default::default()
                },
            )?;
            Ok(out.logits.expect("asked for"))
        }
    }
}

impl TargetParams {
    /// The §1.7 optimization as configured by the hyperparameters.
    pub fn from_hparams(hp: &super::HParams) -> Self {
        Self {
            steps: hp.v_num_grad_steps,
            lr: hp.v_lr,
            weight_decay: hp.v_weight_decay,
            clamp_norm_factor: Some(hp.clamp_norm_factor),
            kl_factor: hp.kl_factor,
            stop_loss: Some(0.05),
            stop_prob: hp.v_prob_threshold,
            stop_top1: hp.mpes,
            schedule: NllSchedule::Constant,
            nll_factor: 1.0,
        }
    }
}

impl TargetResult {
    pub fn summary(&self) -> super::TargetSummary {
        super::TargetSummary {
            prob_initial: self.prob_initial,
            prob_final: self.prob_final,
            loss: self.loss_final,
            steps: self.steps_run,
        }
    }
}

/// MEMIT-style targets: `z_i = h_i + δ_i` at the output of block `layer` for each request, with
/// every context template as a rewriting prompt. The requests of one step are optimized `batch`
/// at a time in one pass (`hp.target_batch`).
pub fn residual_targets(
    model: &Model,
    requests: &[EditRequest],
    contexts: &[String],
    layer: usize,
    params: &TargetParams,
    batch: usize,
    cx: &mut super::EditContext,
) -> Result<Vec<TargetResult>> {
    let problems_of = |requests: &[EditRequest]| {
        requests
            .iter()
            .map(|r| TargetProblem::residual(model, r, contexts, layer))
            .collect::<Result<Vec<_>>>()
    };
    if let Some(group) = prefetch_group(model, requests, batch, cx)? {
        return Ok(vec![super::target_cache::optimize_member(
            cx.targets.as_deref_mut(),
            model,
            &problems_of(group.requests)?,
            group.position,
            params,
            OptimOptions::default(),
            &cx.ctl,
        )?]);
    }
    // One fact per step (the TUI, sessions, the paper's protocol) optimizes alone, exactly as it
    // always did; a step of several facts optimizes them `batch` at a time.
    let batch = if requests.len() > 1 { batch } else { 1 };
    super::target_cache::optimize_many(
        cx.targets.as_deref_mut(),
        model,
        &problems_of(requests)?,
        params,
        OptimOptions::default(),
        batch,
        &cx.ctl,
    )
}

/// The group a step's single fact is optimized with ([`super::TargetGroup`]): only when the
/// model is unedited, so the group's other targets are the ones their own steps would compute,
/// and a cache keeps them until then; otherwise the fact is optimized alone.
fn prefetch_group<'g>(
    model: &Model,
    requests: &[EditRequest],
    batch: usize,
    cx: &super::EditContext<'g>,
) -> Result<Option<super::TargetGroup<'g>>> {
    let (Some(group), [request]) = (cx.target_group, requests) else {
        return Ok(None);
    };
    let usable = batch > 1
        && group.requests.len() > 1
        && group.requests.len() <= batch
        && group.requests.get(group.position) == Some(request)
        && cx.targets.is_some()
        && !model.is_edited()?;
    Ok(usable.then_some(group))
}
