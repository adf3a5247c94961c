//! Sessions on the default model: bit-identical replay, crash + resume, corrupt inputs and
//! export round trips. Edits use few optimization steps: these tests check determinism and
//! bookkeeping, not edit quality.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use d4s::edit::request::read_jsonl;
use d4s::edit::{EditControl, HParams, Method, StatsCache, StatsConfig};
use d4s::model::{load, Forward, Input, Logits, ModelSpec};
use d4s::session::journal::{self, Event};
use d4s::session::Runner;

fn facts() -> Vec<d4s::edit::EditRequest> {
    read_jsonl(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/facts20.jsonl"),
        true,
    )
    .unwrap()
    .0
}

fn fast_hparams(method: Method, model: &d4s::model::Model) -> HParams {
    let mut hp = HParams::defaults(method, &model.config);
    // Two steps: Adam's second step reads the moments of the first, so the whole optimizer
    // state is exercised at a fraction of the 25 steps' time.
    hp.v_num_grad_steps = 2;
    hp
}

fn load_default() -> d4s::model::Model {
    load::load(&ModelSpec::Default, &Default::default()).expect("default model")
}

fn last_sha(events: &[Event]) -> String {
    events
        .iter()
        .rev()
        .find_map(|e| match e {
            Event::Applied { weights_sha256, .. } => Some(weights_sha256.clone()),
            _ => None,
        })
        .expect("an applied step")
}

/// Journals 20 edits with `method`, replays the journal on a fresh copy of the model and
/// compares every step's weights and the final ones.
fn replay_of_20_edits_is_bit_identical(method: Method) {
    replay_of_20_edits_is_bit_identical_with(method, |_| {});
}

/// [`replay_of_20_edits_is_bit_identical`] with hyperparameters changed by `tweak`.
fn replay_of_20_edits_is_bit_identical_with(method: Method, tweak: fn(&mut HParams)) {
    let _ = common::default_model();
    let dir = tempfile::tempdir().unwrap();
    let model = load_default();
    let mut hp = fast_hparams(method, &model);
    tweak(&mut hp);
    let mut runner = Runner::new(model, hp.clone(), StatsCache::new(StatsConfig::default()));
    runner.start_session(dir.path(), method.name()).unwrap();
    for r in facts() {
        runner
            .apply(std::slice::from_ref(&r), EditControl::default())
            .unwrap();
    }
    let layers = hp.layers.clone();
    let original = d4s::session::replay::weights_sha256(&runner.model, &layers).unwrap();
    let loaded =
        journal::read_journal(&dir.path().join(method.name()).join("journal.jsonl")).unwrap();
    assert_eq!(d4s::session::replay::live_steps(&loaded.events).len(), 20);

    let mut replayed = Runner::new(load_default(), hp, StatsCache::new(StatsConfig::default()));
    let report = replayed
        .replay(&loaded.events, None, true, |_| Ok(()))
        .unwrap();
    assert_eq!(report.steps, 20);
    assert!(
        report.mismatches.is_empty(),
        "{method}: steps {:?} differ",
        report.mismatches
    );
    assert_eq!(
        d4s::session::replay::weights_sha256(&replayed.model, &layers).unwrap(),
        original,
        "{method}: final weights"
    );
}

// One test per method, so the test harness runs them side by side.
#[test]
fn replay_of_20_d4s_edits_is_bit_identical() {
    replay_of_20_edits_is_bit_identical(Method::D4s);
}

#[test]
fn replay_of_20_memit_edits_is_bit_identical() {
    replay_of_20_edits_is_bit_identical(Method::Memit);
}

#[test]
fn replay_of_20_rome_edits_is_bit_identical() {
    replay_of_20_edits_is_bit_identical(Method::Rome);
}

/// UltraEdit's lifelong statistics are rebuilt by the replayed steps.
#[test]
fn replay_of_20_ultraedit_edits_is_bit_identical() {
    replay_of_20_edits_is_bit_identical(Method::UltraEdit);
}

#[test]
fn replay_of_20_encore_edits_is_bit_identical() {
    replay_of_20_edits_is_bit_identical(Method::Encore);
}

/// NAS's reference norm is measured again by the replaying editor, to the same bits.
#[test]
fn replay_of_20_norm_anchored_memit_edits_is_bit_identical() {
    replay_of_20_edits_is_bit_identical_with(Method::Memit, |hp| hp.norm_anchor = true);
}

fn journal_applied(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("\"event\":\"applied\""))
        .count()
}

#[test]
fn kill_9_mid_session_then_resume_gives_identical_weights() {
    let _ = common::default_model();
    let bin = env!("CARGO_BIN_EXE_d4s");
    let facts_file = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/facts20.jsonl");
    let work = tempfile::tempdir().unwrap();
    let run = |name: &str| {
        Command::new(bin)
            .current_dir(work.path())
            .args([
                "edit",
                "--method",
                "d4s",
                "--set",
                "v_num_grad_steps=2",
                "--sequential",
                "--file",
            ])
            .arg(&facts_file)
            .args(["--session", name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    // The reference: an uninterrupted run.
    assert!(run("whole").wait().unwrap().success());
    let whole = journal::read_journal(&work.path().join("sessions/whole/journal.jsonl")).unwrap();
    // The crash: kill -9 once a few edits have landed (mid-edit, most likely).
    let mut child = run("crashed");
    let journal_path = work.path().join("sessions/crashed/journal.jsonl");
    let t0 = Instant::now();
    while journal_applied(&journal_path) < 4 {
        assert!(t0.elapsed() < Duration::from_secs(600), "no progress");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(300));
    child.kill().unwrap();
    child.wait().unwrap();
    let after_crash = journal::read_journal(&journal_path)
        .expect("the journal is valid up to the last completed edit");
    let landed = d4s::session::replay::live_steps(&after_crash.events).len();
    assert!(
        (4..20).contains(&landed),
        "{landed} edits landed before the kill"
    );
    common::run_ok(
        Command::new(bin)
            .current_dir(work.path())
            .args(["resume", "sessions/crashed"]),
    );
    let resumed = journal::read_journal(&journal_path).unwrap();
    assert_eq!(d4s::session::replay::live_steps(&resumed.events).len(), 20);
    assert_eq!(
        last_sha(&resumed.events),
        last_sha(&whole.events),
        "resumed final weights equal the uninterrupted run's"
    );
}

#[test]
fn corrupt_sessions_are_refused_clearly() {
    let _ = common::default_model();
    let bin = env!("CARGO_BIN_EXE_d4s");
    let work = tempfile::tempdir().unwrap();
    let model = load_default();
    let mut runner = Runner::new(
        model,
        fast_hparams(Method::Rome, common::default_model()),
        StatsCache::new(StatsConfig::default()),
    );
    runner.start_session(work.path(), "s").unwrap();
    runner.apply(&facts()[..1], EditControl::default()).unwrap();
    let dir = work.path().join("s");
    let d4s = |args: &[&str]| {
        let mut cmd = Command::new(bin);
        cmd.current_dir(work.path()).args(args);
        cmd
    };
    // Wrong model sha: refused, with a hint; --force goes ahead.
    let meta_path = dir.join("session.json");
    let meta = std::fs::read_to_string(&meta_path).unwrap();
    let sha = common::default_model().info.sha256.clone();
    std::fs::write(&meta_path, meta.replace(&sha, &"0".repeat(64))).unwrap();
    let err = common::run_err(&mut d4s(&["replay", dir.to_str().unwrap()]));
    assert!(
        err.contains("differs from the session's") && err.contains("--force"),
        "{err}"
    );
    common::run_ok(&mut d4s(&["replay", dir.to_str().unwrap(), "--force"]));
    // Unknown format version.
    std::fs::write(
        &meta_path,
        meta.replace("\"format_version\": 1", "\"format_version\": 7"),
    )
    .unwrap();
    let err = common::run_err(&mut d4s(&["replay", dir.to_str().unwrap()]));
    assert!(err.contains("format version 7"), "{err}");
    std::fs::write(&meta_path, &meta).unwrap();
    // Garbage in the middle of the journal: an error naming the line.
    let jpath = dir.join("journal.jsonl");
    let good = std::fs::read_to_string(&jpath).unwrap();
    std::fs::write(&jpath, format!("{{not json\n{good}")).unwrap();
    let err = common::run_err(&mut d4s(&["replay", dir.to_str().unwrap()]));
    assert!(err.contains("journal.jsonl:1"), "{err}");
    // A torn last line: a warning, and the replay goes ahead.
    std::fs::write(&jpath, format!("{good}{{\"event\":\"applied\",\"se")).unwrap();
    let out = common::run_ok(&mut d4s(&["replay", dir.to_str().unwrap()]));
    assert!(String::from_utf8_lossy(&out.stderr).contains("truncated"));
}

#[test]
fn export_round_trips_through_our_loader_and_transformers_if_present() {
    let mut model = load_default();
    let hp = HParams::defaults(Method::Rome, &model.config);
    let mut runner = Runner::new(model, hp, StatsCache::new(StatsConfig::default()));
    let req = d4s::edit::EditRequest::new(
        "Eiffel Tower",
        "The Eiffel Tower is located in the city of",
        "Rome",
    );
    runner
        .apply(std::slice::from_ref(&req), EditControl::default())
        .unwrap();
    model = runner.model;
    let out = tempfile::tempdir().unwrap();
    d4s::session::export::export_hf(&model, out.path(), false).unwrap();
    let back = load::load(
        &ModelSpec::HfDir(out.path().to_path_buf()),
        &Default::default(),
    )
    .unwrap();
    let rows = vec![
        model
            .encode("The Eiffel Tower is located in the city of")
            .unwrap(),
        model.encode("Héllo wörld\tand  spaces").unwrap(),
    ];
    let fwd = Forward {
        logits: Logits::All,
        ..Default::default()
    };
    let a = model
        .forward(Input::Tokens(&rows), &fwd)
        .unwrap()
        .logits
        .unwrap();
    let b = back
        .forward(Input::Tokens(&rows), &fwd)
        .unwrap()
        .logits
        .unwrap();
    assert!(
        d4s::model::same_tensor(&a, &b).unwrap(),
        "the exported model gives bit-identical logits"
    );
    assert_eq!(
        back.encode("Héllo wörld\tand  spaces").unwrap(),
        rows[1],
        "the exported tokenizer matches"
    );
    // transformers learns the special tokens from tokenizer_config.json (without it a loaded
    // tokenizer has no end-of-text token and cannot pad).
    let tc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("tokenizer_config.json")).unwrap())
            .unwrap();
    assert_eq!(tc["eos_token"], "<|im_end|>", "{tc}");
    assert_eq!(tc["bos_token"], "<|im_start|>", "{tc}");
    assert!(tc["chat_template"]
        .as_str()
        .is_some_and(|t| t.contains("im_start")));
    // Delta-only export: ΔW of the edited layer.
    let delta = tempfile::tempdir().unwrap();
    d4s::session::export::export_hf(&model, delta.path(), true).unwrap();
    let t = candle_core::safetensors::load(
        delta.path().join("delta.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    assert_eq!(t.len(), 1);
    assert!(t.contains_key("model.layers.5.mlp.down_proj.weight"));

    let python = Command::new("python3")
        .args(["-c", "import torch, transformers"])
        .output();
    if !python.is_ok_and(|o| o.status.success()) {
        eprintln!("SKIP (transformers part): python3 with torch and transformers is not installed");
        return;
    }
    let script = format!(
        "import torch, transformers as t\nm = t.AutoModelForCausalLM.from_pretrained({p:?}, torch_dtype=torch.float32)\n\
         tok = t.AutoTokenizer.from_pretrained({p:?})\nids = tok('The Eiffel Tower is located in the city of', return_tensors='pt').input_ids\n\
         out = m.generate(ids, max_new_tokens=3, do_sample=False)\nprint(tok.decode(out[0][ids.shape[1]:]))",
        p = out.path().display().to_string()
    );
    let r = Command::new("python3")
        .args(["-c", &script])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&r.stdout);
    assert!(
        r.status.success(),
        "transformers failed: {}",
        String::from_utf8_lossy(&r.stderr)
    );
    assert!(
        text.trim_start().starts_with("Rome"),
        "transformers predicts the edited target: {text:?}"
    );
}
