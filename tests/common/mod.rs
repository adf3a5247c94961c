//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::OnceLock;

use d4s::model::{load, Model, ModelSpec};

/// `../shared` beside the repository (override with `D4S_SHARED`).
pub fn shared_dir() -> PathBuf {
    std::env::var_os("D4S_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared"))
}

/// A path under `../shared`, or `None` (with a message) when it is absent on a user's clone.
/// Under `CI=true` a missing file is a failure: CI must never silently skip.
pub fn shared(rel: &str) -> Option<PathBuf> {
    let p = shared_dir().join(rel);
    if p.exists() {
        return Some(p);
    }
    if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        panic!("CI=true but {} is missing", p.display());
    }
    eprintln!(
        "SKIP: {} is not present (it ships beside the repository in CI)",
        p.display()
    );
    None
}

/// The device the integration tests run on: `D4S_TEST_DEVICE=cuda[:N]` (a `--features cuda`
/// build; `scripts/gpu-check.sh` sets it), else the CPU. The precision stays f32 on either, so
/// the same tolerances hold.
pub fn test_device() -> candle_core::Device {
    match std::env::var("D4S_TEST_DEVICE").ok().as_deref() {
        None | Some("") | Some("cpu") => candle_core::Device::Cpu,
        Some(s) => {
            let ordinal = s
                .strip_prefix("cuda")
                .map(|r| r.trim_start_matches(':'))
                .filter(|r| !r.is_empty())
                .map_or(0, |r| r.parse().expect("D4S_TEST_DEVICE=cuda:N"));
            candle_core::Device::new_cuda(ordinal).expect("D4S_TEST_DEVICE names a usable GPU")
        }
    }
}

/// The default model, loaded once per test binary (fetched on first use).
pub fn default_model() -> &'static Model {
    static MODEL: OnceLock<Model> = OnceLock::new();
    MODEL.get_or_init(|| {
        load::load(
            &ModelSpec::Default,
            &load::LoadOptions {
                device: test_device(),
                precision: Some(load::Precision::F32),
                verbose: true,
                ..Default::default()
            },
        )
        .expect("the default model loads (run `cargo run --release -- fetch` if offline)")
    })
}

pub fn load_dir(rel: &str) -> Option<Model> {
    load_dir_in(rel, load::Precision::F32)
}

/// A fixture checkpoint with the runtime in `precision`.
pub fn load_dir_in(rel: &str, precision: load::Precision) -> Option<Model> {
    let dir = shared(rel)?;
    let opts = load::LoadOptions {
        device: test_device(),
        precision: Some(precision),
        ..Default::default()
    };
    Some(load::load(&ModelSpec::HfDir(dir), &opts).expect("fixture model loads"))
}

/// Runs `cmd` to completion and asserts it succeeded, showing its stderr if it did not.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("the command starts");
    assert!(
        out.status.success(),
        "{:?} failed: {}",
        cmd,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs `cmd`, asserts it failed, and returns its stderr (the error the user sees).
pub fn run_err(cmd: &mut Command) -> String {
    let out = cmd.output().expect("the command starts");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{cmd:?} should have failed: {err}");
    err
}
