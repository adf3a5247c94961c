//! Queued facts share a batched target pass, the journal keeps it, and a replay lands the same
//! bits; only editors whose targets are the unedited model's plan passes.

use super::*;
use crate::edit::{new_editor, EditControl, HParams, Method};
use crate::eval::testkit::{cases, hparams, stats};
use crate::model::config::Arch;
use crate::model::random::tiny_model;
use crate::session::journal::{read_journal, Event};
use crate::session::Runner;

fn facts() -> Vec<EditRequest> {
    cases().into_iter().map(|c| c.requests[0].clone()).collect()
}

fn d4s(batch: usize) -> HParams {
    let mut hp = hparams(Method::D4s);
    hp.target_batch = batch;
    hp
}

/// Each fact applied with the facts behind it queued.
fn apply_queued_all(runner: &mut Runner, facts: &[EditRequest]) {
    for (i, f) in facts.iter().enumerate() {
        runner
            .apply_queued(f, &facts[i + 1..], EditControl::default())
            .unwrap();
    }
}

fn applied(dir: &std::path::Path) -> Vec<(String, Option<TargetPass>)> {
    read_journal(&dir.join("journal.jsonl"))
        .unwrap()
        .events
        .into_iter()
        .filter_map(|e| match e {
            Event::Applied {
                weights_sha256,
                target_pass,
                ..
            } => Some((weights_sha256, target_pass)),
            _ => None,
        })
        .collect()
}

#[test]
fn queued_facts_share_a_target_pass_that_the_journal_keeps_and_a_replay_lands_bit_for_bit() {
    let facts = facts();
    assert_eq!(facts.len(), 5);
    let (root, stats_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut runner = Runner::new(tiny_model(Arch::Llama, 21), d4s(3), stats(stats_dir.path()));
    runner.start_session(root.path(), "s").unwrap();
    apply_queued_all(&mut runner, &facts);
    // Passes of three, then of the two facts left: each step after a pass's first found its
    // target in the cache, and nothing was optimized twice.
    assert_eq!(runner.targets.hits(), 3);
    let dir = runner.session.as_ref().unwrap().dir.clone();
    let journal = applied(&dir);
    let positions: Vec<_> = journal
        .iter()
        .map(|(_, p)| p.as_ref().map(|p| (p.position, p.facts.len())))
        .collect();
    assert_eq!(
        positions,
        [(0, 3), (1, 3), (2, 3), (0, 2), (1, 2)].map(Some).to_vec()
    );
    let pass = journal[1].1.as_ref().unwrap();
    assert_eq!(
        pass.facts,
        facts[..3].iter().map(EditRequest::fact).collect::<Vec<_>>()
    );

    // A replay hands each step its recorded pass back: the journal's weights, bit for bit.
    let events = read_journal(&dir.join("journal.jsonl")).unwrap().events;
    let mut replay = Runner::new(tiny_model(Arch::Llama, 21), d4s(3), stats(stats_dir.path()));
    let report = replay.replay(&events, None, true, |_| Ok(())).unwrap();
    assert_eq!((report.steps, report.mismatches.len()), (5, 0));

    // The pass is what the bits depend on: the same facts optimized alone land other weights,
    // which a replay that ignored the recorded passes would have reported as mismatches.
    let mut alone = Runner::new(tiny_model(Arch::Llama, 21), d4s(1), stats(stats_dir.path()));
    for f in &facts {
        alone
            .apply(std::slice::from_ref(f), EditControl::default())
            .unwrap();
    }
    let last_alone = &alone.history.last().unwrap().outcome.weights_sha256;
    assert_ne!(last_alone, &journal[4].0);
}

#[test]
fn only_editors_whose_targets_are_the_unedited_models_plan_passes() {
    let model = tiny_model(Arch::Llama, 21);
    let facts = facts();
    let plan = |hp: HParams| {
        Planner::default().plan(&model, new_editor(hp).as_ref(), &facts[0], &facts[1..])
    };
    assert!(plan(d4s(8)).is_some_and(|p| p.facts.len() == 5 && p.position == 0));
    // MEMIT's targets follow the edits before them; a batch of 1 is the choice to go alone.
    assert_eq!(plan(hparams(Method::Memit)), None);
    assert_eq!(plan(d4s(1)), None);
}

#[test]
fn a_pass_skips_queued_facts_that_cannot_be_optimized_and_restarts_when_the_queue_changes() {
    let model = tiny_model(Arch::Llama, 21);
    let editor = new_editor(d4s(3));
    let facts = facts();
    let mut broken = facts[1].clone();
    broken.target = "  ".into();
    let queue = [
        facts[0].clone(),
        broken.clone(),
        facts[2].clone(),
        facts[3].clone(),
    ];
    let mut planner = Planner::default();
    let first = planner
        .plan(&model, editor.as_ref(), &queue[0], &queue[1..])
        .unwrap();
    assert_eq!(
        first.facts,
        vec![facts[0].fact(), facts[2].fact(), facts[3].fact()]
    );
    // The broken fact goes alone (and fails alone); the pass waits for its next fact.
    assert_eq!(
        planner.plan(&model, editor.as_ref(), &broken, &queue[2..]),
        None
    );
    let second = planner
        .plan(&model, editor.as_ref(), &queue[2], &queue[3..])
        .unwrap();
    assert_eq!((second.position, second.facts), (1, first.facts.clone()));
    // A fact the pass did not expect (the user typed one) starts a new pass.
    let typed = planner
        .plan(&model, editor.as_ref(), &facts[4], &queue[3..])
        .unwrap();
    assert_eq!(typed.position, 0);
    assert_eq!(typed.facts, vec![facts[4].fact(), facts[3].fact()]);
    // A fact further on in the current pass goes on with it (those between were rejected or
    // dropped), as it would have without a crash in between.
    let mut resumed = Planner::default();
    resumed.continue_after(Some(&TargetPass {
        facts: first.facts.clone(),
        position: 0,
    }));
    let skipped = resumed
        .plan(&model, editor.as_ref(), &queue[3], &[])
        .unwrap();
    assert_eq!((skipped.position, skipped.facts), (2, first.facts.clone()));
    // The evaluation prompts around a fact do not matter: its fact is what the pass matches.
    let mut dressed = facts[3].clone();
    dressed.paraphrases.push("Where is it?".into());
    let next = planner
        .plan(&model, editor.as_ref(), &dressed, &[])
        .unwrap();
    assert_eq!(next.position, 1);
}

#[test]
fn a_session_resumed_in_the_middle_of_a_pass_lands_the_uninterrupted_bits() {
    let facts = facts();
    let (root, stats_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let runner_for = || Runner::new(tiny_model(Arch::Llama, 21), d4s(3), stats(stats_dir.path()));
    let mut whole = runner_for();
    apply_queued_all(&mut whole, &facts);
    let expected = &whole.history.last().unwrap().outcome.weights_sha256;

    // Two facts of the first pass land, then the process dies; `d4s resume` restores the
    // journal and applies the rest with the facts still pending behind each.
    let mut crashed = runner_for();
    crashed.start_session(root.path(), "s").unwrap();
    for (i, f) in facts[..2].iter().enumerate() {
        crashed
            .apply_queued(f, &facts[i + 1..], EditControl::default())
            .unwrap();
    }
    let dir = crashed.session.as_ref().unwrap().dir.clone();
    drop(crashed);
    let (session, loaded) = crate::session::Session::open(&dir).unwrap();
    let mut resumed = runner_for();
    resumed.session = Some(session);
    resumed.restore(&loaded.events).unwrap();
    let pending = &facts[2..];
    apply_queued_all(&mut resumed, pending);
    assert_eq!(
        &resumed.history.last().unwrap().outcome.weights_sha256,
        expected
    );
    // The third fact finished the first pass (recomputed in the new process: a pass is keyed
    // by all its facts), and the last two made their own.
    let passes: Vec<_> = applied(&dir)
        .into_iter()
        .map(|(_, p)| p.map(|p| (p.position, p.facts.len())))
        .collect();
    assert_eq!(
        passes,
        [(0, 3), (1, 3), (2, 3), (0, 2), (1, 2)].map(Some).to_vec()
    );
}
