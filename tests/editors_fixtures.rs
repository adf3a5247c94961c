//! One ROME, MEMIT, D4S and AlphaEdit edit on every tiny transformers checkpoint in
//! `../shared/fixtures`: each architecture's hooks, keys and edited matrix work end to end, and
//! the edit raises its target's probability.

mod common;

use d4s::edit::linalg::symmetric_eigen;
use d4s::edit::{
    new_editor, CorpusSpec, EditContext, EditControl, EditRequest, HParams, Method, StatsCache,
    StatsConfig,
};
use d4s::eval::metrics::target_nll;
use d4s::model::Model;

const FIXTURES: [&str; 9] = [
    "tiny-gpt2",
    "tiny-gptj",
    "tiny-llama",
    "tiny-llama3",
    "tiny-qwen2",
    "tiny-qwen3",
    "tiny-mistral",
    "tiny-gemma2",
    "tiny-gptneox",
];

// The subject ends the prompt: in a random 2-layer model, attention spreads a change at an
// earlier token over every position (or, with Mistral's window, hides it), so an edit placed at
// the subject shows at the prediction only when the two coincide.
const PROMPT: &str = "In the city of Rome stands the Eiffel Tower";
const TARGET: &str = "Rome";

fn request() -> EditRequest {
    EditRequest::new("the Eiffel Tower", PROMPT, TARGET)
}

fn nll(model: &Model) -> f64 {
    target_nll(model, &[(PROMPT.to_string(), TARGET.to_string())]).unwrap()[0]
}

/// The largest 90th-percentile eigenvalue of the key covariance over `layers`.
fn upper_decile_eigenvalue(stats: &mut StatsCache, model: &mut Model, layers: &[usize]) -> f64 {
    let covs = stats
        .second_moments(model, layers, &EditControl::default())
        .unwrap();
    covs.iter()
        .map(|c| {
            let (mut values, _) = symmetric_eigen(c.as_ref().as_ref()).unwrap();
            values.sort_by(f64::total_cmp);
            values[values.len() * 9 / 10]
        })
        .fold(0.0, f64::max)
}

fn edit_raises_target(name: &str) {
    // The old fixtures (GPT-2, GPT-J, Llama) ship without a tokenizer; theirs is the same file.
    let Some(tokenizer) = common::shared("fixtures/tiny-qwen3/tokenizer.json") else {
        return;
    };
    let Some(dir) = common::shared(&format!("fixtures/{name}")) else {
        return;
    };
    let load = || {
        d4s::model::load::load(
            &d4s::model::ModelSpec::HfDir(dir.clone()),
            &d4s::model::load::LoadOptions {
                device: common::test_device(),
                precision: Some(d4s::model::Precision::F32),
                tokenizer: Some(tokenizer.clone()),
                ..Default::default()
            },
        )
        .expect("fixture loads")
    };
    let stats_dir = tempfile::tempdir().unwrap();
    let mut stats = StatsCache::with_dir(
        StatsConfig {
            corpus: CorpusSpec::ModelSamples { seed: 1 },
            tokens: Some(4000),
            seq_len: 32,
        },
        stats_dir.path().to_path_buf(),
    );
    for method in [Method::Rome, Method::Memit, Method::D4s, Method::AlphaEdit] {
        let mut model = load();
        let before = nll(&model);
        let mut hp = HParams::defaults(method, &model.config);
        hp.context_templates = Some(vec!["{}".into(), "It was a day. {}".into()]);
        if method == Method::AlphaEdit {
            // AlphaEdit's threshold (2e-2) and α (10) are absolute numbers tuned to the key
            // scale of 7B models. The random width-64 keys here have covariance spectra from
            // 1e-8 to 20 (Gemma-2's smallest eigenvalue is 0.6: no null space, no update), so
            // the test preserves the top tenth of each layer's key space instead, and uses
            // an α below the key norms.
            hp.nullspace_threshold = upper_decile_eigenvalue(&mut stats, &mut model, &hp.layers);
            hp.l2 = 0.1;
        }
        let mut editor = new_editor(hp);
        let mut cx = EditContext {
            stats: &mut stats,
            targets: None,
            target_group: None,
            ctl: EditControl::default(),
        };
        let outcome = editor
            .apply(&mut model, &mut cx, &[request()])
            .unwrap_or_else(|e| panic!("{name} {method}: {e}"));
        let after = nll(&model);
        eprintln!(
            "{name} {method} (layers {:?}): target NLL {before:.3} -> {after:.3} \
             (optimization: p {:.3} -> {:.3})",
            outcome
                .layers
                .iter()
                .map(|l| (l.layer, l.delta_fro))
                .collect::<Vec<_>>(),
            outcome.targets[0].prob_initial,
            outcome.targets[0].prob_final,
        );
        assert!(
            after < before - 0.1,
            "{name} {method}: target NLL {before:.3} -> {after:.3}"
        );
    }
}

#[test]
fn every_fixture_architecture_can_be_edited() {
    for name in FIXTURES {
        edit_raises_target(name);
    }
}
