//! The D4S paper's MQD question types, rebuilt from fact cases (CounterFact, zsRE, …).
//!
//! The paper (Huang et al., NeurIPS 2024, §3.3; spec §2.9) edits the same kind of facts with
//! three target formats — True/False, Multiple-choice and Directly-generated — and finds that
//! the damage editing does to the model grows with the perplexity of the targets (free-form
//! answers worst). Its Multi-Question Dataset was not released, so [`mqd`] builds the three
//! formats from any fact cases, deterministically from a seed. Every constructed request keeps
//! the subject inside its prompt and passes [`EditRequest::validate`]; a case for which that is
//! impossible (e.g. no second distinct answer to draw a distractor from) is left out. Each
//! request of a case is transformed (MQuAKE cases keep all their rewrites). Origins get a
//! suffix: `counterfact-edit.json#17/mqd-tf`, `…/mqd-mc`, `…/mqd-dg`.
//!
//! A *statement* is the filled prompt followed by an answer ("The mother tongue of Danielle
//! Darrieux is English"); when the prompt is a question (it ends with `?`, or is a zsRE
//! locality prompt `"nq question: …"`), it is `the answer to "<question>" is <answer>`.
//!
//! **True/False** (`mqd-tf`; targets of one low-perplexity token). The seed is not used.
//! - prompt `True or false: <statement with the new target>.\nAnswer:`, target `True` (the edit
//!   asserts the counterfactual); `ground_truth` is `False` when the case knows a true answer
//!   that differs from the new target;
//! - paraphrases: the same statement built on each paraphrase prompt (same fact, other
//!   wording), target `True`;
//! - neighbours: the statement of each locality/neighbourhood fact with its own (true) answer,
//!   expected answer `True`; neighbours without an answer are dropped.
//!
//! **Multiple-choice** (`mqd-mc`; MMLU-style, targets are letters).
//! - prompt `<question>\nA. …\nB. …\nC. …\nD. …\nAnswer:` where the question is the prompt
//!   itself when it is one, else `Which option best completes the sentence "<prompt> ___"?`;
//!   target = the letter of the new target.
//! - The three distractors are the case's own true answer (`ground_truth`, when known), so that
//!   the question asks exactly which fact the model holds, then targets of other cases whose
//!   prompt has the same template (`prompt` with the subject replaced by `{}`, i.e. the same
//!   relation in CounterFact, so answers are of the same type: languages, cities, …), then
//!   targets of any other case. They are drawn with a ChaCha8 generator seeded by `seed`, in
//!   case order, and the options are shuffled with it; distinct options only (case-insensitive),
//!   single-line, never containing `{}`. With fewer than three candidates in the whole set the
//!   question has fewer options (at least two).
//! - paraphrases: the question form of each paraphrase with the same options in the same order
//!   (so the same letter is the answer);
//! - neighbours: the neighbour's question with its true answer, the case's *new* target (to
//!   catch an edit that bleeds into neighbours) and same-template/other distractors, shuffled;
//!   expected answer = the letter of its true answer.
//!
//! **Directly-generated** (`mqd-dg`): the case as it is — the cloze (or question) prompt with
//! its free-form target, paraphrases and neighbours.
//!
//! Portability and multi-hop questions have free-form answers, so True/False and
//! Multiple-choice cases drop them; generation prompts are kept.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::str::FromStr;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::EvalCase;
use crate::edit::request::Probe;
use crate::edit::EditRequest;
use crate::error::Error;

/// The three MQD target formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum QuestionType {
    TrueFalse,
    MultipleChoice,
    DirectlyGenerated,
}

impl QuestionType {
    pub const ALL: [QuestionType; 3] = [
        QuestionType::TrueFalse,
        QuestionType::MultipleChoice,
        QuestionType::DirectlyGenerated,
    ];

    pub fn name(self) -> &'static str {
        match self {
            QuestionType::TrueFalse => "true-false",
            QuestionType::MultipleChoice => "multiple-choice",
            QuestionType::DirectlyGenerated => "directly-generated",
        }
    }

    /// The short form used in origins (`tf`, `mc`, `dg`).
    pub fn short(self) -> &'static str {
        match self {
            QuestionType::TrueFalse => "tf",
            QuestionType::MultipleChoice => "mc",
            QuestionType::DirectlyGenerated => "dg",
        }
    }
}

impl fmt::Display for QuestionType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for QuestionType {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let s = s.trim();
        Self::ALL
            .into_iter()
            .find(|q| q.name().eq_ignore_ascii_case(s) || q.short().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                Error::Input(format!(
                    "unknown question type {s:?}; known: true-false (tf), multiple-choice (mc), \
                     directly-generated (dg)"
                ))
            })
    }
}

/// The paper's MQD question types built deterministically from CounterFact/zsRE facts (see the
/// module documentation for the exact construction).
pub fn mqd(cases: &[EvalCase], qtype: QuestionType, seed: u64) -> Vec<EvalCase> {
    let suffix = qtype.short();
    match qtype {
        QuestionType::DirectlyGenerated => cases
            .iter()
            .filter(|c| c.requests.iter().all(|r| r.validate().is_ok()))
            .map(|c| EvalCase {
                origin: format!("{}/mqd-{suffix}", c.origin),
                ..c.clone()
            })
            .collect(),
        QuestionType::TrueFalse => cases
            .iter()
            .filter_map(|c| transform(c, suffix, |r| Some(true_false(r))))
            .collect(),
        QuestionType::MultipleChoice => {
            let pool = AnswerPool::new(cases);
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            cases
                .iter()
                .filter_map(|c| transform(c, suffix, |r| multiple_choice(r, &pool, &mut rng)))
                .collect()
        }
    }
}

/// Applies `make` to every request; the case is left out if any result is missing or invalid.
fn transform(
    case: &EvalCase,
    suffix: &str,
    mut make: impl FnMut(&EditRequest) -> Option<EditRequest>,
) -> Option<EvalCase> {
    let requests = case
        .requests
        .iter()
        .map(|r| make(r).filter(|r| r.validate().is_ok() && !r.prompt.contains("{}")))
        .collect::<Option<Vec<_>>>()?;
    (!requests.is_empty()).then(|| EvalCase {
        requests,
        portability: vec![],
        multi_hop: None,
        generation_prompts: case.generation_prompts.clone(),
        origin: format!("{}/mqd-{suffix}", case.origin),
    })
}

/// The question a prompt asks, if it is one: zsRE's `src` ends with `?`; its locality prompts
/// are `"nq question: <lower-case question without ?>"`.
fn as_question(prompt: &str) -> Option<String> {
    let p = prompt.trim();
    const NQ: &str = "nq question:";
    if p.len() >= NQ.len() && p.is_char_boundary(NQ.len()) && p[..NQ.len()].eq_ignore_ascii_case(NQ)
    {
        let q = p[NQ.len()..].trim();
        let mut chars = q.chars();
        let q = match chars.next() {
            Some(c) => c.to_uppercase().chain(chars).collect::<String>(),
            None => return None,
        };
        return Some(if q.ends_with('?') { q } else { format!("{q}?") });
    }
    p.ends_with('?').then(|| p.to_string())
}

/// "<prompt> <answer>", or `the answer to "<question>" is <answer>` for questions.
fn statement(prompt: &str, answer: &str) -> String {
    let answer = answer.trim();
    match as_question(prompt) {
        Some(q) => format!("the answer to \"{q}\" is {answer}"),
        None => format!("{} {answer}", prompt.trim()),
    }
}

fn true_false_prompt(prompt: &str, answer: &str) -> String {
    let s = statement(prompt, answer);
    format!("True or false: {}.\nAnswer:", s.trim_end_matches('.'))
}

fn same(a: &str, b: &str) -> bool {
    key(a) == key(b)
}

fn key(s: &str) -> String {
    s.trim().to_lowercase()
}

fn true_false(r: &EditRequest) -> EditRequest {
    let target = r.target.as_str();
    EditRequest {
        subject: r.subject.clone(),
        prompt: true_false_prompt(&r.filled_prompt(), target),
        target: "True".into(),
        ground_truth: r
            .ground_truth
            .as_deref()
            .filter(|g| !g.trim().is_empty() && !same(g, target))
            .map(|_| "False".into()),
        paraphrases: r
            .paraphrases
            .iter()
            .map(|p| true_false_prompt(p, target))
            .collect(),
        neighbors: r
            .neighbors
            .iter()
            .filter_map(|n| {
                let answer = n.answer.as_deref()?;
                Some(Probe {
                    prompt: true_false_prompt(&n.prompt, answer),
                    answer: Some("True".into()),
                })
            })
            .collect(),
    }
}

const LETTERS: [&str; 4] = ["A", "B", "C", "D"];
const DISTRACTORS: usize = 3;

/// The new targets of all cases, distinct, in first-seen order (so draws are reproducible), and
/// grouped by prompt template (same template ≈ same relation ≈ answers of the same type).
struct AnswerPool {
    answers: Vec<String>,
    by_template: HashMap<String, Vec<usize>>,
}

impl AnswerPool {
    fn new(cases: &[EvalCase]) -> Self {
        let mut answers = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        let mut by_template: HashMap<String, Vec<usize>> = HashMap::new();
        for r in cases.iter().flat_map(|c| &c.requests) {
            if !usable_option(&r.target) {
                continue;
            }
            let i = *index.entry(key(&r.target)).or_insert_with(|| {
                answers.push(r.target.trim().to_string());
                answers.len() - 1
            });
            let group = by_template.entry(r.template()).or_default();
            if !group.contains(&i) {
                group.push(i);
            }
        }
        Self {
            answers,
            by_template,
        }
    }

    /// Up to [`DISTRACTORS`] options different from `exclude` and from each other: `first`
    /// candidates in order, then random same-template targets, then random targets of any case.
    fn distractors(
        &self,
        rng: &mut ChaCha8Rng,
        template: &str,
        exclude: &[&str],
        first: &[&str],
    ) -> Vec<String> {
        let mut seen: HashSet<String> = exclude.iter().map(|e| key(e)).collect();
        let mut out: Vec<String> = Vec::new();
        let mut offer = |s: &str, out: &mut Vec<String>| {
            if out.len() < DISTRACTORS && usable_option(s) && seen.insert(key(s)) {
                out.push(s.trim().to_string());
            }
        };
        for f in first {
            offer(f, &mut out);
        }
        let group = self
            .by_template
            .get(template)
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        // A bounded number of random draws keeps this O(1) per case on 10k-case pools; the
        // final scan (from a random offset) guarantees we find the few that exist in tiny sets.
        if !group.is_empty() {
            for _ in 0..32 {
                if out.len() == DISTRACTORS {
                    return out;
                }
                offer(
                    &self.answers[group[rng.random_range(0..group.len())]],
                    &mut out,
                );
            }
        }
        if !self.answers.is_empty() {
            for _ in 0..32 {
                if out.len() == DISTRACTORS {
                    return out;
                }
                offer(
                    &self.answers[rng.random_range(0..self.answers.len())],
                    &mut out,
                );
            }
        }
        if !self.answers.is_empty() {
            let start = rng.random_range(0..self.answers.len());
            for k in 0..self.answers.len() {
                if out.len() == DISTRACTORS {
                    break;
                }
                offer(&self.answers[(start + k) % self.answers.len()], &mut out);
            }
        }
        out
    }
}

/// Options must fit on one line of the prompt and must not add a `{}` placeholder.
fn usable_option(s: &str) -> bool {
    let s = s.trim();
    !s.is_empty() && !s.contains('\n') && !s.contains("{}") && s.len() <= 200
}

/// The question form of a prompt for a multiple-choice item.
fn mc_question(prompt: &str) -> String {
    as_question(prompt).unwrap_or_else(|| {
        format!(
            "Which option best completes the sentence \"{} ___\"?",
            prompt.trim()
        )
    })
}

fn mc_prompt(question: &str, options: &[String]) -> String {
    let mut s = question.to_string();
    for (letter, option) in LETTERS.iter().zip(options) {
        s.push_str(&format!("\n{letter}. {option}"));
    }
    s.push_str("\nAnswer:");
    s
}

/// Shuffled options with the correct one among them, and the correct letter.
fn shuffled(
    rng: &mut ChaCha8Rng,
    correct: &str,
    distractors: Vec<String>,
) -> Option<(Vec<String>, &'static str)> {
    if distractors.is_empty() || !usable_option(correct) {
        return None;
    }
    let mut options = distractors;
    options.push(correct.trim().to_string());
    options.shuffle(rng);
    let at = options.iter().position(|o| same(o, correct))?;
    Some((options, LETTERS[at]))
}

fn multiple_choice(
    r: &EditRequest,
    pool: &AnswerPool,
    rng: &mut ChaCha8Rng,
) -> Option<EditRequest> {
    let template = r.template();
    let truth = r.ground_truth.as_deref().unwrap_or("");
    let distractors = pool.distractors(rng, &template, &[&r.target], &[truth]);
    let (options, letter) = shuffled(rng, &r.target, distractors)?;
    let ground_truth = options
        .iter()
        .position(|o| !truth.is_empty() && same(o, truth))
        .map(|i| LETTERS[i].to_string());
    let paraphrases = r
        .paraphrases
        .iter()
        .map(|p| mc_prompt(&mc_question(p), &options))
        .collect();
    let mut neighbors = Vec::new();
    for n in &r.neighbors {
        let Some(answer) = n.answer.as_deref() else {
            continue;
        };
        let distractors = pool.distractors(rng, &template, &[answer], &[&r.target]);
        if let Some((opts, l)) = shuffled(rng, answer, distractors) {
            neighbors.push(Probe {
                prompt: mc_prompt(&mc_question(&n.prompt), &opts),
                answer: Some(l.to_string()),
            });
        }
    }
    Some(EditRequest {
        subject: r.subject.clone(),
        prompt: mc_prompt(&mc_question(&r.filled_prompt()), &options),
        target: letter.to_string(),
        ground_truth,
        paraphrases,
        neighbors,
    })
}

#[cfg(test)]
mod tests;
