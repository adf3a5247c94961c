//! What the model says next: top next-token probabilities and short greedy continuations, for
//! before/after displays.

use candle_core::D;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::model::generate::GenerateOptions;
use crate::model::layers::softmax_last;
use crate::model::{Logits, Model};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    pub token: String,
    pub prob: f64,
}

/// The `k` most likely next tokens after each prompt.
pub fn top_next(model: &Model, prompts: &[String], k: usize) -> Result<Vec<Vec<Prediction>>> {
    let rows: Vec<Vec<u32>> = prompts
        .iter()
        .map(|p| model.encode(p))
        .collect::<Result<_>>()?;
    let at: Vec<(usize, usize)> = rows
        .iter()
        .enumerate()
        .map(|(r, ids)| (r, ids.len().saturating_sub(1)))
        .collect();
    let logits = model.logits(&rows, Logits::At(at))?;
    let probs = softmax_last(&logits, false)?;
    let (vals, idx) = {
        let sorted = probs
            .arg_sort_last_dim(false)?
            .narrow(D::Minus1, 0, k)?
            .contiguous()?;
        (
            probs.gather(&sorted, D::Minus1)?.to_vec2::<f32>()?,
            sorted.to_vec2::<u32>()?,
        )
    };
    vals.iter()
        .zip(&idx)
        .map(|(v, i)| {
            v.iter()
                .zip(i)
                .map(|(&p, &t)| {
                    Ok(Prediction {
                        token: model.decode(&[t])?,
                        prob: p as f64,
                    })
                })
                .collect()
        })
        .collect()
}

/// Greedy continuation of each prompt (`n` tokens, stopping at end of sequence).
pub fn continuations(model: &Model, prompts: &[String], n: usize) -> Result<Vec<String>> {
    let rows: Vec<Vec<u32>> = prompts
        .iter()
        .map(|p| model.encode(p))
        .collect::<Result<_>>()?;
    let opts = GenerateOptions {
        max_tokens: n,
        ..Default::default()
    };
    let outs = model.generate_batch_with(&rows, &opts, |_, _| true)?;
    outs.iter().map(|o| model.decode_text(o)).collect()
}
