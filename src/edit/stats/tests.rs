use super::*;
use crate::model::config::Arch;
use crate::model::random::tiny_model;

/// A two-paragraph text corpus in `dir` and statistics over `tokens` of it.
fn text_corpus(dir: &Path, tokens: usize) -> (PathBuf, StatsConfig) {
    let corpus = dir.join("c.txt");
    std::fs::write(&corpus, "Some text here.\n\nAnd another paragraph of text.").unwrap();
    let config = StatsConfig {
        corpus: CorpusSpec::Path {
            path: corpus.clone(),
            field: None,
        },
        tokens: Some(tokens),
        seq_len: 64,
    };
    (corpus, config)
}

#[test]
fn second_moment_is_mean_outer_product_and_cached() {
    let dir = tempfile::tempdir().unwrap();
    let (corpus, config) = text_corpus(dir.path(), 1000);
    let mut model = tiny_model(Arch::Llama, 1);
    let mut cache = StatsCache::with_dir(config.clone(), dir.path().join("stats"));
    let c = cache
        .second_moments(&mut model, &[1], &EditControl::default())
        .unwrap();
    // By hand: keys at every token of both documents.
    let docs = read_documents(&corpus, None).unwrap();
    let d = model.config.d_ff;
    let mut want = vec![0f64; d * d];
    let mut n = 0;
    for doc in docs {
        let ids = model.encode(&doc).unwrap();
        let out = model
            .forward(
                Input::Tokens(std::slice::from_ref(&ids)),
                &Forward {
                    end_layer: Some(2),
                    captures: vec![(1, Site::Key)],
                    ..Default::default()
                },
            )
            .unwrap();
        let k: Vec<Vec<f32>> = out
            .capture(1, Site::Key)
            .unwrap()
            .squeeze(0)
            .unwrap()
            .to_vec2()
            .unwrap();
        for row in &k {
            for i in 0..d {
                for j in 0..d {
                    want[i * d + j] += row[i] as f64 * row[j] as f64;
                }
            }
        }
        n += k.len();
    }
    for i in 0..d {
        for j in 0..d {
            let w = want[i * d + j] / n as f64;
            assert!(
                (c[0][(i, j)] - w).abs() < 1e-5 * (1.0 + w.abs()),
                "({i},{j})"
            );
        }
    }
    // A second cache reads the file instead of recomputing (the corpus is gone now).
    let files = std::fs::read_dir(dir.path().join("stats")).unwrap().count();
    assert_eq!(files, 1);
    let mut again = StatsCache::with_dir(config, dir.path().join("stats"));
    let c2 = again
        .second_moments(&mut model, &[1], &EditControl::default())
        .unwrap();
    assert_eq!(c2[0][(3, 4)], c[0][(3, 4)]);
}

#[test]
fn statistics_ignore_edits() {
    let dir = tempfile::tempdir().unwrap();
    let config = StatsConfig {
        corpus: CorpusSpec::ModelSamples { seed: 1 },
        tokens: Some(300),
        seq_len: 32,
    };
    let mut model = tiny_model(Arch::Gpt2, 2);
    let mut a = StatsCache::with_dir(config.clone(), dir.path().join("a"));
    let before = a
        .second_moments(&mut model, &[1], &EditControl::default())
        .unwrap();
    let w = model.edit_weight(0).unwrap().clone();
    model.set_edit_weight(0, (w * 3.0).unwrap()).unwrap();
    let mut b = StatsCache::with_dir(config, dir.path().join("b"));
    let after = b
        .second_moments(&mut model, &[1], &EditControl::default())
        .unwrap();
    assert_eq!(before[0][(1, 2)], after[0][(1, 2)]);
    assert!(
        model.is_edited().unwrap(),
        "the edit is back in place afterwards"
    );
}

/// A bf16 runtime's statistics are cached apart from the f32 ones: its keys differ in their last
/// bits, and a session must replay with the C it was recorded with.
#[test]
fn statistics_are_cached_per_precision() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("c.txt");
    std::fs::write(&corpus, "Some text here.\n\nAnd another paragraph of text.").unwrap();
    let config = StatsConfig {
        corpus: CorpusSpec::Path {
            path: corpus,
            field: None,
        },
        tokens: Some(300),
        seq_len: 32,
    };
    let mut full = tiny_model(Arch::Llama, 1);
    let mut half = tiny_model(Arch::Llama, 1)
        .to_precision(crate::model::Precision::Bf16)
        .unwrap();
    let stats_dir = dir.path().join("stats");
    let mut cache = StatsCache::with_dir(config, stats_dir.clone());
    let ctl = EditControl::default();
    let c32 = cache.second_moments(&mut full, &[1], &ctl).unwrap();
    let c16 = cache.second_moments(&mut half, &[1], &ctl).unwrap();
    let files: Vec<String> = std::fs::read_dir(stats_dir.join(&full.info.sha256[..16]))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files.len(), 2, "{files:?}");
    assert!(files.iter().any(|f| f.contains("-bf16-L1")), "{files:?}");
    let (a, b) = (&c32[0], &c16[0]);
    let rel = (a.as_ref() - b.as_ref()).norm_l2() / a.norm_l2();
    assert!(rel > 0.0 && rel < 0.05, "{rel}");
}

#[test]
fn statistics_another_thread_wrote_while_this_one_waited_are_read_from_disk() {
    let dir = tempfile::tempdir().unwrap();
    let config = StatsConfig {
        corpus: CorpusSpec::ModelSamples { seed: 3 },
        tokens: Some(600),
        seq_len: 32,
    };
    let model = tiny_model(Arch::Llama, 1);
    let writer = StatsCache::with_dir(config.clone(), dir.path().to_path_buf());
    let corpus = writer.corpus_id().unwrap();
    let tokens = config.token_budget(model.config.d_ff);
    let d = model.config.d_ff;
    let written = Mat::<f64>::from_fn(d, d, |i, j| if i == j { 2.0 } else { 0.0 });
    let layers = [0usize, 1];

    // This thread holds the computation lock, as a thread gathering the statistics would; the
    // reader misses them on disk and waits; then they are written and the lock is released.
    let guard = COMPUTE.lock().unwrap();
    let reader = {
        let (mut model, config, path) = (model.clone(), config.clone(), dir.path().to_path_buf());
        std::thread::spawn(move || {
            let mut cache = StatsCache::with_dir(config, path);
            cache.second_moments(&mut model, &layers, &EditControl::default())
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(300));
    for &l in &layers {
        save_matrix(&writer.file_for(&model, &corpus, tokens, l), &written).unwrap();
    }
    drop(guard);
    let got = reader.join().expect("no panic").unwrap();
    for c in got {
        assert_eq!(c.as_ref(), &written, "read from the other thread's files");
    }
}

#[test]
fn siblings_hold_one_copy_of_the_matrices() {
    let dir = tempfile::tempdir().unwrap();
    let (_, config) = text_corpus(dir.path(), 500);
    let mut model = tiny_model(Arch::Llama, 1);
    let mut first = StatsCache::with_dir(config.clone(), dir.path().join("stats"));
    let mut sibling = first.sibling();
    let ctl = EditControl::default();
    let a = first.second_moments(&mut model, &[1], &ctl).unwrap();
    // The sibling finds the first one's matrix in memory: the same allocation, not a reload.
    let b = sibling.second_moments(&mut model, &[1], &ctl).unwrap();
    assert!(Arc::ptr_eq(&a[0], &b[0]));
    assert_eq!(first.bytes(), sibling.bytes());
    // A cache made afresh on the same folder reads the file: equal values, its own copy.
    let mut other = StatsCache::with_dir(config, dir.path().join("stats"));
    let c = other.second_moments(&mut model, &[1], &ctl).unwrap();
    assert!(!Arc::ptr_eq(&a[0], &c[0]));
    assert_eq!(a[0].as_ref(), c[0].as_ref());
}
