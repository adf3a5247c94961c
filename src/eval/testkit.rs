//! Shared pieces of the evaluation tests: tiny cases, fast hyperparameters, a statistics cache
//! in a temporary folder and an in-memory sink.

use std::path::Path;

use crate::edit::{CorpusSpec, EditRequest, HParams, Method, Probe, StatsCache, StatsConfig};
use crate::error::Result;
use crate::eval::bench::checkpoint::{Checkpoint, CheckpointPolicy};
use crate::eval::bench::records::{DataRecord, StatsRecord};
use crate::eval::bench::{
    BenchRun, BenchSink, CaseMetrics, CaseOutcome, EditRecord, EvalPoint, GenSchedule, Protocol,
    RunConfig,
};
use crate::eval::datasets::EvalCase;
use crate::eval::probes::ProbeConfig;
use crate::model::config::Arch;
use crate::model::random::tiny_config;
use crate::model::ModelRecord;

#[derive(Default)]
pub struct Memory {
    pub points: Vec<EvalPoint>,
    pub records: Vec<EditRecord>,
    pub warnings: Vec<String>,
    /// The outcomes of the final point, per case.
    pub cases: Vec<CaseOutcome>,
}

impl BenchSink for Memory {
    fn edit(&mut self, record: &EditRecord) -> Result<()> {
        self.records.push(record.clone());
        Ok(())
    }
    fn point(&mut self, point: &EvalPoint) -> Result<()> {
        self.points.push(point.clone());
        Ok(())
    }
    fn warn(&mut self, message: &str) {
        self.warnings.push(message.to_string());
    }
    fn cases(&mut self, cases: &[CaseOutcome]) -> Result<()> {
        self.cases = cases.to_vec();
        Ok(())
    }
}

pub fn cases() -> Vec<EvalCase> {
    let facts = [
        (
            "Eiffel Tower",
            "The Eiffel Tower is located in",
            "Rome",
            "Paris",
        ),
        (
            "Danielle",
            "The mother tongue of Danielle is",
            "English",
            "French",
        ),
        ("Apple", "Apple was founded by", "Bill", "Steve"),
        ("Louvre", "The Louvre is in the city of", "Tokyo", "Paris"),
        ("Nokia", "Nokia was founded in", "Spain", "Finland"),
    ];
    facts
        .iter()
        .enumerate()
        .map(|(i, (s, p, t, g))| {
            let mut r = EditRequest::new(s, p, t);
            r.ground_truth = Some(g.to_string());
            r.paraphrases = vec![format!("In short, {}", p.to_lowercase())];
            r.neighbors = vec![Probe {
                prompt: "The capital of Italy is".into(),
                answer: Some(" Rome".into()),
            }];
            EvalCase::single(r, format!("tiny#{i}"))
        })
        .collect()
}

/// One layer for the single-layer methods, two for the others.
pub fn layers_for(method: Method) -> Vec<usize> {
    match method {
        Method::Rome | Method::FtL | Method::FtM | Method::Grace => vec![1],
        _ => vec![0, 1],
    }
}

pub fn hparams(method: Method) -> HParams {
    let mut hp = HParams::defaults(method, &tiny_config(Arch::Llama));
    hp.layers = layers_for(method);
    hp.context_templates = Some(vec!["{}".into(), "Hello there. {}".into()]);
    hp.v_num_grad_steps = 4;
    hp.num_steps = 3;
    hp.n_iter = 3;
    hp.mom2_update_weight = 10.0;
    hp
}

pub fn stats(dir: &Path) -> StatsCache {
    let config = StatsConfig {
        corpus: CorpusSpec::ModelSamples { seed: 3 },
        tokens: Some(1200),
        seq_len: 32,
    };
    StatsCache::with_dir(config, dir.to_path_buf())
}

pub fn spec<'a>(
    method: Method,
    stats: &'a mut StatsCache,
    checkpoint: Option<CheckpointPolicy>,
    resume: Option<Checkpoint>,
    stop_after: Option<usize>,
) -> BenchRun<'a> {
    BenchRun {
        hparams: hparams(method),
        protocol: Protocol::Sequential,
        eval_every: Some(2),
        eval_sample: None,
        probes: &[],
        multihop: false,
        generation: GenSchedule::Off,
        stats,
        targets: None,
        checkpoint,
        identity: serde_json::json!({ "method": method.name() }),
        resume,
        stop_after,
        interrupt: None,
        baseline: None,
    }
}

/// A run config of a sequential D4S run over 5 cases (for the run-folder tests).
pub fn run_config() -> RunConfig {
    RunConfig {
        d4s_version: "test".into(),
        started: "now".into(),
        model: ModelRecord {
            spec: "x".into(),
            name: "x".into(),
            sha256: "ab".into(),
            precision: crate::model::Precision::F32,
        },
        method: "d4s".into(),
        hparams: serde_json::json!({"layers": [1]}),
        data: DataRecord {
            path: "/a/cf.json".into(),
            sha256: "cd".into(),
            kind: "counterfact".into(),
            n: 5,
            skipped: 0,
            mqd: None,
            order_seed: None,
        },
        protocol: Protocol::Sequential,
        eval_every: Some(2),
        eval_sample: None,
        probes: vec![],
        generation: Some(GenSchedule::Ends),
        chat_template: None,
        metric_protocols: crate::eval::bench::records::metric_protocols(),
        probe_config: ProbeConfig {
            data_dir: "/a".into(),
            limit: Some(10),
            ..Default::default()
        },
        stats: StatsRecord {
            config: StatsConfig {
                corpus: CorpusSpec::ModelSamples { seed: 3 },
                tokens: Some(1200),
                seq_len: 32,
            },
            corpus_id: "samples".into(),
        },
        seed: 42,
        threads: 1,
        command: "d4s bench".into(),
        resumed: vec![],
    }
}

/// A point after `edits` edits with no metrics.
pub fn point(edits: usize) -> EvalPoint {
    EvalPoint {
        edits,
        metrics: CaseMetrics::default(),
        probes: Default::default(),
        layers: vec![],
        edit_prob: Some(0.1 * edits as f64),
        rejected: 0,
        wall_seconds: edits as f64,
        retention: vec![],
    }
}

/// An applied edit's record.
pub fn record(index: usize) -> EditRecord {
    EditRecord {
        index,
        origin: format!("cf#{index}"),
        prob_initial: Some(0.01),
        prob_final: Some(0.9),
        seconds: 1.0,
        cpu_seconds: None,
        timings: None,
        rss_bytes: None,
        rejected: None,
        targets_reused: 0,
        targets_ahead: 0,
        target_ppl: None,
        target_tokens: None,
        target_new: vec![],
        projector_rank: vec![],
        prob_post: None,
    }
}

/// A MEMIT benchmark over `cases` on the tiny Llama model (seed 21), with `configure` applied to
/// the sequential run's settings: the model afterwards and what the run wrote.
pub fn memit_bench(
    cases: &[EvalCase],
    configure: impl FnOnce(&mut BenchRun),
) -> (crate::model::Model, Memory) {
    let stats_dir = tempfile::tempdir().expect("a temporary folder");
    let mut st = stats(stats_dir.path());
    let mut model = crate::model::random::tiny_model(Arch::Llama, 21);
    let mut sink = Memory::default();
    let mut run = spec(Method::Memit, &mut st, None, None, None);
    configure(&mut run);
    crate::eval::bench::run(&mut model, cases, run, &mut sink).expect("the run");
    (model, sink)
}
