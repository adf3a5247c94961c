//! Targets of the unedited model, computed once and shared (spec §1.7 optimizations).
//!
//! ```text
//! target(W, problem, params) = a₀ + δ*     δ* = argmin_δ L(δ; W, problem, params)
//! ```
//! The optimization is a deterministic function of the model's weights `W`, the problem (rewriting
//! rows, lookup positions, target ids, sites, KL prompt) and the hyperparameters. On the unedited
//! model `W0`, MEMIT, D4S and AlphaEdit pose the *same* problem for a fact (same last layer,
//! context templates and target settings), and the single-edit protocol poses it again for every
//! method and after every reset. The cache turns those repeats into lookups.
//!
//! It answers only while the model is unedited (`!model.is_edited()`): then `W = W0` and a hit is
//! exactly what [`optimize`] would return, bit for bit. Once a model carries edits, its targets
//! depend on those edits and are always computed.
//!
//! Targets optimized in batches ([`optimize_many`] with a batch size above one, and
//! [`optimize_member`] for a bench's targets optimized ahead) agree with their single
//! optimization only to the last bits of the wider products, which depend on the companions: a
//! batched target's key names its whole pass (the problems in order) and its place there. So a
//! hit is always what the same pass computes, a run that optimizes one target at a time (the TUI,
//! sessions, `target_batch = 1`) never reads a batched one, and a member is never answered from
//! a pass with other companions.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;

pub mod disk;

pub use disk::DiskTargets;

use super::target::{
    optimize, optimize_batch, OptimOptions, TargetParams, TargetProblem, TargetResult,
};
use super::{EditControl, Progress};
use crate::error::Result;
use crate::model::Model;

/// Bytes the cache may hold by default: ~7,000 targets of the default model (d_model 576), ~500 of
/// a 7B model (d_model 4096); the oldest are dropped first.
pub const DEFAULT_BUDGET_BYTES: usize = 64 << 20;

/// Optimized targets of unedited models, by a digest of everything the optimization reads.
#[derive(Debug)]
pub struct TargetCache {
    entries: HashMap<String, TargetResult>,
    /// Insertion order, for dropping the oldest entries when over budget.
    order: VecDeque<String>,
    bytes: usize,
    budget: usize,
    hits: u64,
    misses: u64,
    /// Targets kept across processes (`--target-cache`), behind the in-memory map.
    disk: Option<DiskTargets>,
    /// Hits answered by the disk layer (a part of `hits`).
    disk_hits: u64,
}

impl Default for TargetCache {
    fn default() -> Self {
        Self::with_budget(DEFAULT_BUDGET_BYTES)
    }
}

impl TargetCache {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_budget(bytes: usize) -> Self {
        Self {
            entries: HashMap::new(),
            order: VecDeque::new(),
            bytes: 0,
            budget: bytes,
            hits: 0,
            misses: 0,
            disk: None,
            disk_hits: 0,
        }
    }

    /// A cache that also keeps its targets in `dir` (see [`disk`]), for later runs to find.
    pub fn persistent(dir: PathBuf) -> Self {
        Self {
            disk: Some(DiskTargets::new(dir)),
            ..Self::default()
        }
    }

    /// The folder of the disk layer, when there is one.
    pub fn disk_dir(&self) -> Option<&std::path::Path> {
        self.disk.as_ref().map(DiskTargets::dir)
    }

    /// Optimizations answered from the disk layer (included in [`TargetCache::hits`]).
    pub fn disk_hits(&self) -> u64 {
        self.disk_hits
    }

    /// Optimizations answered from the cache.
    pub fn hits(&self) -> u64 {
        self.hits
    }

    /// Optimizations run on the unedited model and stored.
    pub fn misses(&self) -> u64 {
        self.misses
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// [`optimize`], answered from the cache when the model is unedited and the same problem
    /// was solved before with the same settings.
    pub fn optimize(
        &mut self,
        model: &Model,
        problem: &TargetProblem,
        params: &TargetParams,
        opts: OptimOptions,
        ctl: &EditControl,
    ) -> Result<TargetResult> {
        let Some(key) = storable_key(model, params, opts, Pass::Alone(problem))? else {
            return optimize(model, problem, params, opts, ctl);
        };
        if let Some(hit) = self.lookup(&key, problem, params, ctl) {
            return Ok(hit);
        }
        let result = optimize(model, problem, params, opts, ctl)?;
        self.store(key, &result, ctl);
        Ok(result)
    }

    /// The stored target under `key` (see [`storable_key`]), from memory or the disk layer.
    fn lookup(
        &mut self,
        key: &str,
        problem: &TargetProblem,
        params: &TargetParams,
        ctl: &EditControl,
    ) -> Option<TargetResult> {
        if let Some(hit) = self.entries.get(key) {
            self.hits += 1;
            report_hit(hit, params, ctl);
            return Some(hit.clone());
        }
        let hit = self.load_from_disk(key, problem, ctl)?;
        self.hits += 1;
        self.disk_hits += 1;
        report_hit(&hit, params, ctl);
        self.insert(key.to_string(), hit.clone());
        Some(hit)
    }

    /// Keeps a target just optimized on the unedited model under its key.
    fn store(&mut self, key: String, result: &TargetResult, ctl: &EditControl) {
        self.misses += 1;
        if let Some(disk) = &self.disk {
            // The disk is a convenience: failing to write (a full disk) costs a recomputation
            // next time, never this edit.
            if let Err(e) = disk.store(&key, result) {
                ctl.warn(format!("target cache: could not store a target ({e})"));
            }
        }
        self.insert(key, result.clone());
    }

    /// The disk layer's target for `key`; a damaged file is reported and treated as absent (the
    /// target is then recomputed and the file rewritten).
    fn load_from_disk(
        &self,
        key: &str,
        problem: &TargetProblem,
        ctl: &EditControl,
    ) -> Option<TargetResult> {
        let disk = self.disk.as_ref()?;
        // The key holds the model's config, so a file of the right key has the right widths.
        match disk.load(key, problem.sites.len()) {
            Ok(hit) => hit,
            Err(e) => {
                ctl.warn(format!("target cache: {e}; recomputing it"));
                None
            }
        }
    }

    fn insert(&mut self, key: String, result: TargetResult) {
        let size = result_bytes(&result);
        if size > self.budget {
            return;
        }
        while self.bytes + size > self.budget {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some(r) = self.entries.remove(&old) {
                self.bytes -= result_bytes(&r);
            }
        }
        self.bytes += size;
        self.order.push_back(key.clone());
        self.entries.insert(key, result);
    }
}

/// The last step as the optimization reported it, so progress displays end the same.
fn report_hit(hit: &TargetResult, params: &TargetParams, ctl: &EditControl) {
    ctl.report(Progress::TargetStep {
        step: hit.steps_run,
        of: params.steps,
        loss: hit.loss_final,
        prob: hit.prob_final,
    });
}

/// `optimize` through `cache` when there is one.
pub fn optimize_with(
    cache: Option<&mut TargetCache>,
    model: &Model,
    problem: &TargetProblem,
    params: &TargetParams,
    opts: OptimOptions,
    ctl: &EditControl,
) -> Result<TargetResult> {
    match cache {
        Some(c) => c.optimize(model, problem, params, opts, ctl),
        None => optimize(model, problem, params, opts, ctl),
    }
}

/// Problems per batched pass in [`optimize_many`]: measured on the default model at 1.4× (one
/// thread) to 2.2× (two) less time per target with 8 than alone (BENCHMARKS.md §2), while the
/// batch's cached keys and values stay small (8 facts × their template rows).
pub const TARGET_BATCH: usize = 8;

/// The targets of several problems, optimized `batch` at a time in one pass each
/// ([`optimize_batch`]; a chunk of one is [`optimize`] exactly), each chunk answered from the cache
/// when it holds the whole chunk, else optimized and kept.
///
/// The chunks are the problems' own (`problems.chunks(batch)`), whatever the cache holds: a
/// member's last bits depend on its companions, so the result is the cache-less run's bit for bit.
pub fn optimize_many(
    mut cache: Option<&mut TargetCache>,
    model: &Model,
    problems: &[TargetProblem],
    params: &TargetParams,
    opts: OptimOptions,
    batch: usize,
    ctl: &EditControl,
) -> Result<Vec<TargetResult>> {
    let mut results = Vec::with_capacity(problems.len());
    for chunk in problems.chunks(batch.max(1)) {
        results.extend(optimize_chunk(
            cache.as_deref_mut(),
            model,
            chunk,
            params,
            opts,
            ctl,
        )?);
    }
    Ok(results)
}

/// One batched pass over `chunk`, or the cache's copy of it.
fn optimize_chunk(
    cache: Option<&mut TargetCache>,
    model: &Model,
    chunk: &[TargetProblem],
    params: &TargetParams,
    opts: OptimOptions,
    ctl: &EditControl,
) -> Result<Vec<TargetResult>> {
    if let [alone] = chunk {
        return Ok(vec![optimize_with(cache, model, alone, params, opts, ctl)?]);
    }
    let (Some(cache), true) = (cache, storable(model, opts)?) else {
        return optimize_batch(model, chunk, params, opts, ctl);
    };
    let keys = chunk_keys(model, params, opts, chunk);
    // All or nothing (a part is dropped only when the budget evicted the rest).
    let held: Option<Vec<TargetResult>> = keys
        .iter()
        .zip(chunk)
        .map(|(key, p)| cache.lookup(key, p, params, ctl))
        .collect();
    if let Some(held) = held {
        return Ok(held);
    }
    batch_and_store(cache, keys, model, chunk, params, opts, ctl)
}

/// The target of `chunk[position]` as optimized in one batched pass over `chunk`: from the cache
/// when an earlier step made that pass, else the pass is made and every member's target kept for
/// its own step ([`super::TargetGroup`]). Without a cache, or on an edited model, the pass is made
/// every time, as [`optimize_many`] would.
pub fn optimize_member(
    cache: Option<&mut TargetCache>,
    model: &Model,
    chunk: &[TargetProblem],
    position: usize,
    params: &TargetParams,
    opts: OptimOptions,
    ctl: &EditControl,
) -> Result<TargetResult> {
    let take = |mut all: Vec<TargetResult>| all.swap_remove(position);
    match cache {
        Some(cache) if chunk.len() > 1 && storable(model, opts)? => {
            let key = cache_key(model, params, opts, Pass::Batched { chunk, position });
            if let Some(hit) = cache.lookup(&key, &chunk[position], params, ctl) {
                return Ok(hit);
            }
            let keys = chunk_keys(model, params, opts, chunk);
            batch_and_store(cache, keys, model, chunk, params, opts, ctl).map(take)
        }
        cache => optimize_many(cache, model, chunk, params, opts, chunk.len(), ctl).map(take),
    }
}

/// The keys of a batched pass's members, in order.
fn chunk_keys(
    model: &Model,
    params: &TargetParams,
    opts: OptimOptions,
    chunk: &[TargetProblem],
) -> Vec<String> {
    (0..chunk.len())
        .map(|position| cache_key(model, params, opts, Pass::Batched { chunk, position }))
        .collect()
}

/// One batched pass over `chunk`, each member's target kept under its key.
fn batch_and_store(
    cache: &mut TargetCache,
    keys: Vec<String>,
    model: &Model,
    chunk: &[TargetProblem],
    params: &TargetParams,
    opts: OptimOptions,
    ctl: &EditControl,
) -> Result<Vec<TargetResult>> {
    let results = optimize_batch(model, chunk, params, opts, ctl)?;
    for (key, r) in keys.into_iter().zip(&results) {
        cache.store(key, r, ctl);
    }
    Ok(results)
}

/// How a target is optimized: alone, or at `position` of one batched pass over `chunk`, whose
/// other members change its last bits and so are part of its key.
#[derive(Debug, Clone, Copy)]
enum Pass<'p> {
    Alone(&'p TargetProblem),
    Batched {
        chunk: &'p [TargetProblem],
        position: usize,
    },
}

/// The key a target may be kept under (see [`storable`]).
fn storable_key(
    model: &Model,
    params: &TargetParams,
    opts: OptimOptions,
    pass: Pass,
) -> Result<Option<String>> {
    Ok(storable(model, opts)?.then(|| cache_key(model, params, opts, pass)))
}

/// Whether targets optimized now may be kept: not while the model carries edits (its targets
/// depend on them), nor when trajectories are recorded (they are for the exactness tests and can
/// be large).
fn storable(model: &Model, opts: OptimOptions) -> Result<bool> {
    Ok(!opts.record_trajectory && !model.is_edited()?)
}

/// A digest of everything the optimization reads besides the (unedited) weights, which the
/// weight file's sha256, the architecture and the device stand for. `Debug` prints floats in
/// their shortest round-trip form, so equal text means equal inputs. A single target keeps the
/// key it always had; a batched one's names its pass's problems in order and its place there.
fn cache_key(model: &Model, params: &TargetParams, opts: OptimOptions, pass: Pass) -> String {
    let problem = match pass {
        Pass::Alone(p) => p,
        Pass::Batched { chunk, position } => &chunk[position],
    };
    let mut text = format!(
        "{}\n{}\n{:?}\n{:?}\n{problem:?}\n{params:?}\n{opts:?}",
        disk::FORMAT,
        model.info.sha256,
        model.config,
        model.device
    );
    if let Pass::Batched { chunk, position } = pass {
        // "narrowing": a stopped problem's rows leave the pass (since 2026-12-08), which changes
        // the others' last bits, so passes made before are not reused for it.
        text.push_str(&format!(
            "\nbatch {} at {position}, narrowing\n{chunk:?}",
            chunk.len()
        ));
    }
    crate::util::sha256_hex(text.as_bytes())
}

/// What an entry holds: its vectors, plus a rough allowance for the scalars, the 64-character key
/// (stored twice: map and order) and the allocations' headers.
fn result_bytes(r: &TargetResult) -> usize {
    let floats: usize = r
        .sites
        .iter()
        .map(|s| s.reference.len() + s.delta.len())
        .sum();
    floats * std::mem::size_of::<f64>() + 64 + 128
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edit::request::EditRequest;
    use crate::edit::target::NllSchedule;
    use crate::model::config::Arch;
    use crate::model::random::tiny_model;

    fn problem(model: &Model, target: &str) -> TargetProblem {
        TargetProblem::residual(
            model,
            &EditRequest::new("Eiffel Tower", "The Eiffel Tower is in", target),
            &["{}".to_string()],
            2,
        )
        .unwrap()
    }

    fn params() -> TargetParams {
        TargetParams {
            steps: 5,
            lr: 0.5,
            weight_decay: 1e-3,
            clamp_norm_factor: Some(4.0),
            kl_factor: 0.0625,
            stop_loss: Some(0.05),
            stop_prob: None,
            stop_top1: None,
            schedule: NllSchedule::Constant,
            nll_factor: 1.0,
        }
    }

    fn same(a: &TargetResult, b: &TargetResult) -> bool {
        a.sites.len() == b.sites.len()
            && a.sites.iter().zip(&b.sites).all(|(x, y)| {
                x.reference
                    .iter()
                    .map(|v| v.to_bits())
                    .eq(y.reference.iter().map(|v| v.to_bits()))
                    && x.delta
                        .iter()
                        .map(|v| v.to_bits())
                        .eq(y.delta.iter().map(|v| v.to_bits()))
            })
            && a.prob_final.to_bits() == b.prob_final.to_bits()
            && a.steps_run == b.steps_run
    }

    #[test]
    fn a_hit_is_the_computed_target_bit_for_bit() {
        let model = tiny_model(Arch::Llama, 7);
        let ctl = EditControl::default();
        let p = problem(&model, "Rome");
        let plain = optimize(&model, &p, &params(), OptimOptions::default(), &ctl).unwrap();
        let mut cache = TargetCache::new();
        let first = cache
            .optimize(&model, &p, &params(), OptimOptions::default(), &ctl)
            .unwrap();
        let second = cache
            .optimize(&model, &p, &params(), OptimOptions::default(), &ctl)
            .unwrap();
        assert_eq!((cache.misses(), cache.hits()), (1, 1));
        assert!(same(&plain, &first) && same(&plain, &second));
    }

    #[test]
    fn batched_targets_are_kept_apart_from_single_ones_and_found_by_the_next_batch() {
        let model = tiny_model(Arch::Llama, 7);
        let ctl = EditControl::default();
        let opts = OptimOptions::default();
        let problems: Vec<TargetProblem> = ["Rome", "Berlin", "Madrid"]
            .iter()
            .map(|t| problem(&model, t))
            .collect();
        let mut cache = TargetCache::new();
        // Two problems per pass.
        let in_pairs = |cache: &mut TargetCache| {
            optimize_many(Some(cache), &model, &problems, &params(), opts, 2, &ctl).unwrap()
        };
        let first = in_pairs(&mut cache);
        // Chunks of 2 and 1: the lone one is the single optimization bit for bit.
        let alone = optimize(&model, &problems[2], &params(), opts, &ctl).unwrap();
        assert!(same(&first[2], &alone));
        assert_eq!((cache.misses(), cache.hits()), (3, 0));
        // The same batched configuration finds all three, bit for bit.
        let again = in_pairs(&mut cache);
        assert_eq!(cache.hits(), 3);
        assert!(first.iter().zip(&again).all(|(a, b)| same(a, b)));
        // A single optimization does not read a batched target: it computes its own.
        cache
            .optimize(&model, &problems[0], &params(), opts, &ctl)
            .unwrap();
        assert_eq!((cache.misses(), cache.hits()), (4, 3));
    }

    #[test]
    fn a_batched_target_is_answered_only_with_its_whole_chunk() {
        let model = tiny_model(Arch::Llama, 7);
        let ctl = EditControl::default();
        let opts = OptimOptions::default();
        let p: Vec<TargetProblem> = ["Rome", "Berlin", "Madrid"]
            .iter()
            .map(|t| problem(&model, t))
            .collect();
        let mut cache = TargetCache::new();
        optimize_many(Some(&mut cache), &model, &p[..2], &params(), opts, 2, &ctl).unwrap();
        // Berlin in another company is another pass: its target is computed, bit for bit what a
        // run without the cache gets, not the copy from the pass with Rome.
        let with_cache =
            optimize_many(Some(&mut cache), &model, &p[1..], &params(), opts, 2, &ctl).unwrap();
        let without = optimize_batch(&model, &p[1..], &params(), opts, &ctl).unwrap();
        assert_eq!((cache.misses(), cache.hits()), (4, 0));
        assert!(with_cache.iter().zip(&without).all(|(a, b)| same(a, b)));
        // The same company in another order is another pass too.
        let swapped = [p[1].clone(), p[0].clone()];
        optimize_many(Some(&mut cache), &model, &swapped, &params(), opts, 2, &ctl).unwrap();
        assert_eq!((cache.misses(), cache.hits()), (6, 0));
        optimize_many(Some(&mut cache), &model, &p[..2], &params(), opts, 2, &ctl).unwrap();
        assert_eq!((cache.misses(), cache.hits()), (6, 2));
    }

    #[test]
    fn other_problems_settings_and_models_are_computed() {
        let model = tiny_model(Arch::Llama, 7);
        let ctl = EditControl::default();
        let mut cache = TargetCache::new();
        let p = problem(&model, "Rome");
        cache
            .optimize(&model, &p, &params(), OptimOptions::default(), &ctl)
            .unwrap();
        // Another target, another learning rate, another model: three misses.
        cache
            .optimize(
                &model,
                &problem(&model, "Berlin"),
                &params(),
                OptimOptions::default(),
                &ctl,
            )
            .unwrap();
        let mut lr = params();
        lr.lr = 0.25;
        cache
            .optimize(&model, &p, &lr, OptimOptions::default(), &ctl)
            .unwrap();
        let other = tiny_model(Arch::Llama, 8);
        let from_other = cache
            .optimize(&other, &p, &params(), OptimOptions::default(), &ctl)
            .unwrap();
        assert_eq!((cache.misses(), cache.hits()), (4, 0));
        let plain = optimize(&other, &p, &params(), OptimOptions::default(), &ctl).unwrap();
        assert!(same(&plain, &from_other));
    }

    #[test]
    fn an_edited_model_is_never_answered_from_the_cache() {
        let mut model = tiny_model(Arch::Llama, 7);
        let ctl = EditControl::default();
        let mut cache = TargetCache::new();
        let p = problem(&model, "Rome");
        cache
            .optimize(&model, &p, &params(), OptimOptions::default(), &ctl)
            .unwrap();
        let w = model.edit_weight(1).unwrap().clone();
        model.set_edit_weight(1, (&w * 1.5).unwrap()).unwrap();
        let edited = cache
            .optimize(&model, &p, &params(), OptimOptions::default(), &ctl)
            .unwrap();
        let plain = optimize(&model, &p, &params(), OptimOptions::default(), &ctl).unwrap();
        assert!(same(&plain, &edited));
        assert_eq!(cache.hits(), 0);
        // Back at W0 (an undo puts the same matrix back), the stored target answers again.
        model.set_edit_weight(1, w).unwrap();
        cache
            .optimize(&model, &p, &params(), OptimOptions::default(), &ctl)
            .unwrap();
        assert_eq!(cache.hits(), 1);
    }

    #[test]
    fn the_budget_drops_the_oldest_targets() {
        let model = tiny_model(Arch::Llama, 7);
        let ctl = EditControl::default();
        let p = problem(&model, "Rome");
        let one =
            result_bytes(&optimize(&model, &p, &params(), OptimOptions::default(), &ctl).unwrap());
        let mut cache = TargetCache::with_budget(2 * one);
        for target in ["Rome", "Berlin", "Madrid"] {
            cache
                .optimize(
                    &model,
                    &problem(&model, target),
                    &params(),
                    OptimOptions::default(),
                    &ctl,
                )
                .unwrap();
        }
        assert_eq!(cache.len(), 2);
        cache
            .optimize(
                &model,
                &problem(&model, "Rome"),
                &params(),
                OptimOptions::default(),
                &ctl,
            )
            .unwrap();
        assert_eq!(cache.hits(), 0, "Rome was the oldest and was dropped");
        cache
            .optimize(
                &model,
                &problem(&model, "Madrid"),
                &params(),
                OptimOptions::default(),
                &ctl,
            )
            .unwrap();
        assert_eq!(cache.hits(), 1);
    }

    #[test]
    fn a_second_process_finds_the_targets_on_disk_bit_for_bit() {
        let dir = tempfile::tempdir().unwrap();
        let model = tiny_model(Arch::Llama, 7);
        let ctl = EditControl::default();
        let p = problem(&model, "Rome");
        let mut first = TargetCache::persistent(dir.path().to_path_buf());
        let computed = first
            .optimize(&model, &p, &params(), OptimOptions::default(), &ctl)
            .unwrap();
        assert_eq!((first.misses(), first.disk_hits()), (1, 0));
        // A new cache on the same folder stands for a later run: nothing is recomputed.
        let mut second = TargetCache::persistent(dir.path().to_path_buf());
        let found = second
            .optimize(&model, &p, &params(), OptimOptions::default(), &ctl)
            .unwrap();
        assert_eq!((second.misses(), second.disk_hits()), (0, 1));
        assert!(same(&computed, &found));
        // Other settings are other files.
        let mut lr = params();
        lr.lr = 0.25;
        second
            .optimize(&model, &p, &lr, OptimOptions::default(), &ctl)
            .unwrap();
        assert_eq!(second.misses(), 1);
    }

    #[test]
    fn a_corrupt_file_is_reported_recomputed_and_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let model = tiny_model(Arch::Llama, 7);
        let p = problem(&model, "Rome");
        let plain = optimize(
            &model,
            &p,
            &params(),
            OptimOptions::default(),
            &EditControl::default(),
        )
        .unwrap();
        let mut cache = TargetCache::persistent(dir.path().to_path_buf());
        cache
            .optimize(
                &model,
                &p,
                &params(),
                OptimOptions::default(),
                &EditControl::default(),
            )
            .unwrap();
        let key = cache_key(&model, &params(), OptimOptions::default(), Pass::Alone(&p));
        let path = DiskTargets::new(dir.path().to_path_buf()).path(&key);
        std::fs::write(&path, b"not a safetensors file").unwrap();

        let warnings = std::sync::Mutex::new(Vec::new());
        let record = |p: Progress| {
            if let Progress::Warning(w) = p {
                warnings.lock().unwrap().push(w);
            }
        };
        let ctl = EditControl {
            progress: Some(&record),
            ..EditControl::default()
        };
        let mut later = TargetCache::persistent(dir.path().to_path_buf());
        let again = later
            .optimize(&model, &p, &params(), OptimOptions::default(), &ctl)
            .unwrap();
        assert!(same(&plain, &again));
        assert_eq!((later.misses(), later.disk_hits()), (1, 0));
        let warned = warnings.lock().unwrap().join("\n");
        assert!(warned.contains("recomputing"), "{warned}");
        // The rewritten file answers the next run.
        let mut third = TargetCache::persistent(dir.path().to_path_buf());
        let found = third
            .optimize(&model, &p, &params(), OptimOptions::default(), &ctl)
            .unwrap();
        assert_eq!(third.disk_hits(), 1);
        assert!(same(&plain, &found));
    }

    #[test]
    fn concurrent_writers_of_one_target_leave_one_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let model = tiny_model(Arch::Llama, 7);
        let p = problem(&model, "Rome");
        let ctl = EditControl::default();
        let results: Vec<TargetResult> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    s.spawn(|| {
                        TargetCache::persistent(dir.path().to_path_buf())
                            .optimize(&model, &p, &params(), OptimOptions::default(), &ctl)
                            .unwrap()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(results.windows(2).all(|w| same(&w[0], &w[1])));
        let key = cache_key(&model, &params(), OptimOptions::default(), Pass::Alone(&p));
        let shard = DiskTargets::new(dir.path().to_path_buf())
            .path(&key)
            .parent()
            .unwrap()
            .to_path_buf();
        let names: Vec<_> = std::fs::read_dir(shard)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "no temporary files remain: {names:?}");
        let mut reader = TargetCache::persistent(dir.path().to_path_buf());
        let found = reader
            .optimize(&model, &p, &params(), OptimOptions::default(), &ctl)
            .unwrap();
        assert!(same(&results[0], &found));
    }
}
