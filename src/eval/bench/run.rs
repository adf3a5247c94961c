//! The protocols: a stream of edits from a dataset, evaluation points, and every record streamed
//! to a [`BenchSink`] as it happens. The single-edit protocol and the stream protocols (sequential
//! and batch) are separate functions over shared pieces: an edit step, an evaluation point.

use std::collections::BTreeMap;
use std::time::Instant;

use super::baseline::{self, Baseline, BaselineCache};
use super::checkpoint::{self, Checkpoint, CheckpointMeta, CheckpointPolicy};
use super::evaluate::{
    evaluate, layer_norms, mean, target_difficulty, EvalOptions, Evaluation, Reference, Tallies,
    TargetDifficulty,
};
use super::records::{retention_by_age, CaseMetrics, CaseOutcome, EditRecord, EvalPoint};
use super::{GenSchedule, Protocol};
use crate::edit::{
    new_editor, EditContext, EditControl, EditRequest, Editor, HParams, StatsCache, TargetCache,
    TargetGroup,
};
use crate::error::{Error, Result};
use crate::eval::datasets::EvalCase;
use crate::eval::probes::{ProbeResult, ProbeSet};
use crate::model::Model;

/// What a run is doing, for progress displays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunPhase {
    Editing,
    /// Scoring the edit just made (the single protocol: part of every step).
    EvaluatingEdit,
    /// Scoring all edits so far (an evaluation point of a stream).
    EvaluatingAll,
    Checkpointing,
    FinalEvaluation,
}

impl RunPhase {
    pub fn describe(self) -> &'static str {
        match self {
            Self::Editing => "editing",
            Self::EvaluatingEdit => "evaluating",
            Self::EvaluatingAll => "evaluating all edits so far",
            Self::Checkpointing => "writing a checkpoint",
            Self::FinalEvaluation => "final evaluation",
        }
    }

    /// A pause in the editing, whose duration says nothing about the editing's pace.
    pub fn pauses_editing(self) -> bool {
        matches!(
            self,
            Self::EvaluatingAll | Self::Checkpointing | Self::FinalEvaluation
        )
    }
}

/// Everything a run produces, streamed to the caller as it happens.
pub trait BenchSink {
    fn edit(&mut self, record: &EditRecord) -> Result<()>;
    fn point(&mut self, point: &EvalPoint) -> Result<()>;
    /// Called before each edit with (edits done, total) for progress displays.
    fn progress(&mut self, _done: usize, _total: usize, _phase: RunPhase) {}
    /// Something the user should know that does not stop the run.
    fn warn(&mut self, _message: &str) {}
    /// Each case's outcome at the final point (called once, just before that point).
    fn cases(&mut self, _cases: &[CaseOutcome]) -> Result<()> {
        Ok(())
    }
}

/// A run's inputs (besides the model and the cases).
pub struct BenchRun<'a> {
    pub hparams: HParams,
    pub protocol: Protocol,
    /// Evaluate every k edits (sequential); `None` = only at the end.
    pub eval_every: Option<usize>,
    /// Evaluate only a fixed seeded sample of this many cases ([`EvalSample`]); `None`: all.
    pub eval_sample: Option<usize>,
    pub probes: &'a [ProbeSet],
    pub multihop: bool,
    /// Which points decode the `gen.*` metrics.
    pub generation: GenSchedule,
    pub stats: &'a mut StatsCache,
    /// Targets of the unedited model shared with the other methods of the command (`None`: always
    /// optimize). The single-edit protocol starts every record from W0, so each method after the
    /// first finds MEMIT-style targets here.
    pub targets: Option<&'a mut TargetCache>,
    /// Write checkpoints (sequential and batch protocols).
    pub checkpoint: Option<CheckpointPolicy>,
    /// The run's identity, recorded in each checkpoint (what a resume must match).
    pub identity: serde_json::Value,
    /// Continue from this checkpoint instead of starting with the unedited model.
    pub resume: Option<Checkpoint>,
    /// Stop (after writing a checkpoint) once this many cases are edited.
    pub stop_after: Option<usize>,
    /// Keep the unedited model's side of the run on disk, and read it from there when another run
    /// of this build measured it (`--baseline-cache`).
    pub baseline: Option<BaselineCache>,
    /// Set from outside (Ctrl-C) to stop the same way after the current step.
    pub interrupt: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
}

/// What [`run`] did.
#[derive(Debug, Clone)]
pub struct BenchOutcome {
    /// The evaluation points of this call (a resumed run's earlier points are in its folder).
    pub points: Vec<EvalPoint>,
    /// False when it stopped early (`stop_after`); the run folder then holds a checkpoint.
    pub complete: bool,
    /// The unedited model's measurement came from the baseline cache.
    pub baseline_reused: bool,
}

/// Runs the protocol over `cases` (all of them), streaming records to `sink`.
pub fn run(
    model: &mut Model,
    cases: &[EvalCase],
    spec: BenchRun,
    sink: &mut dyn BenchSink,
) -> Result<BenchOutcome> {
    match spec.protocol {
        Protocol::Single => run_single(model, cases, spec, sink),
        Protocol::Sequential | Protocol::Batch { .. } => run_stream(model, cases, spec, sink),
    }
}

/// The cases a run evaluates: all of them, or a fixed random subset drawn once (seeded, so a
/// resumed run and every method of a command score the same cases). Each point then scores the
/// sampled cases among the edits so far: an unbiased sample of them, whose size grows with the
/// edits until it reaches the sample's.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalSample(Option<Vec<bool>>);

impl EvalSample {
    /// The seed of the draw; fixed, so the sample depends only on the case count and its size.
    pub const SEED: u64 = 0x5eed_e7a1;

    pub fn draw(n_cases: usize, size: Option<usize>) -> Self {
        use rand::seq::index::sample;
        use rand::SeedableRng;
        match size {
            Some(k) if k < n_cases => {
                let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(Self::SEED);
                let mut holds = vec![false; n_cases];
                for i in sample(&mut rng, n_cases, k) {
                    holds[i] = true;
                }
                Self(Some(holds))
            }
            _ => Self(None),
        }
    }

    pub fn holds(&self, case: usize) -> bool {
        self.0.as_ref().is_none_or(|h| h[case])
    }

    /// The sampled cases among `which`, in its order.
    pub fn of(&self, which: &[usize]) -> Vec<usize> {
        which.iter().copied().filter(|&ci| self.holds(ci)).collect()
    }
}

/// What a run knows about its cases before the first edit, and its clock.
struct Run<'c, 'a> {
    cases: &'c [EvalCase],
    spec: BenchRun<'a>,
    reference: Reference,
    difficulty: Vec<TargetDifficulty>,
    sample: EvalSample,
    started: Instant,
    /// Wall time of the run before this process took it over (a resumed run's).
    wall_offset: f64,
    /// Final target probabilities of the applied edits so far, and the rejected edits.
    probs: Vec<f64>,
    rejected: usize,
    /// Cases whose targets this run optimized ahead, at an earlier step of their chunk.
    ahead: std::collections::HashSet<usize>,
    /// Where this run's baseline is kept, by its key (`--baseline-cache`).
    kept: Option<(BaselineCache, String)>,
    /// Point 0 as another run of this build measured it.
    stored_point: Option<EvalPoint>,
    baseline_reused: bool,
}

impl<'c, 'a> Run<'c, 'a> {
    fn start(
        model: &mut Model,
        cases: &'c [EvalCase],
        spec: BenchRun<'a>,
        sink: &mut dyn BenchSink,
    ) -> Result<Self> {
        model.reset_edits();
        let decode = spec.generation != GenSchedule::Off;
        let sample = EvalSample::draw(cases.len(), spec.eval_sample);
        let kept = spec.baseline.clone().and_then(|cache| {
            let inputs = baseline::Inputs {
                cases,
                sample: &sample,
                decode,
                multihop: spec.multihop,
                probes: spec.probes,
            };
            baseline::key(model, &inputs).map(|key| (cache, key))
        });
        let found = kept
            .as_ref()
            .and_then(|(cache, key)| match cache.load(key, cases.len()) {
                Ok(found) => found,
                Err(e) => {
                    sink.warn(&format!("{e}; the unedited model is measured again"));
                    None
                }
            });
        let baseline_reused = found.is_some();
        let (reference, difficulty, stored_point) = match found {
            Some(b) => (b.reference, b.difficulty, b.point),
            None => (
                Reference::of_sample(model, cases, |ci| sample.holds(ci), decode)?,
                model.with_unedited(|m| target_difficulty(m, cases))?,
                None,
            ),
        };
        let wall_offset = spec.resume.as_ref().map_or(0.0, |c| c.meta.wall_seconds);
        let run = Self {
            cases,
            spec,
            reference,
            difficulty,
            sample,
            started: Instant::now(),
            wall_offset,
            probs: Vec::new(),
            rejected: 0,
            ahead: Default::default(),
            kept,
            stored_point,
            baseline_reused,
        };
        if !baseline_reused {
            run.keep_baseline(None, sink);
        }
        Ok(run)
    }

    /// Stores the baseline (with point 0 once measured). A failure (a full disk) costs only the
    /// sharing, so it is reported and the run goes on.
    fn keep_baseline(&self, point: Option<&EvalPoint>, sink: &mut dyn BenchSink) {
        let Some((cache, key)) = &self.kept else {
            return;
        };
        let baseline = Baseline {
            reference: self.reference.clone(),
            difficulty: self.difficulty.clone(),
            point: point.cloned(),
        };
        if let Err(e) = cache.store(key, &baseline) {
            sink.warn(&format!(
                "could not keep the baseline ({e}); the run goes on"
            ));
        }
    }

    /// Point 0, the unedited model: as stored by another run of this build (with this run's
    /// layers and clock), or measured and stored.
    fn first_point(&mut self, model: &Model, sink: &mut dyn BenchSink) -> Result<EvalPoint> {
        if let Some(mut p) = self.stored_point.take() {
            p.layers = layer_norms(model, &self.spec.hparams.layers)?;
            p.wall_seconds = self.wall();
            return Ok(p);
        }
        let all: Vec<usize> = (0..self.cases.len()).collect();
        let (p, _) = self.point(model, &all, 0, true)?;
        self.keep_baseline(Some(&p), sink);
        self.baseline_reused = false;
        Ok(p)
    }

    fn wall(&self) -> f64 {
        self.wall_offset + self.started.elapsed().as_secs_f64()
    }

    /// Evaluates the cases `which`; `end` says the point is the first or the last of the run,
    /// where the costly sampled and decoded metrics are measured.
    fn evaluate(&self, model: &Model, which: &[usize], end: bool) -> Result<Evaluation> {
        let options = EvalOptions {
            multihop: self.spec.multihop,
            fluency: end,
            generation: match self.spec.generation {
                GenSchedule::Off => false,
                GenSchedule::Ends => end,
                GenSchedule::Every => true,
            },
        };
        evaluate(model, self.cases, &self.reference, which, options)
    }

    /// An evaluation point after `edits` edits, with the cases `which` evaluated.
    fn point(
        &self,
        model: &Model,
        which: &[usize],
        edits: usize,
        end: bool,
    ) -> Result<(EvalPoint, Vec<CaseOutcome>)> {
        let which = self.sample.of(which);
        let eval = self.evaluate(model, &which, end)?;
        let mut point = self.point_with(model, eval.metrics, edits)?;
        if edits > 0 {
            point.retention = retention_by_age(&eval.cases);
        }
        Ok((point, eval.cases))
    }

    fn point_with(&self, model: &Model, metrics: CaseMetrics, edits: usize) -> Result<EvalPoint> {
        Ok(EvalPoint {
            edits,
            metrics,
            probes: run_probes(model, self.spec.probes)?,
            layers: layer_norms(model, &self.spec.hparams.layers)?,
            edit_prob: mean(&self.probs),
            rejected: self.rejected,
            wall_seconds: self.wall(),
            retention: Vec::new(),
        })
    }

    /// p(target | prompt) of each case of a step on the model as it is now (see
    /// [`EditRecord::prob_post`]).
    fn post_edit_probs(&self, model: &Model, step: &[usize]) -> Result<Vec<f64>> {
        // One scoring call for the whole step (batched forward passes), then split by case.
        let items: Vec<(String, String)> = step
            .iter()
            .flat_map(|&i| self.cases[i].requests.iter())
            .map(|r| (r.filled_prompt(), r.target.clone()))
            .collect();
        let probs = crate::eval::metrics::target_prob(model, &items)?;
        let mut rest = probs.as_slice();
        Ok(step
            .iter()
            .map(|&i| {
                let (case, tail) = rest.split_at(self.cases[i].requests.len());
                rest = tail;
                case.iter().sum::<f64>() / case.len().max(1) as f64
            })
            .collect())
    }

    /// Edits the cases of one step and records the outcome of each (landed or refused).
    fn edit_step(
        &mut self,
        model: &mut Model,
        editor: &mut dyn Editor,
        step: &[usize],
        sink: &mut dyn BenchSink,
    ) -> Result<()> {
        let requests: Vec<EditRequest> = step
            .iter()
            .flat_map(|&i| self.cases[i].requests.iter().cloned())
            .collect();
        let te = Instant::now();
        let cpu_before = crate::util::cpu_seconds();
        let cache_counts = |run: &Self| run.spec.targets.as_ref().map(|t| (t.hits(), t.misses()));
        let counts_before = cache_counts(self);
        let group = self.target_group(editor, step);
        let mut cx = EditContext {
            stats: self.spec.stats,
            targets: self.spec.targets.as_deref_mut(),
            target_group: group.as_ref().map(|(requests, position)| TargetGroup {
                requests,
                position: *position,
            }),
            ctl: EditControl::default(),
        };
        let outcome = editor.apply(model, &mut cx, &requests);
        let seconds = te.elapsed().as_secs_f64();
        let cpu_seconds = crate::util::cpu_seconds()
            .zip(cpu_before)
            .map(|(after, before)| (after - before) / step.len() as f64);
        let (hits, misses) = match (cache_counts(self), counts_before) {
            (Some((h, m)), Some((h0, m0))) => (h - h0, m - m0),
            _ => (0, 0),
        };
        let chunk = group
            .as_ref()
            .map(|(requests, position)| (requests.len(), *position));
        let (reused, ahead) = self.target_sources(step, chunk, hits, misses);
        let rss_bytes = crate::util::resident_memory();
        // What a record says about case `i` whatever the outcome; each arm adds its own.
        let case_record = |i: usize| EditRecord {
            index: i,
            origin: self.cases[i].origin.clone(),
            prob_initial: None,
            prob_final: None,
            prob_post: None,
            seconds: 0.0,
            cpu_seconds,
            timings: None,
            rss_bytes,
            rejected: None,
            targets_reused: 0,
            targets_ahead: 0,
            target_ppl: Some(self.difficulty[i].ppl()),
            target_tokens: Some(self.difficulty[i].tokens),
            target_new: self.cases[i].new_targets(),
            projector_rank: vec![],
        };
        match &outcome {
            Ok(o) => {
                let timings = o.timings.per_request(step.len());
                let projector_rank = editor.report().projector_rank;
                let post = self.post_edit_probs(model, step)?;
                let mut probs = Vec::new();
                for (k, &i) in step.iter().enumerate() {
                    let t = o.targets.get(k.min(o.targets.len().saturating_sub(1)));
                    probs.extend(t.map(|t| t.prob_final));
                    sink.edit(&EditRecord {
                        prob_initial: t.map(|t| t.prob_initial),
                        prob_final: t.map(|t| t.prob_final),
                        prob_post: Some(post[k]),
                        seconds: seconds / step.len() as f64,
                        timings: Some(timings.clone()),
                        targets_reused: reused,
                        targets_ahead: ahead,
                        projector_rank: projector_rank.clone(),
                        ..case_record(i)
                    })?;
                }
                self.probs.extend(probs);
            }
            Err(Error::Cancelled) => return Err(Error::Cancelled),
            Err(e) => {
                for &i in step {
                    sink.edit(&EditRecord {
                        seconds,
                        rejected: Some(e.to_string()),
                        ..case_record(i)
                    })?;
                }
                self.rejected += step.len();
            }
        }
        Ok(())
    }

    /// The facts a single-case step's target is optimized with ([`TargetGroup`]): its chunk of
    /// `target_batch` cases ([`super::ahead::chunk_of`]). Only where every target is computed on
    /// the unedited model (the single protocol; D4S in a stream) and a cache keeps the chunk's
    /// targets for their steps.
    fn target_group(
        &self,
        editor: &dyn Editor,
        step: &[usize],
    ) -> Option<(Vec<EditRequest>, usize)> {
        let batch = self.spec.hparams.target_batch;
        let on_w0 = self.spec.protocol == Protocol::Single || editor.targets_on_unedited_model();
        let &[case] = step else {
            return None;
        };
        if batch < 2 || !on_w0 || self.spec.targets.is_none() {
            return None;
        }
        super::ahead::chunk_of(self.cases, case, batch)
    }

    /// Per edit of a step, how many of its targets the cache answered that this run did not
    /// optimize (`reused`: their cost is elsewhere) and how many this run optimized ahead at the
    /// first step of their chunk (`ahead`: their cost is in that step's seconds). `chunk` is the
    /// step's (chunk length, place) when it had one; a step that optimized its chunk marks the
    /// chunk's other cases.
    fn target_sources(
        &mut self,
        step: &[usize],
        chunk: Option<(usize, usize)>,
        hits: u64,
        misses: u64,
    ) -> (usize, usize) {
        let per_edit = hits as usize / step.len();
        let (Some((len, position)), &[case]) = (chunk, step) else {
            return (per_edit, 0);
        };
        let start = case - position;
        if misses > 0 {
            self.ahead
                .extend((start..start + len).filter(|&c| c != case));
        }
        if hits > 0 && self.ahead.remove(&case) {
            (0, 1)
        } else {
            (per_edit, 0)
        }
    }

    fn interrupted(&self) -> bool {
        self.spec
            .interrupt
            .as_ref()
            .is_some_and(|f| f.load(std::sync::atomic::Ordering::SeqCst))
    }
}

fn run_probes(model: &Model, probes: &[ProbeSet]) -> Result<BTreeMap<String, ProbeResult>> {
    probes
        .iter()
        .map(|p| p.run(model, None).map(|r| (p.task().name().to_string(), r)))
        .collect()
}

/// The single-edit protocol: each case edited into the unedited model, evaluated right after
/// its own edit, and the model reset; one final point holds the means of those evaluations.
fn run_single(
    model: &mut Model,
    cases: &[EvalCase],
    spec: BenchRun,
    sink: &mut dyn BenchSink,
) -> Result<BenchOutcome> {
    if spec.resume.is_some() || spec.stop_after.is_some() {
        return Err(Error::Input(
            "checkpoints and --resume are for the sequential and batch protocols (single resets \
             the model after every case)"
                .into(),
        ));
    }
    let mut run = Run::start(model, cases, spec, sink)?;
    let mut evaluations: Vec<Evaluation> = Vec::new();
    for i in 0..cases.len() {
        sink.progress(i, cases.len(), RunPhase::Editing);
        model.reset_edits();
        let mut editor = new_editor(run.spec.hparams.clone());
        run.edit_step(model, editor.as_mut(), &[i], sink)?;
        sink.progress(i + 1, cases.len(), RunPhase::EvaluatingEdit);
        evaluations.push(run.evaluate(model, &[i], true)?);
    }
    sink.progress(cases.len(), cases.len(), RunPhase::FinalEvaluation);
    // Fluency and multi-hop are case-weighted means of the parts; the per-edit metrics pool
    // every part's items, for the item-weighted means and intervals a stream run reports.
    let mut metrics = CaseMetrics::merge(evaluations.iter().map(|e| &e.metrics));
    let mut tallies = Tallies::default();
    let mut outcomes: Vec<CaseOutcome> = Vec::new();
    for e in evaluations {
        tallies.append(e.tallies);
        outcomes.extend(e.cases);
    }
    tallies.fill(&mut metrics);
    let last = run.point_with(model, metrics, cases.len())?;
    sink.cases(&outcomes)?;
    sink.point(&last)?;
    model.reset_edits();
    Ok(BenchOutcome {
        points: vec![last],
        complete: true,
        baseline_reused: run.baseline_reused,
    })
}

/// The steps of a stream protocol: one case each (sequential) or `size` at a time (batch).
fn stream_steps(protocol: Protocol, n: usize) -> Vec<Vec<usize>> {
    match protocol {
        Protocol::Batch { size } => (0..n)
            .collect::<Vec<_>>()
            .chunks(size.min(n).max(1))
            .map(<[usize]>::to_vec)
            .collect(),
        Protocol::Single | Protocol::Sequential => (0..n).map(|i| vec![i]).collect(),
    }
}

/// The sequential and batch protocols: edits accumulate in one model; every `eval_every` edits
/// all edits so far are evaluated, checkpoints are written as the policy says, and the final
/// point evaluates every edit on the final model.
fn run_stream(
    model: &mut Model,
    cases: &[EvalCase],
    spec: BenchRun,
    sink: &mut dyn BenchSink,
) -> Result<BenchOutcome> {
    let steps = stream_steps(spec.protocol, cases.len());
    let mut run = Run::start(model, cases, spec, sink)?;
    let mut editor: Box<dyn Editor> = new_editor(run.spec.hparams.clone());
    let mut points = Vec::new();
    let mut first_step = 0;
    if let Some(ck) = run.spec.resume.take() {
        first_step = resume_from(model, editor.as_mut(), &mut run, &ck, &steps)?;
        run.probs = ck.probs;
        run.rejected = ck.meta.rejected;
    } else {
        // The unedited model is point 0: the baseline of every curve.
        let p = run.first_point(model, sink)?;
        sink.point(&p)?;
        points.push(p);
    }
    let mut done: Vec<usize> = steps[..first_step].concat();
    let mut checkpointed = done.len();
    for (step_no, step) in steps.iter().enumerate().skip(first_step) {
        sink.progress(done.len(), cases.len(), RunPhase::Editing);
        run.edit_step(model, editor.as_mut(), step, sink)?;
        done.extend(step.iter().copied());
        let unfinished = done.len() < cases.len();
        let due = unfinished
            && run
                .spec
                .eval_every
                .is_some_and(|k| done.len().is_multiple_of(k));
        if due {
            sink.progress(done.len(), cases.len(), RunPhase::EvaluatingAll);
            let (p, _) = run.point(model, &done, done.len(), false)?;
            sink.point(&p)?;
            points.push(p);
        }
        let stop = run.interrupted() || run.spec.stop_after.is_some_and(|s| done.len() >= s);
        if let (Some(policy), true) = (run.spec.checkpoint.clone(), unfinished) {
            let every = policy.every.max(1);
            if due || stop || done.len() / every > checkpointed / every {
                sink.progress(done.len(), cases.len(), RunPhase::Checkpointing);
                checkpointed = done.len();
                let ck = take_checkpoint(model, editor.as_ref(), &run, step_no + 1, done.len())?;
                // A checkpoint is insurance: failing to write one (a full disk) is reported and
                // the run goes on with the previous one in place. The next attempt is at the
                // next multiple either way.
                match checkpoint::save(&policy.dir, &ck) {
                    Ok(()) => {}
                    Err(e) if stop => return Err(e),
                    Err(e) => sink.warn(&format!(
                        "could not write the checkpoint after {} edits ({e}); the run goes on, \
                         and the previous checkpoint (if any) stays",
                        done.len()
                    )),
                }
            }
        }
        if stop && unfinished {
            return Ok(BenchOutcome {
                points,
                complete: false,
                baseline_reused: run.baseline_reused,
            });
        }
    }
    sink.progress(cases.len(), cases.len(), RunPhase::FinalEvaluation);
    let (last, outcomes) = run.point(model, &done, done.len(), true)?;
    sink.cases(&outcomes)?;
    sink.point(&last)?;
    points.push(last);
    Ok(BenchOutcome {
        points,
        complete: true,
        baseline_reused: run.baseline_reused,
    })
}

/// Everything a checkpoint holds, taken from the running state after `steps` steps.
fn take_checkpoint(
    model: &Model,
    editor: &dyn Editor,
    run: &Run,
    steps: usize,
    edits: usize,
) -> Result<Checkpoint> {
    let layers = model.touched_layers();
    let weights = layers
        .iter()
        .map(|&l| Ok((l, model.edit_weight(l)?.clone())))
        .collect::<Result<_>>()?;
    let snapshot = editor.snapshot()?;
    Ok(Checkpoint {
        meta: CheckpointMeta {
            format: checkpoint::FORMAT,
            d4s_version: env!("CARGO_PKG_VERSION").into(),
            written: crate::util::now(),
            method: editor.method().name().into(),
            steps,
            edits,
            rejected: run.rejected,
            wall_seconds: run.wall(),
            layers,
            editor_meta: snapshot.meta.clone(),
            identity: run.spec.identity.clone(),
        },
        weights,
        editor: snapshot,
        probs: run.probs.clone(),
    })
}

/// Puts a checkpoint's weights and editor state in place; returns the first step to run.
fn resume_from(
    model: &mut Model,
    editor: &mut dyn Editor,
    run: &mut Run,
    ck: &Checkpoint,
    steps: &[Vec<usize>],
) -> Result<usize> {
    let method = run.spec.hparams.method;
    if ck.meta.method != method.name() {
        return Err(Error::Input(format!(
            "the checkpoint is of a {} run, not {}",
            ck.meta.method,
            method.name()
        )));
    }
    let first = ck.meta.steps;
    let edits: usize = steps.iter().take(first).map(Vec::len).sum();
    if first > steps.len() || edits != ck.meta.edits {
        return Err(Error::Input(format!(
            "the checkpoint is after {} edits in {first} steps, which does not fit this run's {} \
             steps",
            ck.meta.edits,
            steps.len()
        )));
    }
    for (layer, w) in &ck.weights {
        model.set_edit_weight(*layer, w.clone())?;
    }
    let mut cx = EditContext {
        stats: run.spec.stats,
        targets: None,
        target_group: None,
        ctl: EditControl::default(),
    };
    editor.restore(model, &mut cx, &ck.editor)?;
    Ok(first)
}

#[cfg(test)]
mod tests;
