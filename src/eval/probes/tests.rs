//! Whole-task tests on the self-written fixture tree `tests/fixtures/probes/data` (the layout of
//! `../shared/data` in miniature) with a tiny random model.

use std::path::PathBuf;

use super::*;
use crate::model::random::tiny_model;
use crate::model::{Arch, Logits};

fn fixture_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/probes/data")
}

fn cfg() -> ProbeConfig {
    ProbeConfig {
        data_dir: fixture_root(),
        limit: None,
        seed: 1234,
        shots: None,
        max_gen_tokens: 8,
        hellaswag_file: None,
    }
}

/// Log-likelihood of `cont` after `ctx`, one row, every position's logits (no batching, no
/// cache). A context too long for the window keeps its end, leaving room for `room` tokens (the
/// longest continuation of its group, as the engine does).
fn plain_ll(model: &Model, ctx: &[u32], cont: &[u32], room: usize) -> f64 {
    let window = model.config.max_positions;
    let keep = ctx.len().min(window - room);
    let row: Vec<u32> = ctx[ctx.len() - keep..]
        .iter()
        .chain(cont)
        .copied()
        .collect();
    let logits = model
        .logits(std::slice::from_ref(&row), Logits::All)
        .unwrap();
    let lsm = crate::model::layers::log_softmax_last(&logits.squeeze(0).unwrap())
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    (keep..row.len())
        .map(|p| f64::from(lsm[p - 1][row[p] as usize]))
        .sum()
}

#[test]
fn task_names_parse_and_round_trip() {
    for t in Task::ALL {
        assert_eq!(t.name().parse::<Task>().unwrap(), t);
    }
    for (s, t) in [
        ("arc", Task::ArcChallenge),
        ("ARC-Challenge", Task::ArcChallenge),
        ("arc-easy", Task::ArcEasy),
        ("truthfulqa", Task::TruthfulQa),
        ("truthfulqa_mc", Task::TruthfulQa),
        (" gsm8k ", Task::Gsm8k),
    ] {
        assert_eq!(s.parse::<Task>().unwrap(), t, "{s}");
    }
    let err = "piqa".parse::<Task>().unwrap_err().to_string();
    for name in [
        "arc_challenge",
        "arc_easy",
        "mmlu",
        "truthfulqa",
        "winogrande",
        "gsm8k",
        "hellaswag",
    ] {
        assert!(err.contains(name), "{err}");
    }
}

#[test]
fn defaults_and_headlines() {
    let c = ProbeConfig::default();
    assert_eq!((c.limit, c.seed, c.shots), (Some(100), 1234, None));
    assert!(c.max_gen_tokens > 0);
    let r = ProbeResult {
        task: "arc_easy".into(),
        metrics: [("acc".to_string(), 0.4), ("acc_norm".to_string(), 0.5)].into(),
        intervals: Default::default(),
        n: 10,
        seconds: 1.0,
        shots: 0,
    };
    assert_eq!(r.headline(), ("acc_norm".to_string(), 0.5));
    assert_eq!(r.headline_interval(), None);
    assert_eq!(r.chance(), 0.25);
    assert_eq!(chance_level(Task::Winogrande), 0.5);
    let json = serde_json::to_string(&r).unwrap();
    assert_eq!(serde_json::from_str::<ProbeResult>(&json).unwrap(), r);
}

#[test]
fn missing_data_is_an_input_error_naming_the_path() {
    let model = tiny_model(Arch::Llama, 1);
    let empty = tempfile::tempdir().unwrap();
    let nowhere = ProbeConfig {
        data_dir: empty.path().join("nowhere"),
        ..cfg()
    };
    for task in Task::ALL {
        let err = prepare(task, &nowhere, &model).unwrap_err();
        assert!(matches!(err, Error::Input(_)), "{task}: {err:?}");
        assert!(err.to_string().contains("nowhere"), "{task}: {err}");
    }
    // Shots ask for a pool file that is absent: named too.
    let dir = tempfile::tempdir().unwrap();
    let easy = dir.path().join("arc/ARC-Easy");
    std::fs::create_dir_all(&easy).unwrap();
    std::fs::copy(
        fixture_root().join("arc/ARC-Easy/ARC-Easy-Test.jsonl"),
        easy.join("ARC-Easy-Test.jsonl"),
    )
    .unwrap();
    let no_pool = ProbeConfig {
        data_dir: dir.path().to_path_buf(),
        shots: Some(1),
        ..cfg()
    };
    let err = prepare(Task::ArcEasy, &no_pool, &model).unwrap_err();
    assert!(err.to_string().contains("ARC-Easy-Dev.jsonl"), "{err}");
    let zero = ProbeConfig {
        shots: Some(0),
        ..no_pool
    };
    assert_eq!(prepare(Task::ArcEasy, &zero, &model).unwrap().len(), 5);
}

#[test]
fn every_task_runs_on_fixtures_with_metrics_in_range() {
    let model = tiny_model(Arch::Llama, 2);
    let want: [(Task, usize, &[&str]); 7] = [
        (Task::ArcChallenge, 3, &["acc", "acc_norm"]),
        (Task::ArcEasy, 5, &["acc", "acc_norm"]),
        (Task::Mmlu, 5, &["acc"]),
        (Task::TruthfulQa, 3, &["mc1", "mc2"]),
        (Task::Winogrande, 5, &["acc"]),
        (
            Task::Gsm8k,
            3,
            &["exact_match_flexible", "exact_match_strict"],
        ),
        (Task::Hellaswag, 4, &["acc", "acc_norm"]),
    ];
    for (task, n, metrics) in want {
        let set = prepare(task, &cfg(), &model).unwrap();
        assert_eq!((set.task(), set.len()), (task, n));
        let r = set.run(&model, None).unwrap();
        assert_eq!(r.task, task.name());
        assert_eq!(r.n, n);
        assert_eq!(
            r.metrics.keys().map(String::as_str).collect::<Vec<_>>(),
            metrics,
            "{task}"
        );
        assert!(
            r.metrics.values().all(|v| (0.0..=1.0).contains(v)),
            "{task}: {:?}",
            r.metrics
        );
        assert_eq!(
            set.run(&model, None).unwrap().metrics,
            r.metrics,
            "{task}: deterministic"
        );
        assert!(!r.headline().1.is_nan());
    }
}

#[test]
fn limit_shots_and_cancel() {
    let model = tiny_model(Arch::Llama, 2);
    let two = ProbeConfig {
        limit: Some(2),
        ..cfg()
    };
    assert_eq!(prepare(Task::ArcEasy, &two, &model).unwrap().len(), 2);
    // WinoGrande takes its shots from its own file and never evaluates them.
    let shots = ProbeConfig {
        shots: Some(2),
        ..cfg()
    };
    let set = prepare(Task::Winogrande, &shots, &model).unwrap();
    assert_eq!((set.len(), set.shots()), (3, 2));
    assert_eq!(prepare(Task::Mmlu, &shots, &model).unwrap().shots(), 2);
    assert_eq!(
        prepare(Task::TruthfulQa, &shots, &model).unwrap().shots(),
        0
    );
    let stop = AtomicBool::new(true);
    let set = prepare(Task::ArcEasy, &cfg(), &model).unwrap();
    assert!(matches!(
        set.run(&model, Some(&stop)),
        Err(Error::Cancelled)
    ));
}

/// The ARC metrics equal those computed by hand from one-row log-likelihoods of the prompt the
/// task builds: "Question: …\nAnswer:" + " " + choice.
#[test]
fn arc_metrics_match_a_hand_computation() {
    let model = tiny_model(Arch::Llama, 4);
    let docs = arc::load(&fixture_root().join("arc/ARC-Easy/ARC-Easy-Test.jsonl")).unwrap();
    let (mut acc, mut acc_norm) = (0.0, 0.0);
    for d in &docs {
        let ctx = model.encode(&d.context).unwrap();
        let lls: Vec<f64> = d
            .choices
            .iter()
            .map(|c| plain_ll(&model, &ctx, &model.encode(&format!(" {c}")).unwrap(), 0))
            .collect();
        let best = scoring::argmax(&lls);
        let normed: Vec<f64> = lls
            .iter()
            .zip(&d.choices)
            .map(|(l, c)| l / c.len() as f64)
            .collect();
        acc += f64::from(u8::from(best == d.gold));
        acc_norm += f64::from(u8::from(scoring::argmax(&normed) == d.gold));
    }
    let r = prepare(Task::ArcEasy, &cfg(), &model)
        .unwrap()
        .run(&model, None)
        .unwrap();
    assert_eq!(r.metrics["acc"], acc / docs.len() as f64);
    assert_eq!(r.metrics["acc_norm"], acc_norm / docs.len() as f64);
}

/// MMLU prompts carry the subject description and the first dev questions as shots.
#[test]
fn mmlu_prompt_with_shots() {
    let model = tiny_model(Arch::Llama, 1);
    let c = ProbeConfig {
        shots: Some(1),
        ..cfg()
    };
    let set = prepare(Task::Mmlu, &c, &model).unwrap();
    let Items::Mc(items) = &set.items else {
        panic!()
    };
    let texts: Vec<String> = items
        .iter()
        .map(|i| model.decode(&i.groups[0].ctx).unwrap())
        .collect();
    let want = "The following are multiple choice questions (with answers) about anatomy.\n\n\
                Skin is an?\nA. organ\nB. bone\nC. cell\nD. gas\nAnswer: A\n\n\
                Which organ pumps blood?\nA. lung\nB. heart\nC. liver\nD. skin\nAnswer:";
    // The tiny model's window is 128 tokens (bytes), so long prompts lose their start; compare
    // the untruncated token count against the prompt text instead.
    assert!(
        texts.iter().any(|t| want.ends_with(t.as_str())),
        "{texts:#?}"
    );
    assert!(items.iter().all(|i| i.groups[0]
        .conts
        .iter()
        .map(|c| model.decode(c).unwrap())
        .eq([" A", " B", " C", " D"])));
}

/// TruthfulQA mc2 from the run equals the mass computed from one-row log-likelihoods.
#[test]
fn truthfulqa_run_matches_hand_mass() {
    let model = tiny_model(Arch::Llama, 6);
    let qs = truthfulqa::load(&fixture_root().join("truthfulqa/v1_2021/mc_task.json")).unwrap();
    let mut mc2 = 0.0;
    for q in &qs {
        let ctx = model.encode(&truthfulqa::context(&q.question)).unwrap();
        let answers = q.mc1_targets.0.iter().chain(&q.mc2_targets.0);
        let room = answers
            .map(|(a, _)| model.encode(&format!(" {a}")).unwrap().len())
            .max()
            .unwrap();
        let lls: Vec<f64> = q
            .mc2_targets
            .0
            .iter()
            .map(|(a, _)| plain_ll(&model, &ctx, &model.encode(&format!(" {a}")).unwrap(), room))
            .collect();
        let flags: Vec<bool> = q.mc2_targets.0.iter().map(|(_, t)| *t).collect();
        mc2 += scoring::true_mass(&lls, &flags);
    }
    let r = prepare(Task::TruthfulQa, &cfg(), &model)
        .unwrap()
        .run(&model, None)
        .unwrap();
    let mc2 = mc2 / qs.len() as f64;
    assert!(
        (r.metrics["mc2"] - mc2).abs() < 1e-5,
        "{} vs {mc2}",
        r.metrics["mc2"]
    );
}
