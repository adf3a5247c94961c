//! A/B mode's panes and state, and bisect from the TUI.

use super::*;

/// An A/B app (D4S against AlphaEdit) that has seen one fact land in both lanes, the second
/// lane's efficacy lower, with norms, curves and probes for each.
fn ab_app() -> App {
    let mut app = App::default();
    update(
        &mut app,
        Msg::Worker(Event::Ready {
            model: "tiny".into(),
            device: "Cpu".into(),
            lanes: [Method::D4s, Method::AlphaEdit]
                .into_iter()
                .map(|method| LaneInfo {
                    method,
                    layers: vec![4, 5, 6, 7, 8],
                    session: None,
                })
                .collect(),
        }),
    );
    typed(
        &mut app,
        "Eiffel Tower | The Eiffel Tower is located in the city of | Rome",
    );
    update(&mut app, key(KeyCode::Enter));
    for (lane, (eff, top)) in [(1.0, " Rome"), (0.25, " Paris")].into_iter().enumerate() {
        update(&mut app, Msg::Worker(Event::Started { id: 1, lane }));
        assert_eq!(app.queue[0].status(), Status::Running(None));
        let method = app.lanes[lane].method;
        update(
            &mut app,
            Msg::Worker(Event::Landed(Box::new(Landed {
                id: 1,
                lane,
                step: 1,
                method,
                metrics: metrics(eff, 0.5, 1.0),
                gen: GenMetrics::default(),
                answers_before: vec![],
                neighbour: None,
                answers: vec![],
                before: vec![pred(" Paris", 0.7)],
                after: vec![pred(top, 0.9)],
                layer_deltas: vec![(4, 0.5)],
                prob_initial: 0.003,
                prob_final: eff,
                seconds: 2.0,
            }))),
        );
        update(
            &mut app,
            Msg::Worker(Event::Norms {
                lane,
                edits: 1,
                layers: vec![norms(4, 0.144 + 0.001 * lane as f64, 1e-4, 0.1439)],
            }),
        );
        update(
            &mut app,
            Msg::Worker(Event::Curve {
                lane,
                point: CurvePoint {
                    edits: 1,
                    metrics: metrics(eff, 0.5, 0.9 - 0.2 * lane as f64),
                },
            }),
        );
        update(
            &mut app,
            Msg::Worker(Event::Probes {
                lane,
                edits: 1,
                results: vec![arc_easy(0.40 + 0.1 * lane as f64)],
            }),
        );
    }
    app
}

#[test]
fn ab_mode_shows_every_pane_side_by_side() {
    let mut app = ab_app();
    assert_eq!(app.queue[0].status(), Status::Done);
    assert_eq!(app.activity, crate::tui::app::Activity::Idle);
    app.focus = Pane::Queue;
    let screen = render(&app, 200, 50);
    // Status bar and input name both methods.
    assert!(screen.contains("D4S L4–8 vs AlphaEdit L4–8"), "{screen}");
    assert!(
        screen.contains("New fact (edited by D4S vs AlphaEdit)"),
        "{screen}"
    );
    // The queue row gives each lane's efficacy.
    assert!(
        screen.contains("D4S eff 1.00 · AlphaEdit eff 0.25"),
        "{screen}"
    );
    // The detail has a column per lane with that lane's predictions.
    assert!(screen.contains("D4S — done"), "{screen}");
    assert!(screen.contains("AlphaEdit — done"), "{screen}");
    assert!(screen.contains("after:  \" Rome\" 0.90"), "{screen}");
    assert!(screen.contains("after:  \" Paris\" 0.90"), "{screen}");
    // The chart draws one metric, a line per method, and says which.
    assert!(
        screen.contains("efficacy vs edits — D4S 1.00 · AlphaEdit 0.25"),
        "{screen}"
    );
    assert!(screen.contains("● D4S  ● AlphaEdit"), "{screen}");
    // Norms and probes, per lane.
    assert!(
        screen.contains("×1.001") && screen.contains("×1.008"),
        "{screen}"
    );
    assert!(screen.contains("D4S: arc_easy 0.40"), "{screen}");
    assert!(screen.contains("AlphaEdit: arc_easy 0.50"), "{screen}");
    // ←/→ in the chart pane switch the metric.
    app.focus = Pane::Charts;
    update(&mut app, key(KeyCode::Right));
    update(&mut app, key(KeyCode::Right));
    let screen = render(&app, 200, 50);
    assert!(
        screen.contains("specificity vs edits — D4S 0.90 · AlphaEdit 0.70"),
        "{screen}"
    );
    update(&mut app, key(KeyCode::Left));
    assert_eq!(
        app.chart_metric,
        crate::eval::bench::records::TokenMetric::Paraphrase
    );
    // A small terminal still draws it.
    let screen = render(&app, 80, 24);
    assert!(screen.contains("Edit queue"), "{screen}");
}

#[test]
fn ab_mode_keeps_its_methods_and_shows_a_lane_that_failed() {
    let mut app = ab_app();
    app.focus = Pane::Queue;
    assert!(update(&mut app, key(KeyCode::Char('m'))).is_empty());
    assert_eq!(app.overlay, Overlay::None);
    assert!(app
        .log
        .last()
        .unwrap()
        .contains("A/B mode compares D4S vs AlphaEdit"));
    // A second fact: D4S lands it, AlphaEdit rejects it; the fact counts as done.
    app.focus = Pane::Input;
    typed(&mut app, "A | A is in | B");
    update(&mut app, key(KeyCode::Enter));
    update(&mut app, Msg::Worker(Event::Started { id: 2, lane: 0 }));
    let mut landed = match &app.queue[0].lanes[0] {
        LaneEdit::Landed(l) => l.clone(),
        other => panic!("{other:?}"),
    };
    landed.id = 2;
    update(&mut app, Msg::Worker(Event::Landed(landed)));
    update(&mut app, Msg::Worker(Event::Started { id: 2, lane: 1 }));
    assert!(matches!(
        app.activity,
        crate::tui::app::Activity::Editing { lane: 1, .. }
    ));
    update(
        &mut app,
        Msg::Worker(Event::Rejected {
            id: 2,
            lane: Some(1),
            error: "the update is not finite".into(),
        }),
    );
    assert_eq!(app.queue[1].status(), Status::Done);
    assert!(app.log.last().unwrap().starts_with("AlphaEdit: rejected"));
    app.focus = Pane::Queue;
    app.selected = 1;
    let screen = render(&app, 200, 50);
    assert!(
        screen.contains("D4S eff 1.00 · AlphaEdit rejected"),
        "{screen}"
    );
    assert!(screen.contains("the update is not finite"), "{screen}");
    // An undo in one lane leaves the other's result.
    update(
        &mut app,
        Msg::Worker(Event::Undone {
            id: 2,
            lane: 0,
            step: 2,
            after: vec![pred(" C", 0.5)],
        }),
    );
    assert_eq!(app.queue[1].status(), Status::Undone);
}

#[test]
fn b_bisects_the_journal_and_selects_the_edit_it_finds() {
    use crate::eval::probes::Task;
    use crate::session::bisect::{Bisection, Culprit, SessionBisection};
    let mut app = busy_app();
    app.focus = Pane::Queue;
    update(&mut app, key(KeyCode::Char('b')));
    assert_eq!(
        app.overlay,
        Overlay::Prompt(PromptKind::Bisect, "arc_easy 0.05".into())
    );
    let fx = update(&mut app, key(KeyCode::Enter));
    assert_eq!(
        fx,
        vec![Effect::Send(Command::Bisect {
            probe: Task::ArcEasy,
            drop: 0.05
        })]
    );
    // Bad input is explained and sends nothing.
    for bad in ["nope 0.05", "mmlu 2", "mmlu 0.1 extra"] {
        update(&mut app, key(KeyCode::Char('b')));
        update(
            &mut app,
            Msg::Key(KeyEvent::new(KeyCode::Char('u'), KeyModifiers::CONTROL)),
        );
        typed(&mut app, bad);
        assert!(update(&mut app, key(KeyCode::Enter)).is_empty(), "{bad}");
        assert!(app.log.last().unwrap().starts_with("bisect: "), "{bad}");
    }
    update(
        &mut app,
        Msg::Worker(Event::Bisecting {
            lane: 0,
            probe: Task::ArcEasy,
        }),
    );
    assert!(render(&app, 160, 40).contains("bisecting on arc_easy"));
    // Another fact after the culprit, selected: the answer moves the selection to the culprit.
    let mut later = app.queue[0].clone();
    later.id = 2;
    later.lanes = vec![LaneEdit::Queued];
    app.queue.push(later);
    app.selected = 1;
    update(
        &mut app,
        Msg::Worker(Event::Bisected {
            lane: 0,
            probe: Task::ArcEasy,
            drop: 0.05,
            found: SessionBisection {
                steps: 1,
                bisection: Bisection {
                    baseline: 0.42,
                    measured: vec![(0, 0.42), (1, 0.30)],
                    first_drop: Some(1),
                },
                culprit: Some(Culprit {
                    k: 1,
                    step: 1,
                    fact: "The Eiffel Tower is located in the city of → Rome".into(),
                }),
            },
        }),
    );
    let line = app.log.last().unwrap();
    assert!(
        line.contains(
            "arc_easy first fell more than 0.05 below the unedited 0.420 after edit 1 of 1"
        ),
        "{line}"
    );
    assert!(line.contains("(#1 in the queue, selected)"), "{line}");
    assert_eq!(app.selected, 0);
    assert_eq!(app.activity, crate::tui::app::Activity::Idle);
}

#[test]
fn a_deck_queued_before_the_worker_is_ready_gets_a_slot_in_every_lane() {
    let mut app = App::default();
    update(
        &mut app,
        Msg::Worker(Event::Deck {
            source: "demo".into(),
            requests: vec![EditRequest::new("A", "A is in", "B")],
            skipped: vec![],
        }),
    );
    update(
        &mut app,
        Msg::Worker(Event::Ready {
            model: "tiny".into(),
            device: "Cpu".into(),
            lanes: [Method::D4s, Method::Memit, Method::AlphaEdit]
                .into_iter()
                .map(|method| LaneInfo {
                    method,
                    layers: vec![4],
                    session: None,
                })
                .collect(),
        }),
    );
    assert_eq!(app.queue[0].lanes, vec![LaneEdit::Queued; 3]);
    app.focus = Pane::Queue;
    let screen = render(&app, 200, 40);
    assert!(
        screen.contains("D4S queued · MEMIT queued · AlphaEdit queued"),
        "{screen}"
    );
}
