//! The vocabulary of a forward pass: what goes in ([`Input`], [`Forward`]), which activations
//! can be captured or shifted ([`Site`], [`SiteDelta`]), which logits come out ([`Logits`]), and
//! the keys/values kept between calls ([`KvCache`]).

use std::collections::HashMap;

use candle_core::Tensor;

use crate::error::{Error, Result};

/// A place in a block whose activation can be captured or shifted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Site {
    /// Input of the edited MLP matrix (`[.., d_ff]`): the "key".
    Key,
    /// Output of the attention sub-layer (after its output projection).
    AttnOut,
    /// Output of the MLP (after the edited matrix): the "value".
    MlpOut,
    /// Residual stream after the block (the hidden state the next block reads).
    BlockOut,
}

/// A delta added to one layer's activation: `value` is dense `[B, S, d_model]`
/// (see [`Model::delta_at`] to place a vector at chosen positions).
#[derive(Debug, Clone)]
pub struct SiteDelta {
    pub layer: usize,
    pub site: Site,
    pub value: Tensor,
}

/// Which logits to compute. The LM head is the single largest matrix of a small model, so
/// editors ask only for the positions they score.
#[derive(Debug, Clone, Default)]
pub enum Logits {
    #[default]
    None,
    /// `[B, S, V]`.
    All,
    /// `[N, V]`, one row per `(row, position)`.
    At(Vec<(usize, usize)>),
}

/// The positions being computed: token ids, or hidden states entering `start_layer`.
#[derive(Debug, Clone)]
pub enum Input<'a> {
    Tokens(&'a [Vec<u32>]),
    /// `[B, S, d_model]` with the valid length of each row.
    Hidden {
        hidden: Tensor,
        lens: Vec<usize>,
    },
}

/// Cached keys/values of earlier positions for layers `start..`, with per-row validity.
#[derive(Debug, Clone)]
pub struct KvCache {
    /// Indexed by absolute layer; `None` below the first cached layer.
    pub layers: Vec<Option<(Tensor, Tensor)>>,
    /// `valid[row][position]`: whether that cached position may be attended to.
    pub valid: Vec<Vec<bool>>,
}

impl KvCache {
    pub fn len(&self) -> usize {
        self.valid.first().map_or(0, Vec::len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of valid positions of each row: the absolute position of its next token.
    pub fn next_positions(&self) -> Vec<usize> {
        self.valid
            .iter()
            .map(|r| r.iter().filter(|&&v| v).count())
            .collect()
    }

    /// Keeps only the first `keep[row]` positions of each row valid (a prefix of each prompt).
    pub fn truncated(&self, keep: &[usize]) -> Self {
        let valid = self
            .valid
            .iter()
            .zip(keep)
            .map(|(row, &k)| row.iter().enumerate().map(|(j, &v)| v && j < k).collect())
            .collect();
        Self {
            layers: self.layers.clone(),
            valid,
        }
    }

    /// Only the given rows, in the given order (a batch whose other rows are done).
    pub fn select_rows(&self, rows: &[usize]) -> candle_core::Result<Self> {
        let Some(device) = self.layers.iter().flatten().map(|(k, _)| k.device()).next() else {
            return Ok(Self {
                layers: self.layers.clone(),
                valid: rows.iter().map(|&r| self.valid[r].clone()).collect(),
            });
        };
        let ids: Vec<u32> = rows.iter().map(|&r| r as u32).collect();
        let index = Tensor::from_vec(ids, rows.len(), device)?;
        let layers = self
            .layers
            .iter()
            .map(|kv| {
                kv.as_ref()
                    .map(|(k, v)| Ok((k.index_select(&index, 0)?, v.index_select(&index, 0)?)))
                    .transpose()
            })
            .collect::<candle_core::Result<_>>()?;
        Ok(Self {
            layers,
            valid: rows.iter().map(|&r| self.valid[r].clone()).collect(),
        })
    }

    /// Memory held by the cached tensors, in bytes.
    pub fn bytes(&self) -> usize {
        self.layers
            .iter()
            .flatten()
            .map(|(k, v)| (k.elem_count() + v.elem_count()) * k.dtype().size_in_bytes())
            .sum()
    }
}

/// A forward request. Build with `Forward::default()` and set what you need.
#[derive(Debug, Clone, Default)]
pub struct Forward<'a> {
    pub start_layer: usize,
    /// Run layers `start_layer..end_layer`; `None` runs every layer and then the LM head.
    pub end_layer: Option<usize>,
    pub past: Option<&'a KvCache>,
    pub deltas: Vec<SiteDelta>,
    pub captures: Vec<(usize, Site)>,
    pub logits: Logits,
    pub keep_kv: bool,
    /// Use the differentiable composed ops even without a gradient (tests compare both paths).
    pub force_composed: bool,
}

pub struct ForwardOut {
    pub logits: Option<Tensor>,
    pub captures: HashMap<(usize, Site), Tensor>,
    /// Output of the last layer run, `[B, S, d_model]` (before the final norm).
    pub hidden: Tensor,
    /// Past and new keys/values, when `keep_kv` was set.
    pub kv: Option<KvCache>,
    /// Valid length of each row of this call's positions.
    pub lens: Vec<usize>,
}

impl ForwardOut {
    pub fn capture(&self, layer: usize, site: Site) -> Result<&Tensor> {
        self.captures
            .get(&(layer, site))
            .ok_or_else(|| Error::Model(format!("no capture of {site:?} at layer {layer}")))
    }

    pub fn logits(&self) -> Result<&Tensor> {
        self.logits
            .as_ref()
            .ok_or_else(|| Error::Model("forward did not compute logits".into()))
    }
}
