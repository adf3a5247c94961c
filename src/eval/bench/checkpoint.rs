//! Checkpoints of a sequential or batch benchmark run, so that a run of hours survives an
//! interruption and `d4s bench --resume` continues it with exactly the numbers an uninterrupted
//! run gives (the edit stream and every computation are deterministic; the saved state is bit
//! for bit what was in memory).
//!
//! Layout, under the run folder:
//!
//! ```text
//! checkpoint/checkpoint.json     what was done: steps, edits, rejected, wall time, the run's identity
//! checkpoint/tensors.safetensors the edited matrices (f32), the editor's state (f64 sums, codebooks),
//!                                the edits' final target probabilities (f64)
//! ```
//!
//! A new checkpoint is written into a temporary folder and swapped in by renames, so a crash at
//! any moment leaves either the old checkpoint or the new one (`checkpoint.old` is the old one
//! during the swap; [`load`] falls back to it).

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::edit::EditorSnapshot;
use crate::error::{Error, Result};

/// Version of the checkpoint layout.
pub const FORMAT: u32 = 1;

const META: &str = "checkpoint.json";
const TENSORS: &str = "tensors.safetensors";
const WEIGHT_PREFIX: &str = "model.edit_weight.";
const EDITOR_PREFIX: &str = "editor.";
const PROBS: &str = "run.edit_probs";
const TMP_PREFIX: &str = ".checkpoint.tmp-";

/// Where checkpoints of a run go, and how often.
#[derive(Debug, Clone)]
pub struct CheckpointPolicy {
    /// The run folder; the checkpoint is `dir/checkpoint`.
    pub dir: PathBuf,
    /// Write one whenever this many more edits are done (and at every evaluation point).
    pub every: usize,
}

/// The small part of a checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    pub format: u32,
    pub d4s_version: String,
    pub written: String,
    pub method: String,
    /// Steps of the protocol completed (one case each when sequential).
    pub steps: usize,
    /// Cases edited (applied or rejected).
    pub edits: usize,
    pub rejected: usize,
    /// Run time so far, so the resumed run's wall times continue the curve.
    pub wall_seconds: f64,
    /// Layers whose edited matrix is saved.
    pub layers: Vec<usize>,
    /// The editor snapshot's exact small values.
    pub editor_meta: serde_json::Value,
    /// What must match for a resume: model, method, hyperparameters, data, protocol, probes.
    pub identity: serde_json::Value,
}

/// A loaded checkpoint.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    pub meta: CheckpointMeta,
    /// `(layer, W)` for every saved layer.
    pub weights: Vec<(usize, Tensor)>,
    pub editor: EditorSnapshot,
    /// Final target probability of each applied edit so far, in order.
    pub probs: Vec<f64>,
}

/// The checkpoint folder of a run folder.
pub fn path(run_dir: &Path) -> PathBuf {
    run_dir.join("checkpoint")
}

fn old_path(run_dir: &Path) -> PathBuf {
    run_dir.join("checkpoint.old")
}

/// Writes a checkpoint, replacing the previous one atomically.
pub fn save(run_dir: &Path, ck: &Checkpoint) -> Result<()> {
    let tmp = run_dir.join(format!("{TMP_PREFIX}{}", std::process::id()));
    remove_leftovers(run_dir);
    let written = (|| -> Result<()> {
        crate::util::ensure_dir(&tmp)?;
        let mut tensors: HashMap<String, Tensor> = HashMap::new();
        for (layer, w) in &ck.weights {
            tensors.insert(
                format!("{WEIGHT_PREFIX}{layer}"),
                w.to_device(&Device::Cpu)?,
            );
        }
        for (name, t) in &ck.editor.tensors {
            tensors.insert(format!("{EDITOR_PREFIX}{name}"), t.to_device(&Device::Cpu)?);
        }
        if !ck.probs.is_empty() {
            tensors.insert(
                PROBS.into(),
                Tensor::from_vec(ck.probs.clone(), ck.probs.len(), &Device::Cpu)?,
            );
        }
        let tensor_file = tmp.join(TENSORS);
        candle_core::safetensors::save(&tensors, &tensor_file)
            .map_err(|e| Error::bad_file(&tensor_file, format!("cannot write: {e}")))?;
        sync(&tensor_file)?;
        let json = serde_json::to_vec_pretty(&ck.meta).expect("serializable");
        crate::util::write_atomic(&tmp.join(META), &json)?;
        Ok(())
    })();
    if let Err(e) = written {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    let (current, old) = (path(run_dir), old_path(run_dir));
    if old.exists() {
        fs::remove_dir_all(&old).map_err(|e| Error::io(&old, e))?;
    }
    if current.exists() {
        fs::rename(&current, &old).map_err(|e| Error::io(&current, e))?;
    }
    fs::rename(&tmp, &current).map_err(|e| Error::io(&current, e))?;
    if old.exists() {
        fs::remove_dir_all(&old).map_err(|e| Error::io(&old, e))?;
    }
    Ok(())
}

/// Half-written checkpoints of processes that died while writing one (any pid, this one's
/// included): they are never read, only in the way.
fn remove_leftovers(run_dir: &Path) {
    let Ok(entries) = fs::read_dir(run_dir) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

fn sync(file: &Path) -> Result<()> {
    fs::File::open(file)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io(file, e))
}

/// The folder holding a run's checkpoint (the current one, else the previous one kept by an
/// interrupted swap) and its metadata, without the tensors: `None` when there is none.
pub fn load_meta(run_dir: &Path) -> Result<Option<(PathBuf, CheckpointMeta)>> {
    let dir = [path(run_dir), old_path(run_dir)]
        .into_iter()
        .find(|d| d.join(META).is_file());
    let Some(dir) = dir else {
        return Ok(None);
    };
    let meta_file = dir.join(META);
    let text = fs::read_to_string(&meta_file).map_err(|e| Error::io(&meta_file, e))?;
    let meta: CheckpointMeta = serde_json::from_str(&text)
        .map_err(|e| Error::bad_file(&meta_file, format!("not a d4s checkpoint: {e}")))?;
    if meta.format != FORMAT {
        return Err(Error::bad_file(
            &meta_file,
            format!(
                "checkpoint format {} (this d4s reads {FORMAT})",
                meta.format
            ),
        ));
    }
    Ok(Some((dir, meta)))
}

/// Reads the checkpoint of a run folder: `None` when there is none.
pub fn load(run_dir: &Path) -> Result<Option<Checkpoint>> {
    let Some((dir, meta)) = load_meta(run_dir)? else {
        return Ok(None);
    };
    let tensor_file = dir.join(TENSORS);
    let tensors = candle_core::safetensors::load(&tensor_file, &Device::Cpu).map_err(|e| {
        Error::bad_file(&tensor_file, format!("unreadable checkpoint tensors: {e}"))
    })?;
    let mut weights = Vec::new();
    for &layer in &meta.layers {
        let w = tensors
            .get(&format!("{WEIGHT_PREFIX}{layer}"))
            .ok_or_else(|| {
                Error::bad_file(&tensor_file, format!("no saved weight for layer {layer}"))
            })?;
        weights.push((layer, w.clone()));
    }
    let mut editor_tensors: Vec<(String, Tensor)> = tensors
        .iter()
        .filter_map(|(k, t)| {
            k.strip_prefix(EDITOR_PREFIX)
                .map(|n| (n.to_string(), t.clone()))
        })
        .collect();
    editor_tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let probs = match tensors.get(PROBS) {
        Some(t) if t.dtype() == DType::F64 => t.to_vec1::<f64>()?,
        Some(_) => {
            return Err(Error::bad_file(
                &tensor_file,
                "edit probabilities are not f64",
            ))
        }
        None => vec![],
    };
    Ok(Some(Checkpoint {
        editor: EditorSnapshot {
            tensors: editor_tensors,
            meta: meta.editor_meta.clone(),
        },
        meta,
        weights,
        probs,
    }))
}

/// Removes a run's checkpoint (a finished run needs none).
pub fn remove(run_dir: &Path) -> Result<()> {
    for d in [path(run_dir), old_path(run_dir)] {
        if d.exists() {
            fs::remove_dir_all(&d).map_err(|e| Error::io(&d, e))?;
        }
    }
    Ok(())
}

/// The fields of `identity` that differ from `other`'s (top-level keys), for a clear refusal.
pub fn identity_differences(a: &serde_json::Value, b: &serde_json::Value) -> Vec<String> {
    let empty = serde_json::Map::new();
    let (ma, mb) = (
        a.as_object().unwrap_or(&empty),
        b.as_object().unwrap_or(&empty),
    );
    let mut keys: Vec<&String> = ma.keys().chain(mb.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| ma.get(*k) != mb.get(*k))
        .cloned()
        .collect()
}

/// How a resumed run relates to the run its checkpoint was written by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Continuation {
    /// The same run.
    Same,
    /// The same run with another planned number of edits: it planned `from` and goes on
    /// towards `to`.
    Replanned { from: usize, to: usize },
}

/// Why a run cannot be continued as asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mismatch {
    /// These fields of the identity differ (top-level keys).
    Fields(Vec<String>),
    /// Only the number of cases differs, and here that changes the cases edited so far: the
    /// reason names the setting.
    Length {
        from: usize,
        to: usize,
        reason: String,
    },
    /// The checkpoint holds more edits than the run plans.
    Shorter { done: usize, to: usize },
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Fields(fields) => write!(f, "its {} differ from this command's", fields.join(", ")),
            Self::Length { from, to, reason } => write!(
                f,
                "it plans {from} cases, this command {to}, and {reason}, so the cases edited so far \
                 would not be the same"
            ),
            Self::Shorter { done, to } => {
                write!(f, "its checkpoint holds {done} edits, more than this command's {to} cases")
            }
        }
    }
}

/// Whether a run with identity `asked` may continue from a checkpoint written under `written`
/// after `done` edits.
///
/// Everything must match but the number of cases N: the cases are the data file's first N
/// usable records in the file's order, so a run stopped at 329 of 500 edits may go on towards
/// 1,000 (or end at 400) and still edit the same cases so far, with the same schedule of points.
/// Not when the cases depend on N as a whole: a shuffled order (`--seeds`), an evaluation
/// sample drawn from the N cases (`--eval-sample`) or multiple-choice questions whose wrong
/// answers come from the N cases (`--mqd mc`).
pub fn continuation(
    written: &serde_json::Value,
    asked: &serde_json::Value,
    done: usize,
) -> std::result::Result<Continuation, Mismatch> {
    let fields = identity_differences(written, asked);
    if fields.is_empty() {
        return Ok(Continuation::Same);
    }
    let (mut a, mut b) = (written["data"].clone(), asked["data"].clone());
    let n = |d: &serde_json::Value| d["n"].as_u64().unwrap_or(0) as usize;
    let (from, to) = (n(&a), n(&b));
    for d in [&mut a, &mut b] {
        if let Some(o) = d.as_object_mut() {
            // Records skipped on the way to N usable ones: more of the file is read for more.
            o.remove("n");
            o.remove("skipped");
        }
    }
    if fields != ["data"] || a != b {
        return Err(Mismatch::Fields(fields));
    }
    let reason = if !a["order_seed"].is_null() {
        Some("the order is a shuffle of the cases (--seeds)")
    } else if !written["eval_sample"].is_null() {
        Some("the evaluated cases are a sample of them (--eval-sample)")
    } else if matches!(a["mqd"].as_str(), Some("mc" | "multiple-choice")) {
        Some("multiple-choice questions draw their wrong answers from them (--mqd mc)")
    } else {
        None
    };
    if let Some(reason) = reason {
        return Err(Mismatch::Length {
            from,
            to,
            reason: reason.into(),
        });
    }
    if done > to {
        return Err(Mismatch::Shorter { done, to });
    }
    Ok(Continuation::Replanned { from, to })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edit::Method;
    use crate::eval::bench::{self, EditRecord, EvalPoint};
    use crate::eval::testkit::{cases, hparams, run_config, spec, stats, Memory};
    use crate::model::config::Arch;
    use crate::model::random::tiny_model;
    use crate::model::Model;

    /// The final model's next-token logits on a prompt (GRACE edits live in an adaptor, not in
    /// the weights, so the weights alone would not show it).
    fn fingerprint(model: &Model) -> Vec<f32> {
        let ids = model.encode("The Eiffel Tower is located in").unwrap();
        let out = model
            .forward(
                crate::model::Input::Tokens(&[ids]),
                &crate::model::Forward {
                    logits: crate::model::Logits::All,
                    ..Default::default()
                },
            )
            .unwrap();
        out.logits()
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    }

    /// Everything but the wall-clock fields.
    fn comparable(points: &[EvalPoint], records: &[EditRecord]) -> (String, Vec<String>) {
        let p: Vec<EvalPoint> = points
            .iter()
            .cloned()
            .map(|mut p| {
                p.wall_seconds = 0.0;
                p
            })
            .collect();
        let r = records
            .iter()
            .map(|r| {
                format!(
                    "{} {} {:?} {:?} {:?}",
                    r.index, r.origin, r.prob_initial, r.prob_final, r.rejected
                )
            })
            .collect();
        (serde_json::to_string(&p).unwrap(), r)
    }

    #[test]
    fn a_resumed_run_gives_exactly_the_uninterrupted_runs_numbers() {
        let cases = cases();
        for method in Method::ALL {
            let stats_dir = tempfile::tempdir().unwrap();
            let mut straight_stats = stats(stats_dir.path());
            let mut model = tiny_model(Arch::Llama, 21);
            let mut straight = Memory::default();
            let out = bench::run(
                &mut model,
                &cases,
                spec(method, &mut straight_stats, None, None, None),
                &mut straight,
            )
            .unwrap_or_else(|e| panic!("{method}: {e}"));
            assert!(out.complete);
            let straight_logits = fingerprint(&model);

            // Stopped after 3 edits (between evaluation points), then continued in a fresh
            // process's state: a new model and a new editor.
            let run_dir = tempfile::tempdir().unwrap();
            let stats_dir = tempfile::tempdir().unwrap();
            let policy = CheckpointPolicy {
                dir: run_dir.path().to_path_buf(),
                every: 2,
            };
            let mut first = Memory::default();
            let mut model = tiny_model(Arch::Llama, 21);
            let mut st = stats(stats_dir.path());
            let out = bench::run(
                &mut model,
                &cases,
                spec(method, &mut st, Some(policy.clone()), None, Some(3)),
                &mut first,
            )
            .unwrap();
            assert!(!out.complete, "{method}: stop_after must stop the run");
            assert_eq!(first.records.len(), 3);
            let ck = load(run_dir.path()).unwrap().expect("a checkpoint");
            assert_eq!((ck.meta.steps, ck.meta.edits), (3, 3), "{method}");
            assert_eq!(ck.meta.method, method.name());
            let mut model = tiny_model(Arch::Llama, 21);
            let mut st = stats(stats_dir.path());
            let mut second = Memory::default();
            let out = bench::run(
                &mut model,
                &cases,
                spec(method, &mut st, Some(policy), Some(ck), None),
                &mut second,
            )
            .unwrap_or_else(|e| panic!("{method} resumed: {e}"));
            assert!(out.complete);
            let mut points = first.points.clone();
            points.extend(second.points.iter().cloned());
            let mut records = first.records.clone();
            records.extend(second.records.iter().cloned());
            assert_eq!(
                points.iter().map(|p| p.edits).collect::<Vec<_>>(),
                vec![0, 2, 4, 5],
                "{method}"
            );
            assert_eq!(
                comparable(&points, &records),
                comparable(&straight.points, &straight.records),
                "{method}: the resumed run's numbers differ from the uninterrupted run's"
            );
            assert_eq!(
                fingerprint(&model),
                straight_logits,
                "{method}: the resumed run's final model differs"
            );
            // Wall times continue the interrupted run's clock.
            assert!(second.points[0].wall_seconds >= first.points.last().unwrap().wall_seconds);
        }
    }

    #[test]
    fn an_interrupt_stops_after_the_current_edit_with_a_checkpoint() {
        let cases = cases();
        let run_dir = tempfile::tempdir().unwrap();
        let stats_dir = tempfile::tempdir().unwrap();
        let mut st = stats(stats_dir.path());
        let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let mut s = spec(
            Method::D4s,
            &mut st,
            Some(CheckpointPolicy {
                dir: run_dir.path().to_path_buf(),
                every: 25,
            }),
            None,
            None,
        );
        s.interrupt = Some(flag);
        let mut sink = Memory::default();
        let mut model = tiny_model(Arch::Llama, 21);
        let out = bench::run(&mut model, &cases, s, &mut sink).unwrap();
        assert!(!out.complete);
        assert_eq!(sink.records.len(), 1);
        assert_eq!(load(run_dir.path()).unwrap().unwrap().meta.edits, 1);
    }

    #[test]
    fn a_checkpoint_of_another_method_or_a_misfit_run_is_refused() {
        let cases = cases();
        let run_dir = tempfile::tempdir().unwrap();
        let stats_dir = tempfile::tempdir().unwrap();
        let policy = CheckpointPolicy {
            dir: run_dir.path().to_path_buf(),
            every: 1,
        };
        let mut model = tiny_model(Arch::Llama, 21);
        let mut st = stats(stats_dir.path());
        bench::run(
            &mut model,
            &cases,
            spec(Method::D4s, &mut st, Some(policy), None, Some(1)),
            &mut Memory::default(),
        )
        .unwrap();
        let ck = load(run_dir.path()).unwrap().unwrap();
        let mut model = tiny_model(Arch::Llama, 21);
        let err = bench::run(
            &mut model,
            &cases,
            spec(Method::Memit, &mut st, None, Some(ck.clone()), None),
            &mut Memory::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("d4s run, not memit"), "{err}");
        // A checkpoint after more edits than this run has.
        let err = bench::run(
            &mut model,
            &cases[..0],
            spec(Method::D4s, &mut st, None, Some(ck.clone()), None),
            &mut Memory::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("does not fit"), "{err}");
        // The snapshot of one editor is refused by another.
        let mut cx = crate::edit::EditContext {
            stats: &mut st,
            targets: None,
            target_group: None,
            ctl: Default::default(),
        };
        let mut other = crate::edit::new_editor(hparams(Method::AlphaEdit));
        let err = other.restore(&mut model, &mut cx, &ck.editor).unwrap_err();
        assert!(err.to_string().contains("not an AlphaEdit"), "{err}");
        let mut plain = crate::edit::new_editor(hparams(Method::Memit));
        assert!(plain.restore(&mut model, &mut cx, &ck.editor).is_err());
    }

    #[test]
    fn a_checkpoint_that_cannot_be_written_is_reported_and_the_run_goes_on() {
        let cases = cases();
        let root = tempfile::tempdir().unwrap();
        // The run folder's parent is a file: nothing can be written there (as on a full disk).
        let blocker = root.path().join("blocker");
        fs::write(&blocker, b"").unwrap();
        let stats_dir = tempfile::tempdir().unwrap();
        let mut st = stats(stats_dir.path());
        let policy = CheckpointPolicy {
            dir: blocker.join("run"),
            every: 2,
        };
        let mut sink = Memory::default();
        let mut model = tiny_model(Arch::Llama, 21);
        let out = bench::run(
            &mut model,
            &cases,
            spec(Method::Memit, &mut st, Some(policy.clone()), None, None),
            &mut sink,
        )
        .unwrap();
        assert!(out.complete);
        assert_eq!(sink.records.len(), cases.len());
        assert_eq!(sink.warnings.len(), 2, "{:?}", sink.warnings);
        assert!(
            sink.warnings[0].contains("after 2 edits"),
            "{:?}",
            sink.warnings
        );
        // When the run was asked to stop, the checkpoint is the point: the failure is an error.
        let mut model = tiny_model(Arch::Llama, 21);
        let err = bench::run(
            &mut model,
            &cases,
            spec(Method::Memit, &mut st, Some(policy), None, Some(1)),
            &mut Memory::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("blocker"), "{err}");
    }

    #[test]
    fn a_crash_during_the_swap_leaves_a_loadable_checkpoint() {
        let run_dir = tempfile::tempdir().unwrap();
        let meta = |edits: usize| CheckpointMeta {
            format: FORMAT,
            d4s_version: "test".into(),
            written: "now".into(),
            method: "memit".into(),
            steps: edits,
            edits,
            rejected: 0,
            wall_seconds: 1.5,
            layers: vec![3],
            editor_meta: serde_json::Value::Null,
            identity: serde_json::json!({"a": 1}),
        };
        let w = Tensor::new(&[[1.0f32, 2.0], [3.0, 4.0]], &Device::Cpu).unwrap();
        let ck = |edits| Checkpoint {
            meta: meta(edits),
            weights: vec![(3, w.clone())],
            editor: EditorSnapshot::default(),
            probs: vec![0.25, 1.0 / 3.0],
        };
        save(run_dir.path(), &ck(1)).unwrap();
        // A process that died while writing left its half-written folder behind.
        let leftover = run_dir.path().join(".checkpoint.tmp-999999");
        fs::create_dir_all(&leftover).unwrap();
        fs::write(leftover.join(TENSORS), b"half").unwrap();
        save(run_dir.path(), &ck(2)).unwrap();
        assert!(!leftover.exists(), "leftovers are cleaned up");
        let back = load(run_dir.path()).unwrap().unwrap();
        assert_eq!(back.meta, meta(2));
        assert_eq!(back.probs, vec![0.25, 1.0 / 3.0]);
        assert_eq!(
            back.weights[0].1.to_vec2::<f32>().unwrap(),
            vec![vec![1.0, 2.0], vec![3.0, 4.0]]
        );
        // Between the two renames only `checkpoint.old` exists.
        fs::rename(path(run_dir.path()), old_path(run_dir.path())).unwrap();
        assert_eq!(load(run_dir.path()).unwrap().unwrap().meta.edits, 2);
        // A damaged checkpoint is an error that names the file, not a panic.
        fs::write(old_path(run_dir.path()).join(TENSORS), b"not safetensors").unwrap();
        let err = load(run_dir.path()).unwrap_err().to_string();
        assert!(err.contains("tensors.safetensors"), "{err}");
        // The metadata alone is still readable (what deciding between resume and refusal needs).
        let (dir, only_meta) = load_meta(run_dir.path()).unwrap().unwrap();
        assert_eq!((dir, only_meta), (old_path(run_dir.path()), meta(2)));
        remove(run_dir.path()).unwrap();
        assert!(load_meta(run_dir.path()).unwrap().is_none());
        assert!(load(run_dir.path()).unwrap().is_none());
    }

    #[test]
    fn identity_differences_name_the_fields() {
        let a = serde_json::json!({"method": "d4s", "data": {"n": 10}, "seed": 42});
        let b = serde_json::json!({"method": "d4s", "data": {"n": 20}, "probes": []});
        assert_eq!(identity_differences(&a, &b), vec!["data", "probes", "seed"]);
        assert!(identity_differences(&a, &a).is_empty());
    }

    #[test]
    fn a_run_may_go_on_with_another_number_of_cases_when_the_cases_so_far_stay_the_same() {
        let written = run_config();
        let mut asked = run_config();
        let (w, done) = (written.identity(), 3);
        assert_eq!(
            continuation(&w, &asked.identity(), done),
            Ok(Continuation::Same)
        );
        asked.data.n = written.data.n * 2;
        asked.data.skipped = written.data.skipped + 1;
        assert_eq!(
            continuation(&w, &asked.identity(), done),
            Ok(Continuation::Replanned {
                from: written.data.n,
                to: written.data.n * 2
            })
        );
        // Fewer cases, but not fewer than the edits done.
        asked.data.n = done;
        assert!(continuation(&w, &asked.identity(), done).is_ok());
        asked.data.n = done - 1;
        assert_eq!(
            continuation(&w, &asked.identity(), done),
            Err(Mismatch::Shorter { done, to: done - 1 })
        );
        // Another N together with another setting: the setting is named.
        asked.data.n = 100;
        asked.seed = 7;
        assert_eq!(
            continuation(&w, &asked.identity(), done),
            Err(Mismatch::Fields(vec!["data".into(), "seed".into()]))
        );
        asked.seed = written.seed;
        // Another data file is another run, whatever N.
        asked.data.sha256 = "other".into();
        assert!(matches!(
            continuation(&w, &asked.identity(), done),
            Err(Mismatch::Fields(f)) if f == ["data"]
        ));
    }

    #[test]
    fn the_number_of_cases_is_fixed_where_the_cases_depend_on_it() {
        let check = |change: &dyn Fn(&mut crate::eval::bench::RunConfig), flag: &str| {
            let mut written = run_config();
            change(&mut written);
            let mut asked = written.clone();
            asked.data.n += 10;
            let err = continuation(&written.identity(), &asked.identity(), 1).unwrap_err();
            assert!(matches!(err, Mismatch::Length { .. }), "{err:?}");
            assert!(err.to_string().contains(flag), "{err}");
        };
        check(&|c| c.data.order_seed = Some(3), "--seeds");
        check(&|c| c.eval_sample = Some(2), "--eval-sample");
        check(&|c| c.data.mqd = Some("mc".into()), "--mqd mc");
    }

    #[test]
    fn the_identity_ignores_paths_threads_and_times_but_not_settings() {
        let a = run_config();
        let mut b = run_config();
        b.data.path = "/elsewhere/cf.json".into();
        b.probe_config.data_dir = "/elsewhere".into();
        b.threads = 2;
        b.started = "later".into();
        b.command = "other".into();
        assert_eq!(a.identity(), b.identity());
        b.hparams = serde_json::json!({"layers": [2]});
        b.data.n = 6;
        assert_eq!(
            identity_differences(&a.identity(), &b.identity()),
            ["data", "hparams"]
        );
    }
}
