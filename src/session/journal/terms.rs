//! `terms.bin`: each journaled step's terms (an editor's per-edit outer products), appended as
//! one binary record whose offset, length and SHA-256 the journal line keeps.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use super::TermsRef;
use crate::edit::EditTerms;
use crate::error::{Error, Result};
use crate::util;

/// Reads back a step's terms from `terms.bin`, checking their hash.
pub fn read_terms_at(path: &Path, r: &TermsRef) -> Result<EditTerms> {
    let mut f = File::open(path).map_err(|e| Error::io(path, e))?;
    f.seek(SeekFrom::Start(r.offset))
        .map_err(|e| Error::io(path, e))?;
    let mut buf = vec![0u8; r.len as usize];
    f.read_exact(&mut buf).map_err(|_| {
        Error::bad_file(
            path,
            format!("D4S terms at offset {} are truncated", r.offset),
        )
    })?;
    if util::sha256_hex(&buf) != r.sha256 {
        return Err(Error::bad_file(
            path,
            format!(
                "D4S terms at offset {} are corrupt (hash mismatch)",
                r.offset
            ),
        ));
    }
    decode_terms(&buf).ok_or_else(|| {
        Error::bad_file(
            path,
            format!("D4S terms at offset {} are malformed", r.offset),
        )
    })
}

/// `[n_requests, n_layers, d_out, d_in]` as u32, then per request: residuals (n_layers × d_out)
/// and keys (n_layers × d_in) as little-endian f64.
pub(super) fn encode_terms(t: &EditTerms) -> Vec<u8> {
    let n = t.keys.len();
    let layers = t.keys.first().map_or(0, Vec::len);
    let d_out = t
        .residuals
        .first()
        .and_then(|r| r.first())
        .map_or(0, Vec::len);
    let d_in = t.keys.first().and_then(|k| k.first()).map_or(0, Vec::len);
    let mut out = Vec::with_capacity(16 + 8 * n * layers * (d_out + d_in));
    for x in [n, layers, d_out, d_in] {
        out.extend_from_slice(&(x as u32).to_le_bytes());
    }
    for i in 0..n {
        for v in t.residuals[i].iter().chain(&t.keys[i]) {
            for x in v {
                out.extend_from_slice(&x.to_le_bytes());
            }
        }
    }
    out
}

pub(super) fn decode_terms(b: &[u8]) -> Option<EditTerms> {
    let u = |i: usize| -> Option<usize> {
        Some(u32::from_le_bytes(b.get(4 * i..4 * i + 4)?.try_into().ok()?) as usize)
    };
    let (n, layers, d_out, d_in) = (u(0)?, u(1)?, u(2)?, u(3)?);
    let need = 16usize.checked_add(
        8usize
            .checked_mul(n)?
            .checked_mul(layers)?
            .checked_mul(d_out.checked_add(d_in)?)?,
    )?;
    if b.len() != need {
        return None;
    }
    let mut pos = 16;
    let mut vec = |len: usize| -> Vec<f64> {
        let v = b[pos..pos + 8 * len]
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect();
        pos += 8 * len;
        v
    };
    let mut t = EditTerms {
        residuals: Vec::with_capacity(n),
        keys: Vec::with_capacity(n),
    };
    for _ in 0..n {
        t.residuals.push((0..layers).map(|_| vec(d_out)).collect());
        t.keys.push((0..layers).map(|_| vec(d_in)).collect());
    }
    Some(t)
}
