//! GSM8K (lm-eval `gsm8k`): greedy generation after "Question: {q}\nAnswer:", stopping at
//! "Question:", "</s>" or "<|im_end|>"; few-shot examples are train questions with their full
//! worked answers (calculator annotations included, as lm-eval feeds them). Two exact-match
//! scores against the reference's final number:
//! - strict: the first match of `#### (-?[0-9.,]+)` in the output;
//! - flexible: the last match of `(-?[$0-9.,]{2,})|(-?[0-9]+)` in the output;
//!
//! after lm-eval's normalization of both sides: remove ",", "$", everything up to the last
//! "#### ", one trailing "."; compare case-insensitively. Without a match the prediction is
//! "[invalid]". lm-eval does this with regular expressions; the scanners below implement exactly
//! those patterns.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::data;
use super::scoring::{FEWSHOT_DELIMITER, TARGET_DELIMITER};
use super::{GenItem, Prepared, ProbeConfig};
use crate::error::Result;
use crate::model::Model;

/// GSM8K evaluates `⌈limit / LIMIT_DIVISOR⌉` items: a generated answer costs several times a
/// multiple-choice item (dozens of sequential decoding steps), and a quarter keeps the default
/// run (25 items) near the time of the other tasks. `limit: None` still means the whole split.
pub const LIMIT_DIVISOR: usize = 4;

/// lm-eval's `until` for GSM8K.
pub const STOP: [&str; 3] = ["Question:", "</s>", "<|im_end|>"];
/// What a filter yields when nothing matches.
pub const INVALID: &str = "[invalid]";

#[derive(Debug, Clone, Deserialize)]
pub struct Problem {
    pub question: String,
    pub answer: String,
}

pub fn files(root: &Path) -> (PathBuf, PathBuf) {
    let d = root.join("gsm8k");
    (d.join("test.jsonl"), d.join("train.jsonl"))
}

pub fn load(path: &Path) -> Result<Vec<Problem>> {
    let records: Vec<(usize, Problem)> = data::read_jsonl(path, "GSM8K")?;
    records
        .into_iter()
        .map(|(line, p)| {
            if p.answer.contains("#### ") {
                Ok(p)
            } else {
                Err(data::bad_record(
                    path,
                    line,
                    "the answer has no final \"#### \"",
                ))
            }
        })
        .collect()
}

pub fn context(question: &str) -> String {
    format!("Question: {question}\nAnswer:")
}

pub fn example(p: &Problem) -> String {
    format!("{}{TARGET_DELIMITER}{}", context(&p.question), p.answer)
}

fn is_num_char(c: char) -> bool {
    c.is_ascii_digit() || c == '.' || c == ','
}

/// Length in bytes of the run of chars satisfying `f` at the start of `s`.
fn run(s: &str, f: impl Fn(char) -> bool) -> usize {
    s.char_indices()
        .find(|&(_, c)| !f(c))
        .map_or(s.len(), |(i, _)| i)
}

/// `#### (\-?[0-9\.\,]+)`, first match (lm-eval's "strict-match").
pub fn strict_extract(text: &str) -> String {
    let mut from = 0;
    while let Some(i) = text[from..].find("#### ") {
        let at = from + i + "#### ".len();
        let rest = &text[at..];
        let with_sign = rest
            .strip_prefix('-')
            .map(|r| run(r, is_num_char))
            .unwrap_or(0);
        if with_sign > 0 {
            return rest[..1 + with_sign].to_string();
        }
        let n = run(rest, is_num_char);
        if n > 0 {
            return rest[..n].to_string();
        }
        from = at;
    }
    INVALID.to_string()
}

/// `(-?[$0-9.,]{2,})|(-?[0-9]+)`, last match (lm-eval's "flexible-extract"). Matches are found
/// left to right without overlap, trying the first alternative before the second at each place.
pub fn flexible_extract(text: &str) -> String {
    let money = |c: char| c == '$' || is_num_char(c);
    let mut last: Option<&str> = None;
    let mut i = 0;
    while i < text.len() {
        let rest = &text[i..];
        // `-?` is greedy; when the signed form fails it backtracks to no sign, which cannot match
        // either because "-" is in neither class. So the sign is taken whenever a body follows.
        let sign = usize::from(rest.starts_with('-'));
        let body = &rest[sign..];
        let wide = run(body, money);
        let digits = run(body, |c| c.is_ascii_digit());
        let len = if wide >= 2 {
            sign + wide
        } else if digits > 0 {
            sign + digits
        } else {
            0
        };
        if len > 0 {
            last = Some(&rest[..len]);
            i += len;
        } else {
            i += rest.chars().next().map_or(1, char::len_utf8);
        }
    }
    last.map_or_else(|| INVALID.to_string(), |m| m.trim().to_string())
}

/// lm-eval `exact_match` normalization with GSM8K's `regexes_to_ignore` and `ignore_case`.
pub fn normalize(s: &str) -> String {
    let mut s = s.replace([',', '$'], "");
    if let Some(i) = s.rfind("#### ") {
        s = s[i + "#### ".len()..].to_string();
    }
    // `\.$`: a final "." (Python's `$` also matches before a final newline).
    if s.ends_with(".\n") {
        s.remove(s.len() - 2);
    } else if s.ends_with('.') {
        s.pop();
    }
    s.to_lowercase()
}

/// (strict, flexible) exact match of one output against the reference answer.
pub fn score(output: &str, reference: &str) -> (f64, f64) {
    let gold = normalize(reference);
    let hit = |pred: String| f64::from(u8::from(normalize(&pred) == gold));
    (hit(strict_extract(output)), hit(flexible_extract(output)))
}

pub fn prepare(cfg: &ProbeConfig, model: &Model, shots: usize) -> Result<Prepared> {
    let (test, train) = files(&cfg.data_dir);
    let problems = load(&test)?;
    let prefix: String = if shots > 0 {
        let pool = load(&train)?;
        let keys: Vec<String> = pool.iter().map(|p| p.question.clone()).collect();
        data::few_shot(&keys, shots, cfg.seed)
            .into_iter()
            .map(|i| format!("{}{FEWSHOT_DELIMITER}", example(&pool[i])))
            .collect()
    } else {
        String::new()
    };
    let keys: Vec<String> = problems.iter().map(|p| p.question.clone()).collect();
    let limit = cfg.limit.map(|l| l.div_ceil(LIMIT_DIVISOR));
    let items = data::subset(&keys, limit, cfg.seed)
        .into_iter()
        .map(|i| {
            Ok(GenItem {
                prompt: model.encode(&format!("{prefix}{}", context(&problems[i].question)))?,
                reference: problems[i].answer.clone(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Prepared::gen(items, shots))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_takes_the_first_marked_number() {
        assert_eq!(strict_extract("so 3+4=7\n#### 7\n\n"), "7");
        assert_eq!(strict_extract("#### -12.5 and #### 3"), "-12.5");
        assert_eq!(strict_extract("#### 1,000."), "1,000.");
        assert_eq!(strict_extract("#### $5"), INVALID);
        assert_eq!(strict_extract("#### - 4 #### 9"), "9");
        assert_eq!(strict_extract("the answer is 7"), INVALID);
    }

    #[test]
    fn flexible_takes_the_last_number() {
        assert_eq!(
            flexible_extract("She has 3 apples and buys 12 more: 15."),
            "15."
        );
        assert_eq!(flexible_extract("It costs $1,250 in total"), "$1,250");
        assert_eq!(flexible_extract("falls to -7 degrees"), "-7");
        assert_eq!(flexible_extract("down -12 then 5"), "5");
        assert_eq!(flexible_extract("x-5"), "-5");
        assert_eq!(flexible_extract("no digits here"), INVALID);
        // "-" followed by a single digit is not the wide form; the plain form still takes it.
        assert_eq!(flexible_extract("a -3"), "-3");
        assert_eq!(flexible_extract("-$40"), "-$40");
    }

    #[test]
    fn normalization_ignores_commas_dollars_case_final_dot_and_worked_text() {
        assert_eq!(normalize("$1,000."), "1000");
        assert_eq!(normalize("Janet sells 9 eggs.\n#### 18"), "18");
        assert_eq!(normalize("#### -3"), "-3");
        assert_eq!(normalize("5.\n"), "5\n");
        assert_eq!(normalize("ABC"), "abc");
        assert_eq!(normalize("3.50"), "3.50");
    }

    #[test]
    fn exact_match_strict_and_flexible() {
        let reference = "He pays 2 * $500 = $<<2*500=1000>>1,000.\n#### 1000";
        assert_eq!(score("He pays $1,000.\n#### 1,000", reference), (1.0, 1.0));
        assert_eq!(score("He pays 1000 dollars.", reference), (0.0, 1.0));
        assert_eq!(score("#### 1000 but then 7", reference), (1.0, 0.0));
        assert_eq!(score("nothing", reference), (0.0, 0.0));
        let negative = "The change is 5 - 8 = -3\n#### -3";
        assert_eq!(score("so it is -3.", negative), (0.0, 1.0));
        assert_eq!(score("so it is 3.", negative), (0.0, 0.0));
    }

    #[test]
    fn loads_and_builds_few_shot_examples() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("train.jsonl");
        std::fs::write(
            &p,
            "{\"question\": \"1+1?\", \"answer\": \"1+1=<<1+1=2>>2\\n#### 2\"}\n{\"question\": \"q\", \"answer\": \"no mark\"}\n",
        )
        .unwrap();
        let err = load(&p).unwrap_err().to_string();
        assert!(err.contains("line 2"), "{err}");
        std::fs::write(
            &p,
            "{\"question\": \"1+1?\", \"answer\": \"1+1=<<1+1=2>>2\\n#### 2\"}\n",
        )
        .unwrap();
        let ps = load(&p).unwrap();
        assert_eq!(
            example(&ps[0]),
            "Question: 1+1?\nAnswer: 1+1=<<1+1=2>>2\n#### 2"
        );
    }
}
