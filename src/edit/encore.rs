//! ENCORE (Gupta et al., "Lifelong Sequential Knowledge Editing without Model Degradation", 2025):
//! MEMIT with two changes that keep thousands of sequential edits from degrading the model.
//!
//! 1. **Most-probable early stopping (MPES)**: the target optimization (spec §1.7) stops once the
//!    new target has been the top-1 prediction at every rewriting prompt at `mpes` steps, instead
//!    of driving its probability towards 1. Over-optimized targets are what inflate the updates.
//! 2. **A norm constraint** on the update, μ‖ΔW‖²_F, added to MEMIT's objective together with the
//!    keys of every earlier edit `K_E`, which the new update must leave as they are:
//!
//! ```text
//! Δ_j = R Kᵀ (λ C_j + μ I + K_E K_Eᵀ + K Kᵀ)⁻¹,     R = [z_i − h_i(current)] / (L − j)
//! K_E K_Eᵀ ← K_E K_Eᵀ + K Kᵀ                        after the step
//! ```
//! `K` are this step's keys at layer j (lower layers already updated), as in MEMIT; μ is
//! `update_norm_lambda`. The default values (MPES after 2 steps, μ = 20) are those of ENCORE's
//! Llama-3-8B configuration; the default model's were not tuned yet (BENCHMARKS.md).

use faer::Mat;

use super::linalg::{add_outer, exact_tensor_from_mat, solve_spd_right_regularized};
use super::norm_anchor::value_targets;
use super::spread::{spread_updates, Spread};
use super::templates::ContextTemplates;
use super::{
    commit_updates, restore_weights, EditContext, EditOutcome, EditRequest, Editor, HParams,
    Method, Phase, Progress, Stopwatch, Timings, UndoRecord,
};
use crate::error::{Error, Result};
use crate::model::{Model, Site};

pub struct Encore {
    hp: HParams,
    templates: Option<ContextTemplates>,
    /// NAS's reference norm, once measured (`norm_anchor`).
    anchor: Option<f64>,
    /// `K_E K_Eᵀ` per edited layer: the keys of every edit so far.
    previous: Vec<Mat<f64>>,
}

impl Encore {
    pub fn new(hp: HParams) -> Self {
        Self {
            hp,
            templates: None,
            anchor: None,
            previous: Vec::new(),
        }
    }

    fn ensure_state(&mut self, model: &Model) {
        if self.previous.len() != self.hp.layers.len() {
            let d = model.config.d_ff;
            self.previous = self.hp.layers.iter().map(|_| Mat::zeros(d, d)).collect();
        }
    }

    /// Adds (`sign = 1`) or removes (`sign = −1`) a step's keys, given per request and layer.
    fn add_keys(&mut self, keys: &[Vec<Vec<f64>>], sign: f64) {
        for per_request in keys {
            for (j, k) in per_request.iter().enumerate() {
                if let Some(p) = self.previous.get_mut(j) {
                    add_outer(p, sign, k, k);
                }
            }
        }
    }
}

/// ENCORE's per-layer closed form `Δ = R Kᵀ (λC + μI + K_E K_Eᵀ + K Kᵀ)⁻¹`.
pub fn encore_update(
    r: &Mat<f64>,
    k: &Mat<f64>,
    c: &Mat<f64>,
    previous: &Mat<f64>,
    (lambda, mu): (f64, f64),
    warn: &dyn Fn(String),
) -> Result<Mat<f64>> {
    let mut m = k * k.transpose() + previous;
    for j in 0..m.ncols() {
        for i in 0..m.nrows() {
            m[(i, j)] += lambda * c[(i, j)];
        }
        m[(j, j)] += mu;
    }
    solve_spd_right_regularized((r * k.transpose()).as_ref(), m.as_ref(), warn)
}

impl Editor for Encore {
    fn method(&self) -> Method {
        Method::Encore
    }

    fn hparams(&self) -> &HParams {
        &self.hp
    }

    fn statistics_layers(&self) -> Vec<usize> {
        self.hp.layers.clone()
    }

    fn apply(
        &mut self,
        model: &mut Model,
        cx: &mut EditContext,
        requests: &[EditRequest],
    ) -> Result<EditOutcome> {
        self.hp.validate(&model.config)?;
        for r in requests {
            r.validate()?;
        }
        let layers = self.hp.layers.clone();
        let z_layer = self.hp.last_layer();
        let mut timer = Stopwatch::start();
        let mut timings = Timings::default();
        let covs = cx.stats.second_moments(model, &layers, &cx.ctl)?;
        self.ensure_state(model);
        timings.statistics = timer.lap();
        cx.ctl.report(Progress::Phase(Phase::Templates));
        let templates = cx.templates(&mut self.templates, model, &self.hp)?;
        timings.templates = timer.lap();
        cx.ctl.report(Progress::Phase(Phase::Target));
        let targets = value_targets(
            model,
            requests,
            &templates.flat(),
            &self.hp,
            &mut self.anchor,
            cx,
        )?;
        let z: Vec<Vec<f64>> = targets.iter().map(|t| t.sites[0].target()).collect();
        timings.target = timer.lap();

        let spread = Spread {
            layers: &layers,
            output: (z_layer, Site::BlockOut),
            divisor: |remaining| remaining as f64,
        };
        let weights = (self.hp.mom2_update_weight, self.hp.update_norm_lambda);
        let previous = &self.previous;
        let ctl = &cx.ctl;
        // The keys each layer's solve used, per request, to join K_E once the step is accepted.
        let mut step_keys: Vec<Vec<Vec<f64>>> = vec![Vec::new(); requests.len()];
        let updated = spread_updates(
            model,
            requests,
            &templates,
            &spread,
            &z,
            ctl,
            (&mut timer, &mut timings),
            |j, k, r| {
                for (i, keys) in step_keys.iter_mut().enumerate() {
                    keys.push((0..k.nrows()).map(|a| k[(a, i)]).collect());
                }
                encore_update(r, k, &covs[j], &previous[j], weights, &|w| ctl.warn(w))
            },
        )?;
        cx.ctl.report(Progress::Phase(Phase::Apply));
        let (report, before, sha) = commit_updates(model, updated, self.hp.max_update_ratio)?;
        self.add_keys(&step_keys, 1.0);
        timings.finish(timer.lap());
        Ok(EditOutcome {
            method: Method::Encore,
            layers: report,
            targets: targets.iter().map(|t| t.summary()).collect(),
            timings,
            weights_sha256: sha,
            undo: UndoRecord::WeightsAndKeys {
                weights: before,
                keys: step_keys,
            },
        })
    }

    fn undo(
        &mut self,
        model: &mut Model,
        _cx: &mut EditContext,
        record: &UndoRecord,
    ) -> Result<()> {
        let UndoRecord::WeightsAndKeys { weights, keys } = record else {
            return Err(Error::Input(
                "this undo record does not belong to ENCORE".into(),
            ));
        };
        restore_weights(model, weights)?;
        self.add_keys(keys, -1.0);
        Ok(())
    }

    fn state_bytes(&self) -> usize {
        8 * self
            .previous
            .iter()
            .map(|m| m.nrows() * m.ncols())
            .sum::<usize>()
    }

    /// The sums `K_E K_Eᵀ` (f64, exact).
    fn snapshot(&self) -> Result<super::EditorSnapshot> {
        let tensors = self
            .previous
            .iter()
            .enumerate()
            .map(|(j, m)| {
                Ok((
                    format!("encore.previous.{j}"),
                    exact_tensor_from_mat(m.as_ref())?,
                ))
            })
            .collect::<Result<_>>()?;
        Ok(super::EditorSnapshot {
            tensors,
            meta: serde_json::json!({ "method": "encore" }),
        })
    }

    fn restore(
        &mut self,
        model: &mut Model,
        _cx: &mut EditContext,
        snap: &super::EditorSnapshot,
    ) -> Result<()> {
        snap.check_method(Method::Encore)?;
        let d = model.config.d_ff;
        self.previous = if snap.tensors.is_empty() {
            Vec::new()
        } else {
            (0..self.hp.layers.len())
                .map(|j| snap.matrix(&format!("encore.previous.{j}"), d, d))
                .collect::<Result<_>>()?
        };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The closed form is the minimizer of its objective: its gradient vanishes there.
    #[test]
    fn the_update_minimizes_memits_objective_plus_the_norm_and_previous_key_terms() {
        let (d_in, d_out, n) = (5, 3, 2);
        let m = |r: usize, c: usize, s: f64| {
            Mat::from_fn(r, c, |i, j| ((i * 7 + j * 3) as f64 * s).sin())
        };
        let (k, r) = (m(d_in, n, 0.7), m(d_out, n, 1.3));
        let a = m(d_in, d_in, 0.4);
        let c = &a * a.transpose();
        let ke = m(d_in, 2, 2.1);
        let previous = &ke * ke.transpose();
        let (lambda, mu) = (0.5, 2.0);
        let delta = encore_update(&r, &k, &c, &previous, (lambda, mu), &|_| {}).unwrap();
        // ∇ of ‖ΔK − R‖² + λ tr(ΔCΔᵀ) + μ‖Δ‖² + ‖ΔK_E‖², halved:
        // (ΔK − R)Kᵀ + λΔC + μΔ + ΔK_EK_Eᵀ = 0.
        let grad = (&delta * &k - &r) * k.transpose()
            + &delta * &c * lambda
            + &delta * mu
            + &delta * &previous;
        assert!(grad.norm_l2() < 1e-10, "{}", grad.norm_l2());
        // μ shrinks the update.
        let free = encore_update(&r, &k, &c, &previous, (lambda, 0.0), &|_| {}).unwrap();
        assert!(delta.norm_l2() < free.norm_l2());
    }

    /// MPES only ends the optimization earlier: its steps are the plain optimization's first ones.
    #[test]
    fn most_probable_early_stopping_truncates_the_plain_optimization() {
        use crate::edit::target::{optimize, OptimOptions, TargetParams, TargetProblem};
        use crate::edit::EditControl;
        use crate::model::config::Arch;
        use crate::model::random::{tiny_config, tiny_model};
        let model = tiny_model(Arch::Llama, 3);
        let request = EditRequest::new("Eiffel Tower", "The Eiffel Tower is in", "Rome");
        // A problem whose target is already the model's greedy continuation: top-1 from the
        // first step, so MPES must stop early while the plain optimization runs on.
        let mut problem =
            TargetProblem::residual(&model, &request, &["{}".to_string()], 1).unwrap();
        let prompt: Vec<u32> = problem.rows[0][..problem.rows[0].len() - 1].to_vec();
        let greedy = |ids: &[u32]| -> u32 {
            let out = model
                .forward(
                    crate::model::Input::Tokens(&[ids.to_vec()]),
                    &crate::model::Forward {
                        logits: crate::model::Logits::At(vec![(0, ids.len() - 1)]),
                        ..Default::default()
                    },
                )
                .unwrap();
            out.logits()
                .unwrap()
                .argmax(1)
                .unwrap()
                .to_vec1::<u32>()
                .unwrap()[0]
        };
        let a = greedy(&prompt);
        let mut row = prompt.clone();
        row.push(a);
        let b = greedy(&row);
        problem.rows = vec![row];
        problem.target = vec![a, b];
        let mut hp = HParams::defaults(Method::Encore, &tiny_config(Arch::Llama));
        hp.v_num_grad_steps = 40;
        hp.v_lr = 1.0;
        let opts = OptimOptions {
            record_trajectory: true,
            ..OptimOptions::default()
        };
        let ctl = EditControl::default();
        let mut plain_params = TargetParams::from_hparams(&hp);
        plain_params.stop_top1 = None;
        plain_params.stop_loss = None;
        let mut mpes_params = plain_params.clone();
        mpes_params.stop_top1 = Some(2);
        let plain = optimize(&model, &problem, &plain_params, opts, &ctl).unwrap();
        let mpes = optimize(&model, &problem, &mpes_params, opts, &ctl).unwrap();
        assert!(
            mpes.steps_run < plain.steps_run,
            "MPES stopped at {} of {}",
            mpes.steps_run,
            plain.steps_run
        );
        assert_eq!(
            mpes.trajectory[..],
            plain.trajectory[..mpes.trajectory.len()]
        );
        assert_eq!(hp.mpes, Some(2), "ENCORE's default");
    }
}
