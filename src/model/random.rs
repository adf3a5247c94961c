//! Randomly initialised models of any supported architecture, with a byte-level tokenizer: the
//! fast, exact playground for unit tests and benchmarks of the hooks and editors.

use candle_core::{Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

use super::config::{Activation, Arch, ModelConfig};
use super::load::{assemble, build_parts, ModelInfo, WeightFormat, WeightSource};
use super::{Model, ModelSpec};
use crate::error::{Error, Result};

/// A small config of the given architecture (3 layers, width 64, vocab 512), with each
/// architecture's distinguishing features switched on (GQA, sliding windows, soft-caps, partial
/// rotary, the parallel residual).
pub fn tiny_config(arch: Arch) -> ModelConfig {
    let gated = arch.gated_mlp();
    let n_layers = 3;
    let window = |l: usize| match arch {
        Arch::Mistral => Some(4),
        Arch::Gemma2 => l.is_multiple_of(2).then_some(4),
        _ => None,
    };
    let gemma = arch == Arch::Gemma2;
    ModelConfig {
        arch,
        n_layers,
        d_model: 64,
        d_ff: if gated { 96 } else { 256 },
        n_heads: 4,
        n_kv_heads: if gated { 2 } else { 4 },
        head_dim: if arch == Arch::Qwen3 { 24 } else { 16 },
        vocab_size: 512,
        max_positions: 128,
        norm_eps: 1e-5,
        rope_theta: 10_000.0,
        rope_scaling: None,
        rotary_dim: match arch {
            Arch::Gpt2 => 0,
            Arch::Gptj => 8,
            Arch::GptNeox => 4,
            Arch::Qwen3 => 24,
            _ => 16,
        },
        tie_embeddings: !matches!(arch, Arch::Gptj | Arch::GptNeox | Arch::Mistral),
        attention_bias: matches!(arch, Arch::Qwen2 | Arch::GptNeox),
        mlp_bias: false,
        activation: match arch {
            Arch::Gemma2 => Activation::GeluTanh,
            Arch::GptNeox => Activation::GeluErf,
            _ if gated => Activation::Silu,
            _ => Activation::GeluTanh,
        },
        sliding_windows: (0..n_layers).map(window).collect(),
        query_pre_attn_scalar: gemma.then_some(12.0),
        attn_softcap: gemma.then_some(5.0),
        final_softcap: gemma.then_some(8.0),
        embed_scale: gemma.then_some(8.0),
        parallel_residual: matches!(arch, Arch::Gptj | Arch::GptNeox),
        bos_token_id: None,
        eos_token_ids: vec![],
        hf_json: None,
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
        let conv1d = c.arch == Arch::Gpt2;
        let (out, inp) = match leaf {
            "embed_tokens" | "wte" | "lm_head" | "embed_in" | "embed_out" => (v, d),
            "wpe" => (c.max_positions, d),
            "input_layernorm"
            | "post_attention_layernorm"
            | "pre_feedforward_layernorm"
            | "post_feedforward_layernorm"
            | "norm"
            | "final_layer_norm"
            | "ln_1"
            | "ln_2"
            | "ln_f" => return Ok(vec![d]),
            "q_norm" | "k_norm" => return Ok(vec![c.head_dim]),
            "q_proj" => (q, d),
            "k_proj" | "v_proj" => (kv, d),
            "o_proj" | "out_proj" | "dense" => (d, q),
            "query_key_value" => (3 * q, d),
            "gate_proj" | "up_proj" | "fc_in" | "dense_h_to_4h" => (f, d),
            "down_proj" | "fc_out" | "dense_4h_to_h" => (d, f),
            // GPT-2 Conv1D weights are stored [in, out].
            "c_attn" => (d, 3 * d),
            "c_fc" => (d, f),
            "c_proj" if base.contains(".mlp.") => (f, d),
            "c_proj" => (d, d),
            _ => return Err(Error::Model(format!("random model: unknown tensor {name}"))),
        };
        if is_bias {
            // Conv1D biases have the output width, which is the second stored dim.
            return Ok(vec![if conv1d { inp } else { out }]);
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
    let parts = build_parts(cfg, &mut src)?;
    let info = ModelInfo {
        spec: ModelSpec::Default,
        name: format!("random-{}-seed{seed}", cfg.arch.name()),
        format: WeightFormat::Safetensors,
        source_dtype: "F32".into(),
        files: vec![],
        sha256: crate::util::sha256_hex(format!("{cfg:?}/{seed}/{std}").as_bytes()),
        load_seconds: 0.0,
        chat_template: None,
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
