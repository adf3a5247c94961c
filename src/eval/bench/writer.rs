//! The sink that writes a run folder as the run goes: `config.json` first, then `metrics.jsonl`
//! and `edits.jsonl` a line at a time (flushed per line, so an interrupted run keeps what it
//! measured), `cases.jsonl` at the end; and the same folder reopened to continue after a
//! checkpoint.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::records::{
    jsonl_lines, CaseOutcome, EditRecord, EvalPoint, RunConfig, CASES_FILE, CONFIG_FILE,
    EDITS_FILE, METRICS_FILE,
};
use super::run::{BenchSink, RunPhase};
use crate::error::{Error, Result};
use crate::util;

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
    /// An evaluation or a checkpoint interrupted the editing since the last edit.
    paused: bool,
    /// The mean editing rate behind the heartbeat's ETA.
    rate: util::EditingRate,
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
            &dir.join(CONFIG_FILE),
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
            metrics: open(METRICS_FILE)?,
            edits: open(EDITS_FILE)?,
            points: vec![],
            records: vec![],
            progress,
            heartbeat: util::Heartbeat::new(std::time::Duration::from_secs(HEARTBEAT_SECS)),
            paused: false,
            rate: util::EditingRate::default(),
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
        let metric_lines = raw(METRICS_FILE)?;
        let edit_lines = raw(EDITS_FILE)?;
        let mut points: Vec<(usize, EvalPoint)> = Vec::new();
        for (i, v) in parse_all(METRICS_FILE, &metric_lines)?
            .into_iter()
            .enumerate()
        {
            let p: EvalPoint = serde_json::from_value(v).map_err(|e| {
                Error::bad_file(dir.join(METRICS_FILE), format!("line {}: {e}", i + 1))
            })?;
            if p.edits <= edits {
                points.push((i, p));
            }
        }
        let records: Vec<EditRecord> = parse_all(EDITS_FILE, &edit_lines)?
            .into_iter()
            .take(edits)
            .enumerate()
            .map(|(i, v)| {
                serde_json::from_value(v).map_err(|e| {
                    Error::bad_file(dir.join(EDITS_FILE), format!("line {}: {e}", i + 1))
                })
            })
            .collect::<Result<_>>()?;
        if records.len() < edits {
            return Err(Error::bad_file(
                dir.join(EDITS_FILE),
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
            METRICS_FILE,
            points.iter().map(|(i, _)| &metric_lines[*i]).collect(),
        )?;
        let edits_file = rewrite(EDITS_FILE, edit_lines.iter().take(edits).collect())?;
        Ok(Self {
            dir: dir.to_path_buf(),
            metrics,
            edits: edits_file,
            points: points.into_iter().map(|(_, p)| p).collect(),
            records,
            progress,
            heartbeat: util::Heartbeat::new(std::time::Duration::from_secs(HEARTBEAT_SECS)),
            paused: false,
            rate: util::EditingRate::default(),
        })
    }

    /// How often a headless run (its bar hidden) writes a progress line.
    pub fn set_heartbeat(&mut self, every: std::time::Duration) {
        self.heartbeat = util::Heartbeat::new(every);
    }
}

impl BenchSink for RunWriter {
    fn edit(&mut self, record: &EditRecord) -> Result<()> {
        append(&mut self.edits, &self.dir.join(EDITS_FILE), record)?;
        self.records.push(record.clone());
        Ok(())
    }

    fn point(&mut self, point: &EvalPoint) -> Result<()> {
        append(&mut self.metrics, &self.dir.join(METRICS_FILE), point)?;
        if let Some(pb) = &self.progress {
            let token = &point.metrics.token;
            util::say(
                pb,
                format!(
                    "  after {:>5} edits: efficacy {:.3}{}",
                    point.edits,
                    token.efficacy.unwrap_or(f64::NAN),
                    token
                        .specificity
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

    fn progress(&mut self, done: usize, _total: usize, phase: RunPhase) {
        let Some(pb) = self.progress.clone() else {
            return;
        };
        let now = std::time::Instant::now();
        let since_last = if self.paused {
            util::Activity::Paused
        } else {
            util::Activity::Editing
        };
        self.rate.note(now, done as u64, since_last);
        if phase.pauses_editing() {
            self.paused = true;
        } else if std::mem::take(&mut self.paused) {
            // The pause (an evaluation point, a checkpoint) is not editing time: without this the
            // bar's rate decays through it and the next ETA reads in years.
            pb.reset_eta();
        }
        pb.set_position(done as u64);
        pb.set_message(phase.describe());
        if pb.is_hidden() && self.heartbeat.due(now) {
            let remaining = pb.length().map(|l| l.saturating_sub(done as u64));
            let eta = match (phase.pauses_editing(), remaining) {
                (true, _) => util::Eta::Hidden,
                (false, Some(r)) => self.rate.eta(r).map_or(util::Eta::Unknown, util::Eta::In),
                (false, None) => util::Eta::Unknown,
            };
            util::say(&pb, util::progress_line(&pb, "edits", eta));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::bench::records::{
        load_run, LoadedRun, ProbMetrics, RequestText, TokenMetrics,
    };
    use crate::eval::testkit::{point, record, run_config};

    #[test]
    fn resuming_keeps_the_lines_up_to_the_checkpoint_and_appends_after_them() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = RunWriter::create(dir.path(), &run_config(), None).unwrap();
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
        let LoadedRun {
            points, records, ..
        } = load_run(dir.path()).unwrap();
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
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CASES_FILE);
        let mut w = RunWriter::create(dir.path(), &run_config(), None).unwrap();
        let outcome = |index: usize| CaseOutcome {
            gen: Default::default(),
            answers: vec![],
            index,
            origin: format!("tiny#{index}"),
            requests: vec![RequestText {
                prompt: "The Eiffel Tower is in".into(),
                target: "Rome".into(),
            }],
            token: TokenMetrics {
                efficacy: Some(1.0),
                ..Default::default()
            },
            prob: ProbMetrics::default(),
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
        RunWriter::create(dir.path(), &run_config(), None).unwrap();
        assert!(!path.exists());
    }
}
