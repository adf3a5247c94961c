//! Norm-Anchor Scaling, NAS (Liu et al., "Norm Anchors Make Model Edits Last", 2026): an option
//! of the MEMIT family (`--set norm_anchor=true` for MEMIT, AlphaEdit, ENCORE and D4S).
//!
//! Sequential locate-and-edit methods fail when the solved value vectors and the edited weights
//! amplify each other: each update raises the next targets' norms, which raise the next update.
//! NAS breaks the loop at the value vector. With `v₀` the MLP output at the last edited layer L
//! at the subject's last token on the current model, and `δ` the optimized shift (spec §1.7):
//!
//! ```text
//! v*  = v₀ + δ                                   the solved value vector
//! m   = mean ‖v*_c‖ over calibration facts c,    solved on the unedited model W0
//!       with norms above the 95% quantile dropped
//! v*′ = m · v* / ‖v*‖           if ‖v*‖ ≤ 2m
//! v*′ = v₀                      otherwise (an outlier: the fact is left unedited, and said so)
//! δ′  = v*′ − v₀                z′ = h + δ′ is the residual target the solve then sees
//! ```
//! so every value vector keeps the norm the unedited model's edits have, however many edits came
//! before. This is the paper's "original-model reference norm" as its released code computes it
//! (the mean solved norm on the original model, top 5% dropped). The calibration facts differ:
//! the paper samples 1,000 CounterFact rewrites; d4s uses the 30 facts of its shipped demo deck,
//! which every installation has, and the run's own target settings and context templates. Their
//! targets go through the target cache, so with `--target-cache` they are optimized once per
//! model and settings.

use super::keys::bare_activations;
use super::target::{residual_targets, TargetParams, TargetResult};
use super::{EditContext, EditRequest, HParams};
use crate::error::{Error, Result};
use crate::model::{Model, Site};

/// Calibration norms above this quantile are dropped before the mean (the released code's
/// outlier policy).
const OUTLIER_QUANTILE: f64 = 0.95;

/// A value vector longer than this multiple of the anchor is an outlier: its edit is skipped.
const SKIP_FACTOR: f64 = 2.0;

/// What anchoring did to one target.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Anchored {
    /// `v*` rescaled from `from` to the anchor norm.
    Scaled { from: f64 },
    /// `‖v*‖ > 2m`: the target was set to `v₀` (no edit for this fact).
    Skipped { norm: f64 },
}

/// The residual targets of `requests` (as [`residual_targets`] computes them), with NAS applied
/// when `hp.norm_anchor` is set. `anchor` keeps the reference norm across the editor's edits.
pub fn value_targets(
    model: &mut Model,
    requests: &[EditRequest],
    contexts: &[String],
    hp: &HParams,
    anchor: &mut Option<f64>,
    cx: &mut EditContext,
) -> Result<Vec<TargetResult>> {
    let layer = hp.last_layer();
    let params = TargetParams::from_hparams(hp);
    let mut targets = residual_targets(
        model,
        requests,
        contexts,
        layer,
        &params,
        hp.target_batch,
        cx,
    )?;
    if !hp.norm_anchor {
        return Ok(targets);
    }
    let m = match *anchor {
        Some(m) => m,
        None => {
            let m = reference_norm(model, contexts, layer, &params, hp.target_batch, cx)?;
            *anchor = Some(m);
            m
        }
    };
    let v0 = bare_activations(model, requests, &[(layer, Site::MlpOut)])?.remove(0);
    for ((t, v0), r) in targets.iter_mut().zip(&v0).zip(requests) {
        let site = &mut t.sites[0];
        if let Anchored::Skipped { norm } = anchor_delta(&mut site.delta, v0, m) {
            cx.ctl.warn(format!(
                "norm anchor: the value vector of {:?} has norm {norm:.3}, over {SKIP_FACTOR}× the \
                 anchor {m:.3}; this fact is left unedited",
                r.subject
            ));
        }
    }
    Ok(targets)
}

/// Rewrites `δ` so that `v₀ + δ` has norm `m` (or is `v₀` when it is an outlier).
pub fn anchor_delta(delta: &mut [f64], v0: &[f64], m: f64) -> Anchored {
    let v_star: Vec<f64> = v0.iter().zip(delta.iter()).map(|(a, d)| a + d).collect();
    let norm = l2(&v_star);
    if norm > SKIP_FACTOR * m {
        delta.iter_mut().for_each(|d| *d = 0.0);
        return Anchored::Skipped { norm };
    }
    if norm > 0.0 {
        let scale = m / norm;
        for ((d, v), a) in delta.iter_mut().zip(&v_star).zip(v0) {
            *d = scale * v - a;
        }
    }
    Anchored::Scaled { from: norm }
}

/// `m`: the mean norm of the calibration facts' value vectors solved on the unedited model,
/// norms above the 95% quantile dropped.
pub fn reference_norm(
    model: &mut Model,
    contexts: &[String],
    layer: usize,
    params: &TargetParams,
    batch: usize,
    cx: &mut EditContext,
) -> Result<f64> {
    let facts = crate::eval::deck::demo()?;
    let norms = model.with_unedited(|m| -> Result<Vec<f64>> {
        let targets = residual_targets(m, &facts, contexts, layer, params, batch, cx)?;
        let v0 = bare_activations(m, &facts, &[(layer, Site::MlpOut)])?.remove(0);
        Ok(targets
            .iter()
            .zip(&v0)
            .map(|(t, v0)| {
                let d = &t.sites[0].delta;
                l2(&v0.iter().zip(d).map(|(a, b)| a + b).collect::<Vec<_>>())
            })
            .collect())
    })?;
    trimmed_mean(&norms)
        .filter(|m| m.is_finite() && *m > 0.0)
        .ok_or_else(|| Error::Numeric("norm anchor: no usable calibration norm".into()))
}

/// The mean of the values at or below the 95% quantile (nearest rank).
fn trimmed_mean(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((OUTLIER_QUANTILE * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    let cut = sorted[rank - 1];
    let kept: Vec<f64> = sorted.into_iter().filter(|v| *v <= cut).collect();
    Some(kept.iter().sum::<f64>() / kept.len() as f64)
}

fn l2(v: &[f64]) -> f64 {
    v.iter().map(|x| x * x).sum::<f64>().sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edit::{CorpusSpec, EditControl, Method, StatsCache, StatsConfig};
    use crate::model::config::Arch;
    use crate::model::random::{tiny_config, tiny_model};

    fn anchored_hparams(method: Method) -> HParams {
        let mut hp = HParams::defaults(method, &tiny_config(Arch::Llama));
        hp.layers = vec![1, 2];
        hp.context_templates = Some(vec!["{}".into(), "Hello there. {}".into()]);
        hp.v_num_grad_steps = 6;
        hp.norm_anchor = true;
        hp
    }

    fn stats(dir: &std::path::Path) -> StatsCache {
        let config = StatsConfig {
            corpus: CorpusSpec::ModelSamples { seed: 3 },
            tokens: Some(600),
            seq_len: 32,
        };
        StatsCache::with_dir(config, dir.to_path_buf())
    }

    #[test]
    fn anchored_targets_have_the_unedited_models_reference_norm_even_on_an_edited_model() {
        let dir = tempfile::tempdir().unwrap();
        let mut stats = stats(dir.path());
        let mut cx = EditContext {
            stats: &mut stats,
            targets: None,
            target_group: None,
            ctl: EditControl::default(),
        };
        let hp = anchored_hparams(Method::Memit);
        let contexts = hp.context_templates.clone().unwrap();
        let params = TargetParams::from_hparams(&hp);
        let mut model = tiny_model(Arch::Llama, 5);
        let m0 = reference_norm(&mut model, &contexts, 2, &params, 8, &mut cx).unwrap();
        // Edit the model (scale the last edited layer): the anchor stays the unedited model's.
        let w = model.edit_weight(2).unwrap().clone();
        model.set_edit_weight(2, (&w * 1.7).unwrap()).unwrap();
        let m = reference_norm(&mut model, &contexts, 2, &params, 8, &mut cx).unwrap();
        assert_eq!(m.to_bits(), m0.to_bits());

        let requests = vec![
            EditRequest::new("Eiffel Tower", "The Eiffel Tower is located in", "Rome"),
            EditRequest::new("Louvre", "The Louvre is in the city of", "Tokyo"),
        ];
        let mut slot = None;
        let targets =
            value_targets(&mut model, &requests, &contexts, &hp, &mut slot, &mut cx).unwrap();
        assert_eq!(slot, Some(m));
        let v0 = bare_activations(&model, &requests, &[(2, Site::MlpOut)])
            .unwrap()
            .remove(0);
        for (t, v0) in targets.iter().zip(&v0) {
            let v: Vec<f64> = v0
                .iter()
                .zip(&t.sites[0].delta)
                .map(|(a, d)| a + d)
                .collect();
            let skipped = t.sites[0].delta.iter().all(|d| *d == 0.0);
            assert!(
                skipped || (l2(&v) - m).abs() < 1e-9 * m,
                "{} vs {m}",
                l2(&v)
            );
        }
        // Without the option the same call leaves the optimized targets alone.
        let mut plain = hp.clone();
        plain.norm_anchor = false;
        let free =
            value_targets(&mut model, &requests, &contexts, &plain, &mut None, &mut cx).unwrap();
        assert!(free
            .iter()
            .zip(&targets)
            .any(|(a, b)| a.sites[0].delta != b.sites[0].delta));
    }

    #[test]
    fn methods_without_value_vectors_refuse_the_option_by_name() {
        let cfg = tiny_config(Arch::Llama);
        for method in [Method::Memit, Method::AlphaEdit, Method::D4s] {
            assert!(
                anchored_hparams(method).validate(&cfg).is_ok(),
                "{method:?}"
            );
        }
        for method in [Method::Rome, Method::Pmet, Method::FtL, Method::Grace] {
            let mut hp = anchored_hparams(method);
            hp.layers.truncate(1);
            let err = hp.validate(&cfg).unwrap_err().to_string();
            assert!(err.contains("norm_anchor"), "{method:?}: {err}");
        }
    }

    #[test]
    fn an_anchored_value_vector_has_the_anchor_norm_and_its_direction() {
        let v0 = [1.0, 0.0, 2.0];
        let mut delta = [3.0, 4.0, -2.0];
        let v_star = [4.0, 4.0, 0.0];
        let m = 3.0;
        assert_eq!(
            anchor_delta(&mut delta, &v0, m),
            Anchored::Scaled { from: l2(&v_star) }
        );
        let anchored: Vec<f64> = v0.iter().zip(&delta).map(|(a, d)| a + d).collect();
        assert!((l2(&anchored) - m).abs() < 1e-12);
        // Same direction as v*: parallel, positive.
        let cos = anchored
            .iter()
            .zip(&v_star)
            .map(|(a, b)| a * b)
            .sum::<f64>()
            / (l2(&anchored) * l2(&v_star));
        assert!((cos - 1.0).abs() < 1e-12);
    }

    #[test]
    fn an_outlier_value_vector_leaves_the_fact_unedited() {
        let v0 = [1.0, 0.0];
        let mut delta = [10.0, 0.0];
        assert_eq!(
            anchor_delta(&mut delta, &v0, 5.0),
            Anchored::Skipped { norm: 11.0 }
        );
        assert_eq!(delta, [0.0, 0.0]);
    }

    #[test]
    fn the_reference_drops_the_top_five_percent() {
        let mut v: Vec<f64> = (1..=19).map(f64::from).collect();
        v.push(1000.0);
        assert_eq!(trimmed_mean(&v), Some(10.0));
        assert_eq!(trimmed_mean(&[4.0]), Some(4.0));
        assert_eq!(trimmed_mean(&[]), None);
    }
}
