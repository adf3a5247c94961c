//! Architecture-independent model configuration, read from a Hugging Face `config.json` or from
//! GGUF metadata.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};

/// The block structure of a checkpoint. Families that share a structure share a variant only
/// where nothing but numbers differ; each variant knows its tensor names and its edited matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// Llama-2/3, SmolLM2 (RMSNorm, RoPE, GQA, SwiGLU).
    Llama,
    /// Mistral: Llama blocks with sliding-window attention.
    Mistral,
    /// Qwen2 / Qwen2.5: Llama blocks with q/k/v biases.
    Qwen2,
    /// Qwen3: Llama blocks with per-head RMSNorm on queries and keys and an explicit head dim.
    Qwen3,
    /// Gemma-2: scaled embeddings, (1 + w) RMSNorms before and after attention and MLP, soft-capped
    /// attention scores and logits, alternating sliding-window layers, GeGLU (tanh).
    Gemma2,
    /// GPT-NeoX / Pythia: LayerNorms, fused per-head QKV, partial rotary, parallel residual.
    #[serde(rename = "gpt_neox")]
    GptNeox,
    /// GPT-2 (learned positions, LayerNorm, GELU, Conv1D weights).
    Gpt2,
    /// GPT-J (parallel attention + MLP, partial interleaved rotary).
    Gptj,
}

/// Which published hyperparameters an architecture starts from when no preset names the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// RMSNorm + SwiGLU-style models (reference: Llama-2-7B).
    Llama,
    /// GPT-2.
    Gpt2,
    /// Parallel-block GPT models (reference: GPT-J-6B).
    Gptj,
}

impl Family {
    /// The model whose published settings the family's defaults are scaled from.
    pub fn reference_model(self) -> &'static str {
        match self {
            Family::Llama => "Llama-2-7B",
            Family::Gpt2 => "GPT-2 XL",
            Family::Gptj => "GPT-J-6B",
        }
    }
}

impl Arch {
    pub const ALL: [Arch; 8] = [
        Arch::Llama,
        Arch::Mistral,
        Arch::Qwen2,
        Arch::Qwen3,
        Arch::Gemma2,
        Arch::GptNeox,
        Arch::Gpt2,
        Arch::Gptj,
    ];

    /// The `model_type` of a Hugging Face `config.json`.
    pub fn name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Mistral => "mistral",
            Arch::Qwen2 => "qwen2",
            Arch::Qwen3 => "qwen3",
            Arch::Gemma2 => "gemma2",
            Arch::GptNeox => "gpt_neox",
            Arch::Gpt2 => "gpt2",
            Arch::Gptj => "gptj",
        }
    }

    pub fn from_model_type(model_type: &str) -> Option<Arch> {
        Arch::ALL.into_iter().find(|a| a.name() == model_type)
    }

    pub fn family(self) -> Family {
        match self {
            Arch::Llama | Arch::Mistral | Arch::Qwen2 | Arch::Qwen3 | Arch::Gemma2 => Family::Llama,
            Arch::Gpt2 => Family::Gpt2,
            Arch::Gptj | Arch::GptNeox => Family::Gptj,
        }
    }

    /// Hugging Face module name of the matrix the editors change, `{}` = layer index.
    pub fn edit_module_template(self) -> &'static str {
        match self {
            Arch::Llama | Arch::Mistral | Arch::Qwen2 | Arch::Qwen3 | Arch::Gemma2 => {
                "model.layers.{}.mlp.down_proj"
            }
            Arch::GptNeox => "gpt_neox.layers.{}.mlp.dense_4h_to_h",
            Arch::Gpt2 => "transformer.h.{}.mlp.c_proj",
            Arch::Gptj => "transformer.h.{}.mlp.fc_out",
        }
    }

    /// Whether the MLP has a gate (`down(act(gate x) ⊙ up x)`), so it has three matrices.
    pub fn gated_mlp(self) -> bool {
        self.family() == Family::Llama
    }
}

/// The MLP's nonlinearity (`hidden_act` / `hidden_activation` / `activation_function`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// `x·σ(x)` (`silu`, `swish`).
    Silu,
    /// The tanh approximation of GELU (`gelu_new`, `gelu_pytorch_tanh`).
    GeluTanh,
    /// Exact GELU with erf (`gelu`).
    GeluErf,
}

impl Activation {
    pub fn parse(name: &str) -> Option<Activation> {
        match name {
            "silu" | "swish" => Some(Activation::Silu),
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Some(Activation::GeluTanh),
            "gelu" => Some(Activation::GeluErf),
            _ => None,
        }
    }

    /// The name transformers reads back.
    pub fn hf_name(self) -> &'static str {
        match self {
            Activation::Silu => "silu",
            Activation::GeluTanh => "gelu_pytorch_tanh",
            Activation::GeluErf => "gelu",
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
    /// Number of rotated dimensions per head (GPT-J: `rotary_dim`; GPT-NeoX: `rotary_pct` of the
    /// head; Llama: head_dim; GPT-2: 0).
    pub rotary_dim: usize,
    pub tie_embeddings: bool,
    /// Biases on the q/k/v projections (Qwen2, GPT-NeoX, `attention_bias` in Llama configs).
    pub attention_bias: bool,
    /// Biases on the gate/up/down projections (`mlp_bias` in Llama configs).
    pub mlp_bias: bool,
    pub activation: Activation,
    /// The sliding attention window of each layer (`None`: full causal attention). A query at
    /// position q sees keys q−w+1 ..= q.
    pub sliding_windows: Vec<Option<usize>>,
    /// Attention scores are scaled by `query_pre_attn_scalar^-½` instead of `head_dim^-½`.
    pub query_pre_attn_scalar: Option<f64>,
    /// `c·tanh(s / c)` on attention scores before the mask (Gemma-2).
    pub attn_softcap: Option<f64>,
    /// `c·tanh(z / c)` on the final logits (Gemma-2).
    pub final_softcap: Option<f64>,
    /// Embeddings are multiplied by this (Gemma-2: `sqrt(d_model)`).
    pub embed_scale: Option<f64>,
    /// GPT-NeoX's `use_parallel_residual`: attention and MLP both read the block input.
    pub parallel_residual: bool,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
    /// The `config.json` the model was loaded from (export writes it back).
    #[serde(skip)]
    pub hf_json: Option<Value>,
}

impl ModelConfig {
    pub fn rope_style(&self) -> RopeStyle {
        match self.arch {
            Arch::Gptj => RopeStyle::Interleaved,
            _ => RopeStyle::Half,
        }
    }

    /// The factor applied to `q·k` before the softmax.
    pub fn attention_scale(&self) -> f64 {
        1.0 / self
            .query_pre_attn_scalar
            .unwrap_or(self.head_dim as f64)
            .sqrt()
    }

    /// Parameters in the model (embeddings counted once when tied).
    pub fn n_params(&self) -> usize {
        let d = self.d_model;
        let kv = self.n_kv_heads * self.head_dim;
        let attn = d * (self.n_heads * self.head_dim) * 2 + d * kv * 2;
        let mlp = if self.arch.gated_mlp() { 3 } else { 2 } * d * self.d_ff;
        let embed = self.vocab_size * d * if self.tie_embeddings { 1 } else { 2 };
        self.n_layers * (attn + mlp) + embed
    }

    /// Parses a Hugging Face `config.json`, in the transformers-4 form (`rope_theta`,
    /// `rope_scaling`, `torch_dtype`) or the transformers-5 form (`rope_parameters`, `dtype`).
    /// A field that changes the math and that d4s does not implement is refused by name.
    pub fn from_hf_json(v: &Value) -> Result<Self> {
        let model_type = v["model_type"].as_str().unwrap_or("");
        let arch = Arch::from_model_type(model_type).ok_or_else(|| {
            let names: Vec<&str> = Arch::ALL.iter().map(|a| a.name()).collect();
            Error::Model(format!(
                "config.json: unsupported model_type {model_type:?} (supported: {})",
                names.join(", ")
            ))
        })?;
        let f = Fields(v);
        refuse_unsupported(arch, &f)?;
        let n_layers = f.usize(&["num_hidden_layers", "n_layer"])?;
        let d_model = f.usize(&["hidden_size", "n_embd"])?;
        let n_heads = f.usize(&["num_attention_heads", "n_head"])?;
        let n_kv_heads = f.opt_usize(&["num_key_value_heads"]).unwrap_or(n_heads);
        let d_ff = f
            .opt_usize(&["intermediate_size", "n_inner"])
            .unwrap_or(4 * d_model);
        let head_dim = f.opt_usize(&["head_dim"]).unwrap_or(d_model / n_heads);
        let rope = &v["rope_parameters"];
        let rope_theta = f
            .f64(&["rope_theta", "rotary_emb_base"])
            .or_else(|| rope["rope_theta"].as_f64())
            .unwrap_or(10_000.0);
        let scaling_value = if v["rope_scaling"].is_object() {
            &v["rope_scaling"]
        } else {
            rope
        };
        let rotary_fraction = f
            .f64(&["partial_rotary_factor", "rotary_pct"])
            .or_else(|| rope["partial_rotary_factor"].as_f64())
            .unwrap_or(1.0);
        let rotary_dim = match arch {
            Arch::Gpt2 => 0,
            Arch::Gptj => f.opt_usize(&["rotary_dim"]).unwrap_or(head_dim),
            _ => (head_dim as f64 * rotary_fraction) as usize,
        };
        let activation_name = f
            .str(&["hidden_activation", "hidden_act", "activation_function"])
            .unwrap_or(match arch.family() {
                Family::Llama if arch != Arch::Gemma2 => "silu",
                Family::Llama => "gelu_pytorch_tanh",
                Family::Gpt2 | Family::Gptj => "gelu_new",
            });
        let activation = Activation::parse(activation_name).ok_or_else(|| {
            Error::Model(format!(
                "config.json: unsupported activation {activation_name:?} \
                 (supported: silu, gelu, gelu_new, gelu_pytorch_tanh)"
            ))
        })?;
        let tie_embeddings = v["tie_word_embeddings"]
            .as_bool()
            .unwrap_or(matches!(arch, Arch::Gpt2 | Arch::Gemma2));
        // Mistral's projections never have biases, whatever the field says.
        let attention_bias = arch != Arch::Mistral
            && v["attention_bias"]
                .as_bool()
                .unwrap_or(matches!(arch, Arch::Qwen2 | Arch::GptNeox));
        let eos_token_ids = match &v["eos_token_id"] {
            Value::Number(n) => n.as_u64().map(|x| vec![x as u32]).unwrap_or_default(),
            Value::Array(a) => a
                .iter()
                .filter_map(|x| x.as_u64().map(|x| x as u32))
                .collect(),
            _ => vec![],
        };
        let gemma = arch == Arch::Gemma2;
        let cfg = ModelConfig {
            arch,
            n_layers,
            d_model,
            d_ff,
            n_heads,
            n_kv_heads,
            head_dim,
            vocab_size: f.usize(&["vocab_size"])?,
            max_positions: f
                .usize(&["max_position_embeddings", "n_positions", "n_ctx"])
                .unwrap_or(2048),
            norm_eps: f
                .f64(&["rms_norm_eps", "layer_norm_epsilon", "layer_norm_eps"])
                .unwrap_or(1e-5),
            rope_theta,
            rope_scaling: parse_rope_scaling(scaling_value)?,
            rotary_dim,
            tie_embeddings,
            attention_bias,
            mlp_bias: v["mlp_bias"].as_bool().unwrap_or(false),
            activation,
            sliding_windows: sliding_windows(arch, &f, n_layers)?,
            query_pre_attn_scalar: f.f64(&["query_pre_attn_scalar"]).filter(|_| gemma),
            attn_softcap: f.f64(&["attn_logit_softcapping"]).filter(|_| gemma),
            final_softcap: f.f64(&["final_logit_softcapping"]).filter(|_| gemma),
            embed_scale: gemma.then(|| (d_model as f64).sqrt()),
            parallel_residual: match arch {
                Arch::Gptj => true,
                Arch::GptNeox => v["use_parallel_residual"].as_bool().unwrap_or(true),
                _ => false,
            },
            bos_token_id: v["bos_token_id"].as_u64().map(|x| x as u32),
            eos_token_ids,
            hf_json: Some(v.clone()),
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks the invariants the runtime relies on, so a bad config fails at load, not mid-forward.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Model(format!("invalid config: {m}")));
        if self.n_layers == 0
            || self.d_model == 0
            || self.d_ff == 0
            || self.vocab_size == 0
            || self.head_dim == 0
        {
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
        if self.sliding_windows.len() != self.n_layers {
            return bad(format!(
                "{} sliding-window entries for {} layers",
                self.sliding_windows.len(),
                self.n_layers
            ));
        }
        if self.sliding_windows.contains(&Some(0)) {
            return bad("a sliding window of 0 tokens".into());
        }
        let positive = |x: Option<f64>| x.is_none_or(|x| x.is_finite() && x > 0.0);
        if !positive(self.attn_softcap)
            || !positive(self.final_softcap)
            || !positive(self.query_pre_attn_scalar)
            || !positive(self.embed_scale)
        {
            return bad("soft-caps, query_pre_attn_scalar and embedding scale must be > 0".into());
        }
        Ok(())
    }
}

/// Typed reads of `config.json` fields, trying each historical name in turn.
struct Fields<'a>(&'a Value);

impl Fields<'_> {
    fn get(&self, keys: &[&str]) -> Option<&Value> {
        keys.iter().map(|k| &self.0[*k]).find(|x| !x.is_null())
    }

    fn opt_usize(&self, keys: &[&str]) -> Option<usize> {
        self.get(keys).and_then(Value::as_u64).map(|x| x as usize)
    }

    fn usize(&self, keys: &[&str]) -> Result<usize> {
        self.opt_usize(keys).ok_or_else(|| {
            Error::Model(format!(
                "config.json: missing integer field {}",
                keys.join(" / ")
            ))
        })
    }

    fn f64(&self, keys: &[&str]) -> Option<f64> {
        self.get(keys).and_then(Value::as_f64)
    }

    fn str(&self, keys: &[&str]) -> Option<&str> {
        self.get(keys).and_then(Value::as_str)
    }

    fn flag(&self, key: &str) -> bool {
        self.0[key].as_bool().unwrap_or(false)
    }
}

/// Fields that would make the checkpoint compute something d4s does not: refused by name, so
/// nobody edits a silently different model.
fn refuse_unsupported(arch: Arch, f: &Fields) -> Result<()> {
    let refuse = |field: &str, why: &str| {
        Err(Error::Model(format!(
            "config.json: `{field}` is not supported by d4s ({why})"
        )))
    };
    if f.get(&["quantization_config"]).is_some() {
        return refuse(
            "quantization_config",
            "quantized checkpoints (GPTQ, AWQ, bitsandbytes) cannot be edited; use the \
             full-precision weights",
        );
    }
    if f.flag("use_bidirectional_attention") {
        return refuse(
            "use_bidirectional_attention",
            "only causal attention is implemented",
        );
    }
    if f.flag("use_qk_norm") && arch != Arch::Qwen3 {
        return refuse(
            "use_qk_norm",
            "query/key norms are implemented for Qwen3 only",
        );
    }
    if arch == Arch::Gpt2 {
        if f.flag("scale_attn_by_inverse_layer_idx") {
            return refuse("scale_attn_by_inverse_layer_idx", "not implemented");
        }
        if f.0["scale_attn_weights"].as_bool() == Some(false) {
            return refuse(
                "scale_attn_weights",
                "unscaled attention is not implemented",
            );
        }
    }
    let rope = &f.0["rope_parameters"];
    if rope.get("full_attention").is_some() || rope.get("sliding_attention").is_some() {
        return refuse(
            "rope_parameters",
            "per-layer-type RoPE settings (Gemma-3 style) are not implemented",
        );
    }
    for field in ["logit_scale", "embedding_multiplier", "residual_multiplier"] {
        if f.f64(&[field]).is_some_and(|x| x != 1.0) {
            return refuse(field, "this scaling is not implemented");
        }
    }
    Ok(())
}

/// The sliding window of each layer: `layer_types` when the config lists them, else each
/// family's own rule (Mistral: every layer; Qwen2/3 with `use_sliding_window`: layers from
/// `max_window_layers` on; Gemma-2: even layers).
fn sliding_windows(arch: Arch, f: &Fields, n_layers: usize) -> Result<Vec<Option<usize>>> {
    let window = f.opt_usize(&["sliding_window"]);
    if let Some(types) = f.get(&["layer_types"]).and_then(Value::as_array) {
        if types.len() != n_layers {
            return Err(Error::Model(format!(
                "config.json: `layer_types` lists {} layers, the model has {n_layers}",
                types.len()
            )));
        }
        return types
            .iter()
            .map(|t| match t.as_str() {
                Some("full_attention") => Ok(None),
                Some("sliding_attention") => window.map(Some).ok_or_else(|| {
                    Error::Model(
                        "config.json: `layer_types` has sliding layers but `sliding_window` is not set"
                            .into(),
                    )
                }),
                other => Err(Error::Model(format!(
                    "config.json: `layer_types` entry {other:?} is not supported \
                     (full_attention, sliding_attention)"
                ))),
            })
            .collect();
    }
    let layer_window = |l: usize| match arch {
        Arch::Mistral => window,
        Arch::Qwen2 | Arch::Qwen3 if f.flag("use_sliding_window") => {
            let first = f.opt_usize(&["max_window_layers"]).unwrap_or(0);
            window.filter(|_| l >= first)
        }
        Arch::Gemma2 => window.filter(|_| l.is_multiple_of(2)),
        _ => None,
    };
    Ok((0..n_layers).map(layer_window).collect())
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

    fn parse(text: &str) -> Result<ModelConfig> {
        ModelConfig::from_hf_json(&serde_json::from_str(text).unwrap())
    }

    const BASE: &str = r#""num_hidden_layers":4,"hidden_size":64,"num_attention_heads":4,
        "num_key_value_heads":2,"intermediate_size":96,"vocab_size":512"#;

    #[test]
    fn reads_transformers_4_and_5_forms_alike() {
        let t4 = parse(&format!(
            r#"{{"model_type":"mistral",{BASE},"rope_theta":1e6,"sliding_window":4096,
            "torch_dtype":"bfloat16"}}"#
        ))
        .unwrap();
        let t5 = parse(&format!(
            r#"{{"model_type":"mistral",{BASE},"rope_parameters":{{"rope_theta":1e6,
            "rope_type":"default"}},"sliding_window":4096,"dtype":"bfloat16"}}"#
        ))
        .unwrap();
        assert_eq!(t4.rope_theta, 1e6);
        assert_eq!(t4.sliding_windows, vec![Some(4096); 4]);
        let (mut a, mut b) = (t4, t5);
        a.hf_json = None;
        b.hf_json = None;
        assert_eq!(a, b);
    }

    #[test]
    fn neox_partial_rotary_in_both_forms() {
        let t4 = parse(&format!(
            r#"{{"model_type":"gpt_neox",{BASE},"rotary_pct":0.25,"rotary_emb_base":10000,
            "hidden_act":"gelu","use_parallel_residual":true}}"#
        ))
        .unwrap();
        assert_eq!((t4.head_dim, t4.rotary_dim), (16, 4));
        assert_eq!(t4.activation, Activation::GeluErf);
        assert!(t4.parallel_residual && t4.attention_bias);
        let t5 = parse(&format!(
            r#"{{"model_type":"gpt_neox",{BASE},"rope_parameters":{{"partial_rotary_factor":0.25,
            "rope_theta":10000,"rope_type":"default"}},"hidden_act":"gelu"}}"#
        ))
        .unwrap();
        assert_eq!(t5.rotary_dim, 4);
    }

    #[test]
    fn gemma2_windows_alternate_and_caps_are_read() {
        let c = parse(&format!(
            r#"{{"model_type":"gemma2",{BASE},"head_dim":16,"sliding_window":8,
            "query_pre_attn_scalar":24,"attn_logit_softcapping":50.0,
            "final_logit_softcapping":30.0}}"#
        ))
        .unwrap();
        assert_eq!(c.sliding_windows, vec![Some(8), None, Some(8), None]);
        assert_eq!((c.attn_softcap, c.final_softcap), (Some(50.0), Some(30.0)));
        assert_eq!(c.embed_scale, Some(8.0));
        assert!((c.attention_scale() - 24f64.powf(-0.5)).abs() < 1e-15);
        assert_eq!(c.activation, Activation::GeluTanh);
        assert!(c.tie_embeddings);
    }

    #[test]
    fn qwen_window_only_with_use_sliding_window() {
        let off = parse(&format!(
            r#"{{"model_type":"qwen2",{BASE},"sliding_window":32,"max_window_layers":2,
            "use_sliding_window":false}}"#
        ))
        .unwrap();
        assert_eq!(off.sliding_windows, vec![None; 4]);
        let on = parse(&format!(
            r#"{{"model_type":"qwen2",{BASE},"sliding_window":32,"max_window_layers":2,
            "use_sliding_window":true}}"#
        ))
        .unwrap();
        assert_eq!(on.sliding_windows, vec![None, None, Some(32), Some(32)]);
    }

    #[test]
    fn math_changing_fields_are_refused_by_name() {
        for (extra, field) in [
            (
                r#""quantization_config":{"quant_method":"gptq"}"#,
                "quantization_config",
            ),
            (
                r#""use_bidirectional_attention":true"#,
                "use_bidirectional_attention",
            ),
            (
                r#""rope_scaling":{"rope_type":"yarn","factor":4.0}"#,
                "yarn",
            ),
            (r#""hidden_act":"relu2""#, "relu2"),
            (
                r#""layer_types":["full_attention","chunked_attention","full_attention","full_attention"]"#,
                "chunked_attention",
            ),
            (
                r#""rope_parameters":{"full_attention":{"rope_theta":1e6}}"#,
                "rope_parameters",
            ),
            (r#""use_qk_norm":true"#, "use_qk_norm"),
        ] {
            let e = parse(&format!(r#"{{"model_type":"llama",{BASE},{extra}}}"#))
                .unwrap_err()
                .to_string();
            assert!(e.contains(field), "{field}: {e}");
        }
    }
}
