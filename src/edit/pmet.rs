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

use super::memit::memit_update;
use super::spread::{spread_updates, Spread};
use super::target::{
    KlPrompt, Lookup, NllSchedule, OptimOptions, SiteSpec, TargetParams, TargetProblem,
};
use super::target_cache::optimize_with;
use super::templates::ContextTemplates;
use super::{
    commit_updates, undo_weights, EditContext, EditOutcome, EditRequest, Editor, HParams, Method,
    Phase, Progress, Stopwatch, Timings, UndoRecord,
};
use crate::error::Result;
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
        timings.statistics = timer.lap();
        cx.ctl.report(Progress::Phase(Phase::Templates));
        let templates = cx.templates(&mut self.templates, model, &self.hp)?;
        timings.templates = timer.lap();

        cx.ctl.report(Progress::Phase(Phase::Target));
        let mut params = TargetParams::from_hparams(&self.hp);
        params.schedule = NllSchedule::Pmet;
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
                KlPrompt::SubjectIsA,
            )?;
            let res = optimize_with(
                cx.targets.as_deref_mut(),
                model,
                &problem,
                &params,
                OptimOptions::default(),
                &cx.ctl,
            )?;
            summaries.push(res.summary());
            z_mlp.push(res.sites[1].target());
        }
        timings.target = timer.lap();

        let spread = Spread {
            layers: &layers,
            output: (z_layer, Site::MlpOut),
            divisor: |remaining| (remaining as f64).sqrt(),
        };
        let lambda = self.hp.mom2_update_weight;
        let ctl = &cx.ctl;
        let updated = spread_updates(
            model,
            requests,
            &templates,
            &spread,
            &z_mlp,
            ctl,
            (&mut timer, &mut timings),
            |j, k, r| memit_update(r, k, &covs[j], lambda, ctl),
        )?;
        cx.ctl.report(Progress::Phase(Phase::Apply));
        let (report, previous, sha) = commit_updates(model, updated, self.hp.max_update_ratio)?;
        timings.finish(timer.lap());
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
        undo_weights(model, record, "PMET")
    }
}
