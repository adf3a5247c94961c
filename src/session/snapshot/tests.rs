//! Snapshots are used only when current, whole and in agreement with the journal.

use super::*;
use crate::edit::{EditControl, Method};
use crate::eval::testkit::{cases, hparams, stats};
use crate::model::config::Arch;
use crate::model::random::tiny_model;
use crate::session::Runner;

/// A MEMIT session of `edits` edits on the tiny model, the last `undos` of them undone.
fn session(root: &Path, stats_dir: &Path, edits: usize, undos: usize) -> Runner {
    let mut runner = Runner::new(
        tiny_model(Arch::Llama, 21),
        hparams(Method::Memit),
        stats(stats_dir),
    );
    runner.start_session(root, "s").unwrap();
    for c in &cases()[..edits] {
        runner.apply(&c.requests, EditControl::default()).unwrap();
    }
    for _ in 0..undos {
        runner.undo(None).unwrap();
    }
    runner
}

fn events(dir: &Path) -> Vec<Event> {
    read_journal(&dir.join("journal.jsonl")).unwrap().events
}

#[test]
fn a_current_snapshot_installs_the_sessions_weights_bit_for_bit() {
    for undos in [0, 1] {
        let (root, stats_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let runner = session(root.path(), stats_dir.path(), 3, undos);
        let dir = runner.session.as_ref().unwrap().dir.clone();
        write(&dir, &runner.model).unwrap();

        let mut base = tiny_model(Arch::Llama, 21);
        let used = install(&dir, &mut base, &events(&dir)).unwrap();
        assert_eq!(used, Snapshot::Installed, "undos {undos}");
        let layers = runner.model.touched_layers();
        assert_eq!(base.touched_layers(), layers);
        assert_eq!(
            weights_sha256(&base, &layers).unwrap(),
            weights_sha256(&runner.model, &layers).unwrap()
        );
    }
}

#[test]
fn a_stale_damaged_or_missing_snapshot_is_refused_and_leaves_the_model_unedited() {
    let (root, stats_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut runner = session(root.path(), stats_dir.path(), 2, 0);
    let dir = runner.session.as_ref().unwrap().dir.clone();
    let refused = |why: &str| {
        let mut base = tiny_model(Arch::Llama, 21);
        match install(&dir, &mut base, &events(&dir)).unwrap() {
            Snapshot::Unusable(w) => assert!(w.contains(why), "{w:?} should say {why:?}"),
            Snapshot::Installed => panic!("installed; expected {why:?}"),
        }
        assert!(!base.is_edited().unwrap(), "{why}");
    };
    refused("no snapshot was written");

    write(&dir, &runner.model).unwrap();
    runner
        .apply(&cases()[2].requests, EditControl::default())
        .unwrap();
    refused("the journal ends at");

    write(&dir, &runner.model).unwrap();
    let meta_path = dir.join(META);
    let meta = std::fs::read_to_string(&meta_path).unwrap();
    let mut m: SnapshotMeta = serde_json::from_str(&meta).unwrap();
    m.weights_sha256 = "0".repeat(64);
    std::fs::write(&meta_path, serde_json::to_vec(&m).unwrap()).unwrap();
    refused("do not match its recorded sha256");

    std::fs::write(&meta_path, &meta).unwrap();
    let tensors = dir.join(TENSORS);
    let bytes = std::fs::read(&tensors).unwrap();
    std::fs::write(&tensors, &bytes[..bytes.len() / 2]).unwrap();
    refused("is damaged");

    std::fs::write(&meta_path, b"{ not json").unwrap();
    refused("is damaged");
}

#[test]
fn a_session_without_edits_has_no_snapshot_to_install() {
    let (root, stats_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let runner = session(root.path(), stats_dir.path(), 0, 0);
    let dir = runner.session.as_ref().unwrap().dir.clone();
    write(&dir, &runner.model).unwrap();
    assert!(!dir.join(META).exists());
    let mut base = tiny_model(Arch::Llama, 21);
    assert_eq!(
        install(&dir, &mut base, &events(&dir)).unwrap(),
        Snapshot::Unusable("the journal has no edits".into())
    );
}

#[test]
fn restoring_a_session_without_edits_gathers_no_statistics() {
    let (root, stats_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut runner = Runner::new(
        tiny_model(Arch::Llama, 21),
        hparams(Method::D4s),
        stats(stats_dir.path()),
    );
    runner.start_session(root.path(), "empty").unwrap();
    let dir = runner.session.as_ref().unwrap().dir.clone();
    drop(runner);

    let fresh_stats = tempfile::tempdir().unwrap();
    let (session, loaded) = crate::session::Session::open(&dir).unwrap();
    let mut restored = Runner::new(
        tiny_model(Arch::Llama, 21),
        hparams(Method::D4s),
        stats(fresh_stats.path()),
    );
    restored.session = Some(session);
    let report = restored.restore(&loaded.events).unwrap();
    assert_eq!((report.steps, report.undos), (0, 0));
    assert!(!restored.model.is_edited().unwrap());
    assert_eq!(
        std::fs::read_dir(fresh_stats.path()).unwrap().count(),
        0,
        "no statistics were gathered"
    );
}
