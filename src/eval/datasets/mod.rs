//! Evaluation datasets, read exactly as published (spec §5), into one case type.
//!
//! [`load`] reads one file: CounterFact in EasyEdit's flat format ([`counterfact`]) or in the
//! original ROME/MEMIT format, zsRE in MEND/EasyEdit format ([`zsre`]), MQuAKE in its original
//! schema ([`mquake`]), or the user's own JSONL of edit requests ([`jsonl`]). [`resolve`] maps
//! short names ("counterfact", "zsre", "mquake", …) to the files of the shared data folder
//! (`../shared/data`, see its README for provenance), and [`mqd()`] builds the D4S paper's three
//! question types from fact cases.
//!
//! Records are checked one by one: a record with a missing field, a field of the wrong type, an
//! empty target or prompt, a subject that does not occur in its prompt, or (JSONL) invalid JSON
//! or non-UTF-8 bytes is reported as `file#index: reason` (JSON lists, 0-based index) or
//! `file:line: reason` (JSONL, 1-based line) and skipped; with `strict` the first one is an
//! error. A syntax error inside a JSON *list* is always an error, because nothing after it can
//! be parsed; it is reported with the index of the record it broke.
//!
//! Targets, ground truths and probe answers are trimmed of surrounding whitespace (the project's
//! convention is a target without a leading space); prompts are kept exactly as published.

use std::borrow::Cow;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::de::{DeserializeSeed, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::edit::EditRequest;
use crate::error::{Error, Result};

pub mod counterfact;
mod fields;
pub mod jsonl;
pub mod mqd;
pub mod mquake;
pub mod zsre;

pub use mqd::{mqd, QuestionType};

use fields::Fields;

/// A multi-hop question set (MQuAKE): correct if any question's answer matches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MultiHop {
    pub questions: Vec<String>,
    /// The answer after the edits, and its aliases.
    pub answer: String,
    pub aliases: Vec<String>,
}

/// One evaluation case: the edit(s) to apply and the prompts that check them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalCase {
    /// The edits of this case (one for CounterFact/zsRE, up to four for MQuAKE). Each carries
    /// its paraphrases (`paraphrases`) and neighbourhood / locality prompts (`neighbors`, with
    /// the answer they should keep when the data gives one).
    pub requests: Vec<EditRequest>,
    /// Portability questions and answers (zsRE with portability, MQuAKE single hops).
    #[serde(default)]
    pub portability: Vec<(String, String)>,
    #[serde(default)]
    pub multi_hop: Option<MultiHop>,
    /// Free-generation prompts (ROME-format CounterFact) for fluency.
    #[serde(default)]
    pub generation_prompts: Vec<String>,
    /// Where the case came from, e.g. `counterfact-edit.json#17`.
    pub origin: String,
}

impl EvalCase {
    /// The case with every edit and evaluation prompt rendered as a user turn of the chat
    /// template: the edit prompts (the subject slot survives), paraphrases, neighbour prompts,
    /// portability questions and generation prompts. MQuAKE's multi-hop questions keep their
    /// few-shot completion format.
    pub fn with_chat_template(&self, t: &crate::model::chat::ChatTemplate) -> Result<EvalCase> {
        let mut c = self.clone();
        for r in &mut c.requests {
            r.prompt = t.user_turn(&r.prompt)?;
            for p in &mut r.paraphrases {
                *p = t.user_turn(p)?;
            }
            for n in &mut r.neighbors {
                n.prompt = t.user_turn(&n.prompt)?;
            }
        }
        for (q, _) in &mut c.portability {
            *q = t.user_turn(q)?;
        }
        for p in &mut c.generation_prompts {
            *p = t.user_turn(p)?;
        }
        Ok(c)
    }

    /// A case of one edit request and nothing else.
    pub fn single(request: EditRequest, origin: impl Into<String>) -> Self {
        Self {
            requests: vec![request],
            portability: vec![],
            multi_hop: None,
            generation_prompts: vec![],
            origin: origin.into(),
        }
    }

    /// The new target of each edit request, in order.
    pub fn new_targets(&self) -> Vec<String> {
        self.requests.iter().map(|r| r.target.clone()).collect()
    }
}

/// The file formats [`load`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DatasetKind {
    /// EasyEdit's flat CounterFact (`counterfact-edit.json`, …).
    CounterfactEasyEdit,
    /// ROME/MEMIT `counterfact.json` / `multi_counterfact.json`.
    CounterfactRome,
    /// zsRE in MEND/EasyEdit format, with or without `portability`.
    Zsre,
    /// MQuAKE in its original schema (CF-3k, CF, T, hard).
    Mquake,
    /// One [`EditRequest`] object per line.
    UserJsonl,
}

impl DatasetKind {
    pub const ALL: [DatasetKind; 5] = [
        DatasetKind::CounterfactEasyEdit,
        DatasetKind::CounterfactRome,
        DatasetKind::Zsre,
        DatasetKind::Mquake,
        DatasetKind::UserJsonl,
    ];

    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            DatasetKind::CounterfactEasyEdit => "counterfact-easyedit",
            DatasetKind::CounterfactRome => "counterfact-rome",
            DatasetKind::Zsre => "zsre",
            DatasetKind::Mquake => "mquake",
            DatasetKind::UserJsonl => "jsonl",
        }
    }
}

impl fmt::Display for DatasetKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for DatasetKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|k| k.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| {
                let names: Vec<_> = Self::ALL.iter().map(|k| k.name()).collect();
                Error::Input(format!(
                    "unknown dataset format {s:?}; known: {}",
                    names.join(", ")
                ))
            })
    }
}

/// A dataset file as read: its cases and the records that were skipped, with why.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub kind: DatasetKind,
    pub path: PathBuf,
    /// Hex SHA-256 of the file's bytes, so reports can name the exact data.
    pub sha256: String,
    pub cases: Vec<EvalCase>,
    /// `file#index: reason` / `file:line: reason` for every record left out.
    pub skipped: Vec<String>,
}

/// Reads a dataset file exactly as published; `kind = None` detects the format from the content.
/// Bad records (missing fields, empty target, subject not in prompt, wrong types) are reported as
/// "file#index: reason" (JSON lists) or "file:line: reason" (JSONL) and skipped, or, with `strict`,
/// the first one is an error. `limit` keeps the first N good cases (records after them are not
/// examined). A file with no usable case is an error unless `limit` is `Some(0)`. Never panics.
pub fn load(
    path: &Path,
    kind: Option<DatasetKind>,
    strict: bool,
    limit: Option<usize>,
) -> Result<Loaded> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    // Hash the bytes that are parsed (not the file again) so the digest always matches the data.
    let sha256 = crate::util::sha256_hex(&bytes);
    let mut sink = Sink::new(path, strict, limit);
    let kind = match kind.or_else(|| kind_from_extension_or_shape(path, &bytes)) {
        Some(DatasetKind::UserJsonl) => {
            jsonl::read(&bytes, &mut sink)?;
            DatasetKind::UserJsonl
        }
        kind => {
            let list = parse_list(path, &bytes)?;
            let kind = match kind {
                Some(k) => k,
                None => detect_list(path, &list.records)?,
            };
            convert_list(kind, &list, &mut sink)?;
            kind
        }
    };
    let Sink { cases, skipped, .. } = sink;
    if cases.is_empty() && limit != Some(0) {
        let why = match skipped.first() {
            Some(first) => format!(
                "none of its {} records could be used as {kind}; the first problem: {first}",
                skipped.len()
            ),
            None => "it holds no records".to_string(),
        };
        return Err(Error::bad_file(path, why));
    }
    Ok(Loaded {
        kind,
        path: path.to_path_buf(),
        sha256,
        cases,
        skipped,
    })
}

/// `.jsonl` files, and files whose first non-blank character opens an object rather than a
/// list, are JSON lines; everything else is left to [`detect_list`].
fn kind_from_extension_or_shape(path: &Path, bytes: &[u8]) -> Option<DatasetKind> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    if ext.eq_ignore_ascii_case("jsonl") {
        return Some(DatasetKind::UserJsonl);
    }
    let first = without_bom(bytes).iter().find(|b| !b.is_ascii_whitespace());
    (first == Some(&b'{')).then_some(DatasetKind::UserJsonl)
}

/// Some editors write a UTF-8 byte-order mark; JSON parsers reject it, and it carries nothing.
fn without_bom(bytes: &[u8]) -> &[u8] {
    bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes)
}

/// Detects the format from the keys of the first record that is an object.
fn detect_list(path: &Path, records: &[Value]) -> Result<DatasetKind> {
    if records.is_empty() {
        return Err(Error::bad_file(path, "the list holds no records"));
    }
    let Some(first) = records.iter().find_map(|r| Fields::of(r).ok()) else {
        return Err(Error::bad_file(
            path,
            "the list holds no object records, so its format cannot be detected",
        ));
    };
    let has = |k: &str| first.has(k);
    if has("requested_rewrite") && has("questions") {
        Ok(DatasetKind::Mquake)
    } else if has("requested_rewrite") {
        Ok(DatasetKind::CounterfactRome)
    } else if has("src") && has("alt") {
        Ok(DatasetKind::Zsre)
    } else if has("target_new") && has("rephrase_prompt") {
        Ok(DatasetKind::CounterfactEasyEdit)
    } else {
        Err(Error::bad_file(
            path,
            format!(
                "unknown dataset format: the first record has the keys [{}]; expected MQuAKE \
                 (requested_rewrite, questions), ROME CounterFact (requested_rewrite), zsRE \
                 (src, alt), EasyEdit CounterFact (target_new, rephrase_prompt) or a .jsonl file \
                 of edit requests",
                first.keys().join(", ")
            ),
        ))
    }
}

/// A parsed JSON list. `lossy` is set when the file was not valid UTF-8 and invalid bytes were
/// replaced by U+FFFD: records containing U+FFFD are then reported instead of loaded.
struct ParsedList {
    records: Vec<Value>,
    lossy: bool,
}

/// Parses a top-level JSON list, keeping the records read so far so that a syntax error can be
/// reported with the index of the record it is in.
fn parse_list(path: &Path, bytes: &[u8]) -> Result<ParsedList> {
    let bytes = without_bom(bytes);
    let (text, lossy) = match std::str::from_utf8(bytes) {
        Ok(s) => (Cow::Borrowed(s), false),
        Err(_) => (String::from_utf8_lossy(bytes), true),
    };
    let mut records = Vec::new();
    let mut de = serde_json::Deserializer::from_str(&text);
    let parsed = ListSeed(&mut records)
        .deserialize(&mut de)
        .and_then(|()| de.end());
    match parsed {
        Ok(()) => Ok(ParsedList { records, lossy }),
        Err(e) if e.is_data() => Err(Error::bad_file(
            path,
            format!("expected a JSON list of records ({e}); use the .jsonl extension for one request per line"),
        )),
        Err(e) => Err(Error::Input(format!(
            "{}#{}: invalid JSON ({e}); the records after it cannot be read",
            path.display(),
            records.len()
        ))),
    }
}

/// Deserializes a JSON list element by element into the vector it holds.
struct ListSeed<'v>(&'v mut Vec<Value>);

impl<'de> DeserializeSeed<'de> for ListSeed<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> std::result::Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ListSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON list of records")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<(), A::Error> {
        while let Some(v) = seq.next_element::<Value>()? {
            self.0.push(v);
        }
        Ok(())
    }
}

/// Converts each record of a JSON list with the format's mapping.
fn convert_list(kind: DatasetKind, list: &ParsedList, sink: &mut Sink) -> Result<()> {
    let convert: fn(&Fields, String) -> std::result::Result<EvalCase, String> = match kind {
        DatasetKind::CounterfactEasyEdit => counterfact::from_easyedit,
        DatasetKind::CounterfactRome => counterfact::from_rome,
        DatasetKind::Zsre => zsre::from_record,
        DatasetKind::Mquake => mquake::from_record,
        DatasetKind::UserJsonl => {
            return Err(Error::Input(
                "JSON lines are not read as a JSON list".into(),
            ))
        }
    };
    let name = sink.file_name();
    for (index, record) in list.records.iter().enumerate() {
        if sink.is_full() {
            break;
        }
        let case = if list.lossy && has_replacement_char(record) {
            Err("not UTF-8 text (invalid bytes in this record)".to_string())
        } else {
            Fields::of(record).and_then(|f| convert(&f, format!("{name}#{index}")))
        };
        sink.add(Position::Index(index), case)?;
    }
    Ok(())
}

/// Whether any string (key or value) in the record holds U+FFFD, the mark of a replaced byte.
fn has_replacement_char(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains('\u{FFFD}'),
        Value::Array(a) => a.iter().any(has_replacement_char),
        Value::Object(m) => m
            .iter()
            .any(|(k, v)| k.contains('\u{FFFD}') || has_replacement_char(v)),
        _ => false,
    }
}

/// Where a record is: index in a JSON list or 1-based line of a JSONL file.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Position {
    Index(usize),
    Line(usize),
}

/// Collects good cases up to the limit and reports bad records (or fails on the first, if strict).
pub(crate) struct Sink<'a> {
    path: &'a Path,
    strict: bool,
    limit: Option<usize>,
    cases: Vec<EvalCase>,
    skipped: Vec<String>,
}

impl<'a> Sink<'a> {
    fn new(path: &'a Path, strict: bool, limit: Option<usize>) -> Self {
        Self {
            path,
            strict,
            limit,
            cases: vec![],
            skipped: vec![],
        }
    }

    /// The file name used in `origin` (stable across machines, unlike the full path).
    pub(crate) fn file_name(&self) -> String {
        self.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.path.display().to_string())
    }

    pub(crate) fn is_full(&self) -> bool {
        self.limit.is_some_and(|n| self.cases.len() >= n)
    }

    pub(crate) fn add(
        &mut self,
        at: Position,
        case: std::result::Result<EvalCase, String>,
    ) -> Result<()> {
        match case {
            Ok(case) => self.cases.push(case),
            Err(reason) => {
                let where_ = match at {
                    Position::Index(i) => format!("{}#{i}", self.path.display()),
                    Position::Line(l) => format!("{}:{l}", self.path.display()),
                };
                let msg = format!("{where_}: {reason}");
                if self.strict {
                    return Err(Error::Input(msg));
                }
                self.skipped.push(msg);
            }
        }
        Ok(())
    }
}

/// Trims the answers of a request built from a record and validates it; the message is the
/// record's problem. Answers are trimmed because the project's convention is a target without
/// a leading space (the space is added when tokenizing), and 22 zsRE `alt` values are
/// published with one (" MAT-49"); prompts are kept byte for byte.
fn checked(mut request: EditRequest) -> std::result::Result<EditRequest, String> {
    let trim = |s: &mut String| {
        if s.trim().len() != s.len() {
            *s = s.trim().to_string();
        }
    };
    trim(&mut request.target);
    request.ground_truth.as_mut().map(trim);
    for n in &mut request.neighbors {
        n.answer.as_mut().map(trim);
    }
    request.validate().map_err(|e| e.to_string())?;
    Ok(request)
}

/// Fills the `{}` of a published template with the subject. Templates without `{}` are taken
/// as already filled (validation then checks the subject occurs); more than one is an error
/// because the subject position would be ambiguous.
fn fill(template: &str, subject: &str, field: &str) -> std::result::Result<String, String> {
    match template.matches("{}").count() {
        0 => Ok(template.to_string()),
        1 => Ok(template.replacen("{}", subject, 1)),
        n => Err(format!("field `{field}` has {n} `{{}}` placeholders")),
    }
}

/// Short names for the files of the shared data folder (see `../shared/data/README.md`).
pub const NAMES: [(&str, &str); 5] = [
    ("counterfact", "counterfact_easyedit/counterfact-edit.json"),
    (
        "counterfact-train",
        "counterfact_easyedit/counterfact-train.json",
    ),
    ("zsre", "zsre/zsre_mend_eval_portability_gpt4.json"),
    ("zsre-train", "zsre/zsre_mend_train-1k.json"),
    ("mquake", "mquake/MQuAKE-hard.json"),
];

/// Resolves short names under a data root: "counterfact" → counterfact_easyedit/counterfact-edit.json,
/// "counterfact-train" → .../counterfact-train.json, "zsre" → zsre/zsre_mend_eval_portability_gpt4.json,
/// "zsre-train" → zsre/zsre_mend_train-1k.json, "mquake" → mquake/MQuAKE-hard.json; an existing path
/// is returned as is, and so is a path relative to the data root. `data_dir = None` uses
/// [`default_data_dir`]. The error lists the names and says where it looked.
pub fn resolve(name_or_path: &str, data_dir: Option<&Path>) -> Result<PathBuf> {
    let given = Path::new(name_or_path);
    if given.exists() {
        return Ok(given.to_path_buf());
    }
    let root = data_dir.map(Path::to_path_buf).or_else(default_data_dir);
    let known = NAMES
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name_or_path.trim()));
    let names = NAMES
        .iter()
        .map(|(n, rel)| format!("{n} ({rel})"))
        .collect::<Vec<_>>()
        .join(", ");
    let Some(root) = root else {
        return Err(Error::Input(format!(
            "{name_or_path:?} is not an existing file and no data directory is known (set \
             $D4S_DATA or pass a data directory; ../shared/data does not exist here); \
             known names: {names}"
        )));
    };
    if let Some((name, rel)) = known {
        let p = root.join(rel);
        if p.exists() {
            return Ok(p);
        }
        return Err(Error::Input(format!(
            "dataset {name:?} should be at {}, which does not exist (data directory {})",
            p.display(),
            root.display()
        )));
    }
    let under_root = root.join(given);
    if given.is_relative() && under_root.exists() {
        return Ok(under_root);
    }
    Err(Error::Input(format!(
        "{name_or_path:?} is neither an existing file, nor a file under the data directory {}, \
         nor a known name; known names: {names}",
        root.display()
    )))
}

/// The cases in the order a seeded shuffle gives (`bench --seeds`): the same seed, the same
/// order, on every machine.
pub fn shuffled(cases: &[EvalCase], seed: u64) -> Vec<EvalCase> {
    use rand::seq::SliceRandom;
    use rand::SeedableRng;
    let mut out = cases.to_vec();
    out.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
    out
}

/// `$D4S_DATA` when set (even if it does not exist, so errors point at the user's choice), else
/// `../shared/data` relative to the current directory if it exists.
pub fn default_data_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("D4S_DATA").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(d));
    }
    let shared = PathBuf::from("../shared/data");
    shared.is_dir().then_some(shared)
}

#[cfg(test)]
pub(crate) mod tests;
