//! The edited weights at the end of a journal, kept beside it, so that `d4s export` installs
//! them instead of re-running every edit (and a session with no edits exports at once).
//!
//! A snapshot is the edited layers' matrices (`snapshot.safetensors`, in the runtime's dtype)
//! and `snapshot.json`: the sequence number of the journal's last weight-changing event it
//! reflects and the sha256 of its matrices. It is used only when it is current (no applied step
//! or undo after it), whole (its matrices hash to the recorded value) and agrees with the
//! journal (the last step's layers hash to what the journal recorded for them); otherwise the
//! caller is told why and replays the journal as before. The journal stays the source of truth.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::journal::{read_journal, Event};
use super::replay::weights_sha256;
use crate::error::{Error, Result};
use crate::model::Model;

const TENSORS: &str = "snapshot.safetensors";
const META: &str = "snapshot.json";
const FORMAT: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
struct SnapshotMeta {
    format: u32,
    /// The journal's last applied step or undo that these weights include.
    journal_seq: u64,
    layers: Vec<usize>,
    weights_sha256: String,
}

/// What [`install`] did.
#[derive(Debug, PartialEq)]
pub enum Snapshot {
    /// The model now holds the session's edited weights.
    Installed,
    /// There is no snapshot to use, and why (stale, damaged, absent): replay the journal.
    Unusable(String),
}

/// The journal's last weight-changing event: its sequence number, and the layers and sha256
/// it recorded (an undo recorded the hash over the layers of the step it took back).
fn last_weight_event(events: &[Event]) -> Option<(u64, Vec<usize>, String)> {
    let layers_of = |step: u64| {
        events.iter().find_map(|e| match e {
            Event::Applied {
                step: s, layers, ..
            } if *s == step => Some(layers.iter().map(|l| l.layer).collect::<Vec<_>>()),
            _ => None,
        })
    };
    events.iter().rev().find_map(|e| match e {
        Event::Applied {
            seq,
            layers,
            weights_sha256,
            ..
        } => Some((
            *seq,
            layers.iter().map(|l| l.layer).collect(),
            weights_sha256.clone(),
        )),
        Event::Undo {
            seq,
            step,
            weights_sha256,
            ..
        } => Some((*seq, layers_of(*step)?, weights_sha256.clone())),
        _ => None,
    })
}

/// Writes the model's edited layers as the snapshot of the session in `dir` (atomically). A
/// model carrying adaptors (GRACE) has no weights to snapshot; nothing is written.
pub fn write(dir: &Path, model: &Model) -> Result<()> {
    if model.adaptors.iter().any(Option::is_some) {
        return Ok(());
    }
    let loaded = read_journal(&dir.join("journal.jsonl"))?;
    let Some((journal_seq, _, _)) = last_weight_event(&loaded.events) else {
        return Ok(());
    };
    let layers = model.touched_layers();
    let tensors = layers
        .iter()
        .map(|&l| Ok((format!("layer.{l}"), model.edit_weight(l)?.clone())))
        .collect::<Result<Vec<_>>>()?;
    let meta = SnapshotMeta {
        format: FORMAT,
        journal_seq,
        weights_sha256: weights_sha256(model, &layers)?,
        layers,
    };
    // Tensors first: a crash between the two writes leaves an old meta that no longer matches.
    super::export::save_tensors(&dir.join(TENSORS), tensors)?;
    let json = serde_json::to_vec_pretty(&meta).map_err(|e| Error::Input(e.to_string()))?;
    crate::util::write_atomic(&dir.join(META), &json)
}

/// Installs the session's snapshot into `model` (its unedited base) if it is current, whole and
/// agrees with the journal in `events`; otherwise leaves the model unedited and says why.
pub fn install(dir: &Path, model: &mut Model, events: &[Event]) -> Result<Snapshot> {
    let Some((seq, step_layers, step_sha)) = last_weight_event(events) else {
        return Ok(Snapshot::Unusable("the journal has no edits".into()));
    };
    let meta: SnapshotMeta = match std::fs::read(dir.join(META)) {
        Ok(bytes) => match serde_json::from_slice(&bytes) {
            Ok(m) => m,
            Err(e) => return Ok(Snapshot::Unusable(format!("{META} is damaged ({e})"))),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Snapshot::Unusable("no snapshot was written".into()))
        }
        Err(e) => return Err(Error::io(dir.join(META), e)),
    };
    if meta.format != FORMAT {
        return Ok(Snapshot::Unusable(format!(
            "snapshot format {} (this build reads {FORMAT})",
            meta.format
        )));
    }
    if meta.journal_seq != seq {
        return Ok(Snapshot::Unusable(format!(
            "the snapshot is of journal event {}, the journal ends at {seq}",
            meta.journal_seq
        )));
    }
    let tensors = match candle_core::safetensors::load(dir.join(TENSORS), &model.device) {
        Ok(t) => t,
        Err(e) => return Ok(Snapshot::Unusable(format!("{TENSORS} is damaged ({e})"))),
    };
    for &l in &meta.layers {
        let installed = tensors
            .get(&format!("layer.{l}"))
            .ok_or_else(|| format!("{TENSORS} lacks layer {l}"))
            .and_then(|w| {
                model
                    .set_edit_weight(l, w.clone())
                    .map_err(|e| e.to_string())
            });
        if let Err(why) = installed {
            model.reset_edits();
            return Ok(Snapshot::Unusable(why));
        }
    }
    let whole = weights_sha256(model, &meta.layers)? == meta.weights_sha256;
    if !whole || weights_sha256(model, &step_layers)? != step_sha {
        model.reset_edits();
        let why = if whole {
            "the snapshot disagrees with the journal's last recorded weights"
        } else {
            "the snapshot's matrices do not match its recorded sha256"
        };
        return Ok(Snapshot::Unusable(why.into()));
    }
    Ok(Snapshot::Installed)
}

#[cfg(test)]
mod tests;
