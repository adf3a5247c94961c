//! Edit metrics as the field computes them (spec §4.1, §4.3).
//!
//! - Token accuracy (EasyEdit): teacher-force `prompt + " " + target`; the share of target
//!   positions whose argmax is the target token. Rewrite = acc(prompt, new), rephrase =
//!   acc(paraphrase, new), portability = acc(question, answer).
//! - Locality (EasyEdit): argmax tokens at the answer positions of `loc + " " + loc_ans` on the
//!   edited model vs. on the *unedited* model (recorded before any edit): the share unchanged.
//! - Probability metrics (ROME/MEMIT CounterFact): `NLL(x, o) = −(1/|o|) Σ log P(o_m | x, o_<m)`;
//!   efficacy = [NLL(new) < NLL(true)], paraphrase likewise, neighbourhood = [NLL(true) < NLL(new)],
//!   and magnitudes `exp(−NLL_new) − exp(−NLL_true)`.
//! - Greedy answers (`gen.*`, "The Mirage of Model Editing", ACL 2025): decode greedily after
//!   the prompt until end-of-text, a newline, or len(answer) + 8 tokens. Exact match: the
//!   answer's first |target| words are the target's words; token-F1: SQuAD's F1 of the answer's
//!   words against the target's; both after SQuAD normalization (lower case, punctuation and
//!   articles dropped). A completion prompt's answer goes on after the target ("Rome, the
//!   capital of Italy"), so exact match is taken at the target's length and F1 is what
//!   penalises the extra words.
//! - Generation fluency (ROME/MEMIT "GE"): over word tokens of a generated text, the bigram and
//!   trigram frequency entropies in bits H₂, H₃, combined as mean(2/3·H₂, 4/3·H₃) = (H₂ + 2H₃)/3.
//!   Repetitive text (the symptom of a damaged model) has low entropy.

use candle_core::D;

use crate::edit::request::target_ids;
use crate::error::{Error, Result};
use crate::model::generate::{target_logprobs, GenerateOptions};
use crate::model::{Logits, Model};

/// Rows per forward pass.
const CHUNK: usize = 32;

/// A scored sequence: the token ids and the positions (absolute) of the answer tokens.
struct Scored {
    ids: Vec<u32>,
    answer_from: usize,
}

/// `prompt + " " + answer` tokenized as one string (EasyEdit), with where the answer starts.
fn teacher_forced(model: &Model, prompt: &str, answer: &str) -> Result<Scored> {
    if answer.trim().is_empty() {
        return Err(Error::Input(format!("empty answer for {prompt:?}")));
    }
    let n_p = model.encode(prompt)?.len();
    let ids = model.encode(&format!("{prompt} {}", answer.trim()))?;
    if n_p == 0 || ids.len() <= n_p {
        return Err(Error::Input(format!(
            "cannot score {answer:?} after {prompt:?}"
        )));
    }
    if ids.len() > model.config.max_positions {
        return Err(Error::Input(format!(
            "{prompt:?} + answer is longer than the context window"
        )));
    }
    Ok(Scored {
        ids,
        answer_from: n_p,
    })
}

/// For each item, the argmax token at every answer position (teacher forcing) and the answer's
/// own tokens.
pub fn answer_argmax(
    model: &Model,
    items: &[(String, String)],
) -> Result<Vec<(Vec<u32>, Vec<u32>)>> {
    let scored: Vec<Scored> = items
        .iter()
        .map(|(p, a)| teacher_forced(model, p, a))
        .collect::<Result<_>>()?;
    let mut out = Vec::with_capacity(items.len());
    for chunk in scored.chunks(CHUNK) {
        let rows: Vec<Vec<u32>> = chunk.iter().map(|s| s.ids.clone()).collect();
        let at: Vec<(usize, usize)> = chunk
            .iter()
            .enumerate()
            .flat_map(|(r, s)| (s.answer_from - 1..s.ids.len() - 1).map(move |p| (r, p)))
            .collect();
        let logits = model.logits(&rows, Logits::At(at))?;
        let am = logits.argmax(D::Minus1)?.to_vec1::<u32>()?;
        let mut k = 0;
        for s in chunk {
            let n = s.ids.len() - s.answer_from;
            out.push((am[k..k + n].to_vec(), s.ids[s.answer_from..].to_vec()));
            k += n;
        }
    }
    Ok(out)
}

/// EasyEdit token accuracy of each `(prompt, answer)`.
pub fn token_accuracy(model: &Model, items: &[(String, String)]) -> Result<Vec<f64>> {
    Ok(answer_argmax(model, items)?
        .iter()
        .map(|(pred, gold)| {
            pred.iter().zip(gold).filter(|(a, b)| a == b).count() as f64 / gold.len() as f64
        })
        .collect())
}

/// Share of positions where two argmax sequences agree (locality against the pre-edit model).
pub fn agreement(pre: &[u32], post: &[u32]) -> f64 {
    if pre.is_empty() {
        return 1.0;
    }
    pre.iter().zip(post).filter(|(a, b)| a == b).count() as f64 / pre.len() as f64
}

/// p(target | prompt) of each item: the geometric mean of its tokens' probabilities,
/// exp(−mean token NLL). Measured on the model right after an edit lands it is the post-edit
/// probability that bench and replay report (comparable across methods, unlike the target
/// optimization's own probability, which some methods measure on the unedited model).
pub fn target_prob(model: &Model, items: &[(String, String)]) -> Result<Vec<f64>> {
    Ok(target_nll(model, items)?
        .into_iter()
        .map(|l| (-l).exp())
        .collect())
}

/// Mean per-token negative log-likelihood of `" " + target` after each prompt (token-level
/// concatenation, as ROME/MEMIT score CounterFact).
pub fn target_nll(model: &Model, items: &[(String, String)]) -> Result<Vec<f64>> {
    let mut prepared = Vec::with_capacity(items.len());
    for (p, t) in items {
        let prompt = model.encode(p)?;
        let tgt = target_ids(model, t)?;
        if prompt.is_empty() {
            return Err(Error::Input(format!("empty prompt for target {t:?}")));
        }
        prepared.push((prompt, tgt));
    }
    let mut out = Vec::with_capacity(items.len());
    for chunk in prepared.chunks(CHUNK) {
        let mut rows = Vec::new();
        let mut at = Vec::new();
        let mut targets = Vec::new();
        for (r, (prompt, tgt)) in chunk.iter().enumerate() {
            let mut ids = prompt.clone();
            ids.extend_from_slice(&tgt[..tgt.len() - 1]);
            for (m, &t) in tgt.iter().enumerate() {
                at.push((r, prompt.len() - 1 + m));
                targets.push(t);
            }
            rows.push(ids);
        }
        let logits = model.logits(&rows, Logits::At(at))?;
        let lp = target_logprobs(&logits, &targets)?.to_vec1::<f32>()?;
        let mut k = 0;
        for (_, tgt) in chunk {
            let n = tgt.len();
            out.push(-lp[k..k + n].iter().map(|&x| x as f64).sum::<f64>() / n as f64);
            k += n;
        }
    }
    Ok(out)
}

/// Tokens a greedy answer may run past the expected answer's length.
pub const ANSWER_SLACK: usize = 8;
/// Rows decoded together (generation streams the weights once per step for the whole batch).
const GEN_CHUNK: usize = 48;

/// The greedy answer after each `(prompt, expected answer)`: decoded until end-of-text, a
/// newline, or the expected answer's token count + [`ANSWER_SLACK`] tokens; the text before the
/// newline, trimmed.
pub fn greedy_answers(model: &Model, items: &[(String, String)]) -> Result<Vec<String>> {
    let mut prepared = Vec::with_capacity(items.len());
    for (p, a) in items {
        let prompt = model.encode(p)?;
        if prompt.is_empty() {
            return Err(Error::Input(format!("empty prompt for answer {a:?}")));
        }
        let limit = target_ids(model, a).map_or(1, |t| t.len()) + ANSWER_SLACK;
        prepared.push((prompt, limit));
    }
    // Rows of similar budgets decode together, so few steps are spent on finished rows.
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by_key(|&i| prepared[i].1);
    let mut out = vec![String::new(); items.len()];
    for chunk in order.chunks(GEN_CHUNK) {
        let rows: Vec<Vec<u32>> = chunk.iter().map(|&i| prepared[i].0.clone()).collect();
        let opts = GenerateOptions {
            max_tokens: chunk.iter().map(|&i| prepared[i].1).max().unwrap_or(1),
            stop_strings: vec!["\n".into()],
            ..Default::default()
        };
        let said = model.generate_batch_with(&rows, &opts, |_, _| true)?;
        for (&i, ids) in chunk.iter().zip(said) {
            // Greedy decoding is the same whatever the batch's budget: a row's own budget is a
            // prefix of what the batch decoded for it.
            let own: Vec<u32> = ids
                .into_iter()
                .take(prepared[i].1)
                .take_while(|t| !model.config.eos_token_ids.contains(t))
                .collect();
            let text = model.decode_text(&own)?;
            out[i] = text.split('\n').next().unwrap_or("").trim().to_string();
        }
    }
    Ok(out)
}

/// SQuAD's answer normalization, as words: lower case, punctuation removed, the articles
/// "a", "an", "the" dropped.
pub fn normalized_words(s: &str) -> Vec<String> {
    let lower: String = s
        .to_lowercase()
        .chars()
        .filter(|c| !c.is_ascii_punctuation())
        .collect();
    lower
        .split_whitespace()
        .filter(|w| !matches!(*w, "a" | "an" | "the"))
        .map(str::to_string)
        .collect()
}

/// 1 when the answer's first words are the target's (after normalization), else 0. A target
/// with no words left after normalization ("The") matches only an answer with none either.
pub fn exact_match(answer: &str, target: &str) -> f64 {
    let (a, t) = (normalized_words(answer), normalized_words(target));
    f64::from(if t.is_empty() {
        a.is_empty()
    } else {
        a.len() >= t.len() && a[..t.len()] == t[..]
    })
}

/// SQuAD token-F1 of the answer's words against the target's (multiset overlap). Two empty
/// answers agree (1); one empty against a non-empty one scores 0.
pub fn token_f1(answer: &str, target: &str) -> f64 {
    let (a, t) = (normalized_words(answer), normalized_words(target));
    if a.is_empty() || t.is_empty() {
        return f64::from(a.is_empty() && t.is_empty());
    }
    let mut left: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for w in &t {
        *left.entry(w).or_default() += 1;
    }
    let common = a
        .iter()
        .filter(|w| match left.get_mut(w.as_str()) {
            Some(n) if *n > 0 => {
                *n -= 1;
                true
            }
            _ => false,
        })
        .count();
    if common == 0 {
        return 0.0;
    }
    let precision = common as f64 / a.len() as f64;
    let recall = common as f64 / t.len() as f64;
    2.0 * precision * recall / (precision + recall)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::config::Arch;
    use crate::model::random::tiny_model;

    #[test]
    fn token_accuracy_counts_argmax_hits() {
        let m = tiny_model(Arch::Llama, 1);
        // Whatever the model predicts greedily is, by construction, 100% accurate.
        let prompt = "Hello";
        let ids = m.encode(prompt).unwrap();
        let gen = m
            .generate_batch_with(&[ids], &Default::default(), |_, _| true)
            .unwrap();
        let greedy = m.decode(&gen[0][..4]).unwrap();
        // The tiny byte tokenizer: the answer is scored after a space, so build it that way.
        if let Some(rest) = greedy.strip_prefix(' ') {
            let acc = token_accuracy(&m, &[(prompt.into(), rest.into())]).unwrap();
            assert_eq!(acc[0], 1.0);
        }
        let nll = target_nll(
            &m,
            &[("Hello".into(), "x".into()), ("Hello".into(), "xyz".into())],
        )
        .unwrap();
        assert!(nll.iter().all(|x| x.is_finite() && *x > 0.0));
        assert_eq!(agreement(&[1, 2, 3, 4], &[1, 2, 0, 4]), 0.75);
        assert!(token_accuracy(&m, &[("Hello".into(), " ".into())]).is_err());
    }

    #[test]
    fn exact_match_is_taken_at_the_targets_length_and_f1_counts_the_rest() {
        assert_eq!(exact_match("Rome, the capital of Italy.", "Rome"), 1.0);
        assert_eq!(exact_match("rome", " Rome"), 1.0);
        assert_eq!(exact_match("The Beatles were", "Beatles"), 1.0);
        assert_eq!(exact_match("in Rome", "Rome"), 0.0);
        assert_eq!(exact_match("Rom", "Rome"), 0.0);
        assert_eq!(exact_match("New", "New York"), 0.0);
        assert_eq!(exact_match("", "The"), 1.0);
        assert_eq!(token_f1("Rome", "Rome"), 1.0);
        // One of five words right: precision 1/5, recall 1 → F1 = 1/3.
        let f1 = token_f1("Rome, the capital of Italy", "Rome");
        assert!((f1 - 2.0 * 0.25 / 1.25).abs() < 1e-12, "{f1}");
        assert_eq!(token_f1("Paris", "Rome"), 0.0);
        assert_eq!(token_f1("", "Rome"), 0.0);
        assert_eq!(token_f1("the", "a"), 1.0);
        // Repeated words count once per occurrence in the target.
        let f1 = token_f1("Rome Rome", "Rome");
        assert!((f1 - 2.0 / 3.0).abs() < 1e-12, "{f1}");
    }

    #[test]
    fn greedy_answers_match_one_row_decoding_and_stop_at_the_budget() {
        let m = tiny_model(Arch::Llama, 3);
        let items: Vec<(String, String)> = [
            ("Hello", "ab"),
            ("The tower is in", "abcdefghij"),
            ("x", "q"),
        ]
        .iter()
        .map(|(p, a)| (p.to_string(), a.to_string()))
        .collect();
        let batched = greedy_answers(&m, &items).unwrap();
        for ((p, a), got) in items.iter().zip(&batched) {
            let budget = target_ids(&m, a).unwrap().len() + ANSWER_SLACK;
            let opts = GenerateOptions {
                max_tokens: budget,
                ..Default::default()
            };
            let ids = m.encode(p).unwrap();
            let alone = m.generate_batch_with(&[ids], &opts, |_, _| true).unwrap();
            let own: Vec<u32> = alone[0]
                .iter()
                .copied()
                .take_while(|t| !m.config.eos_token_ids.contains(t))
                .collect();
            let text = m.decode_text(&own).unwrap();
            let want = text.split('\n').next().unwrap().trim();
            // Decoded alone with exactly its own budget: the batch neither ran past it nor let
            // the other rows' budgets or padding change the answer.
            assert_eq!(got, want, "{p:?}");
        }
    }
}

/// Word tokens in the style of NLTK's `word_tokenize` (Penn Treebank conventions), which the
/// reference fluency metric counts: words, numbers and punctuation marks are separate tokens, and
/// the clitics `'s 're 've 'd 'll 'm n't` are split off their word. Not a byte-exact port (NLTK's
/// tokenizer has many special cases); on ordinary generated English the n-gram counts agree.
pub fn word_tokens(text: &str) -> Vec<String> {
    const CLITICS: [&str; 7] = ["n't", "'s", "'re", "'ve", "'d", "'ll", "'m"];
    let mut out = Vec::new();
    for chunk in text.split_whitespace() {
        let mut word = String::new();
        let mut pieces: Vec<String> = Vec::new();
        for c in chunk.chars() {
            // Apostrophes stay inside words (for the clitic split below); other punctuation is
            // a token of its own.
            if c.is_alphanumeric() || c == '\'' || c == '’' {
                word.push(if c == '’' { '\'' } else { c });
            } else {
                if !word.is_empty() {
                    pieces.push(std::mem::take(&mut word));
                }
                pieces.push(c.to_string());
            }
        }
        if !word.is_empty() {
            pieces.push(word);
        }
        // Quotes made of apostrophes are tokens of their own.
        let mut split = Vec::new();
        for piece in pieces {
            let inner = piece.trim_matches('\'');
            if inner.is_empty() || inner.len() == piece.len() {
                split.push(piece);
                continue;
            }
            let lead = piece.len() - piece.trim_start_matches('\'').len();
            let trail = piece.len() - piece.trim_end_matches('\'').len();
            split.extend((0..lead).map(|_| "'".to_string()));
            split.push(inner.to_string());
            split.extend((0..trail).map(|_| "'".to_string()));
        }
        for piece in split {
            let lower = piece.to_lowercase();
            match CLITICS
                .iter()
                .find(|c| lower.ends_with(*c) && lower.len() > c.len())
            {
                Some(c) => {
                    let cut = piece.len() - c.len();
                    out.push(piece[..cut].to_string());
                    out.push(piece[cut..].to_string());
                }
                None => out.push(piece),
            }
        }
    }
    out
}

/// Entropy in bits of the frequency distribution of a token sequence's n-grams (0 when it has
/// fewer than n tokens).
pub fn ngram_entropy_bits(tokens: &[String], n: usize) -> f64 {
    if n == 0 || tokens.len() < n {
        return 0.0;
    }
    let mut counts: std::collections::HashMap<&[String], usize> = std::collections::HashMap::new();
    for g in tokens.windows(n) {
        *counts.entry(g).or_default() += 1;
    }
    let total = (tokens.len() + 1 - n) as f64;
    // Summed in a fixed order so the value does not depend on the hash map's iteration order.
    let mut freqs: Vec<usize> = counts.into_values().collect();
    freqs.sort_unstable();
    freqs
        .iter()
        .map(|&c| {
            let f = c as f64 / total;
            -f * f.log2()
        })
        .sum()
}

/// ROME/MEMIT generation fluency of one text: (H₂ + 2·H₃)/3 over its word tokens, in bits.
pub fn fluency(text: &str) -> f64 {
    let tokens = word_tokens(text);
    (2.0 / 3.0 * ngram_entropy_bits(&tokens, 2) + 4.0 / 3.0 * ngram_entropy_bits(&tokens, 3)) / 2.0
}

#[cfg(test)]
mod fluency_tests {
    use super::*;

    #[test]
    fn word_tokens_split_punctuation_and_clitics() {
        assert_eq!(
            word_tokens("The Eiffel Tower isn't in Rome, it's in Paris."),
            [
                "The", "Eiffel", "Tower", "is", "n't", "in", "Rome", ",", "it", "'s", "in",
                "Paris", "."
            ]
        );
        assert_eq!(word_tokens("  (42%)  "), ["(", "42", "%", ")"]);
        assert_eq!(word_tokens("'Rome' is"), ["'", "Rome", "'", "is"]);
        assert!(word_tokens("").is_empty());
    }

    #[test]
    fn entropies_match_hand_counts() {
        let t = |s: &str| word_tokens(s);
        // Four distinct bigrams, each once: log2(4) = 2 bits.
        assert!((ngram_entropy_bits(&t("a b c d e"), 2) - 2.0).abs() < 1e-12);
        // "a a a a": one bigram thrice → 0 bits.
        assert_eq!(ngram_entropy_bits(&t("a a a a"), 2), 0.0);
        // "a b a b a": bigrams ab ×2, ba ×2 → 1 bit; trigrams aba ×2, bab ×1.
        let h3 = -(2.0 / 3.0f64) * (2.0 / 3.0f64).log2() - (1.0 / 3.0f64) * (1.0 / 3.0f64).log2();
        assert!((ngram_entropy_bits(&t("a b a b a"), 2) - 1.0).abs() < 1e-12);
        assert!((ngram_entropy_bits(&t("a b a b a"), 3) - h3).abs() < 1e-12);
        assert!((fluency("a b a b a") - (1.0 + 2.0 * h3) / 3.0).abs() < 1e-12);
        // Too short for trigrams.
        assert_eq!(ngram_entropy_bits(&t("a b"), 3), 0.0);
        // Repetition lowers fluency: the symptom it exists to catch.
        let varied = "the cat sat on the mat while a dog slept by the warm fire";
        let stuck = "the cat the cat the cat the cat the cat the cat the cat";
        assert!(fluency(varied) > fluency(stuck) + 1.0);
    }
}
