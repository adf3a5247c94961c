//! The on-disk layer of the target cache (`--target-cache`): one safetensors file per target,
//! named by the digest of everything the optimization reads, so a rerun, a λ sweep or another
//! process on the same model finds the targets it would otherwise recompute.
//!
//! Safe under concurrent runs: a file is written under a process-unique temporary name and
//! renamed into place, which is atomic, so a reader sees either no file or a whole one; two
//! writers of one key write the same bytes. Safe against corruption: a file that does not parse,
//! lacks a tensor, has the wrong lengths or a non-finite value is reported and recomputed (and
//! overwritten), never used.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use crate::edit::target::{SiteResult, TargetResult};
use crate::error::{Error, Result};
use crate::util;

/// Bumped when the file layout or the meaning of a key changes; old files are then never read.
pub(super) const FORMAT: &str = "d4s-target-v1";

/// The folder under the d4s home where targets are kept by default.
pub fn default_dir() -> PathBuf {
    util::d4s_home().join("targets")
}

/// A folder of stored targets.
#[derive(Debug, Clone)]
pub struct DiskTargets {
    dir: PathBuf,
}

impl DiskTargets {
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the target with digest `key` lives (two-character fan-out keeps folders small).
    pub fn path(&self, key: &str) -> PathBuf {
        let shard = key.get(..2).unwrap_or("00");
        self.dir.join(shard).join(format!("{key}.safetensors"))
    }

    /// The stored target for `key`; `Ok(None)` when there is none, `Err` when the file is there
    /// but unusable.
    pub fn load(&self, key: &str, sites: usize) -> Result<Option<TargetResult>> {
        let path = self.path(key);
        if !path.exists() {
            return Ok(None);
        }
        let bad = |msg: String| Error::BadFile {
            path: path.clone(),
            msg,
        };
        let tensors = candle_core::safetensors::load(&path, &Device::Cpu)
            .map_err(|e| bad(format!("unreadable stored target ({e})")))?;
        let vector = |name: &str| -> Result<Vec<f64>> {
            let t = tensors
                .get(name)
                .ok_or_else(|| bad(format!("stored target lacks {name:?}")))?;
            let v = t
                .to_dtype(DType::F64)
                .and_then(|t| t.flatten_all())
                .and_then(|t| t.to_vec1::<f64>())
                .map_err(|e| bad(format!("{name}: {e}")))?;
            if v.iter().any(|x| !x.is_finite()) {
                return Err(bad(format!("{name} holds a non-finite value")));
            }
            Ok(v)
        };
        let format = vector("format")?;
        if format != format_tag() {
            return Err(bad("written by another version of the target cache".into()));
        }
        let scalars = vector("scalars")?;
        let [prob_initial, prob_final, loss_final, steps] = scalars[..] else {
            return Err(bad(format!("{} scalars, expected 4", scalars.len())));
        };
        let mut out = Vec::with_capacity(sites);
        for i in 0..sites {
            let reference = vector(&format!("site.{i}.reference"))?;
            let delta = vector(&format!("site.{i}.delta"))?;
            if reference.len() != delta.len() {
                return Err(bad(format!(
                    "site {i}: reference and delta differ in length"
                )));
            }
            out.push(SiteResult { reference, delta });
        }
        Ok(Some(TargetResult {
            sites: out,
            prob_initial,
            prob_final,
            loss_final,
            steps_run: steps as usize,
            trajectory: Vec::new(),
        }))
    }

    /// Writes `result` under `key`, atomically.
    pub fn store(&self, key: &str, result: &TargetResult) -> Result<()> {
        let path = self.path(key);
        let dir = path.parent().expect("targets live in a shard folder");
        util::ensure_dir(dir)?;
        let vector = |v: Vec<f64>| {
            let n = v.len();
            Tensor::from_vec(v, n, &Device::Cpu)
        };
        let mut tensors: HashMap<String, Tensor> = HashMap::new();
        tensors.insert("format".into(), vector(format_tag())?);
        tensors.insert(
            "scalars".into(),
            vector(vec![
                result.prob_initial,
                result.prob_final,
                result.loss_final,
                result.steps_run as f64,
            ])?,
        );
        for (i, s) in result.sites.iter().enumerate() {
            tensors.insert(format!("site.{i}.reference"), vector(s.reference.clone())?);
            tensors.insert(format!("site.{i}.delta"), vector(s.delta.clone())?);
        }
        let tmp = dir.join(format!(
            ".{key}.tmp-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let written = candle_core::safetensors::save(&tensors, &tmp)
            .map_err(|e| Error::io(&tmp, std::io::Error::other(e.to_string())))
            .and_then(|()| std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e)));
        if written.is_err() {
            // A full disk leaves no half-written temporary behind.
            let _ = std::fs::remove_file(&tmp);
        }
        written
    }
}

/// The format name as numbers (safetensors holds tensors; a byte vector of the name does).
fn format_tag() -> Vec<f64> {
    FORMAT.bytes().map(f64::from).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result() -> TargetResult {
        TargetResult {
            sites: vec![SiteResult {
                reference: vec![0.1, -2.5, 1e-300],
                delta: vec![3.0, 0.0, -0.125],
            }],
            prob_initial: 0.01,
            prob_final: 0.93,
            loss_final: 0.07,
            steps_run: 12,
            trajectory: vec![],
        }
    }

    #[test]
    fn a_stored_target_loads_bit_for_bit() {
        let dir = tempfile::tempdir().unwrap();
        let disk = DiskTargets::new(dir.path().to_path_buf());
        assert!(disk.load("abcd", 1).unwrap().is_none());
        disk.store("abcd", &result()).unwrap();
        let back = disk.load("abcd", 1).unwrap().unwrap();
        let r = result();
        assert_eq!(back.sites[0].reference, r.sites[0].reference);
        assert_eq!(back.sites[0].delta, r.sites[0].delta);
        assert_eq!(
            (back.prob_final.to_bits(), back.steps_run),
            (r.prob_final.to_bits(), 12)
        );
        // No temporary file is left beside it.
        let shard: Vec<_> = std::fs::read_dir(disk.path("abcd").parent().unwrap())
            .unwrap()
            .collect();
        assert_eq!(shard.len(), 1);
    }

    #[test]
    fn a_damaged_file_is_an_error_not_a_target() {
        let dir = tempfile::tempdir().unwrap();
        let disk = DiskTargets::new(dir.path().to_path_buf());
        disk.store("abcd", &result()).unwrap();
        let path = disk.path("abcd");
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        let err = disk.load("abcd", 1).unwrap_err().to_string();
        assert!(err.contains("abcd.safetensors"), "{err}");
        // A file that asks for more sites than it holds is refused as well.
        disk.store("abcd", &result()).unwrap();
        assert!(disk.load("abcd", 2).is_err());
    }
}
