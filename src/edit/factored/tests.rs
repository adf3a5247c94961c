//! The factored D4S solve against the fresh one.

use faer::Mat;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{Direction, FactoredUpdate};
use crate::edit::d4s::d4s_delta;
use crate::edit::linalg::add_outer;

const D_IN: usize = 24;
const D_OUT: usize = 7;
const LAMBDA: f64 = 3.0;
const SPREAD: f64 = 2.0;

fn gaussian(rng: &mut ChaCha8Rng, n: usize) -> Vec<f64> {
    (0..n).map(|_| rng.random::<f64>() * 2.0 - 1.0).collect()
}

/// A covariance-like SPD matrix with a spread of eigenvalues (a few directions dominate, as
/// real key statistics do).
fn covariance(rng: &mut ChaCha8Rng) -> Mat<f64> {
    let mut c = Mat::zeros(D_IN, D_IN);
    for t in 0..4 * D_IN {
        let scale = if t % 5 == 0 { 10.0 } else { 1.0 };
        let x: Vec<f64> = gaussian(rng, D_IN).iter().map(|v| v * scale).collect();
        add_outer(&mut c, 1.0 / (4 * D_IN) as f64, &x, &x);
    }
    c
}

struct Step {
    keys: Vec<Vec<f64>>,
    residuals: Vec<Vec<f64>>,
}

impl Step {
    fn random(rng: &mut ChaCha8Rng, n: usize) -> Self {
        Self {
            keys: (0..n).map(|_| gaussian(rng, D_IN)).collect(),
            residuals: (0..n).map(|_| gaussian(rng, D_OUT)).collect(),
        }
    }

    fn apply(&self, f: &FactoredUpdate, direction: Direction) -> FactoredUpdate {
        let k: Vec<&[f64]> = self.keys.iter().map(Vec::as_slice).collect();
        let r: Vec<&[f64]> = self.residuals.iter().map(Vec::as_slice).collect();
        f.stepped(&k, &r, SPREAD, direction).expect("the step")
    }

    fn add_to(&self, s: &mut Mat<f64>, a: &mut Mat<f64>, sign: f64) {
        for (k, r) in self.keys.iter().zip(&self.residuals) {
            add_outer(s, sign, r, k);
            add_outer(a, sign, k, k);
        }
    }
}

fn relative_gap(x: &Mat<f64>, y: &Mat<f64>) -> f64 {
    (x - y).norm_l2() / y.norm_l2().max(1e-300)
}

fn fresh(s: &Mat<f64>, a: &Mat<f64>, c: &Mat<f64>) -> Mat<f64> {
    d4s_delta(s, a, c, LAMBDA, SPREAD, &|w| panic!("{w}")).unwrap()
}

#[test]
fn rank_k_updates_equal_the_fresh_solve_after_every_step() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let c = covariance(&mut rng);
    let (mut s, mut a) = (Mat::zeros(D_OUT, D_IN), Mat::zeros(D_IN, D_IN));
    let mut f = FactoredUpdate::factor(&s, &a, &c, LAMBDA, SPREAD, &|w| panic!("{w}")).unwrap();
    assert_eq!(
        f.delta,
        Mat::<f64>::zeros(D_OUT, D_IN),
        "no history, no update"
    );
    let mut worst: f64 = 0.0;
    // More keys than dimensions: A becomes full rank and dominates λC, the regime of long runs.
    for t in 0..60 {
        let step = Step::random(&mut rng, 1 + t % 3);
        f = step.apply(&f, Direction::Add);
        step.add_to(&mut s, &mut a, 1.0);
        let gap = relative_gap(&f.delta, &fresh(&s, &a, &c));
        worst = worst.max(gap);
        assert!(gap < 1e-10, "step {t}: relative gap {gap:e}");
    }
    // The factor still factors A + λC.
    let m = Mat::from_fn(D_IN, D_IN, |i, j| a[(i, j)] + LAMBDA * c[(i, j)]);
    let llt = &f.l * f.l.transpose();
    assert!(relative_gap(&llt, &m) < 1e-12);
    assert!(
        worst > 0.0,
        "the two paths round differently; the test compares them"
    );
}

#[test]
fn a_downdate_removes_any_step_as_the_fresh_solve_without_it() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let c = covariance(&mut rng);
    let steps: Vec<Step> = (0..12).map(|t| Step::random(&mut rng, 1 + t % 2)).collect();
    let (mut s, mut a) = (Mat::zeros(D_OUT, D_IN), Mat::zeros(D_IN, D_IN));
    let mut f = FactoredUpdate::factor(&s, &a, &c, LAMBDA, SPREAD, &|w| panic!("{w}")).unwrap();
    for step in &steps {
        f = step.apply(&f, Direction::Add);
        step.add_to(&mut s, &mut a, 1.0);
    }
    // Undo a step in the middle of the history, then the last one.
    for undone in [5, 11] {
        f = steps[undone].apply(&f, Direction::Remove);
        steps[undone].add_to(&mut s, &mut a, -1.0);
        let gap = relative_gap(&f.delta, &fresh(&s, &a, &c));
        assert!(gap < 1e-10, "after undoing step {undone}: {gap:e}");
    }
    // Undoing everything returns to no update at all (up to rounding).
    for (t, step) in steps.iter().enumerate() {
        if t != 5 && t != 11 {
            f = step.apply(&f, Direction::Remove);
        }
    }
    assert!(f.delta.norm_l2() < 1e-10, "{}", f.delta.norm_l2());
}

#[test]
fn a_downdate_of_keys_never_added_is_refused_not_panicked() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let c = covariance(&mut rng);
    let z = Mat::zeros(D_OUT, D_IN);
    let f =
        FactoredUpdate::factor(&z, &Mat::zeros(D_IN, D_IN), &c, LAMBDA, SPREAD, &|_| {}).unwrap();
    // A key far larger than λC can absorb: M − k kᵀ is indefinite.
    let k: Vec<f64> = gaussian(&mut rng, D_IN).iter().map(|v| v * 1e3).collect();
    let r = gaussian(&mut rng, D_OUT);
    let err = f
        .stepped(&[&k], &[&r], SPREAD, Direction::Remove)
        .unwrap_err();
    assert!(err.to_string().contains("downdate"), "{err}");
}

#[test]
fn replaying_the_same_steps_gives_the_same_bits() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let c = covariance(&mut rng);
    let steps: Vec<Step> = (0..8).map(|t| Step::random(&mut rng, 1 + t % 3)).collect();
    let run = || {
        let z = Mat::zeros(D_OUT, D_IN);
        let mut f =
            FactoredUpdate::factor(&z, &Mat::zeros(D_IN, D_IN), &c, LAMBDA, SPREAD, &|_| {})
                .unwrap();
        for step in &steps {
            f = step.apply(&f, Direction::Add);
        }
        f
    };
    assert_eq!(run(), run());
}
