//! GPT-NeoX / Pythia: LayerNorms with bias, a fused QKV projection laid out per head, rotary
//! embeddings on the first `rotary_pct` of each head (rotate-half pairing), exact-GELU MLP and,
//! by default, the parallel residual. Edited matrix: `gpt_neox.layers.{l}.mlp.dense_4h_to_h`.
//!
//! ```text
//! parallel:    out = x + dense · Attn(qkv · LN₁(x)) + dense_4h_to_h · GELU(dense_h_to_4h · LN₂(x))
//! sequential:  h = x + dense · Attn(qkv · LN₁(x));  out = h + dense_4h_to_h · GELU(dense_h_to_4h · LN₂(h))
//! ```

use candle_core::Tensor;

use super::block::{Attention, Block, Mlp, MlpInput};
use super::config::ModelConfig;
use super::layers::{LayerNorm, Linear, Norm};
use super::llama::{linear, Named};
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

/// Splits `query_key_value` (`[H·3·hd, d]`, per head `[q; k; v]`) into three `[H·hd, d]`
/// projections.
fn split_qkv(fused: &Linear, n_heads: usize, head_dim: usize) -> Result<[Linear; 3]> {
    let d_in = fused.weight.dim(1)?;
    let w = fused.weight.reshape((n_heads, 3, head_dim, d_in))?;
    let b = fused
        .bias
        .as_ref()
        .map(|b| b.reshape((n_heads, 3, head_dim)))
        .transpose()?;
    let part = |i: usize| -> Result<Linear> {
        let weight = w
            .narrow(1, i, 1)?
            .reshape((n_heads * head_dim, d_in))?
            .contiguous()?;
        let bias = b
            .as_ref()
            .map(|b| b.narrow(1, i, 1)?.reshape(n_heads * head_dim)?.contiguous())
            .transpose()?;
        Ok(Linear::new(weight, bias))
    };
    Ok([part(0)?, part(1)?, part(2)?])
}

/// The inverse of [`split_qkv`], for export.
fn fuse_qkv(q: &Linear, k: &Linear, v: &Linear, n_heads: usize) -> Result<Linear> {
    let per_head = |t: &Tensor| -> candle_core::Result<Tensor> {
        let mut dims = vec![n_heads, 1, t.dim(0)? / n_heads];
        dims.extend_from_slice(&t.dims()[1..]);
        t.reshape(dims)
    };
    let fuse = |parts: [&Tensor; 3]| -> candle_core::Result<Tensor> {
        let cat = Tensor::cat(
            &[
                per_head(parts[0])?,
                per_head(parts[1])?,
                per_head(parts[2])?,
            ],
            1,
        )?;
        let mut dims = vec![parts[0].dim(0)? * 3];
        dims.extend_from_slice(&parts[0].dims()[1..]);
        cat.reshape(dims)
    };
    let weight = fuse([&q.weight, &k.weight, &v.weight])?;
    let bias = match (&q.bias, &k.bias, &v.bias) {
        (Some(a), Some(b), Some(c)) => Some(fuse([a, b, c])?),
        _ => None,
    };
    Ok(Linear::new(weight, bias))
}

pub(crate) fn build(cfg: &ModelConfig, src: &mut dyn WeightSource) -> Result<Parts> {
    let wte = src.get("gpt_neox.embed_in.weight")?;
    let eps = cfg.norm_eps;
    let bias = cfg.attention_bias;
    let mut blocks = Vec::with_capacity(cfg.n_layers);
    for l in 0..cfg.n_layers {
        let p = format!("gpt_neox.layers.{l}");
        let fused = linear(src, &format!("{p}.attention.query_key_value"), bias)?;
        let [q, k, v] = split_qkv(&fused, cfg.n_heads, cfg.head_dim)?;
        let o = linear(src, &format!("{p}.attention.dense"), bias)?;
        let mlp_norm = layer_norm(src, &format!("{p}.post_attention_layernorm"), eps)?;
        blocks.push(Block {
            attn_norm: layer_norm(src, &format!("{p}.input_layernorm"), eps)?,
            attn: Attention::new(cfg, l, [q, k, v, o], None),
            attn_post_norm: None,
            mlp_input: if cfg.parallel_residual {
                MlpInput::Parallel(mlp_norm)
            } else {
                MlpInput::Sequential(mlp_norm)
            },
            mlp: Mlp::Plain {
                fc_in: linear(src, &format!("{p}.mlp.dense_h_to_4h"), true)?,
                fc_out: linear(src, &format!("{p}.mlp.dense_4h_to_h"), true)?,
                act: cfg.activation,
            },
            mlp_post_norm: None,
        });
    }
    let final_norm = layer_norm(src, "gpt_neox.final_layer_norm", eps)?;
    let lm_head = if cfg.tie_embeddings {
        Linear::new(wte.clone(), None)
    } else {
        Linear::new(src.get("embed_out.weight")?, None)
    };
    Ok(Parts {
        wte,
        wpe: None,
        blocks,
        final_norm,
        lm_head,
    })
}

/// Hugging Face tensor names and values of a GPT-NeoX model (for export).
pub(crate) fn hf_tensors(parts: &Model) -> Result<Vec<(String, Tensor)>> {
    let mut out = Named(vec![(
        "gpt_neox.embed_in.weight".to_string(),
        parts.wte.clone(),
    )]);
    for (l, b) in parts.blocks.iter().enumerate() {
        let p = format!("gpt_neox.layers.{l}");
        let a = &b.attn;
        out.linear(
            &format!("{p}.attention.query_key_value"),
            &fuse_qkv(&a.q, &a.k, &a.v, a.n_heads)?,
        );
        out.linear(&format!("{p}.attention.dense"), &a.o);
        out.norm(&format!("{p}.input_layernorm"), &b.attn_norm);
        if let MlpInput::Parallel(n) | MlpInput::Sequential(n) = &b.mlp_input {
            out.norm(&format!("{p}.post_attention_layernorm"), n);
        }
        if let Mlp::Plain { fc_in, fc_out, .. } = &b.mlp {
            out.linear(&format!("{p}.mlp.dense_h_to_4h"), fc_in);
            out.linear(&format!("{p}.mlp.dense_4h_to_h"), fc_out);
        }
    }
    out.norm("gpt_neox.final_layer_norm", &parts.final_norm);
    if !parts.config.tie_embeddings {
        out.linear("embed_out", &parts.lm_head);
    }
    Ok(out.0)
}
