//! What batching the target optimization across facts could buy: the time of one §1.7
//! optimization (fixed steps, no early stop) on the default model for one fact's rewriting rows,
//! and for the same rows repeated as if 2, 4 and 8 facts went through one forward/backward.
//!
//! `RAYON_NUM_THREADS=1 cargo bench --bench target_batch` (and again with 2). Prints a Markdown
//! table: seconds per optimization and per fact-equivalent.

use std::time::Instant;

use d4s::edit::target::{optimize, OptimOptions, TargetParams, TargetProblem};
use d4s::edit::{EditControl, EditRequest, HParams, Method};
use d4s::model::{load, ModelSpec};

fn main() {
    let model = load::load(&ModelSpec::Default, &Default::default()).unwrap();
    let hp = HParams::defaults(Method::D4s, &model.config);
    let layer = *hp.layers.last().unwrap();
    let mut params = TargetParams::from_hparams(&hp);
    params.steps = 10;
    params.stop_loss = None;
    params.stop_prob = None;
    // The default model's context templates: "{}" and ten sampled prefixes' worth of rows.
    let contexts: Vec<String> = std::iter::once("{}".to_string())
        .chain((0..10).map(|i| format!("Context number {i} says this. {{}}")))
        .collect();
    let request = EditRequest::new(
        "Eiffel Tower",
        "The Eiffel Tower is located in the city of",
        "Rome",
    );
    println!("| facts in one pass | rows | s per optimization | s per fact |");
    println!("|---|---|---|---|");
    for facts in [1usize, 2, 4, 8] {
        let ctx: Vec<String> = (0..facts).flat_map(|_| contexts.clone()).collect();
        let problem = TargetProblem::residual(&model, &request, &ctx, layer).unwrap();
        let run = || {
            optimize(
                &model,
                &problem,
                &params,
                OptimOptions::default(),
                &EditControl::default(),
            )
            .unwrap()
        };
        let _ = run();
        let reps = 3;
        let t = Instant::now();
        for _ in 0..reps {
            std::hint::black_box(run());
        }
        let s = t.elapsed().as_secs_f64() / reps as f64;
        println!(
            "| {facts} | {} | {s:.2} | {:.2} |",
            problem.rows.len() + 1,
            s / facts as f64
        );
    }
}
