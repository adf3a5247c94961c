use super::*;

/// A run folder written by d4s 0.1.0 before the metrics were typed (`d4s bench --method
/// ft-l --data counterfact --n 2 --eval-every 1 --probes arc_easy --probe-items 5` on the
/// default model, commit 5dbb259).
const EARLIER: [(&str, &str); 4] = [
    (CONFIG_FILE, include_str!("../testdata/config-v0.1.0.json")),
    (
        METRICS_FILE,
        include_str!("../testdata/metrics-v0.1.0.jsonl"),
    ),
    (EDITS_FILE, include_str!("../testdata/edits-v0.1.0.jsonl")),
    (CASES_FILE, include_str!("../testdata/cases-v0.1.0.jsonl")),
];

/// Each line parsed as `T` and written again: the same bytes.
fn round_trips<T: Serialize + serde::de::DeserializeOwned>(text: &str) -> Vec<T> {
    text.lines()
        .filter(|l| !l.is_empty())
        .map(|line| {
            let v: T = serde_json::from_str(line).unwrap();
            assert_eq!(serde_json::to_string(&v).unwrap(), line);
            v
        })
        .collect()
}

#[test]
fn a_run_folder_written_before_the_typed_records_loads_and_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in EARLIER {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let run = load_run(dir.path()).unwrap();
    assert_eq!(run.points.len(), 3);
    assert_eq!(run.records.len(), 2);
    let first = &run.points[0].metrics;
    assert_eq!(first.token.efficacy, Some(0.0));
    assert_eq!(first.token.specificity, Some(1.0));
    assert_eq!(first.prob.es, Some(0.5));
    assert_eq!(first.token.portability, None);
    assert_eq!(
        Metric::Prob(ProbMetric::Ns).of(first),
        first.prob.ns,
        "the typed accessor reads the same field"
    );
    assert_eq!(run.points[2].layers[0].w0_l1_mean, None);
    assert_eq!(run.config.model.sha256.len(), 64);
    assert_eq!(run.config.protocol, Protocol::Sequential);
    assert_eq!(run.config.planned_edits(), 2);
    round_trips::<EvalPoint>(EARLIER[1].1);
    round_trips::<EditRecord>(EARLIER[2].1);
    let cases = round_trips::<CaseOutcome>(EARLIER[3].1);
    assert_eq!(cases.len(), 2);
    // The identity a resume compares is the one the earlier version computed from the
    // same JSON: the data's hash without its path, the probes' settings without the folder.
    let raw: serde_json::Value = serde_json::from_str(EARLIER[0].1).unwrap();
    let id = run.config.identity();
    assert_eq!(id["data"]["sha256"], raw["data"]["sha256"]);
    assert!(id["data"].get("path").is_none());
    assert!(id["probe_config"].get("data_dir").is_none());
    assert_eq!(id["hparams"], raw["hparams"]);
    assert_eq!(id["stats"], raw["stats"]);
}

#[test]
fn merged_means_weigh_each_part_by_its_cases() {
    let part = |cases: usize, eff: f64, es: Option<f64>| CaseMetrics {
        token: TokenMetrics {
            efficacy: Some(eff),
            ..Default::default()
        },
        prob: ProbMetrics {
            es,
            ..Default::default()
        },
        cases,
        ..Default::default()
    };
    let m = CaseMetrics::merge(&[part(1, 1.0, Some(1.0)), part(3, 0.0, None)]);
    assert_eq!(m.cases, 4);
    assert_eq!(m.token.efficacy, Some(0.25));
    // A metric only one part has is that part's.
    assert_eq!(m.prob.es, Some(1.0));
    assert_eq!(m.token.paraphrase, None);
}

#[test]
fn retention_splits_the_edits_into_tenths_by_age() {
    let outcome = |i: usize| CaseOutcome {
        index: i,
        origin: String::new(),
        requests: vec![],
        token: TokenMetrics {
            efficacy: Some(if i < 5 { 0.0 } else { 1.0 }),
            paraphrase: i.is_multiple_of(2).then_some(1.0),
            ..Default::default()
        },
        prob: Default::default(),
        gen: Default::default(),
        answers: vec![],
        changed_neighbours: vec![],
    };
    let outcomes: Vec<CaseOutcome> = (0..25).map(outcome).collect();
    let deciles = retention_by_age(&outcomes);
    assert_eq!(deciles.len(), 10);
    assert_eq!(deciles.iter().map(|d| d.edits).sum::<usize>(), 25);
    // Contiguous, oldest first.
    for w in deciles.windows(2) {
        assert_eq!(w[0].first + w[0].edits, w[1].first);
    }
    // The five oldest edits are the lost ones: the first two tenths (edits 0–4).
    assert_eq!((deciles[0].first, deciles[0].edits), (0, 2));
    assert_eq!(deciles[0].efficacy, Some(0.0));
    assert_eq!(deciles[9].efficacy, Some(1.0));
    // Means over the decile's cases that have the metric.
    assert_eq!(deciles[0].paraphrase, Some(1.0));
    // Fewer than ten edits: one per non-empty tenth.
    let few = retention_by_age(&outcomes[..3]);
    assert_eq!(few.iter().map(|d| d.edits).collect::<Vec<_>>(), [1, 1, 1]);
    assert!(retention_by_age(&[]).is_empty());
}
