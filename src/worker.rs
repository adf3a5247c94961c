//! The background worker: one thread owns the model, the editor and the session journal, takes
//! [`Command`]s over a channel and streams [`Event`]s back. The UI never blocks on it and never
//! touches the model; the worker never draws.
//!
//! Two threads: the *desk* ([`desk`]) takes every command at once and owns the queue, the pause
//! and the decks, so dropping the queue, pausing or loading a deck is answered while an edit is
//! in flight; the *engine* (here) owns the model, the editor and the journal and runs one job at
//! a time, being handed the next edit only when it is free. Pausing stops new work without
//! losing anything queued.
//!
//! The engine edits in one or more *lanes* (A/B mode): each lane is a runner of its own (an
//! editor, a journal, and a copy of the model whose edited matrices are its own; the untouched
//! weights and the key statistics are shared), and every edit is made in each lane in turn, so
//! the methods see the same stream of facts. Cancellation is a shared flag checked at every optimization step. A
//! panic while running a job is caught: the edited matrices are put back as they were before
//! the job, the UI is told, and the queue is kept.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::time::Instant;

use candle_core::Tensor;

use crate::edit::{EditControl, EditRequest, HParams, Method, Progress};
use crate::error::{Error, Result};
use crate::eval::bench::Reference;
use crate::eval::datasets::EvalCase;
use crate::eval::predict::top_next;
use crate::session::{Runner, Session};

mod desk;
mod lane;
mod protocol;
use desk::{Desk, DeskMsg};
use lane::{lane_pool, Env, Lane, LaneOutcome, LiveEdits};
pub use protocol::{
    Command, CurvePoint, Event, Landed, LaneInfo, ProbeRunner, ProbeScorer, WorkerHandle,
    WorkerOptions,
};

/// What the desk hands the engine, in the order the UI asked.
#[derive(Debug)]
enum Job {
    /// Edit now; the engine tells the desk when it is free again. `upcoming` are the next
    /// queued requests (at most [`desk::LOOKAHEAD`]), whose targets may be optimized with this
    /// one's in one pass.
    Edit {
        id: u64,
        request: EditRequest,
        upcoming: Vec<EditRequest>,
    },
    Task(Task),
    Quit,
}

/// The engine's work besides edits.
#[derive(Debug)]
enum Task {
    /// Journal requests as queued (so `d4s resume` can finish what a crash interrupted).
    Requested(Vec<EditRequest>),
    /// Journal requests the user dropped from the queue before they started.
    Dropped(Vec<EditRequest>),
    Undo,
    SetMethod(Method),
    RunProbes,
    Evaluate,
    Save,
    Bisect {
        probe: crate::eval::probes::Task,
        drop: f64,
    },
}

/// Evaluation cadence of the all-edits curve: every edit at first, then sparser.
pub fn curve_due(edits: usize, every: usize) -> bool {
    if every > 0 {
        return edits.is_multiple_of(every);
    }
    edits <= 20 || (edits <= 100 && edits.is_multiple_of(5)) || edits.is_multiple_of(20)
}

/// The engine: the only owner of the models, the editors and the journals.
struct Worker {
    lanes: Vec<Lane>,
    events: Sender<Event>,
    cancel: Arc<AtomicBool>,
    /// Stops the background statistics when the worker ends.
    stop_statistics: Arc<AtomicBool>,
    eval_every: usize,
    probes: Option<ProbeRunner>,
    scorer: Option<ProbeScorer>,
}

/// Starts the worker (desk and engine threads) with a runner (model + editor + optional session).
pub fn spawn(runner: Runner, opts: WorkerOptions) -> WorkerHandle {
    spawn_lanes(vec![runner], opts)
}

/// Starts the worker in A/B mode: every edit is made by each runner in turn. The runners must
/// edit the same model (each its own copy); their statistics caches should be siblings, so the
/// matrices are held once.
pub fn spawn_lanes(runners: Vec<Runner>, opts: WorkerOptions) -> WorkerHandle {
    assert!(!runners.is_empty(), "a worker needs at least one runner");
    let (desk_tx, desk_rx) = mpsc::channel::<DeskMsg>();
    let (job_tx, job_rx) = mpsc::channel::<Job>();
    let (etx, erx) = mpsc::channel::<Event>();
    let cancel = Arc::new(AtomicBool::new(false));
    let desk = Desk::new(
        job_tx,
        etx.clone(),
        opts.data_dir.clone(),
        runners[0].model.info.sha256.clone(),
    );
    let free = desk_tx.clone();
    let c2 = cancel.clone();
    let engine = std::thread::Builder::new()
        .name("d4s-engine".into())
        .spawn(move || {
            let mut w = Worker {
                lanes: {
                    let ab = runners.len() > 1;
                    runners
                        .into_iter()
                        .map(|runner| Lane {
                            runner,
                            live: LiveEdits::default(),
                            pool: ab.then(lane_pool).flatten(),
                        })
                        .collect()
                },
                events: etx,
                cancel: c2,
                stop_statistics: Arc::new(AtomicBool::new(false)),
                eval_every: opts.eval_every,
                probes: opts.probes,
                scorer: opts.scorer,
            };
            let model = &w.lanes[0].runner.model;
            w.emit(Event::Ready {
                model: model.info.name.clone(),
                device: format!("{:?}", model.device),
                lanes: w.lanes.iter().map(Lane::info).collect(),
            });
            if let Some(why) = opts.probes_unavailable {
                w.emit(Event::ProbesUnavailable(why));
            }
            w.prefetch_statistics();
            w.run(job_rx, free);
        })
        .expect("spawn the worker's engine thread");
    let thread = std::thread::Builder::new()
        .name("d4s-desk".into())
        .spawn(move || {
            desk.run(desk_rx);
            let _ = engine.join();
        })
        .expect("spawn the worker's desk thread");
    WorkerHandle {
        commands: desk_tx,
        events: erx,
        cancel,
        thread: Some(thread),
    }
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

impl Worker {
    fn emit(&self, e: Event) {
        let _ = self.events.send(e);
    }

    fn ab(&self) -> bool {
        self.lanes.len() > 1
    }

    /// What a lane's work reads from the worker.
    fn env(&self) -> Env<'_> {
        Env {
            events: &self.events,
            cancel: &self.cancel,
            eval_every: self.eval_every,
        }
    }

    /// Runs the desk's jobs in order until it says quit (or goes away).
    fn run(&mut self, jobs: Receiver<Job>, desk: Sender<DeskMsg>) {
        for job in jobs {
            match job {
                Job::Quit => break,
                Job::Edit {
                    id,
                    request,
                    upcoming,
                } => {
                    self.guarded(|w| w.edit(id, request, &upcoming));
                    let _ = desk.send(DeskMsg::EngineFree);
                }
                Job::Task(task) => self.guarded(|w| w.handle(task)),
            }
        }
        self.stop_statistics.store(true, Ordering::Relaxed);
        for lane in &self.lanes {
            self.write_snapshot(lane);
        }
    }

    /// Gathers the key statistics the editors will read on a thread of its own, as soon as the
    /// worker starts and after a method switch, so the first edit does not pay for them after
    /// the user has typed it. An edit that needs them meanwhile waits on the statistics' process-
    /// wide lock and then finds them in the shared cache (never computing them twice); methods
    /// that read no statistics edit at once. The thread works on a clone of the model (shared,
    /// immutable weights) and reads the unedited weights, as the statistics are defined.
    fn prefetch_statistics(&self) {
        let mut layers: Vec<usize> = self
            .lanes
            .iter()
            .flat_map(|l| l.runner.editor.statistics_layers())
            .collect();
        layers.sort_unstable();
        layers.dedup();
        if layers.is_empty() {
            return;
        }
        let first = &self.lanes[0].runner;
        let mut model = first.model.clone();
        let mut cache = first.stats.sibling();
        let events = self.events.clone();
        let stop = self.stop_statistics.clone();
        let spawned = std::thread::Builder::new()
            .name("d4s-statistics".into())
            .spawn(move || {
                let t0 = Instant::now();
                let computed = AtomicBool::new(false);
                let report = |p: Progress| {
                    if let Progress::Tokens { done, total } = p {
                        computed.store(true, Ordering::Relaxed);
                        let _ = events.send(Event::Statistics {
                            done,
                            total,
                            elapsed_s: t0.elapsed().as_secs_f64(),
                        });
                    }
                };
                let ctl = EditControl {
                    cancel: Some(&stop),
                    progress: Some(&report),
                };
                let done = match cache.second_moments(&mut model, &layers, &ctl) {
                    Ok(_) => Event::StatisticsReady {
                        seconds: t0.elapsed().as_secs_f64(),
                        computed: computed.load(Ordering::Relaxed),
                    },
                    Err(Error::Cancelled) => return,
                    Err(e) => Event::Log(format!(
                        "warning: the background statistics failed ({e}); the first edit that needs them gathers them"
                    )),
                };
                let _ = events.send(done);
            });
        if let Err(e) = spawned {
            self.emit(Event::Log(format!(
                "warning: no background statistics ({e}); the first edit gathers them"
            )));
        }
    }

    /// Keeps a session's edited weights beside its journal so `d4s export` need not re-run the
    /// edits. A failure costs only that speed (export replays the journal), so it is not fatal.
    fn write_snapshot(&self, lane: &Lane) {
        let Some(session) = &lane.runner.session else {
            return;
        };
        if lane.runner.model.touched_layers().is_empty() {
            return;
        }
        if let Err(e) = crate::session::snapshot::write(&session.dir, &lane.runner.model) {
            self.emit(Event::Log(format!(
                "warning: no weight snapshot written ({e})"
            )));
        }
    }

    /// Runs `f`, catching a panic: every lane's edited matrices go back to their state before
    /// `f`.
    fn guarded(&mut self, f: impl FnOnce(&mut Self)) {
        let snapshots: Vec<_> = self.lanes.iter().map(|l| snapshot(&l.runner)).collect();
        let r = catch_unwind(AssertUnwindSafe(|| f(self)));
        if let Err(p) = r {
            let msg = panic_message(p.as_ref());
            for (lane, snapshot) in self.lanes.iter_mut().zip(snapshots) {
                for (l, w) in snapshot {
                    let _ = lane.runner.model.set_edit_weight(l, w);
                }
            }
            self.emit(Event::Panicked(format!(
                "the worker hit a bug ({msg}); the model was restored and the queue kept"
            )));
        }
    }

    fn handle(&mut self, task: Task) {
        match task {
            Task::Requested(requests) => {
                let r = self.journal(|s| s.record_requested(&requests));
                self.report_journal(r);
            }
            Task::Dropped(requests) => {
                let r = self.journal(|s| {
                    requests.iter().try_for_each(|request| {
                        s.record_rejected(
                            std::slice::from_ref(request),
                            "dropped from the queue by the user",
                        )
                    })
                });
                self.report_journal(r);
            }
            Task::Undo => self.undo(),
            Task::SetMethod(m) => self.set_method(m),
            Task::RunProbes => self.probes(),
            Task::Evaluate => {
                let env = self.env();
                for (i, lane) in self.lanes.iter().enumerate() {
                    lane.curve(i, true, &env);
                }
            }
            Task::Save => self.save(),
            Task::Bisect { probe, drop } => self.bisect(probe, drop),
        }
    }

    /// Writes to every lane's journal (the lanes that keep one).
    fn journal(&mut self, write: impl Fn(&mut Session) -> Result<()>) -> Result<()> {
        self.lanes
            .iter_mut()
            .filter_map(|l| l.runner.session.as_mut())
            .try_for_each(write)
    }

    fn report_journal(&self, r: Result<()>) {
        if let Err(e) = r {
            self.emit(Event::Error(format!("journal: {e}")));
        }
    }

    fn set_method(&mut self, m: Method) {
        if self.ab() {
            self.emit(Event::Error(
                "A/B mode compares the methods it started with; restart with other --methods to change them".into(),
            ));
            return;
        }
        let runner = &mut self.lanes[0].runner;
        let hp = HParams::defaults(m, &runner.model.config);
        let layers = hp.layers.clone();
        match runner.set_editor(hp) {
            Ok(()) => {
                // Steps of the previous editor cannot be undone by the new one.
                self.emit(Event::MethodChanged { method: m, layers });
                self.emit(Event::Log(format!(
                    "method: {} for the next edits",
                    m.label()
                )));
                self.prefetch_statistics();
            }
            Err(e) => self.emit(Event::Error(format!("cannot switch to {}: {e}", m.label()))),
        }
    }

    /// Makes the edit in every lane, the lanes side by side on threads of their own (each lane
    /// owns its model copy, editor and journal, so they share nothing an edit changes; with
    /// `--threads 1` two lanes use two cores). The request is checked (and its unanswered
    /// neighbours answered by the unedited model) once; a cancel stops it in every lane that has
    /// not landed it. Each lane may optimize the request's target together with the `upcoming`
    /// queued facts' ([`Runner::apply_queued`]).
    fn edit(&mut self, id: u64, mut request: EditRequest, upcoming: &[EditRequest]) {
        self.cancel.store(false, Ordering::Relaxed);
        let reference = match self.complete(&mut request) {
            Ok(r) => r,
            Err(e) => {
                self.emit(Event::Rejected {
                    id,
                    lane: None,
                    error: e.to_string(),
                });
                return;
            }
        };
        let env = Env {
            events: &self.events,
            cancel: &self.cancel,
            eval_every: self.eval_every,
        };
        let outcomes: Vec<LaneOutcome> = match self.lanes.as_mut_slice() {
            [lane] => vec![lane.edit(0, id, &request, upcoming, reference, &env)],
            lanes => std::thread::scope(|scope| {
                let running: Vec<_> = lanes
                    .iter_mut()
                    .enumerate()
                    .map(|(i, lane)| {
                        let (request, reference, env) = (&request, reference.clone(), &env);
                        scope.spawn(move || match lane.pool.take() {
                            Some(pool) => {
                                let outcome = pool.install(|| {
                                    lane.edit(i, id, request, upcoming, reference, env)
                                });
                                lane.pool = Some(pool);
                                outcome
                            }
                            None => lane.edit(i, id, request, upcoming, reference, env),
                        })
                    })
                    .collect();
                running
                    .into_iter()
                    // A lane's panic goes on to `guarded`, which restores every lane.
                    .map(|t| t.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                    .collect()
            }),
        };
        if outcomes.contains(&LaneOutcome::Cancelled) {
            self.emit(Event::Cancelled { id });
        }
    }

    /// Checks the request, lets the unedited model answer the neighbours typed without an
    /// answer, and takes the locality references on the unedited model (the same for every
    /// lane, so taken once).
    fn complete(&mut self, request: &mut EditRequest) -> Result<Reference> {
        request.validate()?;
        let model = &mut self.lanes[0].runner.model;
        let unanswered: Vec<String> = request
            .neighbors
            .iter()
            .filter(|n| n.answer.is_none())
            .map(|n| n.prompt.clone())
            .collect();
        if !unanswered.is_empty() {
            let said =
                model.with_unedited(|m| crate::eval::predict::continuations(m, &unanswered, 3))?;
            for (n, text) in request
                .neighbors
                .iter_mut()
                .filter(|n| n.answer.is_none())
                .zip(said)
            {
                let t = text.trim();
                n.answer = (!t.is_empty()).then(|| t.to_string());
            }
        }
        let case = EvalCase::single(request.clone(), "");
        Reference::of(model, std::slice::from_ref(&case), true)
    }

    /// Runs the probes on every lane's model, journaling each lane's results in its session.
    fn probes(&mut self) {
        let Some(mut run) = self.probes.take() else {
            self.emit(Event::ProbesUnavailable(
                "no probe data configured (see --probes / --data-dir)".into(),
            ));
            return;
        };
        self.emit(Event::ProbesStarted);
        for lane in 0..self.lanes.len() {
            let l = &mut self.lanes[lane];
            let edits = l.live.len();
            match run(&l.runner.model) {
                Ok(results) => {
                    let journaled = match &mut l.runner.session {
                        Some(s) => s.record_probes(edits as u64, probes_json(&results)),
                        None => Ok(()),
                    };
                    if let Err(e) = journaled {
                        self.emit(Event::Error(format!("journal: {e}")));
                    }
                    self.emit(Event::Probes {
                        lane,
                        edits,
                        results,
                    });
                }
                Err(e) => self.emit(Event::Error(format!("probes failed: {e}"))),
            }
        }
        self.probes = Some(run);
    }

    /// Takes back the newest live edit: in each lane whose newest live edit it is (a lane that
    /// rejected it has an older one, which stays).
    fn undo(&mut self) {
        let Some(id) = self.lanes.iter().filter_map(Lane::newest).max() else {
            self.emit(Event::Error("undo: nothing to undo".into()));
            return;
        };
        for lane in 0..self.lanes.len() {
            if self.lanes[lane].newest() == Some(id) {
                self.undo_lane(lane, id);
            }
        }
    }

    fn undo_lane(&mut self, lane: usize, id: u64) {
        let l = &mut self.lanes[lane];
        match l.runner.undo(None) {
            Ok(step) => {
                let undone = l.live.pop();
                let after = undone
                    .and_then(|(_, case)| {
                        let prompt = case.requests[0].filled_prompt();
                        top_next(&l.runner.model, &[prompt], 3).ok()
                    })
                    .map(|mut v| v.remove(0))
                    .unwrap_or_default();
                self.emit(Event::Undone {
                    id,
                    lane,
                    step,
                    after,
                });
                let env = self.env();
                self.lanes[lane].norms(lane, &env);
                self.lanes[lane].curve(lane, true, &env);
            }
            Err(e) => self.emit(Event::Error(format!("undo: {e}"))),
        }
    }

    /// Bisects every lane's session on `probe`: each prefix is restored on a copy of the
    /// unedited model (the lane's own model is not touched), so the edits stay as they are.
    fn bisect(&mut self, probe: crate::eval::probes::Task, drop: f64) {
        let Some(mut scorer) = self.scorer.take() else {
            self.emit(Event::Error(
                "bisect: no probe data configured (see --data-dir)".into(),
            ));
            return;
        };
        for lane in 0..self.lanes.len() {
            let l = &self.lanes[lane];
            let Some(session) = &l.runner.session else {
                self.emit(Event::Error(
                    "bisect: this run keeps no journal (--no-session)".into(),
                ));
                continue;
            };
            let dir = session.dir.clone();
            let mut base = l.runner.model.clone();
            base.reset_edits();
            let stats = l.runner.stats.sibling();
            self.emit(Event::Bisecting { lane, probe });
            let events = self.events.clone();
            let found =
                crate::session::bisect::bisect_session(&dir, &base, &stats, drop, |k, m| {
                    let score = scorer(probe, m)?;
                    let _ = events.send(Event::BisectStep { lane, k, score });
                    Ok(score)
                });
            match found {
                Ok(found) => self.emit(Event::Bisected {
                    lane,
                    probe,
                    drop,
                    found,
                }),
                Err(e) => self.emit(Event::Error(format!("bisect: {e}"))),
            }
        }
        self.scorer = Some(scorer);
    }

    /// Exports each lane's ΔW into its session.
    fn save(&mut self) {
        for lane in &self.lanes {
            let Some(s) = &lane.runner.session else {
                self.emit(Event::Error("no session to save into".into()));
                continue;
            };
            let dir = s.dir.join("export");
            match crate::session::export::export_hf(&lane.runner.model, &dir, true) {
                Ok(()) => self.emit(Event::Log(format!(
                    "saved {}'s ΔW of the edited layers to {}",
                    lane.runner.method().label(),
                    dir.display()
                ))),
                Err(e) => self.emit(Event::Error(format!("save: {e}"))),
            }
        }
    }
}

/// The probes' headline values by task, as the journal keeps them.
fn probes_json(results: &[crate::eval::probes::ProbeResult]) -> serde_json::Value {
    results
        .iter()
        .map(|r| (r.task.clone(), serde_json::json!(r.headline().1)))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// A runner's edited matrices as they are (cheap: tensors are reference-counted and immutable).
fn snapshot(runner: &Runner) -> Vec<(usize, Tensor)> {
    let mut layers = runner.model.touched_layers();
    layers.extend(runner.editor.hparams().layers.iter().copied());
    layers.sort_unstable();
    layers.dedup();
    layers
        .into_iter()
        .filter_map(|l| runner.model.edit_weight(l).ok().map(|w| (l, w.clone())))
        .collect()
}

#[cfg(test)]
mod tests;
