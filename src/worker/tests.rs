//! The worker against the benchmark: the numbers the TUI shows are the benchmark's.

use std::time::Duration;

use super::*;
use crate::edit::Method;
use crate::eval::testkit::{cases, hparams, memit_bench, stats};
use crate::model::config::Arch;
use crate::model::random::tiny_model;

/// Events until `done` says so (or a minute passes: a hung worker fails the test).
fn collect_until(events: &Receiver<Event>, mut done: impl FnMut(&Event) -> bool) -> Vec<Event> {
    let mut seen = Vec::new();
    loop {
        let e = events
            .recv_timeout(Duration::from_secs(60))
            .expect("the worker answers");
        let stop = done(&e);
        if std::env::var("D4S_DEBUG_EVENTS").is_ok() {
            eprintln!("{:?}", e);
        }
        seen.push(e);
        if stop {
            return seen;
        }
    }
}

/// Options with no probes and no data: every edit re-evaluates the curve.
fn quiet_options() -> WorkerOptions {
    WorkerOptions {
        eval_every: 1,
        probes: None,
        probes_unavailable: None,
        data_dir: None,
        scorer: None,
    }
}

#[test]
fn the_worker_reports_the_benchmarks_numbers_for_the_same_edits() {
    let cases = cases();
    let stats_dir = tempfile::tempdir().unwrap();
    // The benchmark: MEMIT, one case after another, every edit evaluated on the final model.
    let (_, sink) = memit_bench(&cases, |r| r.eval_every = None);
    let final_point = sink.points.last().unwrap().metrics.clone();

    // The worker: the same model, method and statistics; the same facts, typed one by one.
    let runner = Runner::new(
        tiny_model(Arch::Llama, 21),
        hparams(Method::Memit),
        stats(stats_dir.path()),
    );
    let handle = spawn(runner, quiet_options());
    for (i, c) in cases.iter().enumerate() {
        handle.send(Command::Edit {
            id: i as u64 + 1,
            request: c.requests[0].clone(),
        });
    }
    let n = cases.len();
    let events = collect_until(
        &handle.events,
        |e| matches!(e, Event::Curve { point, .. } if point.edits == n),
    );
    handle.join();
    let landed: Vec<&Landed> = events
        .iter()
        .filter_map(|e| match e {
            Event::Landed(l) => Some(l.as_ref()),
            _ => None,
        })
        .collect();
    assert_eq!(landed.len(), n, "{events:?}");
    let Some(Event::Curve { point: last, .. }) = events.last() else {
        unreachable!()
    };
    // All edits so far on the final model: the benchmark's final point.
    assert_eq!(last.metrics, final_point.token);
    // A case with a neighbour previews its continuation before and after the edit.
    for (l, c) in landed.iter().zip(&cases) {
        let first = c.requests[0].neighbors.first();
        assert_eq!(
            l.neighbour.as_ref().map(|(p, _, _)| p),
            first.map(|n| &n.prompt),
            "{l:?}"
        );
    }
    // The last edit, measured right after it landed (on the final model): its case's outcome.
    assert_eq!(landed[n - 1].metrics, sink.cases[n - 1].token);
    // The norms the TUI plots are the benchmark's for the same layers.
    let norms = events
        .iter()
        .rev()
        .find_map(|e| match e {
            Event::Norms { edits, layers, .. } if *edits == n => Some(layers.clone()),
            _ => None,
        })
        .unwrap();
    let bench_norms = &sink.points.last().unwrap().layers;
    assert_eq!(&norms, bench_norms);
}

#[test]
fn a_session_opened_in_the_tui_comes_back_as_a_deck_of_its_applied_edits() {
    let cases = cases();
    let stats_dir = tempfile::tempdir().unwrap();
    let sessions = tempfile::tempdir().unwrap();
    let mut recorded = Runner::new(
        tiny_model(Arch::Llama, 21),
        hparams(Method::Rome),
        stats(stats_dir.path()),
    );
    recorded.start_session(sessions.path(), "s").unwrap();
    for c in &cases[..2] {
        recorded
            .apply(&c.requests, crate::edit::EditControl::default())
            .unwrap();
    }
    let dir = recorded.session.as_ref().unwrap().dir.clone();
    let handle = spawn(
        Runner::new(
            tiny_model(Arch::Llama, 21),
            hparams(Method::Rome),
            stats(stats_dir.path()),
        ),
        WorkerOptions {
            eval_every: 0,
            ..quiet_options()
        },
    );
    handle.send(Command::OpenSession(dir));
    let events = collect_until(&handle.events, |e| {
        matches!(e, Event::Deck { .. } | Event::Error(_))
    });
    handle.join();
    let Some(Event::Deck { requests, .. }) = events.last() else {
        panic!("{events:?}")
    };
    assert_eq!(
        requests,
        &[cases[0].requests[0].clone(), cases[1].requests[0].clone()]
    );
}

#[test]
fn the_queue_the_pause_and_decks_are_answered_while_an_edit_is_in_flight() {
    let cases = cases();
    let stats_dir = tempfile::tempdir().unwrap();
    // An edit that runs until it is cancelled: a vanishing learning rate never reaches the
    // stopping loss within a million steps.
    let mut hp = hparams(Method::Memit);
    hp.v_num_grad_steps = 1_000_000;
    hp.v_lr = 1e-12;
    let runner = Runner::new(tiny_model(Arch::Llama, 21), hp, stats(stats_dir.path()));
    let handle = spawn(runner, quiet_options());
    for (i, c) in cases.iter().take(3).enumerate() {
        handle.send(Command::Edit {
            id: i as u64 + 1,
            request: c.requests[0].clone(),
        });
    }
    collect_until(&handle.events, |e| {
        matches!(
            e,
            Event::Progress {
                id: 1,
                progress: Progress::TargetStep { .. },
                ..
            }
        )
    });
    handle.send(Command::ClearQueue);
    handle.send(Command::Pause(true));
    handle.send(Command::LoadDeck("demo".into()));
    let answered = collect_until(&handle.events, |e| matches!(e, Event::Deck { .. }));
    assert!(
        answered.iter().any(|e| *e
            == Event::QueueCleared {
                ids: vec![2, 3],
                in_flight: true
            }),
        "{answered:?}"
    );
    assert!(answered.contains(&Event::Paused(true)), "{answered:?}");
    assert!(
        !answered
            .iter()
            .any(|e| matches!(e, Event::Landed(_) | Event::Cancelled { .. })),
        "the edit in flight was still running: {answered:?}"
    );
    handle
        .cancel
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let rest = collect_until(&handle.events, |e| matches!(e, Event::Cancelled { id: 1 }));
    assert!(
        !rest.iter().any(|e| matches!(e, Event::Started { .. })),
        "nothing else starts: the queue was dropped and the desk is paused"
    );
    handle.join();
}

/// A MEMIT worker on the tiny model with statistics cached in `dir`, asked for nothing: its
/// events until the background statistics are ready.
fn events_until_statistics_ready(dir: &std::path::Path) -> Vec<Event> {
    let runner = Runner::new(
        tiny_model(Arch::Llama, 21),
        hparams(Method::Memit),
        stats(dir),
    );
    let handle = spawn(runner, quiet_options());
    let seen = collect_until(&handle.events, |e| {
        matches!(e, Event::StatisticsReady { .. })
    });
    handle.join();
    seen
}

#[test]
fn the_statistics_are_gathered_in_the_background_before_the_first_edit() {
    let stats_dir = tempfile::tempdir().unwrap();
    // No edit was asked for: the statistics come on their own, with their progress.
    let seen = events_until_statistics_ready(stats_dir.path());
    assert!(
        seen.iter()
            .any(|e| matches!(e, Event::Statistics { done, total, .. } if done <= total)),
        "{seen:?}"
    );
    assert!(matches!(
        seen.last(),
        Some(Event::StatisticsReady { computed: true, .. })
    ));
    assert!(
        std::fs::read_dir(stats_dir.path()).unwrap().count() > 0,
        "they are in the cache for the first edit"
    );

    // A second worker finds them cached.
    let seen = events_until_statistics_ready(stats_dir.path());
    assert!(!seen.iter().any(|e| matches!(e, Event::Statistics { .. })));
    assert!(matches!(
        seen.last(),
        Some(Event::StatisticsReady {
            computed: false,
            ..
        })
    ));
}

#[test]
fn a_method_without_statistics_edits_while_they_are_gathered() {
    let stats_dir = tempfile::tempdir().unwrap();
    // A budget large enough that the statistics are still running when the edit lands.
    let mut slow = stats(stats_dir.path());
    slow.config.tokens = Some(5_000_000);
    let runner = Runner::new(tiny_model(Arch::Llama, 21), hparams(Method::FtL), slow);
    let handle = spawn(runner, quiet_options());
    handle.send(Command::SetMethod(Method::Memit));
    collect_until(&handle.events, |e| matches!(e, Event::Statistics { .. }));
    handle.send(Command::SetMethod(Method::FtL));
    handle.send(Command::Edit {
        id: 1,
        request: cases()[0].requests[0].clone(),
    });
    let seen = collect_until(&handle.events, |e| {
        matches!(
            e,
            Event::Landed(_) | Event::Rejected { .. } | Event::StatisticsReady { .. }
        )
    });
    handle.join();
    assert!(
        matches!(seen.last(), Some(Event::Landed(_))),
        "FT-L landed before the statistics were ready: {:?}",
        seen.last()
    );
}

/// The last curve point of each lane, from a run's events.
fn last_curves(events: &[Event], lanes: usize) -> Vec<CurvePoint> {
    (0..lanes)
        .map(|lane| {
            events
                .iter()
                .rev()
                .find_map(|e| match e {
                    Event::Curve { lane: l, point } if *l == lane => Some(point.clone()),
                    _ => None,
                })
                .expect("a curve point per lane")
        })
        .collect()
}

#[test]
fn ab_lanes_edit_the_same_stream_each_as_if_alone_and_undo_together() {
    let cases = cases();
    let stats_dir = tempfile::tempdir().unwrap();
    let model = tiny_model(Arch::Llama, 21);
    let shared = stats(stats_dir.path());
    let lanes = vec![
        Runner::new(model.clone(), hparams(Method::Memit), shared.sibling()),
        Runner::new(model.clone(), hparams(Method::Rome), shared.sibling()),
    ];
    let n = 3;
    let send_all = |handle: &WorkerHandle| {
        for (i, c) in cases.iter().take(n).enumerate() {
            handle.send(Command::Edit {
                id: i as u64 + 1,
                request: c.requests[0].clone(),
            });
        }
    };
    let handle = spawn_lanes(lanes, quiet_options());
    send_all(&handle);
    // Both lanes' curves after the last edit end the stream.
    let mut last = [false, false];
    let events = collect_until(&handle.events, |e| {
        if let Event::Curve { lane, point } = e {
            last[*lane] |= point.edits == n;
        }
        last == [true, true]
    });
    let Some(Event::Ready { lanes: info, .. }) = events.first() else {
        panic!("Ready first: {events:?}")
    };
    let methods: Vec<Method> = info.iter().map(|l| l.method).collect();
    assert_eq!(methods, [Method::Memit, Method::Rome]);
    // Every fact landed in both lanes (side by side, so in either order within a fact), each
    // lane taking the facts in order.
    let landed: Vec<(u64, usize, Method)> = events
        .iter()
        .filter_map(|e| match e {
            Event::Landed(l) => Some((l.id, l.lane, l.method)),
            _ => None,
        })
        .collect();
    for (lane, method) in [Method::Memit, Method::Rome].into_iter().enumerate() {
        let ids: Vec<u64> = landed
            .iter()
            .filter(|l| l.1 == lane)
            .inspect(|l| assert_eq!(l.2, method))
            .map(|l| l.0)
            .collect();
        assert_eq!(ids, [1, 2, 3], "lane {lane}: {landed:?}");
    }
    // A fact's lanes both land before the next fact starts.
    let firsts: Vec<u64> = landed.iter().map(|l| l.0).collect();
    assert!(firsts.windows(2).all(|w| w[0] <= w[1]), "{firsts:?}");
    let ab = last_curves(&events, 2);
    // Undo takes the newest fact back in both lanes.
    handle.send(Command::Undo);
    let undone = collect_until(
        &handle.events,
        |e| matches!(e, Event::Curve { lane: 1, point } if point.edits == n - 1),
    );
    // (Undo takes the lanes in order on the engine thread.)
    let undos: Vec<(u64, usize)> = undone
        .iter()
        .filter_map(|e| match e {
            Event::Undone { id, lane, .. } => Some((*id, *lane)),
            _ => None,
        })
        .collect();
    assert_eq!(undos, [(3, 0), (3, 1)]);
    handle.join();

    // Each lane's numbers are those of its method run alone on the same facts: the lanes share
    // nothing that an edit changes.
    for (lane, method) in [Method::Memit, Method::Rome].into_iter().enumerate() {
        let alone = spawn(
            Runner::new(model.clone(), hparams(method), shared.sibling()),
            quiet_options(),
        );
        send_all(&alone);
        let events = collect_until(
            &alone.events,
            |e| matches!(e, Event::Curve { point, .. } if point.edits == n),
        );
        alone.join();
        assert_eq!(last_curves(&events, 1)[0], ab[lane], "{method:?}");
    }
}

#[test]
fn ab_mode_refuses_a_method_switch_by_name() {
    let stats_dir = tempfile::tempdir().unwrap();
    let model = tiny_model(Arch::Llama, 21);
    let shared = stats(stats_dir.path());
    let lanes = vec![
        Runner::new(model.clone(), hparams(Method::Rome), shared.sibling()),
        Runner::new(model, hparams(Method::FtL), shared.sibling()),
    ];
    let handle = spawn_lanes(lanes, quiet_options());
    handle.send(Command::SetMethod(Method::Memit));
    let events = collect_until(&handle.events, |e| matches!(e, Event::Error(_)));
    let Some(Event::Error(why)) = events.last() else {
        unreachable!()
    };
    assert!(why.contains("A/B mode"), "{why}");
    handle.join();
}

#[test]
fn bisect_finds_the_first_edit_after_which_the_score_fell_and_leaves_the_edits_alone() {
    let cases = cases();
    let stats_dir = tempfile::tempdir().unwrap();
    let sessions = tempfile::tempdir().unwrap();
    let mut runner = Runner::new(
        tiny_model(Arch::Llama, 21),
        hparams(Method::D4s),
        stats(stats_dir.path()),
    );
    runner.start_session(sessions.path(), "b").unwrap();
    let dir = runner.session.as_ref().unwrap().dir.clone();
    let layers = hparams(Method::D4s).layers;
    // A probe whose score falls from the third edit on: it recognises each prefix by the
    // weights the journal recorded for it, so a prefix restored wrong cannot score.
    let journal = dir.join("journal.jsonl");
    let scorer: ProbeScorer = Box::new(move |_, model: &crate::model::Model| {
        if !model.is_edited()? {
            return Ok(0.5);
        }
        let now = crate::session::replay::weights_sha256(model, &layers)?;
        let events = crate::session::journal::read_journal(&journal)?.events;
        let k = events
            .iter()
            .filter_map(|e| match e {
                crate::session::journal::Event::Applied { weights_sha256, .. } => {
                    Some(weights_sha256)
                }
                _ => None,
            })
            .position(|w| *w == now)
            .expect("the weights of a journaled prefix")
            + 1;
        Ok(if k >= 3 { 0.3 } else { 0.5 })
    });
    let handle = spawn(
        runner,
        WorkerOptions {
            scorer: Some(scorer),
            ..quiet_options()
        },
    );
    let n = 5;
    for (i, c) in cases.iter().take(n).enumerate() {
        handle.send(Command::Edit {
            id: i as u64 + 1,
            request: c.requests[0].clone(),
        });
    }
    let edited = collect_until(
        &handle.events,
        |e| matches!(e, Event::Curve { point, .. } if point.edits == n),
    );
    let before = last_curves(&edited, 1);
    handle.send(Command::Bisect {
        probe: crate::eval::probes::Task::ArcEasy,
        drop: 0.1,
    });
    let events = collect_until(&handle.events, |e| {
        matches!(e, Event::Bisected { .. } | Event::Error(_))
    });
    let Some(Event::Bisected { found, .. }) = events.last() else {
        panic!("{events:?}")
    };
    assert_eq!(found.steps, n);
    let culprit = found.culprit.clone().expect("a culprit");
    assert_eq!(culprit.k, 3);
    assert_eq!(culprit.fact, cases[2].requests[0].describe());
    let measured = events
        .iter()
        .filter(|e| matches!(e, Event::BisectStep { .. }))
        .count();
    assert!(measured <= 5, "log2(5) + 2 prefixes at most: {events:?}");
    // The live model still has all its edits: re-evaluating gives the same numbers.
    handle.send(Command::Evaluate);
    let after = collect_until(&handle.events, |e| matches!(e, Event::Curve { .. }));
    assert_eq!(last_curves(&after, 1), before);
    handle.join();
}

#[test]
fn bisect_without_probe_data_or_journal_says_why() {
    let stats_dir = tempfile::tempdir().unwrap();
    let runner = Runner::new(
        tiny_model(Arch::Llama, 21),
        hparams(Method::Rome),
        stats(stats_dir.path()),
    );
    let handle = spawn(runner, quiet_options());
    let bisect = Command::Bisect {
        probe: crate::eval::probes::Task::ArcEasy,
        drop: 0.05,
    };
    handle.send(bisect.clone());
    let events = collect_until(&handle.events, |e| matches!(e, Event::Error(_)));
    assert!(
        matches!(events.last(), Some(Event::Error(e)) if e.contains("no probe data")),
        "{events:?}"
    );
    handle.join();
    let runner = Runner::new(
        tiny_model(Arch::Llama, 21),
        hparams(Method::Rome),
        stats(stats_dir.path()),
    );
    let handle = spawn(
        runner,
        WorkerOptions {
            scorer: Some(Box::new(|_, _| Ok(0.5))),
            ..quiet_options()
        },
    );
    handle.send(bisect);
    let events = collect_until(&handle.events, |e| matches!(e, Event::Error(_)));
    assert!(
        matches!(events.last(), Some(Event::Error(e)) if e.contains("no journal")),
        "{events:?}"
    );
    handle.join();
}

#[test]
fn a_queued_deck_optimizes_its_d4s_targets_in_one_pass_and_journals_it() {
    let cases = cases();
    let stats_dir = tempfile::tempdir().unwrap();
    let sessions = tempfile::tempdir().unwrap();
    let mut runner = Runner::new(
        tiny_model(Arch::Llama, 21),
        hparams(Method::D4s),
        stats(stats_dir.path()),
    );
    runner.start_session(sessions.path(), "deck").unwrap();
    let dir = runner.session.as_ref().unwrap().dir.clone();
    let handle = spawn(runner, quiet_options());
    // A deck arrives as one command: its first fact starts with the others behind it.
    let n = 4;
    handle.send(Command::EditAll(
        (1..=n as u64)
            .zip(cases.iter().map(|c| c.requests[0].clone()))
            .collect(),
    ));
    let events = collect_until(
        &handle.events,
        |e| matches!(e, Event::Curve { point, .. } if point.edits == n),
    );
    handle.join();
    let passes: Vec<String> = events
        .iter()
        .filter_map(|e| match e {
            Event::Log(line) if line.contains("in one pass") => Some(line.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        passes,
        ["D4S: optimized the targets of this fact and the next 3 queued in one pass"]
    );
    let journal = crate::session::journal::read_journal(&dir.join("journal.jsonl")).unwrap();
    let positions: Vec<_> = journal
        .events
        .iter()
        .filter_map(|e| match e {
            crate::session::journal::Event::Applied { target_pass, .. } => {
                Some(target_pass.as_ref().map(|p| (p.position, p.facts.len())))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        positions,
        [(0, 4), (1, 4), (2, 4), (3, 4)].map(Some).to_vec()
    );
}
