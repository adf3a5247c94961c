//! MEMIT — Mass-Editing Memory in a Transformer (Meng et al., ICLR 2023), spec §3.1.
//!
//! For a step of requests with targets `z_i = h_i + δ_i` at the last edited layer L*, for each
//! edited layer j in increasing order (keys on the model with the lower layers already updated):
//!
//! ```text
//! R  = [z_i − h_i(current)] / (L − j)
//! Δ_j = R K_jᵀ (λ C_j + K_j K_jᵀ)⁻¹          (f64, Cholesky solve)
//! W_j ← W_j + Δ_j
//! ```
//! Sequential MEMIT calls this once per step and keeps the accumulated weights.

use faer::Mat;

use super::linalg::solve_spd_right_regularized;
use super::norm_anchor::value_targets;
use super::spread::{spread_updates, Spread};
use super::templates::ContextTemplates;
use super::{
    commit_updates, undo_weights, EditContext, EditControl, EditOutcome, EditRequest, Editor,
    HParams, Method, Phase, Progress, Stopwatch, Timings, UndoRecord,
};
use crate::error::Result;
use crate::model::{Model, Site};

pub struct Memit {
    hp: HParams,
    templates: Option<ContextTemplates>,
    /// NAS's reference norm, once measured (`norm_anchor`).
    anchor: Option<f64>,
}

impl Memit {
    pub fn new(hp: HParams) -> Self {
        Self {
            hp,
            templates: None,
            anchor: None,
        }
    }
}

/// `scale · A + B Bᵀ` for `B: [d, n]` (the regularized key Gram matrix).
pub fn ridge_gram(a: &Mat<f64>, scale: f64, b: &Mat<f64>) -> Mat<f64> {
    let mut m = b * b.transpose();
    for j in 0..m.ncols() {
        for i in 0..m.nrows() {
            m[(i, j)] += scale * a[(i, j)];
        }
    }
    m
}

/// MEMIT's per-layer closed form `Δ = R Kᵀ (λ C + K Kᵀ)⁻¹`: the minimizer of
/// `Σ_i ‖Δ k_i − r_i‖² + λ tr(Δ C Δᵀ)` for keys `K: [d_in, n]` and residuals `R: [d_out, n]`.
pub fn memit_update(
    r: &Mat<f64>,
    k: &Mat<f64>,
    c: &Mat<f64>,
    lambda: f64,
    ctl: &EditControl,
) -> Result<Mat<f64>> {
    solve_spd_right_regularized(
        (r * k.transpose()).as_ref(),
        ridge_gram(c, lambda, k).as_ref(),
        &|w| ctl.warn(w),
    )
}

impl Editor for Memit {
    fn method(&self) -> Method {
        Method::Memit
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
        // Read after the targets, which do not need C (see D4S: a first edit's targets run beside
        // statistics gathered in the background).
        let covs = cx.stats.second_moments(model, &layers, &cx.ctl)?;
        timings.statistics = timer.lap();

        let spread = Spread {
            layers: &layers,
            output: (z_layer, Site::BlockOut),
            divisor: |remaining| remaining as f64,
        };
        let lambda = self.hp.mom2_update_weight;
        let ctl = &cx.ctl;
        let updated = spread_updates(
            model,
            requests,
            &templates,
            &spread,
            &z,
            ctl,
            (&mut timer, &mut timings),
            |j, k, r| memit_update(r, k, &covs[j], lambda, ctl),
        )?;
        cx.ctl.report(Progress::Phase(Phase::Apply));
        let (layer_report, previous, sha) =
            commit_updates(model, updated, self.hp.max_update_ratio)?;
        timings.finish(timer.lap());
        Ok(EditOutcome {
            method: Method::Memit,
            layers: layer_report,
            targets: targets.iter().map(|t| t.summary()).collect(),
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
        undo_weights(model, record, "MEMIT")
    }
}
