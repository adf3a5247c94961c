//! GPT-2 family: learned absolute positions, pre-norm LayerNorm blocks, GELU(tanh) MLP.
//! Weights are stored as Conv1D `[in, out]`; we transpose them to `[out, in]` on load (and back on
//! export). Edited matrix: `transformer.h.{l}.mlp.c_proj`.
//!
//! ```text
//! h0  = wte[t] + wpe[p]
//! h   = x + c_proj · Attn(c_attn · LN₁(x))
//! out = h + mlp.c_proj · GELU(c_fc · LN₂(h) + b)
//! ```

use candle_core::Tensor;

use super::block::{Attention, Block, Mlp, MlpInput};
use super::config::ModelConfig;
use super::layers::{LayerNorm, Linear, Norm};
use super::load::{Parts, WeightSource};
use super::Model;
use crate::error::Result;

/// Checkpoints differ on whether names start with `transformer.`; try both.
fn get(src: &mut dyn WeightSource, name: &str) -> Result<Tensor> {
    let full = format!("transformer.{name}");
    if src.has(&full) {
        src.get(&full)
    } else {
        src.get(name)
    }
}

fn layer_norm(src: &mut dyn WeightSource, prefix: &str, eps: f64) -> Result<Norm> {
    Ok(Norm::Layer(LayerNorm {
        weight: get(src, &format!("{prefix}.weight"))?,
        bias: get(src, &format!("{prefix}.bias"))?,
        eps,
    }))
}

/// A Conv1D (`[in, out]`) as a `Linear` (`[out, in]`).
fn conv1d(src: &mut dyn WeightSource, prefix: &str) -> Result<Linear> {
    let w = get(src, &format!("{prefix}.weight"))?.t()?.contiguous()?;
    let b = get(src, &format!("{prefix}.bias"))?;
    Ok(Linear::new(w, Some(b)))
}

pub(crate) fn build(cfg: &ModelConfig, src: &mut dyn WeightSource) -> Result<Parts> {
    let wte = get(src, "wte.weight")?;
    let wpe = get(src, "wpe.weight")?;
    let d = cfg.d_model;
    let mut blocks = Vec::with_capacity(cfg.n_layers);
    for l in 0..cfg.n_layers {
        let p = format!("h.{l}");
        // c_attn holds q, k and v side by side along the output dim.
        let qkv = conv1d(src, &format!("{p}.attn.c_attn"))?;
        let bias = qkv.bias.as_ref().expect("conv1d has a bias");
        let part = |i: usize| -> Result<Linear> {
            Ok(Linear::new(
                qkv.weight.narrow(0, i * d, d)?.contiguous()?,
                Some(bias.narrow(0, i * d, d)?.contiguous()?),
            ))
        };
        let projections = [
            part(0)?,
            part(1)?,
            part(2)?,
            conv1d(src, &format!("{p}.attn.c_proj"))?,
        ];
        let attn = Attention::new(cfg, l, projections, None);
        let mlp = Mlp::Plain {
            fc_in: conv1d(src, &format!("{p}.mlp.c_fc"))?,
            fc_out: conv1d(src, &format!("{p}.mlp.c_proj"))?,
            act: cfg.activation,
        };
        blocks.push(Block {
            attn_norm: layer_norm(src, &format!("{p}.ln_1"), cfg.norm_eps)?,
            attn,
            attn_post_norm: None,
            mlp_input: MlpInput::Sequential(layer_norm(src, &format!("{p}.ln_2"), cfg.norm_eps)?),
            mlp,
            mlp_post_norm: None,
        });
    }
    let final_norm = layer_norm(src, "ln_f", cfg.norm_eps)?;
    let lm_head = Linear::new(wte.clone(), None);
    Ok(Parts {
        wte,
        wpe: Some(wpe),
        blocks,
        final_norm,
        lm_head,
    })
}

fn push_ln(out: &mut Vec<(String, Tensor)>, name: &str, n: &Norm) {
    if let Norm::Layer(n) = n {
        out.push((format!("{name}.weight"), n.weight.clone()));
        out.push((format!("{name}.bias"), n.bias.clone()));
    }
}

/// Back to Conv1D layout `[in, out]`.
fn push_conv1d(out: &mut Vec<(String, Tensor)>, name: &str, lin: &Linear) -> Result<()> {
    out.push((format!("{name}.weight"), lin.weight.t()?.contiguous()?));
    if let Some(b) = &lin.bias {
        out.push((format!("{name}.bias"), b.clone()));
    }
    Ok(())
}

/// Hugging Face tensor names and values of a GPT-2 model (for export).
pub(crate) fn hf_tensors(parts: &Model) -> Result<Vec<(String, Tensor)>> {
    let mut out = vec![("transformer.wte.weight".to_string(), parts.wte.clone())];
    if let Some(wpe) = &parts.wpe {
        out.push(("transformer.wpe.weight".to_string(), wpe.clone()));
    }
    for (l, b) in parts.blocks.iter().enumerate() {
        let p = format!("transformer.h.{l}");
        let a = &b.attn;
        let fused = Linear::new(
            Tensor::cat(&[&a.q.weight, &a.k.weight, &a.v.weight], 0)?,
            match (&a.q.bias, &a.k.bias, &a.v.bias) {
                (Some(q), Some(k), Some(v)) => Some(Tensor::cat(&[q, k, v], 0)?),
                _ => None,
            },
        );
        push_conv1d(&mut out, &format!("{p}.attn.c_attn"), &fused)?;
        push_conv1d(&mut out, &format!("{p}.attn.c_proj"), &a.o)?;
        if let Mlp::Plain { fc_in, fc_out, .. } = &b.mlp {
            push_conv1d(&mut out, &format!("{p}.mlp.c_fc"), fc_in)?;
            push_conv1d(&mut out, &format!("{p}.mlp.c_proj"), fc_out)?;
        }
        push_ln(&mut out, &format!("{p}.ln_1"), &b.attn_norm);
        if let MlpInput::Sequential(n) = &b.mlp_input {
            push_ln(&mut out, &format!("{p}.ln_2"), n);
        }
    }
    push_ln(&mut out, "transformer.ln_f", &parts.final_norm);
    Ok(out)
}
