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

mod pass;

pub use pass::optimize_batch;

use super::request::{target_ids, tokenize_with_subject, EditRequest};
use super::EditControl;
use crate::error::{Error, Result};
use crate::model::{Model, Site};

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
        && group
            .requests
            .get(group.position)
            .is_some_and(|member| member.same_fact(request))
        && cx.targets.is_some()
        && !model.is_edited()?;
    Ok(usable.then_some(group))
}
