//! The TUI's state: everything the view draws, nothing it has to compute.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::edit::{EditRequest, Method, Probe, Progress};
use crate::eval::bench::records::{GenMetrics, TokenMetrics};
use crate::eval::predict::Prediction;
use crate::eval::probes::ProbeResult;
use crate::worker::CurvePoint;

/// Panes that take focus (Tab cycles them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pane {
    Queue,
    Input,
    Charts,
    Log,
}

impl Pane {
    pub fn next(self) -> Self {
        match self {
            Pane::Input => Pane::Queue,
            Pane::Queue => Pane::Charts,
            Pane::Charts => Pane::Log,
            Pane::Log => Pane::Input,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Status {
    Queued,
    /// Running; where the edit is, once the worker has said.
    Running(Option<Progress>),
    Done,
    Rejected(String),
    Undone,
    Cancelled,
}

impl Status {
    pub fn label(&self) -> &str {
        match self {
            Status::Queued => "queued",
            Status::Running(_) => "running",
            Status::Done => "done",
            Status::Rejected(_) => "rejected",
            Status::Undone => "undone",
            Status::Cancelled => "cancelled",
        }
    }
}

/// What the worker is doing, as its events last said.
#[derive(Debug, Clone, PartialEq)]
pub enum Activity {
    Starting,
    Idle,
    /// An edit is in flight, at this point of it.
    Editing(Option<Progress>),
    /// Every live edit is being re-evaluated.
    Evaluating,
    /// The downstream probes are running.
    Probing,
    /// A bug was caught; the model was restored.
    Recovered,
}

/// How far the background statistics are: tokens done of total, and the time left at the rate
/// so far (none before the first tokens).
#[derive(Debug, Clone, PartialEq)]
pub struct StatisticsProgress {
    pub done: usize,
    pub total: usize,
    pub eta_s: Option<f64>,
}

impl StatisticsProgress {
    pub fn new(done: usize, total: usize, elapsed_s: f64) -> Self {
        let eta_s =
            (done > 0 && total >= done).then(|| elapsed_s * (total - done) as f64 / done as f64);
        Self { done, total, eta_s }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct QueueItem {
    pub id: u64,
    pub request: EditRequest,
    pub method: Method,
    pub status: Status,
    pub step: Option<u64>,
    pub metrics: Option<TokenMetrics>,
    pub gen: Option<GenMetrics>,
    /// Greedy answers to the prompt and its paraphrases, before and after the edit.
    pub answers_before: Vec<String>,
    /// The first neighbour's prompt and its greedy continuation before and after the edit.
    pub neighbour: Option<(String, String, String)>,
    pub answers: Vec<String>,
    pub seconds: Option<f64>,
    pub before: Vec<Prediction>,
    pub after: Vec<Prediction>,
    pub layer_deltas: Vec<(usize, f64)>,
    pub probs: Option<(f64, f64)>,
}

/// A modal on top of the panes.
#[derive(Debug, Clone, PartialEq)]
pub enum Overlay {
    None,
    Help,
    ConfirmQuit,
    MethodPicker(usize),
    /// A one-line prompt: what it asks for and the text typed so far.
    Prompt(PromptKind, String),
    /// The full fact form: fields and the focused one.
    Form([String; 5], usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PromptKind {
    Deck,
    OpenSession,
}

pub const FORM_LABELS: [&str; 5] = [
    "subject",
    "prompt",
    "target",
    "paraphrase (optional)",
    "neighbour prompt (optional)",
];

/// Norm history of one edited layer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LayerHistory {
    /// ‖W‖₁/n after each reported edit count, starting with the unedited value when known.
    pub weight: Vec<f64>,
    /// ‖W − W0‖₁/n.
    pub delta: Vec<f64>,
}

impl LayerHistory {
    pub fn growth(&self) -> Option<f64> {
        let first = *self.weight.first()?;
        let last = *self.weight.last()?;
        (first > 0.0).then(|| last / first)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct App {
    pub model: String,
    pub method: Method,
    pub layers: Vec<usize>,
    pub device: String,
    pub session: Option<PathBuf>,
    pub ready: bool,
    pub queue: Vec<QueueItem>,
    pub selected: usize,
    pub next_id: u64,
    pub focus: Pane,
    pub input: String,
    pub input_error: Option<String>,
    pub curve: Vec<CurvePoint>,
    pub norms: BTreeMap<usize, LayerHistory>,
    pub probes: Vec<ProbeResult>,
    /// The first probe results of the session, and after how many edits they were taken.
    pub probes_baseline: Option<(usize, Vec<ProbeResult>)>,
    pub probes_note: Option<String>,
    pub log: Vec<String>,
    pub log_scroll: usize,
    pub paused: bool,
    pub activity: Activity,
    /// The key statistics being gathered in the background, while they are.
    pub statistics: Option<StatisticsProgress>,
    /// Signs of collapse seen so far (the status bar turns amber or red).
    pub watch: super::watch::CollapseWatch,
    pub last_error: Option<String>,
    pub overlay: Overlay,
    pub should_quit: bool,
    /// Frame render times (ms): last and worst, measured by the loop.
    pub frame_ms: (f64, f64),
}

impl Default for App {
    fn default() -> Self {
        Self {
            model: "loading…".into(),
            method: Method::D4s,
            layers: vec![],
            device: String::new(),
            session: None,
            ready: false,
            queue: vec![],
            selected: 0,
            next_id: 1,
            focus: Pane::Input,
            input: String::new(),
            input_error: None,
            curve: vec![],
            norms: BTreeMap::new(),
            probes: vec![],
            probes_baseline: None,
            probes_note: None,
            log: vec![],
            log_scroll: 0,
            paused: false,
            activity: Activity::Starting,
            statistics: None,
            watch: Default::default(),
            last_error: None,
            overlay: Overlay::None,
            should_quit: false,
            frame_ms: (0.0, 0.0),
        }
    }
}

impl App {
    pub fn edits_done(&self) -> usize {
        self.queue
            .iter()
            .filter(|q| q.status == Status::Done)
            .count()
    }

    pub fn work_running(&self) -> bool {
        self.queue
            .iter()
            .any(|q| matches!(q.status, Status::Running(_) | Status::Queued))
    }

    pub fn selected_item(&self) -> Option<&QueueItem> {
        self.queue.get(self.selected)
    }

    pub fn push_log(&mut self, line: impl Into<String>) {
        self.log.push(line.into());
        if self.log.len() > 500 {
            self.log.drain(..self.log.len() - 500);
        }
        self.log_scroll = 0;
    }

    pub fn item_mut(&mut self, id: u64) -> Option<&mut QueueItem> {
        self.queue.iter_mut().find(|q| q.id == id)
    }
}

/// Parses the quick form `subject | prompt | target [| paraphrase [| neighbour]]`.
pub fn parse_quick(line: &str) -> Result<EditRequest, String> {
    let parts: Vec<&str> = line.split('|').map(str::trim).collect();
    if parts.len() < 3 {
        return Err("write: subject | prompt | target  (optionally | paraphrase | neighbour prompt), or press f for the form".into());
    }
    if parts.len() > 5 {
        return Err("too many fields: subject | prompt | target | paraphrase | neighbour".into());
    }
    fields_to_request(&[
        parts[0],
        parts[1],
        parts[2],
        parts.get(3).copied().unwrap_or(""),
        parts.get(4).copied().unwrap_or(""),
    ])
}

/// Builds and validates a request from the form's fields.
pub fn fields_to_request(f: &[&str; 5]) -> Result<EditRequest, String> {
    let mut r = EditRequest::new(f[0].trim(), f[1].trim(), f[2].trim());
    if !f[3].trim().is_empty() {
        r.paraphrases.push(f[3].trim().to_string());
    }
    if !f[4].trim().is_empty() {
        // No answer given: locality compares against the unedited model's own prediction, which
        // the worker records when the edit lands. Store an empty-answer probe as "no answer".
        r.neighbors.push(Probe {
            prompt: f[4].trim().to_string(),
            answer: None,
        });
    }
    r.validate().map_err(|e| e.to_string())?;
    Ok(r)
}

/// Short "L4–L8" style label of a layer list.
pub fn layers_label(layers: &[usize]) -> String {
    match layers {
        [] => "-".into(),
        [one] => format!("L{one}"),
        [first, .., last] if layers.windows(2).all(|w| w[1] == w[0] + 1) => {
            format!("L{first}–{last}")
        }
        many => many
            .iter()
            .map(|l| format!("L{l}"))
            .collect::<Vec<_>>()
            .join(","),
    }
}
