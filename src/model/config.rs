//! Architecture-independent model configuration, read from a Hugging Face `config.json` or from
//! GGUF metadata.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// Llama-2/3, SmolLM2, Qwen2 (RMSNorm, RoPE, GQA, SwiGLU).
    Llama,
    /// GPT-2 (learned positions, LayerNorm, GELU, Conv1D weights).
    Gpt2,
    /// GPT-J (parallel attention + MLP, partial interleaved rotary).
    Gptj,
}

impl Arch {
    pub fn name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Gpt2 => "gpt2",
            Arch::Gptj => "gptj",
        }
    }

    /// Hugging Face module name of the matrix the editors change, `{}` = layer index.
    pub fn edit_module_template(self) -> &'static str {
        match self {
            Arch::Llama => "model.layers.{}.mlp.down_proj",
            Arch::Gpt2 => "transformer.h.{}.mlp.c_proj",
            Arch::Gptj => "transformer.h.{}.mlp.fc_out",
        }
    }
}

/// RoPE frequency scaling (Llama 3 / linear). `None` = plain RoPE.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum RopeScaling {
    Linear {
        factor: f64,
    },
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: usize,
    },
}

/// How rotary embeddings pair dimensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RopeStyle {
    /// Hugging Face Llama: dimension i pairs with i + d/2 (`rotate_half`).
    Half,
    /// GPT-J / llama.cpp: dimension 2i pairs with 2i + 1 (`rotate_every_two`).
    Interleaved,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub arch: Arch,
    pub n_layers: usize,
    /// Residual width (d_model).
    pub d_model: usize,
    /// MLP inner width (d_ff): the input width of the edited matrix.
    pub d_ff: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub vocab_size: usize,
    pub max_positions: usize,
    pub norm_eps: f64,
    pub rope_theta: f64,
    pub rope_scaling: Option<RopeScaling>,
    /// Number of rotated dimensions per head (GPT-J: `rotary_dim`; Llama: head_dim; GPT-2: 0).
    pub rotary_dim: usize,
    pub tie_embeddings: bool,
    /// Qwen2-style biases on the q/k/v projections.
    pub attention_bias: bool,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
}

impl ModelConfig {
    pub fn rope_style(&self) -> RopeStyle {
        match self.arch {
            Arch::Gptj => RopeStyle::Interleaved,
            _ => RopeStyle::Half,
        }
    }

    /// Parameters in the model (embeddings counted once when tied).
    pub fn n_params(&self) -> usize {
        let d = self.d_model;
        let kv = self.n_kv_heads * self.head_dim;
        let attn = d * (self.n_heads * self.head_dim) * 2 + d * kv * 2;
        let mlp = match self.arch {
            Arch::Llama => 3 * d * self.d_ff,
            _ => 2 * d * self.d_ff,
        };
        let embed = self.vocab_size * d * if self.tie_embeddings { 1 } else { 2 };
        self.n_layers * (attn + mlp) + embed
    }

    /// Parses a Hugging Face `config.json`.
    pub fn from_hf_json(v: &Value) -> Result<Self> {
        let model_type = v["model_type"].as_str().unwrap_or("");
        let arch = match model_type {
            "llama" | "qwen2" | "mistral" => Arch::Llama,
            "gpt2" => Arch::Gpt2,
            "gptj" => Arch::Gptj,
            other => {
                return Err(Error::Model(format!(
                    "config.json: unsupported model_type {other:?} (supported: llama, qwen2, mistral, gpt2, gptj)"
                )))
            }
        };
        let get = |keys: &[&str]| -> Option<&Value> {
            keys.iter().map(|k| &v[*k]).find(|x| !x.is_null())
        };
        let usize_field = |keys: &[&str]| -> Result<usize> {
            get(keys)
                .and_then(Value::as_u64)
                .map(|x| x as usize)
                .ok_or_else(|| {
                    Error::Model(format!(
                        "config.json: missing integer field {}",
                        keys.join(" / ")
                    ))
                })
        };
        let n_layers = usize_field(&["num_hidden_layers", "n_layer"])?;
        let d_model = usize_field(&["hidden_size", "n_embd"])?;
        let n_heads = usize_field(&["num_attention_heads", "n_head"])?;
        let n_kv_heads = get(&["num_key_value_heads"])
            .and_then(Value::as_u64)
            .map(|x| x as usize)
            .unwrap_or(n_heads);
        let d_ff = match get(&["intermediate_size", "n_inner"]).and_then(Value::as_u64) {
            Some(x) => x as usize,
            None => 4 * d_model,
        };
        let head_dim = get(&["head_dim"])
            .and_then(Value::as_u64)
            .map(|x| x as usize)
            .unwrap_or(d_model / n_heads);
        let vocab_size = usize_field(&["vocab_size"])?;
        let max_positions =
            usize_field(&["max_position_embeddings", "n_positions", "n_ctx"]).unwrap_or(2048);
        let norm_eps = get(&["rms_norm_eps", "layer_norm_epsilon", "layer_norm_eps"])
            .and_then(Value::as_f64)
            .unwrap_or(1e-5);
        let rope_params = &v["rope_parameters"];
        let rope_theta = v["rope_theta"]
            .as_f64()
            .or_else(|| rope_params["rope_theta"].as_f64())
            .unwrap_or(10_000.0);
        let scaling_value = if v["rope_scaling"].is_object() {
            &v["rope_scaling"]
        } else {
            rope_params
        };
        let rope_scaling = parse_rope_scaling(scaling_value)?;
        let rotary_dim = match arch {
            Arch::Llama => head_dim,
            Arch::Gpt2 => 0,
            Arch::Gptj => get(&["rotary_dim"])
                .and_then(Value::as_u64)
                .map(|x| x as usize)
                .unwrap_or(head_dim),
        };
        let tie_embeddings = v["tie_word_embeddings"]
            .as_bool()
            .unwrap_or(arch == Arch::Gpt2);
        let attention_bias = v["attention_bias"]
            .as_bool()
            .unwrap_or(model_type == "qwen2");
        let eos_token_ids = match &v["eos_token_id"] {
            Value::Number(n) => n.as_u64().map(|x| vec![x as u32]).unwrap_or_default(),
            Value::Array(a) => a
                .iter()
                .filter_map(|x| x.as_u64().map(|x| x as u32))
                .collect(),
            _ => vec![],
        };
        let cfg = ModelConfig {
            arch,
            n_layers,
            d_model,
            d_ff,
            n_heads,
            n_kv_heads,
            head_dim,
            vocab_size,
            max_positions,
            norm_eps,
            rope_theta,
            rope_scaling,
            rotary_dim,
            tie_embeddings,
            attention_bias,
            bos_token_id: v["bos_token_id"].as_u64().map(|x| x as u32),
            eos_token_ids,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks the invariants the runtime relies on, so a bad config fails at load, not mid-forward.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Model(format!("invalid config: {m}")));
        if self.n_layers == 0 || self.d_model == 0 || self.d_ff == 0 || self.vocab_size == 0 {
            return bad("zero-sized dimension".into());
        }
        if self.n_heads == 0
            || self.n_kv_heads == 0
            || !self.n_heads.is_multiple_of(self.n_kv_heads)
        {
            return bad(format!(
                "{} attention heads are not a multiple of {} key/value heads",
                self.n_heads, self.n_kv_heads
            ));
        }
        if !self.rotary_dim.is_multiple_of(2) || self.rotary_dim > self.head_dim {
            return bad(format!(
                "rotary dim {} must be even and at most the head dim {}",
                self.rotary_dim, self.head_dim
            ));
        }
        Ok(())
    }
}

fn parse_rope_scaling(v: &Value) -> Result<Option<RopeScaling>> {
    let kind = v["rope_type"].as_str().or_else(|| v["type"].as_str());
    let factor = v["factor"].as_f64();
    Ok(match (kind, factor) {
        (Some("llama3"), Some(factor)) => Some(RopeScaling::Llama3 {
            factor,
            low_freq_factor: v["low_freq_factor"].as_f64().unwrap_or(1.0),
            high_freq_factor: v["high_freq_factor"].as_f64().unwrap_or(4.0),
            original_max_position_embeddings: v["original_max_position_embeddings"]
                .as_u64()
                .unwrap_or(8192) as usize,
        }),
        (Some("linear"), Some(factor)) => Some(RopeScaling::Linear { factor }),
        (None | Some("default"), _) => None,
        (Some(other), _) => {
            return Err(Error::Model(format!(
                "config.json: unsupported rope scaling type {other:?} (supported: linear, llama3)"
            )))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_llama_with_rope_parameters() {
        let v: Value = serde_json::from_str(
            r#"{"model_type":"llama","num_hidden_layers":2,"hidden_size":64,"intermediate_size":96,
            "num_attention_heads":4,"num_key_value_heads":2,"head_dim":16,"vocab_size":512,
            "max_position_embeddings":64,"rms_norm_eps":1e-6,
            "rope_parameters":{"rope_theta":10000.0,"rope_type":"default"},"tie_word_embeddings":false}"#,
        )
        .unwrap();
        let c = ModelConfig::from_hf_json(&v).unwrap();
        assert_eq!(c.arch, Arch::Llama);
        assert_eq!(
            (c.n_heads, c.n_kv_heads, c.head_dim, c.rotary_dim),
            (4, 2, 16, 16)
        );
        assert_eq!(c.rope_theta, 10000.0);
        assert!(c.rope_scaling.is_none());
        assert!(!c.tie_embeddings);
    }

    #[test]
    fn rejects_unknown_model_type_and_bad_heads() {
        let v: Value = serde_json::from_str(r#"{"model_type":"bert"}"#).unwrap();
        let e = ModelConfig::from_hf_json(&v).unwrap_err().to_string();
        assert!(e.contains("bert"), "{e}");
        let v: Value = serde_json::from_str(
            r#"{"model_type":"llama","num_hidden_layers":2,"hidden_size":64,"num_attention_heads":4,
            "num_key_value_heads":3,"vocab_size":10}"#,
        )
        .unwrap();
        assert!(ModelConfig::from_hf_json(&v).is_err());
    }
}
