//! D4S on tiny random models: the batch equivalence, the constant state, exact undo, f64 sums,
//! and the kept factorization against the fresh solve.

use super::*;

#[test]
fn d4s_sequential_equals_memit_batch_on_one_layer() {
    let reqs = requests();
    let mut env = env();
    let mut seq_model = tiny_model(Arch::Llama, 12);
    let mut d4s = d4s::D4s::new(hparams(Method::D4s, Arch::Llama, vec![1]));
    for r in &reqs {
        apply(&mut d4s, &mut seq_model, &mut env, std::slice::from_ref(r)).unwrap();
    }
    let mut batch_model = tiny_model(Arch::Llama, 12);
    let mut memit = memit::Memit::new(hparams(Method::Memit, Arch::Llama, vec![1]));
    apply(&mut memit, &mut batch_model, &mut env, &reqs).unwrap();
    let w0 = batch_model.original_edit_weight(1).unwrap().clone();
    let d_seq = (seq_model.edit_weight(1).unwrap() - &w0).unwrap();
    let d_batch = (batch_model.edit_weight(1).unwrap() - &w0).unwrap();
    let rel = rel_diff(&d_seq, &d_batch);
    assert!(
        rel < 1e-4,
        "D4S after {} edits vs MEMIT batch: relative difference {rel}",
        reqs.len()
    );
    assert_eq!(d4s.n_edits(), reqs.len());
}

#[test]
fn d4s_state_does_not_grow_with_edits() {
    let mut model = tiny_model(Arch::Gpt2, 13);
    let mut env = env();
    let mut d4s = d4s::D4s::new(hparams(Method::D4s, Arch::Gpt2, vec![0, 1]));
    let synthetic = |i: usize| EditTerms {
        residuals: vec![(0..2)
            .map(|j| {
                (0..64)
                    .map(|x| ((x * 7 + i + j) % 11) as f64 * 1e-3)
                    .collect()
            })
            .collect()],
        keys: vec![(0..2)
            .map(|j| {
                (0..256)
                    .map(|x| ((x * 3 + i * 5 + j) % 13) as f64 * 1e-2)
                    .collect()
            })
            .collect()],
    };
    let mut cx = EditContext {
        stats: &mut env.stats,
        targets: None,
        target_group: None,
        ctl: EditControl::default(),
    };
    let ten: Vec<EditTerms> = (0..10).map(synthetic).collect();
    d4s.restore_history(&mut model, &mut cx, &ten).unwrap();
    let after_10 = d4s.state_bytes();
    let more: Vec<EditTerms> = (10..1000).map(synthetic).collect();
    d4s.restore_history(&mut model, &mut cx, &more).unwrap();
    assert_eq!(d4s.n_edits(), 1000);
    assert_eq!(d4s.state_bytes(), after_10);
    // Per layer: S and A, and the kept factor L and update Δ (`d4s_solve = update`).
    assert_eq!(after_10, 8 * 2 * 2 * (64 * 256 + 256 * 256));
}

#[test]
fn d4s_undo_removes_any_edit_exactly() {
    let reqs = requests();
    let mut env = env();
    // One layer: the result equals a fresh run without the removed edit.
    let mut model = tiny_model(Arch::Llama, 14);
    let mut d4s = d4s::D4s::new(hparams(Method::D4s, Arch::Llama, vec![1]));
    let mut records = Vec::new();
    for r in &reqs {
        records.push(
            apply(&mut d4s, &mut model, &mut env, std::slice::from_ref(r))
                .unwrap()
                .undo,
        );
    }
    let mut cx = EditContext {
        stats: &mut env.stats,
        targets: None,
        target_group: None,
        ctl: EditControl::default(),
    };
    d4s.undo(&mut model, &mut cx, &records[1]).unwrap();
    let mut fresh = tiny_model(Arch::Llama, 14);
    let mut d4s_fresh = d4s::D4s::new(hparams(Method::D4s, Arch::Llama, vec![1]));
    for (i, r) in reqs.iter().enumerate() {
        if i != 1 {
            apply(
                &mut d4s_fresh,
                &mut fresh,
                &mut env,
                std::slice::from_ref(r),
            )
            .unwrap();
        }
    }
    let rel = rel_diff(model.edit_weight(1).unwrap(), fresh.edit_weight(1).unwrap());
    assert!(rel < 1e-4, "undo vs fresh run: {rel}");
    // Undoing everything gives back W0.
    let mut cx = EditContext {
        stats: &mut env.stats,
        targets: None,
        target_group: None,
        ctl: EditControl::default(),
    };
    for (i, rec) in records.iter().enumerate() {
        if i != 1 {
            d4s.undo(&mut model, &mut cx, rec).unwrap();
        }
    }
    let w0 = model.original_edit_weight(1).unwrap();
    assert!(rel_diff(model.edit_weight(1).unwrap(), w0) < 1e-6);
    assert_eq!(d4s.n_edits(), 0);

    // Several layers: undo equals the sums rebuilt from the remaining records.
    let mut model = tiny_model(Arch::Gptj, 15);
    let mut d4s = d4s::D4s::new(hparams(Method::D4s, Arch::Gptj, vec![0, 1]));
    let mut terms = Vec::new();
    for r in &reqs[..3] {
        match apply(&mut d4s, &mut model, &mut env, std::slice::from_ref(r))
            .unwrap()
            .undo
        {
            UndoRecord::Terms(t) => terms.push(t),
            _ => unreachable!(),
        }
    }
    let mut cx = EditContext {
        stats: &mut env.stats,
        targets: None,
        target_group: None,
        ctl: EditControl::default(),
    };
    d4s.undo(&mut model, &mut cx, &UndoRecord::Terms(terms[0].clone()))
        .unwrap();
    let mut rebuilt_model = tiny_model(Arch::Gptj, 15);
    let mut rebuilt = d4s::D4s::new(hparams(Method::D4s, Arch::Gptj, vec![0, 1]));
    rebuilt
        .restore_history(&mut rebuilt_model, &mut cx, &terms[1..])
        .unwrap();
    for l in [0, 1] {
        let rel = rel_diff(
            model.edit_weight(l).unwrap(),
            rebuilt_model.edit_weight(l).unwrap(),
        );
        assert!(rel < 1e-6, "layer {l}: {rel}");
    }
}

#[test]
fn d4s_sums_in_f32_lose_digits_that_f64_keeps() {
    use rand::{Rng, SeedableRng};
    let (d, f, n) = (16, 48, 10_000);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    let common: Vec<f64> = (0..f).map(|_| rng.random_range(-2.0..2.0)).collect();
    let mut s64 = Mat::<f64>::zeros(d, f);
    let mut a64 = Mat::<f64>::zeros(f, f);
    let mut s32 = vec![0f32; d * f];
    let mut a32 = vec![0f32; f * f];
    // The same history without its first edit, summed from scratch.
    let mut s_never = Mat::<f64>::zeros(d, f);
    let mut a_never = Mat::<f64>::zeros(f, f);
    let mut first = None;
    for e in 0..n {
        let k: Vec<f64> = common
            .iter()
            .map(|c| c + rng.random_range(-1.0..1.0))
            .collect();
        let r: Vec<f64> = (0..d).map(|_| rng.random_range(-0.1..0.1)).collect();
        linalg::add_outer(&mut s64, 1.0, &r, &k);
        linalg::add_outer(&mut a64, 1.0, &k, &k);
        add_outer_f32(&mut s32, 1.0, &r, &k);
        add_outer_f32(&mut a32, 1.0, &k, &k);
        if e == 0 {
            first = Some((r, k));
        } else {
            linalg::add_outer(&mut s_never, 1.0, &r, &k);
            linalg::add_outer(&mut a_never, 1.0, &k, &k);
        }
    }
    let c = Mat::<f64>::from_fn(f, f, |i, j| if i == j { 1.0 } else { 0.0 });
    let lambda = 1e3;
    let solve =
        |s: &Mat<f64>, a: &Mat<f64>| d4s::d4s_delta(s, a, &c, lambda, 1.0, &|_| {}).unwrap();
    let widen = |v: &[f32], rows: usize, cols: usize| {
        Mat::<f64>::from_fn(rows, cols, |i, j| v[i * cols + j] as f64)
    };
    let exact = solve(&s64, &a64);
    let from_f32 = solve(&widen(&s32, d, f), &widen(&a32, f, f));
    let rel = |x: &Mat<f64>, y: &Mat<f64>| (x - y).norm_l2() / y.norm_l2();
    let f32_error = rel(&from_f32, &exact);

    // Undo the first edit from both, and compare with sums that never held it.
    let (r, k) = first.unwrap();
    let mut s64_undone = s64.clone();
    let mut a64_undone = a64.clone();
    linalg::add_outer(&mut s64_undone, -1.0, &r, &k);
    linalg::add_outer(&mut a64_undone, -1.0, &k, &k);
    add_outer_f32(&mut s32, -1.0, &r, &k);
    add_outer_f32(&mut a32, -1.0, &k, &k);
    let without = solve(&s_never, &a_never);
    let undo64 = rel(&solve(&s64_undone, &a64_undone), &without);
    let undo32 = rel(&solve(&widen(&s32, d, f), &widen(&a32, f, f)), &without);
    eprintln!(
        "{n} edits: update error f32 sums {f32_error:.2e}; undo residue f64 {undo64:.2e}, f32 {undo32:.2e}"
    );
    assert!(undo64 < 1e-11, "{undo64}");
    assert!(
        f32_error > 1e-6,
        "f32 sums were expected to lose digits: {f32_error}"
    );
    assert!(undo32 > 1e3 * undo64.max(1e-16), "{undo32} vs {undo64}");
}

/// `a += scale · x yᵀ` on a row-major f32 matrix, rounding after every add.
fn add_outer_f32(a: &mut [f32], scale: f64, x: &[f64], y: &[f64]) {
    let cols = y.len();
    for (i, &xi) in x.iter().enumerate() {
        for (j, &yj) in y.iter().enumerate() {
            a[i * cols + j] += (scale * xi * yj) as f32;
        }
    }
}

/// Applies `reqs` one by one with a D4S editor of this solve; undoes edit `undo` if given.
fn d4s_run(
    solve: super::hparams::D4sSolve,
    env: &mut Env,
    reqs: &[EditRequest],
    undo: Option<usize>,
) -> (crate::model::Model, d4s::D4s) {
    let mut model = tiny_model(Arch::Llama, 14);
    let mut hp = hparams(Method::D4s, Arch::Llama, vec![0, 1]);
    hp.d4s_solve = solve;
    let mut d4s = d4s::D4s::new(hp);
    let mut records = Vec::new();
    for r in reqs {
        let out = apply(&mut d4s, &mut model, env, std::slice::from_ref(r)).unwrap();
        records.push(out.undo);
    }
    if let Some(i) = undo {
        let mut cx = EditContext {
            stats: &mut env.stats,
            targets: None,
            target_group: None,
            ctl: EditControl::default(),
        };
        d4s.undo(&mut model, &mut cx, &records[i]).unwrap();
    }
    (model, d4s)
}

#[test]
fn the_kept_factorization_edits_and_undoes_as_the_fresh_solve() {
    use super::hparams::D4sSolve;
    let reqs = requests();
    let mut env = env();
    for undo in [None, Some(1)] {
        let (fresh, _) = d4s_run(D4sSolve::Fresh, &mut env, &reqs, undo);
        let (kept, editor) = d4s_run(D4sSolve::Update, &mut env, &reqs, undo);
        for layer in [0, 1] {
            let (f, k) = (
                fresh.edit_weight(layer).unwrap(),
                kept.edit_weight(layer).unwrap(),
            );
            let moved = rel_diff(f, fresh.original_edit_weight(layer).unwrap());
            let rel = rel_diff(k, f);
            assert!(moved > 1e-3, "the edits moved layer {layer}: {moved}");
            assert!(rel < 1e-6, "undo {undo:?}, layer {layer}: {rel}");
        }
        assert_eq!(editor.n_edits(), reqs.len() - undo.map_or(0, |_| 1));
    }
}

#[test]
fn a_restored_snapshot_continues_with_the_same_bits() {
    let reqs = requests();
    let mut env = env();
    let (mut model, mut d4s) =
        d4s_run(super::hparams::D4sSolve::Update, &mut env, &reqs[..2], None);
    let snap = d4s.snapshot().unwrap();
    let mut resumed_model = tiny_model(Arch::Llama, 14);
    let mut resumed = d4s::D4s::new(d4s.hparams().clone());
    let mut cx = EditContext {
        stats: &mut env.stats,
        targets: None,
        target_group: None,
        ctl: EditControl::default(),
    };
    resumed.restore(&mut resumed_model, &mut cx, &snap).unwrap();
    for r in &reqs[2..] {
        let a = apply(&mut d4s, &mut model, &mut env, std::slice::from_ref(r)).unwrap();
        let b = apply(
            &mut resumed,
            &mut resumed_model,
            &mut env,
            std::slice::from_ref(r),
        )
        .unwrap();
        assert_eq!(a.weights_sha256, b.weights_sha256);
    }
}
