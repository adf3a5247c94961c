//! UltraEdit (Gu et al., "UltraEdit: Training-, Subject-, and Memory-Free Lifelong Editing in
//! Large Language Models", 2025): no per-fact target optimization and no covariance. One
//! teacher-forced forward/backward pass of the step's facts on the model as it is gives, for every
//! edited layer l and every answer position t (the positions whose logits predict target tokens):
//!
//! ```text
//! k_t = input of W_l at t                         (the key, d_ff)
//! g_t = ∂L/∂(MLP output of layer l at t)          (L: mean NLL of the target tokens, d_model)
//! ```
//! Lifelong normalization keeps the running mean μ and standard deviation σ of `[k; g]` over every
//! step so far (this step's rows included), and turns the gradients into value shifts:
//!
//! ```text
//! [k̂; ĝ] = ([k; g] − μ) / (σ + ε)
//! v_t    = −η ‖k̂_t‖² ĝ_t
//! ΔW_l   = Vᵀ K (KᵀK + ρI)⁻¹ = Vᵀ (KKᵀ + ρI)⁻¹ K        (ridge least squares ΔW k_t ≈ v_t)
//! W_l   ← W_l + ΔW_l                                   (all edited layers at once)
//! ```
//! with raw keys `K` (rows k_t) and `V` (rows v_t). The second form of ΔW solves an n × n system
//! (n answer positions) instead of a d_ff × d_ff one: the same matrix, much cheaper for small
//! steps. The paper's ρ is 1. d4s edits the MLP output projection, the sites of the paper's GPT-J
//! configuration (its Llama configurations edit gate/up projections, which d4s's runtimes do not
//! hook). The running statistics are pooled exactly (Chan et al.'s parallel update of the mean and
//! the sum of squared deviations), σ with the n − 1 denominator.

use candle_core::{DType, Tensor, Var};
use faer::Mat;

use super::ft::{answer_rows, AnswerRows};
use super::linalg::{exact_tensor_from_mat, mat_from_tensor, solve_spd_right, tensor_from_mat};
use super::{
    commit_updates, restore_weights, EditContext, EditOutcome, EditRequest, Editor, HParams,
    Method, Phase, Progress, Stopwatch, TargetSummary, Timings, UndoRecord,
};
use crate::error::{Error, Result};
use crate::model::forward::SiteDelta;
use crate::model::generate::target_logprobs;
use crate::model::{Forward, Input, Logits, Model, Site};

/// ε of the normalization (f32's machine epsilon, as the reference computes in f32).
const EPS: f64 = f32::EPSILON as f64;

/// Running mean and sum of squared deviations of the feature rows `[k; g]` of one layer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Moments {
    pub count: u64,
    pub mean: Vec<f64>,
    pub m2: Vec<f64>,
}

impl Moments {
    /// Pools `rows` into the moments (Chan et al.'s parallel update).
    pub fn update(&mut self, rows: &[Vec<f64>]) {
        let Some(width) = rows.first().map(Vec::len) else {
            return;
        };
        if self.mean.len() != width {
            *self = Moments {
                count: 0,
                mean: vec![0.0; width],
                m2: vec![0.0; width],
            };
        }
        let nb = rows.len() as f64;
        let mut mean_b = vec![0.0; width];
        for r in rows {
            mean_b.iter_mut().zip(r).for_each(|(m, x)| *m += x / nb);
        }
        let mut m2_b = vec![0.0; width];
        for r in rows {
            for ((s, x), m) in m2_b.iter_mut().zip(r).zip(&mean_b) {
                *s += (x - m) * (x - m);
            }
        }
        let na = self.count as f64;
        let n = na + nb;
        for i in 0..width {
            let delta = mean_b[i] - self.mean[i];
            self.mean[i] += delta * nb / n;
            self.m2[i] += m2_b[i] + delta * delta * na * nb / n;
        }
        self.count += rows.len() as u64;
    }

    /// σ per feature (n − 1 denominator; zero for a single row).
    pub fn std(&self) -> Vec<f64> {
        let denom = (self.count as f64 - 1.0).max(0.0) + EPS;
        self.m2.iter().map(|s| (s / denom).sqrt()).collect()
    }

    /// `(x − μ) / (σ + ε)`.
    pub fn normalize(&self, row: &[f64], std: &[f64]) -> Vec<f64> {
        row.iter()
            .zip(&self.mean)
            .zip(std)
            .map(|((x, m), s)| (x - m) / (s + EPS))
            .collect()
    }
}

pub struct UltraEdit {
    hp: HParams,
    /// The lifelong normalization, per edited layer (hyperparameter order).
    moments: Vec<Moments>,
}

impl UltraEdit {
    pub fn new(hp: HParams) -> Self {
        Self {
            hp,
            moments: Vec::new(),
        }
    }
}

/// One layer's features of a step: keys `K` (n × d_ff) and gradients `G` (n × d_model), as rows.
struct Features {
    keys: Vec<Vec<f64>>,
    grads: Vec<Vec<f64>>,
}

/// The forward/backward pass: each layer's features, and each request's mean target probability
/// (per-token geometric mean) on the model as it is.
fn features(
    model: &Model,
    requests: &[EditRequest],
    layers: &[usize],
) -> Result<(Vec<Features>, Vec<f64>)> {
    let AnswerRows { rows, at, targets } = answer_rows(model, requests)?;
    let (b, s) = (rows.len(), rows.iter().map(Vec::len).max().unwrap_or(0));
    let shifts = layers
        .iter()
        .map(|_| {
            Ok(Var::zeros(
                (b, s, model.config.d_model),
                DType::F32,
                &model.device,
            )?)
        })
        .collect::<Result<Vec<_>>>()?;
    let out = model.forward(
        Input::Tokens(&rows),
        &Forward {
            deltas: layers
                .iter()
                .zip(&shifts)
                .map(|(&layer, v)| SiteDelta {
                    layer,
                    site: Site::MlpOut,
                    value: v.as_tensor().clone(),
                })
                .collect(),
            captures: layers.iter().map(|&l| (l, Site::Key)).collect(),
            logits: Logits::At(at.clone()),
            ..Default::default()
        },
    )?;
    let logprobs = target_logprobs(out.logits()?, &targets)?;
    let loss = logprobs.mean_all()?.neg()?;
    let grads = loss.backward()?;
    let probs = per_request_probs(&logprobs, &at, requests.len())?;
    let rows_of = |t: &Tensor| -> Result<Vec<Vec<f64>>> {
        let m = mat_from_tensor(&Model::gather_rows(t, &at)?)?;
        Ok((0..m.nrows())
            .map(|i| (0..m.ncols()).map(|j| m[(i, j)]).collect())
            .collect())
    };
    let features = layers
        .iter()
        .zip(&shifts)
        .map(|(&layer, v)| {
            let g = grads.get(v.as_tensor()).ok_or_else(|| {
                Error::Model(format!(
                    "no gradient reached the MLP output of layer {layer}"
                ))
            })?;
            Ok(Features {
                keys: rows_of(out.capture(layer, Site::Key)?)?,
                grads: rows_of(g)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((features, probs))
}

/// exp(mean log p) of each request's target tokens, from the log-probabilities at `at`.
fn per_request_probs(logprobs: &Tensor, at: &[(usize, usize)], n: usize) -> Result<Vec<f64>> {
    let lp = logprobs.to_dtype(DType::F64)?.to_vec1::<f64>()?;
    let mut sums = vec![(0.0, 0usize); n];
    for (&(r, _), l) in at.iter().zip(&lp) {
        sums[r].0 += l;
        sums[r].1 += 1;
    }
    Ok(sums
        .into_iter()
        .map(|(s, c)| (s / c.max(1) as f64).exp())
        .collect())
}

/// `ΔW = Vᵀ (KKᵀ + ρI)⁻¹ K` for one layer, updating its moments with the step's rows first.
fn layer_shift(moments: &mut Moments, f: &Features, lr: f64, ridge: f64) -> Result<Mat<f64>> {
    let rows: Vec<Vec<f64>> = f
        .keys
        .iter()
        .zip(&f.grads)
        .map(|(k, g)| k.iter().chain(g).copied().collect())
        .collect();
    moments.update(&rows);
    let std = moments.std();
    let d_in = f.keys[0].len();
    let values: Vec<Vec<f64>> = rows
        .iter()
        .map(|row| {
            let z = moments.normalize(row, &std);
            let (k_hat, g_hat) = z.split_at(d_in);
            let coeff = -lr * k_hat.iter().map(|x| x * x).sum::<f64>();
            g_hat.iter().map(|g| coeff * g).collect()
        })
        .collect();
    let n = rows.len();
    let k = Mat::from_fn(n, d_in, |i, j| f.keys[i][j]);
    let vt = Mat::from_fn(values[0].len(), n, |i, j| values[j][i]);
    let mut gram = &k * k.transpose();
    for i in 0..n {
        gram[(i, i)] += ridge;
    }
    let y = solve_spd_right(vt.as_ref(), gram.as_ref())?;
    Ok(&y * &k)
}

impl Editor for UltraEdit {
    fn method(&self) -> Method {
        Method::UltraEdit
    }

    fn hparams(&self) -> &HParams {
        &self.hp
    }

    fn apply(
        &mut self,
        model: &mut Model,
        cx: &mut EditContext,
        requests: &[EditRequest],
    ) -> Result<EditOutcome> {
        self.hp.validate(&model.config)?;
        for r in requests {
            r.validate()?;
        }
        let layers = self.hp.layers.clone();
        let mut timer = Stopwatch::start();
        let mut timings = Timings::default();
        cx.ctl.report(Progress::Phase(Phase::Keys));
        let (features, prob_initial) = features(model, requests, &layers)?;
        timings.keys = timer.lap();
        cx.ctl.check()?;
        cx.ctl.report(Progress::Phase(Phase::Solve));
        let before = self.moments.clone();
        let mut moments = if before.len() == layers.len() {
            before.clone()
        } else {
            vec![Moments::default(); layers.len()]
        };
        let mut new_weights = Vec::new();
        for ((j, &layer), f) in layers.iter().enumerate().zip(&features) {
            let shift = layer_shift(&mut moments[j], f, self.hp.lr, self.hp.l2)?;
            let w =
                (model.edit_weight_f32(layer)? + tensor_from_mat(shift.as_ref(), &model.device)?)?;
            new_weights.push((layer, w));
        }
        timings.solve = timer.lap();
        cx.ctl.report(Progress::Phase(Phase::Apply));
        let (report, previous, sha) = commit_updates(model, new_weights, self.hp.max_update_ratio)?;
        // Only an accepted step enters the lifelong statistics.
        self.moments = moments;
        let prob_final = match target_probs(model, requests) {
            Ok(p) => p,
            Err(e) => {
                restore_weights(model, &previous)?;
                self.moments = before;
                return Err(e);
            }
        };
        timings.finish(timer.lap());
        Ok(EditOutcome {
            method: Method::UltraEdit,
            layers: report,
            targets: prob_initial
                .iter()
                .zip(&prob_final)
                .map(|(&i, &f)| TargetSummary {
                    prob_initial: i,
                    prob_final: f,
                    loss: -f.ln(),
                    steps: 1,
                })
                .collect(),
            timings,
            weights_sha256: sha,
            undo: UndoRecord::UltraEdit {
                weights: previous,
                moments: before,
            },
        })
    }

    fn undo(
        &mut self,
        model: &mut Model,
        _cx: &mut EditContext,
        record: &UndoRecord,
    ) -> Result<()> {
        let UndoRecord::UltraEdit { weights, moments } = record else {
            return Err(Error::Input(
                "this undo record does not belong to UltraEdit".into(),
            ));
        };
        restore_weights(model, weights)?;
        self.moments = moments.clone();
        Ok(())
    }

    fn state_bytes(&self) -> usize {
        self.moments
            .iter()
            .map(|m| 8 * (m.mean.len() + m.m2.len()))
            .sum()
    }

    /// The lifelong statistics: count in `meta`, mean and squared deviations as f64 tensors.
    fn snapshot(&self) -> Result<super::EditorSnapshot> {
        let mut tensors = Vec::new();
        for (j, m) in self.moments.iter().enumerate() {
            let row =
                |v: &[f64]| exact_tensor_from_mat(Mat::from_fn(1, v.len(), |_, i| v[i]).as_ref());
            tensors.push((format!("ultraedit.mean.{j}"), row(&m.mean)?));
            tensors.push((format!("ultraedit.m2.{j}"), row(&m.m2)?));
        }
        let counts: Vec<u64> = self.moments.iter().map(|m| m.count).collect();
        Ok(super::EditorSnapshot {
            tensors,
            meta: serde_json::json!({ "method": "ultraedit", "counts": counts }),
        })
    }

    fn restore(
        &mut self,
        model: &mut Model,
        _cx: &mut EditContext,
        snap: &super::EditorSnapshot,
    ) -> Result<()> {
        snap.check_method(Method::UltraEdit)?;
        let counts: Vec<u64> = serde_json::from_value(snap.meta["counts"].clone())
            .map_err(|e| Error::Input(format!("UltraEdit snapshot: bad counts ({e})")))?;
        if snap.tensors.is_empty() {
            self.moments = Vec::new();
            return Ok(());
        }
        if counts.len() != self.hp.layers.len() {
            return Err(Error::Input(format!(
                "UltraEdit snapshot for {} layers, the hyperparameters name {}",
                counts.len(),
                self.hp.layers.len()
            )));
        }
        let width = model.config.d_ff + model.config.d_model;
        self.moments = counts
            .iter()
            .enumerate()
            .map(|(j, &count)| {
                let row = |name: String| -> Result<Vec<f64>> {
                    let m = snap.matrix(&name, 1, width)?;
                    Ok((0..width).map(|i| m[(0, i)]).collect())
                };
                Ok(Moments {
                    count,
                    mean: row(format!("ultraedit.mean.{j}"))?,
                    m2: row(format!("ultraedit.m2.{j}"))?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(())
    }
}

/// Each request's target probability on the model as it is (no gradient).
fn target_probs(model: &Model, requests: &[EditRequest]) -> Result<Vec<f64>> {
    let AnswerRows { rows, at, targets } = answer_rows(model, requests)?;
    let out = model.forward(
        Input::Tokens(&rows),
        &Forward {
            logits: Logits::At(at.clone()),
            ..Default::default()
        },
    )?;
    per_request_probs(
        &target_logprobs(out.logits()?, &targets)?,
        &at,
        requests.len(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pooled_moments_equal_those_of_all_rows_at_once() {
        let rows: Vec<Vec<f64>> = (0..7)
            .map(|i| vec![i as f64, (i * i) as f64 - 3.0, (i as f64).sin()])
            .collect();
        let mut whole = Moments::default();
        whole.update(&rows);
        let mut pooled = Moments::default();
        pooled.update(&rows[..2]);
        pooled.update(&rows[2..3]);
        pooled.update(&rows[3..]);
        assert_eq!(pooled.count, 7);
        for (a, b) in whole.mean.iter().zip(&pooled.mean) {
            assert!((a - b).abs() < 1e-12);
        }
        for (a, b) in whole.std().iter().zip(&pooled.std()) {
            assert!((a - b).abs() < 1e-12);
        }
        // σ of the first column 0..6 (n − 1 denominator) is √(28/6).
        assert!((whole.std()[0] - (28.0f64 / 6.0).sqrt()).abs() < 1e-6);
    }

    #[test]
    fn the_shift_is_the_ridge_least_squares_map_from_keys_to_value_shifts() {
        // Keys and gradients of 3 positions, d_in 4, d_out 2.
        let f = Features {
            keys: vec![
                vec![1.0, 0.5, -2.0, 0.0],
                vec![0.0, 1.5, 1.0, 2.0],
                vec![-1.0, 0.0, 0.5, 1.0],
            ],
            grads: vec![vec![0.3, -0.1], vec![-0.2, 0.4], vec![0.05, 0.0]],
        };
        let mut moments = Moments::default();
        let (lr, ridge) = (0.01, 1.0);
        let shift = layer_shift(&mut moments, &f, lr, ridge).unwrap();
        // The d_in × d_in normal equations: ΔW (KᵀK + ρI) = Vᵀ K.
        let rows: Vec<Vec<f64>> = f
            .keys
            .iter()
            .zip(&f.grads)
            .map(|(k, g)| k.iter().chain(g).copied().collect())
            .collect();
        let std = moments.std();
        let v: Vec<Vec<f64>> = rows
            .iter()
            .map(|r| {
                let z = moments.normalize(r, &std);
                let c = -lr * z[..4].iter().map(|x| x * x).sum::<f64>();
                z[4..].iter().map(|g| c * g).collect()
            })
            .collect();
        let k = Mat::from_fn(3, 4, |i, j| f.keys[i][j]);
        let vt = Mat::from_fn(2, 3, |i, j| v[j][i]);
        let mut normal = k.transpose() * &k;
        for i in 0..4 {
            normal[(i, i)] += ridge;
        }
        let lhs = &shift * &normal;
        let rhs = &vt * &k;
        for i in 0..2 {
            for j in 0..4 {
                assert!((lhs[(i, j)] - rhs[(i, j)]).abs() < 1e-10, "({i},{j})");
            }
        }
        assert!(shift.norm_l2() > 0.0);
    }
}
