//! Building blocks shared by the architectures.
//!
//! Every op has two implementations: candle's fused kernels, used when nothing upstream needs a
//! gradient, and a composed version built from differentiable tensor ops. candle's fused kernels
//! (`rms_norm`, `layer_norm`, `softmax_last_dim`, `rope*`) silently drop gradients, so an op picks
//! the composed path whenever its input is part of an autograd graph (`Tensor::track_op`), or when
//! the caller forces it (used by tests to check that both paths agree).

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Shape, Storage, Tensor, D};

use crate::model::config::{Activation, RopeStyle};

type R<T> = candle_core::Result<T>;

fn composed(x: &Tensor, force: bool) -> bool {
    force || x.track_op()
}

/// Runs `f` on `x` widened to f32 and rounds the result back to `x`'s dtype: norms and the
/// attention softmax are computed in f32 in half-precision models, as transformers does.
fn in_f32(x: &Tensor, f: impl FnOnce(&Tensor) -> R<Tensor>) -> R<Tensor> {
    let dt = x.dtype();
    if dt == DType::F32 {
        return f(x);
    }
    f(&x.to_dtype(DType::F32)?)?.to_dtype(dt)
}

/// A dense layer `y = x Wᵀ (+ b)` with `W` stored `[out, in]` (PyTorch `Linear` layout).
#[derive(Debug, Clone)]
pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
}

impl Linear {
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Self {
        Self { weight, bias }
    }

    pub fn out_dim(&self) -> usize {
        self.weight.dims()[0]
    }

    pub fn cast(&self, dtype: DType) -> R<Self> {
        Ok(Self {
            weight: self.weight.to_dtype(dtype)?,
            bias: self.bias.as_ref().map(|b| b.to_dtype(dtype)).transpose()?,
        })
    }

    pub fn forward(&self, x: &Tensor) -> R<Tensor> {
        let dims = x.dims().to_vec();
        let in_dim = *dims.last().expect("linear input has a last dim");
        let rows = x.elem_count() / in_dim.max(1);
        let x2 = x.reshape((rows, in_dim))?;
        let y = if x2.track_op() && !self.weight.track_op() {
            const_weight_matmul(&x2, &self.weight)?
        } else {
            x_wt(&x2, &self.weight)?
        };
        let y = match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        };
        let mut out_dims = dims;
        *out_dims.last_mut().expect("non-empty") = self.out_dim();
        y.reshape(out_dims)
    }
}

/// Below this many rows, products with a weight matrix are computed transposed (see [`x_wt`]).
const SMALL_M: usize = 48;

/// `x Wᵀ` for `x: [m, in]`, `W: [out, in]`. For few rows (decoding, target optimization) the
/// CPU GEMM spends most of its time packing the weight, which is streamed from memory anyway;
/// computing `(W xᵀ)ᵀ` lets it stream `W` in its natural layout and was ~1.8× faster here
/// (BENCHMARKS.md). Differentiable either way.
pub fn x_wt(x: &Tensor, w: &Tensor) -> R<Tensor> {
    if x.dim(0)? <= SMALL_M && x.device().is_cpu() {
        w.matmul(&x.t()?)?.t()?.contiguous()
    } else {
        x.matmul(&w.t()?)
    }
}

/// `g W` for `g: [m, out]`, `W: [out, in]`, with the same small-row trick as [`x_wt`].
fn g_w(g: &Tensor, w: &Tensor) -> R<Tensor> {
    if g.dim(0)? <= SMALL_M && g.device().is_cpu() {
        w.t()?.matmul(&g.t()?)?.t()?.contiguous()
    } else {
        g.matmul(w)
    }
}

/// `x Wᵀ` for a constant `W` whose backward pass only computes the gradient of `x`.
///
/// candle's matmul backward always also computes the gradient of the right-hand side. For the
/// target-vector optimization that is a full `[in, out]` gradient of every weight matrix (and of
/// the 49k-row LM head) on every step, which nobody reads. This op computes the product with the
/// normal kernel and attaches a backward that returns `dy W` alone.
fn const_weight_matmul(x: &Tensor, w: &Tensor) -> R<Tensor> {
    let out = x_wt(&x.detach(), w)?.contiguous()?;
    x.apply_op1(ConstWeightMatmul {
        weight: w.clone(),
        out,
    })
}

struct ConstWeightMatmul {
    weight: Tensor,
    /// The product, computed before the op is applied (see [`const_weight_matmul`]).
    out: Tensor,
}

impl CustomOp1 for ConstWeightMatmul {
    fn name(&self) -> &'static str {
        "const-weight-matmul"
    }

    fn cpu_fwd(&self, _storage: &CpuStorage, _layout: &Layout) -> R<(CpuStorage, Shape)> {
        let (storage, layout) = self.out.storage_and_layout();
        match &*storage {
            Storage::Cpu(cpu) if layout.is_contiguous() && layout.start_offset() == 0 => {
                Ok((cpu.clone(), layout.shape().clone()))
            }
            _ => candle_core::bail!("const-weight-matmul: unexpected product layout"),
        }
    }

    /// On a GPU this matters most: without it every step of a target optimization would hold
    /// the gradient of every weight above the edited layer (~11 GiB for Llama-3-8B in bf16).
    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        _storage: &candle_core::CudaStorage,
        _layout: &Layout,
    ) -> R<(candle_core::CudaStorage, Shape)> {
        use candle_core::backend::BackendStorage;
        let (storage, layout) = self.out.storage_and_layout();
        match &*storage {
            Storage::Cuda(cuda) => Ok((cuda.try_clone(layout)?, layout.shape().clone())),
            _ => candle_core::bail!("const-weight-matmul: the product is not on the GPU"),
        }
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> R<Option<Tensor>> {
        Ok(Some(g_w(grad_res, &self.weight)?))
    }
}

/// How an RMSNorm's stored weight `w` scales the normalized input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RmsGain {
    /// `x̂ · w` (Llama, Qwen, Mistral).
    Weight,
    /// `x̂ · (1 + w)` (Gemma): the checkpoint stores the offset from one.
    OnePlusWeight,
}

#[derive(Debug, Clone)]
pub struct RmsNorm {
    /// As stored in the checkpoint (export writes it back unchanged).
    pub weight: Tensor,
    pub eps: f64,
    pub gain: RmsGain,
}

impl RmsNorm {
    pub fn new(weight: Tensor, eps: f64) -> Self {
        Self {
            weight,
            eps,
            gain: RmsGain::Weight,
        }
    }

    fn scale(&self) -> R<Tensor> {
        let w = self.weight.to_dtype(DType::F32)?;
        match self.gain {
            RmsGain::Weight => Ok(w),
            RmsGain::OnePlusWeight => w.affine(1.0, 1.0),
        }
    }

    pub fn forward(&self, x: &Tensor, force_composed: bool) -> R<Tensor> {
        in_f32(x, |x| self.forward_f32(x, force_composed))
    }

    fn forward_f32(&self, x: &Tensor, force_composed: bool) -> R<Tensor> {
        let scale = self.scale()?;
        if composed(x, force_composed) {
            let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
            let inv = (ms + self.eps)?.sqrt()?.recip()?;
            x.broadcast_mul(&inv)?.broadcast_mul(&scale)
        } else {
            candle_nn::ops::rms_norm(&x.contiguous()?, &scale, self.eps as f32)
        }
    }
}

#[derive(Debug, Clone)]
pub struct LayerNorm {
    pub weight: Tensor,
    pub bias: Tensor,
    pub eps: f64,
}

impl LayerNorm {
    pub fn forward(&self, x: &Tensor, force_composed: bool) -> R<Tensor> {
        in_f32(x, |x| self.forward_f32(x, force_composed))
    }

    fn forward_f32(&self, x: &Tensor, force_composed: bool) -> R<Tensor> {
        let weight = self.weight.to_dtype(DType::F32)?;
        let bias = self.bias.to_dtype(DType::F32)?;
        if composed(x, force_composed) {
            let mean = x.mean_keepdim(D::Minus1)?;
            let xc = x.broadcast_sub(&mean)?;
            let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
            let inv = (var + self.eps)?.sqrt()?.recip()?;
            xc.broadcast_mul(&inv)?
                .broadcast_mul(&weight)?
                .broadcast_add(&bias)
        } else {
            candle_nn::ops::layer_norm(&x.contiguous()?, &weight, &bias, self.eps as f32)
        }
    }
}

/// Either normalization, so the model can hold "the final norm" for every architecture.
#[derive(Debug, Clone)]
pub enum Norm {
    Rms(RmsNorm),
    Layer(LayerNorm),
}

impl Norm {
    pub fn forward(&self, x: &Tensor, force_composed: bool) -> R<Tensor> {
        match self {
            Norm::Rms(n) => n.forward(x, force_composed),
            Norm::Layer(n) => n.forward(x, force_composed),
        }
    }

    pub fn cast(&self, dtype: DType) -> R<Self> {
        Ok(match self {
            Norm::Rms(n) => Norm::Rms(RmsNorm {
                weight: n.weight.to_dtype(dtype)?,
                ..n.clone()
            }),
            Norm::Layer(n) => Norm::Layer(LayerNorm {
                weight: n.weight.to_dtype(dtype)?,
                bias: n.bias.to_dtype(dtype)?,
                eps: n.eps,
            }),
        })
    }
}

/// Softmax over the last dimension.
pub fn softmax_last(x: &Tensor, force_composed: bool) -> R<Tensor> {
    if composed(x, force_composed) {
        // The max shift only guards exp() against overflow; it cancels in the result, so it
        // carries no gradient.
        let m = x.max_keepdim(D::Minus1)?.detach();
        let e = x.broadcast_sub(&m)?.exp()?;
        e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
    } else {
        candle_nn::ops::softmax_last_dim(&x.contiguous()?)
    }
}

/// Log-softmax over the last dimension (always composed; used on small logit sets).
pub fn log_softmax_last(x: &Tensor) -> R<Tensor> {
    let m = x.max_keepdim(D::Minus1)?.detach();
    let shifted = x.broadcast_sub(&m)?;
    let lse = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    shifted.broadcast_sub(&lse)
}

/// Precomputed rotary tables: `cos`/`sin` of shape `[max_positions, rotary_dim / 2]`.
#[derive(Debug, Clone)]
pub struct Rope {
    pub cos: Tensor,
    pub sin: Tensor,
    pub rotary_dim: usize,
    pub style: RopeStyle,
}

impl Rope {
    /// Gathers the tables for per-row absolute positions `[B, S]` → `([B, S, r/2], [B, S, r/2])`.
    pub fn tables_for(&self, positions: &Tensor) -> R<(Tensor, Tensor)> {
        let (b, s) = positions.dims2()?;
        let flat = positions.flatten_all()?;
        let half = self.rotary_dim / 2;
        let cos = self.cos.index_select(&flat, 0)?.reshape((b, s, half))?;
        let sin = self.sin.index_select(&flat, 0)?.reshape((b, s, half))?;
        Ok((cos, sin))
    }

    /// Rotates `x: [B, H, S, head_dim]` (only the first `rotary_dim` dims of each head).
    pub fn apply(&self, x: &Tensor, cos: &Tensor, sin: &Tensor, force_composed: bool) -> R<Tensor> {
        let head_dim = x.dim(D::Minus1)?;
        if self.rotary_dim == head_dim {
            return self.rotate(x, cos, sin, force_composed);
        }
        let rot = x.narrow(D::Minus1, 0, self.rotary_dim)?;
        let pass = x.narrow(D::Minus1, self.rotary_dim, head_dim - self.rotary_dim)?;
        let rot = self.rotate(&rot, cos, sin, force_composed)?;
        Tensor::cat(&[rot, pass], D::Minus1)
    }

    fn rotate(&self, x: &Tensor, cos: &Tensor, sin: &Tensor, force_composed: bool) -> R<Tensor> {
        if composed(x, force_composed) {
            return match self.style {
                RopeStyle::Half => rope_half_composed(x, cos, sin),
                RopeStyle::Interleaved => rope_interleaved_composed(x, cos, sin),
            };
        }
        let x = x.contiguous()?;
        match self.style {
            RopeStyle::Half => candle_nn::rotary_emb::rope(&x, cos, sin),
            RopeStyle::Interleaved => candle_nn::rotary_emb::rope_i(&x, cos, sin),
        }
    }
}

/// `x·cos + rotate_half(x)·sin` with `cos`, `sin: [B, S, d/2]`.
fn rope_half_composed(x: &Tensor, cos: &Tensor, sin: &Tensor) -> R<Tensor> {
    let half = x.dim(D::Minus1)? / 2;
    let cos = cos.unsqueeze(1)?;
    let sin = sin.unsqueeze(1)?;
    let x1 = x.narrow(D::Minus1, 0, half)?;
    let x2 = x.narrow(D::Minus1, half, half)?;
    let y1 = (x1.broadcast_mul(&cos)? - x2.broadcast_mul(&sin)?)?;
    let y2 = (x2.broadcast_mul(&cos)? + x1.broadcast_mul(&sin)?)?;
    Tensor::cat(&[y1, y2], D::Minus1)
}

/// Pairs (2i, 2i+1) rotated by the angle of frequency i.
fn rope_interleaved_composed(x: &Tensor, cos: &Tensor, sin: &Tensor) -> R<Tensor> {
    let (b, h, s, d) = x.dims4()?;
    let x = x.reshape((b, h, s, d / 2, 2))?;
    let cos = cos.reshape((b, 1, s, d / 2, 1))?;
    let sin = sin.reshape((b, 1, s, d / 2, 1))?;
    let x0 = x.narrow(D::Minus1, 0, 1)?;
    let x1 = x.narrow(D::Minus1, 1, 1)?;
    let y0 = (x0.broadcast_mul(&cos)? - x1.broadcast_mul(&sin)?)?;
    let y1 = (x0.broadcast_mul(&sin)? + x1.broadcast_mul(&cos)?)?;
    Tensor::cat(&[y0, y1], D::Minus1)?.reshape((b, h, s, d))
}

/// How attention scores are formed before the softmax: `s = scale · q·k`, then optionally
/// `cap · tanh(s / cap)` (Gemma-2), then the mask.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScoreRule {
    pub scale: f64,
    pub softcap: Option<f64>,
}

/// `cap · tanh(x / cap)`: bounds `x` to (−cap, cap) smoothly.
pub fn softcap(x: &Tensor, cap: f64) -> R<Tensor> {
    (x / cap)?.tanh()? * cap
}

/// Attention scores → weighted values, with grouped-query heads handled by reshaping the queries
/// instead of copying keys and values `n_heads / n_kv_heads` times.
///
/// `q: [B, H, S, hd]`, `k`, `v: [B, Hkv, T, hd]`, `mask: [B, 1, S, T]` (0 or −∞).
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: &Tensor,
    rule: ScoreRule,
    force_composed: bool,
) -> R<Tensor> {
    let (b, h, s, hd) = q.dims4()?;
    let (_, hkv, t, _) = k.dims4()?;
    let rep = h / hkv;
    let q = (q.contiguous()?.reshape((b, hkv, rep * s, hd))? * rule.scale)?;
    let scores = q.matmul(&k.t()?)?.reshape((b, h, s, t))?;
    let probs = in_f32(&scores, |scores| {
        let scores = match rule.softcap {
            Some(cap) => softcap(scores, cap)?,
            None => scores.clone(),
        };
        softmax_last(&scores.broadcast_add(mask)?, force_composed)
    })?;
    let probs = probs.reshape((b, hkv, rep * s, t))?;
    probs.matmul(&v.contiguous()?)?.reshape((b, h, s, hd))
}

impl Activation {
    pub fn apply(self, x: &Tensor) -> R<Tensor> {
        match self {
            Activation::Silu => x.silu(),
            Activation::GeluTanh => x.gelu(),
            Activation::GeluErf => x.gelu_erf(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn rand(shape: &[usize], seed: u64) -> Tensor {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    #[test]
    fn fused_and_composed_ops_agree() {
        let x = rand(&[2, 3, 5, 8], 1);
        let w = rand(&[8], 2);
        let b = rand(&[8], 3);
        let rms = RmsNorm::new(w.clone(), 1e-5);
        assert!(
            max_abs_diff(
                &rms.forward(&x, false).unwrap(),
                &rms.forward(&x, true).unwrap()
            ) < 1e-5
        );
        let ln = LayerNorm {
            weight: w,
            bias: b,
            eps: 1e-5,
        };
        assert!(
            max_abs_diff(
                &ln.forward(&x, false).unwrap(),
                &ln.forward(&x, true).unwrap()
            ) < 1e-5
        );
        assert!(
            max_abs_diff(
                &softmax_last(&x, false).unwrap(),
                &softmax_last(&x, true).unwrap()
            ) < 1e-6
        );
        for style in [RopeStyle::Half, RopeStyle::Interleaved] {
            for rotary_dim in [8, 4] {
                let rope = Rope {
                    cos: rand(&[16, rotary_dim / 2], 4),
                    sin: rand(&[16, rotary_dim / 2], 5),
                    rotary_dim,
                    style,
                };
                let pos =
                    Tensor::new(&[[0u32, 1, 2, 3, 4], [7, 8, 9, 10, 11]], &Device::Cpu).unwrap();
                let (c, s) = rope.tables_for(&pos).unwrap();
                let x = rand(&[2, 3, 5, 8], 6);
                let fast = rope.apply(&x, &c, &s, false).unwrap();
                let slow = rope.apply(&x, &c, &s, true).unwrap();
                assert!(max_abs_diff(&fast, &slow) < 1e-6, "{style:?} {rotary_dim}");
            }
        }
    }

    #[test]
    fn const_weight_matmul_value_and_gradient() {
        let w = rand(&[6, 4], 7);
        let x0 = rand(&[3, 4], 8);
        let x = Var::from_tensor(&x0).unwrap();
        let lin = Linear::new(w.clone(), None);
        let y = lin.forward(x.as_tensor()).unwrap();
        let y_ref = x0.matmul(&w.t().unwrap()).unwrap();
        assert!(max_abs_diff(&y, &y_ref) < 1e-6);
        let loss = y.sqr().unwrap().sum_all().unwrap();
        let grads = loss.backward().unwrap();
        let g = grads.get(x.as_tensor()).unwrap();
        // d/dx Σ (x Wᵀ)² = 2 (x Wᵀ) W
        let g_ref = (y_ref.matmul(&w).unwrap() * 2.0).unwrap();
        assert!(max_abs_diff(g, &g_ref) < 1e-5);
        assert!(
            grads.get(&w).is_none(),
            "no gradient for the constant weight"
        );
    }
}
