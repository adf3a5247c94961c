//! Llama family (Llama-2/3, SmolLM2, Mistral, Qwen2, Qwen3): pre-norm RMSNorm blocks, rotary
//! attention with grouped-query heads, SwiGLU MLP. Edited matrix: `model.layers.{l}.mlp.down_proj`.
//!
//! ```text
//! h   = x + W_o · Attn(RoPE(N_q(W_q n)), RoPE(N_k(W_k n)), W_v n),   n = RMSNorm₁(x)
//! out = h + W_down · (SiLU(W_gate m) ⊙ W_up m),                     m = RMSNorm₂(h)
//! ```
//!
//! The variants differ only where the config says: Qwen2 adds q/k/v biases, Qwen3 per-head
//! RMSNorms `N_q`, `N_k` (identity elsewhere) and an explicit head dim, Mistral a sliding window.

use candle_core::Tensor;

use super::block::{Attention, Block, Mlp, MlpInput};
use super::config::{Arch, ModelConfig};
use super::layers::{Linear, Norm, RmsNorm};
use super::load::{Parts, WeightSource};
use super::Model;
use crate::error::Result;

pub(crate) fn rms(src: &mut dyn WeightSource, name: &str, eps: f64) -> Result<Norm> {
    Ok(Norm::Rms(RmsNorm::new(src.get(name)?, eps)))
}

pub(crate) fn linear(src: &mut dyn WeightSource, prefix: &str, bias: bool) -> Result<Linear> {
    let weight = src.get(&format!("{prefix}.weight"))?;
    let bias = if bias {
        Some(src.get(&format!("{prefix}.bias"))?)
    } else {
        None
    };
    Ok(Linear::new(weight, bias))
}

/// The four attention projections under `{p}.self_attn`.
pub(crate) fn attention_projections(
    src: &mut dyn WeightSource,
    p: &str,
    cfg: &ModelConfig,
) -> Result<[Linear; 4]> {
    let b = cfg.attention_bias;
    Ok([
        linear(src, &format!("{p}.self_attn.q_proj"), b)?,
        linear(src, &format!("{p}.self_attn.k_proj"), b)?,
        linear(src, &format!("{p}.self_attn.v_proj"), b)?,
        // Llama's and Qwen3's `attention_bias` also put a bias on o_proj; Qwen2's stop at q/k/v.
        linear(
            src,
            &format!("{p}.self_attn.o_proj"),
            b && matches!(cfg.arch, Arch::Llama | Arch::Qwen3),
        )?,
    ])
}

/// The gated MLP under `{p}.mlp`.
pub(crate) fn gated_mlp(src: &mut dyn WeightSource, p: &str, cfg: &ModelConfig) -> Result<Mlp> {
    let b = cfg.mlp_bias;
    Ok(Mlp::Gated {
        gate: linear(src, &format!("{p}.mlp.gate_proj"), b)?,
        up: linear(src, &format!("{p}.mlp.up_proj"), b)?,
        down: linear(src, &format!("{p}.mlp.down_proj"), b)?,
        act: cfg.activation,
    })
}

pub(crate) fn lm_head(
    src: &mut dyn WeightSource,
    cfg: &ModelConfig,
    wte: &Tensor,
) -> Result<Linear> {
    Ok(if cfg.tie_embeddings {
        Linear::new(wte.clone(), None)
    } else {
        Linear::new(src.get("lm_head.weight")?, None)
    })
}

pub(crate) fn build(cfg: &ModelConfig, src: &mut dyn WeightSource) -> Result<Parts> {
    let wte = src.get("model.embed_tokens.weight")?;
    let eps = cfg.norm_eps;
    let mut blocks = Vec::with_capacity(cfg.n_layers);
    for l in 0..cfg.n_layers {
        let p = format!("model.layers.{l}");
        let qk_norm = if cfg.arch == Arch::Qwen3 {
            Some((
                rms(src, &format!("{p}.self_attn.q_norm.weight"), eps)?,
                rms(src, &format!("{p}.self_attn.k_norm.weight"), eps)?,
            ))
        } else {
            None
        };
        let projections = attention_projections(src, &p, cfg)?;
        blocks.push(Block {
            attn_norm: rms(src, &format!("{p}.input_layernorm.weight"), eps)?,
            attn: Attention::new(cfg, l, projections, qk_norm),
            attn_post_norm: None,
            mlp_input: MlpInput::Sequential(rms(
                src,
                &format!("{p}.post_attention_layernorm.weight"),
                eps,
            )?),
            mlp: gated_mlp(src, &p, cfg)?,
            mlp_post_norm: None,
        });
    }
    let final_norm = rms(src, "model.norm.weight", eps)?;
    let lm_head = lm_head(src, cfg, &wte)?;
    Ok(Parts {
        wte,
        wpe: None,
        blocks,
        final_norm,
        lm_head,
    })
}

/// Named tensors for export, in Hugging Face names.
pub(crate) struct Named(pub Vec<(String, Tensor)>);

impl Named {
    pub fn linear(&mut self, name: &str, lin: &Linear) {
        self.0.push((format!("{name}.weight"), lin.weight.clone()));
        if let Some(bias) = &lin.bias {
            self.0.push((format!("{name}.bias"), bias.clone()));
        }
    }

    pub fn norm(&mut self, name: &str, norm: &Norm) {
        match norm {
            Norm::Rms(n) => self.0.push((format!("{name}.weight"), n.weight.clone())),
            Norm::Layer(n) => {
                self.0.push((format!("{name}.weight"), n.weight.clone()));
                self.0.push((format!("{name}.bias"), n.bias.clone()));
            }
        }
    }

    /// `{p}.self_attn.*` and `{p}.mlp.*` of a Llama-style block.
    pub fn attention_and_mlp(&mut self, p: &str, b: &Block) {
        self.linear(&format!("{p}.self_attn.q_proj"), &b.attn.q);
        self.linear(&format!("{p}.self_attn.k_proj"), &b.attn.k);
        self.linear(&format!("{p}.self_attn.v_proj"), &b.attn.v);
        self.linear(&format!("{p}.self_attn.o_proj"), &b.attn.o);
        if let Some((q_norm, k_norm)) = &b.attn.qk_norm {
            self.norm(&format!("{p}.self_attn.q_norm"), q_norm);
            self.norm(&format!("{p}.self_attn.k_norm"), k_norm);
        }
        if let Mlp::Gated { gate, up, down, .. } = &b.mlp {
            self.linear(&format!("{p}.mlp.gate_proj"), gate);
            self.linear(&format!("{p}.mlp.up_proj"), up);
            self.linear(&format!("{p}.mlp.down_proj"), down);
        }
    }
}

/// Hugging Face tensor names and values of a Llama-family model (for export).
pub(crate) fn hf_tensors(parts: &Model, cfg: &ModelConfig) -> Vec<(String, Tensor)> {
    let mut out = Named(vec![(
        "model.embed_tokens.weight".to_string(),
        parts.wte.clone(),
    )]);
    for (l, b) in parts.blocks.iter().enumerate() {
        let p = format!("model.layers.{l}");
        out.attention_and_mlp(&p, b);
        out.norm(&format!("{p}.input_layernorm"), &b.attn_norm);
        if let MlpInput::Sequential(n) = &b.mlp_input {
            out.norm(&format!("{p}.post_attention_layernorm"), n);
        }
    }
    out.norm("model.norm", &parts.final_norm);
    if !cfg.tie_embeddings {
        out.linear("lm_head", &parts.lm_head);
    }
    out.0
}
