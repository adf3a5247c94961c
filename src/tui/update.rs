//! `update(app, msg)`: the only place the TUI state changes. It returns the effects to perform
//! (commands for the worker); it does no I/O and no model work.

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use super::app::{
    fields_to_request, parse_quick, Activity, App, LaneEdit, LaneView, Overlay, Pane, PromptKind,
    QueueItem, StatisticsProgress,
};
use crate::edit::{EditRequest, Method};
use crate::eval::bench::records::TokenMetric;
use crate::eval::probes::Task;
use crate::session::bisect::SessionBisection;
use crate::worker::{Command, Event, Landed};

#[derive(Debug, Clone, PartialEq)]
pub enum Msg {
    Key(KeyEvent),
    Worker(Event),
    Resize,
}

/// What the loop must do after an update.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    Send(Command),
    /// Cancel the edit in flight (a shared flag, so it is honoured within one step).
    CancelInFlight,
    Quit,
}

pub fn update(app: &mut App, msg: Msg) -> Vec<Effect> {
    match msg {
        Msg::Key(k) if k.kind == KeyEventKind::Press || k.kind == KeyEventKind::Repeat => {
            key(app, k)
        }
        Msg::Key(_) | Msg::Resize => vec![],
        Msg::Worker(e) => worker_event(app, e),
    }
}

/// Queues requests: new queue items and one worker command (a single fact's `Edit`, or a deck's
/// `EditAll`, so its facts reach the worker together).
pub fn enqueue(app: &mut App, requests: Vec<EditRequest>) -> Vec<Effect> {
    let mut edits: Vec<(u64, EditRequest)> = Vec::new();
    for request in requests {
        let id = app.next_id;
        app.next_id += 1;
        app.queue.push(QueueItem {
            id,
            request: request.clone(),
            lanes: vec![LaneEdit::Queued; app.lanes.len()],
        });
        edits.push((id, request));
    }
    if !app.queue.is_empty() && app.focus != Pane::Queue {
        app.selected = app.queue.len() - 1;
    }
    let command = match edits.len() {
        0 => return vec![],
        1 => {
            let (id, request) = edits.remove(0);
            Command::Edit { id, request }
        }
        _ => Command::EditAll(edits),
    };
    vec![Effect::Send(command)]
}

fn key(app: &mut App, k: KeyEvent) -> Vec<Effect> {
    if k.modifiers.contains(KeyModifiers::CONTROL) && k.code == KeyCode::Char('c') {
        return if app.work_running() {
            open(app, Overlay::ConfirmQuit)
        } else {
            quit(app)
        };
    }
    match app.overlay.clone() {
        Overlay::None => {}
        Overlay::Help => {
            app.overlay = Overlay::None;
            return vec![];
        }
        Overlay::ConfirmQuit => {
            return match k.code {
                KeyCode::Char('y') | KeyCode::Char('Y') => {
                    let mut fx = vec![Effect::CancelInFlight];
                    fx.extend(quit(app));
                    fx
                }
                _ => {
                    app.overlay = Overlay::None;
                    vec![]
                }
            };
        }
        Overlay::MethodPicker(sel) => return method_picker(app, sel, k),
        Overlay::Prompt(kind, text) => return prompt(app, kind, text, k),
        Overlay::Form(fields, at) => return form(app, fields, at, k),
    }
    if app.focus == Pane::Input {
        return input_key(app, k);
    }
    match k.code {
        KeyCode::Char('q') => {
            if app.work_running() {
                open(app, Overlay::ConfirmQuit)
            } else {
                quit(app)
            }
        }
        KeyCode::Tab => {
            app.focus = app.focus.next();
            vec![]
        }
        KeyCode::BackTab => {
            app.focus = app.focus.next().next().next();
            vec![]
        }
        KeyCode::Char('?') => open(app, Overlay::Help),
        KeyCode::Char('i') | KeyCode::Char('/') => {
            app.focus = Pane::Input;
            vec![]
        }
        KeyCode::Char('f') => open(app, Overlay::Form(Default::default(), 0)),
        KeyCode::Char('m') if app.ab() => {
            app.push_log(format!(
                "A/B mode compares {}; restart with other --methods to change them",
                app.methods_label()
            ));
            vec![]
        }
        KeyCode::Char('m') => {
            let sel = Method::ALL
                .iter()
                .position(|&m| m == app.method())
                .unwrap_or(0);
            open(app, Overlay::MethodPicker(sel))
        }
        KeyCode::Left | KeyCode::Right if app.focus == Pane::Charts => {
            app.chart_metric = next_chart_metric(app.chart_metric, k.code == KeyCode::Right);
            vec![]
        }
        KeyCode::Char('u') => {
            app.push_log("undo requested");
            vec![Effect::Send(Command::Undo)]
        }
        KeyCode::Char('p') => {
            app.push_log("probes requested");
            vec![Effect::Send(Command::RunProbes)]
        }
        KeyCode::Char('e') => vec![Effect::Send(Command::Evaluate)],
        KeyCode::Char('l') => open(app, Overlay::Prompt(PromptKind::Deck, "demo".into())),
        KeyCode::Char('o') => open(
            app,
            Overlay::Prompt(PromptKind::OpenSession, "sessions/".into()),
        ),
        KeyCode::Char('s') => vec![Effect::Send(Command::Save)],
        KeyCode::Char('b') => open(
            app,
            Overlay::Prompt(PromptKind::Bisect, format!("arc_easy {BISECT_DROP}")),
        ),
        KeyCode::Char(' ') => {
            let p = !app.paused;
            vec![Effect::Send(Command::Pause(p))]
        }
        KeyCode::Char('c') => {
            app.push_log("cancel requested");
            vec![Effect::CancelInFlight]
        }
        KeyCode::Char('x') => vec![Effect::Send(Command::ClearQueue)],
        KeyCode::Up | KeyCode::Char('k') => {
            scroll(app, -1);
            vec![]
        }
        KeyCode::Down | KeyCode::Char('j') => {
            scroll(app, 1);
            vec![]
        }
        KeyCode::Home => {
            app.selected = 0;
            vec![]
        }
        KeyCode::End => {
            app.selected = app.queue.len().saturating_sub(1);
            vec![]
        }
        _ => vec![],
    }
}

/// The metrics the A/B chart cycles through (every edit has these three).
const CHART_METRICS: [TokenMetric; 3] = [
    TokenMetric::Efficacy,
    TokenMetric::Paraphrase,
    TokenMetric::Specificity,
];

fn next_chart_metric(m: TokenMetric, forward: bool) -> TokenMetric {
    let n = CHART_METRICS.len();
    let at = CHART_METRICS.iter().position(|&c| c == m).unwrap_or(0);
    CHART_METRICS[if forward {
        (at + 1) % n
    } else {
        (at + n - 1) % n
    }]
}

fn scroll(app: &mut App, d: i64) {
    if app.focus == Pane::Log {
        let max = app.log.len().saturating_sub(1) as i64;
        app.log_scroll = (app.log_scroll as i64 - d).clamp(0, max) as usize;
    } else if !app.queue.is_empty() {
        let max = app.queue.len() as i64 - 1;
        app.selected = (app.selected as i64 + d).clamp(0, max) as usize;
    }
}

fn open(app: &mut App, o: Overlay) -> Vec<Effect> {
    app.overlay = o;
    vec![]
}

fn quit(app: &mut App) -> Vec<Effect> {
    app.overlay = Overlay::None;
    app.should_quit = true;
    vec![Effect::Quit]
}

fn input_key(app: &mut App, k: KeyEvent) -> Vec<Effect> {
    match k.code {
        KeyCode::Enter => {
            if app.input.trim().is_empty() {
                return vec![];
            }
            match parse_quick(&app.input) {
                Ok(r) => {
                    app.input.clear();
                    app.input_error = None;
                    enqueue(app, vec![r])
                }
                Err(e) => {
                    app.input_error = Some(e);
                    vec![]
                }
            }
        }
        KeyCode::Esc => {
            app.focus = Pane::Queue;
            vec![]
        }
        KeyCode::Tab => {
            app.focus = app.focus.next();
            vec![]
        }
        _ => {
            if edit_line(&mut app.input, k) {
                app.input_error = None;
            }
            vec![]
        }
    }
}

/// The longest line the input and the prompts take.
const MAX_LINE: usize = 2000;

/// Line editing shared by the input line, the prompts and the form fields: typing, Backspace,
/// Ctrl-U (clear the line) and Ctrl-W (delete the word before the cursor). Other keys with Ctrl
/// are not text. Returns whether the key changed the text.
fn edit_line(text: &mut String, k: KeyEvent) -> bool {
    let ctrl = k.modifiers.contains(KeyModifiers::CONTROL);
    match k.code {
        KeyCode::Backspace => text.pop().is_some(),
        KeyCode::Char('u') if ctrl => {
            let changed = !text.is_empty();
            text.clear();
            changed
        }
        KeyCode::Char('w') if ctrl => {
            let kept = text.trim_end().len();
            let word_start = text[..kept].rfind(char::is_whitespace).map_or(0, |i| i + 1);
            let changed = word_start < text.len();
            text.truncate(word_start);
            changed
        }
        KeyCode::Char(c) if !ctrl && text.chars().count() < MAX_LINE => {
            text.push(c);
            true
        }
        _ => false,
    }
}

fn method_picker(app: &mut App, sel: usize, k: KeyEvent) -> Vec<Effect> {
    let n = Method::ALL.len();
    match k.code {
        KeyCode::Up | KeyCode::Char('k') => app.overlay = Overlay::MethodPicker((sel + n - 1) % n),
        KeyCode::Down | KeyCode::Char('j') | KeyCode::Char('m') => {
            app.overlay = Overlay::MethodPicker((sel + 1) % n)
        }
        KeyCode::Enter => {
            app.overlay = Overlay::None;
            let m = Method::ALL[sel];
            if m != app.method() {
                app.push_log(format!("switching to {}", m.label()));
                return vec![Effect::Send(Command::SetMethod(m))];
            }
        }
        _ => app.overlay = Overlay::None,
    }
    vec![]
}

fn prompt(app: &mut App, kind: PromptKind, mut text: String, k: KeyEvent) -> Vec<Effect> {
    match k.code {
        KeyCode::Esc => app.overlay = Overlay::None,
        KeyCode::Enter => {
            app.overlay = Overlay::None;
            let t = text.trim().to_string();
            if t.is_empty() {
                return vec![];
            }
            return match kind {
                PromptKind::Deck => vec![Effect::Send(Command::LoadDeck(t))],
                PromptKind::OpenSession => vec![Effect::Send(Command::OpenSession(t.into()))],
                PromptKind::Bisect => match parse_bisect(&t) {
                    Ok((probe, drop)) => {
                        app.push_log(format!(
                            "bisect requested: the first edit after which {probe} fell more than {drop}"
                        ));
                        vec![Effect::Send(Command::Bisect { probe, drop })]
                    }
                    Err(e) => {
                        app.push_log(format!("bisect: {e}"));
                        app.last_error = Some(e);
                        vec![]
                    }
                },
            };
        }
        _ => {
            edit_line(&mut text, k);
            app.overlay = Overlay::Prompt(kind, text);
        }
    }
    vec![]
}

fn form(app: &mut App, mut fields: [String; 5], at: usize, k: KeyEvent) -> Vec<Effect> {
    match k.code {
        KeyCode::Esc => {
            app.overlay = Overlay::None;
            app.input_error = None;
        }
        KeyCode::Tab | KeyCode::Down => app.overlay = Overlay::Form(fields, (at + 1) % 5),
        KeyCode::BackTab | KeyCode::Up => app.overlay = Overlay::Form(fields, (at + 4) % 5),
        KeyCode::Enter => {
            let f: [&str; 5] = [&fields[0], &fields[1], &fields[2], &fields[3], &fields[4]];
            match fields_to_request(&f) {
                Ok(r) => {
                    app.overlay = Overlay::None;
                    app.input_error = None;
                    return enqueue(app, vec![r]);
                }
                Err(e) => {
                    app.input_error = Some(e);
                    app.overlay = Overlay::Form(fields, at);
                }
            }
        }
        _ => {
            if edit_line(&mut fields[at], k) {
                app.input_error = None;
            }
            app.overlay = Overlay::Form(fields, at);
        }
    }
    vec![]
}

/// The drop the bisect prompt suggests (as `d4s bisect`'s default).
const BISECT_DROP: f64 = 0.05;

/// `probe [drop]`: the task and how far below the unedited model counts as fallen.
fn parse_bisect(text: &str) -> Result<(Task, f64), String> {
    let mut words = text.split_whitespace();
    let probe: Task = words
        .next()
        .ok_or("write: probe [drop], e.g. arc_easy 0.05")?
        .parse()
        .map_err(|e| format!("{e}"))?;
    let drop = match words.next() {
        None => BISECT_DROP,
        Some(d) => d
            .parse::<f64>()
            .ok()
            .filter(|d| d.is_finite() && *d > 0.0 && *d < 1.0)
            .ok_or_else(|| format!("the drop {d:?} is not a number between 0 and 1"))?,
    };
    if words.next().is_some() {
        return Err("write: probe [drop], e.g. arc_easy 0.05".into());
    }
    Ok((probe, drop))
}

/// Most skipped records a deck names in the log; the rest are counted.
const SKIPPED_SHOWN: usize = 5;

/// One line for the deck, then one per skipped record saying where and why.
fn log_deck(app: &mut App, source: &str, loaded: usize, skipped: &[String]) {
    let note = match skipped.len() {
        0 => String::new(),
        n => format!(" ({n} bad records skipped:)"),
    };
    app.push_log(format!("loaded {loaded} facts from {source}{note}"));
    for why in skipped.iter().take(SKIPPED_SHOWN) {
        app.push_log(format!("  skipped {why}"));
    }
    if skipped.len() > SKIPPED_SHOWN {
        app.push_log(format!("  … and {} more", skipped.len() - SKIPPED_SHOWN));
    }
}

/// "AlphaEdit: " in A/B mode, where a log line must say which lane it is about; nothing
/// otherwise.
fn lane_tag(app: &App, lane: usize) -> String {
    match app.lanes.get(lane) {
        Some(l) if app.ab() => format!("{}: ", l.method.label()),
        _ => String::new(),
    }
}

/// Sets lane `lane`'s part of edit `id` (an unknown id or lane, a worker bug, changes nothing).
fn set_lane(app: &mut App, id: u64, lane: usize, edit: LaneEdit) {
    if let Some(l) = app.item_mut(id).and_then(|q| q.lane_mut(lane)) {
        *l = edit;
    }
}

/// After a lane finished with edit `id`: idle unless another lane still has it to make.
fn lane_finished(app: &mut App, id: u64) {
    if !app.item_mut(id).is_some_and(|q| q.open()) {
        app.activity = Activity::Idle;
    }
}

fn landed(app: &mut App, l: Box<Landed>) {
    let (id, lane) = (l.id, l.lane);
    if let Some(view) = app.lanes.get_mut(lane) {
        view.watch.landed(id, &l.layer_deltas, l.metrics.efficacy);
    }
    let top = l.after.first().map(|p| p.token.clone()).unwrap_or_default();
    let (seconds, efficacy) = (l.seconds, l.metrics.efficacy.unwrap_or(f64::NAN));
    let tag = lane_tag(app, lane);
    if let Some(q) = app.item_mut(id) {
        let fact = q.request.describe();
        if let Some(slot) = q.lane_mut(lane) {
            *slot = LaneEdit::Landed(l);
        }
        app.push_log(format!(
            "{tag}landed in {seconds:.1}s: {fact} (top-1 now {top:?}, efficacy {efficacy:.2})"
        ));
    }
    lane_finished(app, id);
}

fn worker_event(app: &mut App, e: Event) -> Vec<Effect> {
    match e {
        Event::Ready {
            model,
            device,
            lanes,
        } => {
            app.model = model;
            app.device = device;
            app.lanes = lanes.into_iter().map(LaneView::new).collect();
            // A deck given on the command line can be queued before the worker says how many
            // lanes it edits in (the desk answers before the engine is up); nothing has started.
            for q in &mut app.queue {
                q.lanes.resize(app.lanes.len(), LaneEdit::Queued);
            }
            for lane in 0..app.lanes.len() {
                if let Some(s) = app.lanes[lane].session.clone() {
                    let tag = lane_tag(app, lane);
                    app.push_log(format!("{tag}journaling to {}", s.display()));
                }
            }
            app.ready = true;
            app.activity = Activity::Idle;
            if app.ab() {
                app.push_log(format!(
                    "A/B mode: every fact is edited by {}, each in its own copy of the edited layers",
                    app.methods_label()
                ));
            }
            app.push_log("ready: type a fact below (subject | prompt | target), or press l to load the demo deck");
        }
        Event::Log(line) => app.push_log(line),
        Event::Started { id, lane } => {
            let tag = lane_tag(app, lane);
            if let Some(q) = app.item_mut(id) {
                let d = q.request.describe();
                if let Some(l) = q.lane_mut(lane) {
                    *l = LaneEdit::Running(None);
                }
                app.push_log(format!("{tag}editing: {d}"));
            }
            app.activity = Activity::Editing {
                lane,
                progress: None,
            };
        }
        Event::Progress { id, lane, progress } => {
            app.activity = Activity::Editing {
                lane,
                progress: Some(progress.clone()),
            };
            set_lane(app, id, lane, LaneEdit::Running(Some(progress)));
        }
        Event::Landed(l) => landed(app, l),
        Event::Rejected { id, lane, error } => {
            let lanes = match lane {
                Some(lane) => lane..lane + 1,
                None => 0..app.lanes.len(),
            };
            let tag = lane.map(|l| lane_tag(app, l)).unwrap_or_default();
            for lane in lanes {
                set_lane(app, id, lane, LaneEdit::Rejected(error.clone()));
            }
            app.push_log(format!("{tag}rejected: {error}"));
            app.last_error = Some(error);
            lane_finished(app, id);
        }
        Event::Cancelled { id } => {
            if let Some(q) = app.item_mut(id) {
                for l in q.lanes.iter_mut().filter(|l| l.landed().is_none()) {
                    *l = LaneEdit::Cancelled;
                }
            }
            app.push_log(format!("cancelled edit #{id}"));
            app.activity = Activity::Idle;
        }
        Event::Undone {
            id,
            lane,
            step,
            after,
        } => {
            if let Some(view) = app.lanes.get_mut(lane) {
                view.watch.undone(id);
            }
            let tag = lane_tag(app, lane);
            if let Some(slot) = app.item_mut(id).and_then(|q| q.lane_mut(lane)) {
                let before = slot.predictions().0.to_vec();
                *slot = LaneEdit::Undone {
                    before,
                    after: after.clone(),
                };
            }
            let top = after.first().map(|p| p.token.clone()).unwrap_or_default();
            app.push_log(format!("{tag}undid step {step} (top-1 now {top:?})"));
        }
        Event::Norms {
            lane,
            edits,
            layers,
        } => {
            let Some(view) = app.lanes.get_mut(lane) else {
                return vec![];
            };
            for l in layers {
                let h = view.norms.entry(l.layer).or_default();
                if let (true, true, Some(w0)) = (h.weight.is_empty(), edits > 0, l.w0_l1_mean) {
                    // The first report comes after one edit; start the line at the unedited value.
                    h.weight.push(w0);
                    h.delta.push(0.0);
                }
                h.weight.push(l.l1_mean);
                h.delta.push(l.delta_l1_mean);
                if h.weight.len() > 400 {
                    h.weight.remove(1);
                    h.delta.remove(1);
                }
            }
        }
        Event::Evaluating => app.activity = Activity::Evaluating,
        Event::Curve { lane, point } => {
            if let Some(view) = app.lanes.get_mut(lane) {
                view.curve.retain(|c| c.edits < point.edits);
                view.curve.push(point);
            }
            if app.activity == Activity::Evaluating {
                app.activity = Activity::Idle;
            }
        }
        Event::Statistics {
            done,
            total,
            elapsed_s,
        } => app.statistics = Some(StatisticsProgress::new(done, total, elapsed_s)),
        Event::StatisticsReady { seconds, computed } => {
            app.statistics = None;
            if computed {
                app.push_log(format!(
                    "key statistics gathered in {seconds:.0} s (once per model; cached for next time)"
                ));
            }
        }
        Event::ProbesStarted => {
            app.activity = Activity::Probing;
            app.push_log("running probes…");
        }
        Event::Probes {
            lane,
            edits,
            results,
        } => {
            let tag = lane_tag(app, lane);
            let last = lane + 1 == app.lanes.len();
            let Some(view) = app.lanes.get_mut(lane) else {
                return vec![];
            };
            if view.probes_baseline.is_none() || edits == 0 {
                view.probes_baseline = Some((edits, results.clone()));
            }
            if let Some((_, baseline)) = &view.probes_baseline {
                view.watch.probes(edits, &results, baseline);
            }
            view.probes = results;
            app.probes_note = None;
            app.push_log(format!("{tag}probes after {edits} edits"));
            if last {
                app.activity = Activity::Idle;
            }
        }
        Event::ProbesUnavailable(why) => app.probes_note = Some(why),
        Event::Bisecting { lane, probe } => {
            app.activity = Activity::Bisecting { lane, probe };
            let tag = lane_tag(app, lane);
            app.push_log(format!(
                "{tag}bisecting the journal on {probe} (each probed prefix is restored on a copy of the unedited model)"
            ));
        }
        Event::BisectStep { lane, k, score } => {
            let tag = lane_tag(app, lane);
            app.push_log(format!("{tag}bisect: after {k} edits {score:.3}"));
        }
        Event::Bisected {
            lane,
            probe,
            drop,
            found,
        } => bisected(app, lane, probe, drop, found),
        Event::MethodChanged { method, layers } => {
            if let Some(view) = app.lanes.first_mut() {
                view.method = method;
                view.layers = layers;
            }
        }
        Event::Paused(p) => {
            app.paused = p;
            app.push_log(if p {
                "paused: queued edits wait (space resumes)"
            } else {
                "resumed"
            });
        }
        Event::Idle => app.activity = Activity::Idle,
        Event::Deck {
            source,
            requests,
            skipped,
        } => {
            log_deck(app, &source, requests.len(), &skipped);
            return enqueue(app, requests);
        }
        Event::QueueCleared { ids, in_flight } => {
            for &id in &ids {
                if let Some(q) = app.item_mut(id) {
                    for l in q.lanes.iter_mut().filter(|l| **l == LaneEdit::Queued) {
                        *l = LaneEdit::Cancelled;
                    }
                }
            }
            let running = if in_flight {
                "; the edit in flight goes on (c cancels it)"
            } else {
                ""
            };
            app.push_log(match ids.len() {
                0 => format!("no queued edits to drop{running}"),
                n => format!("dropped {n} queued edits{running}"),
            });
        }
        Event::Error(e) => {
            app.push_log(format!("error: {e}"));
            app.last_error = Some(e);
        }
        Event::Panicked(e) => {
            app.push_log(format!("worker panic: {e}"));
            app.last_error = Some(e);
            app.activity = Activity::Recovered;
        }
    }
    vec![]
}

/// A bisection's answer: the log says which edit (and selects it in the queue when it is there).
fn bisected(app: &mut App, lane: usize, probe: Task, drop: f64, found: SessionBisection) {
    let tag = lane_tag(app, lane);
    let base = found.bisection.baseline;
    match &found.culprit {
        Some(c) => {
            let at = app.queue.iter().position(|q| {
                q.lanes
                    .get(lane)
                    .and_then(LaneEdit::landed)
                    .is_some_and(|l| l.step == c.step)
            });
            let shown = match at {
                Some(i) => {
                    app.selected = i;
                    format!(" (#{} in the queue, selected)", app.queue[i].id)
                }
                None => String::new(),
            };
            app.push_log(format!(
                "{tag}bisect: {probe} first fell more than {drop} below the unedited {base:.3} after edit {} of {}: {}{shown}",
                c.k, found.steps, c.fact
            ));
        }
        None => app.push_log(format!(
            "{tag}bisect: no prefix of the {} edits fell more than {drop} below the unedited {probe} {base:.3}",
            found.steps
        )),
    }
    if lane + 1 == app.lanes.len() {
        app.activity = Activity::Idle;
    }
}
