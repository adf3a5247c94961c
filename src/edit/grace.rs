//! GRACE — General Retrieval Adaptors for Continual Editing (Hartvigsen et al., NeurIPS 2023),
//! spec §3.5. No weight changes: a codebook at one layer maps keys to replacement values.
//!
//! ```text
//! at every position:  e = argmin_i ‖k − key_i‖;  out = value_e  if ‖k − key_e‖ ≤ ε_e,  else out
//! ```
//! An edit takes the key `q` at the last prompt token: a new entry `(q, v, ε_init)` when the
//! codebook is empty or the nearest entry is farther than `ε_init + ε_e`; when the nearest entry
//! is close but carries another answer, both radii shrink to half the distance; when it carries the
//! same answer its radius grows to cover `q` (and its value keeps training). Values start "cold"
//! (uniform in [0, 1)) and are trained with Adam on the target's NLL. Inputs outside every radius
//! pass through bit for bit.

use std::sync::Arc;

use candle_core::{DType, Tensor, D};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::keys::activations_at;
use super::request::target_ids;
use super::target::{
    KlPrompt, Lookup, NllSchedule, OptimOptions, SiteSpec, TargetParams, TargetProblem,
};
use super::target_cache::optimize_with;
use super::{
    EditContext, EditOutcome, EditRequest, Editor, HParams, LayerDelta, Method, Phase, Progress,
    Stopwatch, Timings, UndoRecord,
};
use crate::error::{Error, Result};
use crate::model::{MlpAdaptor, Model, Site};

/// The adaptor's entries.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Codebook {
    pub keys: Vec<Vec<f32>>,
    pub values: Vec<Vec<f32>>,
    pub radii: Vec<f32>,
    pub labels: Vec<String>,
}

impl Codebook {
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn bytes(&self) -> usize {
        4 * (self.keys.iter().map(Vec::len).sum::<usize>()
            + self.values.iter().map(Vec::len).sum::<usize>()
            + self.radii.len())
    }

    /// Nearest entry and its distance.
    pub fn nearest(&self, q: &[f32]) -> Option<(usize, f32)> {
        self.keys
            .iter()
            .enumerate()
            .map(|(i, k)| {
                (
                    i,
                    k.iter()
                        .zip(q)
                        .map(|(a, b)| ((a - b) as f64).powi(2))
                        .sum::<f64>()
                        .sqrt() as f32,
                )
            })
            .min_by(|a, b| a.1.total_cmp(&b.1))
    }
}

impl MlpAdaptor for Codebook {
    fn adapt(&self, key: &Tensor, out: &Tensor) -> candle_core::Result<Tensor> {
        if self.keys.is_empty() {
            return Ok(out.clone());
        }
        let (b, s, d_key) = key.dims3()?;
        let d_out = out.dim(D::Minus1)?;
        let n = self.keys.len();
        let q = key.reshape((b * s, d_key))?.detach().to_dtype(DType::F32)?;
        let keys = Tensor::from_vec(self.keys.concat(), (n, d_key), key.device())?;
        // ‖q − k‖² = ‖q‖² + ‖k‖² − 2 q·k, then the nearest entry per position.
        let d2 = q
            .sqr()?
            .sum_keepdim(1)?
            .broadcast_add(&keys.sqr()?.sum_keepdim(1)?.t()?)?
            .sub(&(q.matmul(&keys.t()?)? * 2.0)?)?
            .relu()?;
        let nearest = d2.argmin(1)?.to_vec1::<u32>()?;
        let dist: Vec<f32> = d2.min(1)?.sqrt()?.to_vec1::<f32>()?;
        let hits: Vec<(usize, usize)> = nearest
            .iter()
            .zip(&dist)
            .enumerate()
            .filter(|(_, (&e, &d))| d <= self.radii[e as usize])
            .map(|(p, (&e, _))| (p, e as usize))
            .collect();
        if hits.is_empty() {
            return Ok(out.clone());
        }
        let mut mask = vec![0u8; b * s];
        let mut repl = vec![0f32; b * s * d_out];
        for &(p, e) in &hits {
            mask[p] = 1;
            repl[p * d_out..(p + 1) * d_out].copy_from_slice(&self.values[e]);
        }
        let mask = Tensor::from_vec(mask, (b, s, 1), out.device())?.broadcast_as((b, s, d_out))?;
        let repl = Tensor::from_vec(repl, (b, s, d_out), out.device())?;
        mask.where_cond(&repl, out)
    }
}

pub struct Grace {
    hp: HParams,
    codebook: Codebook,
    rng: ChaCha8Rng,
}

impl Grace {
    pub fn new(hp: HParams) -> Self {
        let rng = ChaCha8Rng::seed_from_u64(hp.seed);
        Self {
            hp,
            codebook: Codebook::default(),
            rng,
        }
    }

    pub fn codebook(&self) -> &Codebook {
        &self.codebook
    }

    fn install(&self, model: &mut Model) -> Result<()> {
        let layer = self.hp.layers[0];
        let adaptor: Option<Arc<dyn MlpAdaptor>> = if self.codebook.is_empty() {
            None
        } else {
            Some(Arc::new(self.codebook.clone()))
        };
        model.set_adaptor(layer, adaptor)
    }

    /// Adds or updates the entry for one request; returns its index and the target summary.
    fn edit_one(
        &mut self,
        model: &mut Model,
        cx: &mut EditContext,
        req: &EditRequest,
    ) -> Result<super::TargetSummary> {
        let layer = self.hp.layers[0];
        let prompt = model.encode(&req.filled_prompt())?;
        if prompt.is_empty() {
            return Err(Error::Input(format!(
                "the prompt of {:?} tokenizes to nothing",
                req.describe()
            )));
        }
        let last = prompt.len() - 1;
        let acts = activations_at(
            model,
            &[(prompt.clone(), last)],
            &[(layer, Site::Key), (layer, Site::MlpOut)],
        )?;
        let q: Vec<f32> = acts[0][0].iter().map(|&x| x as f32).collect();
        let label = req.target.trim().to_string();
        let eps = self.hp.eps as f32;
        let entry = match self.codebook.nearest(&q) {
            None => None,
            Some((e, d)) if d > eps + self.codebook.radii[e] => None,
            Some((e, d)) if self.codebook.labels[e] != label => {
                self.codebook.radii[e] = d / 2.0 - 1e-5;
                let i = self.push_entry(&q, &label, model.config.d_model);
                self.codebook.radii[i] = d / 2.0;
                Some(i)
            }
            Some((e, d)) => {
                if d > self.codebook.radii[e] {
                    self.codebook.radii[e] = d;
                }
                Some(e)
            }
        };
        let e = match entry {
            Some(e) => e,
            None => self.push_entry(&q, &label, model.config.d_model),
        };
        // Train the value: δ at the MLP output of the last prompt token, starting from v − m.
        let m_orig = &acts[1][0];
        let init: Vec<f32> = self.codebook.values[e]
            .iter()
            .zip(m_orig)
            .map(|(v, m)| v - *m as f32)
            .collect();
        let problem = TargetProblem::for_request(
            model,
            req,
            &["{}".to_string()],
            Lookup::PromptLast,
            layer,
            vec![SiteSpec {
                site: Site::MlpOut,
                reference: Site::MlpOut,
                init: Some(init),
                regularized: false,
            }],
            KlPrompt::Omitted,
        )?;
        let params = TargetParams {
            steps: self.hp.n_iter,
            lr: self.hp.edit_lr,
            weight_decay: 0.0,
            clamp_norm_factor: None,
            kl_factor: 0.0,
            stop_loss: None,
            stop_prob: self.hp.v_prob_threshold,
            stop_top1: None,
            schedule: NllSchedule::Constant,
            nll_factor: 1.0,
        };
        // Train against the raw layer output (this layer's codebook off).
        let adaptor = model.adaptor(layer).cloned();
        model.set_adaptor(layer, None)?;
        let res = optimize_with(
            cx.targets.as_deref_mut(),
            model,
            &problem,
            &params,
            OptimOptions::default(),
            &cx.ctl,
        );
        model.set_adaptor(layer, adaptor)?;
        let res = res?;
        let value: Vec<f32> = res.sites[0].target().iter().map(|&x| x as f32).collect();
        if value.iter().any(|x| !x.is_finite()) {
            return Err(Error::Rejected(
                "the trained GRACE value is not finite; the codebook is unchanged".into(),
            ));
        }
        self.codebook.values[e] = value;
        let _ = target_ids(model, &req.target)?;
        Ok(res.summary())
    }

    fn push_entry(&mut self, q: &[f32], label: &str, d_model: usize) -> usize {
        let cold: Vec<f32> = (0..d_model).map(|_| self.rng.random::<f32>()).collect();
        self.codebook.keys.push(q.to_vec());
        self.codebook.values.push(cold);
        self.codebook.radii.push(self.hp.eps as f32);
        self.codebook.labels.push(label.to_string());
        self.codebook.len() - 1
    }
}

impl Editor for Grace {
    fn method(&self) -> Method {
        Method::Grace
    }

    fn hparams(&self) -> &HParams {
        &self.hp
    }

    fn state_bytes(&self) -> usize {
        self.codebook.bytes()
    }

    /// The codebook (keys, values, radii as f32 tensors; labels) and the position of the random
    /// stream that initializes new values.
    fn snapshot(&self) -> Result<super::EditorSnapshot> {
        let c = &self.codebook;
        let rows = |v: &[Vec<f32>]| -> Result<Tensor> {
            let width = v.first().map_or(0, Vec::len);
            Ok(Tensor::from_vec(
                v.concat(),
                (v.len(), width),
                &candle_core::Device::Cpu,
            )?)
        };
        let tensors = if c.is_empty() {
            vec![]
        } else {
            vec![
                ("grace.keys".to_string(), rows(&c.keys)?),
                ("grace.values".to_string(), rows(&c.values)?),
                (
                    "grace.radii".to_string(),
                    Tensor::new(c.radii.as_slice(), &candle_core::Device::Cpu)?,
                ),
            ]
        };
        Ok(super::EditorSnapshot {
            tensors,
            meta: serde_json::json!({
                "method": "grace",
                "labels": c.labels,
                "rng_word_pos": self.rng.get_word_pos().to_string(),
            }),
        })
    }

    fn restore(
        &mut self,
        model: &mut Model,
        _cx: &mut EditContext,
        snap: &super::EditorSnapshot,
    ) -> Result<()> {
        snap.check_method(Method::Grace)?;
        let bad = |what: &str| Error::Input(format!("GRACE snapshot: {what}"));
        let labels: Vec<String> = serde_json::from_value(snap.meta["labels"].clone())
            .map_err(|_| bad("labels are missing"))?;
        let word_pos: u128 = snap.meta["rng_word_pos"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("the random stream position is missing"))?;
        let mut codebook = Codebook::default();
        if !labels.is_empty() {
            let rows = |name: &str| -> Result<Vec<Vec<f32>>> {
                Ok(snap.tensor(name)?.to_dtype(DType::F32)?.to_vec2::<f32>()?)
            };
            codebook.keys = rows("grace.keys")?;
            codebook.values = rows("grace.values")?;
            codebook.radii = snap
                .tensor("grace.radii")?
                .to_dtype(DType::F32)?
                .to_vec1::<f32>()?;
            let n = labels.len();
            if codebook.keys.len() != n || codebook.values.len() != n || codebook.radii.len() != n {
                return Err(bad("its tensors and labels disagree in length"));
            }
        }
        codebook.labels = labels;
        let mut rng = ChaCha8Rng::seed_from_u64(self.hp.seed);
        rng.set_word_pos(word_pos);
        self.codebook = codebook;
        self.rng = rng;
        self.install(model)
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
        let mut timer = Stopwatch::start();
        let before = self.codebook.clone();
        let rng_before = self.rng.clone();
        cx.ctl.report(Progress::Phase(Phase::Target));
        let mut summaries = Vec::new();
        for r in requests {
            match self.edit_one(model, cx, r) {
                Ok(s) => summaries.push(s),
                Err(e) => {
                    self.codebook = before;
                    self.rng = rng_before;
                    self.install(model)?;
                    return Err(e);
                }
            }
        }
        cx.ctl.report(Progress::Phase(Phase::Apply));
        self.install(model)?;
        let target = timer.lap();
        let bytes: Vec<u8> = self
            .codebook
            .values
            .iter()
            .flatten()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        Ok(EditOutcome {
            method: Method::Grace,
            layers: Vec::<LayerDelta>::new(),
            targets: summaries,
            timings: Timings {
                target,
                total: target,
                ..Default::default()
            },
            weights_sha256: crate::util::sha256_hex(&bytes),
            undo: UndoRecord::Grace(before),
        })
    }

    fn undo(
        &mut self,
        model: &mut Model,
        _cx: &mut EditContext,
        record: &UndoRecord,
    ) -> Result<()> {
        let UndoRecord::Grace(book) = record else {
            return Err(Error::Input(
                "this undo record does not belong to GRACE".into(),
            ));
        };
        self.codebook = book.clone();
        self.install(model)
    }
}
