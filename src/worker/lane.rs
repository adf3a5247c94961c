//! One lane of the worker: a runner (model copy, editor, journal) and its live edits, and how it
//! makes, measures and reports an edit. A plain run has one lane; A/B mode runs two or three side
//! by side, each on a thread and a compute pool of its own.

use std::sync::atomic::AtomicBool;
use std::sync::mpsc::Sender;
use std::time::Instant;

use super::{curve_due, CurvePoint, Event, Landed, LaneInfo};
use crate::edit::{EditControl, EditRequest, Method, Progress};
use crate::error::{Error, Result};
use crate::eval::bench::records::TokenMetrics;
use crate::eval::bench::{evaluate, layer_norms, CaseOutcome, EvalOptions, Reference};
use crate::eval::datasets::EvalCase;
use crate::eval::metrics::greedy_answers;
use crate::eval::predict::{top_next, Prediction};
use crate::model::Model;
use crate::session::Runner;

/// The landed edits still in effect, as evaluation cases with their unedited-model references.
#[derive(Default)]
pub(super) struct LiveEdits {
    pub(super) ids: Vec<u64>,
    cases: Vec<EvalCase>,
    reference: Reference,
}

impl LiveEdits {
    pub(super) fn len(&self) -> usize {
        self.ids.len()
    }

    fn push(&mut self, id: u64, case: EvalCase, reference: Reference) {
        self.ids.push(id);
        self.cases.push(case);
        self.reference.append(reference);
    }

    pub(super) fn pop(&mut self) -> Option<(u64, EvalCase)> {
        self.reference.pop();
        Some((self.ids.pop()?, self.cases.pop()?))
    }

    /// The token metrics of the live edits `which` (indices) on the model as it is now.
    fn metrics(&self, model: &Model, which: &[usize]) -> Result<TokenMetrics> {
        let e = evaluate(
            model,
            &self.cases,
            &self.reference,
            which,
            EvalOptions::default(),
        )?;
        Ok(e.metrics.token)
    }

    /// One live edit's own outcome on the model as it is now, greedy answers included.
    fn outcome(&self, model: &Model, which: usize) -> Result<CaseOutcome> {
        let options = EvalOptions {
            generation: true,
            ..Default::default()
        };
        let e = evaluate(model, &self.cases, &self.reference, &[which], options)?;
        e.cases
            .into_iter()
            .next()
            .ok_or_else(|| Error::Input("no such live edit".into()))
    }
}

/// What [`Lane::prepare`] finds out before an edit, in one lane's model.
struct Prepared {
    before: Vec<Prediction>,
    answers_before: Vec<String>,
    /// The first neighbour's prompt, the answer whose length bounds its decoding, and its
    /// greedy continuation on the model before the edit.
    neighbour_before: Option<(String, String, String)>,
}

/// The greedy continuation of a neighbour prompt, as long as its answer allows (the same decode
/// as the `gen.*` metrics).
fn neighbour_says(model: &Model, prompt: &str, answer: &str) -> Result<String> {
    Ok(
        greedy_answers(model, &[(prompt.to_string(), answer.to_string())])?
            .pop()
            .unwrap_or_default(),
    )
}

/// One editor and what it has edited: its runner (model copy, editor, journal) and its live
/// edits.
pub(super) struct Lane {
    pub(super) runner: Runner,
    pub(super) live: LiveEdits,
    /// A/B mode: the lane's own compute threads (as many as the process's), so two lanes'
    /// parallel loops do not queue on one shared pool; `None` for a single lane.
    pub(super) pool: Option<rayon::ThreadPool>,
}

impl Lane {
    pub(super) fn info(&self) -> LaneInfo {
        LaneInfo {
            method: self.runner.method(),
            layers: self.runner.editor.hparams().layers.clone(),
            session: self.runner.session.as_ref().map(|s| s.dir.clone()),
        }
    }

    /// The queue id of the newest live edit.
    pub(super) fn newest(&self) -> Option<u64> {
        self.live.ids.last().copied()
    }

    /// This lane's edit: prepare, apply (journaled), measure, report.
    pub(super) fn edit(
        &mut self,
        lane: usize,
        id: u64,
        request: &EditRequest,
        upcoming: &[EditRequest],
        reference: Reference,
        env: &Env,
    ) -> LaneOutcome {
        env.emit(Event::Started { id, lane });
        let t0 = Instant::now();
        let Prepared {
            before,
            answers_before,
            neighbour_before,
        } = match self.prepare(request) {
            Ok(x) => x,
            Err(e) => {
                env.emit(Event::Rejected {
                    id,
                    lane: Some(lane),
                    error: e.to_string(),
                });
                return LaneOutcome::Rejected;
            }
        };
        let tx = env.events.clone();
        let report = move |p: Progress| {
            let _ = tx.send(progress_event(id, lane, &p));
        };
        let ctl = EditControl {
            cancel: Some(env.cancel),
            progress: Some(&report),
        };
        let applied = self
            .runner
            .apply_queued(request, upcoming, ctl)
            .map(|(step, o)| {
                let deltas = o
                    .layers
                    .iter()
                    .map(|l| (l.layer, l.delta_fro))
                    .collect::<Vec<_>>();
                let t = o.targets.first().cloned();
                (step, o.method, deltas, t)
            });
        match applied {
            Ok((step, method, layer_deltas, t)) => {
                self.announce_pass(method, env);
                let prompt = request.filled_prompt();
                self.live.push(
                    id,
                    EvalCase::single(request.clone(), format!("tui#{id}")),
                    reference,
                );
                let model = &self.runner.model;
                let outcome = self.live.outcome(model, self.live.len() - 1).ok();
                let metrics = outcome.as_ref().map(|o| o.token).unwrap_or_default();
                let gen = outcome.as_ref().map(|o| o.gen).unwrap_or_default();
                let answers = outcome.map(|o| o.answers).unwrap_or_default();
                let after = top_next(model, &[prompt], 3)
                    .map(|mut v| v.remove(0))
                    .unwrap_or_default();
                let neighbour = neighbour_before.and_then(|(p, answer, before)| {
                    let now = neighbour_says(model, &p, &answer).ok()?;
                    Some((p, before, now))
                });
                env.emit(Event::Landed(Box::new(Landed {
                    id,
                    lane,
                    step,
                    method,
                    metrics,
                    gen,
                    answers_before,
                    answers,
                    neighbour,
                    before,
                    after,
                    layer_deltas,
                    prob_initial: t.as_ref().map_or(0.0, |t| t.prob_initial),
                    prob_final: t.as_ref().map_or(0.0, |t| t.prob_final),
                    seconds: t0.elapsed().as_secs_f64(),
                })));
                self.norms(lane, env);
                self.curve(lane, false, env);
                LaneOutcome::Landed
            }
            Err(Error::Cancelled) => {
                // Journaled as not-to-be-resumed: the user chose to drop it.
                if let Some(s) = &mut self.runner.session {
                    let _ =
                        s.record_rejected(std::slice::from_ref(request), "cancelled by the user");
                }
                LaneOutcome::Cancelled
            }
            Err(e) => {
                env.emit(Event::Rejected {
                    id,
                    lane: Some(lane),
                    error: e.to_string(),
                });
                LaneOutcome::Rejected
            }
        }
    }

    /// Says so when the edit just landed started a batched target pass over queued facts (the
    /// edit took longer; the next ones will be quicker).
    fn announce_pass(&self, method: Method, env: &Env) {
        let started = self
            .runner
            .history
            .last()
            .and_then(|r| r.target_pass.as_ref())
            .filter(|p| p.position == 0);
        if let Some(pass) = started {
            env.emit(Event::Log(format!(
                "{}: optimized the targets of this fact and the next {} queued in one pass",
                method.label(),
                pass.facts.len() - 1
            )));
        }
    }

    /// What this lane's model says before the edit: the prompt's top predictions and the
    /// greedy answers to the prompt, its paraphrases and the first neighbour.
    fn prepare(&self, request: &EditRequest) -> Result<Prepared> {
        let model = &self.runner.model;
        let before = top_next(model, &[request.filled_prompt()], 3)?.remove(0);
        let asked: Vec<(String, String)> = std::iter::once(request.filled_prompt())
            .chain(request.paraphrases.iter().cloned())
            .map(|p| (p, request.target.clone()))
            .collect();
        let answers_before = greedy_answers(model, &asked)?;
        let neighbour_before = match request.neighbors.first() {
            Some(n) => {
                let answer = n.answer.clone().unwrap_or_default();
                let said = neighbour_says(model, &n.prompt, &answer)?;
                Some((n.prompt.clone(), answer, said))
            }
            None => None,
        };
        Ok(Prepared {
            before,
            answers_before,
            neighbour_before,
        })
    }

    pub(super) fn norms(&self, lane: usize, env: &Env) {
        let m = &self.runner.model;
        let mut layers = m.touched_layers();
        layers.retain(|&l| l < m.n_layers());
        match layer_norms(m, &layers) {
            Ok(layers) => env.emit(Event::Norms {
                lane,
                edits: self.live.len(),
                layers,
            }),
            Err(e) => env.emit(Event::Error(format!("norms: {e}"))),
        }
    }

    /// Re-evaluates all live edits of the lane (the sequential protocol's "evaluate everything
    /// so far").
    pub(super) fn curve(&self, lane: usize, forced: bool, env: &Env) {
        let n = self.live.len();
        if n == 0 || !(forced || curve_due(n, env.eval_every)) {
            return;
        }
        env.emit(Event::Evaluating);
        let all: Vec<usize> = (0..n).collect();
        match self.live.metrics(&self.runner.model, &all) {
            Ok(metrics) => env.emit(Event::Curve {
                lane,
                point: CurvePoint { edits: n, metrics },
            }),
            Err(e) => env.emit(Event::Error(format!("evaluation failed: {e}"))),
        }
    }
}

/// A compute pool for one A/B lane, as wide as the process's (`--threads`); none if it cannot
/// be built (the lane then shares the global pool: slower, not wrong).
pub(super) fn lane_pool() -> Option<rayon::ThreadPool> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(rayon::current_num_threads())
        .thread_name(|i| format!("d4s-lane-{i}"))
        .build()
        .ok()
}

/// What one lane made of an edit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LaneOutcome {
    Landed,
    Rejected,
    Cancelled,
}

/// What a lane's edit reads from the worker: where to report, the cancel flag, the cadence.
pub(super) struct Env<'a> {
    pub(super) events: &'a Sender<Event>,
    pub(super) cancel: &'a AtomicBool,
    pub(super) eval_every: usize,
}

impl Env<'_> {
    pub(super) fn emit(&self, e: Event) {
        let _ = self.events.send(e);
    }
}

/// A progress report as an event (warnings go to the log).
fn progress_event(id: u64, lane: usize, p: &Progress) -> Event {
    match p {
        Progress::Warning(w) => Event::Log(format!("warning: {w}")),
        progress => Event::Progress {
            id,
            lane,
            progress: progress.clone(),
        },
    }
}
