//! Randomly initialised models of any supported architecture, with a byte-level tokenizer: the
//! fast, exact playground for unit tests and benchmarks of the hooks and editors.

use candle_core::{Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

use super::config::{Arch, ModelConfig};
use super::load::{assemble, ModelInfo, WeightFormat, WeightSource};
use super::{gpt2, gptj, llama, Model, ModelSpec};
use crate::error::{Error, Result};

/// A small config of the given architecture (3 layers, width 64, vocab 512).
pub fn tiny_config(arch: Arch) -> ModelConfig {
    ModelConfig {
        arch,
        n_layers: 3,
        d_model: 64,
        d_ff: if arch == Arch::Llama { 96 } else { 256 },
        n_heads: 4,
        n_kv_heads: if arch == Arch::Llama { 2 } else { 4 },
        head_dim: 16,
        vocab_size: 512,
        max_positions: 128,
        norm_eps: 1e-5,
        rope_theta: 10_000.0,
        rope_scaling: None,
        rotary_dim: match arch {
            Arch::Llama => 16,
            Arch::Gpt2 => 0,
            Arch::Gptj => 8,
        },
        tie_embeddings: arch != Arch::Gptj,
        attention_bias: false,
        bos_token_id: None,
        eos_token_ids: vec![],
    }
}

struct RandomSource<'a> {
    cfg: &'a ModelConfig,
    rng: ChaCha8Rng,
    std: f64,
}

impl RandomSource<'_> {
    fn shape(&self, name: &str) -> Result<Vec<usize>> {
        let c = self.cfg;
        let (d, f, v) = (c.d_model, c.d_ff, c.vocab_size);
        let q = c.n_heads * c.head_dim;
        let kv = c.n_kv_heads * c.head_dim;
        let is_bias = name.ends_with(".bias");
        let base = name.trim_end_matches(".weight").trim_end_matches(".bias");
        let leaf = base.rsplit('.').next().unwrap_or(base);
        let (out, inp) = match (c.arch, leaf) {
            (_, "embed_tokens" | "wte" | "lm_head") => (v, d),
            (_, "wpe") => (c.max_positions, d),
            (
                _,
                "input_layernorm" | "post_attention_layernorm" | "norm" | "ln_1" | "ln_2" | "ln_f",
            ) => return Ok(vec![d]),
            (Arch::Llama, "q_proj") | (Arch::Gptj, "q_proj") => (q, d),
            (Arch::Llama, "k_proj" | "v_proj") | (Arch::Gptj, "k_proj" | "v_proj") => (kv, d),
            (Arch::Llama, "o_proj") | (Arch::Gptj, "out_proj") => (d, q),
            (Arch::Llama, "gate_proj" | "up_proj") | (Arch::Gptj, "fc_in") => (f, d),
            (Arch::Llama, "down_proj") | (Arch::Gptj, "fc_out") => (d, f),
            // GPT-2 Conv1D weights are stored [in, out].
            (Arch::Gpt2, "c_attn") => (d, 3 * d),
            (Arch::Gpt2, "c_fc") => (d, f),
            (Arch::Gpt2, "c_proj") if base.contains(".mlp.") => (f, d),
            (Arch::Gpt2, "c_proj") => (d, d),
            _ => return Err(Error::Model(format!("random model: unknown tensor {name}"))),
        };
        if is_bias {
            // Conv1D biases have the output width, which is the second stored dim.
            return Ok(vec![if c.arch == Arch::Gpt2 { inp } else { out }]);
        }
        Ok(vec![out, inp])
    }
}

impl WeightSource for RandomSource<'_> {
    fn has(&self, name: &str) -> bool {
        // GPT-2 names are asked for with and without `transformer.`; answer for the full form.
        self.cfg.arch != Arch::Gpt2 || name.starts_with("transformer.")
    }

    fn get(&mut self, name: &str) -> Result<Tensor> {
        let shape = self.shape(name)?;
        let n: usize = shape.iter().product();
        let is_norm_weight = shape.len() == 1 && name.ends_with(".weight");
        let normal = Normal::new(0.0, self.std).expect("valid std");
        let data: Vec<f32> = (0..n)
            .map(|_| {
                let x = normal.sample(&mut self.rng) as f32;
                if is_norm_weight {
                    1.0 + 0.1 * x
                } else {
                    x
                }
            })
            .collect();
        Ok(Tensor::from_vec(data, shape, &Device::Cpu)?)
    }
}

/// A byte-level BPE without merges: every byte is one token (ids 0..256).
pub fn byte_tokenizer() -> tokenizers::Tokenizer {
    use tokenizers::models::bpe::BPE;
    use tokenizers::pre_tokenizers::byte_level::ByteLevel;
    let mut chars: Vec<char> = ByteLevel::alphabet().into_iter().collect();
    chars.sort_unstable();
    let vocab: ahash::AHashMap<String, u32> = chars
        .iter()
        .enumerate()
        .map(|(i, c)| (c.to_string(), i as u32))
        .collect();
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, vec![])
        .build()
        .expect("a merge-free BPE builds");
    let mut tok = tokenizers::Tokenizer::new(bpe);
    tok.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
    tok.with_decoder(Some(tokenizers::decoders::byte_level::ByteLevel::default()));
    tok
}

/// A model with weights drawn from N(0, std²) (norm weights around 1), deterministic in `seed`.
pub fn random_model(cfg: &ModelConfig, seed: u64, std: f64) -> Result<Model> {
    cfg.validate()?;
    let mut src = RandomSource {
        cfg,
        rng: ChaCha8Rng::seed_from_u64(seed),
        std,
    };
    let parts = match cfg.arch {
        Arch::Llama => llama::build(cfg, &mut src)?,
        Arch::Gpt2 => gpt2::build(cfg, &mut src)?,
        Arch::Gptj => gptj::build(cfg, &mut src)?,
    };
    let info = ModelInfo {
        spec: ModelSpec::Default,
        name: format!("random-{}-seed{seed}", cfg.arch.name()),
        format: WeightFormat::Safetensors,
        source_dtype: "F32".into(),
        files: vec![],
        sha256: crate::util::sha256_hex(format!("{cfg:?}/{seed}/{std}").as_bytes()),
        load_seconds: 0.0,
    };
    assemble(
        cfg.clone(),
        parts,
        Some(byte_tokenizer()),
        info,
        &Device::Cpu,
    )
}

/// The tiny random model most unit tests use.
pub fn tiny_model(arch: Arch, seed: u64) -> Model {
    random_model(&tiny_config(arch), seed, 0.2).expect("tiny random model")
}
