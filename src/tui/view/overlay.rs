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

pub(super) fn overlay(f: &mut Frame, app: &App, area: Rect) {
    match &app.overlay {
        Overlay::None => {}
        Overlay::Help => {
            let r = centered(area, 76, 22);
            f.render_widget(Clear, r);
            let lines = vec![
                Line::from("Type a fact in the input line (i):  subject | prompt | target [| paraphrase | neighbour]"),
                Line::from("f opens the form; an inline error says what is wrong, nothing is queued until valid."),
                Line::from(""),
                Line::from("tab        cycle panes            ↑/↓  select an edit (details below the queue)"),
                Line::from("m          method for the next edits (D4S, ROME, MEMIT, PMET, AlphaEdit, FT, GRACE)"),
                Line::from("u          undo the last edit (D4S: exact; others: restore the pre-edit weights)"),
                Line::from("p          run the downstream probes now      e  re-evaluate every edit now"),
                Line::from("l          load a deck: demo, counterfact:N, zsre:N or a .jsonl path"),
                Line::from("s          save: write ΔW of the edited layers into the session"),
                Line::from("o          open a session and replay it live"),
                Line::from("space      pause / resume the worker     c  cancel the edit in flight"),
                Line::from("x          drop queued edits             q  quit (asks if work is running)"),
                Line::from(""),
                Line::from(format!("Every landed edit is journaled (fsync'ed) under {}.", app.session.as_ref().map_or("sessions/".to_string(), |s| s.display().to_string()))),
                Line::from(format!("Render time: last {:.1} ms, worst {:.1} ms.", app.frame_ms.0, app.frame_ms.1)),
                Line::from(""),
                Line::styled("any key closes this help", Style::default().add_modifier(Modifier::DIM)),
            ];
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
