//! Causal tracing (Meng et al., "Locating and Editing Factual Associations in GPT", 2022, §2.1):
//! which layers, at which tokens, carry a fact from the subject to the answer. Editors change
//! the MLP layers where restoring the MLP output at the subject's last token matters most, so a
//! trace is how a user picks edit layers for a model nobody has tuned.
//!
//! For a prompt x with subject tokens S and answer token o:
//!
//! ```text
//! clean       p*      = P(o | x)
//! corrupted   p_c     = E_ε P(o | e_i + ε_i for i ∈ S),          ε_i ~ N(0, (ν σ)² I), ν = 3
//! restored    p(l, i) = E_ε P(o | corrupted, a_j(i) := clean a_j(i) for j ∈ W(l))
//! indirect effect  IE(l, i) = p(l, i) − p_c
//! ```
//!
//! σ is the standard deviation of the embedding layer's output (over a sample of the
//! vocabulary), a_j(i) is the restored activation of layer j at token i — the hidden state
//! after the block, the MLP output, or the attention output — and W(l) is a window of layers
//! around l: one layer for hidden states, `window` (10 in the paper) for MLP and attention.
//! The same noise draws are used for every restoration, so effects are comparable across
//! cells.
//!
//! Each restoration is exact, not approximated: the corrupted run is replayed layer by layer
//! from the first restored layer, and at every layer of the window the restored site is set to
//! its clean value by adding `clean − current` there (the current value is read from a pass of
//! that layer without the restoration). Tokens before the subject are not run: attention is
//! causal, so the noise has not reached them and restoring them changes nothing (their effect is
//! 0 by construction).

use std::ops::Range;
use std::path::{Path, PathBuf};

use candle_core::{DType, IndexOp, Tensor};
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::eval::plots::{self, Heatmap};
use crate::model::{Forward, Input, Logits, Model, Site, SiteDelta};

/// What a restoration puts back to its clean value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Restored {
    /// The residual stream after a block.
    HiddenState,
    /// The MLP sub-layer's output (what the edited matrix writes).
    Mlp,
    /// The attention sub-layer's output.
    Attention,
}

impl Restored {
    pub const ALL: [Restored; 3] = [Restored::HiddenState, Restored::Mlp, Restored::Attention];

    fn site(self) -> Site {
        match self {
            Restored::HiddenState => Site::BlockOut,
            Restored::Mlp => Site::MlpOut,
            Restored::Attention => Site::AttnOut,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Restored::HiddenState => "hidden state",
            Restored::Mlp => "MLP output",
            Restored::Attention => "attention output",
        }
    }

    /// Heatmap colours of the paper's figures (purple, green, red).
    fn color(self) -> (u8, u8, u8) {
        match self {
            Restored::HiddenState => (84, 39, 143),
            Restored::Mlp => (0, 109, 44),
            Restored::Attention => (165, 15, 21),
        }
    }
}

/// How to corrupt and restore; the defaults are the paper's.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TraceOptions {
    /// Noise draws averaged per cell.
    pub samples: usize,
    /// ν: the noise's standard deviation in units of the embeddings' σ.
    pub noise: f64,
    /// Layers restored together for MLP and attention (hidden states restore one layer).
    pub window: usize,
    pub seed: u64,
}

impl Default for TraceOptions {
    fn default() -> Self {
        Self {
            samples: 10,
            noise: 3.0,
            window: 10,
            seed: 1,
        }
    }
}

impl TraceOptions {
    fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(Error::Input(m.into()));
        if self.samples == 0 {
            return bad("trace: --samples must be at least 1");
        }
        if self.window == 0 {
            return bad("trace: --window must be at least 1");
        }
        if !(self.noise.is_finite() && self.noise > 0.0) {
            return bad("trace: --noise must be a positive number");
        }
        Ok(())
    }

    fn window_of(&self, restored: Restored) -> usize {
        match restored {
            Restored::HiddenState => 1,
            _ => self.window,
        }
    }
}

/// The restored probability of the answer for one kind of site, `[token][layer]`.
#[derive(Debug, Clone, Serialize)]
pub struct SiteTrace {
    pub restored: Restored,
    pub window: usize,
    pub probability: Vec<Vec<f64>>,
}

/// A finished trace of one fact.
#[derive(Debug, Clone, Serialize)]
pub struct CausalTrace {
    pub prompt: String,
    pub subject: String,
    /// The prompt's tokens as text, one per position.
    pub tokens: Vec<String>,
    pub subject_tokens: Range<usize>,
    pub answer: String,
    pub answer_id: u32,
    /// Standard deviation of the embeddings; the noise is `noise × sigma`.
    pub sigma: f64,
    pub options: TraceOptions,
    pub p_clean: f64,
    pub p_corrupted: f64,
    pub sites: Vec<SiteTrace>,
}

impl CausalTrace {
    pub fn n_layers(&self) -> usize {
        self.sites.first().map_or(0, |s| s.probability[0].len())
    }

    pub fn site(&self, restored: Restored) -> Option<&SiteTrace> {
        self.sites.iter().find(|s| s.restored == restored)
    }

    /// IE(l, i) = p(l, i) − p_c.
    pub fn indirect_effect(&self, restored: Restored, token: usize, layer: usize) -> Option<f64> {
        let p = self.site(restored)?.probability.get(token)?.get(layer)?;
        Some(p - self.p_corrupted)
    }

    /// The subject's last token: where editors read their keys.
    pub fn subject_last(&self) -> usize {
        self.subject_tokens.end - 1
    }

    /// The layer where restoring `restored` at `token` helps most, with its effect.
    pub fn peak(&self, restored: Restored, token: usize) -> Option<(usize, f64)> {
        (0..self.n_layers())
            .filter_map(|l| Some((l, self.indirect_effect(restored, token, l)?)))
            .max_by(|a, b| a.1.total_cmp(&b.1))
    }

    /// Writes `trace.json` (everything), `trace.csv` (one row per cell) and the heatmaps
    /// `trace.svg` / `trace.png` into `dir`; returns the files written.
    pub fn write(&self, dir: &Path) -> Result<Vec<PathBuf>> {
        crate::util::ensure_dir(dir)?;
        let json = dir.join("trace.json");
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| Error::bad_file(&json, format!("cannot serialise the trace: {e}")))?;
        crate::util::write_atomic(&json, text.as_bytes())?;
        let csv = dir.join("trace.csv");
        crate::util::write_atomic(&csv, self.csv().as_bytes())?;
        let mut files = vec![json, csv];
        files.extend(plots::render_heatmaps(
            &self.heatmaps(),
            self.sites.len(),
            &dir.join("trace"),
        )?);
        Ok(files)
    }

    fn csv(&self) -> String {
        let mut out =
            String::from("restored,window,layer,token_index,token,in_subject,p,indirect_effect\n");
        for s in &self.sites {
            for (i, row) in s.probability.iter().enumerate() {
                for (l, p) in row.iter().enumerate() {
                    out.push_str(&format!(
                        "{:?},{},{l},{i},{:?},{},{p},{}\n",
                        s.restored,
                        s.window,
                        self.tokens[i],
                        self.subject_tokens.contains(&i),
                        p - self.p_corrupted
                    ));
                }
            }
        }
        out
    }

    /// One heatmap per restored site: tokens top to bottom (subject tokens starred), layers
    /// left to right, colour = indirect effect, on one scale across the panels.
    pub fn heatmaps(&self) -> Vec<Heatmap> {
        let rows: Vec<String> = self
            .tokens
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let star = if self.subject_tokens.contains(&i) {
                    "*"
                } else {
                    ""
                };
                format!("{}{star}", t.replace('\n', "\\n"))
            })
            .collect();
        let effects = |s: &SiteTrace| -> Vec<Vec<f64>> {
            s.probability
                .iter()
                .map(|r| r.iter().map(|p| p - self.p_corrupted).collect())
                .collect()
        };
        let hi = self
            .sites
            .iter()
            .flat_map(|s| effects(s).into_iter().flatten())
            .fold(1e-6f64, f64::max);
        self.sites
            .iter()
            .map(|s| Heatmap {
                title: match s.window {
                    1 => format!("Restoring the {}", s.restored.label()),
                    w => format!("Restoring the {} ({w} layers)", s.restored.label()),
                },
                x_label: if s.window == 1 {
                    "layer".into()
                } else {
                    "centre of the restored layers".into()
                },
                value_label: format!("IE on p({})", self.answer.trim()),
                rows: rows.clone(),
                values: effects(s),
                range: (0.0, hi),
                color: s.restored.color(),
            })
            .collect()
    }
}

/// Byte range of `subject` in `text` mapped to the tokens that overlap it.
fn subject_tokens(model: &Model, text: &str, subject: &str) -> Result<(Vec<u32>, Range<usize>)> {
    let at = text.find(subject).ok_or_else(|| {
        Error::Input(format!(
            "the prompt {text:?} does not contain the subject {subject:?}"
        ))
    })?;
    let end = at + subject.len();
    let enc = model
        .tokenizer()?
        .encode(text, false)
        .map_err(|e| Error::Tokenizer(format!("cannot encode {text:?}: {e}")))?;
    let inside: Vec<usize> = enc
        .get_offsets()
        .iter()
        .enumerate()
        .filter(|(_, &(a, b))| b > at && a < end)
        .map(|(i, _)| i)
        .collect();
    match (inside.first(), inside.last()) {
        (Some(&a), Some(&b)) => Ok((enc.get_ids().to_vec(), a..b + 1)),
        _ => Err(Error::Input(format!(
            "cannot locate the subject {subject:?} in the tokens of {text:?}"
        ))),
    }
}

/// σ of the embedding layer's output over up to 4096 vocabulary ids spread evenly (the paper
/// measures it over its subjects; the whole vocabulary needs no dataset and is stable).
pub(crate) fn embedding_sigma(model: &Model) -> Result<f64> {
    let v = model.config.vocab_size;
    let step = v.div_ceil(4096).max(1);
    // One token per row: every id sits at position 0, so the spread is the tokens' own (a
    // learned position embedding only adds the same vector to each).
    let rows: Vec<Vec<u32>> = (0..v).step_by(step).map(|i| vec![i as u32]).collect();
    let e = model
        .embed_tokens(&rows)?
        .to_dtype(DType::F64)?
        .flatten_all()?;
    let mean = e.mean_all()?.to_scalar::<f64>()?;
    let var = e
        .affine(1.0, -mean)?
        .sqr()?
        .mean_all()?
        .to_scalar::<f64>()?;
    Ok(var.sqrt())
}

/// The embeddings of `options.samples` copies of `ids` with noise ε ~ N(0, (ν σ)² I) added at
/// the subject's tokens, `[N, S, d]`; the same seed gives the same draws.
pub(crate) fn corrupted_embeddings(
    model: &Model,
    ids: &[u32],
    subject: Range<usize>,
    sigma: f64,
    options: &TraceOptions,
) -> Result<Tensor> {
    let (n, s, d) = (options.samples, ids.len(), model.config.d_model);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(options.seed);
    let normal = Normal::new(0.0, options.noise * sigma)
        .map_err(|e| Error::Input(format!("trace: noise: {e}")))?;
    let mut noise = vec![0f32; n * s * d];
    for sample in 0..n {
        for i in subject.clone() {
            let at = (sample * s + i) * d;
            for x in &mut noise[at..at + d] {
                *x = normal.sample(&mut rng) as f32;
            }
        }
    }
    let embeds = model.embed_tokens(&vec![ids.to_vec(); n])?;
    let noise = Tensor::from_vec(noise, (n, s, d), embeds.device())?.to_dtype(embeds.dtype())?;
    Ok((embeds + noise)?)
}

/// Probability of `answer` at the last position of every row.
fn answer_probability(model: &Model, h: &Tensor, start: usize, answer: u32) -> Result<Vec<f64>> {
    let (b, s, _) = h.dims3()?;
    let out = model.forward(
        Input::Hidden {
            hidden: h.clone(),
            lens: vec![s; b],
        },
        &Forward {
            start_layer: start,
            logits: Logits::At((0..b).map(|r| (r, s - 1)).collect()),
            ..Default::default()
        },
    )?;
    let logits = out
        .logits
        .ok_or_else(|| Error::Model("forward did not compute logits".into()))?;
    let p = candle_nn::ops::softmax_last_dim(&logits.to_dtype(DType::F32)?)?;
    Ok(p.i((.., answer as usize))?
        .to_dtype(DType::F64)?
        .to_vec1::<f64>()?)
}

/// Runs layer `layer` alone on `h`, adding `delta` at `site` and capturing `capture`.
fn run_layer(
    model: &Model,
    h: &Tensor,
    layer: usize,
    delta: Option<(Site, Tensor)>,
    capture: Option<Site>,
) -> Result<crate::model::ForwardOut> {
    let (b, s, _) = h.dims3()?;
    model.forward(
        Input::Hidden {
            hidden: h.clone(),
            lens: vec![s; b],
        },
        &Forward {
            start_layer: layer,
            end_layer: Some(layer + 1),
            deltas: delta
                .map(|(site, value)| SiteDelta { layer, site, value })
                .into_iter()
                .collect(),
            captures: capture.map(|c| (layer, c)).into_iter().collect(),
            ..Default::default()
        },
    )
}

/// The traced prompt: everything a restoration needs, computed once.
struct Setup {
    n_samples: usize,
    /// Restored token positions (the subject's first token onwards).
    positions: Vec<usize>,
    /// Noisy embeddings, `[N, S, d]`.
    corrupted_input: Tensor,
    /// Clean and corrupted captures of every layer and site: clean `[1, S, d]`, corrupted
    /// `[N, S, d]`.
    clean: crate::model::ForwardOut,
    corrupted: crate::model::ForwardOut,
    /// `[R, S, 1]` with R = positions × samples: row `k·N + s` restores position `positions[k]`.
    mask: Tensor,
    answer: u32,
}

impl Setup {
    /// `t` (`[N, S, d]`) repeated once per restored position.
    fn per_position(&self, t: &Tensor) -> Result<Tensor> {
        let copies = vec![t.clone(); self.positions.len()];
        Ok(Tensor::cat(&copies, 0)?)
    }

    /// The delta that sets each row's restored position to its clean value.
    fn restore(&self, current: &Tensor, clean: &Tensor) -> Result<Tensor> {
        let diff = clean.broadcast_sub(current)?;
        Ok(diff.broadcast_mul(&self.mask)?)
    }

    /// Mean restored probability per position for the window of layers `window`.
    fn restored_probability(
        &self,
        model: &Model,
        restored: Restored,
        window: Range<usize>,
    ) -> Result<Vec<f64>> {
        let site = restored.site();
        let mut h = match window.start {
            0 => self.per_position(&self.corrupted_input)?,
            a => self.per_position(self.corrupted.capture(a - 1, Site::BlockOut)?)?,
        };
        for j in window.clone() {
            let current = if j == window.start {
                self.per_position(self.corrupted.capture(j, site)?)?
            } else {
                run_layer(model, &h, j, None, Some(site))?
                    .capture(j, site)?
                    .clone()
            };
            let delta = self.restore(&current, self.clean.capture(j, site)?)?;
            h = run_layer(model, &h, j, Some((site, delta)), None)?.hidden;
        }
        let p = answer_probability(model, &h, window.end, self.answer)?;
        Ok(p.chunks(self.n_samples)
            .map(|c| c.iter().sum::<f64>() / c.len() as f64)
            .collect())
    }
}

/// Traces `subject` in `prompt` (which may hold `{}` for the subject). `answer` is the traced
/// continuation; `None` traces the model's own top next token. `progress(done, total)` is called
/// after each restored layer.
pub fn causal_trace(
    model: &Model,
    subject: &str,
    prompt: &str,
    answer: Option<&str>,
    options: TraceOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<CausalTrace> {
    options.validate()?;
    if subject.trim().is_empty() {
        return Err(Error::Input("trace: the subject is empty".into()));
    }
    let text = prompt.replacen("{}", subject, 1);
    let (ids, subject_range) = subject_tokens(model, &text, subject)?;
    let (n, s) = (options.samples, ids.len());
    let layers = model.n_layers();
    let site_captures = |count: usize| -> Vec<(usize, Site)> {
        (0..count)
            .flat_map(|l| Restored::ALL.map(|r| (l, r.site())))
            .collect()
    };

    let clean = model.forward(
        Input::Tokens(std::slice::from_ref(&ids)),
        &Forward {
            captures: site_captures(layers),
            logits: Logits::At(vec![(0, s - 1)]),
            ..Default::default()
        },
    )?;
    let clean_logits = clean
        .logits
        .as_ref()
        .ok_or_else(|| Error::Model("forward did not compute logits".into()))?
        .to_dtype(DType::F32)?;
    let answer_id = match answer {
        Some(a) => crate::edit::request::target_ids(model, a)?[0],
        None => clean_logits.i(0)?.argmax(0)?.to_scalar::<u32>()?,
    };
    let p_clean = candle_nn::ops::softmax_last_dim(&clean_logits)?
        .i((0, answer_id as usize))?
        .to_scalar::<f32>()? as f64;

    let sigma = embedding_sigma(model)?;
    let corrupted_input =
        corrupted_embeddings(model, &ids, subject_range.clone(), sigma, &options)?;
    let corrupted = model.forward(
        Input::Hidden {
            hidden: corrupted_input.clone(),
            lens: vec![s; n],
        },
        &Forward {
            captures: site_captures(layers),
            logits: Logits::At((0..n).map(|r| (r, s - 1)).collect()),
            ..Default::default()
        },
    )?;
    let p_corrupted = {
        let logits = corrupted
            .logits
            .as_ref()
            .ok_or_else(|| Error::Model("forward did not compute logits".into()))?;
        let p = candle_nn::ops::softmax_last_dim(&logits.to_dtype(DType::F32)?)?
            .i((.., answer_id as usize))?
            .to_dtype(DType::F64)?
            .to_vec1::<f64>()?;
        p.iter().sum::<f64>() / n as f64
    };

    let positions: Vec<usize> = (subject_range.start..s).collect();
    let mut mask = vec![0f32; positions.len() * n * s];
    for (k, &pos) in positions.iter().enumerate() {
        for sample in 0..n {
            mask[(k * n + sample) * s + pos] = 1.0;
        }
    }
    let mask = Tensor::from_vec(mask, (positions.len() * n, s, 1), &model.device)?
        .to_dtype(corrupted_input.dtype())?;
    let setup = Setup {
        n_samples: n,
        positions,
        corrupted_input,
        clean,
        corrupted,
        mask,
        answer: answer_id,
    };

    let total = layers * Restored::ALL.len();
    let mut done = 0;
    let mut sites = Vec::new();
    for restored in Restored::ALL {
        let w = options.window_of(restored);
        let by_layer = (0..layers)
            .map(|l| {
                // The paper's window: layers l − ⌊w/2⌋ .. l + ⌈w/2⌉, clipped to the model.
                let window = l.saturating_sub(w / 2)..(l + w.div_ceil(2)).min(layers).max(l + 1);
                let p = setup.restored_probability(model, restored, window);
                done += 1;
                progress(done, total);
                p
            })
            .collect::<Result<Vec<_>>>()?;
        // Tokens before the subject keep p_c: there is nothing to restore (module docs).
        let first = setup.positions[0];
        let probability = (0..s)
            .map(|i| match i.checked_sub(first) {
                Some(k) => by_layer.iter().map(|p| p[k]).collect(),
                None => vec![p_corrupted; layers],
            })
            .collect();
        sites.push(SiteTrace {
            restored,
            window: w,
            probability,
        });
    }

    let tokens = ids
        .iter()
        .map(|&id| model.decode(&[id]))
        .collect::<Result<Vec<_>>>()?;
    Ok(CausalTrace {
        prompt: text,
        subject: subject.to_string(),
        tokens,
        subject_tokens: subject_range,
        answer: model.decode(&[answer_id])?,
        answer_id,
        sigma,
        options,
        p_clean,
        p_corrupted,
        sites,
    })
}

#[cfg(test)]
mod tests;
