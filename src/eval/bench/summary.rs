//! A run's final numbers as the paper's tables give them (`summary.json`), and its plots.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::evaluate::mean;
use super::records::{
    is_zero, AgeDecile, EditRecord, EvalPoint, GenMetric, GenMetrics, Intervals, Metric,
    ProbMetric, TokenMetric,
};
use crate::edit::Timings;
use crate::error::Result;
use crate::eval::interval::Interval;
use crate::eval::plots::{render, render_grid, LineChart, Series};
use crate::util;

/// The final numbers of a run, as in the paper's tables.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub method: String,
    pub edits: usize,
    pub efficacy: Option<f64>,
    pub paraphrase: Option<f64>,
    pub specificity: Option<f64>,
    /// Mean of efficacy, paraphrase and specificity (the D4S tables' "Avg").
    pub avg: Option<f64>,
    pub portability: Option<f64>,
    pub es: Option<f64>,
    pub ps: Option<f64>,
    pub ns: Option<f64>,
    pub multihop: Option<f64>,
    /// ROME/MEMIT generation fluency (GE, bits) at the end, when the data has generation prompts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fluency: Option<f64>,
    /// The greedy-generation metrics at the end ([`GenMetrics`]), when the run decoded.
    #[serde(default, skip_serializing_if = "GenMetrics::is_empty")]
    pub gen: GenMetrics,
    /// 95% bootstrap intervals over cases of the final point's per-edit metrics.
    #[serde(default, skip_serializing_if = "Intervals::is_empty")]
    pub intervals: Intervals,
    /// Headline probe value per task at the first point and at the end.
    pub probes: Vec<ProbeChange>,
    /// ‖W‖₁/n at the end divided by its value before editing, per layer.
    pub l1_growth: Vec<LayerGrowth>,
    pub rejected: usize,
    pub seconds_per_edit: Option<f64>,
    /// Edits whose targets came from an earlier method of the same command (their seconds
    /// exclude the target optimization).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub edits_with_reused_targets: usize,
    /// Median of each phase over the accepted edits (a typical edit: the first one also gathers
    /// the key statistics once). Where targets are optimized ahead ([`EditRecord::targets_ahead`])
    /// most edits find theirs, so read `mean_timings` for what an edit costs.
    #[serde(default)]
    pub median_timings: Option<Timings>,
    /// Mean of each phase over the accepted edits: the per-edit cost, one-off statistics and a
    /// chunk's targets optimized ahead included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean_timings: Option<Timings>,
    /// Largest resident memory seen after an edit, in bytes.
    #[serde(default)]
    pub peak_rss_bytes: Option<u64>,
    pub wall_seconds: f64,
    /// How hard the edited targets were for the unedited model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub targets: Option<TargetDifficultySummary>,
    /// Mean p(target | prompt) right after each edit landed, on the edited model
    /// ([`EditRecord::prob_post`]): the comparable "edit probability".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_edit_prob: Option<f64>,
    /// AlphaEdit's null-space projector rank per edited layer (the last accepted edit's record).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub projector_rank: Vec<usize>,
    /// Efficacy and paraphrase by edit age at the end, oldest tenth first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retention: Vec<AgeDecile>,
}

/// A probe's headline value at a run's first and last points.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeChange {
    pub task: String,
    pub start: Option<f64>,
    pub end: Option<f64>,
    /// 95% bootstrap intervals over the probe's items, at the first and the last point.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_interval: Option<Interval>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_interval: Option<Interval>,
}

/// How much an edited layer's ‖W‖₁ grew over a run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LayerGrowth {
    pub layer: usize,
    /// ‖W‖₁ at the end / ‖W0‖₁.
    pub growth: f64,
}

impl Summary {
    /// The final value of a per-edit metric (`None` for one the summary does not carry).
    pub fn value(&self, metric: Metric) -> Option<f64> {
        match metric {
            Metric::Token(TokenMetric::Efficacy) => self.efficacy,
            Metric::Token(TokenMetric::Paraphrase) => self.paraphrase,
            Metric::Token(TokenMetric::Specificity) => self.specificity,
            Metric::Token(TokenMetric::Portability) => self.portability,
            Metric::Prob(ProbMetric::Es) => self.es,
            Metric::Prob(ProbMetric::Ps) => self.ps,
            Metric::Prob(ProbMetric::Ns) => self.ns,
            Metric::Prob(_) => None,
            Metric::Gen(g) => g.get(&self.gen),
            Metric::Fluency => self.fluency,
            Metric::Multihop => self.multihop,
        }
    }

    /// The largest growth over the edited layers (NaN when none was measured).
    pub fn max_growth(&self) -> f64 {
        self.l1_growth
            .iter()
            .map(|g| g.growth)
            .fold(f64::NAN, f64::max)
    }
}

/// The edit targets' difficulty over a run (`target_ppl` / `target_tokens` of `edits.jsonl`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetDifficultySummary {
    /// Geometric mean of the targets' perplexities (exp of their mean per-token NLL).
    pub ppl: f64,
    pub ppl_median: f64,
    /// Mean target length in tokens.
    pub tokens: f64,
    /// How many different target strings the edits wrote (`target_new` of `edits.jsonl`; absent
    /// for runs recorded before it existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distinct: Option<usize>,
    /// Shannon entropy of the targets' empirical distribution, in bits: at most 1 for
    /// True/False answers, 2 for a/b/c/d, log2(edits) when every target differs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entropy_bits: Option<f64>,
}

fn target_difficulty_summary(records: &[EditRecord]) -> Option<TargetDifficultySummary> {
    let mut ppl: Vec<f64> = records.iter().filter_map(|r| r.target_ppl).collect();
    let tokens: Vec<f64> = records.iter().filter_map(|r| r.target_tokens).collect();
    if ppl.is_empty() || tokens.is_empty() {
        return None;
    }
    let mean_ln = ppl.iter().map(|p| p.ln()).sum::<f64>() / ppl.len() as f64;
    ppl.sort_by(f64::total_cmp);
    let diversity = target_diversity(records);
    Some(TargetDifficultySummary {
        ppl: mean_ln.exp(),
        ppl_median: ppl[ppl.len() / 2],
        tokens: tokens.iter().sum::<f64>() / tokens.len() as f64,
        distinct: diversity.map(|d| d.0),
        entropy_bits: diversity.map(|d| d.1),
    })
}

/// The number of distinct new targets over the run's edit requests and the entropy (bits) of
/// their frequencies; `None` unless every record carries its targets (a run resumed from one
/// recorded before `target_new` existed would otherwise count only its later part). Targets
/// compare as written, after trimming the leading space some data sets keep.
fn target_diversity(records: &[EditRecord]) -> Option<(usize, f64)> {
    if records.iter().any(|r| r.target_new.is_empty()) {
        return None;
    }
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for t in records.iter().flat_map(|r| r.target_new.iter()) {
        *counts.entry(t.trim()).or_default() += 1;
    }
    let total: usize = counts.values().sum();
    if total == 0 {
        return None;
    }
    let entropy = counts
        .values()
        .map(|&c| {
            let p = c as f64 / total as f64;
            -p * p.log2()
        })
        .sum::<f64>();
    Some((counts.len(), entropy.max(0.0)))
}

/// Each timed phase summarized over the edits by `of` (a median or a mean).
fn phase_timings(all: &[&Timings], of: fn(Vec<f64>) -> f64) -> Option<Timings> {
    if all.is_empty() {
        return None;
    }
    let phase = |f: fn(&Timings) -> f64| of(all.iter().map(|t| f(t)).collect());
    Some(Timings {
        statistics: phase(|t| t.statistics),
        templates: phase(|t| t.templates),
        target: phase(|t| t.target),
        keys: phase(|t| t.keys),
        solve: phase(|t| t.solve),
        total: phase(|t| t.total),
    })
}

fn median_of(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn mean_of(xs: Vec<f64>) -> f64 {
    xs.iter().sum::<f64>() / xs.len() as f64
}

pub fn summarize(method: &str, points: &[EvalPoint], records: &[EditRecord]) -> Option<Summary> {
    let last = points.last()?;
    let first = points.first()?;
    let t = &last.metrics.token;
    let three: Vec<f64> = [t.efficacy, t.paraphrase, t.specificity]
        .into_iter()
        .flatten()
        .collect();
    let probes = last
        .probes
        .keys()
        .map(|k| {
            let h = |p: &EvalPoint| p.probes.get(k).map(|r| r.headline().1);
            let ci = |p: &EvalPoint| p.probes.get(k).and_then(|r| r.headline_interval());
            ProbeChange {
                task: k.clone(),
                start: h(first),
                end: h(last),
                start_interval: ci(first),
                end_interval: ci(last),
            }
        })
        .collect();
    let times: Vec<f64> = records
        .iter()
        .filter(|r| r.rejected.is_none())
        .map(|r| r.seconds)
        .collect();
    let timings: Vec<&Timings> = records.iter().filter_map(|r| r.timings.as_ref()).collect();
    Some(Summary {
        method: method.to_string(),
        edits: last.edits,
        efficacy: t.efficacy,
        paraphrase: t.paraphrase,
        specificity: t.specificity,
        avg: (three.len() == 3).then(|| three.iter().sum::<f64>() / 3.0),
        portability: t.portability,
        es: last.metrics.prob.es,
        ps: last.metrics.prob.ps,
        ns: last.metrics.prob.ns,
        multihop: last.metrics.multihop,
        fluency: last.metrics.generation.fluency,
        gen: last.metrics.gen,
        intervals: last.metrics.intervals.clone(),
        probes,
        l1_growth: l1_growth(first, last),
        rejected: last.rejected,
        seconds_per_edit: mean(&times),
        edits_with_reused_targets: records.iter().filter(|r| r.targets_reused > 0).count(),
        median_timings: phase_timings(&timings, median_of),
        mean_timings: phase_timings(&timings, mean_of),
        peak_rss_bytes: records.iter().filter_map(|r| r.rss_bytes).max(),
        wall_seconds: last.wall_seconds,
        targets: target_difficulty_summary(records),
        post_edit_prob: mean(
            &records
                .iter()
                .filter_map(|r| r.prob_post)
                .collect::<Vec<_>>(),
        ),
        projector_rank: records
            .iter()
            .rev()
            .find(|r| !r.projector_rank.is_empty())
            .map(|r| r.projector_rank.clone())
            .unwrap_or_default(),
        retention: last.retention.clone(),
    })
}

/// ‖W‖₁ at `last` over ‖W0‖₁, per layer: the recorded baseline where the point has it, else the
/// first point's norm when that is the unedited model (runs of earlier versions).
fn l1_growth(first: &EvalPoint, last: &EvalPoint) -> Vec<LayerGrowth> {
    last.layers
        .iter()
        .filter_map(|l| {
            let growth = l.growth().or_else(|| {
                let l0 = first.layers.iter().find(|x| x.layer == l.layer)?;
                // A single-protocol run's only point is after the edits: no baseline then.
                let base = if first.edits == 0 {
                    l0.l1_mean
                } else {
                    l.l1_mean
                };
                Some(l.l1_mean / base.max(1e-30))
            })?;
            Some(LayerGrowth {
                layer: l.layer,
                growth,
            })
        })
        .collect()
}
/// Writes `summary.json`, `summary.csv` and the plots of one run.
pub fn finish_run(
    dir: &Path,
    method: &str,
    points: &[EvalPoint],
    records: &[EditRecord],
) -> Result<Option<Summary>> {
    let Some(s) = summarize(method, points, records) else {
        return Ok(None);
    };
    util::write_atomic(
        &dir.join("summary.json"),
        serde_json::to_string_pretty(&s)
            .expect("serializable")
            .as_bytes(),
    )?;
    util::write_atomic(&dir.join("summary.csv"), super::table::csv(&s)?.as_bytes())?;
    plot_run(dir, method, points, records)?;
    Ok(Some(s))
}

/// A curve of `get` over the points. Where a point between two measured ones has no value (a
/// `gen.*` metric decoded only at the ends), the curve gets a gap there, so the plot does not
/// draw a line through points that were never measured.
/// The narrowest norms axis: 1 ± this. Fitted to the data, a 0.6% change filled the plot and
/// read like an explosion; on a ±5% axis it looks like the 0.6% it is, while a real explosion
/// (×1.3 and more) still widens the axis to show itself.
const NORM_AXIS_HALF_WIDTH: f64 = 0.05;

/// ‖W‖₁ of each edited layer against the unedited matrix's (×), on an axis at least
/// [`NORM_AXIS_HALF_WIDTH`] wide around 1.
fn norms_chart(method: &str, points: &[EvalPoint]) -> LineChart {
    let layers: Vec<usize> = points
        .last()
        .map(|p| p.layers.iter().map(|l| l.layer).collect())
        .unwrap_or_default();
    // Runs of earlier versions lack the baseline in each point; their point 0 holds it.
    let baseline = |l: usize| {
        points
            .first()
            .and_then(|p| p.layers.iter().find(|x| x.layer == l))
            .map(|x| x.l1_mean)
    };
    let growth = |p: &EvalPoint, l: usize| {
        let x = p.layers.iter().find(|x| x.layer == l)?;
        x.growth()
            .or_else(|| baseline(l).map(|b| x.l1_mean / b.max(1e-30)))
    };
    let series: Vec<Series> = layers
        .iter()
        .map(|&l| series(&format!("layer {l}"), points, |p| growth(p, l)))
        .collect();
    let values = series
        .iter()
        .flat_map(|s| s.points.iter().map(|&(_, y)| y))
        .filter(|y| y.is_finite());
    let (lo, hi) = values.fold((1.0f64, 1.0f64), |(lo, hi), y| (lo.min(y), hi.max(y)));
    let margin = (hi - lo) * 0.05;
    LineChart {
        title: format!("{method}: ‖W‖₁ of each edited layer against the unedited (×) vs edits"),
        x_label: "edits".into(),
        y_label: "‖W‖₁ / ‖W0‖₁".into(),
        series,
        y_range: Some((
            (lo - margin).min(1.0 - NORM_AXIS_HALF_WIDTH),
            (hi + margin).max(1.0 + NORM_AXIS_HALF_WIDTH),
        )),
        log_y: false,
    }
}

pub(crate) fn series(
    label: &str,
    points: &[EvalPoint],
    get: impl Fn(&EvalPoint) -> Option<f64>,
) -> Series {
    let mut curve: Vec<(f64, f64)> = Vec::new();
    for p in points {
        match get(p) {
            Some(v) => curve.push((p.edits as f64, v)),
            None if curve.last().is_some_and(|&(_, y)| !y.is_nan()) => {
                curve.push((p.edits as f64, f64::NAN));
            }
            None => {}
        }
    }
    if curve.last().is_some_and(|&(_, y)| y.is_nan()) {
        curve.pop();
    }
    Series {
        label: label.to_string(),
        points: curve,
        ..Default::default()
    }
}

/// A metric's curve over the points, labelled with its family (`gen efficacy_em`), with its
/// interval band.
pub(crate) fn metric_series(metric: Metric, points: &[EvalPoint]) -> Series {
    let label = match metric {
        Metric::Gen(g) => format!("gen {}", g.name()),
        m => m.name().to_string(),
    };
    Series {
        band: band(points, |p| p.metrics.intervals.get(metric)),
        ..series(&label, points, |p| metric.of(&p.metrics))
    }
}

/// The `(edits, lo, hi)` of the points that have an interval.
pub(crate) fn band(
    points: &[EvalPoint],
    get: impl Fn(&EvalPoint) -> Option<Interval>,
) -> Vec<(f64, f64, f64)> {
    points
        .iter()
        .filter_map(|p| get(p).map(|i| (p.edits as f64, i.lo, i.hi)))
        .collect()
}

/// metrics.{svg,png}, norms.{svg,png}, probes.{svg,png}, edit_prob.{svg,png}.
pub fn plot_run(
    dir: &Path,
    method: &str,
    points: &[EvalPoint],
    records: &[EditRecord],
) -> Result<Vec<PathBuf>> {
    // Titles name the run (method, model, data, N) when its config is in the folder.
    let method = &run_label(dir, method);

    let mut files = Vec::new();
    let metrics = LineChart {
        title: format!("{method}: edit metrics vs number of edits"),
        x_label: "edits".into(),
        y_label: "score".into(),
        series: TokenMetric::ALL
            .iter()
            .map(|&m| Metric::Token(m))
            .chain([
                Metric::Gen(GenMetric::EfficacyEm),
                Metric::Gen(GenMetric::ParaphraseEm),
                Metric::Gen(GenMetric::Specificity),
            ])
            .map(|m| metric_series(m, points))
            .filter(|s| !s.points.is_empty())
            .collect(),
        y_range: Some((0.0, 1.0)),
        log_y: false,
    };
    files.extend(render(&metrics, &dir.join("metrics"))?);
    let norms = norms_chart(method, points);
    files.extend(render(&norms, &dir.join("norms"))?);
    let tasks: Vec<String> = points
        .last()
        .map(|p| p.probes.keys().cloned().collect())
        .unwrap_or_default();
    if !tasks.is_empty() {
        let probes = LineChart {
            title: format!("{method}: downstream probes vs number of edits"),
            x_label: "edits".into(),
            y_label: "headline metric".into(),
            series: tasks
                .iter()
                .map(|t| Series {
                    band: band(points, |p| p.probes.get(t)?.headline_interval()),
                    ..series(t, points, |p| p.probes.get(t).map(|r| r.headline().1))
                })
                .collect(),
            y_range: Some((0.0, 1.0)),
            log_y: false,
        };
        files.extend(render(&probes, &dir.join("probes"))?);
    }
    let per_edit = |label: &str, f: fn(&EditRecord) -> Option<f64>| Series {
        label: label.into(),
        points: records
            .iter()
            .enumerate()
            .filter_map(|(i, r)| f(r).map(|p| ((i + 1) as f64, p)))
            .collect(),
        ..Default::default()
    };
    let mut series = vec![per_edit("after optimization", |r| r.prob_final)];
    if records.iter().any(|r| r.prob_post.is_some()) {
        series.push(per_edit("on the edited model", |r| r.prob_post));
    }
    files.extend(plot_retention(dir, method, points)?);
    let prob = LineChart {
        title: format!("{method}: target probability of each edit"),
        x_label: "edit".into(),
        y_label: "p(target | prompt)".into(),
        series,
        y_range: Some((0.0, 1.0)),
        log_y: false,
    };
    files.extend(render(&prob, &dir.join("edit_prob"))?);
    Ok(files)
}

/// `method on model · data file, N edits` from the folder's `config.json`; the bare method when
/// there is none.
fn run_label(dir: &Path, method: &str) -> String {
    match super::records::load_config(dir) {
        Ok(c) => {
            let data = c
                .data
                .path
                .file_stem()
                .map_or(c.data.kind.clone(), |s| s.to_string_lossy().into_owned());
            format!("{method} on {} · {data}, N = {}", c.model.name, c.data.n)
        }
        Err(_) => method.to_string(),
    }
}

/// Most curves in the retention plot: the points are thinned evenly, keeping the last.
const RETENTION_CURVES: usize = 8;

/// retention.{svg,png}: efficacy and paraphrase of each tenth of the edits by age (oldest on
/// the left), one curve per evaluation point, so a reader sees which edits go first.
fn plot_retention(dir: &Path, method: &str, points: &[EvalPoint]) -> Result<Vec<PathBuf>> {
    let with: Vec<&EvalPoint> = points.iter().filter(|p| !p.retention.is_empty()).collect();
    if with.is_empty() {
        return Ok(vec![]);
    }
    let step = with.len().div_ceil(RETENTION_CURVES);
    let chosen: Vec<&EvalPoint> = with.iter().rev().step_by(step).rev().copied().collect();
    let panel = |title: &str, get: fn(&AgeDecile) -> Option<f64>| LineChart {
        title: format!("{method}: {title} by edit age"),
        x_label: "edit age: tenth of the edits so far (0 = oldest)".into(),
        y_label: title.into(),
        series: chosen
            .iter()
            .map(|p| Series {
                label: format!("after {} edits", p.edits),
                points: p
                    .retention
                    .iter()
                    .filter_map(|d| get(d).map(|v| (d.decile as f64, v)))
                    .collect(),
                ..Default::default()
            })
            .collect(),
        y_range: Some((0.0, 1.0)),
        log_y: false,
    };
    let charts = [
        panel("efficacy", |d| d.efficacy),
        panel("paraphrase", |d| d.paraphrase),
    ];
    render_grid(&charts, 2, &dir.join("retention"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::bench::table::markdown;
    use crate::eval::bench::LayerNorms;
    use crate::eval::testkit::{point, record};

    /// Points whose one layer's ‖W‖₁/n grows from 0.15 by the given factors (no baseline in
    /// the points, as in runs of earlier versions: point 0 holds it).
    fn growing(factors: &[f64]) -> Vec<EvalPoint> {
        factors
            .iter()
            .enumerate()
            .map(|(i, f)| EvalPoint {
                layers: vec![LayerNorms {
                    layer: 8,
                    l1_mean: 0.15 * f,
                    fro: 0.0,
                    delta_l1_mean: 0.0,
                    delta_fro: 0.0,
                    w0_l1_mean: None,
                }],
                ..point(i * 10)
            })
            .collect()
    }

    #[test]
    fn the_norms_plot_shows_growth_on_an_axis_that_does_not_magnify_small_changes() {
        let small = norms_chart("d4s", &growing(&[1.0, 1.003, 1.006]));
        assert_eq!(
            small.y_range,
            Some((0.95, 1.05)),
            "a 0.6% change stays small"
        );
        let ys: Vec<f64> = small.series[0].points.iter().map(|p| p.1).collect();
        assert!((ys[2] - 1.006).abs() < 1e-12, "{ys:?}");
        let big = norms_chart("memit", &growing(&[1.0, 1.2, 1.6]));
        let (lo, hi) = big.y_range.unwrap();
        assert!(
            lo <= 0.95 && hi >= 1.6,
            "an explosion widens the axis: {lo}..{hi}"
        );
    }

    #[test]
    fn the_summary_and_the_table_carry_the_targets_perplexity_and_diversity() {
        let records: Vec<EditRecord> =
            [(2.0, 1.0, " Rome"), (8.0, 3.0, "Paris"), (4.0, 2.0, "Rome")]
                .into_iter()
                .enumerate()
                .map(|(i, (ppl, tokens, target))| EditRecord {
                    target_ppl: Some(ppl),
                    target_tokens: Some(tokens),
                    target_new: vec![target.to_string()],
                    ..record(i)
                })
                .collect();
        let s = summarize("d4s", &[point(0), point(3)], &records).unwrap();
        let t = s.targets.clone().unwrap();
        // Geometric mean: (2 · 8 · 4)^(1/3) = 4.
        assert!((t.ppl - 4.0).abs() < 1e-12, "{t:?}");
        assert_eq!((t.ppl_median, t.tokens), (4.0, 2.0));
        // " Rome" and "Rome" are one target: frequencies 2/3, 1/3.
        let h = -(2.0f64 / 3.0 * (2.0f64 / 3.0).log2() + 1.0 / 3.0 * (1.0f64 / 3.0).log2());
        assert_eq!(t.distinct, Some(2));
        assert!((t.entropy_bits.unwrap() - h).abs() < 1e-12, "{t:?}");
        let md = markdown(&[("run".into(), s)]);
        assert!(md.contains("| target PPL |"), "{md}");
        assert!(
            md.contains("| 4.0 (2.0 tok; 2 distinct, H 0.92 bits) |"),
            "{md}"
        );
        // One target for every edit: no diversity at all (TF-like runs approach this).
        let same: Vec<EditRecord> = (0..4)
            .map(|i| EditRecord {
                target_ppl: Some(3.0),
                target_tokens: Some(1.0),
                target_new: vec![" True".into()],
                ..record(i)
            })
            .collect();
        let t = summarize("d4s", &[point(0), point(4)], &same)
            .unwrap()
            .targets
            .unwrap();
        assert_eq!((t.distinct, t.entropy_bits), (Some(1), Some(0.0)));
        // Runs recorded before `target_new` existed keep the perplexity and have no diversity.
        let no_targets: Vec<EditRecord> = records
            .iter()
            .map(|r| EditRecord {
                target_new: vec![],
                ..r.clone()
            })
            .collect();
        let s = summarize("d4s", &[point(0), point(3)], &no_targets).unwrap();
        assert_eq!(s.targets.as_ref().unwrap().distinct, None);
        // Nor does a run only partly recorded with them (resumed across versions).
        let partly = [
            no_targets[0].clone(),
            records[1].clone(),
            records[2].clone(),
        ];
        let t = summarize("d4s", &[point(0), point(3)], &partly)
            .unwrap()
            .targets
            .unwrap();
        assert_eq!((t.distinct, t.entropy_bits), (None, None));
        assert!(markdown(&[("run".into(), s)]).contains("| 4.0 (2.0 tok) |"));
        // Runs recorded before the field existed have no column.
        let old = summarize("d4s", &[point(0), point(1)], &[record(0)]).unwrap();
        assert!(old.targets.is_none());
        assert!(!markdown(&[("old".into(), old)]).contains("target PPL"));
    }

    #[test]
    fn a_metric_measured_only_at_the_ends_is_not_drawn_as_a_line_between_them() {
        let points: Vec<EvalPoint> = [0, 10, 20, 30]
            .into_iter()
            .map(crate::eval::testkit::point)
            .collect();
        let measured = |p: &EvalPoint| (p.edits == 0 || p.edits == 30).then_some(0.5);
        let s = series("gen", &points, measured);
        assert_eq!(s.points.len(), 3, "{:?}", s.points);
        assert_eq!((s.points[0], s.points[2]), ((0.0, 0.5), (30.0, 0.5)));
        assert!(s.points[1].1.is_nan(), "a gap between the ends");
        // Measured everywhere: no gap; measured nowhere: no points at all.
        assert_eq!(series("all", &points, |_| Some(1.0)).points.len(), 4);
        assert!(series("none", &points, |_| None).points.is_empty());
        // Missing only at the end: no trailing gap.
        let early = series("early", &points, |p| (p.edits < 20).then_some(1.0));
        assert_eq!(early.points, vec![(0.0, 1.0), (10.0, 1.0)]);
    }
}
