//! Targets optimized ahead for a queue of facts (spec §1.7): the TUI's queued deck,
//! `d4s edit --file … --sequential`, `d4s sessions resume`. Where an editor computes every target
//! on the unedited model (D4S), a fact's target does not depend on the edits before it, so the
//! fact that starts a *pass* optimizes its own target together with those of the next queued
//! facts in one batched forward/backward, and their steps then find their targets in the
//! runner's target cache:
//!
//! ```text
//! pass(f_i)        = [f_i, f_{i+1}, …, f_{i+B−1}]  (the queued facts, B = target_batch)
//! target(f_{i+k})  = batched(W0, pass(f_i))[k]     for the steps that follow f_i in order
//! ```
//!
//! A batched target differs from one optimized alone in its last bits (wider sums), so the
//! journal records each step's pass ([`TargetPass`]) and a replay hands the same pass back: the
//! replayed weights are the journal's, bit for bit. A fact further on in the current pass goes on
//! with it (the facts between were rejected, cancelled or dropped); a fact the pass does not hold
//! (typed by the user, or reordered) starts a new pass, and the old pass's unused targets only
//! cost the time they took.

use serde::{Deserialize, Serialize};

use crate::edit::request::{target_ids, tokenize_with_subject};
use crate::edit::{EditRequest, Editor};
use crate::model::Model;

/// The batched target pass a step's fact was optimized in, as the journal keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetPass {
    /// The pass's facts in order, each reduced to what the optimization reads
    /// ([`EditRequest::fact`]).
    pub facts: Vec<EditRequest>,
    /// This step's place in `facts`.
    pub position: usize,
}

/// Plans the passes of a stream of single-fact steps: it remembers the current pass and how far
/// its steps have come.
#[derive(Debug, Default)]
pub struct Planner {
    /// The current pass's facts and the position of the step expected next.
    current: Option<(Vec<EditRequest>, usize)>,
}

impl Planner {
    /// The pass for a step of `request`, with `upcoming` the facts queued behind it in order:
    /// the current pass if `request` is one of its facts still to come, else a new pass of
    /// `request` and the next `target_batch − 1` usable queued facts. `None` (optimize alone) when the editor's targets
    /// follow the edits, `target_batch` is 1, nothing usable is queued, or `request` itself
    /// cannot be optimized (it fails alone, without costing the queue a pass).
    pub fn plan(
        &mut self,
        model: &Model,
        editor: &dyn Editor,
        request: &EditRequest,
        upcoming: &[EditRequest],
    ) -> Option<TargetPass> {
        let batch = editor.hparams().target_batch;
        if batch < 2 || !editor.targets_on_unedited_model() {
            self.current = None;
            return None;
        }
        if !can_share_pass(model, request) {
            return None;
        }
        // A fact later in the current pass goes on with it: the facts between were rejected,
        // cancelled or dropped from the queue (a resume after a crash finds them so too).
        if let Some((facts, next)) = &mut self.current {
            let ahead = facts.get(*next..).unwrap_or_default();
            if let Some(skip) = ahead.iter().position(|f| f.same_fact(request)) {
                let position = *next + skip;
                *next = position + 1;
                return Some(TargetPass {
                    facts: facts.clone(),
                    position,
                });
            }
        }
        let facts: Vec<EditRequest> = std::iter::once(request.fact())
            .chain(
                upcoming
                    .iter()
                    .filter(|r| can_share_pass(model, r))
                    .take(batch - 1)
                    .map(EditRequest::fact),
            )
            .collect();
        if facts.len() < 2 {
            self.current = None;
            return None;
        }
        self.current = Some((facts.clone(), 1));
        Some(TargetPass { facts, position: 0 })
    }

    /// Goes on with the pass of a journal's last applied step, so the facts after it that were
    /// queued with it (those `d4s resume` finds pending after a crash) land in the pass they
    /// would have without the crash, to the same bits.
    pub fn continue_after(&mut self, last: Option<&TargetPass>) {
        self.current = last
            .filter(|p| p.position + 1 < p.facts.len())
            .map(|p| (p.facts.clone(), p.position + 1));
    }

    /// Drops the current pass (the editor changed).
    pub fn forget(&mut self) {
        self.current = None;
    }
}

/// Whether a queued fact can join a pass: it is well-formed and its prompt and target tokenize,
/// so it cannot make the pass fail for the facts around it. (A pass that fails anyway is retried
/// alone by the runner.)
fn can_share_pass(model: &Model, request: &EditRequest) -> bool {
    request.validate().is_ok()
        && target_ids(model, &request.target).is_ok()
        && tokenize_with_subject(model, "{}", &request.template(), &request.subject).is_ok()
}

#[cfg(test)]
mod tests;
