//! `update(app, msg)`: the only place the TUI state changes. It returns the effects to perform
//! (commands for the worker); it does no I/O and no model work.

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use super::app::{
    fields_to_request, parse_quick, Activity, App, Overlay, Pane, PromptKind, QueueItem,
    StatisticsProgress, Status,
};
use crate::edit::{EditRequest, Method};
use crate::worker::{Command, Event};

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

/// Queues requests: new queue items and one worker command each.
pub fn enqueue(app: &mut App, requests: Vec<EditRequest>) -> Vec<Effect> {
    let mut fx = Vec::new();
    for request in requests {
        let id = app.next_id;
        app.next_id += 1;
        app.queue.push(QueueItem {
            id,
            request: request.clone(),
            method: app.method,
            status: Status::Queued,
            step: None,
            metrics: None,
            gen: None,
            answers_before: vec![],
            neighbour: None,
            answers: vec![],
            seconds: None,
            before: vec![],
            after: vec![],
            layer_deltas: vec![],
            probs: None,
        });
        fx.push(Effect::Send(Command::Edit { id, request }));
    }
    if !app.queue.is_empty() && app.focus != Pane::Queue {
        app.selected = app.queue.len() - 1;
    }
    fx
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
        KeyCode::Char('m') => {
            let sel = Method::ALL
                .iter()
                .position(|&m| m == app.method)
                .unwrap_or(0);
            open(app, Overlay::MethodPicker(sel))
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
            if m != app.method {
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
            return vec![Effect::Send(match kind {
                PromptKind::Deck => Command::LoadDeck(t),
                PromptKind::OpenSession => Command::OpenSession(t.into()),
            })];
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

fn worker_event(app: &mut App, e: Event) -> Vec<Effect> {
    match e {
        Event::Ready {
            model,
            method,
            layers,
            device,
            session,
        } => {
            app.model = model;
            app.method = method;
            app.layers = layers;
            app.device = device;
            if let Some(s) = &session {
                app.push_log(format!("journaling to {}", s.display()));
            }
            app.session = session;
            app.ready = true;
            app.activity = Activity::Idle;
            app.push_log("ready: type a fact below (subject | prompt | target), or press l to load the demo deck");
        }
        Event::Log(line) => app.push_log(line),
        Event::Started { id } => {
            if let Some(q) = app.item_mut(id) {
                q.status = Status::Running(None);
                let d = q.request.describe();
                app.push_log(format!("editing: {d}"));
            }
            app.activity = Activity::Editing(None);
        }
        Event::Progress { id, progress } => {
            app.activity = Activity::Editing(Some(progress.clone()));
            if let Some(q) = app.item_mut(id) {
                q.status = Status::Running(Some(progress));
            }
        }
        Event::Landed(l) => {
            app.watch.landed(l.id, &l.layer_deltas, l.metrics.efficacy);
            if let Some(q) = app.item_mut(l.id) {
                q.status = Status::Done;
                q.step = Some(l.step);
                q.method = l.method;
                q.metrics = Some(l.metrics);
                q.gen = Some(l.gen);
                q.answers_before = l.answers_before.clone();
                q.neighbour = l.neighbour.clone();
                q.answers = l.answers.clone();
                q.seconds = Some(l.seconds);
                q.before = l.before.clone();
                q.after = l.after.clone();
                q.layer_deltas = l.layer_deltas.clone();
                q.probs = Some((l.prob_initial, l.prob_final));
                let top = l.after.first().map(|p| p.token.clone()).unwrap_or_default();
                let d = q.request.describe();
                app.push_log(format!(
                    "landed in {:.1}s: {d} (top-1 now {top:?}, efficacy {:.2})",
                    l.seconds,
                    l.metrics.efficacy.unwrap_or(f64::NAN)
                ));
            }
            app.activity = Activity::Idle;
        }
        Event::Rejected { id, error } => {
            if let Some(q) = app.item_mut(id) {
                q.status = Status::Rejected(error.clone());
            }
            app.push_log(format!("rejected: {error}"));
            app.last_error = Some(error);
            app.activity = Activity::Idle;
        }
        Event::Cancelled { id } => {
            if let Some(q) = app.item_mut(id) {
                q.status = Status::Cancelled;
            }
            app.push_log(format!("cancelled edit #{id}"));
            app.activity = Activity::Idle;
        }
        Event::Undone { id, step, after } => {
            app.watch.undone(id);
            if let Some(q) = app.item_mut(id) {
                q.status = Status::Undone;
                q.after = after.clone();
                // Measured when the edit landed; they describe no model that exists any more.
                q.metrics = None;
                q.gen = None;
                q.answers.clear();
                q.neighbour = None;
            }
            let top = after.first().map(|p| p.token.clone()).unwrap_or_default();
            app.push_log(format!("undid step {step} (top-1 now {top:?})"));
        }
        Event::Norms { edits, layers } => {
            for l in layers {
                let h = app.norms.entry(l.layer).or_default();
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
        Event::Curve(p) => {
            app.curve.retain(|c| c.edits < p.edits);
            app.curve.push(p);
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
        Event::Probes { edits, results } => {
            if app.probes_baseline.is_none() || edits == 0 {
                app.probes_baseline = Some((edits, results.clone()));
            }
            if let Some((_, baseline)) = &app.probes_baseline {
                app.watch.probes(edits, &results, baseline);
            }
            app.probes = results;
            app.probes_note = None;
            app.push_log(format!("probes after {edits} edits"));
            app.activity = Activity::Idle;
        }
        Event::ProbesUnavailable(why) => app.probes_note = Some(why),
        Event::MethodChanged { method, layers } => {
            app.method = method;
            app.layers = layers;
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
                    q.status = Status::Cancelled;
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
