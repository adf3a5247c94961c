//! Export of an edited model as a Hugging Face directory (`config.json`, `tokenizer.json`,
//! `model.safetensors` with the architecture's usual names and layouts — GPT-2's Conv1D weights
//! transposed back), or of the edited matrices' ΔW alone.

use std::collections::HashMap;
use std::path::Path;

use candle_core::Tensor;
use serde_json::json;

use crate::error::{Error, Result};
use crate::model::{Arch, Model};
use crate::util;

/// The `config.json` transformers needs to rebuild the architecture.
pub fn hf_config(model: &Model) -> serde_json::Value {
    let c = &model.config;
    let eos = c.eos_token_ids.first().copied();
    match c.arch {
        Arch::Llama => json!({
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "hidden_size": c.d_model,
            "intermediate_size": c.d_ff,
            "num_hidden_layers": c.n_layers,
            "num_attention_heads": c.n_heads,
            "num_key_value_heads": c.n_kv_heads,
            "head_dim": c.head_dim,
            "hidden_act": "silu",
            "max_position_embeddings": c.max_positions,
            "rms_norm_eps": c.norm_eps,
            "rope_theta": c.rope_theta,
            "rope_scaling": c.rope_scaling,
            "attention_bias": c.attention_bias,
            "mlp_bias": false,
            "tie_word_embeddings": c.tie_embeddings,
            "vocab_size": c.vocab_size,
            "bos_token_id": c.bos_token_id,
            "eos_token_id": eos,
            "torch_dtype": "float32",
        }),
        Arch::Gpt2 => json!({
            "architectures": ["GPT2LMHeadModel"],
            "model_type": "gpt2",
            "n_embd": c.d_model,
            "n_inner": c.d_ff,
            "n_layer": c.n_layers,
            "n_head": c.n_heads,
            "n_positions": c.max_positions,
            "n_ctx": c.max_positions,
            "activation_function": "gelu_new",
            "layer_norm_epsilon": c.norm_eps,
            "vocab_size": c.vocab_size,
            "tie_word_embeddings": true,
            "bos_token_id": c.bos_token_id,
            "eos_token_id": eos,
            "torch_dtype": "float32",
        }),
        Arch::Gptj => json!({
            "architectures": ["GPTJForCausalLM"],
            "model_type": "gptj",
            "n_embd": c.d_model,
            "n_inner": c.d_ff,
            "n_layer": c.n_layers,
            "n_head": c.n_heads,
            "rotary_dim": c.rotary_dim,
            "n_positions": c.max_positions,
            "activation_function": "gelu_new",
            "layer_norm_epsilon": c.norm_eps,
            "vocab_size": c.vocab_size,
            "tie_word_embeddings": false,
            "bos_token_id": c.bos_token_id,
            "eos_token_id": eos,
            "torch_dtype": "float32",
        }),
    }
}

fn save_tensors(path: &Path, tensors: Vec<(String, Tensor)>) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id()
    ));
    let map: HashMap<String, Tensor> = tensors
        .into_iter()
        .map(|(k, v)| v.contiguous().map(|v| (k, v)))
        .collect::<candle_core::Result<_>>()?;
    if let Err(e) = candle_core::safetensors::save(&map, &tmp) {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(path, std::io::Error::other(e.to_string())));
    }
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

fn write_json(path: &Path, v: &serde_json::Value) -> Result<()> {
    util::write_atomic(
        path,
        serde_json::to_string_pretty(v)
            .expect("serializable")
            .as_bytes(),
    )
}

/// Writes the model to `dir`. With `delta_only`, writes `delta.safetensors` (ΔW = W − W0 of each
/// edited matrix, in the checkpoint's layout) and `delta.json` instead.
pub fn export_hf(model: &Model, dir: &Path, delta_only: bool) -> Result<()> {
    if model.adaptors.iter().any(Option::is_some) {
        return Err(Error::Input(
            "this model carries GRACE codebook edits, which are not weights and cannot be exported"
                .into(),
        ));
    }
    util::ensure_dir(dir)?;
    if delta_only {
        let mut tensors = Vec::new();
        let mut layers = Vec::new();
        for l in model.touched_layers() {
            let mut d = (model.edit_weight(l)? - model.original_edit_weight(l)?)?;
            if model.config.arch == Arch::Gpt2 {
                d = d.t()?.contiguous()?;
            }
            let name = format!(
                "{}.weight",
                model
                    .config
                    .arch
                    .edit_module_template()
                    .replace("{}", &l.to_string())
            );
            tensors.push((name, d));
            layers.push(l);
        }
        save_tensors(&dir.join("delta.safetensors"), tensors)?;
        return write_json(
            &dir.join("delta.json"),
            &json!({
                "base_model": model.info.name,
                "base_sha256": model.info.sha256,
                "edited_layers": layers,
                "module": model.config.arch.edit_module_template(),
                "layout": if model.config.arch == Arch::Gpt2 { "conv1d [in, out]" } else { "linear [out, in]" },
                "meaning": "weight = base weight + delta",
            }),
        );
    }
    write_json(&dir.join("config.json"), &hf_config(model))?;
    if let Some(tok) = &model.tokenizer {
        let s = tok
            .to_string(true)
            .map_err(|e| Error::Tokenizer(format!("cannot serialize the tokenizer: {e}")))?;
        util::write_atomic(&dir.join("tokenizer.json"), s.as_bytes())?;
    }
    save_tensors(&dir.join("model.safetensors"), model.hf_tensors()?)
}
