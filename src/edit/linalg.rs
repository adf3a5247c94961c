//! Dense f64 linear algebra for the closed-form updates, on faer. Conversions to and from candle
//! tensors live here too, so editors read like the math: `solve_spd_right(S, A + λC)` etc.

use candle_core::{DType, Device, Tensor};
use faer::linalg::solvers::Solve;
use faer::{Mat, MatRef, Side};

use crate::error::{Error, Result};

/// A row-major `[rows, cols]` f32 tensor → f64 matrix.
pub fn mat_from_tensor(t: &Tensor) -> Result<Mat<f64>> {
    let (r, c) = t.dims2()?;
    let v = t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
    Ok(Mat::from_fn(r, c, |i, j| v[i * c + j]))
}

/// f64 matrix → `[rows, cols]` f32 tensor.
pub fn tensor_from_mat(m: MatRef<'_, f64>, device: &Device) -> Result<Tensor> {
    let (r, c) = (m.nrows(), m.ncols());
    let mut v = Vec::with_capacity(r * c);
    for i in 0..r {
        for j in 0..c {
            v.push(m[(i, j)] as f32);
        }
    }
    Ok(Tensor::from_vec(v, (r, c), device)?)
}

/// f64 matrix → `[rows, cols]` f64 CPU tensor, bit for bit (for checkpoints).
pub fn exact_tensor_from_mat(m: MatRef<'_, f64>) -> Result<Tensor> {
    let (r, c) = (m.nrows(), m.ncols());
    let mut v = Vec::with_capacity(r * c);
    for i in 0..r {
        for j in 0..c {
            v.push(m[(i, j)]);
        }
    }
    Ok(Tensor::from_vec(v, (r, c), &Device::Cpu)?)
}

/// A `[d]` or `[1, d]` tensor → f64 vector.
pub fn vec_from_tensor(t: &Tensor) -> Result<Vec<f64>> {
    Ok(t.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?)
}

/// Columns → matrix `[d, n]`.
pub fn mat_from_columns(cols: &[Vec<f64>]) -> Mat<f64> {
    let d = cols.first().map_or(0, Vec::len);
    Mat::from_fn(d, cols.len(), |i, j| cols[j][i])
}

/// `A + λC`: the key matrix of the closed-form solves (the edits' keys plus the regularizing
/// second moment).
pub fn plus_scaled(a: &Mat<f64>, lambda: f64, c: &Mat<f64>) -> Mat<f64> {
    Mat::from_fn(a.nrows(), a.ncols(), |i, j| a[(i, j)] + lambda * c[(i, j)])
}

/// `X` with `X · M = B`, for symmetric positive definite `M` (Cholesky; no explicit inverse).
/// `B: [m, n]`, `M: [n, n]`.
pub fn solve_spd_right(b: MatRef<'_, f64>, m: MatRef<'_, f64>) -> Result<Mat<f64>> {
    // X M = B  ⇔  M Xᵀ = Bᵀ (M symmetric).
    let llt = m
        .llt(Side::Lower)
        .map_err(|e| Error::Numeric(format!("matrix is not positive definite ({e:?})")))?;
    let xt = llt.solve(b.transpose());
    Ok(xt.transpose().to_owned())
}

/// [`solve_spd_right`] that survives an ill-conditioned `M` (e.g. a covariance from too few
/// tokens): when the Cholesky factorization fails it adds the smallest ridge `ε·mean(diag)·I`
/// (ε = 1e-10, 1e-8, …, 1e-2) that makes it succeed and says so through `warn`.
pub fn solve_spd_right_regularized(
    b: MatRef<'_, f64>,
    m: MatRef<'_, f64>,
    warn: &dyn Fn(String),
) -> Result<Mat<f64>> {
    with_smallest_ridge(m, warn, |m| {
        solve_spd_right(b, m)
            .ok()
            .filter(|x| all_finite(x.as_ref()))
    })
}

/// The lower Cholesky factor `L` of `M = L Lᵀ` (upper triangle zero), with the same ridge rule as
/// [`solve_spd_right_regularized`].
pub fn cholesky_regularized(m: MatRef<'_, f64>, warn: &dyn Fn(String)) -> Result<Mat<f64>> {
    with_smallest_ridge(m, warn, |m| {
        let llt = m.llt(Side::Lower).ok()?;
        let n = m.nrows();
        let l = Mat::from_fn(n, n, |i, j| if i >= j { llt.L()[(i, j)] } else { 0.0 });
        all_finite(l.as_ref()).then_some(l)
    })
}

/// `attempt(M)`, or else `attempt(M + ε·mean(diag)·I)` for the smallest ε of 1e-10, 1e-8, …,
/// 1e-2 that succeeds (said through `warn`).
fn with_smallest_ridge<T>(
    m: MatRef<'_, f64>,
    warn: &dyn Fn(String),
    attempt: impl Fn(MatRef<'_, f64>) -> Option<T>,
) -> Result<T> {
    if let Some(x) = attempt(m) {
        return Ok(x);
    }
    let n = m.nrows();
    let mean_diag = ((0..n).map(|i| m[(i, i)].abs()).sum::<f64>() / n.max(1) as f64).max(1e-300);
    for k in [10, 8, 6, 4, 2] {
        let ridge = mean_diag * 10f64.powi(-k);
        let mut reg = m.to_owned();
        for i in 0..n {
            reg[(i, i)] += ridge;
        }
        if let Some(x) = attempt(reg.as_ref()) {
            warn(format!(
                "the regularized key covariance was not positive definite; added a ridge of {ridge:.2e} (1e-{k} × its mean diagonal). \
                 A larger statistics corpus (--stats-tokens) avoids this"
            ));
            return Ok(x);
        }
    }
    Err(Error::Numeric("the key covariance is singular even with a ridge of 1e-2 × its mean diagonal; the edit was not applied".into()))
}

/// `X` with `M X = B` for a general square `M` (LU with partial pivoting).
pub fn solve_general(m: MatRef<'_, f64>, b: MatRef<'_, f64>) -> Result<Mat<f64>> {
    let lu = m.partial_piv_lu();
    let x = lu.solve(b);
    if !all_finite(x.as_ref()) {
        return Err(Error::Numeric("singular system in a linear solve".into()));
    }
    Ok(x)
}

/// Eigen-decomposition of a symmetric matrix: eigenvalues ascending and eigenvectors as columns.
pub fn symmetric_eigen(m: MatRef<'_, f64>) -> Result<(Vec<f64>, Mat<f64>)> {
    let evd = m
        .self_adjoint_eigen(Side::Lower)
        .map_err(|e| Error::Numeric(format!("eigendecomposition failed ({e:?})")))?;
    let s = evd.S().column_vector();
    let values = (0..s.nrows()).map(|i| s[i]).collect();
    Ok((values, evd.U().to_owned()))
}

pub fn all_finite(m: MatRef<'_, f64>) -> bool {
    (0..m.ncols()).all(|j| (0..m.nrows()).all(|i| m[(i, j)].is_finite()))
}

/// Σ |x| and √Σ x² of a matrix.
pub fn l1_fro(m: MatRef<'_, f64>) -> (f64, f64) {
    let mut l1 = 0.0;
    let mut sq = 0.0;
    for j in 0..m.ncols() {
        for i in 0..m.nrows() {
            let x = m[(i, j)];
            l1 += x.abs();
            sq += x * x;
        }
    }
    (l1, sq.sqrt())
}

/// `a += scale · x yᵀ`.
pub fn add_outer(a: &mut Mat<f64>, scale: f64, x: &[f64], y: &[f64]) {
    for (j, &yj) in y.iter().enumerate() {
        let s = scale * yj;
        if s == 0.0 {
            continue;
        }
        for (i, &xi) in x.iter().enumerate() {
            a[(i, j)] += s * xi;
        }
    }
}

/// Sets faer's thread count (faer keeps its own global setting).
pub fn set_threads(n: usize) {
    let par = if n <= 1 {
        faer::Par::Seq
    } else {
        faer::Par::rayon(n)
    };
    faer::set_global_parallelism(par);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spd_solve_and_eigen() {
        let a = Mat::from_fn(4, 4, |i, j| {
            if i == j {
                4.0
            } else {
                1.0 / (1.0 + (i + j) as f64)
            }
        });
        let b = Mat::from_fn(2, 4, |i, j| (i * 4 + j) as f64);
        let x = solve_spd_right(b.as_ref(), a.as_ref()).unwrap();
        let back = &x * &a;
        for i in 0..2 {
            for j in 0..4 {
                assert!((back[(i, j)] - b[(i, j)]).abs() < 1e-10);
            }
        }
        let (vals, vecs) = symmetric_eigen(a.as_ref()).unwrap();
        assert!(vals.windows(2).all(|w| w[0] <= w[1]));
        let av = &a * vecs.col(0);
        for i in 0..4 {
            assert!((av[i] - vals[0] * vecs[(i, 0)]).abs() < 1e-10);
        }
        let not_spd = Mat::from_fn(2, 2, |i, j| if i == j { -1.0 } else { 0.0 });
        assert!(solve_spd_right(b.as_ref().subcols(0, 2), not_spd.as_ref()).is_err());
        // Singular (rank one): the regularized solve warns and returns a finite answer.
        let singular_psd = Mat::from_fn(3, 3, |_, _| 1.0);
        let warned = std::cell::Cell::new(false);
        let x =
            solve_spd_right_regularized(b.as_ref().subcols(0, 3), singular_psd.as_ref(), &|_| {
                warned.set(true)
            })
            .unwrap();
        assert!(warned.get() && all_finite(x.as_ref()));
        let singular = Mat::<f64>::zeros(2, 2);
        assert!(solve_general(singular.as_ref(), Mat::from_fn(2, 1, |_, _| 1.0).as_ref()).is_err());
    }
}
