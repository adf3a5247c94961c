//! Bisecting a journal: the first applied step after which a score (a probe's accuracy) fell
//! below the unedited model's by more than a given drop.
//!
//! Prefix k is the journal up to and including its k-th applied step (undos among them kept), so
//! prefix 0 is the unedited model. Each probed prefix is rebuilt from the base model by
//! [`super::Runner::restore`]: D4S folds the journaled terms back (no edit recomputed), other
//! methods replay the prefix. The search assumes the score, once fallen, stays down (a binary
//! search over k); every prefix it measured is reported, so a history that recovers shows.

use std::path::Path;

use super::journal::{self, Event, Session};
pub use super::replay::applied_steps;
use super::Runner;
use crate::edit::StatsCache;
use crate::error::Error;
use crate::model::Model;

/// The journal's events up to and including its `k`-th applied step (none for k = 0).
pub fn prefix(events: &[Event], k: usize) -> &[Event] {
    if k == 0 {
        return &[];
    }
    let mut applied = 0;
    for (i, e) in events.iter().enumerate() {
        if matches!(e, Event::Applied { .. }) {
            applied += 1;
            if applied == k {
                return &events[..=i];
            }
        }
    }
    events
}

/// What a bisection measured and found.
#[derive(Debug, Clone, PartialEq)]
pub struct Bisection {
    /// The score of the unedited model (prefix 0).
    pub baseline: f64,
    /// `(k, score)` of every prefix measured, in the order measured.
    pub measured: Vec<(usize, f64)>,
    /// The first k whose score is below `baseline − drop`, if any prefix is.
    pub first_drop: Option<usize>,
}

/// Finds the first of `n` prefixes whose score fell by more than `drop` below prefix 0's, in
/// about log₂ n + 2 measurements of `score(k)`.
pub fn bisect<E>(
    n: usize,
    drop: f64,
    mut score: impl FnMut(usize) -> Result<f64, E>,
) -> Result<Bisection, E> {
    let baseline = score(0)?;
    let mut measured = vec![(0, baseline)];
    let mut fell = |k: usize, measured: &mut Vec<(usize, f64)>| -> Result<bool, E> {
        let s = score(k)?;
        measured.push((k, s));
        Ok(baseline - s > drop)
    };
    if n == 0 || !fell(n, &mut measured)? {
        return Ok(Bisection {
            baseline,
            measured,
            first_drop: None,
        });
    }
    // Invariant: prefix `lo` has not fallen, prefix `hi` has.
    let (mut lo, mut hi) = (0, n);
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if fell(mid, &mut measured)? {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Ok(Bisection {
        baseline,
        measured,
        first_drop: Some(hi),
    })
}

/// The applied step after which the score first fell.
#[derive(Debug, Clone, PartialEq)]
pub struct Culprit {
    /// Its place among the applied steps (1-based: the prefix that fell).
    pub k: usize,
    /// Its journal step number.
    pub step: u64,
    /// The fact it edited.
    pub fact: String,
}

/// A session's bisection: what was measured, over how many applied steps, and the culprit.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionBisection {
    pub steps: usize,
    pub bisection: Bisection,
    pub culprit: Option<Culprit>,
}

/// Bisects the session in `dir`: each probed prefix is restored from `base` (the unedited model)
/// with the session's recorded method and settings and `stats` (the session's statistics
/// configuration), and scored by `score(k, model)`. The CLI's `d4s bisect` and the TUI's `b`
/// both call this.
pub fn bisect_session(
    dir: &Path,
    base: &Model,
    stats: &StatsCache,
    drop: f64,
    mut score: impl FnMut(usize, &Model) -> crate::error::Result<f64>,
) -> crate::error::Result<SessionBisection> {
    let meta = journal::read_meta(dir)?;
    let events = journal::read_journal(&dir.join(journal::JOURNAL_FILE))?.events;
    let steps = applied_steps(&events);
    let bisection = bisect(steps, drop, |k| -> crate::error::Result<f64> {
        let mut runner = Runner::new(base.clone(), meta.hparams.clone(), stats.sibling());
        runner.session = Some(Session::open(dir)?.0);
        runner
            .restore(prefix(&events, k))
            .map_err(|e| Error::Input(format!("restoring the first {k} steps: {e}")))?;
        score(k, &runner.model)
    })?;
    let culprit = match bisection.first_drop {
        Some(k) => {
            let (step, requests) = events
                .iter()
                .filter_map(|e| match e {
                    Event::Applied { step, requests, .. } => Some((*step, requests)),
                    _ => None,
                })
                .nth(k - 1)
                .ok_or_else(|| Error::Input("the journal changed during the bisection".into()))?;
            Some(Culprit {
                k,
                step,
                fact: requests.first().map(|r| r.describe()).unwrap_or_default(),
            })
        }
        None => None,
    };
    Ok(SessionBisection {
        steps,
        bisection,
        culprit,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_fallen_prefix_is_found_in_logarithmic_measurements() {
        // The score holds at 0.50 until step 37, then falls to 0.40.
        for n in [37, 38, 50, 1000] {
            let b = bisect(n, 0.05, |k| Ok::<_, ()>(if k >= 37 { 0.40 } else { 0.50 })).unwrap();
            assert_eq!(b.first_drop, Some(37), "n = {n}");
            let bound = (n as f64).log2().ceil() as usize + 2;
            assert!(b.measured.len() <= bound, "n = {n}: {:?}", b.measured);
        }
    }

    #[test]
    fn no_drop_beyond_the_threshold_finds_nothing() {
        let b = bisect(100, 0.05, |k| Ok::<_, ()>(0.50 - 0.0004 * k as f64)).unwrap();
        assert_eq!(b.first_drop, None, "0.04 at the end is within 0.05");
        assert_eq!(b.measured.len(), 2, "only the ends were needed");
        let b = bisect(0, 0.05, |_| Ok::<_, ()>(0.5)).unwrap();
        assert_eq!(b.first_drop, None);
    }
}

#[cfg(test)]
mod restore_tests {
    use super::*;
    use crate::edit::{EditControl, Method};
    use crate::eval::testkit::{cases, hparams, stats};
    use crate::model::config::Arch;
    use crate::model::random::tiny_model;
    use crate::session::journal::read_journal;
    use crate::session::replay::weights_sha256;
    use crate::session::{Runner, Session};

    #[test]
    fn every_prefix_restores_the_weights_the_journal_recorded_at_that_step() {
        let (root, stats_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let mut original = Runner::new(
            tiny_model(Arch::Llama, 23),
            hparams(Method::D4s),
            stats(stats_dir.path()),
        );
        original.start_session(root.path(), "b").unwrap();
        for c in &cases()[..4] {
            original.apply(&c.requests, EditControl::default()).unwrap();
        }
        original.undo(Some(2)).unwrap();
        let dir = original.session.as_ref().unwrap().dir.clone();
        let events = read_journal(&dir.join("journal.jsonl")).unwrap().events;
        assert_eq!(applied_steps(&events), 4);
        let recorded: Vec<String> = events
            .iter()
            .filter_map(|e| match e {
                Event::Applied { weights_sha256, .. } => Some(weights_sha256.clone()),
                _ => None,
            })
            .collect();
        let layers = hparams(Method::D4s).layers;
        for k in 0..=4 {
            let mut runner = Runner::new(
                tiny_model(Arch::Llama, 23),
                hparams(Method::D4s),
                stats(stats_dir.path()),
            );
            runner.session = Some(Session::open(&dir).unwrap().0);
            runner.restore(prefix(&events, k)).unwrap();
            if k == 0 {
                assert!(!runner.model.is_edited().unwrap());
            } else {
                assert_eq!(
                    weights_sha256(&runner.model, &layers).unwrap(),
                    recorded[k - 1],
                    "prefix {k}"
                );
            }
        }
    }
}
