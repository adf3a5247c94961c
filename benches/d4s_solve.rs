//! D4S's per-step solve: a fresh Cholesky solve of `(S / spread)(A + λC)⁻¹` against the kept
//! factor moved by a rank-k update (`d4s_solve = update`), side by side on one layer.
//!
//! `RAYON_NUM_THREADS=1 cargo bench --bench d4s_solve` (add `-- 4096 11008` for other widths;
//! the default is the default model's d_ff = 1536 with d_model = 576). Synthetic keys and
//! residuals: the work does not depend on their values. For each width and step size k (1, 10,
//! 100 facts per step) it prints the median seconds per step of each path over a few rounds,
//! their ratio, and the relative gap between the two updates after all rounds. A last table
//! takes the kept factor through 10,000 edits (1,000 steps of 10) and compares it with one fresh
//! solve of the same sums: how far the rounding of a long history drifts.

use std::time::Instant;

use d4s::edit::d4s::d4s_delta;
use d4s::edit::factored::{Direction, FactoredUpdate};
use d4s::edit::linalg::add_outer;
use faer::Mat;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const LAMBDA: f64 = 4000.0;
const SPREAD: f64 = 1.0;

fn random_vec(rng: &mut ChaCha8Rng, n: usize) -> Vec<f64> {
    (0..n).map(|_| rng.random::<f64>() - 0.5).collect()
}

/// One step's synthetic keys (`[d_in]` each) and residuals (`[d_out]` each).
struct Step {
    keys: Vec<Vec<f64>>,
    residuals: Vec<Vec<f64>>,
}

impl Step {
    fn random(rng: &mut ChaCha8Rng, k: usize, d_in: usize, d_out: usize) -> Self {
        Self {
            keys: (0..k).map(|_| random_vec(rng, d_in)).collect(),
            residuals: (0..k).map(|_| random_vec(rng, d_out)).collect(),
        }
    }

    /// `S += Σ r kᵀ`, `A += Σ k kᵀ`, as D4S accumulates them.
    fn add_to(&self, s: &mut Mat<f64>, a: &mut Mat<f64>) {
        for (k, r) in self.keys.iter().zip(&self.residuals) {
            add_outer(s, 1.0, r, k);
            add_outer(a, 1.0, k, k);
        }
    }

    /// The kept factor after this step.
    fn applied_to(&self, kept: &FactoredUpdate) -> FactoredUpdate {
        let k: Vec<&[f64]> = self.keys.iter().map(Vec::as_slice).collect();
        let r: Vec<&[f64]> = self.residuals.iter().map(Vec::as_slice).collect();
        kept.stepped(&k, &r, SPREAD, Direction::Add).unwrap()
    }
}

/// A covariance-like SPD matrix `G Gᵀ / m + I·1e-3` (m = 2d random samples).
fn covariance(rng: &mut ChaCha8Rng, d: usize) -> Mat<f64> {
    let m = 2 * d;
    let g = Mat::from_fn(d, m, |_, _| rng.random::<f64>() - 0.5);
    let mut c = &g * g.transpose() * (1.0 / m as f64);
    for i in 0..d {
        c[(i, i)] += 1e-3;
    }
    c
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let widths: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let widths = if widths.is_empty() {
        vec![1536]
    } else {
        widths
    };
    println!("| d_ff | d_model | facts per step | fresh solve (s) | rank-k update (s) | fresh / update | relative gap |");
    println!("|---|---|---|---|---|---|---|");
    for d_in in widths {
        let d_out = (d_in * 3 / 8).max(1);
        let mut rng = ChaCha8Rng::seed_from_u64(d_in as u64);
        let c = covariance(&mut rng, d_in);
        for k in [1usize, 10, 100] {
            let (mut s, mut a) = (Mat::zeros(d_out, d_in), Mat::zeros(d_in, d_in));
            let mut kept = FactoredUpdate::factor(&s, &a, &c, LAMBDA, SPREAD, &|_| {}).unwrap();
            let rounds = if d_in > 4096 { 2 } else { 4 };
            let (mut fresh_t, mut update_t) = (Vec::new(), Vec::new());
            let mut fresh = Mat::zeros(d_out, d_in);
            for _ in 0..rounds {
                let step = Step::random(&mut rng, k, d_in, d_out);
                step.add_to(&mut s, &mut a);
                let t = Instant::now();
                fresh = d4s_delta(&s, &a, &c, LAMBDA, SPREAD, &|_| {}).unwrap();
                fresh_t.push(t.elapsed().as_secs_f64());
                let t = Instant::now();
                kept = step.applied_to(&kept);
                update_t.push(t.elapsed().as_secs_f64());
            }
            let gap = (&kept.delta - &fresh).norm_l2() / fresh.norm_l2();
            let (f, u) = (median(fresh_t), median(update_t));
            println!(
                "| {d_in} | {d_out} | {k} | {f:.3} | {u:.4} | {:.0}× | {gap:.1e} |",
                f / u
            );
        }
    }
    long_history_drift(1536, 1000, 10);
}

/// The kept factor after `steps` steps of `k` edits against a fresh solve of the same sums.
fn long_history_drift(d_in: usize, steps: usize, k: usize) {
    let d_out = d_in * 3 / 8;
    let mut rng = ChaCha8Rng::seed_from_u64(99);
    let c = covariance(&mut rng, d_in);
    let (mut s, mut a) = (Mat::zeros(d_out, d_in), Mat::zeros(d_in, d_in));
    let mut kept = FactoredUpdate::factor(&s, &a, &c, LAMBDA, SPREAD, &|_| {}).unwrap();
    let t = Instant::now();
    for _ in 0..steps {
        let step = Step::random(&mut rng, k, d_in, d_out);
        step.add_to(&mut s, &mut a);
        kept = step.applied_to(&kept);
    }
    let updates = t.elapsed().as_secs_f64();
    let fresh = d4s_delta(&s, &a, &c, LAMBDA, SPREAD, &|_| {}).unwrap();
    let gap = (&kept.delta - &fresh).norm_l2() / fresh.norm_l2();
    println!();
    println!("| d_ff | edits (steps × k) | all updates (s) | relative gap to a fresh solve |");
    println!("|---|---|---|---|");
    println!(
        "| {d_in} | {} ({steps} × {k}) | {updates:.1} | {gap:.1e} |",
        steps * k
    );
}
