//! ROME — Rank-One Model Editing (Meng et al., NeurIPS 2022), spec §3.2.
//!
//! ```text
//! u  = normalize(C⁻¹ k*)  (or normalize(k*) without the covariance adjustment)
//! v* = m₀ + δ*                      δ* from the §1.7 optimization at the MLP output of layer l
//! ΔW = (v* − W k) uᵀ / (kᵀ u)        so that (W + ΔW) k = v*
//! ```
//! `k*` is the key averaged over the context templates, `k` and `W k` the key and MLP output of
//! the bare prompt. Several requests in one step are applied one after another.

use super::keys::{bare_activations, request_keys, to_tensor, KeyAverage};
use super::linalg::{mat_from_columns, solve_spd_right_regularized};
use super::target::{KlPrompt, Lookup, OptimOptions, SiteSpec, TargetParams, TargetProblem};
use super::target_cache::optimize_with;
use super::templates::ContextTemplates;
use super::{
    commit_updates, restore_weights, undo_weights, EditContext, EditOutcome, EditRequest, Editor,
    HParams, Method, Phase, Progress, Stopwatch, Timings, UndoRecord,
};
use crate::error::{Error, Result};
use crate::model::{Model, Site};

pub struct Rome {
    hp: HParams,
    templates: Option<ContextTemplates>,
    last_value: Vec<f64>,
}

impl Rome {
    pub fn new(hp: HParams) -> Self {
        Self {
            hp,
            templates: None,
            last_value: vec![],
        }
    }

    /// `v*` of the most recent request (for inspection and tests).
    pub fn last_value(&self) -> &[f64] {
        &self.last_value
    }
}

impl Editor for Rome {
    fn method(&self) -> Method {
        Method::Rome
    }

    fn hparams(&self) -> &HParams {
        &self.hp
    }

    fn statistics_layers(&self) -> Vec<usize> {
        if self.hp.mom2_adjustment {
            self.hp.layers.clone()
        } else {
            Vec::new()
        }
    }

    fn apply(
        &mut self,
        model: &mut Model,
        cx: &mut EditContext,
        requests: &[EditRequest],
    ) -> Result<EditOutcome> {
        self.hp.validate(&model.config)?;
        let layer = self.hp.layers[0];
        let mut timer = Stopwatch::start();
        let mut timings = Timings::default();
        let cinv_dir = if self.hp.mom2_adjustment {
            Some(cx.stats.second_moments(model, &[layer], &cx.ctl)?.remove(0))
        } else {
            None
        };
        timings.statistics = timer.lap();
        cx.ctl.report(Progress::Phase(Phase::Templates));
        let contexts = cx.templates(&mut self.templates, model, &self.hp)?.flat();
        timings.templates = timer.lap();
        let before: Vec<_> = vec![(layer, model.edit_weight(layer)?.clone())];
        let mut summaries = Vec::new();
        let result = (|| -> Result<()> {
            for request in requests {
                request.validate()?;
                cx.ctl.report(Progress::Phase(Phase::Keys));
                let k_star = request_keys(
                    model,
                    std::slice::from_ref(request),
                    &ContextTemplates::from_list(&contexts),
                    &[layer],
                    KeyAverage::Flat,
                )?
                .remove(0)
                .remove(0);
                let u = match &cinv_dir {
                    // u = C⁻¹ k*: solve uᵀ C = k*ᵀ (C symmetric).
                    Some(c) => solve_spd_right_regularized(
                        mat_from_columns(std::slice::from_ref(&k_star))
                            .as_ref()
                            .transpose(),
                        c.as_ref().as_ref(),
                        &|w| cx.ctl.warn(w),
                    )?
                    .row(0)
                    .iter()
                    .copied()
                    .collect::<Vec<f64>>(),
                    None => k_star.clone(),
                };
                let norm = u.iter().map(|x| x * x).sum::<f64>().sqrt();
                if norm == 0.0 || !norm.is_finite() {
                    return Err(Error::Numeric("the key direction is zero".into()));
                }
                let u: Vec<f64> = u.iter().map(|x| x / norm).collect();
                timings.keys += timer.lap();

                cx.ctl.report(Progress::Phase(Phase::Target));
                let problem = TargetProblem::for_request(
                    model,
                    request,
                    &contexts,
                    Lookup::SubjectLast,
                    layer,
                    vec![SiteSpec {
                        site: Site::MlpOut,
                        reference: Site::MlpOut,
                        init: None,
                        regularized: true,
                    }],
                    KlPrompt::SubjectIsA,
                )?;
                let res = optimize_with(
                    cx.targets.as_deref_mut(),
                    model,
                    &problem,
                    &TargetParams::from_hparams(&self.hp),
                    OptimOptions::default(),
                    &cx.ctl,
                )?;
                summaries.push(res.summary());
                let v_star = res.sites[0].target();
                self.last_value = v_star.clone();
                timings.target += timer.lap();

                cx.ctl.report(Progress::Phase(Phase::Solve));
                let bare = bare_activations(
                    model,
                    std::slice::from_ref(request),
                    &[(layer, Site::Key), (layer, Site::MlpOut)],
                )?;
                let (k, wk) = (&bare[0][0], &bare[1][0]);
                let ku: f64 = k.iter().zip(&u).map(|(a, b)| a * b).sum();
                if ku.abs() < 1e-12 {
                    return Err(Error::Numeric(
                        "the key is orthogonal to the update direction".into(),
                    ));
                }
                let w: Vec<f64> = v_star.iter().zip(wk).map(|(v, o)| (v - o) / ku).collect();
                let delta = to_tensor(model, &w)?
                    .unsqueeze(1)?
                    .matmul(&to_tensor(model, &u)?.unsqueeze(0)?)?;
                let w_new = (model.edit_weight_f32(layer)? + delta)?;
                model.set_edit_weight(layer, w_new)?;
                timings.solve += timer.lap();
            }
            Ok(())
        })();
        // Restore, then install through the safety gate (which also reports the norms).
        let after = model.edit_weight(layer)?.clone();
        restore_weights(model, &before)?;
        result?;
        cx.ctl.report(Progress::Phase(Phase::Apply));
        let (layers, previous, sha) =
            commit_updates(model, vec![(layer, after)], self.hp.max_update_ratio)?;
        timings.finish(timer.lap());
        Ok(EditOutcome {
            method: Method::Rome,
            layers,
            targets: summaries,
            timings,
            weights_sha256: sha,
            undo: UndoRecord::Weights(previous),
        })
    }

    fn undo(
        &mut self,
        model: &mut Model,
        _cx: &mut EditContext,
        record: &UndoRecord,
    ) -> Result<()> {
        undo_weights(model, record, "ROME")
    }
}
