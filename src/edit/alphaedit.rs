//! AlphaEdit (Fang et al., ICLR 2025), spec §3.7: MEMIT-style updates projected onto the null
//! space of the preserved knowledge.
//!
//! ```text
//! C_j = U Σ Uᵀ,   P_j = Û Ûᵀ  (eigenvectors with eigenvalue < nullspace_threshold)
//! Δ_jᵀ = (P_j (K Kᵀ + K_p K_pᵀ) + α I)⁻¹ P_j K (R / (L − j))ᵀ
//! ```
//! `K_p K_pᵀ` sums the keys of all earlier edits (recomputed on the edited model after each
//! step). Because the solution lies in the range of `P_j`, `Δ_j k₀ = 0` for every key `k₀` in the
//! preserved subspace (`P_j k₀ = 0`).

use std::sync::Arc;

use faer::Mat;

use super::keys::{request_keys, KeyAverage};
use super::linalg::{add_outer, exact_tensor_from_mat, solve_general, symmetric_eigen};
use super::norm_anchor::value_targets;
use super::spread::{spread_updates, Spread};
use super::templates::ContextTemplates;
use super::{
    commit_updates, restore_weights, EditContext, EditOutcome, EditRequest, Editor, HParams,
    Method, Phase, Progress, Stopwatch, Timings, UndoRecord,
};
use crate::error::{Error, Result};
use crate::model::{Model, Site};

pub struct AlphaEdit {
    hp: HParams,
    templates: Option<ContextTemplates>,
    /// NAS's reference norm, once measured (`norm_anchor`).
    anchor: Option<f64>,
    /// Null-space projector per edited layer.
    projectors: Vec<Arc<Mat<f64>>>,
    /// Their ranks (trace of a projector), for the run's records.
    ranks: Vec<usize>,
    /// `K_p K_pᵀ` per edited layer.
    preserved: Vec<Mat<f64>>,
}

impl AlphaEdit {
    pub fn new(hp: HParams) -> Self {
        Self {
            hp,
            templates: None,
            anchor: None,
            projectors: vec![],
            ranks: vec![],
            preserved: vec![],
        }
    }

    /// `P = Û Ûᵀ` from the eigenvectors of C below the threshold.
    pub fn null_space_projector(c: &Mat<f64>, threshold: f64) -> Result<Mat<f64>> {
        let (values, vectors) = symmetric_eigen(c.as_ref())?;
        let keep: Vec<usize> = values
            .iter()
            .enumerate()
            .filter(|(_, &v)| v < threshold)
            .map(|(i, _)| i)
            .collect();
        let d = c.nrows();
        let u = Mat::from_fn(d, keep.len(), |i, j| vectors[(i, keep[j])]);
        Ok(&u * u.transpose())
    }

    fn ensure_state(&mut self, model: &mut Model, cx: &mut EditContext) -> Result<()> {
        if self.projectors.len() == self.hp.layers.len() {
            return Ok(());
        }
        let threshold = self.hp.nullspace_threshold;
        self.projectors = cx.stats.derived(
            model,
            &self.hp.layers,
            &format!("alphaedit-null-space-{threshold:e}"),
            &cx.ctl,
            |c| Self::null_space_projector(c, threshold),
        )?;
        // P is an orthogonal projector: its trace is its rank.
        self.ranks = self
            .projectors
            .iter()
            .map(|p| (0..p.nrows()).map(|i| p[(i, i)]).sum::<f64>().round() as usize)
            .collect();
        // An empty null space makes the update exactly zero: say so instead of "editing".
        let empty: Vec<usize> = self
            .hp
            .layers
            .iter()
            .zip(&self.ranks)
            .filter(|(_, &r)| r == 0)
            .map(|(&l, _)| l)
            .collect();
        if !empty.is_empty() {
            let why = format!(
                "AlphaEdit's null space is empty at layer(s) {empty:?}: every eigenvalue of C is \
                 above nullspace_threshold = {threshold:e}, so the update there is zero (raise \
                 nullspace_threshold; its scale follows C's)"
            );
            if empty.len() == self.hp.layers.len() {
                self.projectors.clear();
                return Err(Error::Input(why));
            }
            cx.ctl.warn(why);
        }
        // A restored checkpoint brings its preserved-key sums; the projectors are recomputed.
        if self.preserved.len() != self.hp.layers.len() {
            let d = model.config.d_ff;
            self.preserved = self.hp.layers.iter().map(|_| Mat::zeros(d, d)).collect();
        }
        Ok(())
    }

    /// The projector of an edited layer (after the first edit).
    pub fn projector(&self, j: usize) -> Option<&Mat<f64>> {
        self.projectors.get(j).map(|p| p.as_ref())
    }
}

impl Editor for AlphaEdit {
    fn method(&self) -> Method {
        Method::AlphaEdit
    }

    fn hparams(&self) -> &HParams {
        &self.hp
    }

    fn statistics_layers(&self) -> Vec<usize> {
        self.hp.layers.clone()
    }

    /// The preserved-key sums `K_p K_pᵀ` (f64, exact); the projectors follow from the statistics.
    fn snapshot(&self) -> Result<super::EditorSnapshot> {
        let tensors = self
            .preserved
            .iter()
            .enumerate()
            .map(|(j, m)| {
                Ok((
                    format!("alphaedit.preserved.{j}"),
                    exact_tensor_from_mat(m.as_ref())?,
                ))
            })
            .collect::<Result<_>>()?;
        Ok(super::EditorSnapshot {
            tensors,
            meta: serde_json::json!({ "method": "alphaedit" }),
        })
    }

    fn restore(
        &mut self,
        model: &mut Model,
        _cx: &mut EditContext,
        snap: &super::EditorSnapshot,
    ) -> Result<()> {
        snap.check_method(Method::AlphaEdit)?;
        let d = model.config.d_ff;
        self.preserved = if snap.tensors.is_empty() {
            vec![]
        } else {
            (0..self.hp.layers.len())
                .map(|j| snap.matrix(&format!("alphaedit.preserved.{j}"), d, d))
                .collect::<Result<_>>()?
        };
        Ok(())
    }

    fn report(&self) -> super::EditorReport {
        super::EditorReport {
            projector_rank: self.ranks.clone(),
        }
    }

    fn state_bytes(&self) -> usize {
        8 * (self
            .projectors
            .iter()
            .map(|m| m.nrows() * m.ncols())
            .sum::<usize>()
            + self
                .preserved
                .iter()
                .map(|m| m.nrows() * m.ncols())
                .sum::<usize>())
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
        self.ensure_state(model, cx)?;
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
        let (projectors, preserved, alpha) = (&self.projectors, &self.preserved, self.hp.l2);
        let updated = spread_updates(
            model,
            requests,
            &templates,
            &spread,
            &z,
            &cx.ctl,
            (&mut timer, &mut timings),
            |j, k, r| {
                // Δ_jᵀ = (P (K Kᵀ + K_p K_pᵀ) + α I)⁻¹ P K Rᵀ
                let p = projectors[j].as_ref();
                let mut m = p * (k * k.transpose() + &preserved[j]);
                for i in 0..m.nrows() {
                    m[(i, i)] += alpha;
                }
                let rhs = p * (k * r.transpose());
                Ok(solve_general(m.as_ref(), rhs.as_ref())?
                    .transpose()
                    .to_owned())
            },
        )?;
        cx.ctl.report(Progress::Phase(Phase::Apply));
        let (report, previous, sha) = commit_updates(model, updated, self.hp.max_update_ratio)?;
        // The step's keys, on the edited model, join the preserved set.
        let keys = request_keys(model, requests, &templates, &layers, KeyAverage::GroupMeans)?;
        for per_request in &keys {
            for (j, k) in per_request.iter().enumerate() {
                add_outer(&mut self.preserved[j], 1.0, k, k);
            }
        }
        timings.finish(timer.lap());
        Ok(EditOutcome {
            method: Method::AlphaEdit,
            layers: report,
            targets: targets.iter().map(|t| t.summary()).collect(),
            timings,
            weights_sha256: sha,
            undo: UndoRecord::WeightsAndKeys {
                weights: previous,
                keys,
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
                "this undo record does not belong to AlphaEdit".into(),
            ));
        };
        restore_weights(model, weights)?;
        for per_request in keys {
            for (j, k) in per_request.iter().enumerate() {
                if let Some(p) = self.preserved.get_mut(j) {
                    add_outer(p, -1.0, k, k);
                }
            }
        }
        Ok(())
    }
}
