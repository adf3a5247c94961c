//! Decks: lists of facts to load into the TUI's queue.
//!
//! `demo` is the deck shipped with d4s (`assets/demo_deck.jsonl`, written for this project: facts
//! across several relation types, each with a paraphrase and a neighbour); `counterfact:N` and
//! `zsre:N` take the first N records of those datasets from the data directory; anything else is
//! a path to a JSONL file of edit requests.

use std::path::Path;

use crate::edit::request::read_jsonl;
use crate::edit::EditRequest;
use crate::error::{Error, Result};

pub const DEMO_DECK: &str = include_str!("../../assets/demo_deck.jsonl");

/// The embedded demo deck.
pub fn demo() -> Result<Vec<EditRequest>> {
    DEMO_DECK
        .lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| {
            let r: EditRequest = serde_json::from_str(l)
                .map_err(|e| Error::Input(format!("demo deck line {}: {e}", i + 1)))?;
            r.validate()?;
            Ok(r)
        })
        .collect()
}

/// Reads a deck; returns its requests and the bad records it skipped, each as
/// `file:line: reason`.
pub fn load_deck(spec: &str, data_dir: Option<&Path>) -> Result<(Vec<EditRequest>, Vec<String>)> {
    let spec = spec.trim();
    if spec == "demo" {
        return Ok((demo()?, Vec::new()));
    }
    if let Some((name, n)) = spec.split_once(':') {
        if let Ok(n) = n.parse::<usize>() {
            let path = crate::eval::datasets::resolve(name, data_dir)?;
            let loaded = crate::eval::datasets::load(&path, None, false, Some(n))?;
            let requests = loaded
                .cases
                .into_iter()
                .flat_map(|c| c.requests)
                .take(n)
                .collect();
            return Ok((requests, loaded.skipped));
        }
    }
    let (requests, skipped) = read_jsonl(Path::new(spec), false)?;
    Ok((requests, skipped))
}
