use super::*;
use crate::model::random::tiny_model;
use crate::model::Arch;

/// Reference: `context + continuation` as one row, summing log-probs position by position.
fn plain_ll(model: &Model, ctx: &[u32], cont: &[u32]) -> f64 {
    let row: Vec<u32> = ctx.iter().chain(cont).copied().collect();
    let logits = model
        .logits(std::slice::from_ref(&row), Logits::All)
        .unwrap()
        .squeeze(0)
        .unwrap();
    let lsm = crate::model::layers::log_softmax_last(&logits)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    (ctx.len()..row.len())
        .map(|p| f64::from(lsm[p - 1][row[p] as usize]))
        .sum()
}

fn groups(model: &Model) -> Vec<Group> {
    let preamble = "Q: What colour is the sky?\nA: Blue.\n\n";
    let mk = |ctx: &str, choices: &[&str]| {
        let choices: Vec<String> = choices.iter().map(|s| s.to_string()).collect();
        group(model, ctx, &choices).unwrap()
    };
    vec![
        mk(
            &format!("{preamble}Q: Is ice cold?\nA:"),
            &["Yes.", "No, it is hot.", "Y"],
        ),
        mk(&format!("{preamble}Q: Do fish swim?\nA:"), &["Yes.", "No"]),
        mk(
            &format!("{preamble}Q: Do fish fly?\nA:"),
            &["Rarely, some glide.", "N"],
        ),
        mk("Question: 2+2?\nAnswer:", &["4", "5", "four"]),
        mk("Pick a letter:", &["A", "B", "C", "D"]),
    ]
}

#[test]
fn batched_and_cached_scores_equal_one_row_at_a_time() {
    let model = tiny_model(Arch::Llama, 3);
    let gs = groups(&model);
    for opts in [
        EngineOptions::default(),
        EngineOptions {
            min_shared: 8,
            ..Default::default()
        },
        EngineOptions {
            token_budget: 40,
            max_rows: 3,
            min_shared: 4,
        },
    ] {
        let got = loglikelihoods(&model, &gs, &opts, None).unwrap();
        for (g, lls) in gs.iter().zip(&got) {
            for (cont, &ll) in g.conts.iter().zip(lls) {
                let want = plain_ll(&model, &g.ctx, cont);
                assert!((ll - want).abs() < 1e-4, "{opts:?}: {ll} vs {want}");
            }
        }
    }
}

#[test]
fn shared_prefixes_form_one_cluster_and_singletons_none() {
    let model = tiny_model(Arch::Llama, 3);
    let gs = groups(&model);
    let ctxs = fit_to_window(&model, &gs).unwrap();
    let cl = clusters(&ctxs, 8);
    assert_eq!(cl.len(), 2);
    let with_prefix = cl.iter().find(|c| c.prefix_len > 0).unwrap();
    let mut m = with_prefix.members.clone();
    m.sort();
    assert_eq!(m, vec![0, 1, 2]);
    // "…\n\nQ: " is shared by the three; byte-level tokens, so the prefix length is in bytes.
    let shared = "Q: What colour is the sky?\nA: Blue.\n\nQ: ".len();
    assert!(
        with_prefix.prefix_len >= shared,
        "{}",
        with_prefix.prefix_len
    );
    assert_eq!(
        cl.iter().find(|c| c.prefix_len == 0).unwrap().members.len(),
        2
    );
}

#[test]
fn encode_pair_moves_trailing_space_to_the_continuation() {
    assert_eq!(
        split_trailing_space("Answer: ", "B"),
        ("Answer:", " B".to_string())
    );
    assert_eq!(
        split_trailing_space("Answer:\n ", " B"),
        ("Answer:", "\n  B".to_string())
    );
    assert_eq!(
        split_trailing_space("Answer:", " B"),
        ("Answer:", " B".to_string())
    );
    let model = tiny_model(Arch::Llama, 1);
    // Byte-level tokenizer: the continuation is exactly the moved space plus "B".
    let (ctx, cont) = encode_pair(&model, "Answer: ", "B").unwrap();
    assert_eq!(ctx, model.encode("Answer:").unwrap());
    assert_eq!(cont, model.encode(" B").unwrap());
    let (ctx2, cont2) = encode_pair(&model, "Answer:", " B").unwrap();
    assert_eq!((ctx, cont), (ctx2, cont2));
}

#[test]
fn too_long_contexts_are_cut_from_the_left() {
    let model = tiny_model(Arch::Llama, 2);
    let window = model.config.max_positions;
    let long = "x".repeat(window + 20) + " Answer:";
    let g = group(&model, &long, &["yes".to_string(), "no".to_string()]).unwrap();
    let lls = loglikelihoods(
        &model,
        std::slice::from_ref(&g),
        &EngineOptions::default(),
        None,
    )
    .unwrap();
    let keep = window - 4;
    let want = plain_ll(&model, &g.ctx[g.ctx.len() - keep..], &g.conts[0]);
    assert!((lls[0][0] - want).abs() < 1e-4);
}

#[test]
fn similar_lengths_bound_padding() {
    assert_eq!(similar_lengths(&[1, 2, 3, 4]), vec![0..4]);
    let lens = [2, 2, 3, 3, 10, 11, 12, 30, 31, 60];
    let runs = similar_lengths(&lens);
    assert_eq!(runs.iter().map(|r| r.len()).sum::<usize>(), lens.len());
    for r in &runs {
        let real: usize = lens[r.clone()].iter().sum();
        assert!(padding_ok(r.len() * lens[r.end - 1], real), "{r:?}");
    }
    assert!(runs.len() > 1);
    assert!(similar_lengths(&[]).is_empty());
}

#[test]
fn cancel_stops_scoring() {
    let model = tiny_model(Arch::Llama, 3);
    let stop = std::sync::atomic::AtomicBool::new(true);
    let err = loglikelihoods(
        &model,
        &groups(&model),
        &EngineOptions::default(),
        Some(&stop),
    );
    assert!(matches!(err, Err(Error::Cancelled)));
}

#[test]
fn acc_and_acc_norm_differ_by_character_length() {
    // Choice 1 has the higher total ll, choice 0 the higher ll per character.
    let lls = [-6.0, -5.0, -20.0];
    let lens = [12, 4, 10];
    assert_eq!(acc(&lls, 1), 1.0);
    assert_eq!(acc_norm(&lls, &lens, 1), 0.0);
    assert_eq!(acc_norm(&lls, &lens, 0), 1.0);
    // Ties go to the first choice, like np.argmax.
    assert_eq!(acc(&[-1.0, -1.0], 0), 1.0);
}

#[test]
fn true_mass_is_the_normalized_probability_of_true_answers() {
    let lls = [(0.5f64).ln(), (0.25f64).ln(), (0.25f64).ln()];
    assert!((true_mass(&lls, &[true, false, false]) - 0.5).abs() < 1e-12);
    assert!((true_mass(&lls, &[false, true, true]) - 0.5).abs() < 1e-12);
    // Scale-free: very negative log-likelihoods do not underflow to 0/0.
    let low = [-2000.0, -2000.0 + (3.0f64).ln()];
    assert!((true_mass(&low, &[false, true]) - 0.75).abs() < 1e-12);
}
