//! The replay table of a session that switched methods and undid a step.

use super::*;
use crate::edit::EditControl;
use crate::eval::testkit::{cases, hparams, stats};
use crate::model::config::Arch;
use crate::model::random::tiny_model;
use crate::session::journal;

/// The scored items of a step, as the table scores them.
fn items(requests: &[EditRequest]) -> Vec<(String, String)> {
    requests
        .iter()
        .map(|r| (r.filled_prompt(), r.target.clone()))
        .collect()
}

#[test]
fn a_mixed_method_session_with_an_undo_replays_row_by_row() {
    let cases = cases();
    let stats_dir = tempfile::tempdir().unwrap();
    let sessions = tempfile::tempdir().unwrap();
    let mut original = Runner::new(
        tiny_model(Arch::Llama, 21),
        hparams(Method::D4s),
        stats(stats_dir.path()),
    );
    original.start_session(sessions.path(), "mixed").unwrap();
    // D4S, D4S, ROME (undone), MEMIT, MEMIT — the journal's steps 1..=5.
    let plan = [
        (Method::D4s, 0),
        (Method::D4s, 1),
        (Method::Rome, 2),
        (Method::Memit, 3),
        (Method::Memit, 4),
    ];
    let mut expected_after = Vec::new();
    for (method, case) in plan {
        if method != original.method() {
            original.set_editor(hparams(method)).unwrap();
        }
        let requests = &cases[case].requests;
        original.apply(requests, EditControl::default()).unwrap();
        let p = target_prob(&original.model, &items(requests)).unwrap();
        expected_after.push(p.iter().sum::<f64>() / p.len() as f64);
        if method == Method::Rome {
            original.undo(None).unwrap();
        }
    }
    let dir = original.session.as_ref().unwrap().dir.clone();
    let loaded = journal::read_journal(&dir.join("journal.jsonl")).unwrap();
    let meta = journal::read_meta(&dir).unwrap();

    let mut replayed = Runner::new(
        tiny_model(Arch::Llama, 21),
        meta.hparams.clone(),
        stats(stats_dir.path()),
    );
    let table = replay_table(&mut replayed, &loaded.events, None, true).unwrap();

    assert_eq!(table.report.steps, 5);
    assert_eq!(table.report.undos, 1);
    assert!(table.report.mismatches.is_empty(), "{:?}", table.report);
    assert_eq!(table.rows.len(), 5, "every applied step has a row");
    for (i, (row, (method, case))) in table.rows.iter().zip(plan).enumerate() {
        assert_eq!(row.step, i as u64 + 1);
        assert_eq!(row.method, method, "step {}", row.step);
        assert_eq!(row.requests, cases[case].requests, "step {}", row.step);
        assert_eq!(row.undone, method == Method::Rome, "step {}", row.step);
        // Measured right after the step landed, not on the final model: the replay is
        // bit-identical, so it equals what the original run measured at that moment.
        assert_eq!(row.prob_after, expected_after[i], "step {}", row.step);
        assert!((0.0..=1.0).contains(&row.rewrite));
    }
    assert_eq!(
        table.methods(),
        vec![Method::D4s, Method::Rome, Method::Memit]
    );
    let text = table.to_string();
    let rome_line = text.lines().find(|l| l.contains("ROME")).unwrap();
    assert!(rome_line.contains("[undone later]"), "{text}");
    assert_eq!(text.matches("[undone later]").count(), 1, "{text}");
    assert!(text.ends_with("5 steps and 1 undos replayed"), "{text}");

    let listed = journal::list(sessions.path()).unwrap();
    let summary = listed[0].as_ref().unwrap();
    assert_eq!(
        summary.methods,
        vec![Method::D4s, Method::Rome, Method::Memit],
        "the session list names every method the session used"
    );
    assert_eq!(summary.edits, 4, "live steps");
}

#[test]
fn a_replay_cut_short_lists_only_the_steps_it_replayed() {
    let cases = cases();
    let stats_dir = tempfile::tempdir().unwrap();
    let sessions = tempfile::tempdir().unwrap();
    let mut original = Runner::new(
        tiny_model(Arch::Llama, 22),
        hparams(Method::Memit),
        stats(stats_dir.path()),
    );
    original.start_session(sessions.path(), "cut").unwrap();
    for c in &cases[..3] {
        original.apply(&c.requests, EditControl::default()).unwrap();
    }
    original.undo(None).unwrap();
    let dir = original.session.as_ref().unwrap().dir.clone();
    let loaded = journal::read_journal(&dir.join("journal.jsonl")).unwrap();
    let mut replayed = Runner::new(
        tiny_model(Arch::Llama, 22),
        hparams(Method::Memit),
        stats(stats_dir.path()),
    );
    let table = replay_table(&mut replayed, &loaded.events, Some(2), true).unwrap();
    assert_eq!(table.rows.len(), 2);
    assert!(table.rows.iter().all(|r| !r.undone));
    assert_eq!(
        table.report.undos, 0,
        "the undo of step 3 lies past the cut"
    );
}
