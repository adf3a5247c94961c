//! The downstream probes on the unedited default model (SmolLM2-135M) and the real data in
//! `../shared/data`: ARC-Easy beats chance, the other tasks run and stay in range, and the
//! cached scoring engine agrees with plain one-row forwards on the real model. Each test prints
//! its timing; the timed tests take turns so that they do not share the CPU.

mod common;

use std::sync::Mutex;

use d4s::eval::probes::scoring::{group, loglikelihoods, EngineOptions};
use d4s::eval::probes::{chance_level, prepare, ProbeConfig, ProbeResult, Task};
use d4s::model::{Forward, Input, Logits, Model};

/// Serializes the timed tests (the machine has two cores).
static TURN: Mutex<()> = Mutex::new(());

/// The data root, if every file a task reads is present (skips, or fails under CI, otherwise).
fn data_for(files: &[&str]) -> Option<ProbeConfig> {
    for f in files {
        common::shared(&format!("data/{f}"))?;
    }
    Some(ProbeConfig {
        data_dir: common::shared_dir().join("data"),
        ..Default::default()
    })
}

fn run(task: Task, cfg: &ProbeConfig) -> ProbeResult {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let model = common::default_model();
    let t = std::time::Instant::now();
    let set = prepare(task, cfg, model).unwrap_or_else(|e| panic!("{task}: {e}"));
    let prep = t.elapsed().as_secs_f64();
    let r = set
        .run(model, None)
        .unwrap_or_else(|e| panic!("{task}: {e}"));
    println!(
        "{task}: n={} shots={} prepare {prep:.2}s run {:.1}s metrics {:?}",
        r.n, r.shots, r.seconds, r.metrics
    );
    assert_eq!(r.n, set.len());
    assert!(
        r.metrics.values().all(|v| (0.0..=1.0).contains(v)),
        "{task}: {:?}",
        r.metrics
    );
    r
}

#[test]
fn arc_easy_beats_chance() {
    let Some(cfg) = data_for(&["arc/ARC-Easy/ARC-Easy-Test.jsonl"]) else {
        return;
    };
    let r = run(Task::ArcEasy, &cfg);
    assert_eq!((r.n, r.shots), (100, 0));
    let (metric, value) = r.headline();
    assert_eq!(metric, "acc_norm");
    // Measured 0.47 (acc 0.52) on the default seeded subset; chance is 0.25.
    assert!(
        value >= 0.35,
        "ARC-Easy acc_norm {value} is not clearly above chance"
    );
    assert!(
        r.metrics["acc"] >= 0.35,
        "ARC-Easy acc {}",
        r.metrics["acc"]
    );
    assert_eq!(chance_level(Task::ArcEasy), 0.25);
}

#[test]
fn mmlu_runs_in_range() {
    let Some(cfg) = data_for(&["mmlu/data/test/abstract_algebra_test.csv"]) else {
        return;
    };
    let r = run(
        Task::Mmlu,
        &ProbeConfig {
            limit: Some(40),
            ..cfg
        },
    );
    assert_eq!((r.n, r.headline().0.as_str()), (40, "acc"));
}

#[test]
fn truthfulqa_runs_in_range() {
    let Some(cfg) = data_for(&["truthfulqa/v1_2021/mc_task.json"]) else {
        return;
    };
    let r = run(
        Task::TruthfulQa,
        &ProbeConfig {
            limit: Some(40),
            ..cfg
        },
    );
    assert_eq!(r.n, 40);
    assert!(r.metrics.contains_key("mc1") && r.metrics.contains_key("mc2"));
    // MC2 is a probability mass, never exactly 0 or 1 for a real model.
    let mc2 = r.metrics["mc2"];
    assert!(mc2 > 0.0 && mc2 < 1.0, "{mc2}");
}

#[test]
fn winogrande_runs_in_range() {
    let Some(cfg) = data_for(&["winogrande/winogrande_1.1/dev.jsonl"]) else {
        return;
    };
    let r = run(
        Task::Winogrande,
        &ProbeConfig {
            limit: Some(40),
            ..cfg
        },
    );
    assert_eq!((r.n, r.headline().0.as_str()), (40, "acc"));
}

#[test]
fn gsm8k_generates_on_a_few_items() {
    let Some(cfg) = data_for(&["gsm8k/test.jsonl", "gsm8k/train.jsonl"]) else {
        return;
    };
    // A quarter of the limit: 3 problems, 3-shot.
    let r = run(
        Task::Gsm8k,
        &ProbeConfig {
            limit: Some(12),
            ..cfg
        },
    );
    assert_eq!((r.n, r.shots), (3, 3));
    assert!(r.metrics.contains_key("exact_match_strict"));
    assert_eq!(r.headline().0, "exact_match_flexible");
}

#[test]
fn missing_hellaswag_names_the_file() {
    let cfg = ProbeConfig {
        hellaswag_file: Some("/nonexistent/hellaswag_val.jsonl".into()),
        ..Default::default()
    };
    let err = prepare(Task::Hellaswag, &cfg, common::default_model()).unwrap_err();
    assert!(
        err.to_string().contains("/nonexistent/hellaswag_val.jsonl"),
        "{err}"
    );
}

/// One row, every position's logits: the plain reference for the engine.
fn plain_ll(model: &Model, ctx: &[u32], cont: &[u32]) -> f64 {
    let row: Vec<u32> = ctx.iter().chain(cont).copied().collect();
    let out = model
        .forward(
            Input::Tokens(std::slice::from_ref(&row)),
            &Forward {
                logits: Logits::All,
                ..Default::default()
            },
        )
        .unwrap();
    let logits = out.logits().unwrap().squeeze(0).unwrap();
    let lsm = d4s::model::layers::log_softmax_last(&logits)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    (ctx.len()..row.len())
        .map(|p| f64::from(lsm[p - 1][row[p] as usize]))
        .sum()
}

/// The shared-prefix cache, batching and stage split give the same log-likelihoods as plain
/// forwards on the real model (GQA, RoPE, 30 layers), and MMLU's letters are single tokens.
#[test]
fn engine_matches_plain_forwards_on_the_default_model() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let model = common::default_model();
    let preamble = d4s::eval::probes::truthfulqa::QA_PROMPT;
    let answers = |xs: &[&str]| xs.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let groups = vec![
        group(
            model,
            &format!("{preamble}\n\nQ: What happens if you eat a pomegranate?\nA:"),
            &answers(&[
                "Nothing in particular happens.",
                "You will have to spend winter in the underworld.",
                "You die.",
            ]),
        )
        .unwrap(),
        group(
            model,
            &format!("{preamble}\n\nQ: Is the sky blue?\nA:"),
            &answers(&["Yes.", "No, it is green."]),
        )
        .unwrap(),
        group(
            model,
            "Question: Which gas do plants take in?\nAnswer:",
            &answers(&["carbon dioxide", "helium"]),
        )
        .unwrap(),
    ];
    let t = std::time::Instant::now();
    let got = loglikelihoods(model, &groups, &EngineOptions::default(), None).unwrap();
    println!(
        "engine: {:.2}s for {} continuations",
        t.elapsed().as_secs_f64(),
        got.iter().map(Vec::len).sum::<usize>()
    );
    for (g, lls) in groups.iter().zip(&got) {
        for (cont, &ll) in g.conts.iter().zip(lls) {
            let want = plain_ll(model, &g.ctx, cont);
            assert!(
                (ll - want).abs() < 2e-3 * want.abs().max(1.0),
                "{ll} vs {want}"
            );
        }
    }
    let mmlu = group(
        model,
        "What is 2+2?\nA. 3\nB. 4\nC. 5\nD. 6\nAnswer:",
        &answers(&["A", "B", "C", "D"]),
    )
    .unwrap();
    assert!(mmlu.conts.iter().all(|c| c.len() == 1), "{:?}", mmlu.conts);
    assert_eq!(model.decode(&mmlu.conts[1]).unwrap(), " B");
}

/// Every task at the default settings, with timings (`cargo test --release --test
/// probes_default_model -- --ignored --nocapture`).
#[test]
#[ignore = "slow: runs every task at its default size"]
fn default_settings_timings() {
    let Some(cfg) = data_for(&["arc", "mmlu", "truthfulqa", "winogrande", "gsm8k"]) else {
        return;
    };
    for task in Task::ALL.into_iter().filter(|&t| t != Task::Hellaswag) {
        let r = run(task, &cfg);
        let (metric, value) = r.headline();
        println!(
            "  headline {metric} = {value:.3} (chance {:.3})",
            chance_level(task)
        );
    }
}
