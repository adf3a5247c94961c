//! GPT-J: one LayerNorm feeds attention and the MLP in parallel; rotary embeddings on the first
//! `rotary_dim` dims of each head, pairing neighbouring dims; LM head with bias.
//! Edited matrix: `transformer.h.{l}.mlp.fc_out`.
//!
//! ```text
//! n   = LN(x)
//! out = x + out_proj · Attn(RoPE(q n), RoPE(k n), v n) + fc_out · GELU(fc_in n + b) + b_out
//! ```

use candle_core::Tensor;

use super::block::{Attention, Block, Mlp, MlpInput};
use super::config::ModelConfig;
use super::layers::{LayerNorm, Linear, Norm};
use super::load::{Parts, WeightSource};
use super::Model;
use crate::error::Result;

fn layer_norm(src: &mut dyn WeightSource, prefix: &str, eps: f64) -> Result<Norm> {
    Ok(Norm::Layer(LayerNorm {
        weight: src.get(&format!("{prefix}.weight"))?,
        bias: src.get(&format!("{prefix}.bias"))?,
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
    let wte = src.get("transformer.wte.weight")?;
    let mut blocks = Vec::with_capacity(cfg.n_layers);
    for l in 0..cfg.n_layers {
        let p = format!("transformer.h.{l}");
        let projections = [
            linear(src, &format!("{p}.attn.q_proj"), false)?,
            linear(src, &format!("{p}.attn.k_proj"), false)?,
            linear(src, &format!("{p}.attn.v_proj"), false)?,
            linear(src, &format!("{p}.attn.out_proj"), false)?,
        ];
        let attn = Attention::new(cfg, l, projections, None);
        let mlp = Mlp::Plain {
            fc_in: linear(src, &format!("{p}.mlp.fc_in"), true)?,
            fc_out: linear(src, &format!("{p}.mlp.fc_out"), true)?,
            act: cfg.activation,
        };
        blocks.push(Block {
            attn_norm: layer_norm(src, &format!("{p}.ln_1"), cfg.norm_eps)?,
            attn,
            attn_post_norm: None,
            mlp_input: MlpInput::SharedNorm,
            mlp,
            mlp_post_norm: None,
        });
    }
    let final_norm = layer_norm(src, "transformer.ln_f", cfg.norm_eps)?;
    let lm_head = linear(src, "lm_head", true)?;
    Ok(Parts {
        wte,
        wpe: None,
        blocks,
        final_norm,
        lm_head,
    })
}

/// Hugging Face tensor names and values of a GPT-J model (for export).
pub(crate) fn hf_tensors(parts: &Model) -> Vec<(String, Tensor)> {
    let mut out = vec![("transformer.wte.weight".to_string(), parts.wte.clone())];
    let push_lin = |out: &mut Vec<(String, Tensor)>, name: String, lin: &Linear| {
        out.push((format!("{name}.weight"), lin.weight.clone()));
        if let Some(b) = &lin.bias {
            out.push((format!("{name}.bias"), b.clone()));
        }
    };
    let push_ln = |out: &mut Vec<(String, Tensor)>, name: String, n: &Norm| {
        if let Norm::Layer(n) = n {
            out.push((format!("{name}.weight"), n.weight.clone()));
            out.push((format!("{name}.bias"), n.bias.clone()));
        }
    };
    for (l, b) in parts.blocks.iter().enumerate() {
        let p = format!("transformer.h.{l}");
        push_lin(&mut out, format!("{p}.attn.q_proj"), &b.attn.q);
        push_lin(&mut out, format!("{p}.attn.k_proj"), &b.attn.k);
        push_lin(&mut out, format!("{p}.attn.v_proj"), &b.attn.v);
        push_lin(&mut out, format!("{p}.attn.out_proj"), &b.attn.o);
        if let Mlp::Plain { fc_in, fc_out, .. } = &b.mlp {
            push_lin(&mut out, format!("{p}.mlp.fc_in"), fc_in);
            push_lin(&mut out, format!("{p}.mlp.fc_out"), fc_out);
        }
        push_ln(&mut out, format!("{p}.ln_1"), &b.attn_norm);
    }
    push_ln(&mut out, "transformer.ln_f".into(), &parts.final_norm);
    push_lin(&mut out, "lm_head".into(), &parts.lm_head);
    out
}
