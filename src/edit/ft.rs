//! FT-L / FT-M — constrained fine-tuning of one edited matrix (spec §3.4).
//!
//! ```text
//! FT-L:  L(W) = −mean_m log p(t_m | prompt)        every target token read at the last prompt position
//! FT-M:  L(W) = −mean_m log p(t_m | prompt, t_<m)  teacher forcing, loss on the target tokens only
//! W ← Adam(W, ∇L);  optionally W ← clamp(W, W0 − ε, W0 + ε)
//! ```
//! `num_steps` epochs over the step's requests in batches; a batch whose loss is already below
//! 1e-2 is skipped and training stops once the epoch's mean loss is below 1e-2. Layers below the
//! edited one never change, so their output is computed once and every step starts there.

use candle_core::{DType, Tensor, Var};
use candle_nn::optim::{AdamW, Optimizer, ParamsAdamW};

use super::hparams::FtObjective;
use super::request::target_ids;
use super::{
    commit_updates, restore_weights, undo_weights, EditContext, EditOutcome, EditRequest, Editor,
    HParams, Method, Phase, Progress, Stopwatch, TargetSummary, Timings, UndoRecord,
};
use crate::error::{Error, Result};
use crate::model::generate::target_logprobs;
use crate::model::{Forward, Input, Logits, Model, Site};

pub struct FineTune {
    hp: HParams,
}

impl FineTune {
    pub fn new(hp: HParams) -> Self {
        Self { hp }
    }
}

/// One batch, prepared: hidden states entering the edited layer and the scored positions.
struct Batch {
    hidden: Tensor,
    lens: Vec<usize>,
    at: Vec<(usize, usize)>,
    targets: Vec<u32>,
}

fn prepare(
    model: &Model,
    layer: usize,
    requests: &[EditRequest],
    objective: FtObjective,
) -> Result<Batch> {
    let mut rows = Vec::new();
    let mut at = Vec::new();
    let mut targets = Vec::new();
    for (r, req) in requests.iter().enumerate() {
        let prompt = model.encode(&req.filled_prompt())?;
        let tgt = target_ids(model, &req.target)?;
        if prompt.is_empty() {
            return Err(Error::Input(format!(
                "the prompt of {:?} tokenizes to nothing",
                req.describe()
            )));
        }
        match objective {
            FtObjective::PromptLast => {
                for &t in &tgt {
                    at.push((r, prompt.len() - 1));
                    targets.push(t);
                }
                rows.push(prompt);
            }
            FtObjective::TargetNew => {
                let (ids, positions) = answer_row(&prompt, &tgt);
                at.extend(positions.into_iter().map(|p| (r, p)));
                targets.extend_from_slice(&tgt);
                rows.push(ids);
            }
        }
    }
    let lens = rows.iter().map(Vec::len).collect();
    let hidden = if layer == 0 {
        model.embed_tokens(&rows)?
    } else {
        model
            .forward(
                Input::Tokens(&rows),
                &Forward {
                    end_layer: Some(layer),
                    captures: vec![(layer - 1, Site::BlockOut)],
                    ..Default::default()
                },
            )?
            .capture(layer - 1, Site::BlockOut)?
            .clone()
    };
    Ok(Batch {
        hidden,
        lens,
        at,
        targets,
    })
}

/// `prompt + target[..-1]` and the positions whose logits predict each target token.
fn answer_row(prompt: &[u32], target: &[u32]) -> (Vec<u32>, Vec<usize>) {
    let mut ids = prompt.to_vec();
    ids.extend_from_slice(&target[..target.len() - 1]);
    let positions = (0..target.len()).map(|m| prompt.len() - 1 + m).collect();
    (ids, positions)
}

/// Teacher-forced rows of a step's requests (one per request): the tokens, the `(row, position)`
/// pairs whose logits predict target tokens, and those target tokens.
pub(super) struct AnswerRows {
    pub rows: Vec<Vec<u32>>,
    pub at: Vec<(usize, usize)>,
    pub targets: Vec<u32>,
}

pub(super) fn answer_rows(model: &Model, requests: &[EditRequest]) -> Result<AnswerRows> {
    let mut out = AnswerRows {
        rows: Vec::new(),
        at: Vec::new(),
        targets: Vec::new(),
    };
    for (r, req) in requests.iter().enumerate() {
        let prompt = model.encode(&req.filled_prompt())?;
        if prompt.is_empty() {
            return Err(Error::Input(format!(
                "the prompt of {:?} tokenizes to nothing",
                req.describe()
            )));
        }
        let target = target_ids(model, &req.target)?;
        let (ids, positions) = answer_row(&prompt, &target);
        out.at.extend(positions.into_iter().map(|p| (r, p)));
        out.targets.extend_from_slice(&target);
        out.rows.push(ids);
    }
    Ok(out)
}

fn batch_loss(model: &Model, layer: usize, b: &Batch) -> Result<Tensor> {
    let out = model.forward(
        Input::Hidden {
            hidden: b.hidden.clone(),
            lens: b.lens.clone(),
        },
        &Forward {
            start_layer: layer,
            logits: Logits::At(b.at.clone()),
            ..Default::default()
        },
    )?;
    Ok(target_logprobs(out.logits()?, &b.targets)?
        .mean_all()?
        .neg()?)
}

impl Editor for FineTune {
    fn method(&self) -> Method {
        self.hp.method
    }

    fn hparams(&self) -> &HParams {
        &self.hp
    }

    fn apply(
        &mut self,
        model: &mut Model,
        cx: &mut EditContext,
        requests: &[EditRequest],
    ) -> Result<EditOutcome> {
        self.hp.validate(&model.config)?;
        for r in requests {
            r.validate()?;
        }
        let layer = self.hp.layers[0];
        let mut timer = Stopwatch::start();
        let mut timings = Timings::default();
        cx.ctl.report(Progress::Phase(Phase::Target));
        let batches = requests
            .chunks(self.hp.batch_size)
            .map(|c| prepare(model, layer, c, self.hp.objective))
            .collect::<Result<Vec<_>>>()?;
        let w_start = model.edit_weight(layer)?.clone();
        let w0 = model.original_edit_weight_f32(layer)?;
        // The trained copy is f32 whatever the runtime's dtype; the forward pass reads it
        // through a (differentiable) cast.
        let var = Var::from_tensor(&w_start.to_dtype(DType::F32)?)?;
        let mut adam = AdamW::new(
            vec![var.clone()],
            ParamsAdamW {
                lr: self.hp.lr,
                weight_decay: 0.0,
                ..Default::default()
            },
        )?;
        model.set_edit_weight(layer, var.as_tensor().clone())?;
        let mut first = f64::NAN;
        let mut last = f64::NAN;
        let mut steps = 0;
        let trained = (|| -> Result<()> {
            for epoch in 0..self.hp.num_steps {
                let mut total = 0.0;
                for b in &batches {
                    cx.ctl.check()?;
                    // In f32 the model holds the variable itself and sees every step; in half
                    // precision it holds a cast copy, which must follow the variable.
                    model.set_edit_weight(layer, var.as_tensor().clone())?;
                    let mut loss = batch_loss(model, layer, b)?;
                    let value = loss.to_scalar::<f32>()? as f64;
                    if !value.is_finite() {
                        return Err(Error::Numeric(format!(
                            "fine-tuning diverged (loss {value})"
                        )));
                    }
                    if first.is_nan() {
                        first = value;
                    }
                    total += value;
                    if value < 1e-2 {
                        continue;
                    }
                    if self.hp.weight_decay > 0.0 {
                        // Adam's L2 term: gradient + wd · W.
                        loss = (loss
                            + (var.as_tensor().sqr()?.sum_all()? * (0.5 * self.hp.weight_decay))?)?;
                    }
                    let grads = loss.backward()?;
                    adam.step(&grads)?;
                    if let Some(eps) = self.hp.norm_constraint {
                        let clamped = (var.as_tensor() - &w0)?.clamp(-eps, eps)?;
                        var.set(&(&w0 + clamped)?)?;
                    }
                }
                last = total / batches.len() as f64;
                steps = epoch + 1;
                cx.ctl.report(Progress::TargetStep {
                    step: epoch,
                    of: self.hp.num_steps,
                    loss: last,
                    prob: (-last).exp(),
                });
                if last < 1e-2 {
                    break;
                }
            }
            Ok(())
        })();
        let w_new = var.as_tensor().detach().copy()?;
        restore_weights(model, &[(layer, w_start)])?;
        trained?;
        timings.target = timer.lap();
        cx.ctl.report(Progress::Phase(Phase::Apply));
        let (report, previous, sha) =
            commit_updates(model, vec![(layer, w_new)], self.hp.max_update_ratio)?;
        timings.total = timings.target + timer.lap();
        Ok(EditOutcome {
            method: self.hp.method,
            layers: report,
            targets: vec![TargetSummary {
                prob_initial: (-first).exp(),
                prob_final: (-last).exp(),
                loss: last,
                steps,
            }],
            timings,
            weights_sha256: sha,
            undo: UndoRecord::Weights(previous),
        })
    }

    fn undo(
        &mut self,
        model: &mut Model,
        _cx: &mut EditContext,
        record: &UndoRecord,
    ) -> Result<()> {
        undo_weights(model, record, "fine-tuning")
    }
}
