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

/// Runs the optimization. The model must not change while this runs.
pub fn optimize(
    model: &Model,
    problem: &TargetProblem,
    params: &TargetParams,
    opts: OptimOptions,
    ctl: &EditControl,
) -> Result<TargetResult> {
    let layer = problem.layer;
    if layer >= model.n_layers() {
        return Err(Error::Input(format!(
            "target layer {layer} does not exist (the model has {} layers)",
            model.n_layers()
        )));
    }
    let d = model.config.d_model;
    let mut all_rows = problem.rows.clone();
    let mut lookup = problem.lookup.clone();
    if let Some((kl, i)) = &problem.kl_row {
        all_rows.push(kl.clone());
        lookup.push(*i);
    }
    let n_rewrite = problem.rows.len();
    let mut scored = problem.scored_positions();
    if problem.kl_row.is_some() {
        scored.push((n_rewrite, lookup[n_rewrite]));
    }

    // One plain pass: the reference activations a₀ and, for the cached plan, the keys/values of
    // every position and the hidden states entering the edited layer.
    let mut captures: Vec<(usize, Site)> =
        problem.sites.iter().map(|s| (layer, s.reference)).collect();
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
    let mut reference = Vec::new();
    for s in &problem.sites {
        let a = base.capture(layer, s.reference)?;
        reference.push(Model::gather_rows(a, &[(0, lookup[0])])?.squeeze(0)?);
    }

    let plan = if opts.prefix_cache {
        let below = if layer > 0 {
            base.capture(layer - 1, Site::BlockOut)?.clone()
        } else {
            model.embed_tokens(&all_rows)?
        };
        // The suffix of row r starts at its lookup token; the KL row needs nothing after it.
        let lens: Vec<usize> = all_rows
            .iter()
            .zip(&lookup)
            .enumerate()
            .map(|(r, (row, &i))| if r < n_rewrite { row.len() - i } else { 1 })
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

    let deltas: Vec<Var> = problem
        .sites
        .iter()
        .map(|s| {
            let init = s.init.clone().unwrap_or_else(|| vec![0.0; d]);
            Tensor::from_vec(init, d, &model.device).and_then(|t| Var::from_tensor(&t))
        })
        .collect::<candle_core::Result<_>>()?;
    let ref_norms: Vec<f64> = reference.iter().map(l2).collect::<Result<_>>()?;
    let mut adam = AdamW::new(
        deltas.clone(),
        ParamsAdamW {
            lr: params.lr,
            weight_decay: 0.0,
            ..Default::default()
        },
    )?;

    let t = problem.target.len();
    let targets: Vec<u32> = (0..n_rewrite)
        .flat_map(|_| problem.target.iter().copied())
        .collect();
    let mut kl_init: Option<Tensor> = None;
    let mut nll_factor = params.nll_factor;
    let mut top1_steps = 0usize;
    let mut result = TargetResult {
        sites: vec![],
        prob_initial: 0.0,
        prob_final: 0.0,
        loss_final: f64::NAN,
        steps_run: 0,
        trajectory: vec![],
    };
    for it in 0..params.steps.max(1) {
        if ctl.cancelled() {
            return Err(Error::Cancelled);
        }
        let logits = step_logits(model, &plan, layer, &problem.sites, &deltas)?;
        let n_scored = n_rewrite * t;
        let lp =
            target_logprobs(&logits.narrow(0, 0, n_scored)?, &targets)?.reshape((n_rewrite, t))?;
        let per_prompt_nll = lp.mean(1)?.neg()?;
        let nll = per_prompt_nll.mean_all()?;
        let prob = per_prompt_nll
            .neg()?
            .exp()?
            .mean_all()?
            .to_scalar::<f32>()? as f64;
        let mut loss = (&nll * nll_factor)?;
        let mut kl_value = 0.0;
        if problem.kl_row.is_some() {
            let kl_lp = log_softmax_last(&logits.narrow(0, n_scored, 1)?)?;
            let init = kl_init.get_or_insert_with(|| kl_lp.detach()).clone();
            let kl = (kl_lp.exp()? * (&kl_lp - &init)?)?.sum_all()?;
            kl_value = kl.to_scalar::<f32>()? as f64;
            loss = (loss + (kl * params.kl_factor)?)?;
        }
        for ((s, v), n) in problem.sites.iter().zip(&deltas).zip(&ref_norms) {
            if s.regularized && params.weight_decay != 0.0 {
                // ‖δ‖ with a tiny floor under the square root: PyTorch's norm has gradient 0 at
                // δ = 0 (the first step), candle's sqrt would give 0/0.
                let norm = (v.as_tensor().sqr()?.sum_all()? + 1e-24)?.sqrt()?;
                let wd = (norm * (params.weight_decay / (n * n).max(1e-12)))?;
                loss = (loss + wd)?;
            }
        }
        let loss_v = loss.to_scalar::<f32>()? as f64;
        if !loss_v.is_finite() {
            return Err(Error::Numeric(format!(
                "target optimization diverged (loss {loss_v}) at step {it}"
            )));
        }
        if it == 0 {
            result.prob_initial = prob;
        }
        result.prob_final = prob;
        result.loss_final = loss_v;
        result.steps_run = it;
        ctl.report(Progress::TargetStep {
            step: it,
            of: params.steps,
            loss: loss_v,
            prob,
        });
        if params.stop_loss.is_some_and(|s| loss_v < s)
            || params.stop_prob.is_some_and(|p| prob > p)
        {
            break;
        }
        if let Some(k) = params.stop_top1 {
            if targets_are_argmax(&logits.narrow(0, 0, n_scored)?, &targets)? {
                top1_steps += 1;
                if top1_steps >= k {
                    break;
                }
            }
        }
        if params.schedule == NllSchedule::Pmet {
            let all_argmax = targets_are_argmax(&logits.narrow(0, 0, n_scored)?, &targets)?;
            if all_argmax {
                nll_factor = 0.1 * params.nll_factor;
                if kl_value <= 0.01 {
                    break;
                }
            }
        }
        if it + 1 == params.steps {
            break;
        }
        let grads = loss.backward()?;
        adam.step(&grads)?;
        for ((s, v), n) in problem.sites.iter().zip(&deltas).zip(&ref_norms) {
            if let (true, Some(c)) = (s.regularized, params.clamp_norm_factor) {
                let max = c * n;
                let norm = l2(v.as_tensor())?;
                if norm > max {
                    v.set(&(v.as_tensor() * (max / norm))?)?;
                }
            }
        }
        result.steps_run = it + 1;
        if opts.record_trajectory {
            result.trajectory.push(
                deltas
                    .iter()
                    .map(|v| v.as_tensor().to_vec1::<f32>())
                    .collect::<candle_core::Result<_>>()?,
            );
        }
    }
    for (v, a0) in deltas.iter().zip(&reference) {
        result.sites.push(SiteResult {
            reference: a0.to_dtype(DType::F64)?.to_vec1::<f64>()?,
            delta: v.as_tensor().to_dtype(DType::F64)?.to_vec1::<f64>()?,
        });
    }
    Ok(result)
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

/// Logits at the scored positions with the current δs.
fn step_logits(
    model: &Model,
    plan: &Plan,
    layer: usize,
    sites: &[SiteSpec],
    deltas: &[Var],
) -> Result<Tensor> {
    match plan {
        Plan::Full {
            rows,
            lookup,
            scored,
        } => {
            let s = rows.iter().map(Vec::len).max().unwrap_or(0);
            let site_deltas = sites
                .iter()
                .zip(deltas)
                .map(|(spec, v)| {
                    Ok(SiteDelta {
                        layer,
                        site: spec.site,
                        value: model.delta_at(v.as_tensor(), lookup, s)?,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            let out = model.forward(
                Input::Tokens(rows),
                &Forward {
                    deltas: site_deltas,
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
            let at_start = vec![0usize; b];
            let site_deltas = sites
                .iter()
                .zip(deltas)
                .map(|(spec, v)| {
                    Ok(SiteDelta {
                        layer,
                        site: spec.site,
                        value: model.delta_at(v.as_tensor(), &at_start, s)?,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            let out = model.forward(
                Input::Hidden {
                    hidden: hidden.clone(),
                    lens: lens.clone(),
                },
                &Forward {
                    start_layer: layer,
                    past: Some(cache),
                    deltas: site_deltas,
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
/// every context template as a rewriting prompt.
pub fn residual_targets(
    model: &Model,
    requests: &[EditRequest],
    contexts: &[String],
    layer: usize,
    params: &TargetParams,
    cx: &mut super::EditContext,
) -> Result<Vec<TargetResult>> {
    requests
        .iter()
        .map(|r| {
            let problem = TargetProblem::residual(model, r, contexts, layer)?;
            super::target_cache::optimize_with(
                cx.targets.as_deref_mut(),
                model,
                &problem,
                params,
                OptimOptions::default(),
                &cx.ctl,
            )
        })
        .collect()
}
