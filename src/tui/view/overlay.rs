//! The modals drawn over the panes: help, the quit confirmation, the method picker, the
//! one-line prompts and the fact form.

use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Clear, List, ListItem, ListState, Paragraph, Wrap};
use ratatui::Frame;

use super::super::app::{App, Overlay, PromptKind, FORM_LABELS};
use super::{block, ACCENT};
use crate::edit::Method;

fn centered(area: Rect, w: u16, h: u16) -> Rect {
    let w = w.min(area.width);
    let h = h.min(area.height);
    Rect {
        x: area.x + (area.width - w) / 2,
        y: area.y + (area.height - h) / 2,
        width: w,
        height: h,
    }
}

/// The keys, one per line: a fixed two-column grid wrapped badly in narrow boxes.
const KEYS: [(&str, &str); 19] = [
    (
        "i",
        "type a fact: subject | prompt | target [| paraphrase | neighbour]",
    ),
    (
        "f",
        "the fact form (an inline error says what is wrong; nothing queues until valid)",
    ),
    ("tab", "cycle panes"),
    (
        "↑/↓ j/k",
        "select an edit (its details show below the queue)",
    ),
    (
        "m",
        "method for the next edits (A/B mode: fixed by --methods)",
    ),
    ("←/→", "A/B mode, chart pane: the metric drawn per method"),
    (
        "u",
        "undo the last edit (D4S: exact; others: restore the pre-edit weights)",
    ),
    ("p", "run the downstream probes now"),
    ("e", "re-evaluate every edit now"),
    (
        "l",
        "load a deck: demo, counterfact:N, zsre:N or a .jsonl path",
    ),
    ("o", "open a session and queue its edits"),
    (
        "b",
        "bisect the journal: the first edit after which a probe fell (e.g. arc_easy 0.05)",
    ),
    ("s", "save ΔW of the edited layers into the session"),
    (
        "space",
        "pause / resume (the edit in flight finishes first)",
    ),
    ("c", "cancel the edit in flight"),
    ("x", "drop the queued edits"),
    ("Ctrl-U", "clear the text field"),
    ("Ctrl-W", "delete the word before the cursor"),
    ("q", "quit (asks if work is running)"),
];

fn help_lines(app: &App) -> Vec<Line<'static>> {
    let key_style = Style::default().fg(ACCENT).add_modifier(Modifier::BOLD);
    let mut lines: Vec<Line<'static>> = KEYS
        .iter()
        .map(|(k, what)| {
            Line::from(vec![
                Span::styled(format!("{k:<9}"), key_style),
                Span::raw(*what),
            ])
        })
        .collect();
    let journal = app
        .lanes
        .iter()
        .filter_map(|l| l.session.as_ref())
        .map(|s| s.display().to_string())
        .collect::<Vec<_>>();
    let journal = match journal.is_empty() {
        true => "sessions/".to_string(),
        false => journal.join(" and "),
    };
    lines.extend([
        Line::from(""),
        Line::from(format!(
            "Every landed edit is journaled (fsync'ed) under {journal}."
        )),
        Line::from(format!(
            "Render time: last {:.1} ms, worst {:.1} ms.",
            app.frame_ms.0, app.frame_ms.1
        )),
        Line::from(""),
        Line::styled(
            "any key closes this help",
            Style::default().add_modifier(Modifier::DIM),
        ),
    ]);
    lines
}

/// A centred box as small as its lines allow (borders included), within `area`: as wide as the
/// longest line, and as tall as the lines once wrapped to that width.
fn fitted(area: Rect, lines: &[Line]) -> Rect {
    let longest = lines.iter().map(Line::width).max().unwrap_or(0) as u16;
    let width = (longest + 2).min(area.width);
    let inner = width.saturating_sub(2).max(1) as usize;
    let rows: usize = lines.iter().map(|l| l.width().div_ceil(inner).max(1)).sum();
    centered(area, width, rows as u16 + 2)
}

pub(super) fn overlay(f: &mut Frame, app: &App, area: Rect) {
    match &app.overlay {
        Overlay::None => {}
        Overlay::Help => {
            let lines = help_lines(app);
            let r = fitted(area, &lines);
            f.render_widget(Clear, r);
            f.render_widget(
                Paragraph::new(lines)
                    .wrap(Wrap { trim: false })
                    .block(block("Help", true)),
                r,
            );
        }
        Overlay::ConfirmQuit => {
            let r = centered(area, 56, 5);
            f.render_widget(Clear, r);
            f.render_widget(
                Paragraph::new(vec![
                    Line::from("Edits are still running or queued."),
                    Line::from("Quit anyway? Landed edits are kept. (y/n)"),
                ])
                .block(block("Quit?", true)),
                r,
            );
        }
        Overlay::MethodPicker(sel) => {
            let r = centered(area, 36, Method::ALL.len() as u16 + 2);
            f.render_widget(Clear, r);
            let items: Vec<ListItem> = Method::ALL
                .iter()
                .map(|m| ListItem::new(m.label()))
                .collect();
            let mut st = ListState::default();
            st.select(Some(*sel));
            f.render_stateful_widget(
                List::new(items)
                    .block(block("Method for next edits", true))
                    .highlight_style(Style::default().add_modifier(Modifier::REVERSED)),
                r,
                &mut st,
            );
        }
        Overlay::Prompt(kind, text) => {
            let r = centered(area, 70, 4);
            f.render_widget(Clear, r);
            let title = match kind {
                PromptKind::Deck => "Load deck (demo, counterfact:N, zsre:N, or a .jsonl path)",
                PromptKind::OpenSession => "Open session (directory)",
                PromptKind::Bisect => {
                    "Bisect the journal: probe [drop] (first edit after which it fell)"
                }
            };
            f.render_widget(
                Paragraph::new(format!("> {text}▏")).block(block(title, true)),
                r,
            );
        }
        Overlay::Form(fields, at) => {
            let r = centered(area, 90, 14);
            f.render_widget(Clear, r);
            let mut lines = Vec::new();
            for (i, (label, v)) in FORM_LABELS.iter().zip(fields.iter()).enumerate() {
                let style = if i == *at {
                    Style::default().fg(ACCENT).add_modifier(Modifier::BOLD)
                } else {
                    Style::default()
                };
                lines.push(Line::from(vec![
                    Span::styled(format!("{label:>28}: "), style),
                    Span::raw(v.clone()),
                    Span::raw(if i == *at { "▏" } else { "" }),
                ]));
            }
            lines.push(Line::from(""));
            if let Some(e) = &app.input_error {
                lines.push(Line::styled(
                    format!("✗ {e}"),
                    Style::default().fg(Color::Red),
                ));
            }
            lines.push(Line::styled(
                "tab/↑↓ move  enter queue  esc cancel",
                Style::default().add_modifier(Modifier::DIM),
            ));
            f.render_widget(
                Paragraph::new(lines)
                    .wrap(Wrap { trim: false })
                    .block(block("New fact", true)),
                r,
            );
        }
    }
}
