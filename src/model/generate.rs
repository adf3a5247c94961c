//! KV-cached text generation: greedy, or sampled with temperature / top-k from a seeded RNG.

use candle_core::{DType, Tensor, D};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{Forward, Input, KvCache, Logits, Model};
use crate::error::{Error, Result};

#[derive(Debug, Clone)]
pub struct GenerateOptions {
    pub max_tokens: usize,
    /// 0 = greedy.
    pub temperature: f64,
    pub top_k: Option<usize>,
    pub seed: u64,
    /// Stop a row at the model's end-of-sequence token(s).
    pub stop_at_eos: bool,
    /// Stop a row once its decoded continuation contains any of these strings.
    pub stop_strings: Vec<String>,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        Self {
            max_tokens: 32,
            temperature: 0.0,
            top_k: None,
            seed: 42,
            stop_at_eos: true,
            stop_strings: Vec::new(),
        }
    }
}

/// Picks the next token from a `[V]` logit row.
pub fn pick_token(logits: &[f32], opts: &GenerateOptions, rng: &mut ChaCha8Rng) -> u32 {
    if opts.temperature <= 0.0 {
        return argmax(logits);
    }
    let mut idx: Vec<usize> = (0..logits.len()).collect();
    if let Some(k) = opts.top_k.filter(|&k| k > 0 && k < logits.len()) {
        idx.select_nth_unstable_by(k - 1, |&a, &b| logits[b].total_cmp(&logits[a]));
        idx.truncate(k);
    }
    let max = idx
        .iter()
        .map(|&i| logits[i])
        .fold(f32::NEG_INFINITY, f32::max);
    let weights: Vec<f64> = idx
        .iter()
        .map(|&i| (((logits[i] - max) as f64) / opts.temperature).exp())
        .collect();
    let total: f64 = weights.iter().sum();
    let mut u = rng.random::<f64>() * total;
    for (w, &i) in weights.iter().zip(&idx) {
        if u < *w {
            return i as u32;
        }
        u -= w;
    }
    idx[idx.len() - 1] as u32
}

/// Index of the largest value (first on ties, like `torch.argmax`).
pub fn argmax(xs: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in xs.iter().enumerate() {
        if x > xs[best] {
            best = i;
        }
    }
    best as u32
}

impl Model {
    /// The reference tools' fixed-length samples (ROME/MEMIT `generate_fast`): each prompt is
    /// continued with temperature-1 top-k sampling, not stopping at end-of-sequence, until the
    /// longest prompt of the batch reaches `total_tokens`; returns prompt + sample per row.
    pub fn sample_to_length(
        &self,
        prompts: &[Vec<u32>],
        total_tokens: usize,
        top_k: usize,
        seed: u64,
    ) -> Result<Vec<Vec<u32>>> {
        let longest = prompts.iter().map(Vec::len).max().unwrap_or(1);
        let opts = GenerateOptions {
            max_tokens: total_tokens.saturating_sub(longest).max(1),
            temperature: 1.0,
            top_k: Some(top_k),
            seed,
            stop_at_eos: false,
            stop_strings: vec![],
        };
        let outs = self.generate_batch_with(prompts, &opts, |_, _| true)?;
        Ok(prompts
            .iter()
            .zip(outs)
            .map(|(p, o)| p.iter().copied().chain(o).collect())
            .collect())
    }

    /// Generates a continuation of each prompt (token ids); returns only the new tokens.
    /// `on_step(row, token)` is called as tokens are chosen; returning `false` stops everything.
    pub fn generate_batch_with(
        &self,
        prompts: &[Vec<u32>],
        opts: &GenerateOptions,
        mut on_step: impl FnMut(usize, u32) -> bool,
    ) -> Result<Vec<Vec<u32>>> {
        if prompts.is_empty() || prompts.iter().any(Vec::is_empty) {
            return Err(Error::Input("cannot generate from an empty prompt".into()));
        }
        let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
        if longest + opts.max_tokens > self.config.max_positions {
            return Err(Error::Input(format!(
                "prompt ({longest} tokens) + {} new tokens exceed the context window of {} tokens",
                opts.max_tokens, self.config.max_positions
            )));
        }
        let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
        let b = prompts.len();
        let mut out: Vec<Vec<u32>> = vec![Vec::new(); b];
        let mut done = vec![false; b];
        let last: Vec<(usize, usize)> = prompts
            .iter()
            .enumerate()
            .map(|(r, p)| (r, p.len() - 1))
            .collect();
        let first = self.forward(
            Input::Tokens(prompts),
            &Forward {
                logits: Logits::At(last),
                keep_kv: true,
                ..Default::default()
            },
        )?;
        let mut cache: KvCache = first.kv.clone().expect("kept");
        let mut logits = first.logits()?.clone();
        for _ in 0..opts.max_tokens {
            let rows = logits.to_dtype(DType::F32)?.to_vec2::<f32>()?;
            let mut next = Vec::with_capacity(b);
            for (r, row) in rows.iter().enumerate() {
                let tok = pick_token(row, opts, &mut rng);
                next.push(tok);
                if done[r] {
                    continue;
                }
                out[r].push(tok);
                if !on_step(r, tok) {
                    return Ok(out);
                }
                // Like transformers, the end-of-sequence token is part of the output.
                if opts.stop_at_eos && self.config.eos_token_ids.contains(&tok) {
                    done[r] = true;
                    continue;
                }
                if !opts.stop_strings.is_empty() {
                    let text = self.decode(&out[r])?;
                    if opts.stop_strings.iter().any(|s| text.contains(s.as_str())) {
                        done[r] = true;
                    }
                }
            }
            if done.iter().all(|&d| d) {
                break;
            }
            let rows: Vec<Vec<u32>> = next.iter().map(|&t| vec![t]).collect();
            let step = self.forward(
                Input::Tokens(&rows),
                &Forward {
                    past: Some(&cache),
                    logits: Logits::At((0..b).map(|r| (r, 0)).collect()),
                    keep_kv: true,
                    ..Default::default()
                },
            )?;
            logits = step.logits()?.clone();
            cache = step.kv.expect("kept");
        }
        Ok(out)
    }

    /// Generates from one prompt string; returns the new text.
    pub fn generate_text(&self, prompt: &str, opts: &GenerateOptions) -> Result<String> {
        let ids = self.encode(prompt)?;
        let out = self.generate_batch_with(&[ids], opts, |_, _| true)?;
        self.decode(&out[0])
    }

    /// Greedy next-token ids at every position of each row (`[B][S]`), for teacher-forced checks.
    pub fn argmax_all(&self, rows: &[Vec<u32>]) -> Result<Vec<Vec<u32>>> {
        let out = self.forward(
            Input::Tokens(rows),
            &Forward {
                logits: Logits::All,
                ..Default::default()
            },
        )?;
        let am = out.logits()?.argmax(D::Minus1)?.to_vec2::<u32>()?;
        Ok(am)
    }
}

/// Log-softmax of `[N, V]` logits, gathered at `targets[n]` → `[N]` (f32).
pub fn target_logprobs(logits: &Tensor, targets: &[u32]) -> Result<Tensor> {
    let lsm = super::layers::log_softmax_last(logits)?;
    let idx = Tensor::from_vec(targets.to_vec(), (targets.len(), 1), logits.device())?;
    Ok(lsm.gather(&idx, D::Minus1)?.squeeze(D::Minus1)?)
}
