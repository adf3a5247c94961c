use super::*;
use crate::model::random::tiny_model;
use crate::model::Arch;

fn trace(arch: Arch, opts: TraceOptions) -> CausalTrace {
    let model = tiny_model(arch, 7);
    causal_trace(
        &model,
        "Paris",
        "So Paris is in",
        None,
        opts,
        &mut |_, _| {},
    )
    .unwrap()
}

fn small() -> TraceOptions {
    TraceOptions {
        samples: 3,
        noise: 3.0,
        window: 2,
        seed: 5,
    }
}

#[test]
fn subject_tokens_are_found_by_their_bytes() {
    let t = trace(Arch::Llama, small());
    // The byte tokenizer makes one token per byte; the subject is the five bytes of "Paris",
    // not the space before it.
    assert_eq!(t.tokens.concat(), "So Paris is in");
    assert_eq!(t.tokens[t.subject_tokens.clone()].concat(), "Paris");
}

#[test]
fn restoring_the_last_hidden_state_recovers_the_clean_answer() {
    for arch in [Arch::Llama, Arch::Gemma2, Arch::GptNeox, Arch::Gpt2] {
        let t = trace(arch, small());
        let last_layer = t.n_layers() - 1;
        let last = t.tokens.len() - 1;
        let hidden = t.site(Restored::HiddenState).unwrap();
        // The final hidden state at the last token is all the LM head reads.
        let p = hidden.probability[last][last_layer];
        assert!(
            (p - t.p_clean).abs() < 1e-5 * t.p_clean.max(1e-3),
            "{arch:?}: restored {p} vs clean {}",
            t.p_clean
        );
        // ...and at any other token it changes nothing.
        for i in 0..last {
            let ie = t
                .indirect_effect(Restored::HiddenState, i, last_layer)
                .unwrap();
            assert!(ie.abs() < 1e-6, "{arch:?}: token {i} has effect {ie}");
        }
        assert_ne!(
            t.p_clean, t.p_corrupted,
            "{arch:?}: the noise changed nothing"
        );
    }
}

#[test]
fn tokens_before_the_subject_have_no_effect() {
    let t = trace(Arch::Qwen3, small());
    assert!(t.subject_tokens.start > 0);
    for s in &t.sites {
        for i in 0..t.subject_tokens.start {
            assert!(s.probability[i].iter().all(|&p| p == t.p_corrupted));
        }
    }
}

#[test]
fn a_hidden_state_restoration_matches_splicing_the_clean_state_in_by_hand() {
    let model = tiny_model(Arch::Llama, 7);
    let opts = small();
    let t = causal_trace(
        &model,
        "Paris",
        "So Paris is in",
        None,
        opts,
        &mut |_, _| {},
    )
    .unwrap();
    let ids = model.encode("So Paris is in").unwrap();
    let s = ids.len();
    let (layer, token) = (0, t.subject_last());
    let with_block_out = |input: Input| {
        model
            .forward(
                input,
                &Forward {
                    end_layer: Some(layer + 1),
                    captures: vec![(layer, Site::BlockOut)],
                    ..Default::default()
                },
            )
            .unwrap()
            .capture(layer, Site::BlockOut)
            .unwrap()
            .clone()
    };
    let clean = with_block_out(Input::Tokens(std::slice::from_ref(&ids)));
    let noisy =
        corrupted_embeddings(&model, &ids, t.subject_tokens.clone(), t.sigma, &opts).unwrap();
    let corrupted = with_block_out(Input::Hidden {
        hidden: noisy,
        lens: vec![s; opts.samples],
    });
    let mut total = 0.0;
    for sample in 0..opts.samples {
        let mut rows: Vec<Tensor> = vec![];
        for i in 0..s {
            let src = if i == token {
                clean.i((0, i))
            } else {
                corrupted.i((sample, i))
            };
            rows.push(src.unwrap());
        }
        let h = Tensor::stack(&rows, 0).unwrap().unsqueeze(0).unwrap();
        total += answer_probability(&model, &h, layer + 1, t.answer_id).unwrap()[0];
    }
    let by_hand = total / opts.samples as f64;
    let traced = t.site(Restored::HiddenState).unwrap().probability[token][layer];
    assert!(
        (by_hand - traced).abs() < 1e-5,
        "by hand {by_hand} vs trace {traced}"
    );
}

#[test]
fn the_same_seed_gives_the_same_trace_and_another_seed_another() {
    let a = trace(Arch::Llama, small());
    let b = trace(Arch::Llama, small());
    assert_eq!(a.p_corrupted, b.p_corrupted);
    assert_eq!(a.sites[1].probability, b.sites[1].probability);
    let c = trace(Arch::Llama, TraceOptions { seed: 6, ..small() });
    assert_ne!(a.p_corrupted, c.p_corrupted);
}

#[test]
fn bad_requests_are_refused_with_a_reason() {
    let model = tiny_model(Arch::Llama, 7);
    let run = |subject: &str, prompt: &str, opts: TraceOptions| {
        causal_trace(&model, subject, prompt, None, opts, &mut |_, _| {})
            .unwrap_err()
            .to_string()
    };
    assert!(run("Rome", "So Paris is in", small()).contains("does not contain the subject"));
    assert!(run(" ", "So Paris is in", small()).contains("subject is empty"));
    let zero = TraceOptions {
        samples: 0,
        ..small()
    };
    assert!(run("Paris", "So Paris is in", zero).contains("--samples"));
    let nan = TraceOptions {
        noise: f64::NAN,
        ..small()
    };
    assert!(run("Paris", "So Paris is in", nan).contains("--noise"));
}

#[test]
fn a_trace_writes_json_csv_and_a_heatmap() {
    let t = trace(Arch::Llama, small());
    let dir = tempfile::tempdir().unwrap();
    let files = t.write(dir.path()).unwrap();
    let names: Vec<String> = files
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(names.contains(&"trace.json".to_string()));
    assert!(names.contains(&"trace.svg".to_string()));
    let csv = std::fs::read_to_string(dir.path().join("trace.csv")).unwrap();
    // header + 3 sites × tokens × layers
    assert_eq!(csv.lines().count(), 1 + 3 * t.tokens.len() * t.n_layers());
    let back: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("trace.json")).unwrap()).unwrap();
    assert_eq!(back["answer_id"], t.answer_id);
    let svg = std::fs::read_to_string(dir.path().join("trace.svg")).unwrap();
    assert!(svg.contains("Restoring the MLP output (2 layers)"));
}
