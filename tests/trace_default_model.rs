//! `d4s trace` on the default model (SmolLM2-135M): the command a user runs to choose edit
//! layers, end to end, and the paper's picture on a fact the model knows.

mod common;

use std::process::Command;

use serde_json::Value;

#[test]
fn trace_finds_the_early_subject_site_and_the_late_last_token_site() {
    common::default_model(); // fetched (once) before the binary needs it
    let dir = tempfile::tempdir().unwrap();
    let out = common::run_ok(Command::new(env!("CARGO_BIN_EXE_d4s")).args([
        "trace",
        "--subject",
        "France",
        "--prompt",
        "The capital of {} is the city of",
        "--samples",
        "2",
        "--out",
        dir.path().to_str().unwrap(),
    ]));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("answer      \" Paris\""), "{text}");
    assert!(text.contains("peaks at layer"), "{text}");
    assert!(dir.path().join("trace.svg").exists());
    assert!(dir.path().join("trace.csv").exists());

    let t: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("trace.json")).unwrap()).unwrap();
    let (p_clean, p_corrupt) = (
        t["p_clean"].as_f64().unwrap(),
        t["p_corrupted"].as_f64().unwrap(),
    );
    assert!(p_clean > 0.5, "the model knows the fact: p {p_clean}");
    assert!(
        p_corrupt < 0.5 * p_clean,
        "the noise hides the subject: {p_corrupt}"
    );
    let gap = p_clean - p_corrupt;
    let p = |site: usize, token: usize, layer: usize| {
        t["sites"][site]["probability"][token][layer]
            .as_f64()
            .unwrap()
            - p_corrupt
    };
    let subject = t["subject_tokens"]["end"].as_u64().unwrap() as usize - 1;
    let last = t["tokens"].as_array().unwrap().len() - 1;
    let layers = t["sites"][0]["probability"][0].as_array().unwrap().len();
    assert_eq!(t["sites"][0]["restored"], "hidden_state");
    // Early site: the subject's hidden state at the first layer carries the fact.
    assert!(
        p(0, subject, 0) > 0.5 * gap,
        "early site {}",
        p(0, subject, 0)
    );
    // Late site: the last token's hidden state at the last layer is the whole answer.
    assert!((p(0, last, layers - 1) - gap).abs() < 1e-3 * gap.max(1.0));
    // MLP outputs at the subject matter early and not at the end.
    assert!(p(1, subject, 0) > p(1, subject, layers - 1) + 0.3 * gap);
}

#[test]
fn trace_refuses_a_prompt_without_its_subject() {
    common::default_model();
    let err = common::run_err(Command::new(env!("CARGO_BIN_EXE_d4s")).args([
        "trace",
        "--subject",
        "Germany",
        "--prompt",
        "The capital of France is",
    ]));
    assert!(err.contains("does not contain the subject"), "{err}");
}
