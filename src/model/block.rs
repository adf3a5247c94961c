//! One transformer block, shared by the three architectures:
//!
//! ```text
//! sequential (Llama, GPT-2):  h = x + Attn(N₁(x)) [+ δ_attn];  out = h + W_out·k [+ δ_mlp],  k = φ(N₂(h))
//! parallel   (GPT-J):         n = N₁(x);  out = x + Attn(n) [+ δ_attn] + W_out·k [+ δ_mlp],  k = φ(n)
//! ```
//!
//! `k` is the *key* of the knowledge-editing literature (the input of the edited matrix `W_out`),
//! and `W_out·k` its *value*. The hooks an editor needs live here: capture `k`, the attention and
//! MLP outputs; add a (differentiable) delta to either output; let an adaptor (GRACE) rewrite the
//! MLP output from its key.

use std::fmt::Debug;

use candle_core::{Tensor, D};

use super::layers::{attention, gelu_tanh, Linear, Norm, Rope};

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
}

/// The MLP up to (but not including) its output matrix, plus that matrix.
#[derive(Debug, Clone)]
pub enum Mlp {
    /// `k = SiLU(W_gate x) ⊙ (W_up x)` (Llama).
    SwiGlu {
        gate: Linear,
        up: Linear,
        down: Linear,
    },
    /// `k = GELU_tanh(W_in x + b)` (GPT-2, GPT-J).
    Gelu { fc_in: Linear, fc_out: Linear },
}

impl Mlp {
    pub fn key(&self, x: &Tensor) -> R<Tensor> {
        match self {
            Mlp::SwiGlu { gate, up, .. } => gate.forward(x)?.silu()? * up.forward(x)?,
            Mlp::Gelu { fc_in, .. } => gelu_tanh(&fc_in.forward(x)?),
        }
    }

    /// The edited matrix `W_out` (`[d_model, d_ff]`).
    pub fn out(&self) -> &Linear {
        match self {
            Mlp::SwiGlu { down, .. } => down,
            Mlp::Gelu { fc_out, .. } => fc_out,
        }
    }

    pub fn out_mut(&mut self) -> &mut Linear {
        match self {
            Mlp::SwiGlu { down, .. } => down,
            Mlp::Gelu { fc_out, .. } => fc_out,
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
    /// Additive attention mask `[B, 1, S, P + S]`.
    pub mask: &'a Tensor,
    /// Cached keys/values of earlier positions, `[B, Hkv, P, hd]` each.
    pub past: Option<(&'a Tensor, &'a Tensor)>,
    pub attn_delta: Option<&'a Tensor>,
    pub mlp_delta: Option<&'a Tensor>,
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

#[derive(Debug, Clone)]
pub struct Block {
    pub attn_norm: Norm,
    /// `None` for a parallel block (GPT-J), whose MLP reads the attention norm's output.
    pub mlp_norm: Option<Norm>,
    pub attn: Attention,
    pub mlp: Mlp,
}

impl Attention {
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
        if let Some((rope, cos, sin)) = io.rope {
            q = rope.apply(&q, cos, sin, fc)?;
            k = rope.apply(&k, cos, sin, fc)?;
        }
        let k = k.contiguous()?;
        let (k_all, v_all) = match io.past {
            Some((pk, pv)) => (Tensor::cat(&[pk, &k], 2)?, Tensor::cat(&[pv, &v], 2)?),
            None => (k.clone(), v.clone()),
        };
        let y = attention(&q, &k_all, &v_all, io.mask, fc)?;
        let y = y
            .transpose(1, 2)?
            .reshape((b, s, self.n_heads * self.head_dim))?;
        Ok((self.o.forward(&y)?, k, v))
    }
}

impl Block {
    pub fn forward(&self, x: &Tensor, io: &LayerIo) -> R<LayerOut> {
        let fc = io.force_composed;
        let attn_in = self.attn_norm.forward(x, fc)?;
        let (mut a, k, v) = self.attn.forward(&attn_in, io)?;
        if let Some(d) = io.attn_delta {
            a = (a + d)?;
        }
        // Sequential blocks feed the MLP from the residual after attention; parallel blocks
        // (GPT-J) feed it the same normalized input as attention.
        let (mlp_in, residual) = match &self.mlp_norm {
            Some(norm) => {
                let h = (x + &a)?;
                (norm.forward(&h, fc)?, h)
            }
            None => (attn_in, (x + &a)?),
        };
        let key = self.mlp.key(&mlp_in)?;
        let mut m = self.mlp.out().forward(&key)?;
        if let Some(adaptor) = io.adaptor {
            m = adaptor.adapt(&key, &m)?;
        }
        if let Some(d) = io.mlp_delta {
            m = (m + d)?;
        }
        let hidden = (residual + &m)?;
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
