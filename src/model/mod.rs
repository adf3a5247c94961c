//! Transformer runtime with the hooks knowledge editors need.
//!
//! One [`Model`] serves Llama-family (Llama, Mistral, Qwen2/3), Gemma-2, GPT-NeoX, GPT-2 and GPT-J
//! checkpoints. Its [`Model::forward`] runs a
//! right-padded batch through a range of layers and can, in the same pass:
//! - return logits at every position or only at chosen `(row, position)` pairs;
//! - capture the key (input of the edited matrix), the attention / MLP output or the block output
//!   of any layer ([`Site`]);
//! - add a differentiable delta to the attention or MLP output of a layer (adding to the MLP output
//!   is the same as adding to the block output);
//! - start at layer `L` from given hidden states and continue after cached keys/values of earlier
//!   positions ([`KvCache`]): the layers below an edit and the positions before the edited token
//!   never change while a target vector is optimized, so they are computed once.
//!
//! Weights and activations are in the model's [`Precision`] (f32, bf16 or f16); norms, attention
//! softmax and logits are computed in f32 as transformers does. Everything crossing the runtime's
//! boundary is f32 whatever the precision: captures, logits, the returned hidden state; deltas and
//! hidden-state inputs are cast in. Editors therefore never see half precision, except in the
//! stored matrices: [`Model::set_edit_weight`] rounds a new matrix to the runtime's dtype, as
//! saving it in that dtype would.

pub mod block;
pub mod chat;
pub mod config;
pub mod fetch;
pub mod forward;
pub mod gemma2;
pub mod generate;
pub mod gpt2;
pub mod gptj;
pub mod gptneox;
pub mod layers;
pub mod llama;
pub mod load;
pub mod random;
pub mod tokenizer;

use std::collections::HashMap;
use std::sync::Arc;

use candle_core::{DType, Device, IndexOp, Tensor};

pub use block::{Block, MlpAdaptor};
pub use config::{Arch, ModelConfig};
pub use forward::{Forward, ForwardOut, Input, KvCache, Logits, Site, SiteDelta};
pub use load::{ModelInfo, ModelRecord, ModelSpec, Precision};

use crate::error::{Error, Result};
use layers::{Linear, Norm, Rope};

/// Cloning is cheap: tensors are reference-counted and immutable (a clone shares the weights).
#[derive(Clone)]
pub struct Model {
    pub config: ModelConfig,
    pub(crate) wte: Tensor,
    pub(crate) wpe: Option<Tensor>,
    pub(crate) blocks: Vec<Block>,
    pub(crate) final_norm: Norm,
    pub(crate) lm_head: Linear,
    pub(crate) rope: Option<Rope>,
    pub(crate) adaptors: Vec<Option<Arc<dyn MlpAdaptor>>>,
    /// The unedited matrix of every layer that has been replaced at least once.
    pub(crate) originals: HashMap<usize, Tensor>,
    pub device: Device,
    pub tokenizer: Option<tokenizers::Tokenizer>,
    pub info: ModelInfo,
}

impl Model {
    pub fn n_layers(&self) -> usize {
        self.config.n_layers
    }

    /// The dtype of the weights and activations.
    pub fn dtype(&self) -> DType {
        self.wte.dtype()
    }

    pub fn precision(&self) -> Precision {
        Precision::of(self.dtype()).unwrap_or(Precision::F32)
    }

    /// What sessions and runs record about the model they edit.
    pub fn record(&self) -> ModelRecord {
        ModelRecord {
            spec: self.info.spec.to_string_spec(),
            name: self.info.name.clone(),
            sha256: self.info.sha256.clone(),
            precision: self.precision(),
        }
    }

    /// Casts every weight to `precision` (tests and benchmarks compare precisions on one model;
    /// loaders cast tensor by tensor instead, so a half-precision load never holds f32 weights).
    pub fn to_precision(mut self, precision: Precision) -> Result<Self> {
        let dt = precision.dtype();
        self.wte = self.wte.to_dtype(dt)?;
        self.wpe = self.wpe.map(|t| t.to_dtype(dt)).transpose()?;
        for b in &mut self.blocks {
            b.cast(dt)?;
        }
        self.final_norm = self.final_norm.cast(dt)?;
        self.lm_head = self.lm_head.cast(dt)?;
        for w in self.originals.values_mut() {
            *w = w.to_dtype(dt)?;
        }
        Ok(self)
    }

    /// The edited matrix of a layer in f32, for arithmetic with an update.
    pub fn edit_weight_f32(&self, layer: usize) -> Result<Tensor> {
        Ok(self.edit_weight(layer)?.to_dtype(DType::F32)?)
    }

    /// `W0` of a layer in f32 (see [`Model::original_edit_weight`]).
    pub fn original_edit_weight_f32(&self, layer: usize) -> Result<Tensor> {
        Ok(self.original_edit_weight(layer)?.to_dtype(DType::F32)?)
    }

    pub fn tokenizer(&self) -> Result<&tokenizers::Tokenizer> {
        self.tokenizer
            .as_ref()
            .ok_or_else(|| Error::Tokenizer("this model was loaded without a tokenizer".into()))
    }

    /// Decodes for display, dropping special tokens.
    pub fn decode_text(&self, ids: &[u32]) -> Result<String> {
        self.tokenizer()?
            .decode(ids, true)
            .map_err(|e| Error::Tokenizer(format!("cannot decode {ids:?}: {e}")))
    }

    /// Tokenizes without adding special tokens (the editing literature's convention here).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .tokenizer()?
            .encode(text, false)
            .map_err(|e| Error::Tokenizer(format!("cannot encode {text:?}: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.tokenizer()?
            .decode(ids, false)
            .map_err(|e| Error::Tokenizer(format!("cannot decode {ids:?}: {e}")))
    }

    /// The edited matrix `W_out` of a layer, `[d_model, d_ff]` (`[out, in]`).
    pub fn edit_weight(&self, layer: usize) -> Result<&Tensor> {
        Ok(&self.block(layer)?.mlp.out().weight)
    }

    /// Replaces the edited matrix of a layer. The shape must match; the caller keeps the old one
    /// if it wants to restore it.
    pub fn set_edit_weight(&mut self, layer: usize, weight: Tensor) -> Result<()> {
        let old = self.edit_weight(layer)?;
        if old.dims() != weight.dims() {
            return Err(Error::Model(format!(
                "layer {layer}: replacement weight has shape {:?}, expected {:?}",
                weight.dims(),
                old.dims()
            )));
        }
        let weight = weight.to_dtype(self.dtype())?.to_device(&self.device)?;
        let old = old.clone();
        self.originals.entry(layer).or_insert(old);
        self.blocks[layer].mlp.out_mut().weight = weight;
        Ok(())
    }

    /// The edited matrix of a layer as it was loaded (before any replacement): `W0`.
    pub fn original_edit_weight(&self, layer: usize) -> Result<&Tensor> {
        match self.originals.get(&layer) {
            Some(w) => Ok(w),
            None => self.edit_weight(layer),
        }
    }

    /// Layers whose edited matrix has been replaced at some point.
    pub fn touched_layers(&self) -> Vec<usize> {
        let mut l: Vec<usize> = self.originals.keys().copied().collect();
        l.sort_unstable();
        l
    }

    /// Whether any weight differs from the loaded model or any adaptor is installed.
    pub fn is_edited(&self) -> Result<bool> {
        if self.adaptors.iter().any(Option::is_some) {
            return Ok(true);
        }
        for (l, w0) in &self.originals {
            if !same_tensor(w0, self.edit_weight(*l)?)? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Puts back every loaded weight and removes every adaptor.
    pub fn reset_edits(&mut self) {
        for (l, w0) in std::mem::take(&mut self.originals) {
            self.blocks[l].mlp.out_mut().weight = w0;
        }
        for a in &mut self.adaptors {
            *a = None;
        }
    }

    /// Runs `f` on the unedited model (statistics must be gathered on W0), then restores the edits.
    pub fn with_unedited<R>(&mut self, f: impl FnOnce(&Model) -> R) -> R {
        let mut swapped = Vec::new();
        for (&l, w0) in &self.originals {
            let current = std::mem::replace(&mut self.blocks[l].mlp.out_mut().weight, w0.clone());
            swapped.push((l, current));
        }
        let adaptors = std::mem::replace(&mut self.adaptors, vec![None; self.blocks.len()]);
        let r = f(self);
        for (l, w) in swapped {
            self.blocks[l].mlp.out_mut().weight = w;
        }
        self.adaptors = adaptors;
        r
    }

    /// Installs (or removes) an adaptor on a layer's MLP output.
    pub fn set_adaptor(
        &mut self,
        layer: usize,
        adaptor: Option<Arc<dyn MlpAdaptor>>,
    ) -> Result<()> {
        self.block(layer)?;
        self.adaptors[layer] = adaptor;
        Ok(())
    }

    pub fn adaptor(&self, layer: usize) -> Option<&Arc<dyn MlpAdaptor>> {
        self.adaptors.get(layer).and_then(Option::as_ref)
    }

    pub(crate) fn block(&self, layer: usize) -> Result<&Block> {
        self.blocks.get(layer).ok_or_else(|| {
            Error::Input(format!(
                "layer {layer} does not exist (the model has {} layers, 0..{})",
                self.blocks.len(),
                self.blocks.len().saturating_sub(1)
            ))
        })
    }

    /// Embeds token rows, right-padded to the longest, with absolute positions `offsets[row] + i`.
    fn embed(&self, rows: &[Vec<u32>], positions: &Tensor) -> Result<Tensor> {
        let s = rows.iter().map(Vec::len).max().unwrap_or(0);
        let mut ids = Vec::with_capacity(rows.len() * s);
        for row in rows {
            for i in 0..s {
                let id = row.get(i).copied().unwrap_or(0);
                if id as usize >= self.config.vocab_size {
                    return Err(Error::Input(format!(
                        "token id {id} is outside the vocabulary (size {})",
                        self.config.vocab_size
                    )));
                }
                ids.push(id);
            }
        }
        let ids = Tensor::from_vec(ids, (rows.len() * s,), &self.device)?;
        let mut h =
            self.wte
                .index_select(&ids, 0)?
                .reshape((rows.len(), s, self.config.d_model))?;
        if let Some(scale) = self.config.embed_scale {
            // Gemma computes the factor in the activation dtype: √d rounded to it.
            let rounded = Tensor::new(scale as f32, &Device::Cpu)?
                .to_dtype(self.dtype())?
                .to_dtype(DType::F32)?
                .to_scalar::<f32>()?;
            h = (h * f64::from(rounded))?;
        }
        if let Some(wpe) = &self.wpe {
            let pe = wpe.index_select(&positions.flatten_all()?, 0)?.reshape((
                rows.len(),
                s,
                self.config.d_model,
            ))?;
            h = (h + pe)?;
        }
        Ok(h)
    }

    /// Embedding output (token + learned position embeddings) of rows starting at position 0,
    /// in f32.
    pub fn embed_tokens(&self, rows: &[Vec<u32>]) -> Result<Tensor> {
        let s = rows.iter().map(Vec::len).max().unwrap_or(0);
        let pos: Vec<u32> = (0..rows.len()).flat_map(|_| 0..s as u32).collect();
        let pos = Tensor::from_vec(pos, (rows.len(), s), &self.device)?;
        Ok(self.embed(rows, &pos)?.to_dtype(DType::F32)?)
    }

    /// The final normalization applied to hidden states (what the LM head reads), in f32.
    pub fn final_norm(&self, h: &Tensor) -> Result<Tensor> {
        let h = h.to_dtype(self.dtype())?;
        Ok(self.final_norm.forward(&h, false)?.to_dtype(DType::F32)?)
    }

    /// Runs a forward pass; see the module docs.
    /// The logits of a batch of token rows at the positions `which` selects: a plain forward
    /// with no hooks, captures or cache, as the metrics and probes score text.
    pub fn logits(&self, rows: &[Vec<u32>], which: Logits) -> Result<Tensor> {
        let out = self.forward(
            Input::Tokens(rows),
            &Forward {
                logits: which,
                ..Default::default()
            },
        )?;
        out.logits
            .ok_or_else(|| Error::Model("forward did not compute logits".into()))
    }

    pub fn forward(&self, input: Input, fwd: &Forward) -> Result<ForwardOut> {
        let n_layers = self.config.n_layers;
        let end = fwd.end_layer.unwrap_or(n_layers);
        if fwd.start_layer > end || (fwd.start_layer == end && end != n_layers) || end > n_layers {
            return Err(Error::Model(format!(
                "layer range {}..{end} is outside 0..{n_layers}",
                fwd.start_layer
            )));
        }
        let (b, s, lens) = match &input {
            Input::Tokens(rows) => (
                rows.len(),
                rows.iter().map(Vec::len).max().unwrap_or(0),
                rows.iter().map(Vec::len).collect::<Vec<_>>(),
            ),
            Input::Hidden { hidden, lens } => {
                let (b, s, _) = hidden.dims3()?;
                (b, s, lens.clone())
            }
        };
        if b == 0 || s == 0 || lens.iter().any(|&l| l == 0 || l > s) {
            return Err(Error::Input("forward: empty batch or empty row".into()));
        }
        let past_valid: Vec<Vec<bool>> = match fwd.past {
            Some(p) if p.valid.len() != b => {
                return Err(Error::Model(format!(
                    "cache has {} rows, batch has {b}",
                    p.valid.len()
                )))
            }
            Some(p) => p.valid.clone(),
            None => vec![vec![]; b],
        };
        let p_len = past_valid.first().map_or(0, Vec::len);
        let offsets: Vec<usize> = past_valid
            .iter()
            .map(|r| r.iter().filter(|&&v| v).count())
            .collect();
        let max_pos = offsets.iter().max().copied().unwrap_or(0) + s;
        if max_pos > self.config.max_positions {
            return Err(Error::Input(format!(
                "sequence of {max_pos} tokens exceeds the model's context window of {} tokens",
                self.config.max_positions
            )));
        }
        let positions: Vec<u32> = offsets
            .iter()
            .flat_map(|&o| (0..s).map(move |i| (o + i) as u32))
            .collect();
        let positions = Tensor::from_vec(positions, (b, s), &self.device)?;
        let masks = self.attention_masks(&past_valid, p_len, s, fwd.start_layer..end)?;
        let dt = self.dtype();
        let rope_tables = match &self.rope {
            Some(rope) => {
                // Computed in f32, rounded to the activations' dtype (as transformers does).
                let (cos, sin) = rope.tables_for(&positions)?;
                Some((rope, cos.to_dtype(dt)?, sin.to_dtype(dt)?))
            }
            None => None,
        };

        let mut h = match input {
            Input::Tokens(rows) => {
                if fwd.start_layer != 0 {
                    return Err(Error::Model("token input must start at layer 0".into()));
                }
                self.embed(rows, &positions)?
            }
            Input::Hidden { hidden, .. } => hidden.to_dtype(dt)?,
        };

        let mut captures = HashMap::new();
        let mut new_kv: Vec<Option<(Tensor, Tensor)>> = vec![None; n_layers];
        #[allow(clippy::needless_range_loop)] // `layer` also indexes blocks, adaptors and the cache
        for layer in fwd.start_layer..end {
            let wants = |site: Site| fwd.captures.contains(&(layer, site));
            let delta = |site: Site| {
                fwd.deltas
                    .iter()
                    .filter(|d| d.layer == layer && d.site == site)
                    .map(|d| d.value.to_dtype(dt).expect("a float delta casts"))
                    .reduce(|a, b| (a + b).expect("deltas of one site share a shape"))
            };
            let attn_delta = delta(Site::AttnOut);
            let mlp_delta = delta(Site::MlpOut);
            let block_delta = delta(Site::BlockOut);
            let past = match fwd.past {
                Some(p) => match p.layers.get(layer) {
                    Some(Some((k, v))) => Some((k, v)),
                    _ => {
                        return Err(Error::Model(format!(
                            "cache has no entry for layer {layer}"
                        )))
                    }
                },
                None => None,
            };
            let io = block::LayerIo {
                rope: rope_tables.as_ref().map(|(r, c, s)| (*r, c, s)),
                mask: &masks[&self.blocks[layer].attn.window],
                past,
                attn_delta: attn_delta.as_ref(),
                mlp_delta: mlp_delta.as_ref(),
                block_delta: block_delta.as_ref(),
                adaptor: self.adaptors[layer].as_deref(),
                force_composed: fwd.force_composed,
                want_key: wants(Site::Key),
                want_attn_out: wants(Site::AttnOut),
                want_mlp_out: wants(Site::MlpOut),
            };
            let out = self.blocks[layer].forward(&h, &io)?;
            for (site, t) in [
                (Site::Key, out.key),
                (Site::AttnOut, out.attn_out),
                (Site::MlpOut, out.mlp_out),
            ] {
                if let Some(t) = t {
                    captures.insert((layer, site), t.to_dtype(DType::F32)?);
                }
            }
            if wants(Site::BlockOut) {
                captures.insert((layer, Site::BlockOut), out.hidden.to_dtype(DType::F32)?);
            }
            if fwd.keep_kv {
                new_kv[layer] = Some(match past {
                    Some((pk, pv)) => (
                        Tensor::cat(&[pk, &out.k], 2)?,
                        Tensor::cat(&[pv, &out.v], 2)?,
                    ),
                    None => (out.k, out.v),
                });
            }
            h = out.hidden;
        }

        let logits = if end == n_layers {
            self.head(&h, &fwd.logits, fwd.force_composed)?
        } else {
            None
        };
        let kv = fwd.keep_kv.then(|| KvCache {
            layers: new_kv,
            valid: past_valid
                .iter()
                .zip(&lens)
                .map(|(pv, &l)| pv.iter().copied().chain((0..s).map(|i| i < l)).collect())
                .collect(),
        });
        Ok(ForwardOut {
            logits,
            captures,
            hidden: h.to_dtype(DType::F32)?,
            kv,
            lens,
        })
    }

    /// Final norm + LM head at the requested positions.
    fn head(&self, h: &Tensor, which: &Logits, force_composed: bool) -> Result<Option<Tensor>> {
        let (b, s, d) = h.dims3()?;
        let picked = match which {
            Logits::None => return Ok(None),
            Logits::All => h.reshape((b * s, d))?,
            Logits::At(at) => {
                if let Some(&(r, p)) = at.iter().find(|&&(r, p)| r >= b || p >= s) {
                    return Err(Error::Model(format!(
                        "logits requested at ({r}, {p}) outside the batch [{b}, {s}]"
                    )));
                }
                let idx: Vec<u32> = at.iter().map(|&(r, p)| (r * s + p) as u32).collect();
                let idx = Tensor::from_vec(idx, (at.len(),), h.device())?;
                h.reshape((b * s, d))?.index_select(&idx, 0)?
            }
        };
        let normed = self.final_norm.forward(&picked, force_composed)?;
        let mut logits = self.lm_head.forward(&normed)?.to_dtype(DType::F32)?;
        if let Some(cap) = self.config.final_softcap {
            logits = layers::softcap(&logits, cap)?;
        }
        Ok(Some(match which {
            Logits::All => logits.reshape((b, s, self.config.vocab_size))?,
            _ => logits,
        }))
    }

    /// One additive mask per attention window used by `layers`, each `[B, 1, S, P + S]`: 0 where
    /// row `r`'s position `i` may attend, −∞ elsewhere. Cached positions follow `past_valid`;
    /// new positions are causal; a window also hides keys `w` or more positions back. Right
    /// padding needs no extra rule: a valid position never sees a later (padded) one.
    fn attention_masks(
        &self,
        past_valid: &[Vec<bool>],
        p: usize,
        s: usize,
        layers: std::ops::Range<usize>,
    ) -> Result<HashMap<Option<usize>, Tensor>> {
        let mut masks = HashMap::new();
        for layer in layers {
            let window = self.blocks[layer].attn.window;
            if let std::collections::hash_map::Entry::Vacant(slot) = masks.entry(window) {
                slot.insert(self.attention_mask(past_valid, p, s, window)?);
            }
        }
        Ok(masks)
    }

    fn attention_mask(
        &self,
        past_valid: &[Vec<bool>],
        p: usize,
        s: usize,
        window: Option<usize>,
    ) -> Result<Tensor> {
        let b = past_valid.len();
        let t = p + s;
        let mut m = vec![0f32; b * s * t];
        for (r, pv) in past_valid.iter().enumerate() {
            // Absolute position of every key slot: cached valid slots count up from 0, new ones
            // continue after them (the same numbering RoPE uses).
            let mut key_pos = Vec::with_capacity(t);
            let mut next = 0usize;
            for &valid in pv {
                key_pos.push(next);
                next += usize::from(valid);
            }
            key_pos.extend((0..s).map(|i| next + i));
            for i in 0..s {
                let q_pos = next + i;
                let row = &mut m[(r * s + i) * t..(r * s + i + 1) * t];
                for (j, cell) in row.iter_mut().enumerate() {
                    let causal = if j < p { pv[j] } else { j - p <= i };
                    let in_window = window.is_none_or(|w| q_pos - key_pos[j] < w);
                    if !(causal && in_window) {
                        *cell = f32::NEG_INFINITY;
                    }
                }
            }
        }
        Ok(Tensor::from_vec(m, (b, 1, s, t), &self.device)?)
    }

    /// A dense `[B, S, d]` tensor that is `vector` (shape `[d]`, or `[B, d]` for one per row) at
    /// `positions[row]` and zero elsewhere. Differentiable in `vector`.
    pub fn delta_at(&self, vector: &Tensor, positions: &[usize], s: usize) -> Result<Tensor> {
        let b = positions.len();
        let mut onehot = vec![0f32; b * s];
        for (r, &p) in positions.iter().enumerate() {
            if p >= s {
                return Err(Error::Model(format!(
                    "delta position {p} outside length {s}"
                )));
            }
            onehot[r * s + p] = 1.0;
        }
        let onehot = Tensor::from_vec(onehot, (b, s, 1), &self.device)?;
        let v = match vector.rank() {
            1 => vector.reshape((1, 1, vector.dim(0)?))?,
            2 => vector.unsqueeze(1)?,
            r => return Err(Error::Model(format!("delta vector of rank {r}"))),
        };
        Ok(onehot.broadcast_mul(&v)?)
    }

    /// Picks `t[row, position, :]` for each pair → `[N, d]`.
    pub fn gather_rows(t: &Tensor, at: &[(usize, usize)]) -> Result<Tensor> {
        let (_, s, d) = t.dims3()?;
        let idx: Vec<u32> = at.iter().map(|&(r, p)| (r * s + p) as u32).collect();
        let idx = Tensor::from_vec(idx, (at.len(),), t.device())?;
        Ok(t.reshape(((), d))?.index_select(&idx, 0)?)
    }

    /// L1 and Frobenius norms of a layer's edited matrix.
    pub fn edit_weight_norms(&self, layer: usize) -> Result<(f64, f64)> {
        let w = self.edit_weight(layer)?;
        Ok(matrix_norms(w)?)
    }

    /// Every weight under its Hugging Face name and layout (GPT-2 Conv1D transposed back), for
    /// export.
    pub fn hf_tensors(&self) -> Result<Vec<(String, Tensor)>> {
        Ok(match self.config.arch {
            Arch::Llama | Arch::Mistral | Arch::Qwen2 | Arch::Qwen3 => {
                llama::hf_tensors(self, &self.config)
            }
            Arch::Gemma2 => gemma2::hf_tensors(self),
            Arch::GptNeox => gptneox::hf_tensors(self)?,
            Arch::Gpt2 => gpt2::hf_tensors(self)?,
            Arch::Gptj => gptj::hf_tensors(self),
        })
    }

    /// The embedding row of a token (used by KN-style edits and tests).
    pub fn token_embedding(&self, id: u32) -> Result<Tensor> {
        Ok(self.wte.i(id as usize)?.to_dtype(DType::F32)?)
    }
}

/// Whether two tensors hold bit-identical values (same shape).
pub fn same_tensor(a: &Tensor, b: &Tensor) -> candle_core::Result<bool> {
    if a.dims() != b.dims() {
        return Ok(false);
    }
    let a = a.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
    let b = b.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
    Ok(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()))
}

/// (L1, Frobenius) norm of a matrix, accumulated in f64.
pub fn matrix_norms(w: &Tensor) -> candle_core::Result<(f64, f64)> {
    let w = w.to_dtype(DType::F64)?;
    let l1 = w.abs()?.sum_all()?.to_scalar::<f64>()?;
    let fro = w.sqr()?.sum_all()?.to_scalar::<f64>()?.sqrt();
    Ok((l1, fro))
}

#[cfg(test)]
mod tests;
