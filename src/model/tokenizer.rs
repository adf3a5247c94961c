//! Byte-level BPE tokenizer rebuilt from GGUF metadata.
//!
//! candle's GGUF tokenizer helper does not know SmolLM2's `tokenizer.ggml.pre = "smollm"` and
//! prepends a space ("The" → 378 instead of 504), so we build a `tokenizers::Tokenizer` ourselves:
//! the BPE model from `tokenizer.ggml.tokens` + `merges`, the pre-tokenizer from `tokenizer.ggml.pre`
//! (SmolLM2: digits split one by one, then GPT-2 byte-level), special tokens from the token types,
//! and no BOS.

use candle_core::quantized::gguf_file::{Content, Value};
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, PreTokenizerWrapper, SplitDelimiterBehavior, Tokenizer};

use crate::error::{Error, Result};

/// The Llama-3 / Qwen2 split regex (they differ in how many digits group together).
fn llama3_style_regex(digits: &str) -> String {
    format!(
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{{L}}\p{{N}}]?\p{{L}}+|\p{{N}}{digits}| ?[^\s\p{{L}}\p{{N}}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
    )
}

fn meta<'a>(content: &'a Content, key: &str) -> Result<&'a Value> {
    content
        .metadata
        .get(key)
        .ok_or_else(|| Error::Tokenizer(format!("GGUF metadata has no `{key}`")))
}

fn string_list(content: &Content, key: &str) -> Result<Vec<String>> {
    meta(content, key)?
        .to_vec()
        .map_err(|e| Error::Tokenizer(format!("`{key}`: {e}")))?
        .iter()
        .map(|v| {
            v.to_string()
                .cloned()
                .map_err(|e| Error::Tokenizer(format!("`{key}`: {e}")))
        })
        .collect()
}

/// Builds the tokenizer described by a GGUF file's metadata.
pub fn from_gguf(content: &Content) -> Result<Tokenizer> {
    let model = meta(content, "tokenizer.ggml.model")?
        .to_string()
        .map_err(|e| Error::Tokenizer(e.to_string()))?;
    if model != "gpt2" {
        return Err(Error::Tokenizer(format!(
            "GGUF tokenizer model {model:?} is not byte-level BPE; pass a tokenizer.json with --tokenizer"
        )));
    }
    let pre = content
        .metadata
        .get("tokenizer.ggml.pre")
        .and_then(|v| v.to_string().ok().cloned())
        .unwrap_or_else(|| "default".to_string());
    let tokens = string_list(content, "tokenizer.ggml.tokens")?;
    let merges = string_list(content, "tokenizer.ggml.merges")?;
    let types: Vec<i32> = match content.metadata.get("tokenizer.ggml.token_type") {
        Some(v) => v
            .to_vec()
            .map_err(|e| Error::Tokenizer(e.to_string()))?
            .iter()
            .map(|x| x.to_i32().unwrap_or(1))
            .collect(),
        None => vec![1; tokens.len()],
    };

    let vocab: ahash::AHashMap<String, u32> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect();
    let merges = merges
        .iter()
        .map(|m| {
            m.split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .ok_or_else(|| Error::Tokenizer(format!("malformed merge {m:?}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .build()
        .map_err(|e| Error::Tokenizer(format!("cannot build BPE: {e}")))?;

    let mut tok = Tokenizer::new(bpe);
    tok.with_pre_tokenizer(Some(pre_tokenizer(&pre)?));
    tok.with_decoder(Some(ByteLevelDecoder::default()));
    // Token type 3 = control, 4 = user-defined: both must never be split by BPE.
    let specials: Vec<AddedToken> = tokens
        .iter()
        .zip(&types)
        .filter(|(_, &t)| t == 3 || t == 4)
        .map(|(s, _)| AddedToken::from(s.clone(), true))
        .collect();
    tok.add_special_tokens(specials)
        .map_err(|e| Error::Tokenizer(format!("cannot add special tokens: {e}")))?;
    Ok(tok)
}

fn pre_tokenizer(pre: &str) -> Result<PreTokenizerWrapper> {
    let byte_level = |use_regex| ByteLevel::new(false, true, use_regex);
    let split = |re: String| -> Result<PreTokenizerWrapper> {
        let pattern = SplitPattern::Regex(re);
        Ok(Split::new(pattern, SplitDelimiterBehavior::Isolated, false)
            .map_err(|e| Error::Tokenizer(format!("bad split regex: {e}")))?
            .into())
    };
    Ok(match pre {
        // SmolLM / StarCoder: every digit is its own word, then GPT-2's byte-level regex.
        "smollm" | "starcoder" | "refact" => {
            Sequence::new(vec![Digits::new(true).into(), byte_level(true).into()]).into()
        }
        "gpt-2" | "gpt2" | "default" => byte_level(true).into(),
        "llama-bpe" | "llama3" => Sequence::new(vec![
            split(llama3_style_regex("{1,3}"))?,
            byte_level(false).into(),
        ])
        .into(),
        "qwen2" => Sequence::new(vec![
            split(llama3_style_regex(""))?,
            byte_level(false).into(),
        ])
        .into(),
        other => {
            return Err(Error::Tokenizer(format!(
                "GGUF pre-tokenizer {other:?} is not supported (smollm, gpt-2, llama-bpe, qwen2); \
                 pass a tokenizer.json with --tokenizer"
            )))
        }
    })
}
