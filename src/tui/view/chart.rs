//! The chart pane: one lane's three metrics against the edits, or in A/B mode one metric with a
//! line per lane.

use ratatui::layout::{Constraint, Direction, Layout, Rect};
use ratatui::style::{Color, Style};
use ratatui::symbols;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Axis, Chart, Dataset, GraphType, Paragraph};
use ratatui::Frame;

use super::{block, lane_color, two};
use crate::eval::bench::records::TokenMetric;
use crate::tui::app::{App, Pane};

/// One curve of the chart: its name, colour and points.
struct Curve {
    name: String,
    color: Color,
    points: Vec<(f64, f64)>,
}

fn points(curve: &[crate::worker::CurvePoint], metric: TokenMetric) -> Vec<(f64, f64)> {
    curve
        .iter()
        .filter_map(|p| metric.get(&p.metrics).map(|v| (p.edits as f64, v)))
        .collect()
}

/// One lane: its three metrics. A/B: the chosen metric, one curve per lane.
fn curves(app: &App) -> Vec<Curve> {
    if app.ab() {
        return app
            .lanes
            .iter()
            .enumerate()
            .map(|(lane, view)| Curve {
                name: view.method.label().to_string(),
                color: lane_color(lane),
                points: points(&view.curve, app.chart_metric),
            })
            .collect();
    }
    let curve = &app.lanes[0].curve;
    [
        (TokenMetric::Efficacy, Color::Green),
        (TokenMetric::Paraphrase, Color::Yellow),
        (TokenMetric::Specificity, Color::Magenta),
    ]
    .into_iter()
    .map(|(metric, color)| Curve {
        name: metric.name().to_string(),
        color,
        points: points(curve, metric),
    })
    .collect()
}

fn chart_title(app: &App) -> String {
    if app.ab() {
        let latest: Vec<String> = app
            .lanes
            .iter()
            .map(|l| {
                let v = l
                    .curve
                    .last()
                    .and_then(|p| app.chart_metric.get(&p.metrics));
                format!("{} {}", l.method.label(), two(v))
            })
            .collect();
        return format!(
            "{} vs edits — {} (←/→ metric)",
            app.chart_metric.name(),
            latest.join(" · ")
        );
    }
    match app.lanes[0].curve.last() {
        Some(p) => format!(
            "Metrics vs edits — eff {}{}{}",
            two(p.metrics.efficacy),
            p.metrics
                .paraphrase
                .map(|v| format!(" par {v:.2}"))
                .unwrap_or_default(),
            p.metrics
                .specificity
                .map(|v| format!(" spe {v:.2}"))
                .unwrap_or_default()
        ),
        None => "Metrics vs edits (all edits re-evaluated as they land)".into(),
    }
}

pub(super) fn chart(f: &mut Frame, app: &App, r: Rect) {
    let curves = curves(app);
    let max_x = app
        .lanes
        .iter()
        .filter_map(|l| l.curve.last())
        .map(|p| p.edits as f64)
        .fold(1.0, f64::max);
    // Each curve twice: a line between the evaluation points and a dot on each, so a single
    // point (one edit) is visible and every measured point is marked.
    let mut datasets = Vec::new();
    for c in curves.iter().filter(|c| !c.points.is_empty()) {
        let style = Style::default().fg(c.color);
        datasets.push(
            Dataset::default()
                .marker(symbols::Marker::Braille)
                .graph_type(GraphType::Line)
                .style(style)
                .data(&c.points),
        );
        datasets.push(
            Dataset::default()
                .marker(symbols::Marker::Dot)
                .graph_type(GraphType::Scatter)
                .style(style)
                .data(&c.points),
        );
    }
    // The legend goes on its own line above the plot, where it covers no point.
    let legend = Line::from(
        curves
            .iter()
            .flat_map(|c| {
                [
                    Span::styled("● ", Style::default().fg(c.color)),
                    Span::raw(format!("{}  ", c.name)),
                ]
            })
            .collect::<Vec<_>>(),
    );
    let outer = block(&chart_title(app), app.focus == Pane::Charts);
    let inner = outer.inner(r);
    f.render_widget(outer, r);
    let [legend_row, plot] = Layout::default()
        .direction(Direction::Vertical)
        .constraints([Constraint::Length(1), Constraint::Min(0)])
        .areas(inner);
    f.render_widget(Paragraph::new(legend), legend_row);
    let chart = Chart::new(datasets)
        .legend_position(None)
        .x_axis(
            Axis::default()
                .bounds([0.0, max_x])
                .labels(vec![Line::from("0"), Line::from(format!("{max_x:.0}"))]),
        )
        .y_axis(
            Axis::default()
                .bounds([0.0, 1.0])
                .labels(vec![Line::from("0"), Line::from("1")]),
        );
    f.render_widget(chart, plot);
}
