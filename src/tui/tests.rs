//! View tests on ratatui's TestBackend and state tests of `update`.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::backend::TestBackend;
use ratatui::Terminal;

use super::app::{App, LaneEdit, Overlay, Pane, PromptKind, Status};
use super::update::{update, Effect, Msg};
use super::view::view;
use crate::edit::{EditRequest, Method, Progress};
use crate::eval::bench::records::{GenMetrics, TokenMetrics};
use crate::eval::bench::LayerNorms;
use crate::eval::predict::Prediction;
use crate::eval::probes::ProbeResult;
use crate::worker::{Command, CurvePoint, Event, Landed, LaneInfo};

fn key(c: KeyCode) -> Msg {
    Msg::Key(KeyEvent::new(c, KeyModifiers::NONE))
}

fn typed(app: &mut App, s: &str) -> Vec<Effect> {
    let mut fx = vec![];
    for c in s.chars() {
        fx.extend(update(app, key(KeyCode::Char(c))));
    }
    fx
}

fn render(app: &App, w: u16, h: u16) -> String {
    let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
    t.draw(|f| view(f, app)).unwrap();
    let buf = t.backend().buffer().clone();
    let mut out = String::new();
    for y in 0..h {
        for x in 0..w {
            out.push_str(buf[(x, y)].symbol());
        }
        out.push('\n');
    }
    out
}

fn ready(app: &mut App) {
    update(
        app,
        Msg::Worker(Event::Ready {
            model: "tiny".into(),
            device: "Cpu".into(),
            lanes: vec![LaneInfo {
                method: Method::D4s,
                layers: vec![4, 5, 6, 7, 8],
                session: None,
            }],
        }),
    );
}

fn pred(t: &str, p: f64) -> Prediction {
    Prediction {
        token: t.into(),
        prob: p,
    }
}

fn metrics(efficacy: f64, paraphrase: f64, specificity: f64) -> TokenMetrics {
    TokenMetrics {
        efficacy: Some(efficacy),
        paraphrase: Some(paraphrase),
        specificity: Some(specificity),
        portability: None,
    }
}

fn norms(layer: usize, l1: f64, delta: f64, w0: f64) -> LayerNorms {
    LayerNorms {
        layer,
        l1_mean: l1,
        fro: 0.0,
        delta_l1_mean: delta,
        delta_fro: 0.0,
        w0_l1_mean: Some(w0),
    }
}

fn arc_easy(acc_norm: f64) -> ProbeResult {
    ProbeResult {
        task: "arc_easy".into(),
        metrics: [("acc_norm".to_string(), acc_norm)].into(),
        intervals: [(
            "acc_norm".to_string(),
            crate::eval::interval::Interval {
                lo: acc_norm - 0.05,
                hi: acc_norm + 0.05,
            },
        )]
        .into(),
        n: 100,
        seconds: 1.0,
        shots: 0,
    }
}

/// An app that has seen one edit land, norms, a curve and probes.
fn busy_app() -> App {
    let mut app = App::default();
    ready(&mut app);
    let fx = typed(
        &mut app,
        "Eiffel Tower | The Eiffel Tower is located in the city of | Rome",
    );
    assert!(fx.is_empty());
    let fx = update(&mut app, key(KeyCode::Enter));
    assert_eq!(fx.len(), 1);
    update(&mut app, Msg::Worker(Event::Started { id: 1, lane: 0 }));
    update(
        &mut app,
        Msg::Worker(Event::Landed(Box::new(Landed {
            id: 1,
            lane: 0,
            step: 1,
            method: Method::D4s,
            metrics: metrics(1.0, 0.5, 1.0),
            gen: GenMetrics {
                efficacy_em: Some(1.0),
                efficacy_f1: Some(0.5),
                ..Default::default()
            },
            answers_before: vec!["Paris, the capital".into()],
            neighbour: Some((
                "The capital of France is".into(),
                "Paris".into(),
                "Paris".into(),
            )),
            answers: vec!["Rome, Italy".into()],
            before: vec![pred(" Paris", 0.7)],
            after: vec![pred(" Rome", 0.98)],
            layer_deltas: vec![(4, 0.77), (8, 3.3)],
            prob_initial: 0.003,
            prob_final: 0.97,
            seconds: 6.5,
        }))),
    );
    update(
        &mut app,
        Msg::Worker(Event::Norms {
            lane: 0,
            edits: 1,
            layers: vec![
                norms(4, 0.14399, 4.9e-4, 0.14390),
                norms(8, 0.15008, 1.9e-3, 0.1497),
            ],
        }),
    );
    update(
        &mut app,
        Msg::Worker(Event::Curve {
            lane: 0,
            point: CurvePoint {
                edits: 1,
                metrics: metrics(1.0, 0.5, 1.0),
            },
        }),
    );
    update(
        &mut app,
        Msg::Worker(Event::Probes {
            lane: 0,
            edits: 0,
            results: vec![arc_easy(0.42)],
        }),
    );
    update(
        &mut app,
        Msg::Worker(Event::Probes {
            lane: 0,
            edits: 1,
            results: vec![arc_easy(0.40)],
        }),
    );
    app
}

#[test]
fn the_probes_title_names_the_baselines_edit() {
    let mut app = App::default();
    for (edits, v) in [(6, 0.5), (9, 0.45)] {
        update(
            &mut app,
            Msg::Worker(Event::Probes {
                lane: 0,
                edits,
                results: vec![arc_easy(v)],
            }),
        );
    }
    let screen = render(&app, 200, 60);
    assert!(screen.contains("Probes (change since edit 6)"), "{screen}");
    assert!(screen.contains("(-0.05)"), "{screen}");
}

#[test]
fn every_pane_renders_at_small_and_large_sizes() {
    let app = busy_app();
    for (w, h) in [(80, 24), (200, 60)] {
        let screen = render(&app, w, h);
        assert!(screen.contains("Edit queue"), "{w}x{h}\n{screen}");
        assert!(
            screen.contains("→ Rome"),
            "queue shows the new prediction at {w}x{h}\n{screen}"
        );
        assert!(screen.contains("Metrics vs edits"), "{screen}");
        assert!(screen.contains("L4"), "norm sparkline rows\n{screen}");
        assert!(screen.contains("New fact"), "{screen}");
        assert!(screen.contains("Log"), "{screen}");
        assert!(screen.contains("D4S"), "status bar\n{screen}");
        if h >= 30 {
            assert!(
                screen.contains("arc_easy 0.40 ±0.05 n=100 (-0.02)"),
                "probes with interval, items and change\n{screen}"
            );
            assert!(screen.contains("Probes (change since edit 0)"), "{screen}");
            assert!(
                screen.contains("generated: EM 1.00  F1 0.50"),
                "generation metrics\n{screen}"
            );
            assert!(
                screen.contains("prompt says \"Paris, the capital\" → \"Rome, Italy\""),
                "greedy answers before and after\n{screen}"
            );
            assert!(
                screen.contains("before: \" Paris\" 0.70"),
                "detail\n{screen}"
            );
        }
    }
    // The empty app renders too.
    let screen = render(&App::default(), 80, 24);
    assert!(screen.contains("no edits yet"));
}

#[test]
fn the_help_is_whole_at_every_size_that_can_hold_it() {
    let mut app = busy_app();
    app.lanes[0].session = Some(std::path::PathBuf::from(
        "sessions/20261206-231500-d4s-a-long-session-name",
    ));
    app.overlay = Overlay::Help;
    for (w, h) in [(180, 50), (120, 40), (100, 30)] {
        let screen = render(&app, w, h);
        assert!(
            screen.contains("any key closes this help"),
            "{w}x{h}: {screen}"
        );
        assert!(screen.contains("q        quit"), "{w}x{h}: {screen}");
        assert!(screen.contains("Ctrl-W"), "{w}x{h}: {screen}");
    }
    // Wide enough for every line: nothing wraps, the journal's path is on one line.
    let screen = render(&app, 180, 50);
    assert!(
        screen.contains(
            "journaled (fsync'ed) under sessions/20261206-231500-d4s-a-long-session-name."
        ),
        "{screen}"
    );
}

#[test]
fn overlays_render() {
    let mut app = busy_app();
    app.focus = Pane::Queue;
    for (k, needle) in [
        ('?', "Help"),
        ('m', "Method for next edits"),
        ('l', "Load deck"),
        ('o', "Open session"),
        ('f', "New fact"),
    ] {
        app.overlay = Overlay::None;
        update(&mut app, key(KeyCode::Char(k)));
        let screen = render(&app, 120, 40);
        assert!(screen.contains(needle), "{k}: {screen}");
    }
}

#[test]
fn invalid_facts_are_explained_and_not_queued() {
    let mut app = App::default();
    ready(&mut app);
    typed(&mut app, "Louvre | The Eiffel Tower is in | Rome");
    let fx = update(&mut app, key(KeyCode::Enter));
    assert!(fx.is_empty());
    assert!(app.queue.is_empty());
    assert!(app
        .input_error
        .as_deref()
        .unwrap()
        .contains("does not contain the subject"));
    assert!(render(&app, 120, 30).contains("does not contain the subject"));
    app.input.clear();
    typed(&mut app, "only two | fields");
    update(&mut app, key(KeyCode::Enter));
    assert!(app.input_error.is_some());
    // The form: enter with an empty target is refused, then fixed and queued.
    app.focus = Pane::Queue;
    update(&mut app, key(KeyCode::Char('f')));
    typed(&mut app, "Apple");
    update(&mut app, key(KeyCode::Tab));
    typed(&mut app, "Apple was founded by");
    update(&mut app, key(KeyCode::Enter));
    assert!(matches!(app.overlay, Overlay::Form(..)));
    assert!(app.input_error.is_some());
    update(&mut app, key(KeyCode::Tab));
    typed(&mut app, "Bill Gates");
    let fx = update(&mut app, key(KeyCode::Enter));
    assert_eq!(app.overlay, Overlay::None);
    assert_eq!(
        fx,
        vec![Effect::Send(Command::Edit {
            id: 1,
            request: EditRequest::new("Apple", "Apple was founded by", "Bill Gates")
        })]
    );
}

#[test]
fn a_deck_reaches_the_worker_as_one_command_so_its_facts_queue_together() {
    let mut app = App::default();
    let deck: Vec<EditRequest> = ["B", "C", "D"]
        .iter()
        .map(|t| EditRequest::new("A", "A is in", t))
        .collect();
    let fx = update(
        &mut app,
        Msg::Worker(Event::Deck {
            source: "demo".into(),
            requests: deck.clone(),
            skipped: vec![],
        }),
    );
    let ids: Vec<u64> = app.queue.iter().map(|q| q.id).collect();
    assert_eq!(
        fx,
        vec![Effect::Send(Command::EditAll(
            ids.into_iter().zip(deck).collect()
        ))]
    );
}

#[test]
fn keys_map_to_worker_commands() {
    let mut app = busy_app();
    update(&mut app, key(KeyCode::Esc));
    assert_eq!(app.focus, Pane::Queue);
    assert_eq!(
        update(&mut app, key(KeyCode::Char('u'))),
        vec![Effect::Send(Command::Undo)]
    );
    assert_eq!(
        update(&mut app, key(KeyCode::Char('p'))),
        vec![Effect::Send(Command::RunProbes)]
    );
    assert_eq!(
        update(&mut app, key(KeyCode::Char(' '))),
        vec![Effect::Send(Command::Pause(true))]
    );
    assert_eq!(
        update(&mut app, key(KeyCode::Char('c'))),
        vec![Effect::CancelInFlight]
    );
    assert_eq!(
        update(&mut app, key(KeyCode::Char('s'))),
        vec![Effect::Send(Command::Save)]
    );
    // Method picker: down, enter → switch to ROME.
    update(&mut app, key(KeyCode::Char('m')));
    update(&mut app, key(KeyCode::Down));
    assert_eq!(
        update(&mut app, key(KeyCode::Enter)),
        vec![Effect::Send(Command::SetMethod(Method::Rome))]
    );
    // Deck prompt.
    update(&mut app, key(KeyCode::Char('l')));
    assert_eq!(
        update(&mut app, key(KeyCode::Enter)),
        vec![Effect::Send(Command::LoadDeck("demo".into()))]
    );
    // Tab cycles the panes and comes back.
    let start = app.focus;
    for _ in 0..4 {
        update(&mut app, key(KeyCode::Tab));
    }
    assert_eq!(app.focus, start);
}

#[test]
fn quitting_asks_while_work_runs() {
    let mut app = busy_app();
    app.focus = Pane::Queue;
    assert_eq!(
        update(&mut app, key(KeyCode::Char('q'))),
        vec![Effect::Quit],
        "nothing running: quit at once"
    );
    let mut app = busy_app();
    app.focus = Pane::Queue;
    app.queue.push(app.queue[0].clone());
    app.queue[1].lanes[0] = LaneEdit::Queued;
    assert!(update(&mut app, key(KeyCode::Char('q'))).is_empty());
    assert_eq!(app.overlay, Overlay::ConfirmQuit);
    assert!(update(&mut app, key(KeyCode::Char('n'))).is_empty());
    assert!(!app.should_quit);
    update(&mut app, key(KeyCode::Char('q')));
    assert_eq!(
        update(&mut app, key(KeyCode::Char('y'))),
        vec![Effect::CancelInFlight, Effect::Quit]
    );
    assert!(app.should_quit);
}

#[test]
fn every_worker_event_is_handled() {
    let mut app = busy_app();
    let events = vec![
        Event::Log("hello".into()),
        Event::Progress {
            id: 1,
            lane: 0,
            progress: Progress::TargetStep {
                step: 3,
                of: 25,
                loss: 1.5,
                prob: 0.2,
            },
        },
        Event::Evaluating,
        Event::ProbesStarted,
        Event::Rejected {
            id: 1,
            lane: Some(0),
            error: "edit rejected: NaN".into(),
        },
        Event::Cancelled { id: 1 },
        Event::Undone {
            id: 1,
            lane: 0,
            step: 1,
            after: vec![pred(" Paris", 0.7)],
        },
        Event::ProbesUnavailable("no data".into()),
        Event::MethodChanged {
            method: Method::Memit,
            layers: vec![4, 5],
        },
        Event::Paused(true),
        Event::Idle,
        Event::Deck {
            source: "demo".into(),
            requests: vec![EditRequest::new("A", "A is in", "B")],
            skipped: vec![
                "deck.jsonl:2: missing field `target`".into(),
                "deck.jsonl:5: the subject \"X\" does not occur in the prompt".into(),
            ],
        },
        Event::Error("disk full".into()),
        Event::Panicked("the worker hit a bug".into()),
    ];
    for e in events {
        update(&mut app, Msg::Worker(e));
    }
    assert_eq!(app.method(), Method::Memit);
    assert!(app.paused);
    assert_eq!(app.queue.len(), 2, "the deck was queued");
    assert_eq!(app.queue[0].status(), Status::Undone);
    // What was measured when the edit landed describes no model that exists any more.
    assert_eq!(app.queue[0].lanes[0].landed(), None);
    assert_eq!(app.probes_note.as_deref(), Some("no data"));
    assert!(app.last_error.as_deref().unwrap().contains("bug"));
    assert!(app.log.iter().any(|l| l.contains("worker panic")));
    assert!(app.log.iter().any(|l| l.contains("2 bad records skipped")));
    // Each skipped record is named with its line and why.
    assert!(app
        .log
        .iter()
        .any(|l| l.contains("deck.jsonl:2: missing field `target`")));
    assert!(app.log.iter().any(|l| l.contains("deck.jsonl:5:")));
    let screen = render(&app, 80, 24);
    assert!(screen.contains("last error"), "{screen}");
}

#[test]
fn norm_history_starts_at_the_unedited_value() {
    let app = busy_app();
    let h = &app.lanes[0].norms[&4];
    assert_eq!(h.weight, vec![0.14390, 0.14399]);
    assert!((h.growth().unwrap() - 0.14399 / 0.14390).abs() < 1e-12);
}

#[test]
fn ctrl_u_clears_and_ctrl_w_deletes_a_word_in_every_text_field() {
    let ctrl = |c| Msg::Key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::CONTROL));
    let mut app = App::default();
    ready(&mut app);
    typed(&mut app, "Eiffel Tower | is in  ");
    update(&mut app, ctrl('w'));
    assert_eq!(app.input, "Eiffel Tower | is ");
    update(&mut app, ctrl('u'));
    assert_eq!(app.input, "", "Ctrl-U types no 'u'");
    // The same keys in the deck prompt and in the fact form.
    app.focus = Pane::Queue;
    update(&mut app, key(KeyCode::Char('l')));
    update(&mut app, ctrl('w'));
    assert_eq!(
        app.overlay,
        Overlay::Prompt(PromptKind::Deck, String::new())
    );
    update(&mut app, key(KeyCode::Esc));
    update(&mut app, key(KeyCode::Char('f')));
    typed(&mut app, "Eiffel Tower");
    update(&mut app, ctrl('w'));
    let Overlay::Form(fields, _) = &app.overlay else {
        panic!("{:?}", app.overlay)
    };
    assert_eq!(fields[0], "Eiffel ");
}

#[test]
fn the_queue_header_counts_the_edit_in_flight() {
    let mut app = App::default();
    ready(&mut app);
    typed(&mut app, "A | A is in | B");
    update(&mut app, key(KeyCode::Enter));
    typed(&mut app, "C | C is in | D");
    update(&mut app, key(KeyCode::Enter));
    update(&mut app, Msg::Worker(Event::Started { id: 1, lane: 0 }));
    let screen = render(&app, 120, 30);
    assert!(
        screen.contains("Edit queue (0 done, 1 running, 1 queued)"),
        "{screen}"
    );
}

#[test]
fn a_dropped_queue_shows_at_once_in_one_line_and_a_pause_waits_for_the_edit_in_flight() {
    let mut app = App::default();
    ready(&mut app);
    for fact in ["A | A is in | B", "C | C is in | D", "E | E is in | F"] {
        typed(&mut app, fact);
        update(&mut app, key(KeyCode::Enter));
    }
    update(&mut app, Msg::Worker(Event::Started { id: 1, lane: 0 }));
    update(&mut app, Msg::Worker(Event::Paused(true)));
    let screen = render(&app, 160, 40);
    assert!(screen.contains("pausing after this edit"), "{screen}");
    assert!(!screen.contains("idle"), "{screen}");

    update(&mut app, key(KeyCode::Esc));
    let fx = update(&mut app, key(KeyCode::Char('x')));
    assert_eq!(fx, vec![Effect::Send(Command::ClearQueue)]);
    let lines_before = app.log.len();
    update(
        &mut app,
        Msg::Worker(Event::QueueCleared {
            ids: vec![2, 3],
            in_flight: true,
        }),
    );
    assert_eq!(
        app.log.len(),
        lines_before + 1,
        "one line, not one per edit"
    );
    assert!(app.log.last().unwrap().contains("dropped 2 queued edits"));
    assert_eq!(app.queue[0].status(), Status::Running(None));
    assert_eq!(app.queue[1].status(), Status::Cancelled);
    assert_eq!(app.queue[2].status(), Status::Cancelled);
    update(
        &mut app,
        Msg::Worker(Event::QueueCleared {
            ids: vec![],
            in_flight: true,
        }),
    );
    assert!(app
        .log
        .last()
        .unwrap()
        .starts_with("no queued edits to drop"));

    update(&mut app, Msg::Worker(Event::Cancelled { id: 1 }));
    update(&mut app, Msg::Worker(Event::Idle));
    let screen = render(&app, 160, 40);
    assert!(screen.contains("paused"), "{screen}");
    assert!(!screen.contains("pausing"), "{screen}");
}

#[test]
fn the_background_statistics_show_tokens_and_time_left_until_ready() {
    let mut app = App::default();
    ready(&mut app);
    update(
        &mut app,
        Msg::Worker(Event::Statistics {
            done: 4038,
            total: 30720,
            elapsed_s: 15.0,
        }),
    );
    let screen = render(&app, 160, 40);
    // 15 s for 4,038 tokens: 26,682 more take about 99 s.
    assert!(
        screen.contains("key statistics 4,038/30,720 tokens, about 1 min 39 s left"),
        "{screen}"
    );
    update(
        &mut app,
        Msg::Worker(Event::StatisticsReady {
            seconds: 112.0,
            computed: true,
        }),
    );
    let screen = render(&app, 160, 40);
    assert!(!screen.contains("key statistics 4,038"), "{screen}");
    assert!(app
        .log
        .last()
        .unwrap()
        .contains("key statistics gathered in 112 s"));
}

#[test]
fn a_single_evaluation_point_is_drawn_and_the_legend_covers_no_point() {
    let mut app = App::default();
    ready(&mut app);
    update(
        &mut app,
        Msg::Worker(Event::Curve {
            lane: 0,
            point: CurvePoint {
                edits: 1,
                metrics: metrics(1.0, 0.5, 1.0),
            },
        }),
    );
    let screen = render(&app, 120, 40);
    assert!(screen.contains('•'), "the one point is marked:\n{screen}");
    let legend = screen
        .lines()
        .find(|l| l.contains("● efficacy"))
        .unwrap_or_else(|| panic!("a legend line:\n{screen}"));
    assert!(
        legend.contains("● paraphrase") && legend.contains("● specificity"),
        "{legend}"
    );
    // The legend line is its own row: no plotted mark shares it.
    let chart_part: String = legend.chars().skip_while(|&c| c != '●').collect();
    assert!(!chart_part.contains('•'), "{legend}");
}

#[test]
fn a_small_terminal_keeps_the_probes_pane_and_the_details_key_lines() {
    let mut app = busy_app();
    app.focus = Pane::Queue;
    let screen = render(&app, 80, 24);
    assert!(screen.contains("Probes"), "{screen}");
    assert!(screen.contains("after:"), "{screen}");
    assert!(screen.contains("efficacy 1.00"), "{screen}");
    assert!(screen.contains("Metrics vs edits"), "{screen}");
}

#[test]
fn the_detail_previews_a_neighbours_continuation_before_and_after() {
    let mut app = busy_app();
    app.focus = Pane::Queue;
    let screen = render(&app, 160, 45);
    // (The line may wrap in a narrow pane.)
    assert!(screen.contains("says \"Paris\" → \"Paris\""), "{screen}");
    assert!(screen.contains("(unchanged)"), "{screen}");
    assert!(
        screen.contains("prompt says \"Paris, the capital\" → \"Rome, Italy\""),
        "{screen}"
    );
}

#[test]
fn the_status_bar_names_a_probe_that_fell_beyond_its_interval() {
    let mut app = busy_app();
    // busy_app's baseline: ARC-Easy 0.42 ± 0.05. A fall to 0.37 is within the two intervals
    // (±0.10 together); to 0.20 it is twice beyond them.
    update(
        &mut app,
        Msg::Worker(Event::Probes {
            lane: 0,
            edits: 5,
            results: vec![arc_easy(0.37)],
        }),
    );
    assert_eq!(app.lanes[0].watch.alert, None);
    update(
        &mut app,
        Msg::Worker(Event::Probes {
            lane: 0,
            edits: 9,
            results: vec![arc_easy(0.20)],
        }),
    );
    let alert = app.lanes[0].watch.alert.clone().expect("an alert");
    assert_eq!(alert.severity, crate::tui::watch::Severity::Red);
    assert!(
        alert.message.contains("arc_easy fell 0.22 by edit 9"),
        "{alert:?}"
    );
    let screen = render(&app, 200, 40);
    assert!(screen.contains("⚠ arc_easy fell"), "{screen}");
}

#[test]
fn the_status_bar_says_running_probes_until_they_return() {
    let mut app = busy_app();
    update(&mut app, Msg::Worker(Event::ProbesStarted));
    let screen = render(&app, 160, 40);
    let status = screen.lines().next().unwrap();
    assert!(status.contains("running probes"), "{status}");
    assert!(!status.contains("idle"), "{status}");
    // An evaluation point arriving meanwhile does not make it idle.
    update(
        &mut app,
        Msg::Worker(Event::Curve {
            lane: 0,
            point: CurvePoint {
                edits: 1,
                metrics: metrics(1.0, 0.5, 1.0),
            },
        }),
    );
    assert!(render(&app, 160, 40)
        .lines()
        .next()
        .unwrap()
        .contains("running probes"));
    update(
        &mut app,
        Msg::Worker(Event::Probes {
            lane: 0,
            edits: 1,
            results: vec![arc_easy(0.41)],
        }),
    );
    assert!(render(&app, 160, 40)
        .lines()
        .next()
        .unwrap()
        .contains("idle"));
}

mod ab;
