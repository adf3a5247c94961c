//! Export of an edited model as a Hugging Face directory (`config.json`, `tokenizer.json`,
//! `model.safetensors` with the architecture's usual names and layouts — GPT-2's Conv1D weights
//! transposed back), or of the edited matrices' ΔW alone.

use std::collections::HashMap;
use std::path::Path;

use candle_core::Tensor;
use serde_json::json;

use crate::error::{Error, Result};
use crate::model::config::Family;
use crate::model::{Arch, Model, ModelConfig};
use crate::util;

/// The `config.json` transformers needs to rebuild the architecture: the checkpoint's own, with
/// the dtype set to the exported one (the runtime's: what the edits were made and rounded in), or,
/// for a GGUF or random model, one written from the runtime's config.
pub fn hf_config(model: &Model) -> serde_json::Value {
    let dtype = json!(model.precision().hf_name());
    match &model.config.hf_json {
        Some(source) => {
            let mut v = source.clone();
            if let Some(obj) = v.as_object_mut() {
                obj.insert("torch_dtype".into(), dtype.clone());
                if obj.contains_key("dtype") {
                    obj.insert("dtype".into(), dtype);
                }
            }
            v
        }
        None => {
            let mut v = generated_config(&model.config);
            if let Some(obj) = v.as_object_mut() {
                obj.insert("torch_dtype".into(), dtype);
            }
            v
        }
    }
}

fn generated_config(c: &ModelConfig) -> serde_json::Value {
    let eos = c.eos_token_ids.first().copied();
    let mut v = match c.arch.family() {
        Family::Llama => json!({
            "hidden_size": c.d_model,
            "intermediate_size": c.d_ff,
            "num_hidden_layers": c.n_layers,
            "num_attention_heads": c.n_heads,
            "num_key_value_heads": c.n_kv_heads,
            "head_dim": c.head_dim,
            "hidden_act": c.activation.hf_name(),
            "max_position_embeddings": c.max_positions,
            "rms_norm_eps": c.norm_eps,
            "rope_theta": c.rope_theta,
            "rope_scaling": c.rope_scaling,
            "attention_bias": c.attention_bias,
            "mlp_bias": c.mlp_bias,
        }),
        Family::Gpt2 | Family::Gptj => json!({
            "n_embd": c.d_model,
            "n_inner": c.d_ff,
            "n_layer": c.n_layers,
            "n_head": c.n_heads,
            "n_positions": c.max_positions,
            "n_ctx": c.max_positions,
            "activation_function": "gelu_new",
            "layer_norm_epsilon": c.norm_eps,
        }),
    };
    let obj = v.as_object_mut().expect("an object");
    let architecture = match c.arch {
        Arch::Llama => "LlamaForCausalLM",
        Arch::Mistral => "MistralForCausalLM",
        Arch::Qwen2 => "Qwen2ForCausalLM",
        Arch::Qwen3 => "Qwen3ForCausalLM",
        Arch::Gemma2 => "Gemma2ForCausalLM",
        Arch::GptNeox => "GPTNeoXForCausalLM",
        Arch::Gpt2 => "GPT2LMHeadModel",
        Arch::Gptj => "GPTJForCausalLM",
    };
    let windows: Vec<&str> = c
        .sliding_windows
        .iter()
        .map(|w| match w {
            Some(_) => "sliding_attention",
            None => "full_attention",
        })
        .collect();
    let window = c.sliding_windows.iter().flatten().next();
    let extra = match c.arch {
        Arch::Gptj => json!({ "rotary_dim": c.rotary_dim }),
        Arch::GptNeox => json!({
            "hidden_size": c.d_model,
            "intermediate_size": c.d_ff,
            "num_hidden_layers": c.n_layers,
            "num_attention_heads": c.n_heads,
            "max_position_embeddings": c.max_positions,
            "layer_norm_eps": c.norm_eps,
            "rotary_pct": c.rotary_dim as f64 / c.head_dim as f64,
            "rotary_emb_base": c.rope_theta,
            "hidden_act": c.activation.hf_name(),
            "use_parallel_residual": c.parallel_residual,
            "attention_bias": c.attention_bias,
        }),
        Arch::Mistral => json!({ "sliding_window": window }),
        Arch::Gemma2 => json!({
            "hidden_activation": c.activation.hf_name(),
            "query_pre_attn_scalar": c.query_pre_attn_scalar,
            "attn_logit_softcapping": c.attn_softcap,
            "final_logit_softcapping": c.final_softcap,
            "sliding_window": window,
            "layer_types": windows,
        }),
        Arch::Qwen2 | Arch::Qwen3 => json!({
            "use_sliding_window": window.is_some(),
            "sliding_window": window,
            "layer_types": windows,
        }),
        Arch::Llama | Arch::Gpt2 => json!({}),
    };
    for (k, val) in extra.as_object().expect("an object") {
        obj.insert(k.clone(), val.clone());
    }
    for (k, val) in [
        ("architectures", json!([architecture])),
        ("model_type", json!(c.arch.name())),
        ("vocab_size", json!(c.vocab_size)),
        ("tie_word_embeddings", json!(c.tie_embeddings)),
        ("bos_token_id", json!(c.bos_token_id)),
        ("eos_token_id", json!(eos)),
        ("torch_dtype", json!("float32")),
    ] {
        obj.insert(k.into(), val);
    }
    v
}

pub(crate) fn save_tensors(path: &Path, tensors: Vec<(String, Tensor)>) -> Result<()> {
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
            let mut d = (model.edit_weight_f32(l)? - model.original_edit_weight_f32(l)?)?;
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
        write_json(
            &dir.join("tokenizer_config.json"),
            &tokenizer_config(model)?,
        )?;
    }
    save_tensors(&dir.join("model.safetensors"), model.hf_tensors()?)
}

/// What transformers needs beside `tokenizer.json` to know the special tokens (without it a
/// loaded tokenizer has no end-of-text or padding token) and the chat template, if any.
fn tokenizer_config(model: &Model) -> Result<serde_json::Value> {
    let token = |id: Option<u32>| -> Result<serde_json::Value> {
        Ok(match id {
            Some(id) => serde_json::Value::String(model.decode(&[id])?),
            None => serde_json::Value::Null,
        })
    };
    let mut config = serde_json::json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": token(model.config.bos_token_id)?,
        "eos_token": token(model.config.eos_token_ids.first().copied())?,
        "model_max_length": model.config.max_positions,
    });
    if let Some(t) = &model.info.chat_template {
        config["chat_template"] = serde_json::Value::String(t.source.clone());
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::load::{load, LoadOptions};
    use crate::model::random::tiny_model;
    use crate::model::{Logits, ModelSpec};

    /// Every architecture exports to a directory that loads back as the same model: the same
    /// logits bit for bit, the edited matrix included.
    #[test]
    fn every_architecture_round_trips_through_export() {
        for arch in Arch::ALL {
            let mut model = tiny_model(arch, 5);
            let w = model.edit_weight(1).unwrap().clone();
            model
                .set_edit_weight(1, (&w + w.ones_like().unwrap() * 0.01).unwrap())
                .unwrap();
            let dir = tempfile::tempdir().unwrap();
            export_hf(&model, dir.path(), false).unwrap();
            let back = load(
                &ModelSpec::HfDir(dir.path().to_path_buf()),
                &LoadOptions::default(),
            )
            .unwrap_or_else(|e| panic!("{arch:?}: {e}"));
            let mut expected = model.config.clone();
            expected.max_positions = back.config.max_positions;
            expected.hf_json = None;
            let mut got = back.config.clone();
            got.hf_json = None;
            assert_eq!(got, expected, "{arch:?}: config");
            let rows = vec![vec![3u32, 17, 250, 9, 77, 500, 42, 1, 8, 9]];
            let a = model.logits(&rows, Logits::All).unwrap();
            let b = back.logits(&rows, Logits::All).unwrap();
            assert!(
                crate::model::same_tensor(&a, &b).unwrap(),
                "{arch:?}: logits after export"
            );
        }
    }

    /// A bf16 runtime exports bf16 tensors with a config that says so, and loading that export
    /// in bf16 gives the same model bit for bit.
    #[test]
    fn a_bf16_model_exports_as_bf16() {
        use crate::model::Precision;
        let mut model = tiny_model(Arch::Llama, 5)
            .to_precision(Precision::Bf16)
            .unwrap();
        let w = model.edit_weight_f32(1).unwrap();
        model.set_edit_weight(1, (&w * 1.01).unwrap()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        export_hf(&model, dir.path(), false).unwrap();
        let config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("config.json")).unwrap())
                .unwrap();
        assert_eq!(config["torch_dtype"], "bfloat16");
        let back = load(
            &ModelSpec::HfDir(dir.path().to_path_buf()),
            &LoadOptions {
                precision: Some(Precision::Bf16),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(back.info.source_dtype, "BF16");
        let rows = vec![vec![3u32, 17, 250, 9, 77]];
        let a = model.logits(&rows, Logits::All).unwrap();
        let b = back.logits(&rows, Logits::All).unwrap();
        assert!(crate::model::same_tensor(&a, &b).unwrap());
    }
}
