//! The unedited model's side of a run, kept on disk (`--baseline-cache`).
//!
//! Before its first edit a run measures the unedited model: the locality references and greedy
//! answers its neighbour metrics compare against ([`Reference`]), each target's difficulty, and
//! point 0 of its curve (every metric family and the probes). None of that depends on the method
//! or its hyperparameters, so the other settings of a sweep, the other methods of a comparison
//! and a resumed run would measure it again, bit for bit. On 1,000 CounterFact cases with
//! decoding and two probes that is tens of minutes per run on a CPU (BENCHMARKS.md).
//!
//! ```text
//! key = sha256(format, this build, model sha256 + config + device + threads,
//!              the cases as evaluated, the case sample, decode, multi-hop, the probes' items)
//! ```
//! "This build" is the executable's path, size and modification time: the measurement is a
//! function of the code, so a rebuilt d4s never reads what another build stored. The threads are
//! in the key because a product's summation order may follow them.
//!
//! Safe under concurrent runs (a file is written whole and renamed into place) and against
//! corruption: a file that does not parse, names another key or does not fit the cases is
//! reported, recomputed and overwritten, never used.

use std::fmt::Write as _;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::evaluate::{Reference, TargetDifficulty};
use super::records::EvalPoint;
use super::run::EvalSample;
use crate::error::{Error, Result};
use crate::eval::datasets::EvalCase;
use crate::eval::probes::ProbeSet;
use crate::model::Model;
use crate::util;

/// Bumped when the file layout or what a key covers changes; older files are then not read.
const FORMAT: &str = "d4s-baseline-v1";

/// The folder under the d4s home where baselines are kept by default.
pub fn default_dir() -> PathBuf {
    util::d4s_home().join("baselines")
}

/// What a run measures on the unedited model before its first edit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    pub reference: Reference,
    pub difficulty: Vec<TargetDifficulty>,
    /// Point 0 of a stream run's curve; `None` while only a single-protocol run (which has no
    /// point 0) has stored the entry.
    pub point: Option<EvalPoint>,
}

impl Baseline {
    fn fits(&self, cases: usize) -> bool {
        self.reference.cases() == cases
            && self.difficulty.len() == cases
            && self.point.as_ref().is_none_or(|p| p.edits == 0)
    }
}

#[derive(Serialize, Deserialize)]
struct Stored {
    format: String,
    key: String,
    baseline: Baseline,
}

/// Everything besides the model that the unedited measurement reads.
pub struct Inputs<'a> {
    pub cases: &'a [EvalCase],
    pub sample: &'a EvalSample,
    pub decode: bool,
    pub multihop: bool,
    pub probes: &'a [ProbeSet],
}

/// A folder of stored baselines.
#[derive(Debug, Clone, PartialEq)]
pub struct BaselineCache {
    dir: PathBuf,
}

impl BaselineCache {
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    /// Where the baseline with digest `key` lives.
    pub fn path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.json"))
    }

    /// The stored baseline for `key`; `Ok(None)` when there is none, `Err` when the file is there
    /// but unusable.
    pub fn load(&self, key: &str, cases: usize) -> Result<Option<Baseline>> {
        let path = self.path(key);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(&path, e)),
        };
        let bad = |msg: String| Error::BadFile {
            path: path.clone(),
            msg,
        };
        let stored: Stored = serde_json::from_slice(&bytes)
            .map_err(|e| bad(format!("unreadable stored baseline ({e})")))?;
        if stored.format != FORMAT || stored.key != key {
            return Err(bad("written for another key or format".into()));
        }
        if !stored.baseline.fits(cases) {
            return Err(bad(format!("does not hold the {cases} cases it names")));
        }
        Ok(Some(stored.baseline))
    }

    /// Writes `baseline` under `key`, atomically.
    pub fn store(&self, key: &str, baseline: &Baseline) -> Result<()> {
        util::ensure_dir(&self.dir)?;
        let stored = Stored {
            format: FORMAT.into(),
            key: key.into(),
            baseline: baseline.clone(),
        };
        let bytes = serde_json::to_vec(&stored)
            .map_err(|e| Error::Input(format!("cannot serialize a baseline: {e}")))?;
        util::write_atomic(&self.path(key), &bytes)
    }
}

/// The key of the unedited measurement of `inputs` on `model` by this build; `None` when this
/// build cannot be identified (then nothing is shared).
pub fn key(model: &Model, inputs: &Inputs) -> Option<String> {
    let exe = std::env::current_exe().ok()?;
    let meta = std::fs::metadata(&exe).ok()?;
    let mut h = HashWriter(Sha256::new());
    // `Debug` prints floats in their shortest round-trip form, so equal text means equal inputs;
    // it streams into the hasher, so the probes' tokenized items are never one big string.
    write!(
        h,
        "{FORMAT}\n{}\n{}\n{:?}\n{}\n{:?}\n{:?}\n{}\n",
        exe.display(),
        meta.len(),
        meta.modified().ok()?,
        model.info.sha256,
        model.config,
        model.device,
        rayon::current_num_threads(),
    )
    .ok()?;
    write!(
        h,
        "{}\n{:?}\n{} {}\n{:?}",
        serde_json::to_string(inputs.cases).ok()?,
        inputs.sample,
        inputs.decode,
        inputs.multihop,
        inputs.probes
    )
    .ok()?;
    Some(util::hex(&h.0.finalize()))
}

struct HashWriter(Sha256);

impl std::fmt::Write for HashWriter {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.update(s.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edit::Method;
    use crate::eval::bench::{self, BenchOutcome, EditRecord, GenSchedule};
    use crate::eval::testkit::{cases, spec, stats, Memory};
    use crate::model::config::Arch;
    use crate::model::random::tiny_model;
    use std::path::Path;

    /// A sequential run of `method` over the tiny cases with decoding, sharing `cache`.
    fn run(method: Method, cache: Option<&Path>) -> (BenchOutcome, Memory) {
        let stats_dir = tempfile::tempdir().unwrap();
        let mut st = stats(stats_dir.path());
        let mut model = tiny_model(Arch::Llama, 21);
        let mut run = spec(method, &mut st, None, None, None);
        run.generation = GenSchedule::Ends;
        run.baseline = cache.map(|d| BaselineCache::new(d.to_path_buf()));
        let mut sink = Memory::default();
        let out = bench::run(&mut model, &cases(), run, &mut sink).unwrap();
        (out, sink)
    }

    /// What a run wrote, without its clocks and memory readings.
    fn timeless(sink: &Memory) -> (Vec<EvalPoint>, Vec<EditRecord>) {
        let points = sink
            .points
            .iter()
            .map(|p| EvalPoint {
                wall_seconds: 0.0,
                ..p.clone()
            })
            .collect();
        let records = sink
            .records
            .iter()
            .map(|r| EditRecord {
                seconds: 0.0,
                cpu_seconds: None,
                timings: None,
                rss_bytes: None,
                ..r.clone()
            })
            .collect();
        (points, records)
    }

    fn stored_files(dir: &Path) -> Vec<PathBuf> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect()
    }

    #[test]
    fn another_method_finds_the_baseline_and_runs_bit_for_bit_as_without_it() {
        let dir = tempfile::tempdir().unwrap();
        let (first, _) = run(Method::Memit, Some(dir.path()));
        assert!(!first.baseline_reused, "nothing was stored before");
        assert_eq!(stored_files(dir.path()).len(), 1);
        let (shared, with_cache) = run(Method::D4s, Some(dir.path()));
        assert!(
            shared.baseline_reused,
            "D4S reads what the MEMIT run measured"
        );
        let (alone, without_cache) = run(Method::D4s, None);
        assert!(!alone.baseline_reused);
        assert_eq!(timeless(&with_cache), timeless(&without_cache));
        assert!(
            with_cache.points[0].metrics.gen.specificity.is_some(),
            "point 0 decoded"
        );
        assert!(with_cache.warnings.is_empty(), "{:?}", with_cache.warnings);
    }

    #[test]
    fn a_damaged_baseline_is_reported_measured_again_and_replaced() {
        let dir = tempfile::tempdir().unwrap();
        run(Method::Memit, Some(dir.path()));
        let [file] = &stored_files(dir.path())[..] else {
            panic!("one stored baseline");
        };
        let whole = std::fs::read(file).unwrap();
        std::fs::write(file, &whole[..whole.len() / 2]).unwrap();
        let (out, repaired) = run(Method::D4s, Some(dir.path()));
        assert!(!out.baseline_reused);
        assert!(
            repaired
                .warnings
                .iter()
                .any(|w| w.contains("unreadable stored baseline")
                    && w.contains(&file.display().to_string())),
            "{:?}",
            repaired.warnings
        );
        let (_, alone) = run(Method::D4s, None);
        assert_eq!(timeless(&repaired), timeless(&alone));
        let (again, _) = run(Method::D4s, Some(dir.path()));
        assert!(again.baseline_reused, "the damaged file was replaced");
    }

    #[test]
    fn the_key_follows_everything_the_measurement_reads() {
        let model = tiny_model(Arch::Llama, 21);
        let all = cases();
        let sample = EvalSample::draw(all.len(), None);
        let inputs = |cases, sample, decode| Inputs {
            cases,
            sample,
            decode,
            multihop: false,
            probes: &[],
        };
        let base = key(&model, &inputs(&all, &sample, true)).unwrap();
        assert_eq!(base, key(&model, &inputs(&all, &sample, true)).unwrap());
        assert_ne!(base, key(&model, &inputs(&all, &sample, false)).unwrap());
        assert_ne!(
            base,
            key(&model, &inputs(&all[..4], &sample, true)).unwrap()
        );
        let fewer = EvalSample::draw(all.len(), Some(2));
        assert_ne!(base, key(&model, &inputs(&all, &fewer, true)).unwrap());
        let other = tiny_model(Arch::Gpt2, 21);
        assert_ne!(base, key(&other, &inputs(&all, &sample, true)).unwrap());
    }
}
