//! D4S — Dump for Sequence (Huang et al., NeurIPS 2024), spec §2.
//!
//! Per edited layer j keep the running sums of the edit history (the "dump"):
//!
//! ```text
//! S_j = Σ_i r_i k_{i,j}ᵀ            (d_out × d_in, f64)
//! A_j = Σ_i k_{i,j} k_{i,j}ᵀ        (d_in × d_in, f64)
//! W_j = W0_j + (S_j / (L − j)) (A_j + λ C_j)⁻¹
//! ```
//! Each new edit's residual `r = z − h` is measured on the original weights W0 (the model is
//! re-based on W0 before every edit, as the released code does), so after t edits the weights are
//! MEMIT's *batch* solution for all t edits relative to W0: sequence editing becomes batch
//! editing, in memory that does not grow with t, and the update norm stays bounded (§2.6).
//!
//! Undo, which the reference tools lack: subtracting an edit's `r kᵀ` and `k kᵀ` terms removes it
//! exactly, whichever edit it was.
//!
//! The solve: `d4s_solve = update` (the default) keeps a Cholesky factor of `A_j + λC_j` and the
//! update beside the sums and moves both by rank-k updates (downdates for undo), so no step after
//! the first costs O(d_in³) ([`super::factored`]); `fresh` solves from the sums every step. The
//! two agree to rounding; each replays bit for bit with itself.

use candle_core::Tensor;
use faer::Mat;

use super::factored::{Direction, FactoredUpdate};
use super::hparams::{D4sSolve, ResidualMode};
use super::keys::{bare_activations, request_keys, KeyAverage};
use super::linalg::{
    exact_tensor_from_mat, plus_scaled, solve_spd_right_regularized, tensor_from_mat,
};
use super::norm_anchor::value_targets;
use super::templates::ContextTemplates;
use super::{
    commit_updates, restore_weights, EditContext, EditOutcome, EditRequest, EditTerms, Editor,
    HParams, Method, Phase, Progress, Stopwatch, Timings, UndoReach, UndoRecord,
};
use crate::error::{Error, Result};
use crate::model::{Model, Site};

pub struct D4s {
    hp: HParams,
    templates: Option<ContextTemplates>,
    /// NAS's reference norm, once measured (`norm_anchor`).
    anchor: Option<f64>,
    /// `S_j` per edited layer (empty until the first edit).
    s: Vec<Mat<f64>>,
    /// `A_j` per edited layer.
    a: Vec<Mat<f64>>,
    /// Per edited layer, the kept factor and update (`d4s_solve = update`; empty until the first
    /// step, and always with `fresh`).
    factors: Vec<FactoredUpdate>,
    /// Edits currently in the sums.
    n_edits: usize,
}

impl D4s {
    pub fn new(hp: HParams) -> Self {
        Self {
            hp,
            templates: None,
            anchor: None,
            s: vec![],
            a: vec![],
            factors: vec![],
            n_edits: 0,
        }
    }

    pub fn n_edits(&self) -> usize {
        self.n_edits
    }

    fn init_state(&mut self, model: &Model) {
        if self.s.len() != self.hp.layers.len() {
            let (d_out, d_in) = (model.config.d_model, model.config.d_ff);
            self.s = self
                .hp
                .layers
                .iter()
                .map(|_| Mat::zeros(d_out, d_in))
                .collect();
            self.a = self
                .hp
                .layers
                .iter()
                .map(|_| Mat::zeros(d_in, d_in))
                .collect();
        }
    }

    /// `W0_j + (S / (L − j)) (A + λ C_j)⁻¹` for layer index `j`, with candidate sums.
    fn weight_for(
        &self,
        model: &Model,
        j: usize,
        s: &Mat<f64>,
        a: &Mat<f64>,
        c: &Mat<f64>,
        ctl: &super::EditControl,
    ) -> Result<Tensor> {
        let delta = d4s_delta(s, a, c, self.hp.mom2_update_weight, self.spread(j), &|w| {
            ctl.warn(w)
        })?;
        self.weight_with(model, j, &delta)
    }

    /// `W0_j + Δ`.
    fn weight_with(&self, model: &Model, j: usize, delta: &Mat<f64>) -> Result<Tensor> {
        let w0 = model.original_edit_weight_f32(self.hp.layers[j])?;
        Ok((w0 + tensor_from_mat(delta.as_ref(), &model.device)?)?)
    }

    /// `L − j`: how many edited layers from `j` up share the residual (spec §2).
    fn spread(&self, j: usize) -> f64 {
        (self.hp.layers.len() - j) as f64
    }

    /// Layer `j`'s factor from its sums, by a fresh factorization.
    fn factor_of_sums(
        &self,
        j: usize,
        s: &Mat<f64>,
        a: &Mat<f64>,
        c: &Mat<f64>,
        ctl: &super::EditControl,
    ) -> Result<FactoredUpdate> {
        let lambda = self.hp.mom2_update_weight;
        FactoredUpdate::factor(s, a, c, lambda, self.spread(j), &|w| ctl.warn(w))
    }

    /// Layer `j`'s factor moved by a step's terms: a rank-k update (`Add`) or downdate
    /// (`Remove`) of the kept factor, or, when there is none yet (the first step) or the downdate
    /// fails (the rounding of a long history can make `M − K Kᵀ` look indefinite), a fresh
    /// factorization of the sums after the step, `s_after` and `a_after`. Deterministic, so a
    /// replay takes the same path.
    fn factor_after(
        &self,
        j: usize,
        terms: &EditTerms,
        direction: Direction,
        (s_after, a_after): (&Mat<f64>, &Mat<f64>),
        c: &Mat<f64>,
        ctl: &super::EditControl,
    ) -> Result<FactoredUpdate> {
        let Some(kept) = self.factors.get(j) else {
            return self.factor_of_sums(j, s_after, a_after, c, ctl);
        };
        match step(kept, terms, j, self.spread(j), direction) {
            Ok(f) => Ok(f),
            Err(e) if direction == Direction::Remove => {
                ctl.warn(format!(
                    "{e}; refactorized layer {} from the sums instead",
                    self.hp.layers[j]
                ));
                self.factor_of_sums(j, s_after, a_after, c, ctl)
            }
            Err(e) => Err(e),
        }
    }

    /// Adds (`sign = 1`) or removes (`sign = −1`) an edit's terms from the sums.
    pub(crate) fn accumulate(&mut self, terms: &EditTerms, sign: f64) {
        for (r_per_layer, k_per_layer) in terms.residuals.iter().zip(&terms.keys) {
            for j in 0..self.hp.layers.len() {
                let (r, k) = (&r_per_layer[j], &k_per_layer[j]);
                super::linalg::add_outer(&mut self.s[j], sign, r, k);
                super::linalg::add_outer(&mut self.a[j], sign, k, k);
            }
        }
    }
}

/// One layer's D4S update `Δ = (S / spread) (A + λ C)⁻¹` from the running sums `S = Σ r kᵀ`
/// (`[d_model, d_ff]`) and `A = Σ k kᵀ` (`[d_ff, d_ff]`) and the key second moment `C`, by a
/// Cholesky solve (no inverse is formed).
pub fn d4s_delta(
    s: &Mat<f64>,
    a: &Mat<f64>,
    c: &Mat<f64>,
    lambda: f64,
    spread: f64,
    warn: &dyn Fn(String),
) -> Result<Mat<f64>> {
    let num = Mat::from_fn(s.nrows(), s.ncols(), |i, j| s[(i, j)] / spread);
    solve_spd_right_regularized(num.as_ref(), plus_scaled(a, lambda, c).as_ref(), warn)
}

/// A factor moved by layer `j`'s keys and residuals of a step, in request order.
fn step(
    f: &FactoredUpdate,
    terms: &EditTerms,
    j: usize,
    spread: f64,
    direction: Direction,
) -> Result<FactoredUpdate> {
    let keys: Vec<&[f64]> = terms.keys.iter().map(|k| k[j].as_slice()).collect();
    let residuals: Vec<&[f64]> = terms.residuals.iter().map(|r| r[j].as_slice()).collect();
    f.stepped(&keys, &residuals, spread, direction)
}

/// `S + Σ r kᵀ` and `A + Σ k kᵀ` over a step's requests, for layer `j`, accumulated one outer
/// product at a time exactly as [`D4s::accumulate`] does, so a session rebuilt from recorded
/// terms reproduces the same sums bit for bit.
fn with_step(s: &Mat<f64>, a: &Mat<f64>, terms: &EditTerms, j: usize) -> (Mat<f64>, Mat<f64>) {
    let (mut s, mut a) = (s.clone(), a.clone());
    for (r, k) in terms.residuals.iter().zip(&terms.keys) {
        super::linalg::add_outer(&mut s, 1.0, &r[j], &k[j]);
        super::linalg::add_outer(&mut a, 1.0, &k[j], &k[j]);
    }
    (s, a)
}

impl Editor for D4s {
    fn method(&self) -> Method {
        Method::D4s
    }

    fn hparams(&self) -> &HParams {
        &self.hp
    }

    /// Every residual is measured on W0 (the model is re-based before each step).
    fn targets_on_unedited_model(&self) -> bool {
        true
    }

    fn statistics_layers(&self) -> Vec<usize> {
        self.hp.layers.clone()
    }

    fn undo_reach(&self) -> UndoReach {
        UndoReach::AnyStep
    }

    /// The sums `S_j`, `A_j` (f64, exact) and the edit count.
    fn snapshot(&self) -> Result<super::EditorSnapshot> {
        let mut tensors = Vec::new();
        for (j, (s, a)) in self.s.iter().zip(&self.a).enumerate() {
            tensors.push((format!("d4s.s.{j}"), exact_tensor_from_mat(s.as_ref())?));
            tensors.push((format!("d4s.a.{j}"), exact_tensor_from_mat(a.as_ref())?));
        }
        // The kept factors too, so a resumed run goes on with the same bits as one never stopped.
        for (j, f) in self.factors.iter().enumerate() {
            tensors.push((format!("d4s.l.{j}"), exact_tensor_from_mat(f.l.as_ref())?));
            tensors.push((
                format!("d4s.delta.{j}"),
                exact_tensor_from_mat(f.delta.as_ref())?,
            ));
        }
        Ok(super::EditorSnapshot {
            tensors,
            meta: serde_json::json!({
                "method": "d4s",
                "n_edits": self.n_edits,
                "factored": !self.factors.is_empty(),
            }),
        })
    }

    /// The sums of a checkpoint or of a journal ([`Editor::fold_terms`]); the weights follow
    /// from them, computed as the edits computed them.
    fn restore(
        &mut self,
        model: &mut Model,
        cx: &mut EditContext,
        snap: &super::EditorSnapshot,
    ) -> Result<()> {
        snap.check_method(Method::D4s)?;
        let n_edits = snap.meta["n_edits"]
            .as_u64()
            .ok_or_else(|| Error::Input("D4S snapshot without an edit count".into()))?;
        self.hp.validate(&model.config)?;
        let (d_out, d_in) = (model.config.d_model, model.config.d_ff);
        let mut s = Vec::new();
        let mut a = Vec::new();
        let mut factors = Vec::new();
        // An editor that never edited has empty sums; a snapshot of one holds no tensors.
        if !snap.tensors.is_empty() {
            for j in 0..self.hp.layers.len() {
                s.push(snap.matrix(&format!("d4s.s.{j}"), d_out, d_in)?);
                a.push(snap.matrix(&format!("d4s.a.{j}"), d_in, d_in)?);
            }
        }
        let factored = snap.meta["factored"].as_bool().unwrap_or(false);
        if factored && self.hp.d4s_solve == D4sSolve::Update {
            for j in 0..self.hp.layers.len() {
                factors.push(FactoredUpdate {
                    l: snap.matrix(&format!("d4s.l.{j}"), d_in, d_in)?,
                    delta: snap.matrix(&format!("d4s.delta.{j}"), d_out, d_in)?,
                });
            }
        }
        self.s = s;
        self.a = a;
        self.factors = factors;
        self.n_edits = n_edits as usize;
        if self.s.is_empty() {
            return Ok(());
        }
        if self.factors.is_empty() {
            self.commit_sums(model, cx, None)
        } else {
            self.commit_factors(model)
        }
    }

    fn fold_terms(
        &self,
        model: &mut Model,
        cx: &mut EditContext,
        ops: &[super::SignedTerms],
    ) -> Result<Option<super::EditorSnapshot>> {
        if ops
            .iter()
            .any(|(t, _)| t.keys.iter().any(|k| k.len() != self.hp.layers.len()))
        {
            return Err(Error::Input(
                "a recorded D4S edit was made with different layers".into(),
            ));
        }
        let mut folded = D4s {
            hp: self.hp.clone(),
            templates: None,
            anchor: None,
            s: self.s.clone(),
            a: self.a.clone(),
            factors: self.factors.clone(),
            n_edits: self.n_edits,
        };
        folded.init_state(model);
        let covs = match self.hp.d4s_solve {
            D4sSolve::Update if !ops.is_empty() => {
                cx.stats
                    .second_moments(model, &self.hp.layers.clone(), &cx.ctl)?
            }
            _ => Vec::new(),
        };
        // One outer product at a time in journal order, as the edits and undos added them, so
        // the sums come out bit-identical to the original run's; the kept factors move step by
        // step as the edits and undos moved them.
        for (t, sign) in ops {
            folded.accumulate(t, *sign);
            if !covs.is_empty() {
                let direction = if *sign > 0.0 {
                    Direction::Add
                } else {
                    Direction::Remove
                };
                folded.factors = (0..self.hp.layers.len())
                    .map(|j| {
                        let sums = (&folded.s[j], &folded.a[j]);
                        folded.factor_after(j, t, direction, sums, &covs[j], &cx.ctl)
                    })
                    .collect::<Result<_>>()?;
            }
            if *sign > 0.0 {
                folded.n_edits += t.keys.len();
            } else {
                folded.n_edits = folded.n_edits.saturating_sub(t.keys.len());
            }
        }
        folded.snapshot().map(Some)
    }

    fn state_bytes(&self) -> usize {
        8 * (self.s.iter().map(|m| m.nrows() * m.ncols()).sum::<usize>()
            + self.a.iter().map(|m| m.nrows() * m.ncols()).sum::<usize>())
            + self
                .factors
                .iter()
                .map(FactoredUpdate::bytes)
                .sum::<usize>()
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
        self.init_state(model);
        let layers = self.hp.layers.clone();
        let z_layer = self.hp.last_layer();
        let mut timer = Stopwatch::start();
        let mut timings = Timings::default();
        cx.ctl.report(Progress::Phase(Phase::Templates));
        let templates = cx.templates(&mut self.templates, model, &self.hp)?;
        timings.templates = timer.lap();

        // Re-base the edited layers on W0 for the whole computation.
        let live: Vec<(usize, Tensor)> = layers
            .iter()
            .map(|&l| Ok((l, model.edit_weight(l)?.clone())))
            .collect::<Result<_>>()?;
        let w0: Vec<(usize, Tensor)> = layers
            .iter()
            .map(|&l| Ok((l, model.original_edit_weight(l)?.clone())))
            .collect::<Result<_>>()?;
        restore_weights(model, &w0)?;
        // Out of `self` for the computation's closure, which reads the sums.
        let mut anchor = self.anchor.take();

        type Computed = (
            Vec<(usize, Tensor)>,
            Vec<(Mat<f64>, Mat<f64>)>,
            Vec<FactoredUpdate>,
            EditTerms,
            Vec<super::TargetSummary>,
        );
        let computed = (|| -> Result<Computed> {
            cx.ctl.report(Progress::Phase(Phase::Target));
            let targets = value_targets(
                model,
                requests,
                &templates.flat(),
                &self.hp,
                &mut anchor,
                cx,
            )?;
            let z: Vec<Vec<f64>> = targets.iter().map(|t| t.sites[0].target()).collect();
            let h0 = bare_activations(model, requests, &[(z_layer, Site::BlockOut)])?.remove(0);
            timings.target += timer.lap();
            // C is read only from here on: the targets do not need it, so a first edit that
            // arrives while the statistics are gathered in the background optimizes its targets
            // beside them instead of after them.
            let covs = cx.stats.second_moments(model, &layers, &cx.ctl)?;
            timings.statistics = timer.lap();
            let mut terms = EditTerms {
                residuals: vec![Vec::new(); requests.len()],
                keys: vec![Vec::new(); requests.len()],
            };
            let mut new_weights = Vec::new();
            let mut sums = Vec::new();
            let mut factors = Vec::new();
            for (j, &layer) in layers.iter().enumerate() {
                cx.ctl.check()?;
                cx.ctl.report(Progress::Phase(Phase::Keys));
                // Keys see the lower layers already at W0 + Δ^(t) (order matters).
                let keys = request_keys(
                    model,
                    requests,
                    &templates,
                    &[layer],
                    KeyAverage::GroupMeans,
                )?;
                let h = match self.hp.d4s_residual_mode {
                    ResidualMode::PerLayer if j > 0 => {
                        bare_activations(model, requests, &[(z_layer, Site::BlockOut)])?.remove(0)
                    }
                    _ => h0.clone(),
                };
                for (i, per_layer) in keys.into_iter().enumerate() {
                    terms.keys[i].push(per_layer.into_iter().next().expect("one layer"));
                    terms.residuals[i].push(z[i].iter().zip(&h[i]).map(|(a, b)| a - b).collect());
                }
                timings.keys += timer.lap();
                cx.ctl.report(Progress::Phase(Phase::Solve));
                let (s, a) = with_step(&self.s[j], &self.a[j], &terms, j);
                let w = match self.hp.d4s_solve {
                    D4sSolve::Fresh => self.weight_for(model, j, &s, &a, &covs[j], &cx.ctl)?,
                    D4sSolve::Update => {
                        let f = self.factor_after(
                            j,
                            &terms,
                            Direction::Add,
                            (&s, &a),
                            &covs[j],
                            &cx.ctl,
                        )?;
                        let w = self.weight_with(model, j, &f.delta)?;
                        factors.push(f);
                        w
                    }
                };
                model.set_edit_weight(layer, w.clone())?;
                new_weights.push((layer, w));
                sums.push((s, a));
                timings.solve += timer.lap();
            }
            Ok((
                new_weights,
                sums,
                factors,
                terms,
                targets.iter().map(|t| t.summary()).collect(),
            ))
        })();
        restore_weights(model, &live)?;
        self.anchor = anchor;
        let (new_weights, sums, factors, terms, summaries) = computed?;
        cx.ctl.report(Progress::Phase(Phase::Apply));
        let (report, _previous, sha) =
            commit_updates(model, new_weights, self.hp.max_update_ratio)?;
        // Only an accepted step enters the history.
        for (j, (s, a)) in sums.into_iter().enumerate() {
            self.s[j] = s;
            self.a[j] = a;
        }
        if !factors.is_empty() {
            self.factors = factors;
        }
        self.n_edits += requests.len();
        timings.total = timings.statistics
            + timings.templates
            + timings.target
            + timings.keys
            + timings.solve
            + timer.lap();
        Ok(EditOutcome {
            method: Method::D4s,
            layers: report,
            targets: summaries,
            timings,
            weights_sha256: sha,
            undo: UndoRecord::Terms(terms),
        })
    }

    fn undo(&mut self, model: &mut Model, cx: &mut EditContext, record: &UndoRecord) -> Result<()> {
        let UndoRecord::Terms(terms) = record else {
            return Err(Error::Input(
                "this undo record does not belong to D4S".into(),
            ));
        };
        if terms.keys.iter().any(|k| k.len() != self.hp.layers.len()) {
            return Err(Error::Input(
                "the undo record was made with different layers".into(),
            ));
        }
        self.init_state(model);
        self.accumulate(terms, -1.0);
        match self.commit_sums(model, cx, Some((terms, Direction::Remove))) {
            Ok(()) => {
                self.n_edits = self.n_edits.saturating_sub(terms.keys.len());
                Ok(())
            }
            Err(e) => {
                self.accumulate(terms, 1.0);
                Err(e)
            }
        }
    }
}

impl D4s {
    /// Sets every edited layer to the weights the current sums give: after `moved` (a step just
    /// taken out of the sums, whose factor then moves by a downdate), or from the sums alone
    /// (`None`: a restore).
    fn commit_sums(
        &mut self,
        model: &mut Model,
        cx: &mut EditContext,
        moved: Option<(&EditTerms, Direction)>,
    ) -> Result<()> {
        let covs = cx
            .stats
            .second_moments(model, &self.hp.layers.clone(), &cx.ctl)?;
        let mut weights = Vec::new();
        let mut factors = Vec::new();
        for (j, c) in covs.iter().enumerate() {
            let (s, a) = (&self.s[j], &self.a[j]);
            let w = match self.hp.d4s_solve {
                D4sSolve::Fresh => self.weight_for(model, j, s, a, c, &cx.ctl)?,
                D4sSolve::Update => {
                    let f = match moved {
                        Some((t, d)) => self.factor_after(j, t, d, (s, a), c, &cx.ctl)?,
                        None => self.factor_of_sums(j, s, a, c, &cx.ctl)?,
                    };
                    let w = self.weight_with(model, j, &f.delta)?;
                    factors.push(f);
                    w
                }
            };
            weights.push((self.hp.layers[j], w));
        }
        commit_updates(model, weights, self.hp.max_update_ratio)?;
        if !factors.is_empty() {
            self.factors = factors;
        }
        Ok(())
    }

    /// Sets every edited layer to `W0 + Δ` of its kept factor (a restored checkpoint's).
    fn commit_factors(&self, model: &mut Model) -> Result<()> {
        let weights = (0..self.hp.layers.len())
            .map(|j| {
                Ok((
                    self.hp.layers[j],
                    self.weight_with(model, j, &self.factors[j].delta)?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        commit_updates(model, weights, self.hp.max_update_ratio)?;
        Ok(())
    }

    /// Re-enters recorded edits into the sums without recomputing them (a journal's), then sets
    /// the weights: [`Editor::fold_terms`] and [`Editor::restore`] in one call.
    pub fn restore_history(
        &mut self,
        model: &mut Model,
        cx: &mut EditContext,
        history: &[EditTerms],
    ) -> Result<()> {
        let ops: Vec<super::SignedTerms> = history.iter().map(|t| (t.clone(), 1.0)).collect();
        let snap = self
            .fold_terms(model, cx, &ops)?
            .expect("D4S folds its terms");
        self.restore(model, cx, &snap)
    }
}
