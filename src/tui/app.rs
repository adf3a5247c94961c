//! The TUI's state: everything the view draws, nothing it has to compute.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::edit::{EditRequest, Method, Probe, Progress};
use crate::eval::bench::records::TokenMetric;
use crate::eval::predict::Prediction;
use crate::eval::probes::ProbeResult;
use crate::worker::{CurvePoint, Landed, LaneInfo};

use super::watch::{Alert, CollapseWatch};

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
    /// An edit is in flight in a lane, at this point of it.
    Editing {
        lane: usize,
        progress: Option<Progress>,
    },
    /// Every live edit is being re-evaluated.
    Evaluating,
    /// The downstream probes are running.
    Probing,
    /// A lane's journal is being bisected on a probe.
    Bisecting {
        lane: usize,
        probe: crate::eval::probes::Task,
    },
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

/// One lane's part of a queued edit.
#[derive(Debug, Clone, PartialEq)]
pub enum LaneEdit {
    Queued,
    /// Running; where the edit is, once the worker has said.
    Running(Option<Progress>),
    /// Landed: what the worker measured right after (metrics, answers, predictions, ‖ΔW‖).
    Landed(Box<Landed>),
    Rejected(String),
    /// Taken back: the prompt's top predictions before the edit, and now. What was measured
    /// when it landed describes no model that exists any more, so it is not kept.
    Undone {
        before: Vec<Prediction>,
        after: Vec<Prediction>,
    },
    Cancelled,
}

impl LaneEdit {
    pub fn status(&self) -> Status {
        match self {
            LaneEdit::Queued => Status::Queued,
            LaneEdit::Running(p) => Status::Running(p.clone()),
            LaneEdit::Landed(_) => Status::Done,
            LaneEdit::Rejected(e) => Status::Rejected(e.clone()),
            LaneEdit::Undone { .. } => Status::Undone,
            LaneEdit::Cancelled => Status::Cancelled,
        }
    }

    pub fn landed(&self) -> Option<&Landed> {
        match self {
            LaneEdit::Landed(l) => Some(l),
            _ => None,
        }
    }

    /// The prompt's top predictions before and after (the latest known).
    pub fn predictions(&self) -> (&[Prediction], &[Prediction]) {
        match self {
            LaneEdit::Landed(l) => (&l.before, &l.after),
            LaneEdit::Undone { before, after } => (before, after),
            _ => (&[], &[]),
        }
    }

    fn open(&self) -> bool {
        matches!(self, LaneEdit::Queued | LaneEdit::Running(_))
    }
}

/// A fact in the queue and what each lane made of it.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueItem {
    pub id: u64,
    pub request: EditRequest,
    /// One entry per lane, in the lanes' order.
    pub lanes: Vec<LaneEdit>,
}

impl QueueItem {
    /// The fact's status over its lanes: running while a lane runs or some lanes still wait
    /// after others finished; once all are through, done if any lane landed it, else undone,
    /// rejected (the first reason) or cancelled.
    pub fn status(&self) -> Status {
        if let Some(LaneEdit::Running(p)) = self
            .lanes
            .iter()
            .find(|l| matches!(l, LaneEdit::Running(_)))
        {
            return Status::Running(p.clone());
        }
        let waiting = self
            .lanes
            .iter()
            .filter(|l| **l == LaneEdit::Queued)
            .count();
        if waiting == self.lanes.len() {
            return Status::Queued;
        }
        if waiting > 0 {
            return Status::Running(None);
        }
        let has = |f: fn(&LaneEdit) -> bool| self.lanes.iter().any(f);
        if has(|l| matches!(l, LaneEdit::Landed(_))) {
            Status::Done
        } else if has(|l| matches!(l, LaneEdit::Undone { .. })) {
            Status::Undone
        } else if let Some(e) = self.lanes.iter().find_map(|l| match l {
            LaneEdit::Rejected(e) => Some(e.clone()),
            _ => None,
        }) {
            Status::Rejected(e)
        } else {
            Status::Cancelled
        }
    }

    /// Whether some lane has still to make (or finish) this edit.
    pub fn open(&self) -> bool {
        self.lanes.iter().any(LaneEdit::open)
    }

    pub fn lane_mut(&mut self, lane: usize) -> Option<&mut LaneEdit> {
        self.lanes.get_mut(lane)
    }
}

/// What the UI knows of one lane (one editor): its method, curve, norms, probes and watch.
#[derive(Debug, Clone, PartialEq)]
pub struct LaneView {
    pub method: Method,
    pub layers: Vec<usize>,
    pub session: Option<PathBuf>,
    pub curve: Vec<CurvePoint>,
    pub norms: BTreeMap<usize, LayerHistory>,
    pub probes: Vec<ProbeResult>,
    /// The first probe results of the lane, and after how many edits they were taken.
    pub probes_baseline: Option<(usize, Vec<ProbeResult>)>,
    /// Signs of collapse seen so far (the status bar turns amber or red).
    pub watch: CollapseWatch,
}

impl LaneView {
    pub fn new(info: LaneInfo) -> Self {
        Self {
            method: info.method,
            layers: info.layers,
            session: info.session,
            curve: vec![],
            norms: BTreeMap::new(),
            probes: vec![],
            probes_baseline: None,
            watch: Default::default(),
        }
    }
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
    /// `probe [drop]`, e.g. `arc_easy 0.05`.
    Bisect,
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
    /// The editors: one, or two or three in A/B mode (every edit goes to each).
    pub lanes: Vec<LaneView>,
    pub device: String,
    pub ready: bool,
    pub queue: Vec<QueueItem>,
    pub selected: usize,
    pub next_id: u64,
    pub focus: Pane,
    pub input: String,
    pub input_error: Option<String>,
    /// The metric the A/B chart draws, one line per lane (←/→ in the chart pane).
    pub chart_metric: TokenMetric,
    pub probes_note: Option<String>,
    pub log: Vec<String>,
    pub log_scroll: usize,
    pub paused: bool,
    pub activity: Activity,
    /// The key statistics being gathered in the background, while they are.
    pub statistics: Option<StatisticsProgress>,
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
            lanes: vec![LaneView::new(LaneInfo {
                method: Method::D4s,
                layers: vec![],
                session: None,
            })],
            device: String::new(),
            ready: false,
            queue: vec![],
            selected: 0,
            next_id: 1,
            focus: Pane::Input,
            input: String::new(),
            input_error: None,
            chart_metric: TokenMetric::Efficacy,
            probes_note: None,
            log: vec![],
            log_scroll: 0,
            paused: false,
            activity: Activity::Starting,
            statistics: None,
            last_error: None,
            overlay: Overlay::None,
            should_quit: false,
            frame_ms: (0.0, 0.0),
        }
    }
}

impl App {
    /// Facts that landed (in at least one lane).
    pub fn edits_done(&self) -> usize {
        self.queue
            .iter()
            .filter(|q| q.status() == Status::Done)
            .count()
    }

    pub fn work_running(&self) -> bool {
        self.queue.iter().any(QueueItem::open)
    }

    /// The method of the next edits (the first lane's).
    pub fn method(&self) -> Method {
        self.lanes.first().map_or(Method::D4s, |l| l.method)
    }

    /// A/B mode: more than one editor.
    pub fn ab(&self) -> bool {
        self.lanes.len() > 1
    }

    /// The most severe collapse alert of any lane, with its lane.
    pub fn alert(&self) -> Option<(&LaneView, &Alert)> {
        self.lanes
            .iter()
            .filter_map(|l| l.watch.alert.as_ref().map(|a| (l, a)))
            .max_by_key(|(_, a)| a.severity)
    }

    /// The methods, as the status bar names them ("D4S vs AlphaEdit").
    pub fn methods_label(&self) -> String {
        self.lanes
            .iter()
            .map(|l| l.method.label())
            .collect::<Vec<_>>()
            .join(" vs ")
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
