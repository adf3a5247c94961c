//! Greedy generation for `generate_until` probes (lm-eval's GSM8K): the prompts' shared few-shot
//! prefix is run once and its key/value cache reused; rows leave the batch as soon as they hit a
//! stop string or an end-of-sequence token, so the batch shrinks instead of running padding to
//! the longest answer. The output of a row is its text up to the first stop string (lm-eval cuts
//! at `until` the same way).

use crate::error::{Error, Result};
use crate::model::generate::argmax;
use crate::model::{Forward, Input, KvCache, Logits, Model};

use super::scoring::{check_cancel, run_prefix, select_rows};

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenOptions {
    pub max_tokens: usize,
    pub stop: Vec<String>,
    /// Rows per batch.
    pub max_rows: usize,
    /// Shortest shared prefix worth running once.
    pub min_shared: usize,
}

/// Greedy continuations of every prompt, cut at the first stop string.
pub fn generate_until(
    model: &Model,
    prompts: &[Vec<u32>],
    opts: &GenOptions,
    cancel: Option<&std::sync::atomic::AtomicBool>,
) -> Result<Vec<String>> {
    if prompts.iter().any(Vec::is_empty) {
        return Err(Error::Input("cannot generate from an empty prompt".into()));
    }
    let window = model.config.max_positions;
    if opts.max_tokens == 0 || opts.max_tokens >= window {
        return Err(Error::Input(format!(
            "max_tokens {} must be in 1..{window}",
            opts.max_tokens
        )));
    }
    // Like lm-eval, keep the end of a prompt that leaves no room for the answer.
    let keep = window - opts.max_tokens;
    let prompts: Vec<&[u32]> = prompts
        .iter()
        .map(|p| &p[p.len().saturating_sub(keep)..])
        .collect();
    let shared = shared_prefix(&prompts);
    let (prefix_len, prefix) = if shared >= opts.min_shared.max(1) {
        (shared, Some(run_prefix(model, &prompts[0][..shared])?))
    } else {
        (0, None)
    };
    let mut order: Vec<usize> = (0..prompts.len()).collect();
    order.sort_by_key(|&i| prompts[i].len());
    let mut out = vec![String::new(); prompts.len()];
    for chunk in order.chunks(opts.max_rows.max(1)) {
        check_cancel(cancel)?;
        let suffixes: Vec<Vec<u32>> = chunk
            .iter()
            .map(|&i| prompts[i][prefix_len..].to_vec())
            .collect();
        let texts = generate_chunk(model, &suffixes, prefix.as_ref(), opts, cancel)?;
        for (&i, t) in chunk.iter().zip(texts) {
            out[i] = t;
        }
    }
    Ok(out)
}

/// Longest common token prefix of all prompts, leaving each at least one token of its own.
fn shared_prefix(prompts: &[&[u32]]) -> usize {
    let Some(first) = prompts.first() else {
        return 0;
    };
    prompts.iter().fold(first.len() - 1, |n, p| {
        first[..n]
            .iter()
            .zip(p.iter())
            .take_while(|(a, b)| a == b)
            .count()
            .min(p.len() - 1)
    })
}

/// A row still generating.
struct Live {
    row: usize,
    tokens: Vec<u32>,
}

fn generate_chunk(
    model: &Model,
    suffixes: &[Vec<u32>],
    prefix: Option<&KvCache>,
    opts: &GenOptions,
    cancel: Option<&std::sync::atomic::AtomicBool>,
) -> Result<Vec<String>> {
    let past = prefix
        .map(|p| select_rows(p, &vec![0; suffixes.len()]))
        .transpose()?;
    let last: Vec<(usize, usize)> = suffixes
        .iter()
        .enumerate()
        .map(|(r, s)| (r, s.len() - 1))
        .collect();
    let first = model.forward(
        Input::Tokens(suffixes),
        &Forward {
            past: past.as_ref(),
            logits: Logits::At(last),
            keep_kv: true,
            ..Default::default()
        },
    )?;
    drop(past);
    let mut cache = first
        .kv
        .ok_or_else(|| Error::Model("forward kept no cache".into()))?;
    let mut logits = first
        .logits
        .ok_or_else(|| Error::Model("no logits".into()))?;
    let mut live: Vec<Live> = (0..suffixes.len())
        .map(|row| Live {
            row,
            tokens: Vec::new(),
        })
        .collect();
    let mut texts = vec![String::new(); suffixes.len()];
    for step in 0..opts.max_tokens {
        check_cancel(cancel)?;
        let rows = logits.to_vec2::<f32>()?;
        let mut keep = Vec::with_capacity(live.len());
        for (i, (l, row)) in live.iter_mut().zip(&rows).enumerate() {
            let tok = argmax(row);
            l.tokens.push(tok);
            let done = model.config.eos_token_ids.contains(&tok) || step + 1 == opts.max_tokens;
            let text = model.decode(&l.tokens)?;
            match cut_at_stop(&text, &opts.stop) {
                Some(cut) => texts[l.row] = cut.to_string(),
                None if done => texts[l.row] = model.decode_text(&l.tokens)?,
                None => keep.push(i),
            }
        }
        if keep.is_empty() {
            break;
        }
        if keep.len() < live.len() {
            // Drop finished rows from the batch and their cache.
            cache = select_rows(&cache, &keep)?;
            let mut kept = Vec::with_capacity(keep.len());
            for (i, l) in live.into_iter().enumerate() {
                if keep.contains(&i) {
                    kept.push(l);
                }
            }
            live = kept;
        }
        let next: Vec<Vec<u32>> = live
            .iter()
            .map(|l| vec![*l.tokens.last().unwrap_or(&0)])
            .collect();
        let out = model.forward(
            Input::Tokens(&next),
            &Forward {
                past: Some(&cache),
                logits: Logits::At((0..next.len()).map(|r| (r, 0)).collect()),
                keep_kv: true,
                ..Default::default()
            },
        )?;
        cache = out
            .kv
            .ok_or_else(|| Error::Model("forward kept no cache".into()))?;
        logits = out.logits.ok_or_else(|| Error::Model("no logits".into()))?;
    }
    Ok(texts)
}

/// The text before the earliest stop string, if any occurs.
pub fn cut_at_stop<'a>(text: &'a str, stop: &[String]) -> Option<&'a str> {
    stop.iter()
        .filter(|s| !s.is_empty())
        .filter_map(|s| text.find(s.as_str()))
        .min()
        .map(|i| &text[..i])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::generate::GenerateOptions;
    use crate::model::random::tiny_model;
    use crate::model::Arch;

    #[test]
    fn cut_at_the_earliest_stop_string() {
        let stop = vec!["Question:".to_string(), "</s>".to_string()];
        assert_eq!(cut_at_stop("42 </s> Question:", &stop), Some("42 "));
        assert_eq!(
            cut_at_stop("The answer is 7.\n\nQuestion: x", &stop),
            Some("The answer is 7.\n\n")
        );
        assert_eq!(cut_at_stop("no stop", &stop), None);
    }

    #[test]
    fn shared_prefix_leaves_each_prompt_a_token() {
        assert_eq!(shared_prefix(&[&[1, 2, 3, 4], &[1, 2, 3, 5]]), 3);
        assert_eq!(shared_prefix(&[&[1, 2, 3], &[1, 2, 3, 4]]), 2);
        assert_eq!(shared_prefix(&[&[9, 2], &[1, 2]]), 0);
    }

    /// Same greedy tokens as the runtime's own batched generator, with and without a shared
    /// prefix and with rows leaving the batch early.
    #[test]
    fn matches_the_runtime_generator() {
        let model = tiny_model(Arch::Llama, 5);
        let few_shot = "Question: 1+1?\nAnswer: 2\n\nQuestion: ";
        let prompts: Vec<Vec<u32>> = ["3+4?\nAnswer:", "10-2?\nAnswer:", "7?\nAnswer:"]
            .iter()
            .map(|q| model.encode(&format!("{few_shot}{q}")).unwrap())
            .collect();
        let reference: Vec<String> = prompts
            .iter()
            .map(|p| {
                let opts = GenerateOptions {
                    max_tokens: 12,
                    ..Default::default()
                };
                let ids = model
                    .generate_batch_with(std::slice::from_ref(p), &opts, |_, _| true)
                    .unwrap();
                model.decode_text(&ids[0]).unwrap()
            })
            .collect();
        for min_shared in [4, 1000] {
            let opts = GenOptions {
                max_tokens: 12,
                stop: vec![],
                max_rows: 2,
                min_shared,
            };
            assert_eq!(
                generate_until(&model, &prompts, &opts, None).unwrap(),
                reference
            );
        }
        // A stop string taken from the reference output ends that row there.
        let Some(stop) = reference[0].get(3..5).filter(|s| !s.trim().is_empty()) else {
            return;
        };
        let opts = GenOptions {
            max_tokens: 12,
            stop: vec![stop.to_string()],
            max_rows: 3,
            min_shared: 4,
        };
        let got = generate_until(&model, &prompts, &opts, None).unwrap();
        let want = &reference[0][..reference[0].find(stop).unwrap()];
        assert_eq!(got[0], want);
    }
}
