//! Shared pieces of the evaluation tests: tiny cases, fast hyperparameters, a statistics cache
//! in a temporary folder and an in-memory sink.

use std::path::Path;

use crate::edit::{CorpusSpec, EditRequest, HParams, Method, Probe, StatsCache, StatsConfig};
use crate::error::Result;
use crate::eval::bench::{BenchRun, BenchSink, CaseOutcome, EditRecord, EvalPoint, Protocol};
use crate::eval::checkpoint::{Checkpoint, CheckpointPolicy};
use crate::eval::datasets::EvalCase;
use crate::model::config::Arch;
use crate::model::random::tiny_config;

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

pub fn hparams(method: Method) -> HParams {
    let mut hp = HParams::defaults(method, &tiny_config(Arch::Llama));
    hp.layers = match method {
        Method::Rome | Method::FtL | Method::FtM | Method::Grace => vec![1],
        _ => vec![0, 1],
    };
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
        probes: &[],
        multihop: false,
        stats,
        targets: None,
        checkpoint,
        identity: serde_json::json!({ "method": method.name() }),
        resume,
        stop_after,
        interrupt: None,
    }
}
