//! The editors on the real default model (integration; the statistics use the default corpus
//! and are computed once per machine, then cached).

mod common;

use std::sync::Mutex;

use d4s::edit::{
    new_editor, EditContext, EditControl, EditRequest, HParams, Method, StatsCache, StatsConfig,
    TargetCache,
};
use d4s::eval::metrics::token_accuracy;
use d4s::eval::predict::top_next;
use d4s::model::Model;

/// The default model is shared; each test takes it for the duration of its edits.
fn model() -> &'static Mutex<Model> {
    static M: std::sync::OnceLock<Mutex<Model>> = std::sync::OnceLock::new();
    M.get_or_init(|| {
        Mutex::new(
            d4s::model::load::load(&d4s::model::ModelSpec::Default, &Default::default())
                .expect("default model"),
        )
    })
}

fn edit(
    model: &mut Model,
    method: Method,
    reqs: &[EditRequest],
    stats: &mut StatsCache,
    targets: &mut TargetCache,
) -> Box<dyn d4s::edit::Editor> {
    let hp = HParams::defaults(method, &model.config);
    let mut editor = new_editor(hp);
    let mut cx = EditContext {
        stats,
        targets: Some(targets),
        target_group: None,
        ctl: EditControl::default(),
    };
    editor
        .apply(model, &mut cx, reqs)
        .unwrap_or_else(|e| panic!("{method}: {e}"));
    editor
}

fn top1(model: &Model, prompt: &str) -> String {
    top_next(model, &[prompt.to_string()], 1).unwrap()[0][0]
        .token
        .clone()
}

#[test]
fn four_methods_move_the_eiffel_tower_and_keep_paris() {
    let mut guard = model().lock().unwrap();
    let model = &mut *guard;
    let mut stats = StatsCache::new(StatsConfig::default());
    let mut targets = TargetCache::new();
    for method in [Method::Rome, Method::Memit, Method::D4s, Method::AlphaEdit] {
        model.reset_edits();
        assert_eq!(
            top1(model, "The Eiffel Tower is located in the city of"),
            " Paris"
        );
        edit(
            model,
            method,
            &[EditRequest::new(
                "Eiffel Tower",
                "The Eiffel Tower is located in the city of",
                "Rome",
            )],
            &mut stats,
            &mut targets,
        );
        assert_eq!(
            top1(model, "The Eiffel Tower is located in the city of"),
            " Rome",
            "{method}"
        );
        assert_eq!(
            top1(model, "The capital of France is"),
            " Paris",
            "{method}"
        );
    }
    // MEMIT, D4S and AlphaEdit optimize the same target on W0: computed once.
    assert_eq!((targets.misses(), targets.hits()), (2, 2));
    model.reset_edits();
}

#[test]
fn counterfact_single_edit_rewrite_accuracy_rome_10_others_20() {
    let Some(path) = common::shared("data/counterfact_easyedit/counterfact-edit.json") else {
        return;
    };
    let records: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let reqs: Vec<EditRequest> = records[..20]
        .iter()
        .map(|r| {
            EditRequest::new(
                r["subject"].as_str().unwrap(),
                r["prompt"].as_str().unwrap(),
                r["target_new"].as_str().unwrap(),
            )
        })
        .collect();
    // Two workers, each with its own copy of the model, share the four methods. MEMIT, D4S and
    // AlphaEdit optimize the same targets on W0 (a shared cache computes each once), ROME its
    // own over 21 context templates (~33 s an edit on one core): ROME takes the first 10
    // records, so that its worker ends about when the other one's 3 × 20 edits do.
    let results: Vec<(Method, f64, Vec<f64>, f64)> = std::thread::scope(|scope| {
        let handles: Vec<_> = [
            (vec![Method::Rome], &reqs[..10]),
            (
                vec![Method::D4s, Method::Memit, Method::AlphaEdit],
                &reqs[..],
            ),
        ]
        .into_iter()
        .map(|(methods, reqs)| {
            scope.spawn(move || {
                let mut model =
                    d4s::model::load::load(&d4s::model::ModelSpec::Default, &Default::default())
                        .expect("default model");
                let mut stats = StatsCache::new(StatsConfig::default());
                let mut targets = TargetCache::new();
                let later_methods = methods.len() as u64 - 1;
                let results = methods
                    .into_iter()
                    .map(|method| {
                        let t = std::time::Instant::now();
                        let mut accs = Vec::new();
                        for r in reqs {
                            model.reset_edits();
                            edit(
                                &mut model,
                                method,
                                std::slice::from_ref(r),
                                &mut stats,
                                &mut targets,
                            );
                            accs.extend(
                                token_accuracy(&model, &[(r.filled_prompt(), r.target.clone())])
                                    .unwrap(),
                            );
                        }
                        let mean = accs.iter().sum::<f64>() / accs.len() as f64;
                        (method, mean, accs, t.elapsed().as_secs_f64())
                    })
                    .collect::<Vec<_>>();
                assert_eq!(
                    targets.hits(),
                    later_methods * reqs.len() as u64,
                    "every method after the first reuses each record's target"
                );
                results
            })
        })
        .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("worker thread"))
            .collect()
    });
    for (method, mean, accs, secs) in &results {
        eprintln!(
            "{method}: rewrite accuracy {mean:.3} over {} records in {secs:.0} s",
            accs.len()
        );
    }
    for (method, mean, accs, _) in &results {
        assert!(
            *mean >= 0.9,
            "{method}: rewrite accuracy {mean:.3} < 0.9 ({accs:?})"
        );
    }
}
