//! Wiring of the downstream probes into the worker (and `d4s bench`).

use std::path::PathBuf;

use d4s::error::Result;
use d4s::model::Model;

/// A probe runner for the worker, or why there is none.
#[allow(clippy::type_complexity)]
pub fn worker_probes(
    spec: &str,
    _items: usize,
    _data_dir: Option<PathBuf>,
) -> (Option<Box<dyn FnMut(&Model) -> Result<Vec<(String, f64, f64)>> + Send>>, Option<String>) {
    if spec.trim() == "none" {
        return (None, Some("probes disabled (--probes none)".into()));
    }
    (None, Some("probes are not available in this build yet".into()))
}
