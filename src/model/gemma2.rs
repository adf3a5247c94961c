//! Gemma-2: Llama-style attention and a gated MLP, wrapped in four (1 + w) RMSNorms per block,
//! with soft-capped attention scores and logits and alternating sliding-window layers.
//! Edited matrix: `model.layers.{l}.mlp.down_proj` (its output is normalized by
//! `post_feedforward_layernorm` before it joins the residual).
//!
//! ```text
//! h0  = √d · embed(t)
//! h   = x + N_pa(W_o · Attn(RoPE(W_q n), RoPE(W_k n), W_v n)),   n = N_in(x)
//! out = h + N_pf(W_down · (GELU_tanh(W_gate m) ⊙ W_up m)),      m = N_pre(h)
//! Attn scores: c_a · tanh((q·k / √query_pre_attn_scalar) / c_a);   logits: c_f · tanh(z / c_f)
//! ```

use candle_core::Tensor;

use super::block::{Attention, Block, MlpInput};
use super::config::ModelConfig;
use super::layers::{Norm, RmsGain, RmsNorm};
use super::llama::{attention_projections, gated_mlp, lm_head, Named};
use super::load::{Parts, WeightSource};
use super::Model;
use crate::error::Result;

fn norm(src: &mut dyn WeightSource, name: &str, eps: f64) -> Result<Norm> {
    Ok(Norm::Rms(RmsNorm {
        weight: src.get(&format!("{name}.weight"))?,
        eps,
        gain: RmsGain::OnePlusWeight,
    }))
}

pub(crate) fn build(cfg: &ModelConfig, src: &mut dyn WeightSource) -> Result<Parts> {
    let wte = src.get("model.embed_tokens.weight")?;
    let eps = cfg.norm_eps;
    let mut blocks = Vec::with_capacity(cfg.n_layers);
    for l in 0..cfg.n_layers {
        let p = format!("model.layers.{l}");
        let projections = attention_projections(src, &p, cfg)?;
        blocks.push(Block {
            attn_norm: norm(src, &format!("{p}.input_layernorm"), eps)?,
            attn: Attention::new(cfg, l, projections, None),
            attn_post_norm: Some(norm(src, &format!("{p}.post_attention_layernorm"), eps)?),
            mlp_input: MlpInput::Sequential(norm(
                src,
                &format!("{p}.pre_feedforward_layernorm"),
                eps,
            )?),
            mlp: gated_mlp(src, &p, cfg)?,
            mlp_post_norm: Some(norm(src, &format!("{p}.post_feedforward_layernorm"), eps)?),
        });
    }
    let final_norm = norm(src, "model.norm", eps)?;
    let lm_head = lm_head(src, cfg, &wte)?;
    Ok(Parts {
        wte,
        wpe: None,
        blocks,
        final_norm,
        lm_head,
    })
}

/// Hugging Face tensor names and values of a Gemma-2 model (for export).
pub(crate) fn hf_tensors(parts: &Model) -> Vec<(String, Tensor)> {
    let mut out = Named(vec![(
        "model.embed_tokens.weight".to_string(),
        parts.wte.clone(),
    )]);
    for (l, b) in parts.blocks.iter().enumerate() {
        let p = format!("model.layers.{l}");
        out.attention_and_mlp(&p, b);
        out.norm(&format!("{p}.input_layernorm"), &b.attn_norm);
        if let Some(n) = &b.attn_post_norm {
            out.norm(&format!("{p}.post_attention_layernorm"), n);
        }
        if let MlpInput::Sequential(n) = &b.mlp_input {
            out.norm(&format!("{p}.pre_feedforward_layernorm"), n);
        }
        if let Some(n) = &b.mlp_post_norm {
            out.norm(&format!("{p}.post_feedforward_layernorm"), n);
        }
    }
    out.norm("model.norm", &parts.final_norm);
    if !parts.config.tie_embeddings {
        out.linear("lm_head", &parts.lm_head);
    }
    out.0
}
