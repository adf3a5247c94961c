//! Reading probe data files and choosing what to evaluate: the fixed seeded subset of items and
//! the few-shot examples.
//!
//! The subset is chosen independently of the order of records in a file: records are first sorted
//! by a stable key (their id, or their text), then shuffled with a `ChaCha8Rng` seeded from the
//! configured seed. The first `limit` of that order are evaluated, so a smaller limit gives a
//! prefix of a larger one and the same seed always gives the same items.

use std::path::Path;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

/// Fails with an input error naming `path` when it does not exist (the TUI shows the message as
/// "no probes, because …").
pub fn require(path: &Path, what: &str) -> Result<()> {
    if path.exists() {
        Ok(())
    } else {
        Err(Error::Input(format!(
            "{what}: data file {} is missing (set D4S_DATA or the probe data directory)",
            path.display()
        )))
    }
}

pub fn read_text(path: &Path, what: &str) -> Result<String> {
    require(path, what)?;
    std::fs::read_to_string(path).map_err(|e| Error::io(path, e))
}

/// Parses a JSON-lines file; blank lines are skipped, a bad line is an error naming the line.
pub fn read_jsonl<T: DeserializeOwned>(path: &Path, what: &str) -> Result<Vec<(usize, T)>> {
    let text = read_text(path, what)?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let record = serde_json::from_str(line)
            .map_err(|e| Error::bad_file(path, format!("line {}: {e}", i + 1)))?;
        out.push((i + 1, record));
    }
    Ok(out)
}

/// An error about one record of a file.
pub fn bad_record(path: &Path, line: usize, msg: impl std::fmt::Display) -> Error {
    Error::bad_file(path, format!("line {line}: {msg}"))
}

/// Indices of `keys` in the seeded, file-order-independent order described in the module docs.
pub fn seeded_order(keys: &[String], seed: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..keys.len()).collect();
    // A stable sort keeps the file order among equal keys, so duplicates stay deterministic.
    order.sort_by(|&a, &b| keys[a].cmp(&keys[b]));
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    order
}

/// The evaluated subset: the first `limit` items of the seeded order (all when `limit` is None).
pub fn subset(keys: &[String], limit: Option<usize>, seed: u64) -> Vec<usize> {
    let mut order = seeded_order(keys, seed);
    if let Some(limit) = limit {
        order.truncate(limit);
    }
    order
}

/// For tasks whose only file is also the few-shot pool (WinoGrande, HellaSwag): the few-shot
/// examples come from the end of the seeded order and the evaluated items from its start, so the
/// two never overlap and the evaluated subset does not depend on the shot count.
pub fn subset_and_shots(
    keys: &[String],
    limit: Option<usize>,
    seed: u64,
    shots: usize,
) -> (Vec<usize>, Vec<usize>) {
    let order = seeded_order(keys, seed);
    let shots = shots.min(order.len());
    let (rest, examples) = order.split_at(order.len() - shots);
    let n = limit.map_or(rest.len(), |l| l.min(rest.len()));
    (rest[..n].to_vec(), examples.to_vec())
}

/// `n` few-shot examples drawn from a separate pool in seeded order. The seed is offset so that
/// the draw is not correlated with the subset order of the evaluated file.
pub fn few_shot(keys: &[String], n: usize, seed: u64) -> Vec<usize> {
    let mut order = seeded_order(keys, seed ^ 0x5eed_f00d);
    order.truncate(n);
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("item-{i:03}")).collect()
    }

    #[test]
    fn subset_is_seeded_nested_and_independent_of_file_order() {
        let k = keys(50);
        let a = subset(&k, Some(10), 7);
        assert_eq!(a, subset(&k, Some(10), 7));
        assert_ne!(a, subset(&k, Some(10), 8));
        assert_eq!(&subset(&k, Some(20), 7)[..10], &a[..]);
        assert_ne!(a, (0..10).collect::<Vec<_>>(), "not simply the first items");
        // Reverse the file: the same keys are chosen.
        let rev: Vec<String> = k.iter().rev().cloned().collect();
        let b = subset(&rev, Some(10), 7);
        let chosen_a: Vec<&String> = a.iter().map(|&i| &k[i]).collect();
        let chosen_b: Vec<&String> = b.iter().map(|&i| &rev[i]).collect();
        assert_eq!(chosen_a, chosen_b);
        assert_eq!(subset(&k, None, 7).len(), 50);
    }

    #[test]
    fn shots_from_the_same_file_never_overlap_the_evaluated_items() {
        let k = keys(30);
        let (eval, shots) = subset_and_shots(&k, Some(10), 3, 5);
        assert_eq!(eval.len(), 10);
        assert_eq!(shots.len(), 5);
        assert!(eval.iter().all(|i| !shots.contains(i)));
        assert_eq!(eval, subset_and_shots(&k, Some(10), 3, 0).0);
        let (all, shots) = subset_and_shots(&k, None, 3, 5);
        assert_eq!(all.len() + shots.len(), 30);
    }

    #[test]
    fn jsonl_errors_name_the_line_and_missing_files_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.jsonl");
        std::fs::write(&p, "{\"a\": 1}\n\n{\"a\": \n").unwrap();
        let err = read_jsonl::<serde_json::Value>(&p, "test")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 3"), "{err}");
        let missing = dir.path().join("nope.jsonl");
        let err = read_jsonl::<serde_json::Value>(&missing, "test").unwrap_err();
        assert!(matches!(err, Error::Input(_)));
        assert!(err.to_string().contains("nope.jsonl"));
    }
}
