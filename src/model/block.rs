//! One transformer block, shared by every architecture:
//!
//! ```text
//! sequential (Llama, GPT-2, …):  h = x + P_a(Attn(N₁(x)) [+ δ_attn]);   out = h + P_m(W_out·k [+ δ_mlp]) [+ δ_block],  k = φ(N₂(h))
//! parallel   (GPT-J, GPT-NeoX):  out = x + Attn(N₁(x)) [+ δ_attn] + W_out·k [+ δ_mlp] [+ δ_block],      k = φ(N₂(x)) (GPT-J: N₂ = N₁)
//! ```
//!
//! `P_a`, `P_m` are Gemma-2's post-attention and post-feedforward norms (identity elsewhere).
//! `k` is the *key* of the knowledge-editing literature (the input of the edited matrix `W_out`),
//! and `W_out·k` its *value*. The hooks an editor needs live here: capture `k`, the attention and
//! MLP outputs; add a (differentiable) delta to either output or to the block output; let an
//! adaptor (GRACE) rewrite the MLP output from its key.

use std::fmt::Debug;

use candle_core::{DType, Tensor, D};

use super::config::{Activation, ModelConfig};
use super::layers::{attention, Linear, Norm, Rope, ScoreRule};

type R<T> = candle_core::Result<T>;

/// Self-attention with optional rotary embeddings and grouped-query heads.
#[derive(Debug, Clone)]
pub struct Attention {
    pub q: Linear,
    pub k: Linear,
    pub v: Linear,
    pub o: Linear,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    /// Per-head RMSNorm of queries and keys before RoPE (Qwen3).
    pub qk_norm: Option<(Norm, Norm)>,
    pub rule: ScoreRule,
    /// Sliding window: a query sees only the last `w` keys (itself included).
    pub window: Option<usize>,
}

/// The MLP up to (but not including) its output matrix, plus that matrix.
#[derive(Debug, Clone)]
pub enum Mlp {
    /// `k = φ(W_gate x) ⊙ (W_up x)` (Llama, Qwen, Mistral: SiLU; Gemma-2: GELU-tanh).
    Gated {
        gate: Linear,
        up: Linear,
        down: Linear,
        act: Activation,
    },
    /// `k = φ(W_in x + b)` (GPT-2, GPT-J, GPT-NeoX).
    Plain {
        fc_in: Linear,
        fc_out: Linear,
        act: Activation,
    },
}

impl Mlp {
    pub fn cast(&mut self, dt: DType) -> R<()> {
        match self {
            Mlp::Gated { gate, up, down, .. } => {
                *gate = gate.cast(dt)?;
                *up = up.cast(dt)?;
                *down = down.cast(dt)?;
            }
            Mlp::Plain { fc_in, fc_out, .. } => {
                *fc_in = fc_in.cast(dt)?;
                *fc_out = fc_out.cast(dt)?;
            }
        }
        Ok(())
    }

    pub fn key(&self, x: &Tensor) -> R<Tensor> {
        match self {
            Mlp::Gated { gate, up, act, .. } => act.apply(&gate.forward(x)?)? * up.forward(x)?,
            Mlp::Plain { fc_in, act, .. } => act.apply(&fc_in.forward(x)?),
        }
    }

    /// The edited matrix `W_out` (`[d_model, d_ff]`).
    pub fn out(&self) -> &Linear {
        match self {
            Mlp::Gated { down, .. } => down,
            Mlp::Plain { fc_out, .. } => fc_out,
        }
    }

    pub fn out_mut(&mut self) -> &mut Linear {
        match self {
            Mlp::Gated { down, .. } => down,
            Mlp::Plain { fc_out, .. } => fc_out,
        }
    }
}

/// Rewrites the MLP output from its key, position by position (GRACE's codebook).
pub trait MlpAdaptor: Send + Sync + Debug {
    /// `key: [B, S, d_ff]`, `out: [B, S, d_model]` → the output to use instead.
    fn adapt(&self, key: &Tensor, out: &Tensor) -> R<Tensor>;
}

/// What one block needs besides its input.
pub struct LayerIo<'a> {
    /// Rotary tables for the positions being computed, `[B, S, r/2]` each.
    pub rope: Option<(&'a Rope, &'a Tensor, &'a Tensor)>,
    /// Additive attention mask `[B, 1, S, P + S]`, for this block's window.
    pub mask: &'a Tensor,
    /// Cached keys/values of earlier positions, `[B, Hkv, P, hd]` each.
    pub past: Option<(&'a Tensor, &'a Tensor)>,
    pub attn_delta: Option<&'a Tensor>,
    /// Added to the edited matrix's output (before a post-feedforward norm).
    pub mlp_delta: Option<&'a Tensor>,
    /// Added to the residual stream after the block.
    pub block_delta: Option<&'a Tensor>,
    pub adaptor: Option<&'a dyn MlpAdaptor>,
    pub force_composed: bool,
    pub want_key: bool,
    pub want_attn_out: bool,
    pub want_mlp_out: bool,
}

pub struct LayerOut {
    pub hidden: Tensor,
    /// Keys (rotated) and values of the positions computed in this call, `[B, Hkv, S, hd]`.
    pub k: Tensor,
    pub v: Tensor,
    pub key: Option<Tensor>,
    pub attn_out: Option<Tensor>,
    pub mlp_out: Option<Tensor>,
}

/// What the MLP reads.
#[derive(Debug, Clone)]
pub enum MlpInput {
    /// Its own norm of the residual after attention (sequential blocks).
    Sequential(Norm),
    /// Its own norm of the block input (GPT-NeoX's parallel residual).
    Parallel(Norm),
    /// The attention's normalized input (GPT-J).
    SharedNorm,
}

#[derive(Debug, Clone)]
pub struct Block {
    pub attn_norm: Norm,
    pub attn: Attention,
    /// Gemma-2's norm of the attention output before the residual add.
    pub attn_post_norm: Option<Norm>,
    pub mlp_input: MlpInput,
    pub mlp: Mlp,
    /// Gemma-2's norm of the MLP output before the residual add.
    pub mlp_post_norm: Option<Norm>,
}

impl Attention {
    /// Layer `layer`'s attention from its four projections, with the config's heads, score rule
    /// and window.
    pub fn new(
        cfg: &ModelConfig,
        layer: usize,
        [q, k, v, o]: [Linear; 4],
        qk_norm: Option<(Norm, Norm)>,
    ) -> Self {
        Self {
            q,
            k,
            v,
            o,
            n_heads: cfg.n_heads,
            n_kv_heads: cfg.n_kv_heads,
            head_dim: cfg.head_dim,
            qk_norm,
            rule: ScoreRule {
                scale: cfg.attention_scale(),
                softcap: cfg.attn_softcap,
            },
            window: cfg.sliding_windows.get(layer).copied().flatten(),
        }
    }

    fn heads(x: &Tensor, n: usize, hd: usize) -> R<Tensor> {
        let (b, s, _) = x.dims3()?;
        x.reshape((b, s, n, hd))?.transpose(1, 2)
    }

    /// Returns the attention output and this call's (rotated) keys and values.
    pub fn forward(&self, x: &Tensor, io: &LayerIo) -> R<(Tensor, Tensor, Tensor)> {
        let (b, s, _) = x.dims3()?;
        let fc = io.force_composed;
        let mut q = Self::heads(&self.q.forward(x)?, self.n_heads, self.head_dim)?;
        let mut k = Self::heads(&self.k.forward(x)?, self.n_kv_heads, self.head_dim)?;
        let v = Self::heads(&self.v.forward(x)?, self.n_kv_heads, self.head_dim)?.contiguous()?;
        if let Some((q_norm, k_norm)) = &self.qk_norm {
            q = q_norm.forward(&q, fc)?;
            k = k_norm.forward(&k, fc)?;
        }
        if let Some((rope, cos, sin)) = io.rope {
            q = rope.apply(&q, cos, sin, fc)?;
            k = rope.apply(&k, cos, sin, fc)?;
        }
        let k = k.contiguous()?;
        let (k_all, v_all) = match io.past {
            Some((pk, pv)) => (Tensor::cat(&[pk, &k], 2)?, Tensor::cat(&[pv, &v], 2)?),
            None => (k.clone(), v.clone()),
        };
        let y = attention(&q, &k_all, &v_all, io.mask, self.rule, fc)?;
        let y = y
            .transpose(1, 2)?
            .reshape((b, s, self.n_heads * self.head_dim))?;
        Ok((self.o.forward(&y)?, k, v))
    }
}

fn add(x: Tensor, delta: Option<&Tensor>) -> R<Tensor> {
    match delta {
        Some(d) => x + d,
        None => Ok(x),
    }
}

fn post_norm(norm: &Option<Norm>, x: &Tensor, fc: bool) -> R<Tensor> {
    match norm {
        Some(n) => n.forward(x, fc),
        None => Ok(x.clone()),
    }
}

impl Block {
    /// Casts every weight of the block to `dt`.
    pub fn cast(&mut self, dt: DType) -> R<()> {
        let cast_opt = |n: &Option<Norm>| n.as_ref().map(|n| n.cast(dt)).transpose();
        self.attn_norm = self.attn_norm.cast(dt)?;
        let a = &mut self.attn;
        for l in [&mut a.q, &mut a.k, &mut a.v, &mut a.o] {
            *l = l.cast(dt)?;
        }
        if let Some((qn, kn)) = &a.qk_norm {
            a.qk_norm = Some((qn.cast(dt)?, kn.cast(dt)?));
        }
        self.attn_post_norm = cast_opt(&self.attn_post_norm)?;
        match &mut self.mlp_input {
            MlpInput::Sequential(n) | MlpInput::Parallel(n) => *n = n.cast(dt)?,
            MlpInput::SharedNorm => {}
        }
        self.mlp.cast(dt)?;
        self.mlp_post_norm = cast_opt(&self.mlp_post_norm)?;
        Ok(())
    }

    pub fn forward(&self, x: &Tensor, io: &LayerIo) -> R<LayerOut> {
        let fc = io.force_composed;
        let attn_in = self.attn_norm.forward(x, fc)?;
        let (a, k, v) = self.attn.forward(&attn_in, io)?;
        let a = add(a, io.attn_delta)?;
        let attn_res = post_norm(&self.attn_post_norm, &a, fc)?;
        let (mlp_in, residual) = match &self.mlp_input {
            MlpInput::Sequential(norm) => {
                let h = (x + &attn_res)?;
                (norm.forward(&h, fc)?, h)
            }
            MlpInput::Parallel(norm) => (norm.forward(x, fc)?, (x + &attn_res)?),
            MlpInput::SharedNorm => (attn_in, (x + &attn_res)?),
        };
        let key = self.mlp.key(&mlp_in)?;
        let mut m = self.mlp.out().forward(&key)?;
        if let Some(adaptor) = io.adaptor {
            // Adaptors work in f32 (their codebooks are f32 whatever the runtime's dtype).
            let f32 = |t: &Tensor| t.to_dtype(DType::F32);
            m = adaptor.adapt(&f32(&key)?, &f32(&m)?)?.to_dtype(m.dtype())?;
        }
        let hidden = match &self.mlp_post_norm {
            // Without a post-norm the MLP output and the block output enter the residual at the
            // same point; summing the deltas first keeps one rounding order for both.
            None => {
                let delta = match (io.mlp_delta, io.block_delta) {
                    (Some(a), Some(b)) => Some((a + b)?),
                    (a, b) => a.or(b).cloned(),
                };
                m = add(m, delta.as_ref())?;
                (residual + &m)?
            }
            Some(norm) => {
                m = add(m, io.mlp_delta)?;
                add((residual + norm.forward(&m, fc)?)?, io.block_delta)?
            }
        };
        Ok(LayerOut {
            hidden,
            k,
            v,
            key: io.want_key.then_some(key),
            attn_out: io.want_attn_out.then_some(a),
            mlp_out: io.want_mlp_out.then_some(m),
        })
    }
}

/// Number of elements along the last dim, for shape checks in callers.
pub fn last_dim(t: &Tensor) -> R<usize> {
    t.dim(D::Minus1)
}
