//! Keys (spec §1.5): the input of the edited matrix at the subject's last token, averaged over
//! context templates — within each template group, then across groups (MEMIT), or over the flat
//! list (ROME).

use candle_core::Tensor;

use super::request::{tokenize_with_subject, EditRequest};
use super::templates::ContextTemplates;
use crate::error::Result;
use crate::model::{Forward, Input, Model, Site};

/// Rows per forward pass when many prompts are processed.
const CHUNK: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyAverage {
    /// Mean within each group, then mean of the group means (MEMIT, D4S, AlphaEdit, PMET).
    GroupMeans,
    /// Mean over all templates (ROME).
    Flat,
}

/// Activations at `(layer, site)` for each `(ids, position)`, in order, as f64 vectors.
pub fn activations_at(
    model: &Model,
    prompts: &[(Vec<u32>, usize)],
    points: &[(usize, Site)],
) -> Result<Vec<Vec<Vec<f64>>>> {
    let end = points.iter().map(|&(l, _)| l + 1).max().unwrap_or(1);
    let mut out = vec![Vec::with_capacity(prompts.len()); points.len()];
    for chunk in prompts.chunks(CHUNK) {
        let rows: Vec<Vec<u32>> = chunk.iter().map(|(ids, _)| ids.clone()).collect();
        let at: Vec<(usize, usize)> = chunk
            .iter()
            .enumerate()
            .map(|(r, &(_, p))| (r, p))
            .collect();
        let res = model.forward(
            Input::Tokens(&rows),
            &Forward {
                end_layer: Some(end),
                captures: points.to_vec(),
                ..Default::default()
            },
        )?;
        for (k, &(l, site)) in points.iter().enumerate() {
            let picked = Model::gather_rows(res.capture(l, site)?, &at)?;
            let m: Vec<Vec<f32>> = picked.to_dtype(candle_core::DType::F32)?.to_vec2()?;
            out[k].extend(
                m.into_iter()
                    .map(|v| v.into_iter().map(f64::from).collect()),
            );
        }
    }
    Ok(out)
}

/// Template-averaged keys: `result[request][i]` is the key at `layers[i]`.
pub fn request_keys(
    model: &Model,
    requests: &[EditRequest],
    templates: &ContextTemplates,
    layers: &[usize],
    average: KeyAverage,
) -> Result<Vec<Vec<Vec<f64>>>> {
    let mut prompts = Vec::new();
    for r in requests {
        let template = r.template();
        for group in &templates.groups {
            for ctx in group {
                let p = tokenize_with_subject(model, ctx, &template, &r.subject)?;
                prompts.push((p.ids, p.subject_last));
            }
        }
    }
    let points: Vec<(usize, Site)> = layers.iter().map(|&l| (l, Site::Key)).collect();
    let acts = activations_at(model, &prompts, &points)?;
    let per_request = templates.len();
    let mut out = Vec::with_capacity(requests.len());
    for ri in 0..requests.len() {
        let mut per_layer = Vec::with_capacity(layers.len());
        for layer_acts in &acts {
            let rows = &layer_acts[ri * per_request..(ri + 1) * per_request];
            per_layer.push(average_rows(rows, templates, average));
        }
        out.push(per_layer);
    }
    Ok(out)
}

fn average_rows(rows: &[Vec<f64>], templates: &ContextTemplates, average: KeyAverage) -> Vec<f64> {
    match average {
        KeyAverage::Flat => mean(rows.iter()),
        KeyAverage::GroupMeans => {
            let mut start = 0;
            let mut means = Vec::new();
            for g in &templates.groups {
                means.push(mean(rows[start..start + g.len()].iter()));
                start += g.len();
            }
            mean(means.iter())
        }
    }
}

fn mean<'a>(rows: impl Iterator<Item = &'a Vec<f64>>) -> Vec<f64> {
    let mut acc: Vec<f64> = Vec::new();
    let mut n = 0.0f64;
    for r in rows {
        if acc.is_empty() {
            acc = vec![0.0; r.len()];
        }
        for (a, x) in acc.iter_mut().zip(r) {
            *a += x;
        }
        n += 1.0;
    }
    acc.iter_mut().for_each(|a| *a /= n.max(1.0));
    acc
}

/// The activation at the subject's last token of each request's bare prompt.
pub fn bare_activations(
    model: &Model,
    requests: &[EditRequest],
    points: &[(usize, Site)],
) -> Result<Vec<Vec<Vec<f64>>>> {
    let mut prompts = Vec::new();
    for r in requests {
        let p = tokenize_with_subject(model, "{}", &r.template(), &r.subject)?;
        prompts.push((p.ids, p.subject_last));
    }
    activations_at(model, &prompts, points)
}

/// f64 vector → `[d]` f32 tensor on the model's device.
pub fn to_tensor(model: &Model, v: &[f64]) -> Result<Tensor> {
    let f: Vec<f32> = v.iter().map(|&x| x as f32).collect();
    Ok(Tensor::from_vec(f, v.len(), &model.device)?)
}
