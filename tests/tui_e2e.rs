//! End to end in a real terminal: the release binary in tmux, on the default model, with an empty
//! d4s home (only the model is linked in), so the key statistics are gathered from scratch: they
//! start in the background before anything is typed. Types a fact, waits for it to land, checks
//! the screen (new prediction, norm change, chart), undoes it, checks the old prediction is back,
//! quits. A second run compares two methods in A/B mode on the same fact. The captured screens
//! are kept under `target/tui-e2e/` as artifacts.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

fn tmux(args: &[&str]) -> String {
    let out = Command::new("tmux").args(args).output().expect("tmux runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn has_tmux() -> bool {
    Command::new("tmux")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success())
}

struct Session(String);

impl Drop for Session {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.0])
            .output();
    }
}

fn screen(s: &Session) -> String {
    tmux(&["capture-pane", "-p", "-t", &s.0])
}

fn wait_for(s: &Session, what: &str, timeout: Duration, ok: impl Fn(&str) -> bool) -> String {
    let t0 = Instant::now();
    loop {
        let sc = screen(s);
        if ok(&sc) {
            return sc;
        }
        if t0.elapsed() > timeout {
            panic!(
                "timed out after {:?} waiting for {what}; screen:\n{sc}",
                timeout
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn artifact(name: &str, text: &str) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join("tui-e2e");
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(dir.join(name), text);
}

/// The TUI running in tmux, in a work folder of its own with a fresh d4s home (the cached model
/// linked in: no statistics, no targets).
struct Tui {
    session: Session,
    work: tempfile::TempDir,
    _home: tempfile::TempDir,
}

/// Starts `d4s tui ARGS` in tmux (120×40), or `None` where tmux is missing outside CI.
fn start(tag: &str, args: &str) -> Option<Tui> {
    if !has_tmux() {
        if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
            panic!("CI=true but tmux is not installed (.ci/run installs it)");
        }
        eprintln!("SKIP: tmux is not installed");
        return None;
    }
    // Make sure the default model is cached before the TUI starts (fetching prints to stderr).
    let _ = common::default_model();
    let work = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(
        d4s::util::d4s_home().join("models"),
        home.path().join("models"),
    )
    .unwrap();
    let name = format!("d4s-e2e-{tag}-{}", std::process::id());
    let bin = env!("CARGO_BIN_EXE_d4s");
    // A small statistics budget keeps the test short; the path is the same at any size.
    let cmd = format!(
        "cd {} && D4S_HOME={} {bin} tui {args} --probes none --stats-tokens 4096 --frame-stats 2> stderr.txt; echo EXITED $? >> stderr.txt; sleep 30",
        work.path().display(),
        home.path().display()
    );
    tmux(&[
        "new-session",
        "-d",
        "-s",
        &name,
        "-x",
        "120",
        "-y",
        "40",
        &cmd,
    ]);
    Some(Tui {
        session: Session(name),
        work,
        _home: home,
    })
}

/// Quits with `q` and waits for a clean exit; returns the journals written.
fn quit(tui: &Tui, artifact_name: &str) -> Vec<String> {
    tmux(&["send-keys", "-t", &tui.session.0, "q"]);
    let t0 = Instant::now();
    let stderr = loop {
        let e = std::fs::read_to_string(tui.work.path().join("stderr.txt")).unwrap_or_default();
        if e.contains("EXITED") || t0.elapsed() > Duration::from_secs(30) {
            break e;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    artifact(artifact_name, &stderr);
    assert!(
        stderr.contains("EXITED 0"),
        "the binary exits cleanly: {stderr}"
    );
    let mut sessions: Vec<PathBuf> = std::fs::read_dir(tui.work.path().join("sessions"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    sessions.sort();
    sessions
        .iter()
        .map(|s| std::fs::read_to_string(s.join("journal.jsonl")).unwrap())
        .collect()
}

#[test]
fn type_a_fact_watch_it_land_undo_and_quit() {
    let Some(tui) = start("one", "") else {
        return;
    };
    let s = &tui.session;
    wait_for(
        s,
        "the worker to be ready",
        Duration::from_secs(120),
        |sc| sc.contains("ready: type a fact"),
    );
    // Nothing typed yet, and the statistics are already being gathered, in tokens, with an ETA.
    let gathering = wait_for(
        s,
        "the background statistics",
        Duration::from_secs(120),
        |sc| sc.contains("key statistics") && sc.contains("tokens"),
    );
    artifact("background-statistics.txt", &gathering);

    tmux(&["send-keys", "-t", &s.0, "-l", "Eiffel Tower | The Eiffel Tower is located in the city of | Rome | The Eiffel Tower can be found in | The capital of France is"]);
    tmux(&["send-keys", "-t", &s.0, "Enter"]);
    // The first D4S edit on a fresh machine also gathers the key statistics (once per model).
    let landed = wait_for(
        s,
        "the edit to land and be evaluated",
        Duration::from_secs(900),
        |sc| (sc.contains("✓") && sc.contains("Metrics vs edits —")) || sc.contains("rejected"),
    );
    artifact("after-edit.txt", &landed);
    assert!(
        landed.contains("→ Rome"),
        "the queue shows the new prediction:\n{landed}"
    );
    assert!(
        landed.contains("after:  \" Rome\""),
        "the detail view shows the new top prediction:\n{landed}"
    );
    assert!(
        landed.contains("Metrics vs edits — eff 1.00"),
        "the chart has the edit:\n{landed}"
    );
    let norm_row = landed
        .lines()
        .find(|l| l.contains("L8 "))
        .expect("a norm row for layer 8");
    assert!(
        !norm_row.contains("Δ0.0e0"),
        "non-zero norm change: {norm_row}"
    );

    tmux(&["send-keys", "-t", &s.0, "Escape"]);
    tmux(&["send-keys", "-t", &s.0, "u"]);
    let undone = wait_for(s, "the undo", Duration::from_secs(120), |sc| {
        sc.contains("(undone)")
    });
    artifact("after-undo.txt", &undone);
    assert!(
        undone.contains("top-1 Paris (undone)"),
        "the old prediction is back:\n{undone}"
    );

    // The journal has the applied edit and its undo.
    let journals = quit(&tui, "stderr.txt");
    assert_eq!(journals.len(), 1);
    assert!(
        journals[0].contains("\"event\":\"applied\"") && journals[0].contains("\"event\":\"undo\""),
        "{journals:?}"
    );
}

#[test]
fn ab_mode_edits_one_fact_with_two_methods_side_by_side() {
    let Some(tui) = start("ab", "--methods d4s,memit") else {
        return;
    };
    let s = &tui.session;
    let ready = wait_for(
        s,
        "the worker to be ready",
        Duration::from_secs(120),
        |sc| sc.contains("ready: type a fact"),
    );
    assert!(
        ready.contains("D4S L") && ready.contains("vs MEMIT L"),
        "{ready}"
    );
    tmux(&[
        "send-keys",
        "-t",
        &s.0,
        "-l",
        "Eiffel Tower | The Eiffel Tower is located in the city of | Rome",
    ]);
    tmux(&["send-keys", "-t", &s.0, "Enter"]);
    // Both lanes land the fact, one after the other, and each is evaluated.
    let landed = wait_for(
        s,
        "the edit to land in both lanes",
        Duration::from_secs(900),
        |sc| {
            let chart = sc.lines().any(|l| {
                l.contains("efficacy vs edits — D4S")
                    && !l.contains("D4S –")
                    && !l.contains("MEMIT –")
            });
            (chart && sc.contains("MEMIT eff")) || sc.contains("rejected")
        },
    );
    artifact("ab-after-edit.txt", &landed);
    assert!(
        landed.contains("D4S eff 1.00 · MEMIT eff"),
        "the queue row gives each method's efficacy:\n{landed}"
    );
    assert!(
        landed.contains("D4S — done") && landed.contains("MEMIT — done"),
        "the detail has a column per method:\n{landed}"
    );
    assert_eq!(
        landed.matches("after:  \" Rome\"").count(),
        2,
        "each method's new top prediction:\n{landed}"
    );
    // The chart pane switches the metric drawn per method.
    tmux(&["send-keys", "-t", &s.0, "Escape"]);
    tmux(&["send-keys", "-t", &s.0, "Tab"]);
    tmux(&["send-keys", "-t", &s.0, "Right"]);
    wait_for(s, "the paraphrase chart", Duration::from_secs(10), |sc| {
        sc.contains("paraphrase vs edits — D4S")
    });
    // Undo takes the fact back in both lanes.
    tmux(&["send-keys", "-t", &s.0, "u"]);
    let undone = wait_for(
        s,
        "the undo in both lanes",
        Duration::from_secs(120),
        |sc| sc.contains("D4S undone · MEMIT undone"),
    );
    artifact("ab-after-undo.txt", &undone);
    // Each method journaled its own session: the edit and its undo.
    let journals = quit(&tui, "ab-stderr.txt");
    assert_eq!(journals.len(), 2, "{journals:?}");
    for j in &journals {
        assert!(
            j.contains("\"event\":\"applied\"") && j.contains("\"event\":\"undo\""),
            "{j}"
        );
    }
    assert!(journals.iter().any(|j| j.contains("\"method\":\"d4s\"")));
    assert!(journals.iter().any(|j| j.contains("\"method\":\"memit\"")));
}
