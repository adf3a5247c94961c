//! Exact properties of the editors on tiny random models.

use std::sync::atomic::AtomicBool;

use candle_core::Tensor;
use faer::Mat;

use super::linalg::{mat_from_columns, mat_from_tensor};
use super::target::{
    optimize, optimize_batch, KlPrompt, Lookup, NllSchedule, OptimOptions, SiteSpec, TargetParams,
    TargetProblem,
};
use super::*;
use crate::eval::testkit::layers_for;
use crate::model::config::Arch;
use crate::model::random::tiny_model;
use crate::model::{Forward, Input, Logits, Site};

fn requests() -> Vec<EditRequest> {
    vec![
        EditRequest::new("Eiffel Tower", "The Eiffel Tower is located in", "Rome"),
        EditRequest::new("Danielle", "The mother tongue of Danielle is", "English"),
        EditRequest::new("Apple", "Apple was founded by", "Bill"),
        EditRequest::new("Louvre", "The Louvre is in the city of", "Tokyo"),
    ]
}

fn fixed_templates() -> Vec<String> {
    vec![
        "{}".into(),
        "Hello there. {}".into(),
        "It was a day. {}".into(),
    ]
}

fn hparams(method: Method, arch: Arch, layers: Vec<usize>) -> HParams {
    let cfg = crate::model::random::tiny_config(arch);
    let mut hp = HParams::defaults(method, &cfg);
    hp.layers = layers;
    hp.context_templates = Some(fixed_templates());
    hp.v_num_grad_steps = 8;
    hp.mom2_update_weight = 10.0;
    hp
}

struct Env {
    _dir: tempfile::TempDir,
    stats: StatsCache,
}

fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let config = StatsConfig {
        corpus: CorpusSpec::ModelSamples { seed: 3 },
        tokens: Some(1500),
        seq_len: 48,
    };
    let stats = StatsCache::with_dir(config, dir.path().to_path_buf());
    Env { _dir: dir, stats }
}

fn apply(
    editor: &mut dyn Editor,
    model: &mut crate::model::Model,
    env: &mut Env,
    reqs: &[EditRequest],
) -> Result<EditOutcome> {
    let mut cx = EditContext {
        stats: &mut env.stats,
        targets: None,
        target_group: None,
        ctl: EditControl::default(),
    };
    editor.apply(model, &mut cx, reqs)
}

fn rel_diff(a: &Tensor, b: &Tensor) -> f64 {
    let d = (a - b)
        .unwrap()
        .sqr()
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap() as f64;
    let n = b
        .sqr()
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap() as f64;
    (d / n.max(1e-30)).sqrt()
}

#[test]
fn rome_writes_the_value_with_a_rank_one_update() {
    for arch in [Arch::Llama, Arch::Gpt2] {
        let mut model = tiny_model(arch, 11);
        let mut env = env();
        let mut rome = rome::Rome::new(hparams(Method::Rome, arch, vec![1]));
        let req = &requests()[0];
        let w_before = model.edit_weight(1).unwrap().clone();
        apply(&mut rome, &mut model, &mut env, std::slice::from_ref(req)).unwrap();
        // (W + ΔW) k = v* at the bare prompt.
        let bare = keys::bare_activations(&model, std::slice::from_ref(req), &[(1, Site::MlpOut)])
            .unwrap();
        let out = &bare[0][0];
        let v = rome.last_value();
        let err = out
            .iter()
            .zip(v)
            .map(|(a, b)| (a - b).powi(2))
            .sum::<f64>()
            .sqrt();
        let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!(
            err < 1e-4 * norm,
            "{arch:?}: |Wk − v*| = {err}, |v*| = {norm}"
        );
        let delta = mat_from_tensor(&(model.edit_weight(1).unwrap() - &w_before).unwrap()).unwrap();
        let s = delta.thin_svd().unwrap();
        let sv = s.S().column_vector();
        assert!(
            sv[1] < 1e-5 * sv[0],
            "{arch:?}: ΔW is rank one ({} vs {})",
            sv[1],
            sv[0]
        );
    }
}

/// An independent least-squares solve of the MEMIT objective (QR of the stacked system).
#[test]
fn memit_update_solves_its_objective() {
    let (d_out, d_in, n) = (5, 7, 3);
    let r = Mat::from_fn(d_out, n, |i, j| ((i * 3 + j * 5) % 7) as f64 - 3.0);
    let k = Mat::from_fn(d_in, n, |i, j| ((i * 2 + j * 7) % 5) as f64 - 2.0);
    let l = Mat::from_fn(d_in, d_in, |i, j| {
        if i >= j {
            1.0 / (1.0 + i as f64 + 2.0 * j as f64)
        } else {
            0.0
        }
    });
    let c = &l * l.transpose();
    let lambda = 3.0;
    let delta = memit::memit_update(&r, &k, &c, lambda, &EditControl::default()).unwrap();
    // min ‖[Kᵀ; √λ Lᵀ] Δᵀ − [Rᵀ; 0]‖ ⇔ the same normal equations.
    let a = Mat::from_fn(n + d_in, d_in, |i, j| {
        if i < n {
            k[(j, i)]
        } else {
            lambda.sqrt() * l[(j, i - n)]
        }
    });
    let b = Mat::from_fn(n + d_in, d_out, |i, j| if i < n { r[(j, i)] } else { 0.0 });
    use faer::linalg::solvers::SolveLstsq;
    let x = a.qr().solve_lstsq(&b);
    for i in 0..d_out {
        for j in 0..d_in {
            assert!((delta[(i, j)] - x[(j, i)]).abs() < 1e-9, "({i},{j})");
        }
    }
}

#[test]
fn alphaedit_leaves_preserved_keys_untouched() {
    let mut model = tiny_model(Arch::Llama, 16);
    let mut env = env();
    let c = env
        .stats
        .second_moments(&mut model, &[1], &EditControl::default())
        .unwrap()[0]
        .clone();
    let (vals, vecs) = linalg::symmetric_eigen(c.as_ref().as_ref()).unwrap();
    // A threshold between the small and the large half of the spectrum.
    let threshold = vals[vals.len() / 2];
    let mut hp = hparams(Method::AlphaEdit, Arch::Llama, vec![1]);
    hp.nullspace_threshold = threshold;
    let mut editor = alphaedit::AlphaEdit::new(hp);
    let w_before = model.edit_weight(1).unwrap().clone();
    apply(&mut editor, &mut model, &mut env, &requests()[..2]).unwrap();
    let delta = mat_from_tensor(&(model.edit_weight(1).unwrap() - &w_before).unwrap()).unwrap();
    let w = mat_from_tensor(&w_before).unwrap();
    let preserved: Vec<Vec<f64>> = (0..vals.len())
        .filter(|&i| vals[i] >= threshold)
        .map(|i| (0..vals.len()).map(|r| vecs[(r, i)]).collect())
        .collect();
    let k0 = mat_from_columns(&preserved);
    let dk = &delta * &k0;
    let wk = &w * &k0;
    let (_, dk_f) = linalg::l1_fro(dk.as_ref());
    let (_, wk_f) = linalg::l1_fro(wk.as_ref());
    let (_, d_f) = linalg::l1_fro(delta.as_ref());
    assert!(d_f > 1e-6, "the edit changed the weights");
    assert!(dk_f <= 1e-4 * wk_f, "‖ΔW K0‖ = {dk_f}, ‖W K0‖ = {wk_f}");
}

#[test]
fn an_alphaedit_threshold_below_every_eigenvalue_is_refused_not_a_silent_zero_edit() {
    let mut model = tiny_model(Arch::Llama, 16);
    let mut env = env();
    let mut hp = hparams(Method::AlphaEdit, Arch::Llama, vec![1]);
    hp.nullspace_threshold = 0.0;
    let mut editor = alphaedit::AlphaEdit::new(hp);
    let w_before = model.edit_weight(1).unwrap().clone();
    let err = apply(&mut editor, &mut model, &mut env, &requests()[..1]).unwrap_err();
    assert!(
        err.to_string()
            .contains("null space is empty at layer(s) [1]"),
        "{err}"
    );
    assert!(
        err.to_string().contains("raise nullspace_threshold"),
        "{err}"
    );
    let w_after = model.edit_weight(1).unwrap();
    assert!(
        crate::model::same_tensor(&w_before, w_after).unwrap(),
        "nothing changed"
    );
}

#[test]
fn a_new_alphaedit_editor_reuses_the_projector_and_edits_identically() {
    let mut model = tiny_model(Arch::Llama, 16);
    let mut env = env();
    let mut hp = hparams(Method::AlphaEdit, Arch::Llama, vec![1]);
    // P = I: every eigenvalue of the tiny model's C lies above the default 2e-2, where the null
    // space is empty and the edit is refused.
    hp.nullspace_threshold = 1e9;
    let w0 = model.edit_weight(1).unwrap().clone();
    let mut first = alphaedit::AlphaEdit::new(hp.clone());
    apply(&mut first, &mut model, &mut env, &requests()[..1]).unwrap();
    let after_first = model.edit_weight(1).unwrap().clone();
    model.set_edit_weight(1, w0).unwrap();
    let mut second = alphaedit::AlphaEdit::new(hp.clone());
    apply(&mut second, &mut model, &mut env, &requests()[..1]).unwrap();
    // One eigendecomposition per process and statistics key, not one per editor.
    assert!(std::ptr::eq(
        first.projector(0).unwrap(),
        second.projector(0).unwrap()
    ));
    assert_eq!(rel_diff(&after_first, model.edit_weight(1).unwrap()), 0.0);
    // Another threshold is another projector.
    let mut hp_other = hp;
    hp_other.nullspace_threshold *= 10.0;
    let mut third = alphaedit::AlphaEdit::new(hp_other);
    apply(&mut third, &mut model, &mut env, &requests()[..1]).unwrap();
    assert!(!std::ptr::eq(
        first.projector(0).unwrap(),
        third.projector(0).unwrap()
    ));
}

#[test]
fn grace_is_invisible_outside_its_radius_and_edits_inside() {
    let mut model = tiny_model(Arch::Llama, 17);
    let mut env = env();
    let mut hp = hparams(Method::Grace, Arch::Llama, vec![1]);
    hp.n_iter = 40;
    hp.edit_lr = 0.5;
    let mut grace = grace::Grace::new(hp);
    let unrelated: Vec<Vec<u32>> = vec![
        model.encode("Something else entirely").unwrap(),
        model.encode("Bonjour").unwrap(),
    ];
    let fwd = Forward {
        logits: Logits::All,
        ..Default::default()
    };
    let before = model
        .forward(Input::Tokens(&unrelated), &fwd)
        .unwrap()
        .logits
        .unwrap();
    let req = &requests()[0];
    apply(&mut grace, &mut model, &mut env, std::slice::from_ref(req)).unwrap();
    assert_eq!(grace.codebook().len(), 1);
    let after = model
        .forward(Input::Tokens(&unrelated), &fwd)
        .unwrap()
        .logits
        .unwrap();
    assert!(
        crate::model::same_tensor(&before, &after).unwrap(),
        "bit-identical outside the radius"
    );
    // The edited prompt now continues with the target's first token.
    let prompt = model.encode(&req.filled_prompt()).unwrap();
    let target = request::target_ids(&model, &req.target).unwrap();
    let am = model.argmax_all(std::slice::from_ref(&prompt)).unwrap();
    assert_eq!(*am[0].last().unwrap(), target[0]);
    // Undo empties the codebook and the model is unedited again.
    let mut cx = EditContext {
        stats: &mut env.stats,
        targets: None,
        target_group: None,
        ctl: EditControl::default(),
    };
    grace
        .undo(
            &mut model,
            &mut cx,
            &UndoRecord::Grace(grace::Codebook::default()),
        )
        .unwrap();
    assert!(!model.is_edited().unwrap());
}

#[test]
fn safety_gate_rejects_nan_and_huge_updates_and_changes_nothing() {
    let mut model = tiny_model(Arch::Gpt2, 18);
    let w = model.edit_weight(1).unwrap().clone();
    let mut nan = w.to_vec2::<f32>().unwrap();
    nan[0][0] = f32::NAN;
    let nan = Tensor::new(nan, &model.device).unwrap();
    let e = commit_updates(&mut model, vec![(1, nan)], 10.0).unwrap_err();
    assert!(matches!(e, Error::Rejected(_)), "{e}");
    assert!(crate::model::same_tensor(model.edit_weight(1).unwrap(), &w).unwrap());
    let huge = (&w * 100.0).unwrap();
    assert!(matches!(
        commit_updates(&mut model, vec![(1, huge)], 10.0).unwrap_err(),
        Error::Rejected(_)
    ));
    // Through an editor: a gate so tight every update fails; the model is untouched.
    let mut env = env();
    let mut hp = hparams(Method::Memit, Arch::Gpt2, vec![0, 1]);
    hp.max_update_ratio = 1e-12;
    let mut memit = memit::Memit::new(hp);
    let e = apply(&mut memit, &mut model, &mut env, &requests()[..1]).unwrap_err();
    assert!(matches!(e, Error::Rejected(_)), "{e}");
    assert!(!model.is_edited().unwrap());
}

#[test]
fn cancelled_edit_changes_nothing() {
    let mut model = tiny_model(Arch::Llama, 19);
    let mut env = env();
    let cancel = AtomicBool::new(true);
    let mut d4s = d4s::D4s::new(hparams(Method::D4s, Arch::Llama, vec![0, 1]));
    let mut cx = EditContext {
        stats: &mut env.stats,
        targets: None,
        target_group: None,
        ctl: EditControl {
            cancel: Some(&cancel),
            progress: None,
        },
    };
    let e = d4s
        .apply(&mut model, &mut cx, &requests()[..1])
        .unwrap_err();
    assert!(matches!(e, Error::Cancelled));
    assert!(!model.is_edited().unwrap());
    assert_eq!(d4s.n_edits(), 0);
}

/// The cached-prefix / cached-layers / selected-logits path follows the same δ trajectory as the
/// plain computation, for every kind of site.
#[test]
fn target_speedups_are_exact() {
    for arch in Arch::ALL {
        let model = tiny_model(arch, 20);
        let req = &requests()[1];
        let cases = [
            (
                vec![SiteSpec {
                    site: Site::MlpOut,
                    reference: Site::BlockOut,
                    init: None,
                    regularized: true,
                }],
                Lookup::SubjectLast,
                KlPrompt::SubjectIsA,
            ),
            (
                vec![
                    SiteSpec {
                        site: Site::AttnOut,
                        reference: Site::AttnOut,
                        init: None,
                        regularized: true,
                    },
                    SiteSpec {
                        site: Site::MlpOut,
                        reference: Site::MlpOut,
                        init: None,
                        regularized: true,
                    },
                ],
                Lookup::SubjectLast,
                KlPrompt::SubjectIsA,
            ),
            (
                vec![SiteSpec {
                    site: Site::MlpOut,
                    reference: Site::MlpOut,
                    init: Some(vec![0.01; 64]),
                    regularized: false,
                }],
                Lookup::PromptLast,
                KlPrompt::Omitted,
            ),
        ];
        for (sites, lookup, kl) in cases {
            for layer in [0, 1] {
                let problem = TargetProblem::for_request(
                    &model,
                    req,
                    &fixed_templates(),
                    lookup,
                    layer,
                    sites.clone(),
                    kl,
                )
                .unwrap();
                let params = TargetParams {
                    steps: 6,
                    lr: 0.3,
                    weight_decay: 0.1,
                    clamp_norm_factor: Some(0.5),
                    kl_factor: 0.5,
                    stop_loss: None,
                    stop_prob: None,
                    stop_top1: None,
                    schedule: NllSchedule::Constant,
                    nll_factor: 1.0,
                };
                let run = |prefix_cache| {
                    optimize(
                        &model,
                        &problem,
                        &params,
                        OptimOptions {
                            prefix_cache,
                            record_trajectory: true,
                        },
                        &EditControl::default(),
                    )
                    .unwrap()
                };
                let (fast, slow) = (run(true), run(false));
                assert_eq!(fast.trajectory.len(), slow.trajectory.len());
                for (step, (a, b)) in fast.trajectory.iter().zip(&slow.trajectory).enumerate() {
                    for (da, db) in a.iter().zip(b) {
                        let err = da
                            .iter()
                            .zip(db)
                            .map(|(x, y)| (x - y).abs())
                            .fold(0f32, f32::max);
                        assert!(
                            err < 1e-4,
                            "{arch:?} layer {layer} step {step}: max |Δδ| = {err}"
                        );
                    }
                }
                assert!((fast.prob_final - slow.prob_final).abs() < 1e-4);
            }
        }
    }
}

/// Problems optimized in one batch follow the trajectories they follow alone (to the last bits
/// of the wider products), each with its own early stop; a batch of one is the single
/// optimization bit for bit.
#[test]
fn a_batch_of_target_problems_optimizes_each_as_if_alone() {
    for arch in [Arch::Llama, Arch::Gpt2] {
        let model = tiny_model(arch, 20);
        // Requests of different lengths: padded rows in the batch.
        let problems: Vec<TargetProblem> = requests()
            .iter()
            .map(|r| TargetProblem::residual(&model, r, &fixed_templates(), 1).unwrap())
            .collect();
        // Fixed steps, then an early stop that the problems reach at different steps: the
        // midpoint of their final probabilities after the fixed steps.
        let mut finals: Vec<f64> = Vec::new();
        for stopping in [false, true] {
            let stop_prob = stopping.then(|| {
                let lo = finals.iter().copied().fold(f64::INFINITY, f64::min);
                let hi = finals.iter().copied().fold(0.0, f64::max);
                (lo + hi) / 2.0
            });
            for prefix_cache in [true, false] {
                let params = TargetParams {
                    steps: 8,
                    lr: 0.5,
                    weight_decay: 0.1,
                    clamp_norm_factor: Some(4.0),
                    kl_factor: 0.5,
                    stop_loss: None,
                    stop_prob,
                    stop_top1: None,
                    schedule: NllSchedule::Constant,
                    nll_factor: 1.0,
                };
                let opts = OptimOptions {
                    prefix_cache,
                    record_trajectory: true,
                };
                let ctl = EditControl::default();
                let batch = optimize_batch(&model, &problems, &params, opts, &ctl).unwrap();
                let what = format!("{arch:?} stop {stop_prob:?} cache {prefix_cache}");
                let mut steps = Vec::new();
                for (p, b) in problems.iter().zip(&batch) {
                    let alone = optimize(&model, p, &params, opts, &ctl).unwrap();
                    assert_eq!(alone.steps_run, b.steps_run, "{what}");
                    assert_eq!(alone.trajectory.len(), b.trajectory.len(), "{what}");
                    for (x, y) in alone.trajectory.iter().zip(&b.trajectory) {
                        let err = x[0]
                            .iter()
                            .zip(&y[0])
                            .map(|(a, b)| (a - b).abs())
                            .fold(0f32, f32::max);
                        assert!(err < 1e-4, "{what}: max |Δδ| = {err}");
                    }
                    assert!((alone.prob_final - b.prob_final).abs() < 1e-4, "{what}");
                    assert_eq!(alone.sites[0].reference.len(), b.sites[0].reference.len());
                    steps.push(b.steps_run);
                    if !stopping && prefix_cache {
                        finals.push(b.prob_final);
                    }
                }
                if stop_prob.is_some() {
                    steps.dedup();
                    assert!(
                        steps.len() > 1,
                        "{what}: the problems stop at different steps"
                    );
                }
            }
        }
        // A batch of one is the single optimization exactly.
        let params = TargetParams::from_hparams(&hparams(Method::Memit, arch, vec![1]));
        let opts = OptimOptions::default();
        let ctl = EditControl::default();
        let one = optimize_batch(&model, &problems[..1], &params, opts, &ctl).unwrap();
        let alone = optimize(&model, &problems[0], &params, opts, &ctl).unwrap();
        assert_eq!(one[0].sites[0].delta, alone.sites[0].delta);
    }
}

#[test]
fn a_batch_of_target_problems_must_share_layer_and_sites() {
    let model = tiny_model(Arch::Llama, 20);
    let r = &requests()[0];
    let a = TargetProblem::residual(&model, r, &fixed_templates(), 1).unwrap();
    let b = TargetProblem::residual(&model, r, &fixed_templates(), 0).unwrap();
    let params = TargetParams::from_hparams(&hparams(Method::Memit, Arch::Llama, vec![1]));
    let e = optimize_batch(
        &model,
        &[a, b],
        &params,
        OptimOptions::default(),
        &EditControl::default(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("share the layer"), "{e}");
}

#[test]
fn every_editor_runs_and_undoes_on_every_architecture() {
    for arch in [Arch::Llama, Arch::Gpt2, Arch::Gptj] {
        for method in Method::ALL {
            let mut model = tiny_model(arch, 21);
            let mut env = env();
            let layers = layers_for(method);
            let mut hp = hparams(method, arch, layers);
            hp.num_steps = 3;
            hp.n_iter = 3;
            hp.nullspace_threshold = 1e9; // P = I: the null-space property has its own test
            let mut editor = new_editor(hp);
            let out = apply(editor.as_mut(), &mut model, &mut env, &requests()[..2])
                .unwrap_or_else(|e| panic!("{method} on {arch:?}: {e}"));
            assert!(
                model.is_edited().unwrap(),
                "{method} on {arch:?} changed the model"
            );
            assert_eq!(
                out.targets.len(),
                if matches!(method, Method::FtL | Method::FtM) {
                    1
                } else {
                    2
                }
            );
            let mut cx = EditContext {
                stats: &mut env.stats,
                targets: None,
                target_group: None,
                ctl: EditControl::default(),
            };
            // Another method's record is refused, naming the editor, and changes nothing.
            let foreign = match out.undo {
                UndoRecord::Weights(_) => UndoRecord::Terms(EditTerms {
                    residuals: vec![],
                    keys: vec![],
                }),
                _ => UndoRecord::Weights(vec![]),
            };
            let err = editor.undo(&mut model, &mut cx, &foreign).unwrap_err();
            assert!(
                err.to_string().contains("does not belong to"),
                "{method}: {err}"
            );
            assert!(model.is_edited().unwrap(), "{method}: a refused undo");
            editor.undo(&mut model, &mut cx, &out.undo).unwrap();
            assert!(
                !model.is_edited().unwrap(),
                "{method} on {arch:?}: undo restores the model"
            );
        }
    }
}

/// Single edits from W0 with and without a shared target cache: the same weights bit for bit,
/// and every method after the first that shares MEMIT's targets finds them in the cache.
#[test]
fn a_shared_target_cache_changes_no_weight() {
    let reqs = requests();
    let mut env = env();
    let methods = [Method::Memit, Method::D4s, Method::AlphaEdit, Method::Rome];
    let mut cache = TargetCache::new();
    let mut model = tiny_model(Arch::Llama, 21);
    let mut plain_model = tiny_model(Arch::Llama, 21);
    for method in methods {
        for r in &reqs[..2] {
            let hp = hparams(method, Arch::Llama, vec![0, 1]);
            let layers = if method == Method::Rome {
                vec![1]
            } else {
                vec![0, 1]
            };
            // AlphaEdit: P = I on the tiny model, whose C lies above the default threshold
            // (an empty null space is refused; the null-space property has its own test).
            let hp = HParams {
                layers,
                nullspace_threshold: 1e9,
                ..hp
            };
            for (m, cached) in [(&mut model, true), (&mut plain_model, false)] {
                m.reset_edits();
                let mut editor = new_editor(hp.clone());
                let mut cx = EditContext {
                    stats: &mut env.stats,
                    targets: cached.then_some(&mut cache),
                    target_group: None,
                    ctl: EditControl::default(),
                };
                editor
                    .apply(m, &mut cx, std::slice::from_ref(r))
                    .unwrap_or_else(|e| panic!("{method}: {e}"));
            }
            for l in [0, 1] {
                assert!(
                    crate::model::same_tensor(
                        model.edit_weight(l).unwrap(),
                        plain_model.edit_weight(l).unwrap()
                    )
                    .unwrap(),
                    "{method}: layer {l} differs with the cache"
                );
            }
        }
    }
    // MEMIT computes both targets; D4S and AlphaEdit reuse them; ROME optimizes its own site.
    assert_eq!((cache.misses(), cache.hits()), (4, 4));
}

/// Every editor on a bf16 and an f16 runtime: its math runs in f32/f64, the installed matrices
/// are in the runtime's dtype, the target gets likelier, and undo gives back the loaded matrices
/// bit for bit.
#[test]
fn every_editor_edits_and_undoes_a_half_precision_model() {
    use crate::model::Precision;
    for precision in [Precision::Bf16, Precision::F16] {
        for method in Method::ALL {
            let mut model = tiny_model(Arch::Llama, 21).to_precision(precision).unwrap();
            let w0 = model.edit_weight(1).unwrap().clone();
            let mut env = env();
            let layers = layers_for(method);
            let mut hp = hparams(method, Arch::Llama, layers);
            hp.nullspace_threshold = 1e9;
            let mut editor = new_editor(hp);
            let out = apply(editor.as_mut(), &mut model, &mut env, &requests()[..2])
                .unwrap_or_else(|e| panic!("{method} in {precision}: {e}"));
            assert_eq!(model.edit_weight(1).unwrap().dtype(), precision.dtype());
            for t in &out.targets {
                assert!(
                    t.prob_final > t.prob_initial,
                    "{method} in {precision}: {} → {}",
                    t.prob_initial,
                    t.prob_final
                );
            }
            assert!(model.is_edited().unwrap(), "{method} in {precision}");
            let mut cx = EditContext {
                stats: &mut env.stats,
                targets: None,
                target_group: None,
                ctl: EditControl::default(),
            };
            editor.undo(&mut model, &mut cx, &out.undo).unwrap();
            assert!(!model.is_edited().unwrap(), "{method} in {precision}");
            assert!(crate::model::same_tensor(model.edit_weight(1).unwrap(), &w0).unwrap());
        }
    }
}

/// Why D4S keeps its sums in f64: over 10,000 edits, sums rounded to f32 after every edit (as an
/// f32 accumulator would be) give an update that is off in the 5th digit, and removing an edit
/// from them (undo) leaves a residue of the same size against sums that never held it; in f64 the
/// residue is ~1e-13.
/// Keys share a large common component, as real MLP keys do, which is what f32 loses first.
mod d4s_editor;
