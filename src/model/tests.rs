//! Exact properties of the hooks, on tiny random models of every architecture.

use candle_core::{IndexOp, Tensor, Var};

use super::config::Arch;
use super::random::tiny_model;
use super::*;

const ARCHS: [Arch; 8] = Arch::ALL;

fn max_abs(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// `max |a − b|` relative to the magnitude of `b` (at least 1): float noise scales with the values.
fn max_rel(a: &Tensor, b: &Tensor) -> f32 {
    let scale = b
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
        .max(1.0);
    max_abs(a, b) / scale
}

fn rows() -> Vec<Vec<u32>> {
    vec![
        vec![3, 17, 250, 9, 77, 500, 42, 1],
        vec![5, 6, 7],
        vec![100, 200, 300, 400, 11],
    ]
}

#[test]
fn captured_activations_recompute_by_hand() {
    for arch in ARCHS {
        let m = tiny_model(arch, 1);
        let ids = vec![rows()[0].clone()];
        let caps = vec![
            (0, Site::BlockOut),
            (1, Site::AttnOut),
            (1, Site::Key),
            (1, Site::MlpOut),
            (1, Site::BlockOut),
        ];
        let out = m
            .forward(
                Input::Tokens(&ids),
                &Forward {
                    captures: caps,
                    ..Default::default()
                },
            )
            .unwrap();
        let h0 = out.capture(0, Site::BlockOut).unwrap();
        let attn = out.capture(1, Site::AttnOut).unwrap();
        let b = &m.blocks[1];
        let post = |norm: &Option<Norm>, x: &Tensor| match norm {
            Some(n) => n.forward(x, true).unwrap(),
            None => x.clone(),
        };
        let attn_res = post(&b.attn_post_norm, attn);
        let (mlp_in, residual) = match &b.mlp_input {
            block::MlpInput::Sequential(n) => {
                let h = (h0 + &attn_res).unwrap();
                (n.forward(&h, true).unwrap(), h)
            }
            block::MlpInput::Parallel(n) => {
                (n.forward(h0, true).unwrap(), (h0 + &attn_res).unwrap())
            }
            block::MlpInput::SharedNorm => (
                b.attn_norm.forward(h0, true).unwrap(),
                (h0 + &attn_res).unwrap(),
            ),
        };
        let affine = |x: &Tensor, lin: &Linear| {
            let y = x.broadcast_matmul(&lin.weight.t().unwrap()).unwrap();
            match &lin.bias {
                Some(bias) => y.broadcast_add(bias).unwrap(),
                None => y,
            }
        };
        let key = match &b.mlp {
            block::Mlp::Gated { gate, up, act, .. } => {
                (act.apply(&affine(&mlp_in, gate)).unwrap() * affine(&mlp_in, up)).unwrap()
            }
            block::Mlp::Plain { fc_in, act, .. } => act.apply(&affine(&mlp_in, fc_in)).unwrap(),
        };
        let err = max_rel(&key, out.capture(1, Site::Key).unwrap());
        assert!(err < 1e-5, "{arch:?} key: {err}");
        let w = m.edit_weight(1).unwrap();
        let mut value = key.broadcast_matmul(&w.t().unwrap()).unwrap();
        if let Some(bias) = &b.mlp.out().bias {
            value = value.broadcast_add(bias).unwrap();
        }
        assert!(
            max_rel(&value, out.capture(1, Site::MlpOut).unwrap()) < 1e-5,
            "{arch:?} value"
        );
        let block_out = (residual + post(&b.mlp_post_norm, &value)).unwrap();
        assert!(
            max_rel(&block_out, out.capture(1, Site::BlockOut).unwrap()) < 1e-5,
            "{arch:?} block"
        );
    }
}

#[test]
fn right_padded_batch_equals_rows_alone() {
    for arch in ARCHS {
        let m = tiny_model(arch, 2);
        let rows = rows();
        let all = m
            .forward(
                Input::Tokens(&rows),
                &Forward {
                    logits: Logits::All,
                    ..Default::default()
                },
            )
            .unwrap();
        for (r, row) in rows.iter().enumerate() {
            let alone = m
                .forward(
                    Input::Tokens(std::slice::from_ref(row)),
                    &Forward {
                        logits: Logits::All,
                        ..Default::default()
                    },
                )
                .unwrap();
            let batched = all.logits().unwrap().i((r, 0..row.len())).unwrap();
            let single = alone.logits().unwrap().i(0).unwrap();
            let err = max_rel(&batched, &single);
            assert!(err < 1e-5, "{arch:?} row {r}: {err}");
        }
    }
}

#[test]
fn fused_and_composed_paths_agree_on_a_model() {
    for arch in ARCHS {
        let m = tiny_model(arch, 3);
        let rows = rows();
        let fast = m
            .forward(
                Input::Tokens(&rows),
                &Forward {
                    logits: Logits::All,
                    ..Default::default()
                },
            )
            .unwrap();
        let slow = m
            .forward(
                Input::Tokens(&rows),
                &Forward {
                    logits: Logits::All,
                    force_composed: true,
                    ..Default::default()
                },
            )
            .unwrap();
        assert!(
            max_abs(fast.logits().unwrap(), slow.logits().unwrap()) < 6e-5,
            "{arch:?}"
        );
    }
}

/// Full forward vs. (layers ≤ L and positions < p from a cache) + the rest: same logits.
#[test]
fn prefix_cached_forward_equals_full_forward() {
    for arch in ARCHS {
        let m = tiny_model(arch, 4);
        let rows = rows();
        let full = m
            .forward(
                Input::Tokens(&rows),
                &Forward {
                    logits: Logits::All,
                    keep_kv: true,
                    captures: vec![(0, Site::BlockOut)],
                    ..Default::default()
                },
            )
            .unwrap();
        let prefix = [3usize, 1, 2];
        let cache = full.kv.as_ref().unwrap().truncated(&prefix);
        let lens: Vec<usize> = rows.iter().zip(prefix).map(|(r, p)| r.len() - p).collect();
        let s = *lens.iter().max().unwrap();
        let h0 = full.capture(0, Site::BlockOut).unwrap();
        let parts: Vec<Tensor> = (0..rows.len())
            .map(|r| {
                let h = h0.i((r, prefix[r]..prefix[r] + lens[r])).unwrap();
                h.pad_with_zeros(0, 0, s - lens[r])
                    .unwrap()
                    .unsqueeze(0)
                    .unwrap()
            })
            .collect();
        let hidden = Tensor::cat(&parts, 0).unwrap();
        let at: Vec<(usize, usize)> = (0..rows.len())
            .flat_map(|r| (0..lens[r]).map(move |i| (r, i)))
            .collect();
        let resumed = m
            .forward(
                Input::Hidden {
                    hidden,
                    lens: lens.clone(),
                },
                &Forward {
                    start_layer: 1,
                    past: Some(&cache),
                    logits: Logits::At(at.clone()),
                    ..Default::default()
                },
            )
            .unwrap();
        let got = resumed.logits().unwrap();
        for (n, &(r, i)) in at.iter().enumerate() {
            let want = full.logits().unwrap().i((r, prefix[r] + i)).unwrap();
            assert!(
                max_abs(&got.i(n).unwrap(), &want) < 1e-5,
                "{arch:?} row {r} pos {i}"
            );
        }
    }
}

#[test]
fn kv_cached_generation_equals_full_recompute() {
    for arch in ARCHS {
        let m = tiny_model(arch, 5);
        let prompts = vec![vec![3u32, 17, 250], vec![9, 77, 500, 42, 1]];
        let opts = generate::GenerateOptions {
            max_tokens: 6,
            stop_at_eos: false,
            ..Default::default()
        };
        let cached = m.generate_batch_with(&prompts, &opts, |_, _| true).unwrap();
        for (p, gen) in prompts.iter().zip(&cached) {
            let mut seq = p.clone();
            for &t in gen {
                let am = m.argmax_all(&[seq.clone()]).unwrap();
                assert_eq!(*am[0].last().unwrap(), t, "{arch:?}");
                seq.push(t);
            }
        }
    }
}

#[test]
fn weight_replaced_and_restored_gives_identical_logits() {
    for arch in ARCHS {
        let mut m = tiny_model(arch, 6);
        let rows = rows();
        let fwd = Forward {
            logits: Logits::All,
            ..Default::default()
        };
        let before = m
            .forward(Input::Tokens(&rows), &fwd)
            .unwrap()
            .logits
            .unwrap();
        let w0 = m.edit_weight(1).unwrap().clone();
        // A perturbation, not a rescaling: Gemma-2's post-feedforward norm undoes a scale.
        let noise = seeded(w0.elem_count(), 0.1, 3).reshape(w0.dims()).unwrap();
        m.set_edit_weight(1, (&w0 + noise).unwrap()).unwrap();
        let changed = m
            .forward(Input::Tokens(&rows), &fwd)
            .unwrap()
            .logits
            .unwrap();
        assert!(
            max_abs(&before, &changed) > 1e-3,
            "{arch:?}: the edit has an effect"
        );
        m.set_edit_weight(1, w0).unwrap();
        let after = m
            .forward(Input::Tokens(&rows), &fwd)
            .unwrap()
            .logits
            .unwrap();
        let (a, b) = (
            before.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            after.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        );
        assert!(
            a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()),
            "{arch:?}: bit-identical"
        );
        assert!(m
            .set_edit_weight(
                1,
                Tensor::zeros((2, 2), candle_core::DType::F32, &m.device).unwrap()
            )
            .is_err());
        assert!(m.set_edit_weight(99, before.clone()).is_err());
    }
}

/// A deterministic Gaussian vector (candle's `randn` draws from a global generator).
fn seeded(n: usize, std: f64, seed: u64) -> Tensor {
    use rand::SeedableRng;
    use rand_distr::Distribution;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let normal = rand_distr::Normal::new(0.0, std).unwrap();
    let v: Vec<f32> = (0..n).map(|_| normal.sample(&mut rng) as f32).collect();
    Tensor::from_vec(v, n, &candle_core::Device::Cpu).unwrap()
}

/// Loss = Σ log p(target) at chosen positions with δ added to block output 0 at one position.
fn delta_loss(
    m: &Model,
    rows: &[Vec<u32>],
    delta: &Tensor,
    at: &[(usize, usize)],
    targets: &[u32],
) -> Tensor {
    let s = rows.iter().map(Vec::len).max().unwrap();
    let dense = m.delta_at(delta, &vec![1; rows.len()], s).unwrap();
    let out = m
        .forward(
            Input::Tokens(rows),
            &Forward {
                deltas: vec![SiteDelta {
                    layer: 0,
                    site: Site::BlockOut,
                    value: dense,
                }],
                logits: Logits::At(at.to_vec()),
                ..Default::default()
            },
        )
        .unwrap();
    generate::target_logprobs(out.logits().unwrap(), targets)
        .unwrap()
        .sum_all()
        .unwrap()
}

#[test]
fn delta_gradient_matches_finite_differences() {
    for arch in ARCHS {
        let m = tiny_model(arch, 7);
        let rows = rows();
        let at = vec![(0, 4), (1, 2), (2, 3)];
        let targets = [11u32, 22, 33];
        let d = m.config.d_model;
        let delta = Var::from_tensor(&seeded(d, 0.1, 11)).unwrap();
        let loss = delta_loss(&m, &rows, delta.as_tensor(), &at, &targets);
        let grads = loss.backward().unwrap();
        let g = grads.get(delta.as_tensor()).unwrap();
        let norm = |t: &Tensor| {
            t.sqr()
                .unwrap()
                .sum_all()
                .unwrap()
                .sqrt()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap() as f64
        };
        let g_norm = norm(g);
        // Central differences with Richardson extrapolation: the O(h²) error cancels, so a step
        // large enough to keep f32 rounding of the loss out of the quotient can be used.
        let h = 5e-2;
        let directional = |u: &Tensor| {
            let at_step = |step: f64| {
                let x = (delta.as_tensor() + (u * step).unwrap()).unwrap();
                delta_loss(&m, &rows, &x, &at, &targets)
                    .to_scalar::<f32>()
                    .unwrap() as f64
            };
            let central = |h: f64| (at_step(h) - at_step(-h)) / (2.0 * h);
            let analytic = (g * u)
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap() as f64;
            (analytic, (4.0 * central(h / 2.0) - central(h)) / 3.0)
        };
        // Along the gradient the derivative is |g|: a relative check that f32 rounding of the
        // loss cannot blur. Along a random unit direction: an absolute check scaled by |g|.
        let (analytic, numeric) = directional(&(g / g_norm).unwrap());
        let rel = (analytic - numeric).abs() / numeric.abs();
        let r = seeded(d, 1.0, 12);
        let (a2, n2) = directional(&(&r / norm(&r)).unwrap());
        assert!(
            (a2 - n2).abs() < 1e-3 * g_norm,
            "{arch:?}: random direction {a2} vs {n2}"
        );
        assert!(
            rel < 1e-3,
            "{arch:?}: analytic {analytic} vs numeric {numeric} (rel {rel})"
        );
    }
}

/// Rounding of half-precision formats: bf16 keeps 8 significant bits, f16 11.
fn half_precisions() -> [(Precision, f32); 2] {
    [
        (Precision::Bf16, 2f32.powi(-8)),
        (Precision::F16, 2f32.powi(-11)),
    ]
}

#[test]
fn half_precision_runtime_tracks_f32_on_every_architecture() {
    for arch in ARCHS {
        let full = tiny_model(arch, 1);
        for (precision, unit) in half_precisions() {
            let half = tiny_model(arch, 1).to_precision(precision).unwrap();
            assert_eq!(half.precision(), precision);
            assert_eq!(half.edit_weight(1).unwrap().dtype(), precision.dtype());
            let fwd = Forward {
                logits: Logits::All,
                captures: vec![(1, Site::Key), (1, Site::MlpOut)],
                ..Default::default()
            };
            let a = full.forward(Input::Tokens(&rows()), &fwd).unwrap();
            let b = half.forward(Input::Tokens(&rows()), &fwd).unwrap();
            // The boundary is f32 whatever the runtime holds.
            for t in [
                b.logits().unwrap(),
                b.capture(1, Site::Key).unwrap(),
                &b.hidden,
            ] {
                assert_eq!(t.dtype(), DType::F32, "{arch:?} {precision}");
            }
            // Three layers of rounding by `unit` each: a few hundred units at most, and far from
            // zero (a forward pass that ignored the precision would agree exactly).
            let rel = max_rel(b.logits().unwrap(), a.logits().unwrap());
            assert!(rel < 300.0 * unit, "{arch:?} {precision}: {rel}");
            assert!(rel > 0.0, "{arch:?} {precision}: identical to f32");
            let key_rel = max_rel(
                b.capture(1, Site::Key).unwrap(),
                a.capture(1, Site::Key).unwrap(),
            );
            assert!(
                key_rel < 100.0 * unit,
                "{arch:?} {precision} keys: {key_rel}"
            );
        }
    }
}

#[test]
fn half_precision_weights_round_on_install_and_restore_exactly() {
    let mut m = tiny_model(Arch::Llama, 2)
        .to_precision(Precision::Bf16)
        .unwrap();
    let w0 = m.edit_weight(1).unwrap().clone();
    let update = (m.edit_weight_f32(1).unwrap() + 1e-3).unwrap();
    m.set_edit_weight(1, update.clone()).unwrap();
    let stored = m.edit_weight(1).unwrap();
    assert_eq!(stored.dtype(), DType::BF16);
    // What is stored is the update rounded to bf16, not the update.
    let rounded = update.to_dtype(DType::BF16).unwrap();
    assert!(same_tensor(stored, &rounded).unwrap());
    assert!(!same_tensor(&stored.to_dtype(DType::F32).unwrap(), &update).unwrap());
    m.reset_edits();
    assert!(same_tensor(m.edit_weight(1).unwrap(), &w0).unwrap());
    assert!(!m.is_edited().unwrap());
}

/// A target vector is optimized through a bf16 forward pass: δ stays f32 and still gets its
/// gradient through the casts.
#[test]
fn delta_gradient_flows_through_a_half_precision_forward() {
    let m = tiny_model(Arch::Llama, 3)
        .to_precision(Precision::Bf16)
        .unwrap();
    let ids = vec![rows()[0].clone()];
    let d = m.config.d_model;
    let delta = Var::from_tensor(&Tensor::zeros(d, DType::F32, &m.device).unwrap()).unwrap();
    let dense = m.delta_at(delta.as_tensor(), &[3], ids[0].len()).unwrap();
    let out = m
        .forward(
            Input::Tokens(&ids),
            &Forward {
                deltas: vec![SiteDelta {
                    layer: 1,
                    site: Site::MlpOut,
                    value: dense,
                }],
                logits: Logits::At(vec![(0, 7)]),
                ..Default::default()
            },
        )
        .unwrap();
    let loss = out.logits().unwrap().i((0, 5)).unwrap();
    let grads = loss.backward().unwrap();
    let g = grads.get(delta.as_tensor()).expect("δ has a gradient");
    assert_eq!(g.dtype(), DType::F32);
    let norm = g
        .sqr()
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(norm.is_finite() && norm > 0.0, "{norm}");
}
