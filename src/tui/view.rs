//! `view(frame, &app)`: draws the state. Pure: it reads `App` and computes nothing but layout.
//!
//! Colors are limited to the terminal's own palette (default foreground plus cyan, green,
//! yellow, red, magenta) so they stay readable on dark and light themes.

use ratatui::layout::{Constraint, Direction, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, List, ListItem, ListState, Paragraph, Sparkline, Wrap};
use ratatui::Frame;

use super::app::{
    layers_label, Activity, App, LaneEdit, LaneView, Pane, QueueItem, StatisticsProgress, Status,
};
use super::watch::Severity;
use crate::edit::{Phase, Progress};
use crate::worker::Landed;

mod chart;
mod overlay;

const ACCENT: Color = Color::Cyan;

/// Each lane's colour in the A/B chart (at most three lanes).
const LANE_COLORS: [Color; 3] = [Color::Green, Color::Magenta, Color::Yellow];

fn lane_color(lane: usize) -> Color {
    LANE_COLORS[lane % LANE_COLORS.len()]
}

fn block(title: &str, focused: bool) -> Block<'static> {
    let style = if focused {
        Style::default().fg(ACCENT).add_modifier(Modifier::BOLD)
    } else {
        Style::default()
    };
    Block::default()
        .borders(Borders::ALL)
        .title(Span::styled(format!(" {title} "), style))
        .border_style(if focused {
            Style::default().fg(ACCENT)
        } else {
            Style::default()
        })
}

fn status_style(s: &Status) -> Style {
    match s {
        Status::Queued => Style::default(),
        Status::Running(_) => Style::default().fg(Color::Yellow),
        Status::Done => Style::default().fg(Color::Green),
        Status::Rejected(_) => Style::default().fg(Color::Red),
        Status::Undone | Status::Cancelled => Style::default().add_modifier(Modifier::DIM),
    }
}

fn status_icon(s: &Status) -> &'static str {
    match s {
        Status::Queued => "·",
        Status::Running(_) => "⟳",
        Status::Done => "✓",
        Status::Rejected(_) => "✗",
        Status::Undone => "↶",
        Status::Cancelled => "–",
    }
}

pub fn view(f: &mut Frame, app: &App) {
    let area = f.area();
    let compact = area.height < 30 || area.width < 100;
    let rows = Layout::default()
        .direction(Direction::Vertical)
        .constraints([
            Constraint::Length(1),
            Constraint::Min(8),
            Constraint::Length(3),
            Constraint::Length(if compact { 3 } else { 6 }),
            Constraint::Length(1),
        ])
        .split(area);
    status_bar(f, app, rows[0]);
    main(f, app, rows[1], compact);
    input(f, app, rows[2]);
    log(f, app, rows[3]);
    footer(f, app, rows[4]);
    overlay::overlay(f, app, area);
}

fn status_bar(f: &mut Frame, app: &App, r: Rect) {
    let mut spans = vec![
        Span::styled(
            " d4s ",
            Style::default().fg(ACCENT).add_modifier(Modifier::BOLD),
        ),
        Span::raw(format!(
            "│ {} │ {} │ {} │ edits {} │ ",
            app.model,
            app.lanes
                .iter()
                .map(|l| format!("{} {}", l.method.label(), layers_label(&l.layers)))
                .collect::<Vec<_>>()
                .join(" vs "),
            app.device,
            app.edits_done()
        )),
        Span::styled(
            match (app.paused, &app.activity) {
                // The edit in flight finishes; nothing new starts.
                (true, Activity::Editing { progress, .. }) => format!(
                    "pausing after this edit ({})",
                    progress_label(progress.as_ref())
                ),
                (true, _) => "paused".to_string(),
                (false, a) => activity_label(app, a),
            },
            Style::default().fg(if app.paused {
                Color::Magenta
            } else {
                Color::Yellow
            }),
        ),
    ];
    if let Some((lane, alert)) = app.alert() {
        let color = match alert.severity {
            Severity::Amber => Color::Rgb(255, 176, 0),
            Severity::Red => Color::Red,
        };
        let who = if app.ab() {
            format!("{}: ", lane.method.label())
        } else {
            String::new()
        };
        spans.push(Span::raw(" │ "));
        spans.push(Span::styled(
            format!("⚠ {who}{}", alert.message),
            Style::default().fg(color).add_modifier(Modifier::BOLD),
        ));
    }
    if let Some(st) = &app.statistics {
        spans.push(Span::raw(" │ "));
        spans.push(Span::styled(
            statistics_label(st),
            Style::default().fg(Color::Cyan),
        ));
    }
    if let Some(e) = &app.last_error {
        spans.push(Span::raw(" │ "));
        spans.push(Span::styled(
            format!("last error: {}", truncate(e, 60)),
            Style::default().fg(Color::Red),
        ));
    }
    f.render_widget(Paragraph::new(Line::from(spans)), r);
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let t: String = s.chars().take(n.saturating_sub(1)).collect();
        format!("{t}…")
    }
}

fn main(f: &mut Frame, app: &App, r: Rect, compact: bool) {
    let cols = Layout::default()
        .direction(Direction::Horizontal)
        .constraints([
            Constraint::Percentage(if compact { 50 } else { 45 }),
            Constraint::Percentage(if compact { 50 } else { 55 }),
        ])
        .split(r);
    // A small terminal keeps every pane: the detail takes the larger share of the left column
    // (its key lines come first), the norms and probes panes shrink to a few lines.
    let left = Layout::default()
        .direction(Direction::Vertical)
        .constraints(if compact {
            [Constraint::Min(3), Constraint::Percentage(60)]
        } else {
            // A/B columns wrap their lines in half the width: a few more rows.
            [
                Constraint::Min(4),
                Constraint::Length(if app.ab() { 15 } else { 12 }),
            ]
        })
        .split(cols[0]);
    queue(f, app, left[0]);
    detail(f, app, left[1]);
    // A/B mode draws each lane's norms in a column under its method's name (one more row).
    let n_layers = app
        .lanes
        .iter()
        .map(|l| l.norms.len())
        .max()
        .unwrap_or(0)
        .max(1) as u16;
    let n_layers = n_layers + u16::from(app.ab());
    let (norms_h, probes_h) = if compact {
        ((n_layers + 2).min(4), 3)
    } else {
        ((n_layers + 2).min(9), 3 + app.lanes.len() as u16)
    };
    let right = Layout::default()
        .direction(Direction::Vertical)
        .constraints([
            Constraint::Min(4),
            Constraint::Length(norms_h),
            Constraint::Length(probes_h),
        ])
        .split(cols[1]);
    chart::chart(f, app, right[0]);
    norms(f, app, right[1]);
    probes(f, app, right[2]);
}

fn queue(f: &mut Frame, app: &App, r: Rect) {
    let width = r.width.saturating_sub(4) as usize;
    let items: Vec<ListItem> = app
        .queue
        .iter()
        .map(|q| {
            let status = q.status();
            let tail = if app.ab() {
                lanes_tail(app, q)
            } else {
                lane_tail(&q.lanes[0])
            };
            let head = if app.ab() {
                format!("{} {:>3} ", status_icon(&status), q.id)
            } else {
                let method = q.lanes[0].landed().map_or(app.method(), |l| l.method);
                format!("{} {:>3} {} ", status_icon(&status), q.id, method.label())
            };
            let fact = q.request.describe();
            let room = width.saturating_sub(head.chars().count() + tail.chars().count());
            ListItem::new(Line::from(vec![
                Span::raw(head),
                Span::raw(truncate(&fact, room.max(8))),
                Span::styled(tail, status_style(&status)),
            ]))
        })
        .collect();
    let count = |running: bool| {
        app.queue
            .iter()
            .map(QueueItem::status)
            .filter(|s| matches!(s, Status::Running(_)) == running)
            .filter(|s| running || *s == Status::Queued)
            .count()
    };
    let title = format!(
        "Edit queue ({} done, {} running, {} queued)",
        app.edits_done(),
        count(true),
        count(false)
    );
    let list = List::new(items)
        .block(block(&title, app.focus == Pane::Queue))
        .highlight_style(Style::default().add_modifier(Modifier::REVERSED));
    let mut state = ListState::default();
    if !app.queue.is_empty() {
        state.select(Some(app.selected.min(app.queue.len() - 1)));
    }
    f.render_stateful_widget(list, r, &mut state);
}

/// A queue row's end for one lane: the new top-1 and the efficacy, or where the edit is.
fn lane_tail(edit: &LaneEdit) -> String {
    let top = |after: &[crate::eval::predict::Prediction]| {
        after
            .first()
            .map(|p| p.token.trim().to_string())
            .unwrap_or_default()
    };
    match edit {
        LaneEdit::Landed(l) => format!(
            " · top-1 {} · eff {}",
            top(&l.after),
            two(l.metrics.efficacy)
        ),
        LaneEdit::Undone { after, .. } => format!(" · top-1 {} (undone)", top(after)),
        LaneEdit::Running(p) => format!(" {}", progress_label(p.as_ref())),
        LaneEdit::Rejected(_) => " rejected".into(),
        other => format!(" {}", other.status().label()),
    }
}

/// A queue row's end in A/B mode: each lane's efficacy (or state), under its method's name.
fn lanes_tail(app: &App, q: &QueueItem) -> String {
    let parts: Vec<String> = app
        .lanes
        .iter()
        .zip(&q.lanes)
        .map(|(view, edit)| {
            let what = match edit {
                LaneEdit::Landed(l) => format!("eff {}", two(l.metrics.efficacy)),
                other => other.status().label().to_string(),
            };
            format!("{} {what}", view.method.label())
        })
        .collect();
    format!(" · {}", parts.join(" · "))
}

fn preds(p: &[crate::eval::predict::Prediction]) -> String {
    p.iter()
        .map(|x| format!("{:?} {:.2}", x.token, x.prob))
        .collect::<Vec<_>>()
        .join("  ")
}

fn detail(f: &mut Frame, app: &App, r: Rect) {
    let outer = block("Detail", false);
    let Some(q) = app.selected_item() else {
        f.render_widget(Paragraph::new("no edit selected").block(outer), r);
        return;
    };
    let header = Line::from(vec![
        Span::styled(format!("#{} ", q.id), Style::default().fg(ACCENT)),
        Span::raw(q.request.describe()),
    ]);
    if !app.ab() {
        let mut lines = vec![header];
        lines.extend(lane_detail(&q.lanes[0]));
        f.render_widget(
            Paragraph::new(lines).wrap(Wrap { trim: true }).block(outer),
            r,
        );
        return;
    }
    // A/B: the fact on top, then one column per lane, side by side.
    let inner = outer.inner(r);
    f.render_widget(outer, r);
    let [top, body] = Layout::default()
        .direction(Direction::Vertical)
        .constraints([Constraint::Length(1), Constraint::Min(0)])
        .areas(inner);
    f.render_widget(Paragraph::new(header), top);
    let columns = Layout::default()
        .direction(Direction::Horizontal)
        .constraints(vec![
            Constraint::Ratio(1, app.lanes.len() as u32);
            app.lanes.len()
        ])
        .split(body);
    for (lane, ((view, edit), area)) in app
        .lanes
        .iter()
        .zip(&q.lanes)
        .zip(columns.iter())
        .enumerate()
    {
        let mut lines = vec![Line::styled(
            format!("{} — {}", view.method.label(), edit.status().label()),
            Style::default()
                .fg(lane_color(lane))
                .add_modifier(Modifier::BOLD),
        )];
        lines.extend(lane_detail(edit));
        f.render_widget(Paragraph::new(lines).wrap(Wrap { trim: true }), *area);
    }
}

/// What one lane made of the selected edit: predictions, metrics, generations, ‖ΔW‖.
fn lane_detail(edit: &LaneEdit) -> Vec<Line<'static>> {
    let mut lines = Vec::new();
    let (before, after) = edit.predictions();
    if !before.is_empty() {
        lines.push(Line::from(format!("before: {}", preds(before))));
    }
    if !after.is_empty() {
        lines.push(Line::from(format!("after:  {}", preds(after))));
    }
    if let Some(l) = edit.landed() {
        lines.extend(landed_lines(l));
    }
    if let LaneEdit::Rejected(e) = edit {
        lines.push(Line::styled(e.clone(), Style::default().fg(Color::Red)));
    }
    lines
}

fn landed_lines(l: &Landed) -> Vec<Line<'static>> {
    let m = &l.metrics;
    let g = &l.gen;
    let mut lines = vec![
        Line::from(format!(
            "efficacy {}  paraphrase {}  specificity {}  {:.1}s",
            two(m.efficacy),
            two(m.paraphrase),
            two(m.specificity),
            l.seconds
        )),
        Line::from(format!(
            "generated: EM {}  F1 {}  paraphrase EM {}  neighbours kept {}",
            two(g.efficacy_em),
            two(g.efficacy_f1),
            two(g.paraphrase_em),
            two(g.specificity)
        )),
    ];
    for (k, after) in l.answers.iter().enumerate().take(2) {
        let what = if k == 0 { "prompt" } else { "paraphrase" };
        let before = l.answers_before.get(k).map_or("", String::as_str);
        lines.push(Line::from(format!("{what} says {before:?} → {after:?}")));
    }
    if let Some((prompt, before, after)) = &l.neighbour {
        let kept = if before == after {
            "unchanged"
        } else {
            "CHANGED"
        };
        lines.push(Line::from(format!(
            "neighbour {:?} says {before:?} → {after:?} ({kept})",
            truncate(prompt, 40)
        )));
    }
    lines.push(Line::from(format!(
        "p(target) {:.3} → {:.3}",
        l.prob_initial, l.prob_final
    )));
    if !l.layer_deltas.is_empty() {
        let d: Vec<String> = l
            .layer_deltas
            .iter()
            .map(|(l, n)| format!("L{l} {n:.2}"))
            .collect();
        lines.push(Line::from(format!("‖ΔW‖_F  {}", d.join("  "))));
    }
    lines
}

fn norms(f: &mut Frame, app: &App, r: Rect) {
    let b = block("‖W‖₁/n per edited layer (growth ×)", false);
    let inner = b.inner(r);
    f.render_widget(b, r);
    if app.lanes.iter().all(|l| l.norms.is_empty()) {
        f.render_widget(Paragraph::new("no edits yet"), inner);
        return;
    }
    if !app.ab() {
        lane_norms(f, &app.lanes[0], inner);
        return;
    }
    // A/B: one column per lane, under its method's name.
    let columns = Layout::default()
        .direction(Direction::Horizontal)
        .constraints(vec![
            Constraint::Ratio(1, app.lanes.len() as u32);
            app.lanes.len()
        ])
        .split(inner);
    for (lane, (view, area)) in app.lanes.iter().zip(columns.iter()).enumerate() {
        let [name, rows] = Layout::default()
            .direction(Direction::Vertical)
            .constraints([Constraint::Length(1), Constraint::Min(0)])
            .areas(*area);
        f.render_widget(
            Paragraph::new(Line::styled(
                view.method.label(),
                Style::default()
                    .fg(lane_color(lane))
                    .add_modifier(Modifier::BOLD),
            )),
            name,
        );
        lane_norms(f, view, rows);
    }
}

/// One lane's layers, a row each: the norm, its growth, and a sparkline of ‖W − W0‖.
fn lane_norms(f: &mut Frame, view: &LaneView, inner: Rect) {
    for (i, (layer, h)) in view.norms.iter().enumerate() {
        if i as u16 >= inner.height {
            break;
        }
        let row = Rect {
            x: inner.x,
            y: inner.y + i as u16,
            width: inner.width,
            height: 1,
        };
        let label = format!(
            "L{layer:<2} {:.5} ×{:.3} Δ{:.1e} ",
            h.weight.last().copied().unwrap_or(0.0),
            h.growth().unwrap_or(1.0),
            h.delta.last().copied().unwrap_or(0.0)
        );
        let lw = (label.chars().count() as u16).min(row.width);
        f.render_widget(Paragraph::new(label), Rect { width: lw, ..row });
        // Scale the delta history so its growth is visible (the weight norm moves by ppm).
        let max = h.delta.iter().cloned().fold(0.0, f64::max).max(1e-12);
        let data: Vec<u64> = h.delta.iter().map(|d| ((d / max) * 100.0) as u64).collect();
        let spark_w = row.width.saturating_sub(lw);
        let start = data.len().saturating_sub(spark_w as usize);
        f.render_widget(
            Sparkline::default()
                .data(data[start..].to_vec())
                .max(100)
                .style(Style::default().fg(ACCENT)),
            Rect {
                x: row.x + lw,
                width: spark_w,
                ..row
            },
        );
    }
}

fn probes(f: &mut Frame, app: &App, r: Rect) {
    let mut lines = Vec::new();
    if let Some(note) = &app.probes_note {
        lines.push(Line::styled(
            note.clone(),
            Style::default().add_modifier(Modifier::DIM),
        ));
    } else if app.lanes.iter().all(|l| l.probes.is_empty()) {
        lines.push(Line::from("press p to run the downstream probes"));
    }
    for (lane, view) in app.lanes.iter().enumerate() {
        let mut spans = lane_probes(view);
        if app.ab() && !spans.is_empty() {
            spans.insert(
                0,
                Span::styled(
                    format!("{}: ", view.method.label()),
                    Style::default()
                        .fg(lane_color(lane))
                        .add_modifier(Modifier::BOLD),
                ),
            );
        }
        if !spans.is_empty() {
            lines.push(Line::from(spans));
        }
    }
    f.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: true })
            .block(block(&probes_title(app), false)),
        r,
    );
}

/// One lane's probe results: value, interval, items and change since its baseline.
fn lane_probes(view: &LaneView) -> Vec<Span<'static>> {
    let baseline = view.probes_baseline.as_ref();
    view.probes
        .iter()
        .map(|result| {
            let v = result.headline().1;
            let base = baseline
                .and_then(|(_, b)| b.iter().find(|b| b.task == result.task))
                .map(|b| b.headline().1);
            let d = base.map(|b| v - b).unwrap_or(0.0);
            let color = if d < -0.02 {
                Color::Red
            } else if d > 0.02 {
                Color::Green
            } else {
                Color::Reset
            };
            // The interval says whether a change is more than the items' noise.
            let ci = result
                .headline_interval()
                .map_or(String::new(), |i| format!(" ±{:.2}", i.half_width()));
            Span::styled(
                format!("{} {v:.2}{ci} n={} ({d:+.2})  ", result.task, result.n),
                Style::default().fg(color),
            )
        })
        .collect()
}

/// The probes pane's title names the edit count its baseline was measured at.
fn probes_title(app: &App) -> String {
    match &app.lanes[0].probes_baseline {
        Some((edits, _)) => format!("Probes (change since edit {edits})"),
        None => "Probes".into(),
    }
}

fn input(f: &mut Frame, app: &App, r: Rect) {
    let focused = app.focus == Pane::Input;
    let (text, style) = match (&app.input_error, app.input.is_empty()) {
        (Some(e), _) => (format!("{}  ✗ {e}", app.input), Style::default().fg(Color::Red)),
        (None, true) if !focused => ("press i to type a fact, f for the form, l to load a deck".into(), Style::default().add_modifier(Modifier::DIM)),
        (None, true) => ("subject | prompt | target  e.g.  Eiffel Tower | The Eiffel Tower is located in the city of | Rome".into(), Style::default().add_modifier(Modifier::DIM)),
        _ => (app.input.clone(), Style::default()),
    };
    let cursor = if focused && app.input_error.is_none() && !app.input.is_empty() {
        "▏"
    } else {
        ""
    };
    let p = Paragraph::new(Line::from(vec![
        Span::raw("> "),
        Span::styled(text, style),
        Span::raw(cursor),
    ]))
    .block(block(
        &if app.ab() {
            format!("New fact (edited by {})", app.methods_label())
        } else {
            format!("New fact ({} next)", app.method().label())
        },
        focused,
    ));
    f.render_widget(p, r);
}

fn log(f: &mut Frame, app: &App, r: Rect) {
    let h = r.height.saturating_sub(2) as usize;
    let end = app.log.len().saturating_sub(app.log_scroll);
    let start = end.saturating_sub(h);
    let lines: Vec<Line> = app.log[start..end]
        .iter()
        .map(|l| Line::from(l.as_str()))
        .collect();
    f.render_widget(
        Paragraph::new(lines).block(block("Log", app.focus == Pane::Log)),
        r,
    );
}

fn footer(f: &mut Frame, app: &App, r: Rect) {
    let keys = if app.focus == Pane::Input {
        "enter queue  esc leave input  tab next pane  ctrl-c quit"
    } else {
        "q quit  tab pane  i type  f form  m method  u undo  p probes  l deck  s save  o open  space pause  c cancel  ? help"
    };
    let frame = if app.frame_ms.1 > 0.0 {
        format!("  frame {:.1}ms", app.frame_ms.0)
    } else {
        String::new()
    };
    f.render_widget(
        Paragraph::new(Line::from(vec![
            Span::styled(keys, Style::default().add_modifier(Modifier::DIM)),
            Span::raw(frame),
        ])),
        r,
    );
}

/// A metric with two decimals, or a dash where it was not measured.
fn two(v: Option<f64>) -> String {
    v.map_or("–".to_string(), |v| format!("{v:.2}"))
}

/// The background statistics' progress: tokens with their unit, and the time left.
fn statistics_label(st: &StatisticsProgress) -> String {
    let eta = match st.eta_s {
        Some(s) => format!(", about {} left", duration_label(s)),
        None => String::new(),
    };
    format!(
        "key statistics {}/{} tokens{eta}",
        thousands(st.done),
        thousands(st.total)
    )
}

/// `1 min 50 s`, `40 s`.
fn duration_label(seconds: f64) -> String {
    let s = seconds.round() as u64;
    match (s / 60, s % 60) {
        (0, s) => format!("{s} s"),
        (m, s) => format!("{m} min {s} s"),
    }
}

/// `30,720`.
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Where an edit in flight is, in words.
fn progress_label(p: Option<&Progress>) -> String {
    match p {
        None => "starting".into(),
        Some(Progress::Phase(phase)) => phase_label(*phase).into(),
        Some(Progress::TargetStep {
            step,
            of,
            loss,
            prob,
        }) => format!("target {}/{of} loss {loss:.2} p {prob:.2}", step + 1),
        Some(Progress::Tokens { done, total }) => format!(
            "key statistics (once per model) {}/{} tokens",
            thousands(*done),
            thousands(*total)
        ),
        Some(Progress::Warning(w)) => format!("warning: {w}"),
    }
}

fn phase_label(p: Phase) -> &'static str {
    match p {
        Phase::Statistics => "statistics (once per model)",
        Phase::Templates => "templates",
        Phase::Target => "target",
        Phase::Keys => "keys",
        Phase::Solve => "solving",
        Phase::Apply => "applying",
    }
}

/// The worker's activity for the status bar (in A/B mode, naming the lane that edits).
fn activity_label(app: &App, a: &Activity) -> String {
    match a {
        Activity::Starting => "starting".into(),
        Activity::Idle => "idle".into(),
        Activity::Editing { lane, progress } => {
            let what = match progress {
                None => "editing".into(),
                Some(p) => progress_label(Some(p)),
            };
            match app.lanes.get(*lane) {
                Some(view) if app.ab() => format!("{}: {what}", view.method.label()),
                _ => what,
            }
        }
        Activity::Evaluating => "evaluating all edits".into(),
        Activity::Probing => "running probes".into(),
        Activity::Bisecting { lane, probe } => match app.lanes.get(*lane) {
            Some(view) if app.ab() => format!("{}: bisecting on {probe}", view.method.label()),
            _ => format!("bisecting on {probe}"),
        },
        Activity::Recovered => "recovered".into(),
    }
}
