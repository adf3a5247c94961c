//! The editing engine: one [`Editor`] trait, one file per method, and the shared machinery
//! (requests, context templates, keys, target vectors, second-moment statistics, solves).
//!
//! Every editor changes the model through [`commit_updates`], which runs the common safety gate:
//! an update with NaN/Inf entries, or whose Frobenius norm exceeds `max_update_ratio · ‖W0‖`, is
//! rejected and the weights are left untouched.

pub mod alphaedit;
pub mod d4s;
pub mod encore;
pub mod factored;
pub mod ft;
pub mod grace;
pub mod hparams;
pub mod keys;
pub mod linalg;
pub mod memit;
pub mod norm_anchor;
pub mod pmet;
pub mod presets;
pub mod request;
pub mod rome;
pub mod spread;
pub mod stats;
pub mod target;
pub mod target_cache;
pub mod templates;
pub mod ultraedit;

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

pub use hparams::HParams;
pub use request::{EditRequest, Probe};
pub use stats::{CorpusSpec, StatsCache, StatsConfig};
pub use target_cache::TargetCache;

use crate::error::{Error, Result};
use crate::model::{matrix_norms, Model};

/// The editing methods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum Method {
    #[default]
    #[serde(rename = "d4s", alias = "D4S")]
    D4s,
    #[serde(rename = "rome", alias = "ROME")]
    Rome,
    #[serde(rename = "memit", alias = "MEMIT")]
    Memit,
    #[serde(rename = "pmet", alias = "PMET")]
    Pmet,
    #[serde(rename = "alphaedit", alias = "AlphaEdit")]
    AlphaEdit,
    #[serde(rename = "ft-l", alias = "FT-L", alias = "ft")]
    FtL,
    #[serde(rename = "ft-m", alias = "FT-M")]
    FtM,
    #[serde(rename = "grace", alias = "GRACE")]
    Grace,
    #[serde(rename = "ultraedit", alias = "UltraEdit", alias = "ULTRAEDIT")]
    UltraEdit,
    #[serde(rename = "encore", alias = "ENCORE")]
    Encore,
}

impl Method {
    pub const ALL: [Method; 10] = [
        Method::D4s,
        Method::Rome,
        Method::Memit,
        Method::Pmet,
        Method::AlphaEdit,
        Method::FtL,
        Method::FtM,
        Method::Grace,
        Method::UltraEdit,
        Method::Encore,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Method::D4s => "d4s",
            Method::Rome => "rome",
            Method::Memit => "memit",
            Method::Pmet => "pmet",
            Method::AlphaEdit => "alphaedit",
            Method::FtL => "ft-l",
            Method::FtM => "ft-m",
            Method::Grace => "grace",
            Method::UltraEdit => "ultraedit",
            Method::Encore => "encore",
        }
    }

    /// Display name as in the papers.
    pub fn label(self) -> &'static str {
        match self {
            Method::D4s => "D4S",
            Method::Rome => "ROME",
            Method::Memit => "MEMIT",
            Method::Pmet => "PMET",
            Method::AlphaEdit => "AlphaEdit",
            Method::FtL => "FT-L",
            Method::FtM => "FT-M",
            Method::Grace => "GRACE",
            Method::UltraEdit => "UltraEdit",
            Method::Encore => "ENCORE",
        }
    }

    /// Whether the method needs the key second moment C (and so a statistics pass).
    pub fn needs_stats(self, hp: &HParams) -> bool {
        match self {
            Method::D4s | Method::Memit | Method::Pmet | Method::AlphaEdit | Method::Encore => true,
            Method::Rome => hp.mom2_adjustment,
            Method::FtL | Method::FtM | Method::Grace | Method::UltraEdit => false,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Method {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let k = s.trim().to_ascii_lowercase().replace('_', "-");
        Ok(match k.as_str() {
            "d4s" => Method::D4s,
            "rome" => Method::Rome,
            "memit" => Method::Memit,
            "pmet" => Method::Pmet,
            "alphaedit" | "alpha-edit" => Method::AlphaEdit,
            "ft-l" | "ft" | "ftl" => Method::FtL,
            "ft-m" | "ftm" => Method::FtM,
            "grace" => Method::Grace,
            "ultraedit" | "ultra-edit" => Method::UltraEdit,
            "encore" => Method::Encore,
            _ => {
                return Err(Error::Input(format!(
                    "unknown method {s:?} (choose from {})",
                    Method::ALL.map(Method::name).join(", ")
                )))
            }
        })
    }
}

/// A phase of an edit, for progress display.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    Statistics,
    Templates,
    Target,
    Keys,
    Solve,
    Apply,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Progress {
    Phase(Phase),
    /// One step of a target optimization (`step` of `of`).
    TargetStep {
        step: usize,
        of: usize,
        loss: f64,
        prob: f64,
    },
    /// Statistics pass: tokens done of total.
    Tokens {
        done: usize,
        total: usize,
    },
    /// Something the user should know (the edit went ahead).
    Warning(String),
}

/// Cancellation and progress reporting for a running edit.
#[derive(Default, Clone, Copy)]
pub struct EditControl<'a> {
    pub cancel: Option<&'a AtomicBool>,
    pub progress: Option<&'a (dyn Fn(Progress) + Sync)>,
}

impl EditControl<'_> {
    pub fn cancelled(&self) -> bool {
        self.cancel.is_some_and(|c| c.load(Ordering::Relaxed))
    }

    pub fn report(&self, p: Progress) {
        if let Some(f) = self.progress {
            f(p);
        }
    }

    pub fn warn(&self, message: String) {
        self.report(Progress::Warning(message));
    }

    pub fn check(&self) -> Result<()> {
        if self.cancelled() {
            Err(Error::Cancelled)
        } else {
            Ok(())
        }
    }
}

/// What an edit did to one layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerDelta {
    pub layer: usize,
    /// ‖ΔW‖₁ and ‖ΔW‖_F of this step's change.
    pub delta_l1: f64,
    pub delta_fro: f64,
    /// ‖W‖₁ and ‖W‖_F after the step.
    pub weight_l1: f64,
    pub weight_fro: f64,
    /// ‖W − W0‖₁ and ‖W − W0‖_F after the step (the accumulated change).
    pub total_l1: f64,
    pub total_fro: f64,
    pub numel: usize,
}

/// Target optimization summary for one request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetSummary {
    pub prob_initial: f64,
    pub prob_final: f64,
    pub loss: f64,
    pub steps: usize,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Timings {
    pub statistics: f64,
    pub templates: f64,
    pub target: f64,
    pub keys: f64,
    pub solve: f64,
    pub total: f64,
}

impl Timings {
    /// Closes the step's timings: the total is the phases plus the `last_lap` after them.
    pub fn finish(&mut self, last_lap: f64) {
        self.total =
            self.statistics + self.templates + self.target + self.keys + self.solve + last_lap;
    }

    /// The share of one request in a step of `n` (the step's phases are timed as a whole).
    pub fn per_request(&self, n: usize) -> Timings {
        let n = n.max(1) as f64;
        Timings {
            statistics: self.statistics / n,
            templates: self.templates / n,
            target: self.target / n,
            keys: self.keys / n,
            solve: self.solve / n,
            total: self.total / n,
        }
    }
}

/// The per-edit terms of an editor whose state is a sum over its edits (D4S's outer products
/// `r kᵀ` and `k kᵀ`): enough to remove the edit again exactly, and what a session journals so
/// that the state is rebuilt without recomputing any edit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EditTerms {
    /// Residuals `r = z − h` at the last edited layer, per request (outer) and edited layer
    /// (inner; the same vector in every layer unless `d4s_residual_mode = per_layer`).
    pub residuals: Vec<Vec<Vec<f64>>>,
    /// Keys `k_{i,j}` per request (outer) and edited layer (inner).
    pub keys: Vec<Vec<Vec<f64>>>,
}

/// An editor's state across edits, for checkpoints: named tensors (f64 sums keep their exact
/// bits in f64 tensors) and small exact values in `meta` (integers, strings; no floats, which
/// JSON would not round-trip bit for bit).
#[derive(Debug, Clone, Default)]
pub struct EditorSnapshot {
    pub tensors: Vec<(String, Tensor)>,
    pub meta: serde_json::Value,
}

impl EditorSnapshot {
    /// The tensor called `name`.
    pub fn tensor(&self, name: &str) -> Result<&Tensor> {
        self.tensors
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t)
            .ok_or_else(|| Error::Input(format!("the editor snapshot has no tensor {name:?}")))
    }

    /// Refuses a snapshot that another method's editor took (each writes its name in `meta`).
    pub fn check_method(&self, method: Method) -> Result<()> {
        if self.meta.get("method").and_then(|m| m.as_str()) == Some(method.name()) {
            return Ok(());
        }
        let label = method.label();
        let article = if label.starts_with(['A', 'E', 'I', 'O', 'U']) {
            "an"
        } else {
            "a"
        };
        Err(Error::Input(format!(
            "this snapshot is not {article} {label} editor's"
        )))
    }

    /// The f64 matrix called `name`, checked against the expected shape.
    pub fn matrix(&self, name: &str, rows: usize, cols: usize) -> Result<faer::Mat<f64>> {
        let t = self.tensor(name)?;
        if t.dims() != [rows, cols] || t.dtype() != candle_core::DType::F64 {
            return Err(Error::Input(format!(
                "snapshot tensor {name:?} is {:?} {:?}, expected [{rows}, {cols}] f64",
                t.dtype(),
                t.dims()
            )));
        }
        linalg::mat_from_tensor(t)
    }
}

/// How to take a step back.
#[derive(Debug, Clone)]
pub enum UndoRecord {
    /// Put these (pre-edit) weights back.
    Weights(Vec<(usize, Tensor)>),
    /// Subtract this step's terms from the running sums (exact).
    Terms(EditTerms),
    /// Restore weights and remove the step's keys from the editor's key sum (AlphaEdit's
    /// preserved keys, ENCORE's previous edits).
    WeightsAndKeys {
        weights: Vec<(usize, Tensor)>,
        keys: Vec<Vec<Vec<f64>>>,
    },
    /// Restore the codebook as it was.
    Grace(grace::Codebook),
    /// Restore the weights and the lifelong statistics as they were before the step.
    UltraEdit {
        weights: Vec<(usize, Tensor)>,
        moments: Vec<ultraedit::Moments>,
    },
}

/// Which steps an editor's undo takes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UndoReach {
    /// Any live step, exactly (the state is a sum of per-edit terms).
    AnyStep,
    /// Only the most recent step (its pre-edit weights are put back).
    LatestStep,
}

/// `+1` for an applied edit's terms, `−1` for an undone one's, in journal order.
pub type SignedTerms = (EditTerms, f64);

impl UndoRecord {
    /// The step's terms, when the editor's state is a sum of them (what a journal records).
    pub fn terms(&self) -> Option<&EditTerms> {
        match self {
            UndoRecord::Terms(t) => Some(t),
            _ => None,
        }
    }

    /// Bytes held by the record.
    pub fn bytes(&self) -> usize {
        let weights =
            |w: &[(usize, Tensor)]| w.iter().map(|(_, t)| t.elem_count() * 4).sum::<usize>();
        match self {
            UndoRecord::Weights(w) => weights(w),
            UndoRecord::Terms(t) => {
                8 * (t.residuals.iter().flatten().map(Vec::len).sum::<usize>()
                    + t.keys.iter().flatten().map(Vec::len).sum::<usize>())
            }
            UndoRecord::WeightsAndKeys { weights: w, keys } => {
                weights(w) + 8 * keys.iter().flatten().map(Vec::len).sum::<usize>()
            }
            UndoRecord::Grace(c) => c.bytes(),
            UndoRecord::UltraEdit {
                weights: w,
                moments,
            } => weights(w) + moments.iter().map(|m| 16 * m.mean.len()).sum::<usize>(),
        }
    }
}

/// The result of one edit step.
#[derive(Debug, Clone)]
pub struct EditOutcome {
    pub method: Method,
    pub layers: Vec<LayerDelta>,
    pub targets: Vec<TargetSummary>,
    pub timings: Timings,
    /// SHA-256 over the f32 bytes of every changed matrix after the step (layer order).
    pub weights_sha256: String,
    pub undo: UndoRecord,
}

/// Everything an editor may use besides the model.
pub struct EditContext<'a> {
    pub stats: &'a mut StatsCache,
    /// Targets already optimized on the unedited model (`None`: always optimize).
    pub targets: Option<&'a mut TargetCache>,
    /// Facts to optimize this step's target with, when a driver knows them in advance (see
    /// [`TargetGroup`]); `None` in the TUI and in sessions, which edit as facts arrive.
    pub target_group: Option<TargetGroup<'a>>,
    pub ctl: EditControl<'a>,
}

/// A step's single fact and the facts around it in a known stream (bench's chunks of
/// `target_batch` steps), whose targets may be optimized in one batched pass (spec §1.7).
///
/// It is used only where every target of the group is computed on the unedited model — D4S
/// measures each residual on W0, and the single protocol resets the model before each case — and
/// a [`TargetCache`] keeps the others' targets for their own steps. The pass is keyed by the whole
/// group, so each fact's target is the same bits whichever of the group's steps computed it (a
/// resumed run recomputes the group and gets what the uninterrupted one had).
#[derive(Debug, Clone, Copy)]
pub struct TargetGroup<'a> {
    pub requests: &'a [EditRequest],
    /// Where this step's request is in `requests`.
    pub position: usize,
}

impl EditContext<'_> {
    /// The context templates of an editor (kept in its `slot`): the fixed list of its
    /// hyperparameters, else samples of the unedited model shared through the statistics cache.
    pub fn templates(
        &mut self,
        slot: &mut Option<templates::ContextTemplates>,
        model: &mut Model,
        hp: &HParams,
    ) -> Result<templates::ContextTemplates> {
        templates::ensure(slot, model, hp, &mut self.stats.templates)
    }
}

/// Facts about an editor's state that a run records beside each edit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EditorReport {
    /// Rank of AlphaEdit's null-space projector per edited layer (hyperparameter layer order):
    /// how many directions of key space an update may still use. Depends on the covariance's
    /// scale through the absolute eigenvalue threshold.
    pub projector_rank: Vec<usize>,
}

/// An editing method. `apply` writes a step of requests into the model; on error the model is
/// left as it was.
pub trait Editor: Send {
    fn method(&self) -> Method;
    fn hparams(&self) -> &HParams;
    fn apply(
        &mut self,
        model: &mut Model,
        cx: &mut EditContext,
        requests: &[EditRequest],
    ) -> Result<EditOutcome>;
    /// Takes back a step given its record. D4S removes any step exactly; the others restore the
    /// weights saved with the step (meaningful for the most recent step).
    fn undo(&mut self, model: &mut Model, cx: &mut EditContext, record: &UndoRecord) -> Result<()>;
    /// Bytes of state kept across edits (not counting the model).
    fn state_bytes(&self) -> usize {
        0
    }

    /// The layers whose key statistics C this editor reads (none by default), so they can be
    /// gathered before the first edit, e.g. while a TUI user types.
    fn statistics_layers(&self) -> Vec<usize> {
        Vec::new()
    }

    /// Whether every target this editor optimizes is computed on the unedited model, whatever
    /// edits came before (D4S), so a driver may optimize upcoming facts' targets ahead in one
    /// batched pass ([`TargetGroup`]).
    fn targets_on_unedited_model(&self) -> bool {
        false
    }

    /// What the editor can say about its own state for a run's records (empty by default).
    fn report(&self) -> EditorReport {
        EditorReport::default()
    }

    /// What this editor keeps across edits besides the model's weights, for a checkpoint. Most
    /// methods keep nothing (their edits live in the weights).
    fn snapshot(&self) -> Result<EditorSnapshot> {
        Ok(EditorSnapshot::default())
    }

    /// The one way editor state is put back: a [`Editor::snapshot`] of an editor with the same
    /// hyperparameters (a checkpoint's), or one [`Editor::fold_terms`] made from a journal. The
    /// model's edited weights are those that went with the state; an editor whose weights follow
    /// from its state (D4S) sets them from it, bit for bit what the edits had set.
    fn restore(
        &mut self,
        _model: &mut Model,
        _cx: &mut EditContext,
        snap: &EditorSnapshot,
    ) -> Result<()> {
        if snap.tensors.is_empty() && snap.meta.is_null() {
            Ok(())
        } else {
            Err(Error::Input(format!(
                "{} keeps no state across edits, but this snapshot holds some (another method's?)",
                self.method().label()
            )))
        }
    }

    /// Which steps [`Editor::undo`] takes back.
    fn undo_reach(&self) -> UndoReach {
        UndoReach::LatestStep
    }

    /// This editor's state with journaled terms added to it (applied `+1`, undone `−1`, in
    /// journal order), for an editor whose state is a sum of per-edit terms; `None` for the
    /// others, whose journaled edits are replayed instead.
    fn fold_terms(
        &self,
        _model: &mut Model,
        _cx: &mut EditContext,
        _ops: &[SignedTerms],
    ) -> Result<Option<EditorSnapshot>> {
        Ok(None)
    }
}

/// Builds the editor for `hp.method`.
pub fn new_editor(hp: HParams) -> Box<dyn Editor> {
    match hp.method {
        Method::D4s => Box::new(d4s::D4s::new(hp)),
        Method::Rome => Box::new(rome::Rome::new(hp)),
        Method::Memit => Box::new(memit::Memit::new(hp)),
        Method::Pmet => Box::new(pmet::Pmet::new(hp)),
        Method::AlphaEdit => Box::new(alphaedit::AlphaEdit::new(hp)),
        Method::FtL | Method::FtM => Box::new(ft::FineTune::new(hp)),
        Method::Grace => Box::new(grace::Grace::new(hp)),
        Method::UltraEdit => Box::new(ultraedit::UltraEdit::new(hp)),
        Method::Encore => Box::new(encore::Encore::new(hp)),
    }
}

/// What [`commit_updates`] reports: per-layer norms, the weights that were replaced, and the
/// SHA-256 of the new weights.
pub type Committed = (Vec<LayerDelta>, Vec<(usize, Tensor)>, String);

/// Checks new weights against the safety gate, then installs them. Returns the per-layer report
/// and the weights they replaced. Nothing changes if any layer fails the gate.
pub fn commit_updates(
    model: &mut Model,
    new_weights: Vec<(usize, Tensor)>,
    max_update_ratio: f64,
) -> Result<Committed> {
    // Round to the runtime's dtype first, so the report, the hash and the gate describe the
    // matrices the model will actually hold.
    let new_weights = new_weights
        .into_iter()
        .map(|(l, w)| Ok((l, w.to_dtype(model.dtype())?)))
        .collect::<Result<Vec<_>>>()?;
    let mut reports = Vec::new();
    for (layer, w_new) in &new_weights {
        let w_new = &w_new.to_dtype(DType::F32)?;
        let w_old = &model.edit_weight_f32(*layer)?;
        let w0 = &model.original_edit_weight_f32(*layer)?;
        let delta = (w_new - w_old)?;
        let (d_l1, d_fro) = matrix_norms(&delta)?;
        let (w0_l1, w0_fro) = matrix_norms(w0)?;
        let _ = w0_l1;
        if !d_l1.is_finite() || !d_fro.is_finite() {
            return Err(Error::Rejected(format!(
                "the update of layer {layer} contains NaN or infinite values; the weights are unchanged"
            )));
        }
        if d_fro > max_update_ratio * w0_fro {
            return Err(Error::Rejected(format!(
                "the update of layer {layer} has norm {d_fro:.3e}, more than {max_update_ratio} × the \
                 norm of the original matrix ({w0_fro:.3e}); the weights are unchanged \
                 (raise max_update_ratio to allow it)"
            )));
        }
        let (w_l1, w_fro) = matrix_norms(w_new)?;
        let (t_l1, t_fro) = matrix_norms(&(w_new - w0)?)?;
        reports.push(LayerDelta {
            layer: *layer,
            delta_l1: d_l1,
            delta_fro: d_fro,
            weight_l1: w_l1,
            weight_fro: w_fro,
            total_l1: t_l1,
            total_fro: t_fro,
            numel: w_new.elem_count(),
        });
    }
    let mut previous = Vec::new();
    let mut hasher = sha2::Sha256::default();
    for (layer, w_new) in new_weights {
        use sha2::Digest;
        let bytes: Vec<u8> = w_new
            .flatten_all()?
            .to_dtype(DType::F32)?
            .to_vec1::<f32>()?
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        hasher.update(&bytes);
        previous.push((layer, model.edit_weight(layer)?.clone()));
        model.set_edit_weight(layer, w_new)?;
    }
    use sha2::Digest;
    Ok((reports, previous, crate::util::hex(&hasher.finalize())))
}

/// Puts saved weights back (the `Weights` undo).
pub fn restore_weights(model: &mut Model, saved: &[(usize, Tensor)]) -> Result<()> {
    for (layer, w) in saved {
        model.set_edit_weight(*layer, w.clone())?;
    }
    Ok(())
}

/// The undo of the methods that only change weights (`UndoRecord::Weights`); `method` names the
/// editor in the error for a record of another kind.
pub fn undo_weights(model: &mut Model, record: &UndoRecord, method: &str) -> Result<()> {
    match record {
        UndoRecord::Weights(w) => restore_weights(model, w),
        _ => Err(Error::Input(format!(
            "this undo record does not belong to {method}"
        ))),
    }
}

/// Wall-clock timer for the phases of an edit.
pub struct Stopwatch(Instant);

impl Stopwatch {
    pub fn start() -> Self {
        Self(Instant::now())
    }

    /// Seconds since the last lap (or start).
    pub fn lap(&mut self) -> f64 {
        let now = Instant::now();
        let s = (now - self.0).as_secs_f64();
        self.0 = now;
        s
    }
}

#[cfg(test)]
mod tests;
