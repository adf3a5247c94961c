//! Llama family (Llama-2/3, SmolLM2, Qwen2): pre-norm RMSNorm blocks, rotary attention with
//! grouped-query heads, SwiGLU MLP. Edited matrix: `model.layers.{l}.mlp.down_proj`.
//!
//! ```text
//! h   = x + W_o · Attn(RoPE(W_q n), RoPE(W_k n), W_v n),   n = RMSNorm₁(x)
//! out = h + W_down · (SiLU(W_gate m) ⊙ W_up m),             m = RMSNorm₂(h)
//! ```

use candle_core::Tensor;

use super::block::{Attention, Block, Mlp};
use super::config::ModelConfig;
use super::layers::{Linear, Norm, RmsNorm};
use super::load::{Parts, WeightSource};
use super::Model;
use crate::error::Result;

fn rms(src: &mut dyn WeightSource, name: &str, eps: f64) -> Result<Norm> {
    Ok(Norm::Rms(RmsNorm {
        weight: src.get(name)?,
        eps,
    }))
}

fn linear(src: &mut dyn WeightSource, prefix: &str, bias: bool) -> Result<Linear> {
    let weight = src.get(&format!("{prefix}.weight"))?;
    let bias = if bias {
        Some(src.get(&format!("{prefix}.bias"))?)
    } else {
        None
    };
    Ok(Linear::new(weight, bias))
}

pub(crate) fn build(cfg: &ModelConfig, src: &mut dyn WeightSource) -> Result<Parts> {
    let wte = src.get("model.embed_tokens.weight")?;
    let mut blocks = Vec::with_capacity(cfg.n_layers);
    for l in 0..cfg.n_layers {
        let p = format!("model.layers.{l}");
        let attn = Attention {
            q: linear(src, &format!("{p}.self_attn.q_proj"), cfg.attention_bias)?,
            k: linear(src, &format!("{p}.self_attn.k_proj"), cfg.attention_bias)?,
            v: linear(src, &format!("{p}.self_attn.v_proj"), cfg.attention_bias)?,
            o: linear(src, &format!("{p}.self_attn.o_proj"), false)?,
            n_heads: cfg.n_heads,
            n_kv_heads: cfg.n_kv_heads,
            head_dim: cfg.head_dim,
        };
        let mlp = Mlp::SwiGlu {
            gate: linear(src, &format!("{p}.mlp.gate_proj"), false)?,
            up: linear(src, &format!("{p}.mlp.up_proj"), false)?,
            down: linear(src, &format!("{p}.mlp.down_proj"), false)?,
        };
        blocks.push(Block {
            attn_norm: rms(src, &format!("{p}.input_layernorm.weight"), cfg.norm_eps)?,
            mlp_norm: Some(rms(
                src,
                &format!("{p}.post_attention_layernorm.weight"),
                cfg.norm_eps,
            )?),
            attn,
            mlp,
        });
    }
    let final_norm = rms(src, "model.norm.weight", cfg.norm_eps)?;
    let lm_head = if cfg.tie_embeddings {
        Linear::new(wte.clone(), None)
    } else {
        Linear::new(src.get("lm_head.weight")?, None)
    };
    Ok(Parts {
        wte,
        wpe: None,
        blocks,
        final_norm,
        lm_head,
    })
}

/// Hugging Face tensor names and values of a Llama model (for export).
pub(crate) fn hf_tensors(parts: &Model, cfg: &ModelConfig) -> Vec<(String, Tensor)> {
    let mut out = vec![("model.embed_tokens.weight".to_string(), parts.wte.clone())];
    for (l, b) in parts.blocks.iter().enumerate() {
        let p = format!("model.layers.{l}");
        let mut push = |name: String, lin: &Linear| {
            out.push((format!("{name}.weight"), lin.weight.clone()));
            if let Some(bias) = &lin.bias {
                out.push((format!("{name}.bias"), bias.clone()));
            }
        };
        push(format!("{p}.self_attn.q_proj"), &b.attn.q);
        push(format!("{p}.self_attn.k_proj"), &b.attn.k);
        push(format!("{p}.self_attn.v_proj"), &b.attn.v);
        push(format!("{p}.self_attn.o_proj"), &b.attn.o);
        if let Mlp::SwiGlu { gate, up, down } = &b.mlp {
            push(format!("{p}.mlp.gate_proj"), gate);
            push(format!("{p}.mlp.up_proj"), up);
            push(format!("{p}.mlp.down_proj"), down);
        }
        if let Norm::Rms(n) = &b.attn_norm {
            out.push((format!("{p}.input_layernorm.weight"), n.weight.clone()));
        }
        if let Some(Norm::Rms(n)) = &b.mlp_norm {
            out.push((
                format!("{p}.post_attention_layernorm.weight"),
                n.weight.clone(),
            ));
        }
    }
    if let Norm::Rms(n) = &parts.final_norm {
        out.push(("model.norm.weight".to_string(), n.weight.clone()));
    }
    if !cfg.tie_embeddings {
        out.push(("lm_head.weight".to_string(), parts.lm_head.weight.clone()));
    }
    out
}
