//! The key second moment `C_l = E[k kᵀ]` per layer (spec §1.6): the uncentered second moment of
//! the edited matrix's inputs over every token of a text corpus, gathered once on the *unedited*
//! model and cached on disk under `<d4s home>/stats/`, keyed by (model sha256, corpus, token
//! budget, layer).
//!
//! The reference tools use ~100k Wikipedia documents. d4s needs a corpus that exists on a fresh
//! machine with no data files, so the default is text sampled from the model itself (fixed seeds,
//! see [`sample_corpus`]); `--stats-corpus` points it at real text (a file, a folder of `.txt`, or
//! a JSON/JSONL field) such as `../shared/data/wikitext`. BENCHMARKS.md compares the two.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use candle_core::{DType, Tensor};
use faer::Mat;
use serde::{Deserialize, Serialize};

use super::{EditControl, Phase, Progress};
use crate::error::{Error, Result};
use crate::model::generate::GenerateOptions;
use crate::model::{Forward, Input, Model, Site};
use crate::util;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CorpusSpec {
    /// Text sampled from the unedited model with fixed seeds.
    ModelSamples { seed: u64 },
    /// A text file (paragraphs), a folder of `.txt` files, or a JSON list / JSONL file (strings,
    /// or objects whose `field` holds the text).
    Path {
        path: PathBuf,
        field: Option<String>,
    },
}

impl Default for CorpusSpec {
    fn default() -> Self {
        CorpusSpec::ModelSamples { seed: 0 }
    }
}

impl CorpusSpec {
    /// Parses `--stats-corpus`: `model` / `model:SEED`, or `PATH[#FIELD]`.
    pub fn parse(s: &str) -> Result<Self> {
        if s == "model" {
            return Ok(CorpusSpec::ModelSamples { seed: 0 });
        }
        if let Some(seed) = s.strip_prefix("model:") {
            let seed = seed
                .parse()
                .map_err(|_| Error::Input(format!("--stats-corpus {s:?}: bad seed")))?;
            return Ok(CorpusSpec::ModelSamples { seed });
        }
        let (path, field) = match s.rsplit_once('#') {
            Some((p, f)) => (p, Some(f.to_string())),
            None => (s, None),
        };
        let path = PathBuf::from(path);
        if !path.exists() {
            return Err(Error::Input(format!(
                "stats corpus {} does not exist",
                path.display()
            )));
        }
        Ok(CorpusSpec::Path { path, field })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatsConfig {
    pub corpus: CorpusSpec,
    /// Token budget; `None` = [`TOKENS_PER_DFF`] × d_ff (15,360 for the default model). Sampled
    /// text comes in whole batches (64 rows of `seq_len`), so the tokens used are the budget
    /// rounded up to a multiple of 64 × `seq_len` (8,192 by default).
    pub tokens: Option<usize>,
    /// Tokens per document (longer ones are truncated, as the reference truncates to the context).
    pub seq_len: usize,
}

impl Default for StatsConfig {
    fn default() -> Self {
        Self {
            corpus: CorpusSpec::default(),
            tokens: None,
            seq_len: 128,
        }
    }
}

/// The default statistics budget per MLP width. 10 × d_ff gives the same single edits as 20 ×
/// d_ff on the default model (efficacy, paraphrase and specificity identical on 40
/// counterfact-train edits, post-edit probability within 0.016 on average) at half the cost;
/// BENCHMARKS.md, "How few statistics tokens".
pub const TOKENS_PER_DFF: usize = 10;

/// The default before 2026-12-07: records that name no budget were made with it.
pub const LEGACY_TOKENS_PER_DFF: usize = 20;

impl StatsConfig {
    pub fn token_budget(&self, d_ff: usize) -> usize {
        self.tokens.unwrap_or(TOKENS_PER_DFF * d_ff)
    }

    /// The same configuration with its budget written out, so a record keeps meaning the same
    /// statistics if the default changes.
    pub fn pinned(mut self, d_ff: usize) -> Self {
        self.tokens = Some(self.token_budget(d_ff));
        self
    }

    /// A configuration read from a record made before budgets were written out: no budget
    /// meant the default of the time, 20 × d_ff.
    pub fn as_recorded(mut self, d_ff: usize) -> Self {
        self.tokens = Some(self.tokens.unwrap_or(LEGACY_TOKENS_PER_DFF * d_ff));
        self
    }
}

/// What editors compute once from an unedited model and reuse: per-layer second moments (in
/// memory and on disk), matrices derived from them, and sampled context templates.
pub struct StatsCache {
    pub config: StatsConfig,
    dir: PathBuf,
    /// Shared with every [`StatsCache::sibling`]: the background thread's matrices, and those of
    /// the other editors of an A/B run, are held once.
    mem: Shared<(String, usize)>,
    /// Matrices derived from a layer's C (e.g. AlphaEdit's null-space projector), by
    /// (statistics key, layer, derivation tag): an eigendecomposition per layer costs seconds,
    /// which every new editor of the same model would otherwise pay again.
    derived: Shared<(String, usize, String)>,
    /// Context templates sampled from the unedited model, shared by every editor of it (the
    /// single-edit protocol makes a new editor for every case).
    pub templates: super::templates::TemplateCache,
}

/// What identifies a model's statistics in memory: model, corpus (its id), token budget and the
/// runtime's precision (keys from a bf16 forward pass differ in their last bits, and a session
/// replays bit for bit only with the C it was recorded with).
fn mem_key(model: &Model, corpus: &str, tokens: usize) -> String {
    format!(
        "{}/{corpus}/{tokens}{}",
        model.info.sha256,
        precision_tag(model)
    )
}

/// Empty for f32 (the files written before the precision was configurable stay valid).
fn precision_tag(model: &Model) -> String {
    match model.precision() {
        crate::model::Precision::F32 => String::new(),
        p => format!("-{p}"),
    }
}

/// Matrices by key, shared between the handles on one cache.
type Shared<K> = Arc<Mutex<HashMap<K, Arc<Mat<f64>>>>>;

/// A shared map's entry (a poisoned lock still holds whole entries: they are inserted whole).
fn get<K: std::hash::Hash + Eq>(map: &Shared<K>, key: &K) -> Option<Arc<Mat<f64>>> {
    map.lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(key)
        .cloned()
}

fn put<K: std::hash::Hash + Eq>(map: &Shared<K>, key: K, m: Arc<Mat<f64>>) {
    map.lock().unwrap_or_else(|p| p.into_inner()).insert(key, m);
}

/// Serializes the (expensive) computation across threads of one process; the disk cache is checked
/// again after taking it.
static COMPUTE: Mutex<()> = Mutex::new(());

impl StatsCache {
    pub fn new(config: StatsConfig) -> Self {
        Self::with_dir(config, util::d4s_home().join("stats"))
    }

    pub fn with_dir(config: StatsConfig, dir: PathBuf) -> Self {
        Self {
            config,
            dir,
            mem: Default::default(),
            derived: Default::default(),
            templates: Default::default(),
        }
    }

    /// `derive(C_l)` for each layer, computed once per process and statistics key; `tag` names
    /// the derivation and its parameters (different tags never share an entry).
    pub fn derived(
        &mut self,
        model: &mut Model,
        layers: &[usize],
        tag: &str,
        ctl: &EditControl,
        derive: impl Fn(&Mat<f64>) -> Result<Mat<f64>>,
    ) -> Result<Vec<Arc<Mat<f64>>>> {
        let covs = self.second_moments(model, layers, ctl)?;
        let stats_key = mem_key(
            model,
            &self.corpus_id()?,
            self.config.token_budget(model.config.d_ff),
        );
        layers
            .iter()
            .zip(covs)
            .map(|(&l, c)| {
                let key = (stats_key.clone(), l, tag.to_string());
                if let Some(m) = get(&self.derived, &key) {
                    return Ok(m);
                }
                ctl.check()?;
                let m = Arc::new(derive(&c)?);
                put(&self.derived, key, m.clone());
                Ok(m)
            })
            .collect()
    }

    /// Another handle on this cache (same configuration, folder and matrices in memory): for a
    /// thread that gathers the statistics in the background, or another editor of the same
    /// model. A process-wide lock keeps them computed once; memory holds them once.
    pub fn sibling(&self) -> Self {
        Self {
            config: self.config.clone(),
            dir: self.dir.clone(),
            mem: self.mem.clone(),
            derived: self.derived.clone(),
            templates: Default::default(),
        }
    }

    /// A stable identifier of the corpus (a hash of its contents for files).
    pub fn corpus_id(&self) -> Result<String> {
        Ok(match &self.config.corpus {
            CorpusSpec::ModelSamples { seed } => format!("model-samples-s{seed}"),
            CorpusSpec::Path { path, field } => {
                let mut lines = String::new();
                for f in corpus_files(path)? {
                    lines.push_str(&format!("{}\n", util::sha256_file(&f)?));
                }
                if let Some(field) = field {
                    lines.push_str(field);
                }
                format!("text-{}", &util::sha256_hex(lines.as_bytes())[..12])
            }
        })
    }

    fn file_for(&self, model: &Model, corpus: &str, tokens: usize, layer: usize) -> PathBuf {
        self.dir
            .join(&model.info.sha256[..16.min(model.info.sha256.len())])
            .join(format!(
                "{corpus}-{tokens}{}-L{layer}.safetensors",
                precision_tag(model)
            ))
    }

    /// `C_l` for each of `layers`, computing (on the unedited model) and caching what is missing.
    pub fn second_moments(
        &mut self,
        model: &mut Model,
        layers: &[usize],
        ctl: &EditControl,
    ) -> Result<Vec<Arc<Mat<f64>>>> {
        let corpus = self.corpus_id()?;
        let tokens = self.config.token_budget(model.config.d_ff);
        let prefix = mem_key(model, &corpus, tokens);
        let mut missing = Vec::new();
        for &l in layers {
            let key = (prefix.clone(), l);
            if get(&self.mem, &key).is_some() {
                continue;
            }
            match load_matrix(&self.file_for(model, &corpus, tokens, l)) {
                Some(m) => put(&self.mem, key, Arc::new(m)),
                None => missing.push(l),
            }
        }
        if !missing.is_empty() {
            let _guard = COMPUTE.lock().unwrap_or_else(|p| p.into_inner());
            // Another thread may have written them meanwhile: take those from the disk.
            let mut still_missing = Vec::new();
            for &l in &missing {
                if get(&self.mem, &(prefix.clone(), l)).is_some() {
                    continue;
                }
                match load_matrix(&self.file_for(model, &corpus, tokens, l)) {
                    Some(m) => put(&self.mem, (prefix.clone(), l), Arc::new(m)),
                    None => still_missing.push(l),
                }
            }
            missing = still_missing;
            if !missing.is_empty() {
                ctl.report(Progress::Phase(Phase::Statistics));
                let config = self.config.clone();
                let computed = model
                    .with_unedited(|m| compute_second_moments(m, &config, tokens, &missing, ctl))?;
                for (l, c) in missing.iter().zip(computed) {
                    let path = self.file_for(model, &corpus, tokens, *l);
                    // A cache that cannot be written (read-only home) costs time, not correctness.
                    if let Err(e) = save_matrix(&path, &c) {
                        eprintln!(
                            "warning: cannot cache statistics at {}: {e}",
                            path.display()
                        );
                    }
                    put(&self.mem, (prefix.clone(), *l), Arc::new(c));
                }
            }
            for &l in &missing {
                let key = (prefix.clone(), l);
                if get(&self.mem, &key).is_none() {
                    let m = load_matrix(&self.file_for(model, &corpus, tokens, l)).ok_or_else(
                        || Error::Numeric(format!("statistics of layer {l} are missing")),
                    )?;
                    put(&self.mem, key, Arc::new(m));
                }
            }
        }
        layers
            .iter()
            .map(|&l| {
                get(&self.mem, &(prefix.clone(), l))
                    .ok_or_else(|| Error::Numeric(format!("statistics of layer {l} are missing")))
            })
            .collect()
    }

    /// Bytes of statistics held in memory (by this cache and its siblings).
    pub fn bytes(&self) -> usize {
        let mem = self.mem.lock().unwrap_or_else(|p| p.into_inner());
        mem.values().map(|m| m.nrows() * m.ncols() * 8).sum()
    }
}

fn load_matrix(path: &Path) -> Option<Mat<f64>> {
    let t = candle_core::safetensors::load(path, &candle_core::Device::Cpu).ok()?;
    let c = t.get("second_moment")?;
    let (r, cols) = c.dims2().ok()?;
    let v = c
        .to_dtype(DType::F64)
        .ok()?
        .flatten_all()
        .ok()?
        .to_vec1::<f64>()
        .ok()?;
    if v.iter().any(|x| !x.is_finite()) {
        return None;
    }
    Some(Mat::from_fn(r, cols, |i, j| v[i * cols + j]))
}

fn save_matrix(path: &Path, m: &Mat<f64>) -> Result<()> {
    let dir = path.parent().expect("cache files live in a directory");
    util::ensure_dir(dir)?;
    let (r, c) = (m.nrows(), m.ncols());
    let mut v = Vec::with_capacity(r * c);
    for i in 0..r {
        for j in 0..c {
            v.push(m[(i, j)]);
        }
    }
    let t = Tensor::from_vec(v, (r, c), &candle_core::Device::Cpu)?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id()
    ));
    let tensors: HashMap<String, Tensor> = [("second_moment".to_string(), t)].into();
    candle_core::safetensors::save(&tensors, &tmp)
        .map_err(|e| Error::io(&tmp, std::io::Error::other(e.to_string())))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

fn corpus_files(path: &Path) -> Result<Vec<PathBuf>> {
    if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| Error::io(path, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.is_file()
                    && p.extension()
                        .is_some_and(|x| x == "txt" || x == "json" || x == "jsonl")
            })
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(Error::Input(format!(
                "{}: no .txt/.json/.jsonl files",
                path.display()
            )));
        }
        Ok(files)
    } else {
        Ok(vec![path.to_path_buf()])
    }
}

/// Documents of a text corpus: paragraphs of text files, strings of JSON lists, a field of JSON
/// objects or JSONL lines. Empty documents are dropped.
pub fn read_documents(path: &Path, field: Option<&str>) -> Result<Vec<String>> {
    let mut docs = Vec::new();
    for f in corpus_files(path)? {
        let text = std::fs::read_to_string(&f).map_err(|e| Error::io(&f, e))?;
        let ext = f.extension().and_then(|e| e.to_str()).unwrap_or("");
        let pick = |v: &serde_json::Value| -> Option<String> {
            match (v, field) {
                (serde_json::Value::String(s), _) => Some(s.clone()),
                (serde_json::Value::Object(o), Some(k)) => {
                    o.get(k).and_then(|x| x.as_str()).map(str::to_string)
                }
                _ => None,
            }
        };
        match ext {
            "json" => {
                let v: serde_json::Value = serde_json::from_str(&text)
                    .map_err(|e| Error::bad_file(&f, format!("invalid JSON: {e}")))?;
                let arr = v
                    .as_array()
                    .ok_or_else(|| Error::bad_file(&f, "expected a JSON list"))?;
                docs.extend(arr.iter().filter_map(pick));
            }
            "jsonl" => {
                for (i, line) in text
                    .lines()
                    .enumerate()
                    .filter(|(_, l)| !l.trim().is_empty())
                {
                    let v: serde_json::Value = serde_json::from_str(line)
                        .map_err(|e| Error::bad_file(&f, format!("line {}: {e}", i + 1)))?;
                    docs.extend(pick(&v));
                }
            }
            _ => docs.extend(text.split("\n\n").map(str::to_string)),
        }
    }
    docs.retain(|d| !d.trim().is_empty());
    if docs.is_empty() {
        return Err(Error::Input(format!(
            "{}: the corpus has no text",
            path.display()
        )));
    }
    Ok(docs)
}

/// Openers for the model-sampled corpus: varied enough that the samples cover narrative,
/// expository and conversational text.
const OPENERS: [&str; 32] = [
    "The",
    "In",
    "A",
    "It",
    "He",
    "She",
    "They",
    "We",
    "This",
    "When",
    "After",
    "Many",
    "One",
    "There",
    "According to",
    "During",
    "Although",
    "If",
    "Most",
    "Some",
    "His",
    "Her",
    "On",
    "At",
    "For",
    "History",
    "Science",
    "The city of",
    "In 1990,",
    "Scientists",
    "Today",
    "Her father",
];

/// `n_tokens` of text sampled from the model: rows of `seq_len` tokens started from the openers,
/// sampled at temperature 1 with top-k 40 from seeded generators.
pub fn sample_corpus(
    model: &Model,
    n_tokens: usize,
    seq_len: usize,
    seed: u64,
    ctl: &EditControl,
) -> Result<Vec<Vec<u32>>> {
    // Wide batches: generation cost per token falls until ~64 rows on a small model (BENCHMARKS.md).
    const BATCH: usize = 64;
    let mut seqs = Vec::new();
    let mut total = 0;
    let mut round = 0u64;
    while total < n_tokens {
        ctl.check()?;
        let prompts: Vec<Vec<u32>> = (0..BATCH)
            .map(|i| model.encode(OPENERS[(round as usize * BATCH + i) % OPENERS.len()]))
            .collect::<Result<_>>()?;
        let opts = GenerateOptions {
            max_tokens: seq_len.saturating_sub(3).max(1),
            temperature: 1.0,
            top_k: Some(40),
            seed: seed.wrapping_mul(1_000_003).wrapping_add(round),
            stop_at_eos: false,
            stop_strings: vec![],
        };
        let outs = model.generate_batch_with(&prompts, &opts, |_, _| !ctl.cancelled())?;
        ctl.check()?;
        for (p, o) in prompts.into_iter().zip(outs) {
            let mut ids = p;
            ids.extend(o);
            ids.truncate(seq_len);
            total += ids.len();
            seqs.push(ids);
        }
        ctl.report(Progress::Tokens {
            done: total.min(n_tokens) / 2,
            total: n_tokens,
        });
        round += 1;
    }
    Ok(seqs)
}

fn corpus_sequences(
    model: &Model,
    config: &StatsConfig,
    n_tokens: usize,
    ctl: &EditControl,
) -> Result<Vec<Vec<u32>>> {
    match &config.corpus {
        CorpusSpec::ModelSamples { seed } => {
            sample_corpus(model, n_tokens, config.seq_len, *seed, ctl)
        }
        CorpusSpec::Path { path, field } => {
            let mut seqs = Vec::new();
            let mut total = 0;
            for doc in read_documents(path, field.as_deref())? {
                if total >= n_tokens {
                    break;
                }
                let mut ids = model.encode(&doc)?;
                ids.truncate(config.seq_len);
                if ids.is_empty() {
                    continue;
                }
                total += ids.len();
                seqs.push(ids);
            }
            Ok(seqs)
        }
    }
}

/// `acc += KᵀK` for keys `K: [n, d_ff]` (row-major `acc` of `d_ff²`). The product runs on the
/// model's device in f32 over one chunk of tokens; the running sum is f64, so its rounding does
/// not grow with the corpus.
pub fn accumulate_gram(acc: &mut [f64], keys: &Tensor) -> Result<()> {
    // Widened one entry at a time (the same values as an f64 tensor, without a d_ff² f64 copy:
    // at d_ff = 18,944 that copy alone is 2.7 GiB).
    let gram = keys
        .t()?
        .matmul(keys)?
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    if gram.len() != acc.len() {
        return Err(Error::Model(format!(
            "a key gram of {} entries for an accumulator of {}",
            gram.len(),
            acc.len()
        )));
    }
    for (a, g) in acc.iter_mut().zip(gram) {
        *a += f64::from(g);
    }
    Ok(())
}

/// Σ k kᵀ / #tokens over the corpus, for each layer, in f64.
fn compute_second_moments(
    model: &Model,
    config: &StatsConfig,
    n_tokens: usize,
    layers: &[usize],
    ctl: &EditControl,
) -> Result<Vec<Mat<f64>>> {
    let seqs = corpus_sequences(model, config, n_tokens, ctl)?;
    let d = model.config.d_ff;
    let mut acc = vec![vec![0f64; d * d]; layers.len()];
    let mut count = 0usize;
    let end = layers.iter().max().map_or(1, |l| l + 1);
    let points: Vec<(usize, Site)> = layers.iter().map(|&l| (l, Site::Key)).collect();
    let sampled = matches!(config.corpus, CorpusSpec::ModelSamples { .. });
    for chunk in seqs.chunks(16) {
        ctl.check()?;
        let out = model.forward(
            Input::Tokens(chunk),
            &Forward {
                end_layer: Some(end),
                captures: points.clone(),
                ..Default::default()
            },
        )?;
        let valid: Vec<(usize, usize)> = chunk
            .iter()
            .enumerate()
            .flat_map(|(r, s)| (0..s.len()).map(move |p| (r, p)))
            .collect();
        for (k, &(l, site)) in points.iter().enumerate() {
            let keys = Model::gather_rows(out.capture(l, site)?, &valid)?;
            accumulate_gram(&mut acc[k], &keys)?;
        }
        count += valid.len();
        let done = if sampled {
            n_tokens / 2 + count / 2
        } else {
            count
        };
        ctl.report(Progress::Tokens {
            done: done.min(n_tokens),
            total: n_tokens,
        });
    }
    if count == 0 {
        return Err(Error::Input(
            "the statistics corpus produced no tokens".into(),
        ));
    }
    Ok(acc
        .into_iter()
        .map(|a| Mat::from_fn(d, d, |i, j| a[i * d + j] / count as f64))
        .collect())
}

#[cfg(test)]
mod tests;
