//! Runtime benchmarks on the default model: load, batched forward, KV-cached generation and one
//! target-optimization-style step (forward + backward through all layers).
//!
//! `RAYON_NUM_THREADS=1 cargo bench --bench runtime` (and again with 2). Prints Markdown tables:
//! the runtime, and the small-row matmul path against the plain product.

use std::time::Instant;

use candle_core::{Tensor, Var};
use d4s::model::generate::{target_logprobs, GenerateOptions};
use d4s::model::{load, Forward, Input, Logits, ModelSpec, Site, SiteDelta};

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn time<T>(reps: usize, mut f: impl FnMut() -> T) -> f64 {
    let _ = f(); // warm-up
    median(
        (0..reps)
            .map(|_| {
                let t = Instant::now();
                std::hint::black_box(f());
                t.elapsed().as_secs_f64()
            })
            .collect(),
    )
}

fn main() {
    let threads = std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "default".into());
    let load_s = time(3, || {
        load::load(&ModelSpec::Default, &Default::default()).unwrap()
    });
    let model = load::load(&ModelSpec::Default, &Default::default()).unwrap();
    let rss = d4s::util::resident_memory().unwrap_or(0);

    let rows: Vec<Vec<u32>> = (0..8)
        .map(|r| (0..16).map(|i| (100 + 37 * r + 11 * i) as u32).collect())
        .collect();
    let fwd_last = time(5, || {
        model
            .forward(
                Input::Tokens(&rows),
                &Forward {
                    logits: Logits::At((0..8).map(|r| (r, 15)).collect()),
                    ..Default::default()
                },
            )
            .unwrap()
    });
    let fwd_all = time(5, || {
        model
            .forward(
                Input::Tokens(&rows),
                &Forward {
                    logits: Logits::All,
                    ..Default::default()
                },
            )
            .unwrap()
    });

    let prompt = model
        .encode("The Eiffel Tower is located in the city of")
        .unwrap();
    let n_new = 64;
    let opts = GenerateOptions {
        max_tokens: n_new,
        stop_at_eos: false,
        ..Default::default()
    };
    let gen_s = time(3, || {
        model
            .generate_batch_with(std::slice::from_ref(&prompt), &opts, |_, _| true)
            .unwrap()
    });

    // A v*-style step: 5 prompts × 15 tokens, δ at layer 4's output, NLL at the last 3 positions of
    // each row, backward through all layers above.
    let vrows: Vec<Vec<u32>> = (0..5)
        .map(|r| (0..15).map(|i| (200 + 53 * r + 7 * i) as u32).collect())
        .collect();
    let delta = Var::from_tensor(
        &Tensor::zeros(model.config.d_model, candle_core::DType::F32, &model.device).unwrap(),
    )
    .unwrap();
    let at: Vec<(usize, usize)> = (0..5).flat_map(|r| (12..15).map(move |p| (r, p))).collect();
    let targets: Vec<u32> = at
        .iter()
        .map(|&(r, p)| (1000 + r * 10 + p) as u32)
        .collect();
    let step_s = time(3, || {
        let dense = model.delta_at(delta.as_tensor(), &[5; 5], 15).unwrap();
        let out = model
            .forward(
                Input::Tokens(&vrows),
                &Forward {
                    deltas: vec![SiteDelta {
                        layer: 4,
                        site: Site::BlockOut,
                        value: dense,
                    }],
                    logits: Logits::At(at.clone()),
                    ..Default::default()
                },
            )
            .unwrap();
        let loss = target_logprobs(out.logits().unwrap(), &targets)
            .unwrap()
            .mean_all()
            .unwrap()
            .neg()
            .unwrap();
        loss.backward().unwrap()
    });

    // The small-row product (`x_wt`): (W xᵀ)ᵀ instead of x Wᵀ, for the shapes of the default
    // model's MLP (gate/up [1536, 576], down [576, 1536]) and the LM head [49152, 576].
    let mut small_m = Vec::new();
    for (out, inp) in [(1536usize, 576usize), (576, 1536), (49152, 576)] {
        let w = Tensor::randn(0f32, 0.02, (out, inp), &model.device).unwrap();
        for m in [1usize, 8, 16, 24, 32, 48] {
            let x = Tensor::randn(0f32, 1.0, (m, inp), &model.device).unwrap();
            let reps = if out > 10_000 { 5 } else { 50 };
            let plain = time(reps, || x.matmul(&w.t().unwrap()).unwrap());
            let trick = time(reps, || d4s::model::layers::x_wt(&x, &w).unwrap());
            small_m.push((out, inp, m, plain, trick));
        }
    }

    println!("| threads | load (s) | fwd 8×16, last logits (s) | fwd 8×16, all logits (s) | generation (tok/s) | v*-style step 5×15 (s) | RSS after load |");
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| {threads} | {load_s:.3} | {fwd_last:.3} | {fwd_all:.3} | {:.1} | {step_s:.3} | {} |",
        n_new as f64 / gen_s,
        d4s::util::fmt_bytes(rss)
    );

    println!("\n| threads | W shape | rows m | x·Wᵀ (µs) | (W·xᵀ)ᵀ (µs) | speed-up |");
    println!("|---|---|---|---|---|---|");
    for (out, inp, m, plain, trick) in small_m {
        println!(
            "| {threads} | {out}×{inp} | {m} | {:.0} | {:.0} | {:.2}× |",
            plain * 1e6,
            trick * 1e6,
            plain / trick
        );
    }
}
