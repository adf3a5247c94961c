//! PMET — Precise Model Editing in a Transformer (Li et al., AAAI 2024), spec §3.3.
//!
//! Targets are optimized for the attention output *and* the MLP output of the last edited layer
//! at once (two shifts, each with its own clamp and decay); only the MLP target updates weights,
//! spread with a square root:
//!
//! ```text
//! R  = z_mlp − m(current, bare prompt) at L*
//! Δ_j = (R / √(L − j)) K_jᵀ (K_j K_jᵀ + λ C_j)⁻¹
//! ```

use candle_core::Tensor;

use super::keys::{bare_activations, request_keys, KeyAverage};
use super::linalg::{mat_from_columns, tensor_from_mat};
use super::memit::memit_update;
use super::target::{optimize, Lookup, OptimOptions, SiteSpec, TargetParams, TargetProblem};
use super::templates::{self, ContextTemplates};
use super::{
    commit_updates, restore_weights, EditContext, EditOutcome, EditRequest, Editor, HParams,
    Method, Phase, Progress, Stopwatch, Timings, UndoRecord,
};
use crate::error::{Error, Result};
use crate::model::{Model, Site};

pub struct Pmet {
    hp: HParams,
    templates: Option<ContextTemplates>,
}

impl Pmet {
    pub fn new(hp: HParams) -> Self {
        Self {
            hp,
            templates: None,
        }
    }
}

impl Editor for Pmet {
    fn method(&self) -> Method {
        Method::Pmet
    }

    fn hparams(&self) -> &HParams {
        &self.hp
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
        timings.statistics = timer.lap();
        cx.ctl.report(Progress::Phase(Phase::Templates));
        let templates = templates::ensure(&mut self.templates, model, &self.hp)?;
        timings.templates = timer.lap();

        cx.ctl.report(Progress::Phase(Phase::Target));
        let mut params = TargetParams::from_hparams(&self.hp);
        params.pmet_schedule = true;
        params.nll_factor = self.hp.nll_loss_factor;
        let sites = vec![
            SiteSpec {
                site: Site::AttnOut,
                reference: Site::AttnOut,
                init: None,
                regularized: true,
            },
            SiteSpec {
                site: Site::MlpOut,
                reference: Site::MlpOut,
                init: None,
                regularized: true,
            },
        ];
        let mut summaries = Vec::new();
        let mut z_mlp = Vec::new();
        for r in requests {
            let problem = TargetProblem::for_request(
                model,
                r,
                &templates.flat(),
                Lookup::SubjectLast,
                z_layer,
                sites.clone(),
                true,
            )?;
            let res = optimize(model, &problem, &params, OptimOptions::default(), &cx.ctl)?;
            summaries.push(res.summary());
            z_mlp.push(res.sites[1].target());
        }
        timings.target = timer.lap();

        let before: Vec<(usize, Tensor)> = layers
            .iter()
            .map(|&l| Ok((l, model.edit_weight(l)?.clone())))
            .collect::<Result<_>>()?;
        let updated = (|| -> Result<Vec<(usize, Tensor)>> {
            let mut out = Vec::new();
            for (j, &layer) in layers.iter().enumerate() {
                cx.ctl.check()?;
                cx.ctl.report(Progress::Phase(Phase::Keys));
                let keys = request_keys(
                    model,
                    requests,
                    &templates,
                    &[layer],
                    KeyAverage::GroupMeans,
                )?;
                let k = mat_from_columns(&keys.iter().map(|x| x[0].clone()).collect::<Vec<_>>());
                let m = bare_activations(model, requests, &[(z_layer, Site::MlpOut)])?.remove(0);
                let spread = ((layers.len() - j) as f64).sqrt();
                let r = mat_from_columns(
                    &z_mlp
                        .iter()
                        .zip(&m)
                        .map(|(z, m)| z.iter().zip(m).map(|(a, b)| (a - b) / spread).collect())
                        .collect::<Vec<Vec<f64>>>(),
                );
                timings.keys += timer.lap();
                cx.ctl.report(Progress::Phase(Phase::Solve));
                let delta = memit_update(&r, &k, &covs[j], self.hp.mom2_update_weight, &cx.ctl)?;
                let w =
                    (model.edit_weight(layer)? + tensor_from_mat(delta.as_ref(), &model.device)?)?;
                model.set_edit_weight(layer, w.clone())?;
                out.push((layer, w));
                timings.solve += timer.lap();
            }
            Ok(out)
        })();
        restore_weights(model, &before)?;
        let updated = updated?;
        cx.ctl.report(Progress::Phase(Phase::Apply));
        let (report, previous, sha) = commit_updates(model, updated, self.hp.max_update_ratio)?;
        timings.total = timings.statistics
            + timings.templates
            + timings.target
            + timings.keys
            + timings.solve
            + timer.lap();
        Ok(EditOutcome {
            method: Method::Pmet,
            layers: report,
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
        match record {
            UndoRecord::Weights(w) => restore_weights(model, w),
            _ => Err(Error::Input(
                "this undo record does not belong to PMET".into(),
            )),
        }
    }
}
