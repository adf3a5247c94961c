//! The edit runner: a model, an editor and (optionally) a session journal, with apply / undo /
//! replay / resume. The CLI commands and the TUI's worker all drive edits through it, so every
//! edit is journaled the same way.

use sha2::{Digest, Sha256};

use super::ahead::{Planner, TargetPass};
use super::journal::{self, Event, Session, SessionMeta};
use crate::edit::{
    new_editor, EditContext, EditControl, EditOutcome, EditRequest, Editor, HParams, Method,
    SignedTerms, StatsCache, TargetCache, TargetGroup, UndoReach, UndoRecord,
};
use crate::error::{Error, Result};
use crate::model::Model;

/// An applied step still in effect.
pub struct StepRecord {
    pub step: u64,
    pub requests: Vec<EditRequest>,
    pub outcome: EditOutcome,
    /// The batched pass its target came from, if it was optimized ahead ([`super::ahead`]).
    pub target_pass: Option<TargetPass>,
}

pub struct Runner {
    pub model: Model,
    pub editor: Box<dyn Editor>,
    pub stats: StatsCache,
    /// Targets optimized on the unedited model: trying another method on the same fact after
    /// an undo, or replaying from W0, reuses them.
    pub targets: TargetCache,
    pub session: Option<Session>,
    /// Live steps, oldest first.
    pub history: Vec<StepRecord>,
    /// Step numbers when there is no session to hand them out.
    next_step: u64,
    /// The batched target passes of queued facts ([`Runner::apply_queued`]).
    ahead: Planner,
}

/// Steps applied and not undone, in order.
pub fn live_steps(events: &[Event]) -> Vec<u64> {
    let mut live = Vec::new();
    for e in events {
        match e {
            Event::Applied { step, .. } => live.push(*step),
            Event::Undo { step, .. } => live.retain(|s| s != step),
            _ => {}
        }
    }
    live
}

/// How many steps the journal applied (undone ones included).
pub fn applied_steps(events: &[Event]) -> usize {
    events
        .iter()
        .filter(|e| matches!(e, Event::Applied { .. }))
        .count()
}

/// Requests queued but neither applied nor rejected, in queue order.
pub fn pending_requests(events: &[Event]) -> Vec<EditRequest> {
    let mut queue: Vec<EditRequest> = Vec::new();
    let mut done: Vec<EditRequest> = Vec::new();
    for e in events {
        match e {
            Event::Requested { requests, .. } => queue.extend(requests.iter().cloned()),
            Event::Applied { requests, .. } | Event::Rejected { requests, .. } => {
                done.extend(requests.iter().cloned())
            }
            _ => {}
        }
    }
    for d in done {
        if let Some(i) = queue.iter().position(|q| *q == d) {
            queue.remove(i);
        }
    }
    queue
}

/// SHA-256 over the f32 bytes of the given layers' edited matrices (layer order).
pub fn weights_sha256(model: &Model, layers: &[usize]) -> Result<String> {
    let mut h = Sha256::new();
    for &l in layers {
        let v = model.edit_weight_f32(l)?.flatten_all()?.to_vec1::<f32>()?;
        for x in v {
            h.update(x.to_le_bytes());
        }
    }
    Ok(crate::util::hex(&h.finalize()))
}

/// One journaled event as a replay re-executes it, handed to the replay's observer.
pub enum Replayed<'a> {
    /// A step applied again; `model` is the model right after it landed.
    Applied {
        /// The journal's step number.
        step: u64,
        requests: &'a [EditRequest],
        outcome: &'a EditOutcome,
        model: &'a Model,
    },
    /// The journal's step `step` taken back again.
    Undone { step: u64 },
}

/// What a replay did.
#[derive(Debug, Default)]
pub struct ReplayReport {
    pub steps: usize,
    pub undos: usize,
    /// Steps whose weights differed from the journal's record (none means bit-identical).
    pub mismatches: Vec<u64>,
}

impl Runner {
    pub fn new(model: Model, hp: HParams, stats: StatsCache) -> Self {
        Self {
            model,
            editor: new_editor(hp),
            stats,
            targets: TargetCache::new(),
            session: None,
            history: Vec::new(),
            next_step: 1,
            ahead: Planner::default(),
        }
    }

    /// Uses `targets` (e.g. one that keeps its targets on disk) for the edits' optimizations.
    pub fn with_targets(mut self, targets: TargetCache) -> Self {
        self.targets = targets;
        self
    }

    pub fn method(&self) -> Method {
        self.editor.method()
    }

    /// Starts a new journal under `root` for this runner.
    pub fn start_session(&mut self, root: &std::path::Path, name: &str) -> Result<()> {
        let meta = SessionMeta {
            format_version: journal::FORMAT_VERSION,
            d4s_version: env!("CARGO_PKG_VERSION").to_string(),
            name: name.to_string(),
            created: crate::util::now(),
            model: self.model.record(),
            method: self.editor.method(),
            hparams: self.editor.hparams().clone(),
            stats: self.stats.config.clone().pinned(self.model.config.d_ff),
            stats_corpus_id: self.stats.corpus_id()?,
        };
        self.session = Some(Session::create(root, meta)?);
        Ok(())
    }

    /// Switches the editing method (for the next edits) and journals the switch. The new editor
    /// starts with no history; D4S re-bases its layers on the loaded weights. Steps made with the
    /// previous editor can no longer be undone.
    pub fn set_editor(&mut self, hp: HParams) -> Result<()> {
        hp.validate(&self.model.config)?;
        if let Some(s) = &mut self.session {
            s.record_method(&hp)?;
        }
        self.editor = new_editor(hp);
        self.history.clear();
        self.ahead.forget();
        Ok(())
    }

    /// Applies one step and journals it (fsync'ed) before returning.
    pub fn apply(
        &mut self,
        requests: &[EditRequest],
        ctl: EditControl,
    ) -> Result<(u64, &EditOutcome)> {
        self.apply_in_pass(requests, None, ctl)
    }

    /// Applies one fact with `upcoming` queued behind it (in the order they will come): where
    /// the editor computes its targets on the unedited model, the fact's target is optimized in
    /// one batched pass with the queued facts' ([`super::ahead`]), whose steps then find theirs
    /// in the target cache. Journaled like [`Runner::apply`], with the pass.
    pub fn apply_queued(
        &mut self,
        request: &EditRequest,
        upcoming: &[EditRequest],
        ctl: EditControl,
    ) -> Result<(u64, &EditOutcome)> {
        let pass = self
            .ahead
            .plan(&self.model, self.editor.as_ref(), request, upcoming);
        self.apply_in_pass(std::slice::from_ref(request), pass, ctl)
    }

    /// Applies a step whose single fact's target comes from `pass` (a journal's record, or a
    /// plan), else optimized as the editor always does. A pass that fails is retried alone, so a
    /// fact is never lost to the facts queued behind it; the journal records the pass the step
    /// landed with (an editor may still optimize alone where the pass's conditions do not hold,
    /// e.g. on a model edited before it was loaded, and does so again on replay).
    pub fn apply_in_pass(
        &mut self,
        requests: &[EditRequest],
        pass: Option<TargetPass>,
        ctl: EditControl,
    ) -> Result<(u64, &EditOutcome)> {
        let pass = pass.filter(|_| requests.len() == 1);
        let mut result = self.try_apply(requests, pass.as_ref(), ctl);
        let mut used = pass;
        if matches!(&result, Err(e) if !matches!(e, Error::Cancelled)) && used.is_some() {
            used = None;
            result = self.try_apply(requests, None, ctl);
        }
        match result {
            Ok(outcome) => self.journal_applied(requests, outcome, used.as_ref()),
            Err(Error::Cancelled) => Err(Error::Cancelled),
            Err(e) => {
                if let Some(s) = &mut self.session {
                    s.record_rejected(requests, &e.to_string())?;
                }
                Err(e)
            }
        }
    }

    /// The editor's step, its single fact's target taken from `pass` where one is given.
    fn try_apply(
        &mut self,
        requests: &[EditRequest],
        pass: Option<&TargetPass>,
        ctl: EditControl,
    ) -> Result<EditOutcome> {
        let mut cx = EditContext {
            stats: &mut self.stats,
            targets: Some(&mut self.targets),
            target_group: pass.map(|p| TargetGroup {
                requests: &p.facts,
                position: p.position,
            }),
            ctl,
        };
        self.editor.apply(&mut self.model, &mut cx, requests)
    }

    /// Journals an applied step and keeps it in the history. The journal is the source of
    /// truth: an edit it does not hold is taken back, so the model and the journal agree.
    fn journal_applied(
        &mut self,
        requests: &[EditRequest],
        outcome: EditOutcome,
        pass: Option<&TargetPass>,
    ) -> Result<(u64, &EditOutcome)> {
        let step = match &mut self.session {
            Some(s) => match s.record_applied(requests, &outcome, pass) {
                Ok(step) => step,
                Err(e) => {
                    let mut cx = EditContext {
                        stats: &mut self.stats,
                        targets: Some(&mut self.targets),
                        target_group: None,
                        ctl: EditControl::default(),
                    };
                    let undone = self.editor.undo(&mut self.model, &mut cx, &outcome.undo);
                    return Err(Error::Input(format!(
                        "could not journal the edit ({e}); {}",
                        if undone.is_ok() {
                            "it was taken back and nothing else changed"
                        } else {
                            "and it could not be taken back"
                        }
                    )));
                }
            },
            None => self.next_step,
        };
        self.next_step = step + 1;
        self.history.push(StepRecord {
            step,
            requests: requests.to_vec(),
            outcome,
            target_pass: pass.cloned(),
        });
        Ok((step, &self.history.last().expect("just pushed").outcome))
    }

    /// Takes back a step. D4S removes any live step exactly; other methods can only take back the
    /// most recent one (restoring its pre-edit weights).
    pub fn undo(&mut self, step: Option<u64>) -> Result<u64> {
        let idx = match step {
            None => self
                .history
                .len()
                .checked_sub(1)
                .ok_or_else(|| Error::Input("nothing to undo".into()))?,
            Some(s) => self
                .history
                .iter()
                .position(|r| r.step == s)
                .ok_or_else(|| Error::Input(format!("step {s} is not live")))?,
        };
        let reach = self.editor.undo_reach();
        if reach == UndoReach::LatestStep && idx + 1 != self.history.len() {
            return Err(Error::Input(format!(
                "{} can only undo its most recent step; only D4S removes an older edit exactly",
                self.editor.method().label()
            )));
        }
        let record = self.history[idx].outcome.undo.clone();
        let mut cx = EditContext {
            stats: &mut self.stats,
            targets: Some(&mut self.targets),
            target_group: None,
            ctl: EditControl::default(),
        };
        self.editor.undo(&mut self.model, &mut cx, &record)?;
        let rec = self.history.remove(idx);
        if let Some(s) = &mut self.session {
            let layers: Vec<usize> = rec.outcome.layers.iter().map(|l| l.layer).collect();
            s.record_undo(rec.step, &weights_sha256(&self.model, &layers)?)?;
        }
        Ok(rec.step)
    }

    /// Re-executes journaled events (applies and undos, in order) on this runner, whose model must
    /// be the unedited base. With `verify`, each step's weights are compared with the journal's.
    /// `until` stops after that many applied steps.
    pub fn replay(
        &mut self,
        events: &[Event],
        until: Option<usize>,
        verify: bool,
        mut observe: impl FnMut(Replayed<'_>) -> Result<()>,
    ) -> Result<ReplayReport> {
        let mut report = ReplayReport::default();
        // Journal step numbers → this run's step numbers.
        let mut map = std::collections::HashMap::new();
        for e in events {
            match e {
                Event::Applied {
                    step,
                    requests,
                    weights_sha256,
                    target_pass,
                    ..
                } => {
                    if until.is_some_and(|u| report.steps >= u) {
                        break;
                    }
                    let (new_step, _) =
                        self.apply_in_pass(requests, target_pass.clone(), EditControl::default())?;
                    let outcome = &self.history.last().expect("just applied").outcome;
                    if verify && outcome.weights_sha256 != *weights_sha256 {
                        report.mismatches.push(*step);
                    }
                    observe(Replayed::Applied {
                        step: *step,
                        requests,
                        outcome,
                        model: &self.model,
                    })?;
                    map.insert(*step, new_step);
                    report.steps += 1;
                }
                Event::Undo { step, .. } => {
                    if let Some(&s) = map.get(step) {
                        self.undo(Some(s))?;
                        observe(Replayed::Undone { step: *step })?;
                        report.undos += 1;
                    }
                }
                Event::Method { hparams, .. } if verify => self.set_editor((**hparams).clone())?,
                _ => {}
            }
        }
        Ok(report)
    }

    /// Restores the state of a journal. When every applied step carries its terms (the editor's
    /// state is a sum of them, as D4S's is) and the editor folds them, the recorded terms go back
    /// in the original order (undos subtract at their place), which reproduces the state bit for
    /// bit without recomputing any edit; otherwise the journal is replayed. A target pass the
    /// last applied step was part of goes on for the facts queued after it ([`super::ahead`]).
    pub fn restore(&mut self, events: &[Event]) -> Result<ReplayReport> {
        let report = self.restore_steps(events)?;
        let last_pass = events.iter().rev().find_map(|e| match e {
            Event::Applied { target_pass, .. } => Some(target_pass.as_ref()),
            _ => None,
        });
        self.ahead.continue_after(last_pass.flatten());
        Ok(report)
    }

    fn restore_steps(&mut self, events: &[Event]) -> Result<ReplayReport> {
        if self.session.is_none() {
            return Err(Error::Input("restore needs an open session".into()));
        }
        if applied_steps(events) == 0 {
            // Nothing to restore: no statistics are gathered and no editor state is built.
            return Ok(ReplayReport::default());
        }
        let switches = events.iter().any(|e| matches!(e, Event::Method { .. }));
        let every_step_has_terms = events
            .iter()
            .all(|e| !matches!(e, Event::Applied { terms: None, .. }));
        if !switches && every_step_has_terms {
            let recorded = self.recorded_history(events)?;
            let mut cx = EditContext {
                stats: &mut self.stats,
                targets: Some(&mut self.targets),
                target_group: None,
                ctl: EditControl::default(),
            };
            if let Some(snap) = self
                .editor
                .fold_terms(&mut self.model, &mut cx, &recorded.ops)?
            {
                self.editor.restore(&mut self.model, &mut cx, &snap)?;
                self.history = recorded.live;
                return Ok(recorded.report);
            }
        }
        let mut detached = self.session.take();
        let r = self.replay(events, None, true, |_| Ok(()));
        self.session = detached.take();
        r
    }

    /// The journal's recorded terms in order (applied `+1`, undone `−1`) and the steps still
    /// live at its end.
    fn recorded_history(&mut self, events: &[Event]) -> Result<RecordedHistory> {
        let session = self.session.as_mut().expect("checked by the caller");
        let mut recorded = RecordedHistory::default();
        let mut by_step = std::collections::HashMap::new();
        for e in events {
            match e {
                Event::Applied {
                    step,
                    terms: Some(r),
                    requests,
                    method,
                    layers,
                    targets,
                    timings,
                    weights_sha256,
                    target_pass,
                    ..
                } => {
                    let t = session.read_terms(r)?;
                    recorded.ops.push((t.clone(), 1.0));
                    by_step.insert(*step, t.clone());
                    let outcome = EditOutcome {
                        method: *method,
                        layers: layers.clone(),
                        targets: targets.clone(),
                        timings: timings.clone(),
                        weights_sha256: weights_sha256.clone(),
                        undo: UndoRecord::Terms(t),
                    };
                    recorded.live.push(StepRecord {
                        step: *step,
                        requests: requests.clone(),
                        outcome,
                        target_pass: target_pass.clone(),
                    });
                    recorded.report.steps += 1;
                }
                Event::Undo { step, .. } => {
                    let t = by_step
                        .get(step)
                        .ok_or_else(|| Error::Input(format!("undo of unknown step {step}")))?;
                    recorded.ops.push((t.clone(), -1.0));
                    recorded.live.retain(|h| h.step != *step);
                    recorded.report.undos += 1;
                }
                _ => {}
            }
        }
        Ok(recorded)
    }
}

/// What a journal's recorded terms say: the signed terms in order, the live steps, the counts.
#[derive(Default)]
struct RecordedHistory {
    ops: Vec<SignedTerms>,
    live: Vec<StepRecord>,
    report: ReplayReport,
}
