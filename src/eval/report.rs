//! Run folders: `config.json`, `metrics.jsonl`, `edits.jsonl`, `summary.json`, `summary.csv`
//! and plots; and `d4s compare` over several run folders (overlaid curves + a Markdown table like
//! the paper's).

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::bench::{BenchSink, CaseOutcome, EditRecord, EvalPoint};
use super::plots::{render, LineChart, Series};
use crate::edit::Timings;
use crate::error::{Error, Result};
use crate::util;

/// What produced a run (written first, as `config.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    pub d4s_version: String,
    pub started: String,
    pub model: serde_json::Value,
    pub method: String,
    pub hparams: serde_json::Value,
    pub data: serde_json::Value,
    pub protocol: serde_json::Value,
    pub eval_every: Option<usize>,
    pub probes: Vec<String>,
    pub probe_config: serde_json::Value,
    pub stats: serde_json::Value,
    pub seed: u64,
    pub threads: usize,
    pub command: String,
    /// Each time the run was continued from a checkpoint: when, after how many edits, and the
    /// command line.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resumed: Vec<serde_json::Value>,
}

impl RunConfig {
    /// What a resumed run must share with the original to continue it: the model's weights,
    /// the method and its hyperparameters, the data file's content and the cases taken from it,
    /// the protocol, the evaluation schedule, the probes and the statistics. Not the paths
    /// (a run may be continued from another directory), the thread count or the times.
    pub fn identity(&self) -> serde_json::Value {
        let mut data = self.data.clone();
        if let Some(o) = data.as_object_mut() {
            o.remove("path");
        }
        let mut probe_config = self.probe_config.clone();
        if let Some(o) = probe_config.as_object_mut() {
            o.remove("data_dir");
        }
        serde_json::json!({
            "model": self.model.get("sha256"),
            "method": self.method,
            "hparams": self.hparams,
            "data": data,
            "protocol": self.protocol,
            "eval_every": self.eval_every,
            "probes": self.probes,
            "probe_config": probe_config,
            "stats": self.stats,
            "seed": self.seed,
        })
    }
}

/// Each edited case's outcome at the end of a run ([`CaseOutcome`]).
pub const CASES_FILE: &str = "cases.jsonl";

/// Streams `metrics.jsonl` and `edits.jsonl` as the run goes (flushed per line, so an interrupted
/// run keeps what it measured).
pub struct RunWriter {
    pub dir: PathBuf,
    metrics: File,
    edits: File,
    pub points: Vec<EvalPoint>,
    pub records: Vec<EditRecord>,
    progress: Option<indicatif::ProgressBar>,
    heartbeat: util::Heartbeat,
}

/// How often, in seconds, a headless run (its bar hidden) writes a progress line to its log,
/// unless [`RunWriter::set_heartbeat`] says otherwise (`d4s bench --progress-every`).
pub const HEARTBEAT_SECS: u64 = 300;

fn append(f: &mut File, path: &Path, v: &impl Serialize) -> Result<()> {
    let mut line = serde_json::to_string(v).expect("serializable");
    line.push('\n');
    f.write_all(line.as_bytes())
        .and_then(|_| f.flush())
        .map_err(|e| Error::io(path, e))
}

impl RunWriter {
    pub fn create(
        dir: &Path,
        config: &RunConfig,
        progress: Option<indicatif::ProgressBar>,
    ) -> Result<Self> {
        util::ensure_dir(dir)?;
        util::write_atomic(
            &dir.join("config.json"),
            serde_json::to_string_pretty(config)
                .expect("serializable")
                .as_bytes(),
        )?;
        let open = |name: &str| {
            OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(true)
                .open(dir.join(name))
                .map_err(|e| Error::io(dir.join(name), e))
        };
        // A finished earlier run's per-case outcomes would pass for this run's.
        util::remove_if_exists(&dir.join(CASES_FILE))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            metrics: open("metrics.jsonl")?,
            edits: open("edits.jsonl")?,
            points: vec![],
            records: vec![],
            progress,
            heartbeat: util::Heartbeat::new(std::time::Duration::from_secs(HEARTBEAT_SECS)),
        })
    }
}

impl RunWriter {
    /// Reopens a run folder to continue it after a checkpoint taken after `edits` edits: keeps
    /// the lines of `metrics.jsonl` up to that point and the first `edits` lines of `edits.jsonl`
    /// (byte for byte; later lines were written after the checkpoint and will be measured again),
    /// and appends from there.
    pub fn resume(
        dir: &Path,
        edits: usize,
        progress: Option<indicatif::ProgressBar>,
    ) -> Result<Self> {
        let raw = |name: &str| jsonl_lines(dir, name);
        // A line cut short by the interruption can only be the last one, and it was written
        // after the checkpoint (a point is written before the checkpoint that follows it).
        let parse_all = |name: &str, lines: &[String]| -> Result<Vec<serde_json::Value>> {
            let mut out = Vec::new();
            for (i, l) in lines.iter().enumerate() {
                match serde_json::from_str(l) {
                    Ok(v) => out.push(v),
                    Err(_) if i + 1 == lines.len() => break,
                    Err(e) => {
                        return Err(Error::bad_file(
                            dir.join(name),
                            format!("line {}: {e}", i + 1),
                        ))
                    }
                }
            }
            Ok(out)
        };
        let metric_lines = raw("metrics.jsonl")?;
        let edit_lines = raw("edits.jsonl")?;
        let mut points: Vec<(usize, EvalPoint)> = Vec::new();
        for (i, v) in parse_all("metrics.jsonl", &metric_lines)?
            .into_iter()
            .enumerate()
        {
            let p: EvalPoint = serde_json::from_value(v).map_err(|e| {
                Error::bad_file(dir.join("metrics.jsonl"), format!("line {}: {e}", i + 1))
            })?;
            if p.edits <= edits {
                points.push((i, p));
            }
        }
        let records: Vec<EditRecord> = parse_all("edits.jsonl", &edit_lines)?
            .into_iter()
            .take(edits)
            .enumerate()
            .map(|(i, v)| {
                serde_json::from_value(v).map_err(|e| {
                    Error::bad_file(dir.join("edits.jsonl"), format!("line {}: {e}", i + 1))
                })
            })
            .collect::<Result<_>>()?;
        if records.len() < edits {
            return Err(Error::bad_file(
                dir.join("edits.jsonl"),
                format!(
                    "holds {} edits, but the checkpoint is after {edits}",
                    records.len()
                ),
            ));
        }
        let rewrite = |name: &str, lines: Vec<&String>| -> Result<File> {
            let mut text = String::new();
            for l in lines {
                text.push_str(l);
                text.push('\n');
            }
            let p = dir.join(name);
            util::write_atomic(&p, text.as_bytes())?;
            OpenOptions::new()
                .append(true)
                .open(&p)
                .map_err(|e| Error::io(&p, e))
        };
        let metrics = rewrite(
            "metrics.jsonl",
            points.iter().map(|(i, _)| &metric_lines[*i]).collect(),
        )?;
        let edits_file = rewrite("edits.jsonl", edit_lines.iter().take(edits).collect())?;
        Ok(Self {
            dir: dir.to_path_buf(),
            metrics,
            edits: edits_file,
            points: points.into_iter().map(|(_, p)| p).collect(),
            records,
            progress,
            heartbeat: util::Heartbeat::new(std::time::Duration::from_secs(HEARTBEAT_SECS)),
        })
    }

    /// How often a headless run (its bar hidden) writes a progress line.
    pub fn set_heartbeat(&mut self, every: std::time::Duration) {
        self.heartbeat = util::Heartbeat::new(every);
    }
}

impl BenchSink for RunWriter {
    fn edit(&mut self, record: &EditRecord) -> Result<()> {
        append(&mut self.edits, &self.dir.join("edits.jsonl"), record)?;
        self.records.push(record.clone());
        Ok(())
    }

    fn point(&mut self, point: &EvalPoint) -> Result<()> {
        append(&mut self.metrics, &self.dir.join("metrics.jsonl"), point)?;
        if let Some(pb) = &self.progress {
            let eff = point
                .metrics
                .token
                .get("efficacy")
                .copied()
                .unwrap_or(f64::NAN);
            util::say(
                pb,
                format!(
                    "  after {:>5} edits: efficacy {eff:.3}{}",
                    point.edits,
                    point
                        .metrics
                        .token
                        .get("specificity")
                        .map(|s| format!(", specificity {s:.3}"))
                        .unwrap_or_default()
                ),
            );
        }
        self.points.push(point.clone());
        Ok(())
    }

    fn cases(&mut self, cases: &[CaseOutcome]) -> Result<()> {
        let mut text = String::new();
        for c in cases {
            text.push_str(&serde_json::to_string(c).expect("serializable"));
            text.push('\n');
        }
        util::write_atomic(&self.dir.join(CASES_FILE), text.as_bytes())
    }

    fn warn(&mut self, message: &str) {
        match &self.progress {
            Some(pb) => util::say(pb, format!("warning: {message}")),
            None => eprintln!("warning: {message}"),
        }
    }

    fn progress(&mut self, done: usize, _total: usize, phase: &str) {
        if let Some(pb) = &self.progress {
            pb.set_position(done as u64);
            pb.set_message(phase.to_string());
            if pb.is_hidden() && self.heartbeat.due(std::time::Instant::now()) {
                util::say(pb, util::progress_line(pb, "edits"));
            }
        }
    }
}

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
    /// Headline probe value per task at edit 0 and at the end.
    pub probes: Vec<(String, Option<f64>, Option<f64>)>,
    /// ‖W‖₁/n at the end divided by its value before editing, per layer.
    pub l1_growth: Vec<(usize, f64)>,
    pub rejected: usize,
    pub seconds_per_edit: Option<f64>,
    /// Edits whose targets came from an earlier method of the same command (their seconds
    /// exclude the target optimization).
    #[serde(default, skip_serializing_if = "super::bench::is_zero")]
    pub edits_with_reused_targets: usize,
    /// Median of each phase over the accepted edits (a typical edit: the first one also gathers
    /// the key statistics once).
    #[serde(default)]
    pub median_timings: Option<Timings>,
    /// Largest resident memory seen after an edit, in bytes.
    #[serde(default)]
    pub peak_rss_bytes: Option<u64>,
    pub wall_seconds: f64,
    /// How hard the edited targets were for the unedited model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub targets: Option<TargetDifficultySummary>,
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

/// The median of each timed phase.
fn median_timings(all: &[&Timings]) -> Option<Timings> {
    if all.is_empty() {
        return None;
    }
    let med = |f: fn(&Timings) -> f64| {
        let mut xs: Vec<f64> = all.iter().map(|t| f(t)).collect();
        xs.sort_by(f64::total_cmp);
        xs[xs.len() / 2]
    };
    Some(Timings {
        statistics: med(|t| t.statistics),
        templates: med(|t| t.templates),
        target: med(|t| t.target),
        keys: med(|t| t.keys),
        solve: med(|t| t.solve),
        total: med(|t| t.total),
    })
}

pub fn summarize(method: &str, points: &[EvalPoint], records: &[EditRecord]) -> Option<Summary> {
    let last = points.last()?;
    let first = points.first()?;
    let t = &last.metrics.token;
    let three: Vec<f64> = ["efficacy", "paraphrase", "specificity"]
        .iter()
        .filter_map(|k| t.get(*k).copied())
        .collect();
    let probes = last
        .probes
        .keys()
        .map(|k| {
            let h = |p: &EvalPoint| p.probes.get(k).map(|r| r.headline().1);
            (k.clone(), h(first), h(last))
        })
        .collect();
    let l1_growth = last
        .layers
        .iter()
        .filter_map(|l| {
            let l0 = first.layers.iter().find(|x| x.layer == l.layer)?;
            // The first point is the unedited model (sequential) — or W0 itself (single).
            let base = if first.edits == 0 {
                l0.l1_mean
            } else {
                l.l1_mean
            };
            Some((l.layer, l.l1_mean / base.max(1e-30)))
        })
        .collect();
    let times: Vec<f64> = records
        .iter()
        .filter(|r| r.rejected.is_none())
        .map(|r| r.seconds)
        .collect();
    Some(Summary {
        method: method.to_string(),
        edits: last.edits,
        efficacy: t.get("efficacy").copied(),
        paraphrase: t.get("paraphrase").copied(),
        specificity: t.get("specificity").copied(),
        avg: (three.len() == 3).then(|| three.iter().sum::<f64>() / 3.0),
        portability: t.get("portability").copied(),
        es: last.metrics.prob.get("es").copied(),
        ps: last.metrics.prob.get("ps").copied(),
        ns: last.metrics.prob.get("ns").copied(),
        multihop: last.metrics.multihop,
        fluency: last.metrics.generation.get("fluency").copied(),
        probes,
        l1_growth,
        rejected: last.rejected,
        seconds_per_edit: (!times.is_empty())
            .then(|| times.iter().sum::<f64>() / times.len() as f64),
        edits_with_reused_targets: records.iter().filter(|r| r.targets_reused > 0).count(),
        median_timings: median_timings(
            &records
                .iter()
                .filter_map(|r| r.timings.as_ref())
                .collect::<Vec<_>>(),
        ),
        peak_rss_bytes: records.iter().filter_map(|r| r.rss_bytes).max(),
        wall_seconds: last.wall_seconds,
        targets: target_difficulty_summary(records),
    })
}

fn opt(v: Option<f64>) -> String {
    v.map_or_else(|| "–".to_string(), |x| format!("{:.1}", 100.0 * x))
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
    let mut csv = String::from("method,edits,efficacy,paraphrase,specificity,avg,portability,es,ps,ns,multihop,fluency,rejected,seconds_per_edit,target_ppl,target_tokens,target_distinct,target_entropy_bits");
    for (task, _, _) in &s.probes {
        csv.push_str(&format!(",{task}_start,{task}_end"));
    }
    for (l, _) in &s.l1_growth {
        csv.push_str(&format!(",l1_growth_L{l}"));
    }
    csv.push('\n');
    let f = |v: Option<f64>| v.map_or(String::new(), |x| format!("{x:.6}"));
    csv.push_str(&format!(
        "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
        s.method,
        s.edits,
        f(s.efficacy),
        f(s.paraphrase),
        f(s.specificity),
        f(s.avg),
        f(s.portability),
        f(s.es),
        f(s.ps),
        f(s.ns),
        f(s.multihop),
        f(s.fluency),
        s.rejected,
        f(s.seconds_per_edit),
        f(s.targets.as_ref().map(|t| t.ppl)),
        f(s.targets.as_ref().map(|t| t.tokens)),
        s.targets
            .as_ref()
            .and_then(|t| t.distinct)
            .map_or(String::new(), |d| d.to_string()),
        f(s.targets.as_ref().and_then(|t| t.entropy_bits))
    ));
    for (_, a, b) in &s.probes {
        csv.push_str(&format!(",{},{}", f(*a), f(*b)));
    }
    for (_, g) in &s.l1_growth {
        csv.push_str(&format!(",{g:.6}"));
    }
    csv.push('\n');
    util::write_atomic(&dir.join("summary.csv"), csv.as_bytes())?;
    plot_run(dir, method, points, records)?;
    Ok(Some(s))
}

fn series(label: &str, points: &[EvalPoint], get: impl Fn(&EvalPoint) -> Option<f64>) -> Series {
    Series {
        label: label.to_string(),
        points: points
            .iter()
            .filter_map(|p| get(p).map(|v| (p.edits as f64, v)))
            .collect(),
    }
}

/// metrics.{svg,png}, norms.{svg,png}, probes.{svg,png}, edit_prob.{svg,png}.
pub fn plot_run(
    dir: &Path,
    method: &str,
    points: &[EvalPoint],
    records: &[EditRecord],
) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let metrics = LineChart {
        title: format!("{method}: edit metrics vs number of edits"),
        x_label: "edits".into(),
        y_label: "score".into(),
        series: ["efficacy", "paraphrase", "specificity", "portability"]
            .iter()
            .map(|k| series(k, points, |p| p.metrics.token.get(*k).copied()))
            .filter(|s| !s.points.is_empty())
            .collect(),
        y_range: Some((0.0, 1.0)),
        log_y: false,
    };
    files.extend(render(&metrics, &dir.join("metrics"))?);
    let layers: Vec<usize> = points
        .last()
        .map(|p| p.layers.iter().map(|l| l.layer).collect())
        .unwrap_or_default();
    let norms = LineChart {
        title: format!("{method}: ‖W‖₁/n of each edited layer vs number of edits"),
        x_label: "edits".into(),
        y_label: "mean |w|".into(),
        series: layers
            .iter()
            .map(|&l| {
                series(&format!("layer {l}"), points, |p| {
                    p.layers.iter().find(|x| x.layer == l).map(|x| x.l1_mean)
                })
            })
            .collect(),
        y_range: None,
        log_y: false,
    };
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
                .map(|t| series(t, points, |p| p.probes.get(t).map(|r| r.headline().1)))
                .collect(),
            y_range: Some((0.0, 1.0)),
            log_y: false,
        };
        files.extend(render(&probes, &dir.join("probes"))?);
    }
    let prob = LineChart {
        title: format!("{method}: target probability reached by each edit"),
        x_label: "edit".into(),
        y_label: "p(target) after optimization".into(),
        series: vec![Series {
            label: "edit probability".into(),
            points: records
                .iter()
                .enumerate()
                .filter_map(|(i, r)| r.prob_final.map(|p| ((i + 1) as f64, p)))
                .collect(),
        }],
        y_range: Some((0.0, 1.0)),
        log_y: false,
    };
    files.extend(render(&prob, &dir.join("edit_prob"))?);
    Ok(files)
}

/// The non-empty lines of a run folder's JSONL file.
fn jsonl_lines(dir: &Path, name: &str) -> Result<Vec<String>> {
    let p = dir.join(name);
    let text = std::fs::read_to_string(&p).map_err(|e| Error::io(&p, e))?;
    Ok(text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect())
}

/// Reads a run folder's `config.json`.
pub fn load_config(dir: &Path) -> Result<RunConfig> {
    let cfg_path = dir.join("config.json");
    serde_json::from_slice(&std::fs::read(&cfg_path).map_err(|e| Error::io(&cfg_path, e))?)
        .map_err(|e| Error::bad_file(&cfg_path, format!("not a d4s run config: {e}")))
}

/// Reads a run folder back.
pub fn load_run(dir: &Path) -> Result<(RunConfig, Vec<EvalPoint>, Vec<EditRecord>)> {
    let cfg = load_config(dir)?;
    let lines = |name: &str| jsonl_lines(dir, name);
    let parse = |name: &str, i: usize, l: &str| {
        Error::bad_file(dir.join(name), format!("line {}: {l}", i + 1))
    };
    let points = lines("metrics.jsonl")?
        .iter()
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| parse("metrics.jsonl", i, &e.to_string()))
        })
        .collect::<Result<Vec<EvalPoint>>>()?;
    let records = lines("edits.jsonl")?
        .iter()
        .enumerate()
        .map(|(i, l)| serde_json::from_str(l).map_err(|e| parse("edits.jsonl", i, &e.to_string())))
        .collect::<Result<Vec<EditRecord>>>()?;
    Ok((cfg, points, records))
}

/// The side-by-side table of several runs (Markdown).
pub fn table(summaries: &[(String, Summary)]) -> String {
    let tasks: Vec<String> = {
        let mut t: Vec<String> = summaries
            .iter()
            .flat_map(|(_, s)| s.probes.iter().map(|p| p.0.clone()))
            .collect();
        t.sort();
        t.dedup();
        t
    };
    let with_ge = summaries.iter().any(|(_, s)| s.fluency.is_some());
    let with_ppl = summaries.iter().any(|(_, s)| s.targets.is_some());
    let mut md = String::from("| run | method | N | Eff. | Par. | Spe. | Avg. | ES | PS | NS |");
    if with_ge {
        md.push_str(" GE |");
    }
    for t in &tasks {
        md.push_str(&format!(" {t} (0 → N) |"));
    }
    if with_ppl {
        md.push_str(" target PPL |");
    }
    md.push_str(" max ‖W‖₁ growth | s/edit |\n|---|---|---|---|---|---|---|---|---|---|");
    if with_ge {
        md.push_str("---|");
    }
    for _ in &tasks {
        md.push_str("---|");
    }
    if with_ppl {
        md.push_str("---|");
    }
    md.push_str("---|---|\n");
    for (name, s) in summaries {
        md.push_str(&format!(
            "| {name} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            s.method,
            s.edits,
            opt(s.efficacy),
            opt(s.paraphrase),
            opt(s.specificity),
            opt(s.avg),
            opt(s.es),
            opt(s.ps),
            opt(s.ns)
        ));
        if with_ge {
            // GE is reported ×100 in the field's tables (bits × 100).
            md.push_str(&format!(" {} |", opt(s.fluency)));
        }
        for t in &tasks {
            let cell = s
                .probes
                .iter()
                .find(|p| &p.0 == t)
                .map_or("–".to_string(), |(_, a, b)| {
                    format!("{} → {}", opt(*a), opt(*b))
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
        let g = s.l1_growth.iter().map(|(_, g)| *g).fold(f64::NAN, f64::max);
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
    md.push_str("\nEff./Par./Spe.: EasyEdit token-level rewrite, rephrase and locality accuracy ×100 over all edits on the final model; ES/PS/NS: ROME/MEMIT probability scores ×100; ");
    if with_ge {
        md.push_str("GE: ROME/MEMIT generation fluency (n-gram entropy, bits) ×100 after the last edit (point 0 of metrics.jsonl holds the unedited model's); ");
    }
    md.push_str("probes: headline metric ×100");
    if with_ppl {
        md.push_str("; target PPL: geometric mean over the edits of the new target's perplexity after its prompt on the unedited model, the mean target length in tokens, and the targets' diversity: how many different targets the edits wrote and the entropy of their frequencies");
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

/// `d4s compare`: overlays the runs' curves and writes `compare.md`.
pub fn compare(runs: &[PathBuf], out: &Path) -> Result<(String, Vec<PathBuf>)> {
    util::ensure_dir(out)?;
    let mut loaded = Vec::new();
    for r in runs {
        let (cfg, points, records) = load_run(r)?;
        let name = r
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| cfg.method.clone());
        loaded.push((name, cfg, points, records));
    }
    let mut files = Vec::new();
    for (key, title, y) in [
        ("efficacy", "Efficacy vs number of edits", "efficacy"),
        ("paraphrase", "Paraphrase vs number of edits", "paraphrase"),
        (
            "specificity",
            "Specificity vs number of edits",
            "specificity",
        ),
    ] {
        let chart = LineChart {
            title: title.into(),
            x_label: "edits".into(),
            y_label: y.into(),
            series: loaded
                .iter()
                .map(|(n, _, p, _)| series(n, p, |pt| pt.metrics.token.get(key).copied()))
                .collect(),
            y_range: Some((0.0, 1.0)),
            log_y: false,
        };
        files.extend(render(&chart, &out.join(key))?);
    }
    let norm = LineChart {
        title: "Largest ‖W‖₁/n growth across edited layers vs number of edits".into(),
        x_label: "edits".into(),
        y_label: "‖W‖₁ / ‖W0‖₁".into(),
        series: loaded
            .iter()
            .map(|(n, _, p, _)| {
                let base: Vec<(usize, f64)> = p
                    .first()
                    .map(|f| f.layers.iter().map(|l| (l.layer, l.l1_mean)).collect())
                    .unwrap_or_default();
                series(n, p, |pt| {
                    pt.layers
                        .iter()
                        .filter_map(|l| {
                            base.iter()
                                .find(|b| b.0 == l.layer)
                                .map(|b| l.l1_mean / b.1.max(1e-30))
                        })
                        .reduce(f64::max)
                })
            })
            .collect(),
        y_range: None,
        log_y: false,
    };
    files.extend(render(&norm, &out.join("norm_growth"))?);
    let summaries: Vec<(String, Summary)> = loaded
        .iter()
        .filter_map(|(n, c, p, r)| {
            let s = summarize(&c.method, p, r)?;
            // An interrupted or still running run shows where it is, not a finished-looking N.
            let planned = c.data.get("n").and_then(|v| v.as_u64()).map(|v| v as usize);
            let name = match planned {
                Some(total) if s.edits < total => {
                    format!("{n} (unfinished: {} of {total})", s.edits)
                }
                _ => n.clone(),
            };
            Some((name, s))
        })
        .collect();
    let md = table(&summaries);
    util::write_atomic(&out.join("compare.md"), md.as_bytes())?;
    files.push(out.join("compare.md"));
    Ok((md, files))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::bench::CaseMetrics;

    fn config() -> RunConfig {
        RunConfig {
            d4s_version: "test".into(),
            started: "now".into(),
            model: serde_json::json!({"spec": "x", "sha256": "ab"}),
            method: "d4s".into(),
            hparams: serde_json::json!({"layers": [1]}),
            data: serde_json::json!({"path": "/a/cf.json", "sha256": "cd", "n": 5}),
            protocol: serde_json::json!({"kind": "sequential"}),
            eval_every: Some(2),
            probes: vec![],
            probe_config: serde_json::json!({"data_dir": "/a", "limit": 10}),
            stats: serde_json::json!({}),
            seed: 42,
            threads: 1,
            command: "d4s bench".into(),
            resumed: vec![],
        }
    }

    fn point(edits: usize) -> EvalPoint {
        EvalPoint {
            edits,
            metrics: CaseMetrics::default(),
            probes: Default::default(),
            layers: vec![],
            edit_prob: Some(0.1 * edits as f64),
            rejected: 0,
            wall_seconds: edits as f64,
        }
    }

    fn record(index: usize) -> EditRecord {
        EditRecord {
            index,
            origin: format!("cf#{index}"),
            prob_initial: Some(0.01),
            prob_final: Some(0.9),
            seconds: 1.0,
            timings: None,
            rss_bytes: None,
            rejected: None,
            targets_reused: 0,
            target_ppl: None,
            target_tokens: None,
            target_new: vec![],
        }
    }

    #[test]
    fn resuming_keeps_the_lines_up_to_the_checkpoint_and_appends_after_them() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = RunWriter::create(dir.path(), &config(), None).unwrap();
        for i in 0..5 {
            if i % 2 == 0 {
                w.point(&point(i)).unwrap();
            }
            w.edit(&record(i)).unwrap();
        }
        let before = std::fs::read_to_string(dir.path().join("metrics.jsonl")).unwrap();
        drop(w);
        // The interruption cut the last edit line short.
        let mut cut = OpenOptions::new()
            .append(true)
            .open(dir.path().join("edits.jsonl"))
            .unwrap();
        cut.write_all(b"{\"index\":5,\"ori").unwrap();
        drop(cut);
        // Checkpoint after 3 edits: the point at 4 and edits 3, 4 came after it.
        let mut w = RunWriter::resume(dir.path(), 3, None).unwrap();
        assert_eq!(w.points.iter().map(|p| p.edits).collect::<Vec<_>>(), [0, 2]);
        assert_eq!(w.records.len(), 3);
        w.edit(&record(3)).unwrap();
        w.point(&point(4)).unwrap();
        let (_, points, records) = load_run(dir.path()).unwrap();
        assert_eq!(
            points.iter().map(|p| p.edits).collect::<Vec<_>>(),
            [0, 2, 4]
        );
        assert_eq!(
            records.iter().map(|r| r.index).collect::<Vec<_>>(),
            [0, 1, 2, 3]
        );
        // The kept lines are the original bytes.
        let after = std::fs::read_to_string(dir.path().join("metrics.jsonl")).unwrap();
        let kept: Vec<&str> = before.lines().take(2).collect();
        assert_eq!(after.lines().take(2).collect::<Vec<_>>(), kept);
        // A checkpoint after more edits than the folder holds means the folder is not its run.
        let err = RunWriter::resume(dir.path(), 9, None).err().unwrap();
        assert!(err.to_string().contains("holds 4 edits"), "{err}");
        // Damage before the end is not an interruption: refused, with the line.
        let metrics = dir.path().join("metrics.jsonl");
        let text = std::fs::read_to_string(&metrics).unwrap();
        std::fs::write(&metrics, format!("{{broken\n{text}")).unwrap();
        let err = RunWriter::resume(dir.path(), 3, None).err().unwrap();
        assert!(err.to_string().contains("line 1"), "{err}");
    }

    #[test]
    fn the_case_outcomes_are_written_whole_and_a_new_run_drops_the_old_ones() {
        use crate::eval::bench::RequestText;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CASES_FILE);
        let mut w = RunWriter::create(dir.path(), &config(), None).unwrap();
        let outcome = |index: usize| CaseOutcome {
            index,
            origin: format!("tiny#{index}"),
            requests: vec![RequestText {
                prompt: "The Eiffel Tower is in".into(),
                target: "Rome".into(),
            }],
            token: [("efficacy".to_string(), 1.0)].into(),
            prob: BTreeMap::new(),
            changed_neighbours: vec![],
        };
        w.cases(&[outcome(0), outcome(1)]).unwrap();
        let lines: Vec<CaseOutcome> = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines, [outcome(0), outcome(1)]);
        // Starting over in the folder must not leave the finished run's outcomes behind.
        drop(w);
        RunWriter::create(dir.path(), &config(), None).unwrap();
        assert!(!path.exists());
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
        let md = table(&[("run".into(), s)]);
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
        assert!(table(&[("run".into(), s)]).contains("| 4.0 (2.0 tok) |"));
        // Runs recorded before the field existed have no column.
        let old = summarize("d4s", &[point(0), point(1)], &[record(0)]).unwrap();
        assert!(old.targets.is_none());
        assert!(!table(&[("old".into(), old)]).contains("target PPL"));
    }

    #[test]
    fn compare_marks_an_unfinished_run() {
        let root = tempfile::tempdir().unwrap();
        let run = root.path().join("d4s-cf");
        let mut w = RunWriter::create(&run, &config(), None).unwrap();
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
            let mut w = RunWriter::create(&run, &config(), None).unwrap();
            for i in 0..5 {
                w.edit(&EditRecord {
                    targets_reused: if i < 3 { reused } else { 0 },
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

    #[test]
    fn the_identity_ignores_paths_threads_and_times_but_not_settings() {
        let a = config();
        let mut b = config();
        b.data["path"] = "/elsewhere/cf.json".into();
        b.probe_config["data_dir"] = "/elsewhere".into();
        b.threads = 2;
        b.started = "later".into();
        b.command = "other".into();
        assert_eq!(a.identity(), b.identity());
        b.hparams = serde_json::json!({"layers": [2]});
        b.data["n"] = 6.into();
        assert_eq!(
            crate::eval::checkpoint::identity_differences(&a.identity(), &b.identity()),
            ["data", "hparams"]
        );
    }
}
