//! One batched pass of the target optimization (spec §1.7): the rows of several problems through
//! one forward and one backward per Adam step, each problem with its own δ, Adam state and early
//! stop.
//!
//! ```text
//! L_total(δ_1 … δ_n) = Σ_i L(δ_i; rows_i)      ∂L_total/∂δ_i = ∂L(δ_i; rows_i)/∂δ_i
//! ```
//! (attention never crosses rows, so the summed loss gives each δ its own gradient).

use candle_core::{DType, Tensor, Var};
use candle_nn::optim::{AdamW, Optimizer, ParamsAdamW};

use super::{NllSchedule, OptimOptions, SiteResult, TargetParams, TargetProblem, TargetResult};
use crate::edit::{EditControl, Progress};
use crate::error::{Error, Result};
use crate::model::generate::target_logprobs;
use crate::model::layers::log_softmax_last;
use crate::model::{Forward, Input, KvCache, Logits, Model, Site, SiteDelta};

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

impl Plan {
    /// The plan of a batch with only the `members`' rows (ascending problem indices), and their
    /// slots in it: a pass drops the rows of problems that stopped early, so each step costs
    /// the rows still optimizing.
    fn select(&self, slots: &[Slot], members: &[usize]) -> Result<(Plan, Vec<Slot>)> {
        let rows: Vec<usize> = members
            .iter()
            .flat_map(|&i| slots[i].first_row..slots[i].first_row + slots[i].n_rows)
            .collect();
        let mut new_row = vec![
            None;
            slots
                .iter()
                .map(|s| s.first_row + s.n_rows)
                .max()
                .unwrap_or(0)
        ];
        for (n, &r) in rows.iter().enumerate() {
            new_row[r] = Some(n);
        }
        let scored_of = |scored: &[(usize, usize)]| -> Vec<(usize, usize)> {
            scored
                .iter()
                .filter_map(|&(r, p)| new_row[r].map(|n| (n, p)))
                .collect()
        };
        let (plan, scored) = match self {
            Plan::Full {
                rows: all,
                lookup,
                scored,
            } => {
                let scored = scored_of(scored);
                let plan = Plan::Full {
                    rows: rows.iter().map(|&r| all[r].clone()).collect(),
                    lookup: rows.iter().map(|&r| lookup[r]).collect(),
                    scored: scored.clone(),
                };
                (plan, scored)
            }
            Plan::Suffix {
                hidden,
                lens,
                cache,
                scored,
            } => {
                let scored = scored_of(scored);
                let ids: Vec<u32> = rows.iter().map(|&r| r as u32).collect();
                let index = Tensor::from_vec(ids, rows.len(), hidden.device())?;
                let plan = Plan::Suffix {
                    hidden: hidden.index_select(&index, 0)?,
                    lens: rows.iter().map(|&r| lens[r]).collect(),
                    cache: cache.select_rows(&rows)?,
                    scored: scored.clone(),
                };
                (plan, scored)
            }
        };
        let mut first_row = 0;
        let new_slots = members
            .iter()
            .map(|&i| {
                let s = &slots[i];
                let slot = Slot {
                    first_row,
                    n_rows: s.n_rows,
                    n_rewrite: s.n_rewrite,
                    first_scored: scored
                        .iter()
                        .position(|&(r, _)| r == first_row)
                        .unwrap_or(0),
                };
                first_row += s.n_rows;
                slot
            })
            .collect();
        Ok((plan, new_slots))
    }
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

/// Optimizes several problems at once: their rows go through one forward and one backward pass
/// per step, each with its own δ, Adam state and early stop. A problem's loss depends on its own
/// rows and δ only (attention never crosses rows), so the sum of the losses has each problem's
/// own gradient: every result is its problem's optimization alone, up to the last bits of the
/// wider products (a batch of one is [`super::optimize`] exactly). A problem that stops early
/// leaves the pass: the next steps run only the rows still optimizing, so a pass costs about
/// what its facts' steps cost together, not its slowest fact's steps times the batch. All
/// problems edit the same layer with the same kinds of sites.
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

    // The rows still optimizing: the whole batch until a problem stops, then a narrowed copy.
    let mut narrowed: Option<(Vec<usize>, Plan, Vec<Slot>)> = None;
    for it in 0..params.steps.max(1) {
        if ctl.cancelled() {
            return Err(Error::Cancelled);
        }
        let members: Vec<usize> = (0..runs.len()).filter(|&i| runs[i].active).collect();
        if members.len() < runs.len() && narrowed.as_ref().is_none_or(|(m, ..)| *m != members) {
            let (p, s) = plan.select(&slots, &members)?;
            narrowed = Some((members.clone(), p, s));
        }
        let (step_plan, step_slots) = match &narrowed {
            Some((_, p, s)) if members.len() < runs.len() => (p, s.as_slice()),
            _ => (&plan, slots.as_slice()),
        };
        let member_runs: Vec<&Run> = members.iter().map(|&i| &runs[i]).collect();
        let logits = step_logits(model, step_plan, layer, problems, step_slots, &member_runs)?;
        let mut total: Option<Tensor> = None;
        let (mut loss_sum, mut prob_sum, mut n_active) = (0.0, 0.0, 0usize);
        for (&i, slot) in members.iter().zip(step_slots) {
            let (p, run) = (&problems[i], &mut runs[i]);
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
fn row_deltas(slots: &[Slot], runs: &[&Run], site: usize) -> Result<Tensor> {
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
    runs: &[&Run],
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
