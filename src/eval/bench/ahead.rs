//! Targets optimized ahead of their edits (spec §1.7), where every target of a run is computed on
//! the unedited model W0: D4S in any stream (it measures each residual on W0), and every method
//! under the single protocol (the model is reset before each case).
//!
//! ```text
//! chunk(i) = cases[⌊i/B⌋·B .. min(⌊i/B⌋·B + B, n)]        B = target_batch
//! target(i) = pass(W0, chunk(i))[i − ⌊i/B⌋·B]
//! ```
//! A run's step `i` asks for its target in the pass over its chunk; the target cache keys that
//! pass by its problems, so whichever step, process or session made the pass, a target is the same
//! bits. [`fill`] makes the passes of a share of the chunks before the run, so several processes
//! (or machines sharing a cache folder) can optimize a long run's targets side by side, and the
//! run then finds them all.

use crate::edit::{
    new_editor, EditContext, EditControl, EditRequest, HParams, StatsCache, TargetCache,
    TargetGroup,
};
use crate::error::{Error, Result};
use crate::eval::datasets::EvalCase;
use crate::model::Model;

/// The requests of case `case`'s chunk of `batch` cases and its place there, when each case of
/// the chunk is one request (a case of several is a step of several, which batches its own).
pub fn chunk_of(
    cases: &[EvalCase],
    case: usize,
    batch: usize,
) -> Option<(Vec<EditRequest>, usize)> {
    let batch = batch.max(1);
    let start = case / batch * batch;
    let end = (start + batch).min(cases.len());
    let requests = cases[start..end]
        .iter()
        .map(|c| match c.requests.as_slice() {
            [r] => Some(r.clone()),
            _ => None,
        })
        .collect::<Option<Vec<_>>>()?;
    Some((requests, case - start))
}

/// Which chunks a process fills: chunk `c` belongs to share `index` of `of` when `c % of ==
/// index` (interleaved, so every share reaches the run's early edits soon).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Share {
    pub index: usize,
    pub of: usize,
}

impl Share {
    pub const ALL: Share = Share { index: 0, of: 1 };

    pub fn holds(self, chunk: usize) -> bool {
        chunk % self.of == self.index
    }
}

impl std::str::FromStr for Share {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = || Error::Input(format!("share {s:?}: write i/k with 0 ≤ i < k, e.g. 0/2"));
        let (i, k) = s.split_once('/').ok_or_else(bad)?;
        let (index, of) = (
            i.trim().parse::<usize>().map_err(|_| bad())?,
            k.trim().parse::<usize>().map_err(|_| bad())?,
        );
        if of == 0 || index >= of {
            return Err(bad());
        }
        Ok(Share { index, of })
    }
}

/// What [`fill`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FillReport {
    /// Chunks of this share.
    pub chunks: usize,
    /// Targets optimized now.
    pub optimized: u64,
    /// Targets the cache already held.
    pub found: u64,
}

/// Optimizes the targets of this share's chunks of `cases` on the unedited model into `targets`,
/// each chunk exactly as a run's first step of that chunk does (the editor's own step, then
/// taken back), so the run finds them. `progress` hears (chunks done, chunks of the share).
pub fn fill(
    model: &mut Model,
    cases: &[EvalCase],
    hparams: &HParams,
    stats: &mut StatsCache,
    targets: &mut TargetCache,
    share: Share,
    mut progress: impl FnMut(usize, usize),
) -> Result<FillReport> {
    let batch = hparams.target_batch.max(1);
    let starts: Vec<usize> = (0..cases.len())
        .step_by(batch)
        .enumerate()
        .filter(|&(c, _)| share.holds(c))
        .map(|(_, start)| start)
        .collect();
    let (hits, misses) = (targets.hits(), targets.misses());
    let mut batching_seen = false;
    for (done, &start) in starts.iter().enumerate() {
        progress(done, starts.len());
        let Some((requests, _)) = chunk_of(cases, start, batch) else {
            return Err(Error::Input(format!(
                "case {start}'s chunk holds a case of several requests: such cases are edited as \
                 steps of their own and read no targets ahead"
            )));
        };
        model.reset_edits();
        let mut editor = new_editor(hparams.clone());
        let mut cx = EditContext {
            stats: &mut *stats,
            targets: Some(&mut *targets),
            target_group: Some(TargetGroup {
                requests: &requests,
                position: 0,
            }),
            ctl: EditControl::default(),
        };
        let (seen_before, optimized_before) = (targets_seen(&cx), targets_optimized(&cx));
        let applied = editor.apply(model, &mut cx, &requests[..1]);
        let seen = targets_seen(&cx) - seen_before;
        let optimized = targets_optimized(&cx) > optimized_before;
        model.reset_edits();
        applied?;
        // Whether the editor optimizes a whole chunk in one pass shows on the first chunk it
        // optimizes: on a chunk the cache already holds (a fill resumed, a share run twice) the
        // step finds its own target and asks for no other.
        if optimized && !batching_seen {
            if seen < requests.len() as u64 {
                return Err(Error::Input(format!(
                    "{} does not optimize a chunk's targets in one pass (the MEMIT-style methods \
                     do): there is nothing to fill ahead",
                    hparams.method.label()
                )));
            }
            batching_seen = true;
        }
    }
    progress(starts.len(), starts.len());
    Ok(FillReport {
        chunks: starts.len(),
        optimized: targets.misses() - misses,
        found: targets.hits() - hits,
    })
}

/// Targets the context's cache has answered or computed so far.
fn targets_seen(cx: &EditContext) -> u64 {
    cx.targets.as_ref().map_or(0, |t| t.hits() + t.misses())
}

/// Targets the context's cache has computed so far.
fn targets_optimized(cx: &EditContext) -> u64 {
    cx.targets.as_ref().map_or(0, |t| t.misses())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edit::Method;
    use crate::eval::testkit::{cases, hparams, spec, stats, Memory};
    use crate::model::config::Arch;
    use crate::model::random::tiny_model;

    fn d4s_hparams(batch: usize) -> HParams {
        let mut hp = hparams(Method::D4s);
        hp.target_batch = batch;
        hp
    }

    /// A D4S bench run over `cases` through `targets`: its records and final edited weights.
    fn d4s_run(cases: &[EvalCase], targets: &mut TargetCache) -> (Memory, Vec<Vec<f32>>) {
        let dir = tempfile::tempdir().unwrap();
        let mut st = stats(dir.path());
        let mut model = tiny_model(Arch::Llama, 21);
        let mut sink = Memory::default();
        let mut run = spec(Method::D4s, &mut st, None, None, None);
        run.hparams = d4s_hparams(2);
        run.targets = Some(targets);
        let layers = run.hparams.layers.clone();
        crate::eval::bench::run(&mut model, cases, run, &mut sink).unwrap();
        let weights = layers
            .iter()
            .map(|&l| {
                let w = model.edit_weight(l).unwrap().flatten_all().unwrap();
                w.to_vec1::<f32>().unwrap()
            })
            .collect();
        (sink, weights)
    }

    #[test]
    fn two_shares_fill_every_target_a_d4s_run_then_finds_bit_for_bit() {
        let cases = cases();
        let (_, straight) = d4s_run(&cases, &mut TargetCache::new());

        // Two "processes" fill the chunks {0,1}, {2,3}, {4} of a shared folder side by side.
        let folder = tempfile::tempdir().unwrap();
        let stats_dir = tempfile::tempdir().unwrap();
        let mut reports = Vec::new();
        for index in 0..2 {
            let mut model = tiny_model(Arch::Llama, 21);
            let mut targets = TargetCache::persistent(folder.path().to_path_buf());
            let share = Share { index, of: 2 };
            let mut seen = Vec::new();
            let report = fill(
                &mut model,
                &cases,
                &d4s_hparams(2),
                &mut stats(stats_dir.path()),
                &mut targets,
                share,
                |done, total| seen.push((done, total)),
            )
            .unwrap();
            assert_eq!(model.touched_layers(), Vec::<usize>::new(), "left unedited");
            assert_eq!(seen.last(), Some(&(report.chunks, report.chunks)));
            reports.push(report);
        }
        assert_eq!(
            reports,
            [
                FillReport {
                    chunks: 2,
                    optimized: 3,
                    found: 0
                },
                FillReport {
                    chunks: 1,
                    optimized: 2,
                    found: 0
                },
            ]
        );

        // A later run (a fresh process: empty memory, the same folder) finds every target and
        // lands the bits of the run that optimized them itself.
        let mut later = TargetCache::persistent(folder.path().to_path_buf());
        let (sink, weights) = d4s_run(&cases, &mut later);
        assert!(sink
            .records
            .iter()
            .all(|r| (r.targets_reused, r.targets_ahead) == (1, 0)));
        assert_eq!((later.misses(), later.disk_hits()), (0, 5));
        assert_eq!(weights, straight);
    }

    #[test]
    fn a_fill_resumed_over_chunks_the_cache_holds_goes_on() {
        // Chunks {0,1}, {2,3}, {4}: the first fill stops after chunk 0 (the share 0/3 holds only
        // it); the resumed fill finds chunk 0, optimizes the rest, and the run finds them all.
        let cases = cases();
        let folder = tempfile::tempdir().unwrap();
        let stats_dir = tempfile::tempdir().unwrap();
        let fill_share = |share: Share| {
            let mut targets = TargetCache::persistent(folder.path().to_path_buf());
            fill(
                &mut tiny_model(Arch::Llama, 21),
                &cases,
                &d4s_hparams(2),
                &mut stats(stats_dir.path()),
                &mut targets,
                share,
                |_, _| {},
            )
            .unwrap()
        };
        let first = fill_share(Share { index: 0, of: 3 });
        assert_eq!((first.chunks, first.optimized, first.found), (1, 2, 0));
        let resumed = fill_share(Share::ALL);
        assert_eq!(resumed.chunks, 3);
        assert_eq!(resumed.optimized, 3, "chunks 1 and 2 only");
        assert!(resumed.found >= 1, "chunk 0 came from the cache");

        let (_, straight) = d4s_run(&cases, &mut TargetCache::new());
        let mut later = TargetCache::persistent(folder.path().to_path_buf());
        let (_, weights) = d4s_run(&cases, &mut later);
        assert_eq!(later.misses(), 0);
        assert_eq!(weights, straight);
    }

    #[test]
    fn a_method_without_batched_targets_is_refused_by_name() {
        let cases = cases();
        let dir = tempfile::tempdir().unwrap();
        let mut hp = hparams(Method::Rome);
        hp.target_batch = 2;
        let err = fill(
            &mut tiny_model(Arch::Llama, 21),
            &cases,
            &hp,
            &mut stats(dir.path()),
            &mut TargetCache::new(),
            Share::ALL,
            |_, _| {},
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("ROME does not optimize a chunk"), "{err}");
    }

    #[test]
    fn a_share_is_i_of_k() {
        assert_eq!("1/3".parse::<Share>().unwrap(), Share { index: 1, of: 3 });
        for bad in ["3/3", "1/0", "1", "a/b", "-1/2"] {
            assert!(bad.parse::<Share>().is_err(), "{bad}");
        }
        let share = Share { index: 1, of: 3 };
        assert_eq!(
            (0..7).filter(|&c| share.holds(c)).collect::<Vec<_>>(),
            [1, 4]
        );
    }
}
