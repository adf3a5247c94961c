//! Plots with plotters: SVG always, PNG when a TrueType font is found at run time.
//!
//! [`render`] draws one [`LineChart`] (title, axis labels, one coloured line per [`Series`] and
//! a legend beside the plot) and [`render_grid`] draws several as panels of one figure — the
//! benchmark reports use it for per-layer norm curves. No font is committed or compiled in:
//! [`font`] looks for one when first asked. The SVG does not need it: plotters' SVG backend
//! writes `<text>` elements that the viewer renders. Plotters would measure text through the
//! font in `titled` and in its series-label legend, so the title and legend are drawn here with
//! plain text elements and sized from the character count; the mesh only measures labels of a
//! right-hand axis, which we do not use. The PNG rasterizes glyphs, so it is only written when
//! a font is found.
//!
//! Points with a non-finite coordinate or one beyond ±1e300 (and, on a logarithmic y axis,
//! non-positive values) are gaps: the line is broken there rather than drawn to a wrong place. Points outside an explicit
//! `y_range` are gaps too, so lines never leave the plot area.

use std::ffi::OsString;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::ranged1d::{Ranged, ValueFormatter};
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::error::{Error, Result};

/// One line: a label for the legend and its (x, y) points in drawing order, with an optional
/// uncertainty band `(x, lo, hi)` drawn shaded under it (a whisker where it has one point).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
    pub band: Vec<(f64, f64, f64)>,
}

/// A line chart. `y_range = None` fits the data; `log_y` uses a logarithmic y axis.
#[derive(Debug, Clone, PartialEq)]
pub struct LineChart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
    pub y_range: Option<(f64, f64)>,
    pub log_y: bool,
}

/// A heatmap: one row per label (drawn top to bottom), one column per x index, colour from
/// white at `range.0` to `color` at `range.1` (values outside are clamped), with a colour bar.
#[derive(Debug, Clone, PartialEq)]
pub struct Heatmap {
    pub title: String,
    pub x_label: String,
    /// What the colour means (the colour bar's caption).
    pub value_label: String,
    pub rows: Vec<String>,
    /// `values[row][column]`; every row as long as the first.
    pub values: Vec<Vec<f64>>,
    pub range: (f64, f64),
    pub color: (u8, u8, u8),
}

/// Size of a single chart, and of each panel of a grid.
const SINGLE: (u32, u32) = (960, 600);
const PANEL: (u32, u32) = (640, 420);
const FAMILY: &str = "sans-serif";

/// Writes `<stem>.svg` always and `<stem>.png` when a TrueType font is available; returns the files written.
pub fn render(chart: &LineChart, stem: &Path) -> Result<Vec<PathBuf>> {
    write_figure(std::slice::from_ref(chart), 1, SINGLE, stem)
}

/// Several charts as panels of one figure, `columns` per row (at least one), written like
/// [`render`].
pub fn render_grid(charts: &[LineChart], columns: usize, stem: &Path) -> Result<Vec<PathBuf>> {
    let columns = columns.clamp(1, charts.len().max(1));
    write_figure(charts, columns, PANEL, stem)
}

/// Heatmaps as panels of one figure, `columns` per row, written like [`render`].
pub fn render_heatmaps(maps: &[Heatmap], columns: usize, stem: &Path) -> Result<Vec<PathBuf>> {
    if let Some(m) = maps.iter().find(|m| {
        m.values.len() != m.rows.len() || m.values.iter().any(|r| r.len() != m.values[0].len())
    }) {
        return Err(Error::Input(format!(
            "{}: heatmap {:?} has ragged rows or a row label count that does not match",
            stem.display(),
            m.title
        )));
    }
    let columns = columns.clamp(1, maps.len().max(1));
    write_figure(maps, columns, PANEL, stem)
}

/// Something drawn into one panel of a figure.
trait Panel {
    fn draw<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, Shift>,
        family: &str,
    ) -> DrawResult<DB>;
}

impl Panel for LineChart {
    fn draw<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, Shift>,
        family: &str,
    ) -> DrawResult<DB> {
        draw_panel(area, self, family)
    }
}

impl Panel for Heatmap {
    fn draw<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, Shift>,
        family: &str,
    ) -> DrawResult<DB> {
        draw_heatmap(area, self, family)
    }
}

fn write_figure<P: Panel>(
    charts: &[P],
    columns: usize,
    panel: (u32, u32),
    stem: &Path,
) -> Result<Vec<PathBuf>> {
    if charts.is_empty() {
        return Err(Error::Input(format!(
            "{}: there is no chart to draw",
            stem.display()
        )));
    }
    let rows = charts.len().div_ceil(columns);
    let size = (panel.0 * columns as u32, panel.1 * rows as u32);
    if let Some(dir) = stem.parent().filter(|d| !d.as_os_str().is_empty()) {
        crate::util::ensure_dir(dir)?;
    }
    let svg_path = with_suffix(stem, ".svg");
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        draw_figure(root, charts, (rows, columns), FAMILY)
            .map_err(|e| Error::bad_file(&svg_path, format!("drawing the chart failed: {e}")))?;
    }
    crate::util::write_atomic(&svg_path, svg.as_bytes())?;
    let mut written = vec![svg_path];
    if font().is_some() {
        let png_path = with_suffix(stem, ".png");
        draw_figure(
            BitMapBackend::new(&png_path, size).into_drawing_area(),
            charts,
            (rows, columns),
            FAMILY,
        )
        .map_err(|e| Error::bad_file(&png_path, format!("drawing the chart failed: {e}")))?;
        written.push(png_path);
    }
    Ok(written)
}

/// `stem` + suffix, keeping dots already in the stem (`norms.layer5` → `norms.layer5.svg`).
fn with_suffix(stem: &Path, suffix: &str) -> PathBuf {
    let mut s = OsString::from(stem.as_os_str());
    s.push(suffix);
    PathBuf::from(s)
}

type DrawResult<DB> =
    std::result::Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

fn draw_figure<DB: DrawingBackend, P: Panel>(
    root: DrawingArea<DB, Shift>,
    charts: &[P],
    grid: (usize, usize),
    family: &str,
) -> DrawResult<DB> {
    root.fill(&WHITE)?;
    for (area, chart) in root.split_evenly(grid).iter().zip(charts) {
        chart.draw(area, family)?;
    }
    root.present()
}

/// Finite and small enough that spans and padding computed from it stay finite (plotters
/// would otherwise loop over an infinite axis).
fn plottable(v: f64) -> bool {
    v.is_finite() && v.abs() <= 1e300
}

/// The points of a series split into runs without gaps (see the module documentation).
fn runs(points: &[(f64, f64)], keep: impl Fn(f64, f64) -> bool) -> Vec<Vec<(f64, f64)>> {
    let mut out: Vec<Vec<(f64, f64)>> = vec![];
    let mut current = vec![];
    for &(x, y) in points {
        if plottable(x) && plottable(y) && keep(x, y) {
            current.push((x, y));
        } else if !current.is_empty() {
            out.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// `lo..hi` covering `values`, widened when degenerate and padded by 5 % (multiplicatively on
/// a log axis), or `fallback` when there are no values.
fn fit(values: impl Iterator<Item = f64>, log: bool) -> Range<f64> {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if !lo.is_finite() || !hi.is_finite() {
        return if log { 0.1..10.0 } else { 0.0..1.0 };
    }
    if log {
        let (lo, hi) = if lo == hi {
            (lo / 2.0, hi * 2.0)
        } else {
            (lo, hi)
        };
        let pad = (hi / lo).powf(0.05);
        return lo / pad..hi * pad;
    }
    if lo == hi {
        let half = (lo.abs() * 0.05).max(0.5);
        return lo - half..hi + half;
    }
    let pad = (hi - lo) * 0.05;
    lo - pad..hi + pad
}

/// Tick labels for an axis over `range`: as many decimals as tell ticks about a tenth of the
/// span apart (so one axis never mixes "0.001" and "5.0e-4"), scientific notation when the
/// values are very large or very small, no trailing zeros.
fn tick_format(range: &Range<f64>, log: bool) -> impl Fn(&f64) -> String {
    let big = range.start.abs().max(range.end.abs());
    let scientific = big >= 1e5 || if log { range.start < 1e-3 } else { big < 1e-3 };
    let step = if log {
        range.start.abs()
    } else {
        (range.end - range.start).abs() / 8.0
    };
    let decimals = if step > 0.0 && step.is_finite() {
        (-step.log10().floor()).clamp(0.0, 12.0) as usize
    } else {
        0
    };
    move |v: &f64| {
        if *v == 0.0 {
            "0".into()
        } else if scientific {
            format!("{v:.1e}").replace(".0e", "e")
        } else if decimals == 0 {
            format!("{v:.0}")
        } else {
            let s = format!("{v:.decimals$}");
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        }
    }
}

/// Ten well-separated colours (matplotlib's tab10), then plotters' 99-colour palette.
fn color(i: usize) -> RGBColor {
    const TAB10: [(u8, u8, u8); 10] = [
        (31, 119, 180),
        (255, 127, 14),
        (44, 160, 44),
        (214, 39, 40),
        (148, 103, 189),
        (140, 86, 75),
        (227, 119, 194),
        (127, 127, 127),
        (188, 189, 34),
        (23, 190, 207),
    ];
    match TAB10.get(i) {
        Some(&(r, g, b)) => RGBColor(r, g, b),
        None => {
            let c = Palette99::pick(i - TAB10.len()).to_rgba();
            RGBColor(c.0, c.1, c.2)
        }
    }
}

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    chart: &LineChart,
    family: &str,
) -> DrawResult<DB> {
    let (w, _) = area.dim_in_pixel();
    let title = (family, 20)
        .into_text_style(area)
        .pos(Pos::new(HPos::Center, VPos::Top));
    area.draw(&Text::new(chart.title.as_str(), (w as i32 / 2, 8), title))?;
    let (_, area) = area.split_vertically(36);
    let explicit = chart.y_range.filter(|&(lo, hi)| {
        plottable(lo) && plottable(hi) && lo < hi && (!chart.log_y || lo > 0.0)
    });
    let in_y = |y: f64| {
        (!chart.log_y || y > 0.0) && explicit.is_none_or(|(lo, hi)| (lo..=hi).contains(&y))
    };
    let lines: Vec<Vec<Vec<(f64, f64)>>> = chart
        .series
        .iter()
        .map(|s| runs(&s.points, |_, y| in_y(y)))
        .collect();
    let all = || lines.iter().flatten().flatten();
    let x = fit(all().map(|p| p.0), false);
    // A fitted y axis holds the bands too, so intervals are not cut off.
    let band_ys = chart
        .series
        .iter()
        .flat_map(|s| s.band.iter().flat_map(|&(_, lo, hi)| [lo, hi]))
        .filter(|&y| plottable(y) && in_y(y));
    let y = match explicit {
        Some((lo, hi)) => lo..hi,
        None => fit(all().map(|p| p.1).chain(band_ys), chart.log_y),
    };
    let (plot_area, legend_area) = split_for_legend(&area, chart);
    if chart.log_y {
        let mut ctx = chart_builder(&plot_area).build_cartesian_2d(x, y.log_scale())?;
        draw_lines(&mut ctx, chart, &lines, family)?;
    } else {
        let mut ctx = chart_builder(&plot_area).build_cartesian_2d(x, y)?;
        draw_lines(&mut ctx, chart, &lines, family)?;
    }
    if let Some(legend) = legend_area {
        draw_legend(&legend, chart, family)?;
    }
    Ok(())
}

fn chart_builder<'a, 'b, DB: DrawingBackend>(
    area: &'a DrawingArea<DB, Shift>,
) -> ChartBuilder<'a, 'b, DB> {
    let mut b = ChartBuilder::on(area);
    b.margin(12).x_label_area_size(48).y_label_area_size(72);
    b
}

fn draw_lines<DB, Y>(
    ctx: &mut ChartContext<'_, DB, Cartesian2d<RangedCoordf64, Y>>,
    chart: &LineChart,
    lines: &[Vec<Vec<(f64, f64)>>],
    family: &str,
) -> DrawResult<DB>
where
    DB: DrawingBackend,
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    let (x, y) = (ctx.x_range(), ctx.y_range());
    let x_fmt = tick_format(&x, false);
    let y_fmt = tick_format(&y, chart.log_y);
    ctx.configure_mesh()
        .x_desc(chart.x_label.as_str())
        .y_desc(chart.y_label.as_str())
        .x_labels(8)
        .y_labels(8)
        .label_style((family, 13))
        .axis_desc_style((family, 15))
        .x_label_formatter(&x_fmt)
        .y_label_formatter(&y_fmt)
        .draw()?;
    for (i, s) in chart.series.iter().enumerate() {
        draw_band(ctx, &s.band, color(i), chart)?;
    }
    for (i, runs) in lines.iter().enumerate() {
        let style = color(i).stroke_width(2);
        for run in runs {
            // Markers make short curves (and single points) visible; on long ones they clutter.
            let markers = if run.len() <= 60 { 3 } else { 0 };
            ctx.draw_series(LineSeries::new(run.iter().copied(), style).point_size(markers))?;
        }
    }
    Ok(())
}

/// A series' interval band: a translucent polygon over each gap-free stretch of two or more
/// points, a whisker for a lone point. Ends outside an explicit y range are clamped to it.
fn draw_band<DB, Y>(
    ctx: &mut ChartContext<'_, DB, Cartesian2d<RangedCoordf64, Y>>,
    band: &[(f64, f64, f64)],
    c: RGBColor,
    chart: &LineChart,
) -> DrawResult<DB>
where
    DB: DrawingBackend,
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    let (lo_y, hi_y) = {
        let r = ctx.y_range();
        (r.start, r.end)
    };
    let clamp = |y: f64| y.clamp(lo_y, hi_y);
    let ok = |&(x, lo, hi): &(f64, f64, f64)| {
        plottable(x) && plottable(lo) && plottable(hi) && (!chart.log_y || lo > 0.0)
    };
    let mut stretches: Vec<Vec<(f64, f64, f64)>> = vec![vec![]];
    for b in band {
        if ok(b) {
            stretches.last_mut().expect("one").push(*b);
        } else if !stretches.last().expect("one").is_empty() {
            stretches.push(vec![]);
        }
    }
    for s in stretches.iter().filter(|s| !s.is_empty()) {
        if s.len() == 1 {
            let (x, lo, hi) = s[0];
            ctx.draw_series(std::iter::once(PathElement::new(
                vec![(x, clamp(lo)), (x, clamp(hi))],
                c.stroke_width(2),
            )))?;
            continue;
        }
        let outline: Vec<(f64, f64)> = s
            .iter()
            .map(|&(x, _, hi)| (x, clamp(hi)))
            .chain(s.iter().rev().map(|&(x, lo, _)| (x, clamp(lo))))
            .collect();
        ctx.draw_series(std::iter::once(Polygon::new(outline, c.mix(0.18).filled())))?;
    }
    Ok(())
}

/// `t` of the way from white to `c` (`t` clamped to 0..=1).
fn shade(c: (u8, u8, u8), t: f64) -> RGBColor {
    let t = if t.is_finite() {
        t.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let mix = |x: u8| (255.0 - (255.0 - x as f64) * t).round() as u8;
    RGBColor(mix(c.0), mix(c.1), mix(c.2))
}

fn draw_heatmap<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    map: &Heatmap,
    family: &str,
) -> DrawResult<DB> {
    let (w, _) = area.dim_in_pixel();
    let title = (family, 20)
        .into_text_style(area)
        .pos(Pos::new(HPos::Center, VPos::Top));
    area.draw(&Text::new(map.title.as_str(), (w as i32 / 2, 8), title))?;
    let (_, area) = area.split_vertically(36);
    let (plot_area, bar_area) = area.split_horizontally(w as i32 - 110);
    let (n_rows, n_cols) = (
        map.rows.len() as i32,
        map.values.first().map_or(0, Vec::len) as i32,
    );
    let label_w = map
        .rows
        .iter()
        .map(|r| text_width(r, 13.0))
        .max()
        .unwrap_or(0)
        .clamp(24, 200);
    let (lo, hi) = map.range;
    let span = if hi > lo { hi - lo } else { 1.0 };
    let mut ctx = ChartBuilder::on(&plot_area)
        .margin(12)
        .x_label_area_size(48)
        .y_label_area_size(label_w + 12)
        // Integer ranges are inclusive in plotters: `0..n-1` is n segments.
        .build_cartesian_2d(
            (0..(n_cols - 1).max(0)).into_segmented(),
            (0..(n_rows - 1).max(0)).into_segmented(),
        )?;
    let rows = &map.rows;
    let row_label = |v: &SegmentValue<i32>| match v {
        SegmentValue::CenterOf(y) => rows
            .get((n_rows - 1 - *y) as usize)
            .cloned()
            .unwrap_or_default(),
        _ => String::new(),
    };
    let col_label = |v: &SegmentValue<i32>| match v {
        SegmentValue::CenterOf(x) => x.to_string(),
        _ => String::new(),
    };
    ctx.configure_mesh()
        .disable_mesh()
        .x_desc(map.x_label.as_str())
        .x_labels((n_cols as usize).min(16))
        .y_labels(n_rows as usize)
        .label_style((family, 13))
        .axis_desc_style((family, 15))
        .x_label_formatter(&col_label)
        .y_label_formatter(&row_label)
        .draw()?;
    ctx.draw_series(map.values.iter().enumerate().flat_map(|(r, row)| {
        let y = n_rows - 1 - r as i32;
        row.iter().enumerate().map(move |(x, &v)| {
            let x = x as i32;
            Rectangle::new(
                [
                    (SegmentValue::Exact(x), SegmentValue::Exact(y)),
                    (SegmentValue::Exact(x + 1), SegmentValue::Exact(y + 1)),
                ],
                shade(map.color, (v - lo) / span).filled(),
            )
        })
    }))?;
    draw_color_bar(&bar_area, map, family)
}

/// A vertical gradient from the range's low (bottom) to its high (top), labelled at both ends.
fn draw_color_bar<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    map: &Heatmap,
    family: &str,
) -> DrawResult<DB> {
    let (_, h) = area.dim_in_pixel();
    let (top, bottom) = (24, h as i32 - 72);
    let steps = 32;
    for k in 0..steps {
        let y0 = bottom - (bottom - top) * (k + 1) / steps;
        let y1 = bottom - (bottom - top) * k / steps;
        let t = (k as f64 + 0.5) / steps as f64;
        area.draw(&Rectangle::new(
            [(8, y0), (28, y1)],
            shade(map.color, t).filled(),
        ))?;
    }
    area.draw(&Rectangle::new(
        [(8, top), (28, bottom)],
        BLACK.stroke_width(1),
    ))?;
    let style = (family, 13)
        .into_text_style(area)
        .pos(Pos::new(HPos::Left, VPos::Center));
    let fmt = tick_format(&(map.range.0..map.range.1), false);
    area.draw(&Text::new(fmt(&map.range.1), (34, top), style.clone()))?;
    area.draw(&Text::new(fmt(&map.range.0), (34, bottom), style.clone()))?;
    area.draw(&Text::new(map.value_label.clone(), (4, bottom + 24), style))?;
    Ok(())
}

/// Splits off a column on the right for the legend, as wide as the longest label. Widths are
/// estimated from the character count (see the module documentation).
fn split_for_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    chart: &LineChart,
) -> (DrawingArea<DB, Shift>, Option<DrawingArea<DB, Shift>>) {
    if chart.series.is_empty() {
        return (area.clone(), None);
    }
    let widest = chart
        .series
        .iter()
        .map(|s| text_width(&legend_label(s), LEGEND_SIZE))
        .max()
        .unwrap_or(0);
    let (w, _) = area.dim_in_pixel();
    // Never let the legend take more than a third of the panel.
    let legend_w = (widest + 48).min(w / 3) as i32;
    let (plot, legend) = area.split_horizontally(w as i32 - legend_w);
    (plot, Some(legend))
}

const LEGEND_SIZE: f64 = 14.0;

/// Width of a sans-serif text: the average glyph advance is about 0.6 em (DejaVu Sans ≈ 0.55),
/// and plotters' text size is 1.24 × the em size, so this errs towards more room.
fn text_width(text: &str, size: f64) -> u32 {
    (text.chars().count() as f64 * size / 1.24 * 0.6).ceil() as u32
}

fn legend_label(s: &Series) -> String {
    if s.points.iter().any(|p| plottable(p.0) && plottable(p.1)) {
        s.label.clone()
    } else {
        format!("{} (no data)", s.label)
    }
}

fn draw_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    chart: &LineChart,
    family: &str,
) -> DrawResult<DB> {
    let (_, h) = area.dim_in_pixel();
    let row = 20;
    let fits = ((h as i32 - 24) / row).max(1) as usize;
    let shown = if chart.series.len() > fits {
        fits - 1
    } else {
        chart.series.len()
    };
    let style = (family, LEGEND_SIZE)
        .into_text_style(area)
        .pos(Pos::new(HPos::Left, VPos::Center));
    for (i, s) in chart.series.iter().take(shown).enumerate() {
        let y = 24 + i as i32 * row;
        area.draw(&PathElement::new(
            vec![(4, y), (28, y)],
            color(i).stroke_width(3),
        ))?;
        area.draw(&Text::new(legend_label(s), (34, y), style.clone()))?;
    }
    if shown < chart.series.len() {
        let y = 24 + shown as i32 * row;
        let more = format!("… {} more", chart.series.len() - shown);
        area.draw(&Text::new(more, (34, y), style))?;
    }
    Ok(())
}

/// A TrueType font found at run time ($D4S_FONT, then Debian's fonts-dejavu-core path /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf, then any *.ttf under /usr/share/fonts, /usr/local/share/fonts, ~/.fonts), loaded once and registered with plotters' ab_glyph backend.
pub fn font() -> Option<&'static [u8]> {
    static FONT: OnceLock<Option<&'static [u8]>> = OnceLock::new();
    *FONT.get_or_init(|| font_candidates().into_iter().find_map(|p| load_font(&p)))
}

/// Reads and registers one font file; `None` if it is unreadable or not a font.
fn load_font(path: &Path) -> Option<&'static [u8]> {
    let bytes = std::fs::read(path).ok()?;
    // Check the sfnt magic before leaking, so only plausible fonts stay in memory for good.
    let magic = bytes.get(..4)?;
    if ![&[0, 1, 0, 0][..], b"true", b"OTTO"].contains(&magic) {
        return None;
    }
    // plotters keeps fonts as `&'static [u8]`; the one font we use lives as long as the process.
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    plotters::style::register_font(FAMILY, FontStyle::Normal, bytes).ok()?;
    Some(bytes)
}

/// The places looked at, in order.
fn font_candidates() -> Vec<PathBuf> {
    let mut out = vec![];
    if let Some(p) = std::env::var_os("D4S_FONT").filter(|p| !p.is_empty()) {
        out.push(PathBuf::from(p));
    }
    out.push(PathBuf::from(
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    ));
    let mut roots = vec![
        PathBuf::from("/usr/share/fonts"),
        PathBuf::from("/usr/local/share/fonts"),
    ];
    if let Some(home) = dirs::home_dir() {
        roots.push(home.join(".fonts"));
    }
    for root in roots {
        let mut found = vec![];
        find_ttf(&root, 0, &mut found);
        // Regular sans faces first (they read best on charts), then by path for determinism.
        found.sort_by_key(|p| {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().to_lowercase())
                .unwrap_or_default();
            let plain = !["bold", "italic", "oblique", "mono", "condensed", "light"]
                .iter()
                .any(|w| name.contains(w));
            (!(plain && name.contains("sans")), !plain, p.clone())
        });
        out.extend(found);
    }
    out
}

fn find_ttf(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) {
    if depth > 6 {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            find_ttf(&path, depth + 1, out);
        } else if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("ttf"))
        {
            out.push(path);
        }
    }
}

#[cfg(test)]
mod tests;
