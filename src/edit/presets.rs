//! Published hyperparameters for the models editors are usually run on, recognised from the
//! model's config. Numbers only, each with its source: EasyEdit's `hparams/<METHOD>/<model>.yaml`
//! (zjunlp/EasyEdit), whose MEMIT files are also what the D4S paper's run script loads
//! (spec §2.7), and AlphaEdit's files in the same tree.
//!
//! A model no preset names gets the documented default of its family ([`HParams::defaults`]:
//! the reference model's layers scaled to its depth, λ scaled by d_ff).

use serde_json::{Map, Value};

use super::{HParams, Method};
use crate::error::Result;
use crate::model::{Arch, ModelConfig};

/// The shape that identifies a published model (instruct variants share their base's shape).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub arch: Arch,
    pub n_layers: usize,
    pub d_model: usize,
    pub d_ff: usize,
    /// `None`: any vocabulary.
    pub vocab: Option<usize>,
}

impl Shape {
    fn matches(&self, c: &ModelConfig) -> bool {
        self.arch == c.arch
            && self.n_layers == c.n_layers
            && self.d_model == c.d_model
            && self.d_ff == c.d_ff
            && self.vocab.is_none_or(|v| v == c.vocab_size)
    }
}

/// One method's published numbers for a model: a patch over the family defaults.
#[derive(Debug, Clone, Copy)]
pub struct MethodPreset {
    pub method: Method,
    /// Where the numbers come from.
    pub source: &'static str,
    /// JSON object of `HParams` fields.
    pub values: &'static str,
}

#[derive(Debug, Clone, Copy)]
pub struct Preset {
    pub name: &'static str,
    pub shape: Shape,
    pub methods: &'static [MethodPreset],
}

impl Preset {
    /// FT-M shares FT-L's file (only the objective differs, and it is not in the patch).
    pub fn for_method(&self, method: Method) -> Option<&MethodPreset> {
        let wanted = if method == Method::FtM {
            Method::FtL
        } else {
            method
        };
        self.methods.iter().find(|m| m.method == wanted)
    }
}

/// The preset whose shape the model has, if any.
pub fn recognise(cfg: &ModelConfig) -> Option<&'static Preset> {
    PRESETS.iter().find(|p| p.shape.matches(cfg))
}

/// Whether `cfg` has the default model's shape (SmolLM2-135M), whose settings d4s tuned itself
/// (BENCHMARKS.md) rather than taking them from a published file.
pub fn is_default_model(cfg: &ModelConfig) -> bool {
    cfg.arch.family() == crate::model::config::Family::Llama
        && cfg.n_layers == 30
        && cfg.d_ff == 1536
}

/// `hp` with the preset's numbers for its method, when the model has a preset for it.
pub fn apply(hp: HParams, cfg: &ModelConfig) -> Result<HParams> {
    let Some(m) = recognise(cfg).and_then(|p| p.for_method(hp.method)) else {
        return Ok(hp);
    };
    let patch: Map<String, Value> =
        serde_json::from_str(m.values).expect("preset tables are valid JSON (tested)");
    hp.merged(patch, m.source)
}

const fn mp(method: Method, source: &'static str, values: &'static str) -> MethodPreset {
    MethodPreset {
        method,
        source,
        values,
    }
}

// MEMIT and D4S share a file: D4S's released script runs on `hparams/MEMIT/<model>.yaml`.
const GPT2_XL_MEMIT: &str = r#"{"layers":[13,14,15,16,17],"clamp_norm_factor":0.75,
    "v_num_grad_steps":20,"v_lr":0.5,"v_weight_decay":0.5,"kl_factor":0.0625,
    "mom2_update_weight":20000}"#;
const GPTJ_MEMIT: &str = r#"{"layers":[3,4,5,6,7,8],"clamp_norm_factor":0.75,
    "v_num_grad_steps":25,"v_lr":0.5,"v_weight_decay":0.5,"kl_factor":0.0625,
    "mom2_update_weight":15000}"#;
const LLAMA_MEMIT: &str = r#"{"layers":[4,5,6,7,8],"clamp_norm_factor":4,
    "v_num_grad_steps":25,"v_lr":0.5,"v_weight_decay":0.001,"kl_factor":0.0625,
    "mom2_update_weight":15000}"#;
const LLAMA_ROME: &str = r#"{"layers":[5],"v_num_grad_steps":25,"v_lr":0.5,
    "v_weight_decay":0.001,"clamp_norm_factor":4,"kl_factor":0.0625,"mom2_adjustment":false}"#;

pub static PRESETS: &[Preset] = &[
    Preset {
        name: "gpt2-xl",
        shape: Shape {
            arch: Arch::Gpt2,
            n_layers: 48,
            d_model: 1600,
            d_ff: 6400,
            vocab: None,
        },
        methods: &[
            mp(Method::Memit, "EasyEdit hparams/MEMIT/gpt2-xl.yaml", GPT2_XL_MEMIT),
            mp(Method::D4s, "EasyEdit hparams/MEMIT/gpt2-xl.yaml", GPT2_XL_MEMIT),
            mp(
                Method::Rome,
                "EasyEdit hparams/ROME/gpt2-xl.yaml",
                r#"{"layers":[17],"v_num_grad_steps":20,"v_lr":0.5,"v_weight_decay":0.5,
                "clamp_norm_factor":4,"kl_factor":0.0625,"mom2_adjustment":false}"#,
            ),
            mp(
                Method::AlphaEdit,
                "EasyEdit hparams/AlphaEdit/gpt2-xl.yaml",
                r#"{"layers":[13,14,15,16,17],"clamp_norm_factor":0.75,"v_num_grad_steps":20,
                "v_lr":0.5,"v_weight_decay":0.5,"kl_factor":0.0625,"mom2_update_weight":20000,
                "nullspace_threshold":0.02,"l2":10}"#,
            ),
            mp(
                Method::FtL,
                "EasyEdit hparams/FT/gpt2-xl.yaml",
                r#"{"layers":[0],"num_steps":25,"batch_size":3,"lr":0.0005,
                "norm_constraint":0.0005}"#,
            ),
            mp(
                Method::Grace,
                "EasyEdit hparams/GRACE/gpt2-xl.yaml (layer 35)",
                r#"{"layers":[35],"n_iter":200,"edit_lr":1.0,"eps":1.0}"#,
            ),
        ],
    },
    Preset {
        name: "gpt-j-6b",
        shape: Shape {
            arch: Arch::Gptj,
            n_layers: 28,
            d_model: 4096,
            d_ff: 16384,
            vocab: None,
        },
        methods: &[
            mp(Method::Memit, "EasyEdit hparams/MEMIT/gpt-j-6B.yaml", GPTJ_MEMIT),
            mp(Method::D4s, "EasyEdit hparams/MEMIT/gpt-j-6B.yaml", GPTJ_MEMIT),
            mp(
                Method::Rome,
                "EasyEdit hparams/ROME/gpt-j-6B.yaml",
                r#"{"layers":[5],"v_num_grad_steps":20,"v_lr":0.5,"v_weight_decay":0.5,
                "clamp_norm_factor":4,"kl_factor":0.0625,"mom2_adjustment":false}"#,
            ),
            mp(
                Method::AlphaEdit,
                "EasyEdit hparams/AlphaEdit/gpt-j-6B.yaml",
                r#"{"layers":[3,4,5,6,7,8],"clamp_norm_factor":0.75,"v_num_grad_steps":25,
                "v_lr":0.5,"v_weight_decay":0.5,"kl_factor":0.0625,"mom2_update_weight":15000,
                "nullspace_threshold":0.02,"l2":10}"#,
            ),
            mp(
                Method::Pmet,
                "EasyEdit hparams/PMET/gpt-j-6B.yaml",
                r#"{"layers":[3,4,5,6,7,8],"clamp_norm_factor":0.75,"v_num_grad_steps":30,
                "v_lr":0.2,"v_weight_decay":0.5,"kl_factor":1,"mom2_update_weight":15000,
                "nll_loss_factor":1}"#,
            ),
            mp(
                Method::FtL,
                "EasyEdit hparams/FT/gpt-j-6B.yaml",
                r#"{"layers":[21],"num_steps":25,"batch_size":1,"lr":0.0005,
                "norm_constraint":null}"#,
            ),
            mp(
                Method::Grace,
                "EasyEdit hparams/GRACE/gpt-j-6b.yaml",
                r#"{"layers":[25],"n_iter":200,"edit_lr":1.0,"eps":1.0}"#,
            ),
        ],
    },
    Preset {
        name: "llama-2-7b",
        shape: Shape {
            arch: Arch::Llama,
            n_layers: 32,
            d_model: 4096,
            d_ff: 11008,
            vocab: None,
        },
        methods: &[
            mp(Method::Memit, "EasyEdit hparams/MEMIT/llama-7b.yaml", LLAMA_MEMIT),
            mp(Method::D4s, "EasyEdit hparams/MEMIT/llama-7b.yaml", LLAMA_MEMIT),
            mp(Method::Rome, "EasyEdit hparams/ROME/llama-7b.yaml", LLAMA_ROME),
            mp(
                Method::AlphaEdit,
                "no Llama-2 AlphaEdit file exists: MEMIT/llama-7b.yaml's numbers with α = 10 (spec §3.7)",
                r#"{"layers":[4,5,6,7,8],"clamp_norm_factor":4,"v_num_grad_steps":25,"v_lr":0.5,
                "v_weight_decay":0.001,"kl_factor":0.0625,"mom2_update_weight":15000,
                "nullspace_threshold":0.02,"l2":10}"#,
            ),
            mp(
                Method::Pmet,
                "EasyEdit hparams/PMET/llama-7b.yaml",
                r#"{"layers":[4,5,6,7,8],"clamp_norm_factor":1,"v_num_grad_steps":20,"v_lr":0.5,
                "v_weight_decay":0.5,"kl_factor":0.0625,"mom2_update_weight":15000,
                "nll_loss_factor":1}"#,
            ),
            mp(
                Method::FtL,
                "EasyEdit hparams/FT/llama-7b.yaml",
                r#"{"layers":[21],"num_steps":25,"batch_size":1,"lr":0.0005,
                "norm_constraint":null}"#,
            ),
            mp(
                Method::Grace,
                "EasyEdit hparams/GRACE/llama-7b.yaml",
                r#"{"layers":[27],"n_iter":50,"edit_lr":1.0,"eps":1.0}"#,
            ),
        ],
    },
    Preset {
        name: "llama-3-8b (3.0/3.1, base or instruct)",
        shape: Shape {
            arch: Arch::Llama,
            n_layers: 32,
            d_model: 4096,
            d_ff: 14336,
            vocab: Some(128_256),
        },
        methods: &[
            mp(
                Method::Memit,
                "no Llama-3-8B MEMIT file exists: MEMIT/llama-7b.yaml (same depth and layers as AlphaEdit/llama3-8b.yaml)",
                LLAMA_MEMIT,
            ),
            mp(
                Method::D4s,
                "no Llama-3-8B MEMIT file exists: MEMIT/llama-7b.yaml (same depth and layers as AlphaEdit/llama3-8b.yaml)",
                LLAMA_MEMIT,
            ),
            mp(Method::Rome, "EasyEdit hparams/ROME/llama3-8b.yaml", LLAMA_ROME),
            mp(
                Method::AlphaEdit,
                "EasyEdit hparams/AlphaEdit/llama3-8b.yaml",
                r#"{"layers":[4,5,6,7,8],"clamp_norm_factor":0.75,"v_num_grad_steps":25,
                "v_lr":0.1,"v_weight_decay":0.5,"kl_factor":0.0625,"mom2_update_weight":15000,
                "nullspace_threshold":0.02,"l2":1}"#,
            ),
            mp(
                Method::FtL,
                "EasyEdit hparams/FT/llama3-8b.yaml",
                r#"{"layers":[21],"num_steps":25,"batch_size":1,"lr":0.0005,
                "norm_constraint":null}"#,
            ),
        ],
    },
    Preset {
        name: "qwen2.5-7b (base or instruct)",
        shape: Shape {
            arch: Arch::Qwen2,
            n_layers: 28,
            d_model: 3584,
            d_ff: 18944,
            vocab: None,
        },
        methods: &[
            mp(Method::Memit, "EasyEdit hparams/MEMIT/qwen2.5-7b.yaml", LLAMA_MEMIT),
            mp(Method::D4s, "EasyEdit hparams/MEMIT/qwen2.5-7b.yaml", LLAMA_MEMIT),
            mp(Method::Rome, "EasyEdit hparams/ROME/qwen2.5-7b.yaml", LLAMA_ROME),
            mp(
                Method::AlphaEdit,
                "EasyEdit hparams/AlphaEdit/qwen2.5-7b.yaml",
                r#"{"layers":[4,5,6,7,8],"clamp_norm_factor":4,"v_num_grad_steps":25,"v_lr":0.5,
                "v_weight_decay":0.001,"kl_factor":0.0625,"mom2_update_weight":15000,
                "nullspace_threshold":0.02,"l2":1}"#,
            ),
            mp(
                Method::FtL,
                "EasyEdit hparams/FT/qwen2.5-7b.yaml",
                r#"{"layers":[27],"num_steps":25,"batch_size":1,"lr":0.0005,
                "norm_constraint":null}"#,
            ),
            mp(
                Method::Grace,
                "EasyEdit hparams/GRACE/qwen2.5-7b.yaml",
                r#"{"layers":[18],"n_iter":50,"edit_lr":1.0,"eps":1.0}"#,
            ),
        ],
    },
    Preset {
        name: "mistral-7b (v0.1–v0.3, base or instruct)",
        shape: Shape {
            arch: Arch::Mistral,
            n_layers: 32,
            d_model: 4096,
            d_ff: 14336,
            vocab: None,
        },
        methods: &[
            mp(Method::Memit, "EasyEdit hparams/MEMIT/mistral-7b.yaml", LLAMA_MEMIT),
            mp(Method::D4s, "EasyEdit hparams/MEMIT/mistral-7b.yaml", LLAMA_MEMIT),
            mp(Method::Rome, "EasyEdit hparams/ROME/mistral-7b.yaml", LLAMA_ROME),
            mp(
                Method::FtL,
                "EasyEdit hparams/FT/mistral-7b.yaml",
                r#"{"layers":[21],"num_steps":25,"batch_size":1,"lr":0.0005,
                "norm_constraint":0.00005}"#,
            ),
        ],
    },
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::random::tiny_config;

    fn shaped(s: Shape) -> ModelConfig {
        let mut c = tiny_config(s.arch);
        c.n_layers = s.n_layers;
        c.d_model = s.d_model;
        c.d_ff = s.d_ff;
        c.vocab_size = s.vocab.unwrap_or(32_000);
        c.sliding_windows = vec![None; s.n_layers];
        c
    }

    #[test]
    fn every_preset_parses_validates_and_is_recognised() {
        for p in PRESETS {
            let cfg = shaped(p.shape);
            assert_eq!(recognise(&cfg).map(|r| r.name), Some(p.name));
            for m in p.methods {
                let hp = HParams::defaults(m.method, &cfg);
                hp.validate(&cfg)
                    .unwrap_or_else(|e| panic!("{} {}: {e}", p.name, m.method));
                let patch: Map<String, Value> = serde_json::from_str(m.values).unwrap();
                // Each published number arrived.
                let got = serde_json::to_value(&hp).unwrap();
                for (k, v) in &patch {
                    let key = k.as_str();
                    assert_eq!(
                        got[key].as_f64().or(got[key].as_bool().map(f64::from)),
                        v.as_f64().or(v.as_bool().map(f64::from)),
                        "{} {} {k}",
                        p.name,
                        m.method
                    );
                    if v.is_array() {
                        assert_eq!(&got[key], v, "{} {} {k}", p.name, m.method);
                    }
                }
            }
        }
    }

    #[test]
    fn published_numbers_differ_from_the_scaled_defaults() {
        // Llama-3-8B: λ scaled by d_ff would be 19535; EasyEdit's AlphaEdit file says 15000 and
        // v_lr 0.1.
        let p = PRESETS
            .iter()
            .find(|p| p.name.starts_with("llama-3"))
            .unwrap();
        let hp = HParams::defaults(Method::AlphaEdit, &shaped(p.shape));
        assert_eq!(hp.mom2_update_weight, 15000.0);
        assert_eq!(hp.v_lr, 0.1);
        assert_eq!(hp.l2, 1.0);
        // Another vocabulary is not Llama-3.
        let mut other = shaped(p.shape);
        other.vocab_size = 32_000;
        assert!(recognise(&other).is_none());
    }
}
