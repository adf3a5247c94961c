//! The worker's protocol: the [`Command`]s the UI sends, the [`Event`]s the worker answers with,
//! and the handle the UI holds. Every value is typed: progress is the editor's own
//! [`Progress`], metrics are the benchmark's [`TokenMetrics`] and [`LayerNorms`], probe results
//! are [`ProbeResult`]s.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::edit::{EditRequest, Method, Progress};
use crate::error::Result;
use crate::eval::bench::records::{GenMetrics, TokenMetrics};
use crate::eval::bench::LayerNorms;
use crate::eval::predict::Prediction;
use crate::eval::probes::{ProbeResult, Task};
use crate::model::Model;
use crate::session::bisect::SessionBisection;

use super::DeskMsg;

/// Runs the downstream probes on the model: one result per task, as the benchmark records them.
pub type ProbeRunner = Box<dyn FnMut(&Model) -> Result<Vec<ProbeResult>> + Send>;

/// Scores the model on one probe task (its headline metric), for bisection.
pub type ProbeScorer = Box<dyn FnMut(Task, &Model) -> Result<f64> + Send>;

/// What the UI asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Queue an edit; `id` is the UI's queue id.
    Edit {
        id: u64,
        request: EditRequest,
    },
    /// Queue several edits at once, in order (a deck): they are journaled as queued in one
    /// write, and the first starts with the others already behind it, so its target can be
    /// optimized with theirs ([`crate::session::ahead`]).
    EditAll(Vec<(u64, EditRequest)>),
    /// Take back the most recent landed edit.
    Undo,
    /// Use this method (with its defaults) for the next edits (refused in A/B mode, whose
    /// methods are the comparison).
    SetMethod(Method),
    /// Run the downstream probes now.
    RunProbes,
    /// Re-evaluate every landed edit now.
    Evaluate,
    Pause(bool),
    /// Export the edited weights' ΔW into the session directory.
    Save,
    /// Read a journaled session's applied edits; the UI queues them when the `Deck` event
    /// arrives, so they replay into this model like any other edits.
    OpenSession(PathBuf),
    /// Drop queued edits that have not started (answered at once, also during an edit).
    ClearQueue,
    /// Find the first journaled edit after which `probe` fell more than `drop` below the
    /// unedited model (every lane's session, by binary search over its journal's prefixes).
    Bisect {
        probe: Task,
        drop: f64,
    },
    /// Read a deck of facts (`demo`, `counterfact:N`, `zsre:N`, or a JSONL path); the UI queues
    /// them when the `Deck` event arrives.
    LoadDeck(String),
    Quit,
}

/// One point of the sequential-editing curve: all live edits evaluated on the current model
/// (the benchmark's evaluation, so the same numbers).
#[derive(Debug, Clone, PartialEq)]
pub struct CurvePoint {
    pub edits: usize,
    pub metrics: TokenMetrics,
}

/// One editor of the worker and what it edits: a plain run has one lane, A/B mode two or three,
/// each on its own copy of the edited matrices, all taking the same edit stream.
#[derive(Debug, Clone, PartialEq)]
pub struct LaneInfo {
    pub method: Method,
    pub layers: Vec<usize>,
    /// The lane's own journal, if it keeps one.
    pub session: Option<PathBuf>,
}

/// An edit landed in one lane.
#[derive(Debug, Clone, PartialEq)]
pub struct Landed {
    pub id: u64,
    /// The lane (index into `Ready`'s lanes) it landed in.
    pub lane: usize,
    pub step: u64,
    pub method: Method,
    /// The edit's own metrics on the model right after it landed.
    pub metrics: TokenMetrics,
    /// Its greedy-generation metrics, and the greedy answers they score (to the prompt, then
    /// to each paraphrase), with the answers the model gave to the same before the edit.
    pub gen: GenMetrics,
    pub answers_before: Vec<String>,
    pub answers: Vec<String>,
    /// The first neighbour's greedy continuation before and after the edit (it should not
    /// change): `(prompt, before, after)`.
    pub neighbour: Option<(String, String, String)>,
    pub before: Vec<Prediction>,
    pub after: Vec<Prediction>,
    pub layer_deltas: Vec<(usize, f64)>,
    pub prob_initial: f64,
    pub prob_final: f64,
    pub seconds: f64,
}

/// What the worker reports.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Ready {
        model: String,
        device: String,
        /// The editors, in the order every lane-tagged event refers to them.
        lanes: Vec<LaneInfo>,
    },
    Log(String),
    /// Lane `lane` started the edit `id` (the lanes take it in turn).
    Started {
        id: u64,
        lane: usize,
    },
    /// Where the edit in flight is (warnings come as `Log` lines instead).
    Progress {
        id: u64,
        lane: usize,
        progress: Progress,
    },
    Landed(Box<Landed>),
    /// The edit failed in `lane`, or in every lane (`None`: the request itself is bad).
    Rejected {
        id: u64,
        lane: Option<usize>,
        error: String,
    },
    /// The user cancelled the edit: the lanes that had not landed it yet leave it.
    Cancelled {
        id: u64,
    },
    Undone {
        id: u64,
        lane: usize,
        step: u64,
        after: Vec<Prediction>,
    },
    Norms {
        lane: usize,
        edits: usize,
        layers: Vec<LayerNorms>,
    },
    /// All live edits are being re-evaluated.
    Evaluating,
    Curve {
        lane: usize,
        point: CurvePoint,
    },
    /// The key statistics are being gathered in the background (`done` of `total` tokens,
    /// `elapsed_s` since they started).
    Statistics {
        done: usize,
        total: usize,
        elapsed_s: f64,
    },
    /// The background statistics are ready (`computed`: gathered now, not read from the cache).
    StatisticsReady {
        seconds: f64,
        computed: bool,
    },
    /// The probes started running.
    ProbesStarted,
    Probes {
        lane: usize,
        edits: usize,
        results: Vec<ProbeResult>,
    },
    ProbesUnavailable(String),
    /// A bisection started in a lane's session.
    Bisecting {
        lane: usize,
        probe: Task,
    },
    /// One prefix measured: the score after the first `k` applied steps.
    BisectStep {
        lane: usize,
        k: usize,
        score: f64,
    },
    Bisected {
        lane: usize,
        probe: Task,
        drop: f64,
        found: SessionBisection,
    },
    MethodChanged {
        method: Method,
        layers: Vec<usize>,
    },
    Deck {
        source: String,
        requests: Vec<EditRequest>,
        /// The bad records left out, each as `file:line: reason`.
        skipped: Vec<String>,
    },
    /// The queued edits `ids` were dropped before they started (the edit in flight, if any,
    /// goes on: `c` cancels it).
    QueueCleared {
        ids: Vec<u64>,
        in_flight: bool,
    },
    Paused(bool),
    Idle,
    Error(String),
    Panicked(String),
}

/// Handle held by the UI.
pub struct WorkerHandle {
    pub(super) commands: Sender<DeskMsg>,
    pub events: Receiver<Event>,
    /// Set to cancel the edit in flight (checked at every optimization step).
    pub cancel: Arc<AtomicBool>,
    pub(super) thread: Option<JoinHandle<()>>,
}

impl WorkerHandle {
    pub fn send(&self, c: Command) {
        // A dead worker has already reported why; nothing to do here.
        let _ = self.commands.send(DeskMsg::Ui(c));
    }

    pub fn join(mut self) {
        let _ = self.commands.send(DeskMsg::Ui(Command::Quit));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for WorkerHandle {
    /// A handle dropped without `join` (the UI failed) cancels the edit in flight and stops the
    /// worker instead of leaving it running.
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.cancel
                .store(true, std::sync::atomic::Ordering::Relaxed);
            let _ = self.commands.send(DeskMsg::Ui(Command::Quit));
        }
    }
}

/// Options of the worker.
pub struct WorkerOptions {
    /// 0 = automatic cadence.
    pub eval_every: usize,
    /// Computes probe results `(task, metric value, chance)`; `None` = no probes configured.
    pub probes: Option<ProbeRunner>,
    pub probes_unavailable: Option<String>,
    /// Where `counterfact:N` / `zsre:N` decks are read from.
    pub data_dir: Option<PathBuf>,
    /// Scores one probe for `Command::Bisect`; `None` = no probe data (bisect says why).
    pub scorer: Option<ProbeScorer>,
}
