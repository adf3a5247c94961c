//! Context templates (spec §1.4): short texts sampled from the *unedited* model, prefixed to the
//! edit prompt as `"<text>. {}"` so the edit generalizes beyond one exact context.

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::model::Model;

/// The seed words every reference implementation starts its samples from.
pub const SEED_WORDS: [&str; 5] = ["The", "Therefore", "Because", "I", "You"];

/// Groups of templates, each containing `{}` where the prompt goes. Keys are averaged within a
/// group, then across groups (MEMIT); ROME averages over the flattened list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContextTemplates {
    pub groups: Vec<Vec<String>>,
}

impl ContextTemplates {
    /// Only the bare prompt.
    pub fn bare() -> Self {
        Self {
            groups: vec![vec!["{}".into()]],
        }
    }

    /// A fixed list: `{}` first as its own group, the rest as a second group.
    pub fn from_list(list: &[String]) -> Self {
        let rest: Vec<String> = list
            .iter()
            .filter(|t| t.as_str() != "{}")
            .cloned()
            .collect();
        let mut groups = vec![vec!["{}".to_string()]];
        if !rest.is_empty() {
            groups.push(rest);
        }
        Self { groups }
    }

    pub fn flat(&self) -> Vec<String> {
        self.groups.iter().flatten().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.groups.iter().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Samples templates: for each `(total_tokens, count)`, `count / 5` texts per seed word with
    /// top-5 sampling until the text is `total_tokens` long, then `"<text>. {}"` (curly braces in
    /// the samples become spaces). The result is `[["{}"], [all samples]]`.
    pub fn generate(model: &Model, length_params: &[(usize, usize)], seed: u64) -> Result<Self> {
        let mut samples = Vec::new();
        for (k, &(total, count)) in length_params.iter().enumerate() {
            let per_seed = (count / SEED_WORDS.len()).max(1);
            let mut prompts = Vec::new();
            for word in SEED_WORDS {
                let ids = model.encode(word)?;
                for _ in 0..per_seed {
                    prompts.push(ids.clone());
                }
            }
            for ids in model.sample_to_length(&prompts, total, 5, seed.wrapping_add(k as u64))? {
                let text = model.decode_text(&ids)?.replace(['{', '}'], " ");
                samples.push(format!("{text}. {{}}"));
            }
        }
        let mut groups = vec![vec!["{}".to_string()]];
        if !samples.is_empty() {
            groups.push(samples);
        }
        Ok(Self { groups })
    }
}

/// Sampled templates by (model sha256, length parameters, seed): sampling is deterministic, so
/// every editor of the same model and settings shares one sample.
#[derive(Debug, Clone, Default)]
pub struct TemplateCache {
    sampled: Vec<(String, ContextTemplates)>,
}

/// The templates an editor uses: the fixed list from the hyperparameters, else samples from the
/// *unedited* model (computed once per cache and kept in `slot`).
pub fn ensure(
    slot: &mut Option<ContextTemplates>,
    model: &mut Model,
    hp: &super::HParams,
    cache: &mut TemplateCache,
) -> Result<ContextTemplates> {
    if let Some(t) = slot {
        return Ok(t.clone());
    }
    let t = match &hp.context_templates {
        Some(list) => ContextTemplates::from_list(list),
        None => {
            let params: Vec<(usize, usize)> = hp
                .context_template_length_params
                .iter()
                .map(|p| (p[0], p[1]))
                .collect();
            let seed = hp.seed;
            let key = format!("{}/{params:?}/{seed}", model.info.sha256);
            let cached = cache
                .sampled
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, t)| t.clone());
            match cached {
                Some(t) => t,
                None => {
                    let t =
                        model.with_unedited(|m| ContextTemplates::generate(m, &params, seed))?;
                    cache.sampled.push((key, t.clone()));
                    t
                }
            }
        }
    };
    *slot = Some(t.clone());
    Ok(t)
}
