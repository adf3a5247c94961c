//! Tables: `summary.csv` (through the `csv` crate, so the header and the row cannot drift
//! apart), the Markdown table of several runs, and `d4s compare` (that table plus overlaid
//! curves).

use std::path::{Path, PathBuf};

use super::records::{load_run, GenMetric, Metric, ProbMetric, TokenMetric};
use super::summary::{metric_series, series, summarize, Summary};
use crate::error::{Error, Result};
use crate::eval::interval::Interval;
use crate::eval::plots::{self, render, LineChart};
use crate::util;

/// `summary.csv`: one header line and one row.
pub fn csv(s: &Summary) -> Result<String> {
    let f = |v: Option<f64>| v.map_or(String::new(), |x| format!("{x:.6}"));
    let targets = s.targets.as_ref();
    let mut columns: Vec<(String, String)> = vec![
        ("method".into(), s.method.clone()),
        ("edits".into(), s.edits.to_string()),
        ("efficacy".into(), f(s.efficacy)),
        ("paraphrase".into(), f(s.paraphrase)),
        ("specificity".into(), f(s.specificity)),
        ("avg".into(), f(s.avg)),
        ("portability".into(), f(s.portability)),
        ("es".into(), f(s.es)),
        ("ps".into(), f(s.ps)),
        ("ns".into(), f(s.ns)),
        ("multihop".into(), f(s.multihop)),
        ("fluency".into(), f(s.fluency)),
        ("rejected".into(), s.rejected.to_string()),
        ("seconds_per_edit".into(), f(s.seconds_per_edit)),
        ("target_ppl".into(), f(targets.map(|t| t.ppl))),
        ("target_tokens".into(), f(targets.map(|t| t.tokens))),
        (
            "target_distinct".into(),
            targets
                .and_then(|t| t.distinct)
                .map_or(String::new(), |d| d.to_string()),
        ),
        (
            "target_entropy_bits".into(),
            f(targets.and_then(|t| t.entropy_bits)),
        ),
        ("post_edit_prob".into(), f(s.post_edit_prob)),
    ];
    for g in GenMetric::ALL {
        columns.push((csv_name(Metric::Gen(g)), f(g.get(&s.gen))));
    }
    for (&metric, ci) in &s.intervals.0 {
        let name = csv_name(metric);
        columns.push((format!("{name}_lo"), format!("{:.6}", ci.lo)));
        columns.push((format!("{name}_hi"), format!("{:.6}", ci.hi)));
    }
    for (j, r) in s.projector_rank.iter().enumerate() {
        columns.push((format!("projector_rank_{j}"), r.to_string()));
    }
    for p in &s.probes {
        columns.push((format!("{}_start", p.task), f(p.start)));
        columns.push((format!("{}_end", p.task), f(p.end)));
        if let Some(ci) = p.end_interval {
            columns.push((format!("{}_end_lo", p.task), format!("{:.6}", ci.lo)));
            columns.push((format!("{}_end_hi", p.task), format!("{:.6}", ci.hi)));
        }
    }
    for g in &s.l1_growth {
        columns.push((
            format!("l1_growth_L{}", g.layer),
            format!("{:.6}", g.growth),
        ));
    }
    let mut w = ::csv::Writer::from_writer(Vec::new());
    let failed = |e: ::csv::Error| Error::Input(format!("summary.csv: {e}"));
    w.write_record(columns.iter().map(|(h, _)| h))
        .map_err(failed)?;
    w.write_record(columns.iter().map(|(_, v)| v))
        .map_err(failed)?;
    let bytes = w
        .into_inner()
        .map_err(|e| Error::Input(format!("summary.csv: {e}")))?;
    Ok(String::from_utf8(bytes).expect("the fields are UTF-8"))
}

/// A metric's column in `summary.csv`: the names it always had for the token and probability
/// metrics, `gen_` before the generation ones.
fn csv_name(metric: Metric) -> String {
    match metric {
        Metric::Gen(g) => format!("gen_{}", g.name()),
        m => m.name().to_string(),
    }
}

fn opt(v: Option<f64>) -> String {
    v.map_or_else(|| "–".to_string(), |x| format!("{:.1}", 100.0 * x))
}

/// A value ×100 with half its 95% interval's width, when it has one: `45.2 ±3.1`.
pub(crate) fn with_ci(v: Option<f64>, ci: Option<Interval>) -> String {
    match (v, ci) {
        (Some(_), Some(ci)) => format!("{} ±{:.1}", opt(v), 100.0 * ci.half_width()),
        _ => opt(v),
    }
}

/// The side-by-side table of several runs (Markdown).
pub fn markdown(summaries: &[(String, Summary)]) -> String {
    let tasks: Vec<String> = {
        let mut t: Vec<String> = summaries
            .iter()
            .flat_map(|(_, s)| s.probes.iter().map(|p| p.task.clone()))
            .collect();
        t.sort();
        t.dedup();
        t
    };
    let with_ge = summaries.iter().any(|(_, s)| s.fluency.is_some());
    let with_ppl = summaries.iter().any(|(_, s)| s.targets.is_some());
    let with_post = summaries.iter().any(|(_, s)| s.post_edit_prob.is_some());
    let with_gen = summaries.iter().any(|(_, s)| !s.gen.is_empty());
    let mut md = String::from("| run | method | N | Eff. | Par. | Spe. | Avg. | ES | PS | NS |");
    if with_gen {
        md.push_str(" gen EM | gen F1 | gen par. EM | gen Spe. |");
    }
    if with_ge {
        md.push_str(" GE |");
    }
    for t in &tasks {
        md.push_str(&format!(" {t} (0 → N) |"));
    }
    if with_ppl {
        md.push_str(" target PPL |");
    }
    if with_post {
        md.push_str(" post-edit p |");
    }
    md.push_str(" max ‖W‖₁ growth | s/edit |\n|---|---|---|---|---|---|---|---|---|---|");
    if with_gen {
        md.push_str("---|---|---|---|");
    }
    if with_ge {
        md.push_str("---|");
    }
    for _ in &tasks {
        md.push_str("---|");
    }
    if with_ppl {
        md.push_str("---|");
    }
    if with_post {
        md.push_str("---|");
    }
    md.push_str("---|---|\n");
    for (name, s) in summaries {
        let cell = |m: Metric| with_ci(s.value(m), s.intervals.get(m));
        md.push_str(&format!(
            "| {name} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            s.method,
            s.edits,
            cell(Metric::Token(TokenMetric::Efficacy)),
            cell(Metric::Token(TokenMetric::Paraphrase)),
            cell(Metric::Token(TokenMetric::Specificity)),
            opt(s.avg),
            cell(Metric::Prob(ProbMetric::Es)),
            cell(Metric::Prob(ProbMetric::Ps)),
            cell(Metric::Prob(ProbMetric::Ns)),
        ));
        if with_gen {
            for g in [
                GenMetric::EfficacyEm,
                GenMetric::EfficacyF1,
                GenMetric::ParaphraseEm,
                GenMetric::Specificity,
            ] {
                md.push_str(&format!(" {} |", cell(Metric::Gen(g))));
            }
        }
        if with_ge {
            // GE is reported ×100 in the field's tables (bits × 100).
            md.push_str(&format!(" {} |", opt(s.fluency)));
        }
        for t in &tasks {
            let cell = s
                .probes
                .iter()
                .find(|p| &p.task == t)
                .map_or("–".to_string(), |p| {
                    format!("{} → {}", opt(p.start), with_ci(p.end, p.end_interval))
                });
            md.push_str(&format!(" {cell} |"));
        }
        if with_ppl {
            let cell = s.targets.as_ref().map_or("–".to_string(), |t| {
                let diversity = match (t.distinct, t.entropy_bits) {
                    (Some(d), Some(h)) => format!("; {d} distinct, H {h:.2} bits"),
                    _ => String::new(),
                };
                format!("{:.1} ({:.1} tok{diversity})", t.ppl, t.tokens)
            });
            md.push_str(&format!(" {cell} |"));
        }
        if with_post {
            md.push_str(&format!(" {} |", opt(s.post_edit_prob)));
        }
        let g = s.max_growth();
        let reused = if s.edits_with_reused_targets > 0 {
            "*"
        } else {
            ""
        };
        md.push_str(&format!(
            " ×{g:.4} | {}{reused} |\n",
            s.seconds_per_edit.map_or("–".into(), |x| format!("{x:.1}"))
        ));
    }
    md.push_str("\nEff./Par./Spe.: EasyEdit token-level rewrite, rephrase and locality accuracy ×100 over all edits on the final model; ES/PS/NS: ROME/MEMIT probability scores ×100; ±: half the width of the 95% bootstrap interval over cases (probes: over items); ");
    if with_gen {
        md.push_str("gen EM / F1 / par. EM / Spe.: greedy answers (until end-of-text, a newline or the target's length + 8 tokens) that start with the target, their token-F1 against it, the same after paraphrases, and neighbours whose answer is the unedited model's, ×100; ");
    }
    if with_ge {
        md.push_str("GE: ROME/MEMIT generation fluency (n-gram entropy, bits) ×100 after the last edit (point 0 of metrics.jsonl holds the unedited model's); ");
    }
    md.push_str("probes: headline metric ×100");
    if with_ppl {
        md.push_str("; target PPL: geometric mean over the edits of the new target's perplexity after its prompt on the unedited model, the mean target length in tokens, and the targets' diversity: how many different targets the edits wrote and the entropy of their frequencies");
    }
    if with_post {
        md.push_str(
            "; post-edit p: mean p(target | prompt) ×100 on the model right after each edit landed",
        );
    }
    md.push_str(".\n");
    let reused: Vec<String> = summaries
        .iter()
        .filter(|(_, s)| s.edits_with_reused_targets > 0)
        .map(|(n, s)| format!("{n} ({} of {} edits)", s.edits_with_reused_targets, s.edits))
        .collect();
    if !reused.is_empty() {
        md.push_str(&format!(
            "\n*: these runs reused target vectors that an earlier method of the same command had \
             optimized on the unedited model (identical results), so their s/edit leaves that \
             optimization out: {}.\n",
            reused.join(", ")
        ));
    }
    md
}

/// The runs named by `runs`, read back, each with its folder's name.
fn load_runs(runs: &[PathBuf]) -> Result<Vec<(String, super::records::LoadedRun)>> {
    runs.iter()
        .map(|r| {
            let run = load_run(r)?;
            let name = r
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| run.config.method.clone());
            Ok((name, run))
        })
        .collect()
}

/// The side-by-side table of the runs (Markdown), without writing anything.
pub fn compare_table(runs: &[PathBuf]) -> Result<String> {
    Ok(markdown(&summaries(&load_runs(runs)?)))
}

/// `d4s compare --out`: overlays the runs' curves and writes `compare.md`.
pub fn compare(runs: &[PathBuf], out: &Path) -> Result<(String, Vec<PathBuf>)> {
    util::ensure_dir(out)?;
    let loaded = load_runs(runs)?;
    let mut files = Vec::new();
    for (metric, title) in [
        (TokenMetric::Efficacy, "Efficacy vs number of edits"),
        (TokenMetric::Paraphrase, "Paraphrase vs number of edits"),
        (TokenMetric::Specificity, "Specificity vs number of edits"),
    ] {
        let chart = LineChart {
            title: title.into(),
            x_label: "edits".into(),
            y_label: metric.name().into(),
            series: loaded
                .iter()
                .map(|(n, r)| plots::Series {
                    label: n.clone(),
                    ..metric_series(Metric::Token(metric), &r.points)
                })
                .collect(),
            y_range: Some((0.0, 1.0)),
            log_y: false,
        };
        files.extend(render(&chart, &out.join(metric.name()))?);
    }
    let norm = LineChart {
        title: "Largest ‖W‖₁/n growth across edited layers vs number of edits".into(),
        x_label: "edits".into(),
        y_label: "‖W‖₁ / ‖W0‖₁".into(),
        series: loaded
            .iter()
            .map(|(n, r)| {
                let p = &r.points;
                let base: Vec<(usize, f64)> = p
                    .first()
                    .map(|f| f.layers.iter().map(|l| (l.layer, l.l1_mean)).collect())
                    .unwrap_or_default();
                series(n, p, |pt| {
                    pt.layers
                        .iter()
                        .filter_map(|l| {
                            l.growth().or_else(|| {
                                base.iter()
                                    .find(|b| b.0 == l.layer)
                                    .map(|b| l.l1_mean / b.1.max(1e-30))
                            })
                        })
                        .reduce(f64::max)
                })
            })
            .collect(),
        y_range: None,
        log_y: false,
    };
    files.extend(render(&norm, &out.join("norm_growth"))?);
    let md = markdown(&summaries(&loaded));
    util::write_atomic(&out.join("compare.md"), md.as_bytes())?;
    files.push(out.join("compare.md"));
    Ok((md, files))
}

/// Each run's summary, named; an interrupted or still running run says where it is rather
/// than showing a finished-looking N.
fn summaries(loaded: &[(String, super::records::LoadedRun)]) -> Vec<(String, Summary)> {
    loaded
        .iter()
        .filter_map(|(n, r)| {
            let s = summarize(&r.config.method, &r.points, &r.records)?;
            let planned = r.config.planned_edits();
            let name = if s.edits < planned {
                format!("{n} (unfinished: {} of {planned})", s.edits)
            } else {
                n.clone()
            };
            Some((name, s))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::bench::records::EditRecord;
    use crate::eval::bench::run::BenchSink;
    use crate::eval::bench::writer::RunWriter;
    use crate::eval::testkit::{point, record, run_config};

    #[test]
    fn the_csv_header_and_row_have_the_same_columns() {
        let mut s = summarize("d4s", &[point(0), point(3)], &[record(0)]).unwrap();
        s.probes.push(crate::eval::bench::summary::ProbeChange {
            task: "arc_easy".into(),
            start: Some(0.5),
            end: None,
            start_interval: None,
            end_interval: None,
        });
        let text = csv(&s).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[0].starts_with("method,edits,efficacy,"), "{text}");
        assert!(lines[0].ends_with(",arc_easy_start,arc_easy_end"), "{text}");
        assert_eq!(lines[0].split(',').count(), lines[1].split(',').count());
        assert!(lines[1].starts_with("d4s,3,"), "{text}");
        assert!(lines[1].ends_with(",0.500000,"), "{text}");
        // The post-edit probability and AlphaEdit's ranks have their columns, in the table too.
        s.post_edit_prob = Some(0.25);
        s.projector_rank = vec![40, 52];
        let text = csv(&s).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].contains(",post_edit_prob,gen_"), "{text}");
        assert!(
            lines[0].contains(",projector_rank_0,projector_rank_1,"),
            "{text}"
        );
        assert!(lines[1].contains(",0.250000,"), "{text}");
        assert!(lines[1].contains(",40,52,"), "{text}");
        let md = markdown(&[("run".into(), s.clone())]);
        assert!(
            md.contains("| post-edit p |") && md.contains("| 25.0 |"),
            "{md}"
        );
        assert!(!md.contains("gen EM"), "no decoding, no gen columns: {md}");
        // Generation metrics and intervals get columns, and the table shows the ± of each.
        s.efficacy = Some(0.2);
        s.gen.efficacy_em = Some(0.4);
        s.intervals.0.insert(
            Metric::Token(TokenMetric::Efficacy),
            Interval { lo: 0.1, hi: 0.3 },
        );
        s.probes[0].end = Some(0.25);
        s.probes[0].end_interval = Some(Interval { lo: 0.2, hi: 0.3 });
        let text = csv(&s).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0].split(',').count(), lines[1].split(',').count());
        assert!(
            lines[0].contains(",gen_efficacy_em,gen_efficacy_f1,"),
            "{text}"
        );
        assert!(lines[0].contains(",efficacy_lo,efficacy_hi,"), "{text}");
        assert!(
            lines[0].contains(",arc_easy_end_lo,arc_easy_end_hi"),
            "{text}"
        );
        assert!(lines[1].contains(",0.400000,,"), "{text}");
        assert!(lines[1].contains(",0.100000,0.300000,"), "{text}");
        let md = markdown(&[("run".into(), s)]);
        assert!(md.contains("| d4s | 3 | 20.0 ±10.0 |"), "{md}");
        assert!(md.contains("| gen EM |") && md.contains("| 40.0 |"), "{md}");
        assert!(md.contains("| 50.0 → 25.0 ±5.0 |"), "{md}");
        assert!(md.contains("95% bootstrap interval"), "{md}");
    }

    #[test]
    fn compare_marks_an_unfinished_run() {
        let root = tempfile::tempdir().unwrap();
        let run = root.path().join("d4s-cf");
        let mut w = RunWriter::create(&run, &run_config(), None).unwrap();
        w.point(&point(0)).unwrap();
        for i in 0..2 {
            w.edit(&record(i)).unwrap();
        }
        w.point(&point(2)).unwrap();
        let (md, _) = compare(std::slice::from_ref(&run), &root.path().join("cmp")).unwrap();
        assert!(
            md.contains("| d4s-cf (unfinished: 2 of 5) | d4s | 2 |"),
            "{md}"
        );
        assert!(!md.contains("GE"), "no fluency, no GE column or note: {md}");
    }

    #[test]
    fn compare_marks_the_time_of_runs_that_reused_targets() {
        let root = tempfile::tempdir().unwrap();
        let mut runs = Vec::new();
        for (name, reused) in [("memit", 0), ("d4s", 1)] {
            let run = root.path().join(name);
            let mut w = RunWriter::create(&run, &run_config(), None).unwrap();
            for i in 0..5 {
                w.edit(&EditRecord {
                    targets_reused: if i < 3 { reused } else { 0 },
                    targets_ahead: 0,
                    ..record(i)
                })
                .unwrap();
            }
            w.point(&point(5)).unwrap();
            runs.push(run);
        }
        let (md, _) = compare(&runs, &root.path().join("cmp")).unwrap();
        assert!(md.contains("| 1.0 |\n"), "MEMIT's time is unmarked: {md}");
        assert!(md.contains("| 1.0* |\n"), "{md}");
        assert!(md.contains("d4s (3 of 5 edits)"), "{md}");
        let line = std::fs::read_to_string(runs[1].join("edits.jsonl")).unwrap();
        assert!(line
            .lines()
            .next()
            .unwrap()
            .contains("\"targets_reused\":1"));
        assert!(!line.lines().last().unwrap().contains("targets_reused"));
    }
}
