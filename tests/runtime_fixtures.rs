//! The runtime against reference outputs of PyTorch/transformers (`../shared/fixtures`).

mod common;

use candle_core::{IndexOp, Tensor};
use d4s::model::generate::GenerateOptions;
use d4s::model::{Forward, Input, Logits, Model, Site};
use serde_json::Value;

fn read_json(path: &std::path::Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn summary(t: &Tensor) -> (Vec<f64>, f64, f64, f64) {
    let v: Vec<f64> = t
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .map(|&x| x as f64)
        .collect();
    let l2 = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    let l1 = v.iter().map(|x| x.abs()).sum::<f64>();
    let sum = v.iter().sum::<f64>();
    (v[..8].to_vec(), l1, l2, sum)
}

fn check_summary(what: &str, t: &Tensor, r: &Value, rel_tol: f64) {
    let (first8, l1, l2, _) = summary(t);
    let rl2 = r["l2"].as_f64().unwrap();
    let rl1 = r["l1"].as_f64().unwrap();
    assert!(
        (l2 - rl2).abs() <= rel_tol * rl2.max(1e-6),
        "{what}: L2 {l2} vs reference {rl2}"
    );
    assert!(
        (l1 - rl1).abs() <= rel_tol * rl1.max(1e-6) * 2.0,
        "{what}: L1 {l1} vs reference {rl1}"
    );
    let r8: Vec<f64> = r["first8"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    let scale = r8.iter().fold(0f64, |m, x| m.max(x.abs())).max(1e-3);
    for (a, b) in first8.iter().zip(&r8) {
        assert!(
            (a - b).abs() <= 10.0 * rel_tol * scale,
            "{what}: first values {first8:?} vs {r8:?}"
        );
    }
}

/// Runs one row, capturing every block output and key at the last position.
fn run_with_captures(model: &Model, ids: &[u32]) -> d4s::model::ForwardOut {
    let n = model.n_layers();
    let mut captures = Vec::new();
    for l in 0..n {
        captures.push((l, Site::BlockOut));
        captures.push((l, Site::Key));
    }
    model
        .forward(
            Input::Tokens(&[ids.to_vec()]),
            &Forward {
                captures,
                logits: Logits::All,
                ..Default::default()
            },
        )
        .unwrap()
}

fn tiny(name: &str) {
    let Some(model) = common::load_dir(&format!("fixtures/{name}")) else {
        return;
    };
    let reference = read_json(&common::shared(&format!("fixtures/{name}/reference.json")).unwrap());
    let ids: Vec<u32> = reference["input_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect();
    let out = run_with_captures(&model, &ids);
    let logits = out
        .logits()
        .unwrap()
        .i(0)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    let ref_logits = reference["logits"].as_array().unwrap();
    assert_eq!(logits.len(), ref_logits.len());
    for (p, (row, rrow)) in logits.iter().zip(ref_logits).enumerate() {
        let rrow: Vec<f32> = rrow
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        let max_err = row
            .iter()
            .zip(&rrow)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(
            max_err < 1e-3,
            "{name} position {p}: max |Δlogit| = {max_err}"
        );
        let top = |v: &[f32]| {
            let mut idx: Vec<usize> = (0..v.len()).collect();
            idx.sort_by(|&a, &b| v[b].total_cmp(&v[a]));
            idx.truncate(10);
            idx
        };
        assert_eq!(top(row), top(&rrow), "{name} position {p}: top-10 ids");
    }
    let hs = reference["hidden_states_last_pos"].as_array().unwrap();
    let last = ids.len() - 1;
    let emb = model.embed_tokens(std::slice::from_ref(&ids)).unwrap();
    check_summary(
        &format!("{name} embeddings"),
        &emb.i((0, last)).unwrap(),
        &hs[0],
        1e-3,
    );
    let n = model.n_layers();
    for l in 0..n - 1 {
        let h = out
            .capture(l, Site::BlockOut)
            .unwrap()
            .i((0, last))
            .unwrap();
        check_summary(&format!("{name} block {l}"), &h, &hs[l + 1], 1e-3);
    }
    let h = out.capture(n - 1, Site::BlockOut).unwrap();
    let normed = model.final_norm(h).unwrap().i((0, last)).unwrap();
    check_summary(&format!("{name} final norm"), &normed, &hs[n], 1e-3);
}

#[test]
fn tiny_gpt2_matches_transformers() {
    tiny("tiny-gpt2");
}

#[test]
fn tiny_gptj_matches_transformers() {
    tiny("tiny-gptj");
}

#[test]
fn tiny_llama_matches_transformers() {
    tiny("tiny-llama");
}

#[test]
fn default_model_matches_transformers() {
    let Some(path) = common::shared("fixtures/smollm2/reference.json") else {
        return;
    };
    let reference = read_json(&path);
    let model = common::default_model();
    assert_eq!(
        model.info.sha256,
        reference["gguf_sha256"].as_str().unwrap()
    );
    for rec in reference["records"].as_array().unwrap() {
        let prompt = rec["prompt"].as_str().unwrap();
        let want: Vec<u32> = rec["input_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect();
        let ids = model.encode(prompt).unwrap();
        assert_eq!(ids, want, "token ids of {prompt:?}");

        let out = run_with_captures(model, &ids);
        let last = ids.len() - 1;
        let logits = out
            .logits()
            .unwrap()
            .i((0, last))
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let top_ids: Vec<u32> = rec["last_logits_top10"]["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect();
        let top_vals: Vec<f32> = rec["last_logits_top10"]["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        let mut idx: Vec<usize> = (0..logits.len()).collect();
        idx.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
        let ours: Vec<u32> = idx[..10].iter().map(|&i| i as u32).collect();
        assert_eq!(ours, top_ids, "top-10 of {prompt:?}");
        for (&id, &v) in top_ids.iter().zip(&top_vals) {
            let err = (logits[id as usize] - v).abs();
            assert!(
                err < 2e-2,
                "{prompt:?}: logit of {id}: {} vs {v}",
                logits[id as usize]
            );
        }
        let hs = rec["hidden_states_last_pos"].as_array().unwrap();
        let n = model.n_layers();
        for l in 0..n - 1 {
            let h = out
                .capture(l, Site::BlockOut)
                .unwrap()
                .i((0, last))
                .unwrap();
            check_summary(&format!("{prompt:?} block {l}"), &h, &hs[l + 1], 1e-3);
        }
        let greedy: Vec<u32> = rec["greedy8_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect();
        // The reference generator recorded the keys with a hook that was still attached during
        // greedy generation, so what it kept is the key of the *last decoding step*: the position
        // of the second-to-last generated token in prompt + continuation (checked by hand: no
        // other position matches, this one matches in every layer). We compare there.
        let mut seq = ids.clone();
        seq.extend_from_slice(&greedy);
        let key_pos = ids.len() + greedy.len() - 2;
        let keys_out = run_with_captures(model, &seq);
        let keys = rec["down_proj_input_last_pos"].as_array().unwrap();
        for (l, reference) in keys.iter().enumerate().take(n) {
            let k = keys_out
                .capture(l, Site::Key)
                .unwrap()
                .i((0, key_pos))
                .unwrap();
            check_summary(&format!("{prompt:?} key {l}"), &k, reference, 1e-3);
        }
        let opts = GenerateOptions {
            max_tokens: 8,
            ..Default::default()
        };
        let gen = model
            .generate_batch_with(std::slice::from_ref(&ids), &opts, |_, _| true)
            .unwrap();
        assert_eq!(gen[0], greedy, "greedy continuation of {prompt:?}");
        assert_eq!(
            model.decode(&gen[0]).unwrap(),
            rec["greedy8_text"].as_str().unwrap()
        );
    }
}
