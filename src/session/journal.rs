//! The session journal: `sessions/<name>/session.json` (what was edited with what) and
//! `journal.jsonl`, an append-only list of events, one JSON object per line, each fsync'ed before
//! anyone is told it happened. D4S's per-edit terms (the exact vectors that entered its running
//! sums) go to `terms.bin`, an append-only binary sidecar, so the state can be rebuilt exactly.
//!
//! Reading is forgiving where it is safe and strict where it is not: a truncated *last* line (a
//! crash mid-write) is dropped with a warning; garbage anywhere else is an error naming the line;
//! an unknown format version is an error.

use std::fs::{self, File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::edit::{
    EditOutcome, EditRequest, EditTerms, HParams, LayerDelta, Method, StatsConfig, TargetSummary,
    Timings,
};
use crate::error::{Error, Result};
use crate::util;

pub use super::ahead::TargetPass;

pub const FORMAT_VERSION: u32 = 1;
const META_FILE: &str = "session.json";
pub const JOURNAL_FILE: &str = "journal.jsonl";
const TERMS_FILE: &str = "terms.bin";

pub use crate::model::ModelRecord;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionMeta {
    pub format_version: u32,
    pub d4s_version: String,
    pub name: String,
    pub created: String,
    pub model: ModelRecord,
    pub method: Method,
    pub hparams: HParams,
    pub stats: StatsConfig,
    pub stats_corpus_id: String,
}

/// Where an edit's D4S terms live in `terms.bin`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TermsRef {
    pub offset: u64,
    pub len: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// Edits queued (by the TUI, `d4s edit --file`, a deck).
    Requested {
        seq: u64,
        time: String,
        requests: Vec<EditRequest>,
    },
    /// One step applied; `step` numbers applied steps from 1.
    Applied {
        seq: u64,
        time: String,
        step: u64,
        method: Method,
        requests: Vec<EditRequest>,
        layers: Vec<LayerDelta>,
        targets: Vec<TargetSummary>,
        timings: Timings,
        weights_sha256: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        terms: Option<TermsRef>,
        /// The batched pass its fact's target was optimized in, when it was optimized ahead with
        /// the facts queued behind it ([`super::ahead`]); a replay hands it back.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        target_pass: Option<TargetPass>,
    },
    /// A step the editor refused (safety gate, bad input); nothing changed.
    Rejected {
        seq: u64,
        time: String,
        requests: Vec<EditRequest>,
        error: String,
    },
    /// A step taken back.
    Undo {
        seq: u64,
        time: String,
        step: u64,
        weights_sha256: String,
    },
    /// Downstream probe or metric results at some point of the session.
    Probes {
        seq: u64,
        time: String,
        edits: u64,
        results: serde_json::Value,
    },
    Note {
        seq: u64,
        time: String,
        text: String,
    },
    /// The method (and its hyperparameters) used from here on.
    Method {
        seq: u64,
        time: String,
        method: Method,
        hparams: Box<HParams>,
    },
}

impl Event {
    pub fn seq(&self) -> u64 {
        match self {
            Event::Requested { seq, .. }
            | Event::Applied { seq, .. }
            | Event::Rejected { seq, .. }
            | Event::Undo { seq, .. }
            | Event::Probes { seq, .. }
            | Event::Note { seq, .. }
            | Event::Method { seq, .. } => *seq,
        }
    }
}

pub use crate::util::now;

/// An open session, appending to its journal.
pub struct Session {
    pub dir: PathBuf,
    pub meta: SessionMeta,
    journal: File,
    terms: File,
    next_seq: u64,
    next_step: u64,
}

/// What reading a journal found.
#[derive(Debug, Default)]
pub struct Loaded {
    pub events: Vec<Event>,
    pub warnings: Vec<String>,
}

/// A valid session name: letters, digits, `-`, `_`, `.`, not starting with `.`.
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(Error::Input(format!(
            "session name {name:?} may only contain letters, digits, '-', '_' and '.'"
        )))
    }
}

/// Default session name: timestamp + method.
pub fn default_name(method: Method) -> String {
    format!(
        "{}-{}",
        chrono::Local::now().format("%Y%m%d-%H%M%S"),
        method.name()
    )
}

fn sync_append(file: &mut File, bytes: &[u8], path: &Path) -> Result<()> {
    file.write_all(bytes)
        .and_then(|_| file.sync_data())
        .map_err(|e| Error::io(path, e))
}

impl Session {
    /// Creates `root/<name>/` with its metadata; fails if it already exists.
    pub fn create(root: &Path, meta: SessionMeta) -> Result<Self> {
        check_name(&meta.name)?;
        let dir = root.join(&meta.name);
        if dir.join(META_FILE).exists() {
            return Err(Error::Input(format!(
                "session {} already exists (use `d4s resume {}` or another name)",
                dir.display(),
                dir.display()
            )));
        }
        util::ensure_dir(&dir)?;
        util::write_atomic(
            &dir.join(META_FILE),
            serde_json::to_string_pretty(&meta)
                .expect("serializable")
                .as_bytes(),
        )?;
        let journal = OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(JOURNAL_FILE))
            .map_err(|e| Error::io(dir.join(JOURNAL_FILE), e))?;
        let terms = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(dir.join(TERMS_FILE))
            .map_err(|e| Error::io(dir.join(TERMS_FILE), e))?;
        Ok(Self {
            dir,
            meta,
            journal,
            terms,
            next_seq: 1,
            next_step: 1,
        })
    }

    /// Opens an existing session for appending; returns it with its events so far.
    pub fn open(dir: &Path) -> Result<(Self, Loaded)> {
        let meta = read_meta(dir)?;
        let loaded = read_journal(&dir.join(JOURNAL_FILE))?;
        // Drop a torn last line physically, so new events start on a clean line.
        let valid_len = loaded_valid_len(&dir.join(JOURNAL_FILE))?;
        let journal = OpenOptions::new()
            .write(true)
            .open(dir.join(JOURNAL_FILE))
            .map_err(|e| Error::io(dir.join(JOURNAL_FILE), e))?;
        journal
            .set_len(valid_len)
            .map_err(|e| Error::io(dir.join(JOURNAL_FILE), e))?;
        drop(journal);
        let journal = OpenOptions::new()
            .append(true)
            .open(dir.join(JOURNAL_FILE))
            .map_err(|e| Error::io(dir.join(JOURNAL_FILE), e))?;
        let terms = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(dir.join(TERMS_FILE))
            .map_err(|e| Error::io(dir.join(TERMS_FILE), e))?;
        let next_seq = loaded.events.iter().map(Event::seq).max().unwrap_or(0) + 1;
        let next_step = loaded
            .events
            .iter()
            .filter_map(|e| match e {
                Event::Applied { step, .. } => Some(*step),
                _ => None,
            })
            .max()
            .unwrap_or(0)
            + 1;
        Ok((
            Self {
                dir: dir.to_path_buf(),
                meta,
                journal,
                terms,
                next_seq,
                next_step,
            },
            loaded,
        ))
    }

    fn append(&mut self, make: impl FnOnce(u64) -> Event) -> Result<Event> {
        let event = make(self.next_seq);
        let mut line = serde_json::to_string(&event).expect("serializable");
        line.push('\n');
        let path = self.dir.join(JOURNAL_FILE);
        sync_append(&mut self.journal, line.as_bytes(), &path)?;
        self.next_seq += 1;
        Ok(event)
    }

    pub fn record_requested(&mut self, requests: &[EditRequest]) -> Result<()> {
        let requests = requests.to_vec();
        self.append(|seq| Event::Requested {
            seq,
            time: now(),
            requests,
        })?;
        Ok(())
    }

    /// Journals an applied step (and its terms, for an editor whose state is a sum of them);
    /// returns the step number.
    pub fn record_applied(
        &mut self,
        requests: &[EditRequest],
        outcome: &EditOutcome,
        target_pass: Option<&TargetPass>,
    ) -> Result<u64> {
        let terms = match outcome.undo.terms() {
            Some(t) => Some(self.write_terms(t)?),
            None => None,
        };
        let step = self.next_step;
        self.append(|seq| Event::Applied {
            seq,
            time: now(),
            step,
            method: outcome.method,
            requests: requests.to_vec(),
            layers: outcome.layers.clone(),
            targets: outcome.targets.clone(),
            timings: outcome.timings.clone(),
            weights_sha256: outcome.weights_sha256.clone(),
            terms,
            target_pass: target_pass.cloned(),
        })?;
        self.next_step += 1;
        Ok(step)
    }

    pub fn record_rejected(&mut self, requests: &[EditRequest], error: &str) -> Result<()> {
        let (requests, error) = (requests.to_vec(), error.to_string());
        self.append(|seq| Event::Rejected {
            seq,
            time: now(),
            requests,
            error,
        })?;
        Ok(())
    }

    pub fn record_undo(&mut self, step: u64, weights_sha256: &str) -> Result<()> {
        let weights_sha256 = weights_sha256.to_string();
        self.append(|seq| Event::Undo {
            seq,
            time: now(),
            step,
            weights_sha256,
        })?;
        Ok(())
    }

    pub fn record_probes(&mut self, edits: u64, results: serde_json::Value) -> Result<()> {
        self.append(|seq| Event::Probes {
            seq,
            time: now(),
            edits,
            results,
        })?;
        Ok(())
    }

    pub fn record_note(&mut self, text: &str) -> Result<()> {
        let text = text.to_string();
        self.append(|seq| Event::Note {
            seq,
            time: now(),
            text,
        })?;
        Ok(())
    }

    pub fn record_method(&mut self, hparams: &HParams) -> Result<()> {
        let hparams = Box::new(hparams.clone());
        self.append(|seq| Event::Method {
            seq,
            time: now(),
            method: hparams.method,
            hparams,
        })?;
        Ok(())
    }

    fn write_terms(&mut self, t: &EditTerms) -> Result<TermsRef> {
        let bytes = encode_terms(t);
        let path = self.dir.join(TERMS_FILE);
        let offset = self
            .terms
            .seek(SeekFrom::End(0))
            .map_err(|e| Error::io(&path, e))?;
        sync_append(&mut self.terms, &bytes, &path)?;
        Ok(TermsRef {
            offset,
            len: bytes.len() as u64,
            sha256: util::sha256_hex(&bytes),
        })
    }

    /// Reads back an edit's D4S terms, checking their hash.
    pub fn read_terms(&mut self, r: &TermsRef) -> Result<EditTerms> {
        read_terms_at(&self.dir.join(TERMS_FILE), r)
    }
}

pub fn read_meta(dir: &Path) -> Result<SessionMeta> {
    let path = dir.join(META_FILE);
    let bytes = fs::read(&path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::Input(format!(
                "{} is not a d4s session (no {META_FILE})",
                dir.display()
            ))
        } else {
            Error::io(&path, e)
        }
    })?;
    let v: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| Error::bad_file(&path, format!("invalid JSON: {e}")))?;
    match v.get("format_version").and_then(|x| x.as_u64()) {
        Some(x) if x == FORMAT_VERSION as u64 => {}
        Some(x) => {
            return Err(Error::bad_file(&path, format!("session format version {x} is not supported (this d4s reads version {FORMAT_VERSION})")))
        }
        None => return Err(Error::bad_file(&path, "no format_version")),
    }
    serde_json::from_value(v)
        .map_err(|e| Error::bad_file(&path, format!("invalid session metadata: {e}")))
}

/// Length of the journal up to the end of its last complete line.
fn loaded_valid_len(path: &Path) -> Result<u64> {
    let bytes = fs::read(path).map_err(|e| Error::io(path, e))?;
    Ok(bytes
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i as u64 + 1))
}

/// Parses journal text. `origin` names the source in messages.
pub fn parse_journal(text: &[u8], origin: &str) -> Result<Loaded> {
    let mut loaded = Loaded::default();
    let ends_clean = text.last().is_none_or(|&b| b == b'\n');
    let lines: Vec<&[u8]> = text.split(|&b| b == b'\n').collect();
    // `split` yields a final empty piece after a trailing newline.
    let n = if ends_clean {
        lines.len().saturating_sub(1)
    } else {
        lines.len()
    };
    let mut last_seq = 0;
    for (i, raw) in lines.iter().take(n).enumerate() {
        let is_last = i + 1 == n;
        let line = match std::str::from_utf8(raw) {
            Ok(l) => l.trim(),
            Err(_) if is_last && !ends_clean => {
                loaded.warnings.push(format!(
                    "{origin}:{}: the last line is truncated (a crash while writing?); ignored",
                    i + 1
                ));
                break;
            }
            Err(_) => return Err(Error::Input(format!("{origin}:{}: not UTF-8 text", i + 1))),
        };
        if line.is_empty() {
            continue;
        }
        match serde_json::from_str::<Event>(line) {
            Ok(e) => {
                if e.seq() <= last_seq {
                    return Err(Error::Input(format!(
                        "{origin}:{}: event numbers go backwards ({} after {last_seq})",
                        i + 1,
                        e.seq()
                    )));
                }
                last_seq = e.seq();
                loaded.events.push(e);
            }
            Err(_) if is_last && !ends_clean => {
                loaded.warnings.push(format!(
                    "{origin}:{}: the last line is truncated (a crash while writing?); ignored",
                    i + 1
                ));
            }
            Err(e) => {
                return Err(Error::Input(format!(
                    "{origin}:{}: not a valid journal event: {e}",
                    i + 1
                )))
            }
        }
    }
    Ok(loaded)
}

pub fn read_journal(path: &Path) -> Result<Loaded> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(Error::io(path, e)),
    };
    parse_journal(&bytes, &path.display().to_string())
}

/// One line of `d4s sessions`.
#[derive(Debug, Clone, Serialize)]
pub struct SessionSummary {
    pub name: String,
    pub model: String,
    /// The methods the session used, in the order it switched to them (the first is the
    /// session's own).
    pub methods: Vec<Method>,
    pub edits: usize,
    pub last_change: String,
}

/// Summaries of every session under `root` (unreadable ones are listed with their error).
pub fn list(root: &Path) -> Result<Vec<std::result::Result<SessionSummary, String>>> {
    let mut dirs: Vec<PathBuf> = match fs::read_dir(root) {
        Ok(rd) => rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.join(META_FILE).exists())
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => vec![],
        Err(e) => return Err(Error::io(root, e)),
    };
    dirs.sort();
    Ok(dirs
        .iter()
        .map(|d| {
            let meta = read_meta(d).map_err(|e| e.to_string())?;
            let loaded =
                read_journal(&d.join(JOURNAL_FILE)).map_err(|e| format!("{}: {e}", d.display()))?;
            let live = super::replay::live_steps(&loaded.events).len();
            let last = loaded.events.iter().rev().find_map(|e| match e {
                Event::Applied { time, .. }
                | Event::Undo { time, .. }
                | Event::Requested { time, .. } => Some(time.clone()),
                _ => None,
            });
            let mut methods = vec![meta.method];
            for e in &loaded.events {
                if let Event::Method { method, .. } = e {
                    if !methods.contains(method) {
                        methods.push(*method);
                    }
                }
            }
            Ok(SessionSummary {
                name: meta.name,
                model: meta.model.name,
                methods,
                edits: live,
                last_change: last.unwrap_or(meta.created),
            })
        })
        .collect())
}

mod terms;
use terms::encode_terms;
pub use terms::read_terms_at;

#[cfg(test)]
mod tests;
