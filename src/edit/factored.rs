//! D4S's solve kept up to date instead of recomputed (`d4s_solve = update`).
//!
//! Per edited layer, beside the sums `S = Σ r kᵀ` and `A = Σ k kᵀ`, keep the Cholesky factor of
//! the regularized key matrix and the update it gives:
//!
//! ```text
//! M = A + λC = L Lᵀ          Δ = (S / spread) M⁻¹
//! ```
//!
//! A step adds its keys `K = [k₁ … kₙ]` (`[d_in, n]`) and residuals `R = [r₁ … rₙ]`
//! (`[d_out, n]`): `M' = M + K Kᵀ`, `S' = S + R Kᵀ`. Then
//!
//! ```text
//! L' = rank-n update of L by K                    O(n d_in²)
//! U  = M'⁻¹ K        (two triangular solves)      O(n d_in²)
//! Δ' = Δ + (R / spread − Δ K) Uᵀ                  O(n d_in d_out)
//! ```
//!
//! because `Δ' M' = Δ M + Δ K Kᵀ + (R / spread − Δ K) Kᵀ = (S + R Kᵀ) / spread = S' / spread`.
//! In words: the new keys' residual against the current update, spread through the new metric.
//! Undo is the same step backwards, with a rank-n *down*date: `M = M' − K Kᵀ` and
//! `Δ = Δ' + (Δ' K − R / spread) (M⁻¹ K)ᵀ`.
//!
//! Only the first edit (or a restore from bare sums) factorizes `M` in O(d_in³); after it no
//! step costs more than O(n d_in (d_in + d_out)), whatever the history. The result equals the
//! fresh solve in exact arithmetic; in f64 the two differ by rounding
//! (`edit::factored::tests`).

use faer::linalg::cholesky::llt::update::rank_r_update_clobber;
use faer::linalg::triangular_solve::{
    solve_lower_triangular_in_place, solve_upper_triangular_in_place,
};
use faer::{get_global_parallelism, Col, Mat, MatRef};

use super::linalg::{all_finite, cholesky_regularized, mat_from_columns, plus_scaled};
use crate::error::{Error, Result};

/// One layer's factor `L` (`L Lᵀ = A + λC`, lower triangular) and update `Δ`.
#[derive(Debug, Clone, PartialEq)]
pub struct FactoredUpdate {
    pub l: Mat<f64>,
    pub delta: Mat<f64>,
}

/// Adds a step to the history or takes it out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Add,
    Remove,
}

impl FactoredUpdate {
    /// From the sums, by one fresh factorization of `A + λC` (with the smallest ridge that makes
    /// it positive definite, reported through `warn`, as the fresh solve does).
    pub fn factor(
        s: &Mat<f64>,
        a: &Mat<f64>,
        c: &Mat<f64>,
        lambda: f64,
        spread: f64,
        warn: &dyn Fn(String),
    ) -> Result<Self> {
        let l = cholesky_regularized(plus_scaled(a, lambda, c).as_ref(), warn)?;
        // Δ = (S / spread) M⁻¹  ⇔  M Δᵀ = Sᵀ / spread.
        let mut delta_t = Mat::from_fn(s.ncols(), s.nrows(), |i, j| s[(j, i)] / spread);
        solve_with_factor(l.as_ref(), &mut delta_t);
        let delta = delta_t.transpose().to_owned();
        check_finite(&delta)?;
        Ok(Self { l, delta })
    }

    /// This layer after adding (or removing) a step with these keys and residuals, one column
    /// per request, in the order the step holds them (a replay must use the same order).
    pub fn stepped(
        &self,
        keys: &[&[f64]],
        residuals: &[&[f64]],
        spread: f64,
        direction: Direction,
    ) -> Result<Self> {
        let k = mat_from_columns(&keys.iter().map(|k| k.to_vec()).collect::<Vec<_>>());
        let r = Mat::from_fn(self.delta.nrows(), residuals.len(), |i, j| {
            residuals[j][i] / spread
        });
        let mut l = self.l.clone();
        let mut w = k.clone();
        let sign = match direction {
            Direction::Add => 1.0,
            Direction::Remove => -1.0,
        };
        let mut alpha = Col::<f64>::full(keys.len(), sign);
        rank_r_update_clobber(l.as_mut(), w.as_mut(), alpha.as_diagonal_mut()).map_err(|e| {
            Error::Numeric(format!(
                "the factor of the key matrix lost positive definiteness in a rank-{} {} ({e:?})",
                keys.len(),
                if sign > 0.0 { "update" } else { "downdate" }
            ))
        })?;
        // U = M'⁻¹ K with the factor after the step (for a removal: of the matrix without it).
        let mut u = k.clone();
        solve_with_factor(l.as_ref(), &mut u);
        let predicted = &self.delta * &k;
        let correction = match direction {
            Direction::Add => &r - &predicted,
            Direction::Remove => &predicted - &r,
        };
        let delta = &self.delta + &correction * u.transpose();
        check_finite(&delta)?;
        Ok(Self { l, delta })
    }

    /// Bytes held (the factor is stored dense).
    pub fn bytes(&self) -> usize {
        8 * (self.l.nrows() * self.l.ncols() + self.delta.nrows() * self.delta.ncols())
    }
}

/// `X ← M⁻¹ X` for `M = L Lᵀ`.
fn solve_with_factor(l: MatRef<'_, f64>, x: &mut Mat<f64>) {
    let par = get_global_parallelism();
    solve_lower_triangular_in_place(l, x.as_mut(), par);
    solve_upper_triangular_in_place(l.transpose(), x.as_mut(), par);
}

fn check_finite(delta: &Mat<f64>) -> Result<()> {
    if all_finite(delta.as_ref()) {
        Ok(())
    } else {
        Err(Error::Numeric(
            "the updated D4S solve is not finite; the edit was not applied".into(),
        ))
    }
}

#[cfg(test)]
mod tests;
