//! Log-likelihood of continuations given a context, as lm-evaluation-harness computes it for
//! `loglikelihood` requests (`lm_eval/models/huggingface.py`: `_encode_pair`, `_loglikelihood_tokens`),
//! and the multiple-choice metrics built on it (`lm_eval/api/task.py`, `process_results`).
//!
//! Requests are grouped by context ([`Group`]): one context, several continuations. The engine
//! runs each distinct token prefix once and continues from its key/value cache:
//! 1. contexts that share a long token prefix (a few-shot block, a preamble) form a cluster whose
//!    prefix is run once, as one row;
//! 2. the rest of each context runs as a right-padded batch after the expanded prefix cache; the
//!    logits at its last position give the first continuation token's log-probability (for
//!    MMLU's single-token letters this is all that is needed);
//! 3. continuations longer than one token run as a batch after their context's cache.
//!
//! The sums equal those of running `context + continuation` as one row (tests check this within
//! 1e-4), at a fraction of the cost when contexts are long.

use candle_core::Tensor;

use crate::error::{Error, Result};
use crate::model::generate::target_logprobs;
use crate::model::{Forward, Input, KvCache, Logits, Model};

/// lm-eval's `target_delimiter`: the text between a context and a continuation.
pub const TARGET_DELIMITER: &str = " ";
/// lm-eval's `fewshot_delimiter`: the text between few-shot examples and the question.
pub const FEWSHOT_DELIMITER: &str = "\n\n";

/// One context and the continuations scored after it (token ids).
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    pub ctx: Vec<u32>,
    pub conts: Vec<Vec<u32>>,
}

/// lm-eval's `_encode_pair`: trailing whitespace of the context moves to the continuation; the
/// continuation's tokens are those of `encode(context + continuation)` past `len(encode(context))`
/// (or, if that is empty, the continuation encoded alone).
pub fn encode_pair(
    model: &Model,
    context: &str,
    continuation: &str,
) -> Result<(Vec<u32>, Vec<u32>)> {
    let (context, continuation) = split_trailing_space(context, continuation);
    let ctx = model.encode(context)?;
    let whole = model.encode(&format!("{context}{continuation}"))?;
    let mut cont = whole
        .get(ctx.len()..)
        .map(<[u32]>::to_vec)
        .unwrap_or_default();
    if cont.is_empty() {
        cont = model.encode(&continuation)?;
    }
    if cont.is_empty() {
        return Err(Error::Input(format!(
            "continuation {continuation:?} of {context:?} encodes to no tokens"
        )));
    }
    Ok((ctx, cont))
}

/// The string part of [`encode_pair`]: `("Q: a ", "b")` → `("Q: a", " b")`.
pub fn split_trailing_space<'a>(context: &'a str, continuation: &str) -> (&'a str, String) {
    let trimmed = context.trim_end();
    let spaces = &context[trimmed.len()..];
    (trimmed, format!("{spaces}{continuation}"))
}

/// Tokenizes one context with several continuations (each prefixed by the target delimiter).
pub fn group(model: &Model, context: &str, choices: &[String]) -> Result<Group> {
    if choices.is_empty() {
        return Err(Error::Input(format!("no choices after {context:?}")));
    }
    let mut ctx = Vec::new();
    let mut conts = Vec::with_capacity(choices.len());
    for choice in choices {
        let (c, cont) = encode_pair(model, context, &format!("{TARGET_DELIMITER}{choice}"))?;
        ctx = c;
        conts.push(cont);
    }
    if ctx.is_empty() {
        return Err(Error::Input(format!(
            "context {context:?} encodes to no tokens"
        )));
    }
    Ok(Group { ctx, conts })
}

/// Batching limits of the engine.
#[derive(Debug, Clone, Copy)]
pub struct EngineOptions {
    /// Rows × cached-plus-new positions per forward: bounds the memory of expanded caches.
    pub token_budget: usize,
    /// Rows per forward.
    pub max_rows: usize,
    /// Shortest shared token prefix worth running once for a cluster of contexts.
    pub min_shared: usize,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            token_budget: 12_288,
            max_rows: 64,
            min_shared: 32,
        }
    }
}

/// Index of the largest value, first on ties (like `np.argmax`).
pub fn argmax(xs: &[f64]) -> usize {
    let mut best = 0;
    for (i, &x) in xs.iter().enumerate() {
        if x > xs[best] {
            best = i;
        }
    }
    best
}

/// lm-eval `acc`: whether the highest log-likelihood is the gold choice's.
pub fn acc(lls: &[f64], gold: usize) -> f64 {
    f64::from(u8::from(argmax(lls) == gold))
}

/// lm-eval `acc_norm`: the same after dividing each log-likelihood by its choice's length in
/// characters (of the choice text, without the delimiter).
pub fn acc_norm(lls: &[f64], char_lens: &[usize], gold: usize) -> f64 {
    let normed: Vec<f64> = lls
        .iter()
        .zip(char_lens)
        .map(|(ll, &n)| ll / n.max(1) as f64)
        .collect();
    acc(&normed, gold)
}

/// TruthfulQA MC2: probability mass of the true answers among all answers,
/// `Σ_true e^{ll} / Σ_all e^{ll}` (computed stably, relative to the largest log-likelihood).
pub fn true_mass(lls: &[f64], is_true: &[bool]) -> f64 {
    let max = lls.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let (mut t, mut all) = (0.0, 0.0);
    for (ll, &ok) in lls.iter().zip(is_true) {
        let p = (ll - max).exp();
        all += p;
        if ok {
            t += p;
        }
    }
    if all > 0.0 {
        t / all
    } else {
        0.0
    }
}

/// One context as the engine sees it: left-truncated to fit the window with its longest
/// continuation (lm-eval truncates from the left the same way).
struct Ctx<'a> {
    group: usize,
    tokens: &'a [u32],
}

/// The log-likelihood of every continuation of every group, `[group][continuation]`.
pub fn loglikelihoods(
    model: &Model,
    groups: &[Group],
    opts: &EngineOptions,
    cancel: Option<&std::sync::atomic::AtomicBool>,
) -> Result<Vec<Vec<f64>>> {
    let ctxs = fit_to_window(model, groups)?;
    let mut out: Vec<Vec<f64>> = groups.iter().map(|g| vec![0.0; g.conts.len()]).collect();
    for cluster in clusters(&ctxs, opts.min_shared) {
        let prefix = match cluster.prefix_len {
            0 => None,
            n => Some(run_prefix(model, &ctxs[cluster.members[0]].tokens[..n])?),
        };
        let mut members = cluster.members;
        // Similar lengths in one batch waste little padding.
        members.sort_by_key(|&m| ctxs[m].tokens.len());
        for chunk in chunks(
            &members,
            &ctxs,
            groups,
            cluster.prefix_len,
            model.config.max_positions,
            opts,
        ) {
            check_cancel(cancel)?;
            let batch: Vec<&Ctx> = chunk.iter().map(|&m| &ctxs[m]).collect();
            score_chunk(
                model,
                groups,
                &batch,
                cluster.prefix_len,
                prefix.as_ref(),
                cancel,
                &mut out,
            )?;
        }
    }
    Ok(out)
}

pub fn check_cancel(cancel: Option<&std::sync::atomic::AtomicBool>) -> Result<()> {
    match cancel {
        Some(c) if c.load(std::sync::atomic::Ordering::Relaxed) => Err(Error::Cancelled),
        _ => Ok(()),
    }
}

fn fit_to_window<'a>(model: &Model, groups: &'a [Group]) -> Result<Vec<Ctx<'a>>> {
    let window = model.config.max_positions;
    groups
        .iter()
        .enumerate()
        .map(|(i, g)| {
            let longest = g.conts.iter().map(Vec::len).max().unwrap_or(0);
            if g.ctx.is_empty() || g.conts.iter().any(Vec::is_empty) {
                return Err(Error::Input("empty context or continuation".into()));
            }
            if longest >= window {
                return Err(Error::Input(format!(
                    "a continuation of {longest} tokens does not fit the context window of {window}"
                )));
            }
            let keep = g.ctx.len().min(window - longest);
            Ok(Ctx {
                group: i,
                tokens: &g.ctx[g.ctx.len() - keep..],
            })
        })
        .collect()
}

/// Contexts whose shared token prefix is run once.
struct Cluster {
    prefix_len: usize,
    members: Vec<usize>,
}

fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// Sorts contexts by tokens and walks them, keeping neighbours together while they share at
/// least `min_shared` tokens and at least half of the cluster's prefix (so one outlier does not
/// shrink a long few-shot prefix). Each member keeps at least one token of its own, whose logits
/// score the first continuation token. Singletons go to one cluster without a prefix.
fn clusters(ctxs: &[Ctx], min_shared: usize) -> Vec<Cluster> {
    let mut order: Vec<usize> = (0..ctxs.len()).collect();
    order.sort_by(|&a, &b| ctxs[a].tokens.cmp(ctxs[b].tokens));
    let mut found: Vec<Cluster> = Vec::new();
    for i in order {
        let own = ctxs[i].tokens;
        if let Some(last) = found.last_mut() {
            let head = &ctxs[last.members[0]].tokens[..last.prefix_len];
            let shared = common_prefix(head, own).min(own.len() - 1);
            if shared >= min_shared.max(1) && 2 * shared >= last.prefix_len {
                last.prefix_len = shared;
                last.members.push(i);
                continue;
            }
        }
        found.push(Cluster {
            prefix_len: own.len() - 1,
            members: vec![i],
        });
    }
    let (shared, single): (Vec<Cluster>, Vec<Cluster>) = found
        .into_iter()
        .partition(|c| c.members.len() > 1 && c.prefix_len >= min_shared.max(1));
    let mut all = shared;
    let rest: Vec<usize> = single.into_iter().flat_map(|c| c.members).collect();
    if !rest.is_empty() {
        all.push(Cluster {
            prefix_len: 0,
            members: rest,
        });
    }
    all
}

/// Whether a batch of `padded` positions holding `real` tokens wastes little: at most a quarter
/// more, plus a few positions of slack so that tiny batches are not split for nothing. Forward
/// passes here are compute-bound, so padding costs as much as real tokens.
fn padding_ok(padded: usize, real: usize) -> bool {
    padded as f64 <= 1.25 * real as f64 + 16.0
}

/// Splits a cluster's members (sorted by context length) into batches. A batch stays within
/// the row limit and the token budget, counted as its continuation rows times its longest
/// context plus its longest continuation: the size of stage 3's expanded cache. That padded
/// length must also fit the window (positions are computed for padding too), and the padded
/// context suffixes of stage 2 stay close to their real size.
fn chunks(
    members: &[usize],
    ctxs: &[Ctx],
    groups: &[Group],
    prefix_len: usize,
    window: usize,
    opts: &EngineOptions,
) -> Vec<Vec<usize>> {
    let mut out: Vec<Vec<usize>> = Vec::new();
    let mut cur: Vec<usize> = Vec::new();
    let (mut rows, mut ctx_len, mut cont_len, mut suffixes) = (0usize, 0usize, 0usize, 0usize);
    for &m in members {
        let g = &groups[ctxs[m].group];
        let own_ctx = ctxs[m].tokens.len();
        let own_cont = g.conts.iter().map(Vec::len).max().unwrap_or(0);
        let (r, c, t) = (
            rows + g.conts.len(),
            ctx_len.max(own_ctx),
            cont_len.max(own_cont),
        );
        let s = suffixes + own_ctx - prefix_len;
        let padded = (cur.len() + 1) * (c - prefix_len);
        let fits = r <= opts.max_rows
            && r * (c + t) <= opts.token_budget
            && c + t <= window
            && padding_ok(padded, s);
        if !cur.is_empty() && !fits {
            out.push(std::mem::take(&mut cur));
            (rows, ctx_len, cont_len, suffixes) =
                (g.conts.len(), own_ctx, own_cont, own_ctx - prefix_len);
        } else {
            (rows, ctx_len, cont_len, suffixes) = (r, c, t, s);
        }
        cur.push(m);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Runs a shared prefix as one row and keeps its cache.
pub(super) fn run_prefix(model: &Model, tokens: &[u32]) -> Result<KvCache> {
    let out = model.forward(
        Input::Tokens(&[tokens.to_vec()]),
        &Forward {
            keep_kv: true,
            ..Default::default()
        },
    )?;
    out.kv
        .ok_or_else(|| Error::Model("forward kept no cache".into()))
}

/// The cache rows `rows` (repeats allowed), e.g. one context's cache once per continuation.
pub fn select_rows(cache: &KvCache, rows: &[usize]) -> Result<KvCache> {
    let device = cache
        .layers
        .iter()
        .flatten()
        .next()
        .map(|(k, _)| k.device().clone())
        .ok_or_else(|| Error::Model("empty key/value cache".into()))?;
    let idx: Vec<u32> = rows.iter().map(|&r| r as u32).collect();
    let idx = Tensor::from_vec(idx, (rows.len(),), &device)?;
    let layers = cache
        .layers
        .iter()
        .map(|kv| match kv {
            Some((k, v)) => Ok(Some((k.index_select(&idx, 0)?, v.index_select(&idx, 0)?))),
            None => Ok(None),
        })
        .collect::<Result<Vec<_>>>()?;
    let valid = rows.iter().map(|&r| cache.valid[r].clone()).collect();
    Ok(KvCache { layers, valid })
}

/// Scores every continuation of the contexts of one batch (stages 2 and 3 of the module docs).
fn score_chunk(
    model: &Model,
    groups: &[Group],
    batch: &[&Ctx],
    prefix_len: usize,
    prefix: Option<&KvCache>,
    cancel: Option<&std::sync::atomic::AtomicBool>,
    out: &mut [Vec<f64>],
) -> Result<()> {
    let rows: Vec<Vec<u32>> = batch
        .iter()
        .map(|c| c.tokens[prefix_len..].to_vec())
        .collect();
    let past = prefix
        .map(|p| select_rows(p, &vec![0; rows.len()]))
        .transpose()?;
    let needs_more = batch
        .iter()
        .any(|c| groups[c.group].conts.iter().any(|t| t.len() > 1));
    let last: Vec<(usize, usize)> = rows
        .iter()
        .enumerate()
        .map(|(r, t)| (r, t.len() - 1))
        .collect();
    let ctx_out = model.forward(
        Input::Tokens(&rows),
        &Forward {
            past: past.as_ref(),
            logits: Logits::At(last),
            keep_kv: needs_more,
            ..Default::default()
        },
    )?;
    drop(past);
    // First continuation token of every continuation, read at its context's last position.
    let (mut at_row, mut targets, mut slots) = (Vec::new(), Vec::new(), Vec::new());
    for (r, c) in batch.iter().enumerate() {
        for (j, cont) in groups[c.group].conts.iter().enumerate() {
            at_row.push(r as u32);
            targets.push(cont[0]);
            slots.push((c.group, j));
        }
    }
    let logits = ctx_out.logits()?;
    let idx = Tensor::from_vec(at_row, (targets.len(),), logits.device())?;
    let first = target_logprobs(&logits.index_select(&idx, 0)?, &targets)?.to_vec1::<f32>()?;
    for (&(g, j), lp) in slots.iter().zip(first) {
        out[g][j] = f64::from(lp);
    }
    if !needs_more {
        return Ok(());
    }
    check_cancel(cancel)?;
    let cache = ctx_out
        .kv
        .ok_or_else(|| Error::Model("forward kept no cache".into()))?;
    score_rest(model, groups, batch, &cache, cancel, out)
}

/// Stage 3: the tokens after the first of each longer continuation, after its context's cache.
/// Continuations are sorted by length and run in batches of similar length, so padding stays
/// small when answers range from a word to a sentence (TruthfulQA).
fn score_rest(
    model: &Model,
    groups: &[Group],
    batch: &[&Ctx],
    cache: &KvCache,
    cancel: Option<&std::sync::atomic::AtomicBool>,
    out: &mut [Vec<f64>],
) -> Result<()> {
    // (context row in `cache`, group, continuation index) of every continuation to finish.
    let mut todo: Vec<(usize, usize, usize)> = Vec::new();
    for (r, c) in batch.iter().enumerate() {
        for (j, cont) in groups[c.group].conts.iter().enumerate() {
            if cont.len() > 1 {
                todo.push((r, c.group, j));
            }
        }
    }
    todo.sort_by_key(|&(_, g, j)| groups[g].conts[j].len());
    let lens: Vec<usize> = todo
        .iter()
        .map(|&(_, g, j)| groups[g].conts[j].len() - 1)
        .collect();
    for range in similar_lengths(&lens) {
        check_cancel(cancel)?;
        score_continuations(model, groups, cache, &todo[range], out)?;
    }
    Ok(())
}

/// Splits lengths sorted ascending into consecutive runs whose padding is small ([`padding_ok`]).
fn similar_lengths(sorted: &[usize]) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let (mut start, mut sum) = (0, 0usize);
    for (i, &len) in sorted.iter().enumerate() {
        let padded = (i + 1 - start) * len;
        if i > start && !padding_ok(padded, sum + len) {
            out.push(start..i);
            (start, sum) = (i, 0);
        }
        sum += len;
    }
    if start < sorted.len() {
        out.push(start..sorted.len());
    }
    out
}

/// One forward of continuations (all but their last token) after their contexts' cache rows.
fn score_continuations(
    model: &Model,
    groups: &[Group],
    cache: &KvCache,
    todo: &[(usize, usize, usize)],
    out: &mut [Vec<f64>],
) -> Result<()> {
    // Inputs are all but the last token; each position predicts the next one.
    let rows: Vec<Vec<u32>> = todo
        .iter()
        .map(|&(_, g, j)| {
            let c = &groups[g].conts[j];
            c[..c.len() - 1].to_vec()
        })
        .collect();
    let owners: Vec<usize> = todo.iter().map(|&(r, _, _)| r).collect();
    let past = select_rows(cache, &owners)?;
    let at: Vec<(usize, usize)> = rows
        .iter()
        .enumerate()
        .flat_map(|(r, t)| (0..t.len()).map(move |p| (r, p)))
        .collect();
    let targets: Vec<u32> = todo
        .iter()
        .flat_map(|&(_, g, j)| groups[g].conts[j][1..].iter().copied())
        .collect();
    let res = model.forward(
        Input::Tokens(&rows),
        &Forward {
            past: Some(&past),
            logits: Logits::At(at),
            ..Default::default()
        },
    )?;
    let lps = target_logprobs(res.logits()?, &targets)?.to_vec1::<f32>()?;
    let mut k = 0;
    for (row, &(_, g, j)) in rows.iter().zip(todo) {
        out[g][j] += lps[k..k + row.len()]
            .iter()
            .map(|&x| f64::from(x))
            .sum::<f64>();
        k += row.len();
    }
    Ok(())
}

#[cfg(test)]
mod tests;
