//! GGUF files (llama.cpp's format): metadata to [`ModelConfig`], tensors dequantized to f32 with
//! Hugging Face names and layouts.

use super::*;
use crate::model::config::Activation;

struct GgufSource<'a> {
    path: PathBuf,
    content: &'a gguf_file::Content,
    file: fs::File,
    device: Device,
    dtype: DType,
    /// llama.cpp stores Llama q/k rows permuted for its interleaved rotary; we undo it so the
    /// weights have the Hugging Face layout (and export needs no conversion).
    unpermute: Option<(usize, usize)>,
}

impl GgufSource<'_> {
    fn gguf_name(hf: &str) -> String {
        if let Some(rest) = hf.strip_prefix("model.layers.") {
            let (layer, tail) = rest.split_once('.').unwrap_or((rest, ""));
            let mapped = match tail {
                "input_layernorm.weight" => "attn_norm.weight",
                "post_attention_layernorm.weight" => "ffn_norm.weight",
                "self_attn.q_proj.weight" => "attn_q.weight",
                "self_attn.k_proj.weight" => "attn_k.weight",
                "self_attn.v_proj.weight" => "attn_v.weight",
                "self_attn.o_proj.weight" => "attn_output.weight",
                "self_attn.q_proj.bias" => "attn_q.bias",
                "self_attn.k_proj.bias" => "attn_k.bias",
                "self_attn.v_proj.bias" => "attn_v.bias",
                "mlp.gate_proj.weight" => "ffn_gate.weight",
                "mlp.up_proj.weight" => "ffn_up.weight",
                "mlp.down_proj.weight" => "ffn_down.weight",
                other => other,
            };
            return format!("blk.{layer}.{mapped}");
        }
        match hf {
            "model.embed_tokens.weight" => "token_embd.weight".into(),
            "model.norm.weight" => "output_norm.weight".into(),
            "lm_head.weight" => "output.weight".into(),
            other => other.into(),
        }
    }
}

impl WeightSource for GgufSource<'_> {
    fn has(&self, name: &str) -> bool {
        self.content
            .tensor_infos
            .contains_key(&Self::gguf_name(name))
    }

    fn get(&mut self, name: &str) -> Result<Tensor> {
        let gname = Self::gguf_name(name);
        let q = self
            .content
            .tensor(&mut self.file, &gname, &Device::Cpu)
            .map_err(|e| {
                Error::bad_file(&self.path, format!("tensor {gname}: {}", candle_message(e)))
            })?;
        let t = q.dequantize(&Device::Cpu).map_err(|e| {
            Error::bad_file(&self.path, format!("tensor {gname}: {}", candle_message(e)))
        })?;
        let t = match self.unpermute {
            Some((n_heads, _))
                if name.ends_with("q_proj.weight") || name.ends_with("q_proj.bias") =>
            {
                unpermute_rows(&t, n_heads)?
            }
            Some((_, n_kv)) if name.ends_with("k_proj.weight") || name.ends_with("k_proj.bias") => {
                unpermute_rows(&t, n_kv)?
            }
            _ => t,
        };
        Ok(t.to_dtype(self.dtype)?.to_device(&self.device)?)
    }
}

/// Inverse of llama.cpp's `permute`: rows grouped per head as `[hd/2, 2]` back to `[2, hd/2]`.
pub(super) fn unpermute_rows(t: &Tensor, n_heads: usize) -> Result<Tensor> {
    let dims = t.dims().to_vec();
    let rows = dims[0];
    let rest: usize = dims[1..].iter().product();
    let hd = rows / n_heads;
    Ok(t.reshape((n_heads, hd / 2, 2, rest))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape(dims)?)
}

fn gguf_config(content: &gguf_file::Content, path: &Path) -> Result<ModelConfig> {
    let md = &content.metadata;
    let arch = md
        .get("general.architecture")
        .and_then(|v| v.to_string().ok().cloned())
        .unwrap_or_default();
    if arch != "llama" && arch != "qwen2" {
        return Err(Error::bad_file(
            path,
            format!("GGUF architecture {arch:?} is not supported (llama, qwen2); use a safetensors directory"),
        ));
    }
    let num = |key: &str| -> Result<u64> {
        let k = format!("{arch}.{key}");
        let v = md
            .get(&k)
            .ok_or_else(|| Error::bad_file(path, format!("GGUF metadata has no `{k}`")))?;
        v.to_u64()
            .or_else(|_| v.to_u32().map(u64::from))
            .or_else(|_| v.to_i32().map(|x| x as u64))
            .map_err(|e| Error::bad_file(path, format!("`{k}`: {}", candle_message(e))))
    };
    let float = |key: &str, default: f64| -> f64 {
        md.get(&format!("{arch}.{key}"))
            .and_then(|v| v.to_f32().ok())
            .map_or(default, f64::from)
    };
    let n_heads = num("attention.head_count")? as usize;
    let d_model = num("embedding_length")? as usize;
    let n_vocab = md
        .get("tokenizer.ggml.tokens")
        .and_then(|v| v.to_vec().ok())
        .map(Vec::len)
        .or_else(|| num("vocab_size").ok().map(|v| v as usize))
        .ok_or_else(|| Error::bad_file(path, "GGUF metadata has no vocabulary"))?;
    let head_dim = d_model / n_heads;
    let n_layers = num("block_count")? as usize;
    let cfg = ModelConfig {
        arch: if arch == "qwen2" {
            Arch::Qwen2
        } else {
            Arch::Llama
        },
        n_layers,
        d_model,
        d_ff: num("feed_forward_length")? as usize,
        n_heads,
        n_kv_heads: num("attention.head_count_kv").map_or(n_heads, |v| v as usize),
        head_dim,
        vocab_size: n_vocab,
        max_positions: num("context_length").map_or(4096, |v| v as usize),
        norm_eps: float("attention.layer_norm_rms_epsilon", 1e-5),
        rope_theta: float("rope.freq_base", 10_000.0),
        rope_scaling: None,
        rotary_dim: head_dim,
        tie_embeddings: !content.tensor_infos.contains_key("output.weight"),
        attention_bias: arch == "qwen2",
        mlp_bias: false,
        activation: Activation::Silu,
        sliding_windows: vec![None; n_layers],
        query_pre_attn_scalar: None,
        attn_softcap: None,
        final_softcap: None,
        embed_scale: None,
        parallel_residual: false,
        hf_json: None,
        bos_token_id: md
            .get("tokenizer.ggml.bos_token_id")
            .and_then(|v| v.to_u32().ok()),
        eos_token_ids: md
            .get("tokenizer.ggml.eos_token_id")
            .and_then(|v| v.to_u32().ok())
            .into_iter()
            .collect(),
    };
    cfg.validate()?;
    Ok(cfg)
}

pub(super) fn load_gguf(path: &Path, opts: &LoadOptions) -> Result<Model> {
    let mut file = fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let content = gguf_file::Content::read(&mut file).map_err(|e| {
        Error::bad_file(
            path,
            format!("not a readable GGUF file: {}", candle_message(e)),
        )
    })?;
    // Before anything else: refuse a model that cannot fit, with the numbers.
    let n_elements = content
        .tensor_infos
        .values()
        .fold(0usize, |acc, t| acc.saturating_add(t.shape.elem_count()));
    check_memory(n_elements, opts.precision(), path)?;
    let config = gguf_config(&content, path)?;
    let source_dtype = content
        .tensor_infos
        .get("blk.0.ffn_down.weight")
        .map(|t| format!("{:?}", t.ggml_dtype))
        .unwrap_or_else(|| "unknown".into());
    let is_llama_arch = content
        .metadata
        .get("general.architecture")
        .and_then(|v| v.to_string().ok())
        .is_some_and(|a| a == "llama");
    let tokenizer = match &opts.tokenizer {
        Some(p) => Some(load_tokenizer_json(p)?),
        None => Some(tokenizer::from_gguf(&content).map_err(|e| match e {
            Error::Tokenizer(m) => Error::bad_file(path, m),
            other => other,
        })?),
    };
    let mut src = GgufSource {
        path: path.to_path_buf(),
        content: &content,
        file,
        device: opts.device.clone(),
        dtype: opts.precision().dtype(),
        unpermute: is_llama_arch.then_some((config.n_heads, config.n_kv_heads)),
    };
    let parts = llama::build(&config, &mut src)?;
    let sha256 = util::sha256_file(path)?;
    let name = content
        .metadata
        .get("general.name")
        .and_then(|v| v.to_string().ok().cloned())
        .unwrap_or_else(|| {
            path.file_stem()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned()
        });
    let info = ModelInfo {
        spec: ModelSpec::Gguf(path.to_path_buf()),
        name,
        format: WeightFormat::Gguf,
        source_dtype,
        files: vec![path.to_path_buf()],
        sha256,
        load_seconds: 0.0,
        chat_template: content
            .metadata
            .get("tokenizer.chat_template")
            .and_then(|v| v.to_string().ok())
            .map(|source| crate::model::chat::ModelChatTemplate {
                source: source.clone(),
                origin: "gguf:tokenizer.chat_template".into(),
            }),
    };
    assemble(config, parts, tokenizer, info, &opts.device)
}
