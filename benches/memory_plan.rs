//! Memory and time of the editing math at the widths of the models researchers edit, on random
//! matrices (the values do not change the work): what a 7–8B edit needs besides the model.
//!
//! `cargo bench --bench memory_plan` (all widths) or, e.g.,
//! `MEMORY_PLAN=llama-2-7b THREADS=2 cargo bench --bench memory_plan`.
//!
//! For each width `(d_model, d_ff)` it measures, with the code the editors run:
//! - **key statistics**: `accumulate_gram` (the f32 product of a chunk of keys, summed into an
//!   f64 `d_ff²` accumulator) over 2,048 tokens, per 1,000 tokens, and the accumulator's memory;
//! - **one D4S solve**: `d4s_delta` (`Δ = S (A + λC)⁻¹` by Cholesky), and D4S's state (S, A);
//! - **AlphaEdit's projector**: `null_space_projector` (an eigendecomposition of `C`), measured at
//!   smaller widths and extrapolated as `d_ff³` (a full-width one takes tens of minutes here).
//!
//! Peak memory of a stage is the process's peak RSS during it (reset through
//! `/proc/self/clear_refs`) minus its RSS before; inputs allocated before the stage are not
//! counted, and are listed separately.

use std::time::Instant;

use candle_core::{Device, Tensor};
use d4s::edit::alphaedit::AlphaEdit;
use d4s::edit::d4s::d4s_delta;
use d4s::edit::linalg::set_threads;
use d4s::edit::stats::accumulate_gram;
use d4s::util::{peak_memory, resident_memory};
use faer::Mat;

/// `(name, d_model, d_ff, layers MEMIT/D4S/AlphaEdit edit)`.
const WIDTHS: [(&str, usize, usize, usize); 4] = [
    ("llama-2-7b", 4096, 11008, 5),
    ("llama-3-8b", 4096, 14336, 5),
    ("gpt-j-6b", 4096, 16384, 6),
    ("qwen2.5-7b", 3584, 18944, 5),
];

/// Widths at which the eigendecomposition is timed to fit `t = a · n³`.
const EIGEN_WIDTHS: [usize; 3] = [1024, 2048, 3072];

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

fn reset_peak() {
    // "5" resets the peak RSS (VmHWM) to the current RSS (Linux ≥ 4.0).
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Runs `f`, returning its result, seconds and peak extra memory in GiB.
fn measure<R>(f: impl FnOnce() -> R) -> (R, f64, f64) {
    let before = resident_memory().unwrap_or(0);
    reset_peak();
    let t0 = Instant::now();
    let r = f();
    let secs = t0.elapsed().as_secs_f64();
    let peak = peak_memory().unwrap_or(0).saturating_sub(before);
    (r, secs, peak as f64 / GIB)
}

/// A symmetric positive definite `n × n` matrix: a dominant diagonal plus small symmetric noise.
fn spd(n: usize, seed: u64) -> Mat<f64> {
    Mat::from_fn(n, n, |i, j| {
        if i == j {
            n as f64
        } else {
            let (a, b) = (i.min(j) as u64, i.max(j) as u64);
            let h = (a.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ b.wrapping_mul(0xC2B2_AE3D_27D4_EB4F))
                .wrapping_add(seed);
            ((h >> 11) as f64 / (1u64 << 53) as f64) - 0.5
        }
    })
}

fn stats_stage(f: usize) -> (f64, f64) {
    let chunk = 512;
    let keys = Tensor::randn(0f32, 1f32, (chunk, f), &Device::Cpu).expect("random keys");
    let (_, secs, peak) = measure(|| {
        let mut acc = vec![0f64; f * f];
        for _ in 0..4 {
            accumulate_gram(&mut acc, &keys).expect("gram");
        }
        std::hint::black_box(&acc);
    });
    (secs / (4 * chunk) as f64 * 1000.0, peak)
}

fn d4s_stage(d: usize, f: usize) -> (f64, f64) {
    let a = spd(f, 1);
    let c = spd(f, 2);
    let s = Mat::from_fn(d, f, |i, j| ((i * 31 + j * 17) % 97) as f64 / 97.0 - 0.5);
    let (delta, secs, peak) = measure(|| d4s_delta(&s, &a, &c, 10.0, 1.0, &|_| {}).expect("solve"));
    assert!(delta.norm_l2().is_finite());
    (secs, peak)
}

/// `(a, peak GiB per n²)` of `t = a · n³` fitted on the eigen widths.
fn eigen_fit() -> (f64, f64) {
    let mut num = 0.0;
    let mut den = 0.0;
    let mut per_n2 = 0f64;
    for n in EIGEN_WIDTHS {
        let c = spd(n, 3);
        let (p, secs, peak) =
            measure(|| AlphaEdit::null_space_projector(&c, n as f64).expect("projector"));
        std::hint::black_box(&p);
        let n3 = (n as f64).powi(3);
        num += secs * n3;
        den += n3 * n3;
        per_n2 = per_n2.max(peak / (n * n) as f64);
        println!(
            "  projector at d_ff = {n}: {secs:.2} s, peak +{:.3} GiB",
            peak
        );
    }
    (num / den, per_n2)
}

fn main() {
    let threads: usize = std::env::var("THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    set_threads(threads);
    // candle's CPU matmul (the key gram) reads this.
    unsafe { std::env::set_var("RAYON_NUM_THREADS", threads.to_string()) };
    let only = std::env::var("MEMORY_PLAN").ok();
    println!("threads = {threads}");
    let (eig_a, eig_per_n2) = eigen_fit();
    println!();
    println!("| model | d_model / d_ff | C per layer (f64) | stats: s per 1k tokens | stats peak | D4S solve (s) | D4S solve peak | D4S state per layer | D4S state, all layers | AlphaEdit projector (s, extrapolated) | projector peak (extrapolated) |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for (name, d, f, layers) in WIDTHS {
        if only.as_deref().is_some_and(|o| o != name) {
            continue;
        }
        let c_bytes = (f * f * 8) as f64 / GIB;
        let (stats_per_1k, stats_peak) = stats_stage(f);
        let (solve_s, solve_peak) = d4s_stage(d, f);
        // S and A, and beside them the kept factor L and the update Δ (`d4s_solve = update`, the
        // default): twice (d_model·d_ff + d_ff²) f64 per layer.
        let state = (2 * (d * f + f * f) * 8) as f64 / GIB;
        let eig_s = eig_a * (f as f64).powi(3);
        let eig_peak = eig_per_n2 * (f * f) as f64;
        println!(
            "| {name} | {d} / {f} | {c_bytes:.2} GiB | {stats_per_1k:.2} | +{stats_peak:.2} GiB | {solve_s:.1} | +{solve_peak:.2} GiB | {state:.2} GiB | {:.2} GiB ({layers} layers) | {eig_s:.0} | +{eig_peak:.2} GiB |",
            state * layers as f64
        );
    }
}
