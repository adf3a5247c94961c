//! The headless benchmark (spec §4.5), laid out along its data flow:
//!
//! - [`records`]: the run-folder format (`config.json`, `metrics.jsonl`, `edits.jsonl`,
//!   `cases.jsonl`) with typed metrics;
//! - [`evaluate`]: the one evaluation of edited cases, shared with the TUI's worker;
//! - [`run`]: the protocols, streaming records to a [`BenchSink`];
//! - [`ahead`]: targets optimized ahead of their edits, in chunks, by a run or before it;
//! - [`baseline`]: the unedited model's side of a run, kept on disk and shared between runs;
//! - [`checkpoint`]: the state a long run survives an interruption with;
//! - [`writer`]: the sink that writes a run folder (and continues one);
//! - [`summary`]: a finished run's final numbers and plots;
//! - [`table`]: `summary.csv`, the Markdown table and `d4s compare`.
//!
//! Protocols (named types, not flags):
//! - `Single`: each case is edited into a fresh copy of the model, evaluated, and reset.
//! - `Batch { size }`: cases are edited `size` at a time, the steps accumulating in one model
//!   (`size = n`: one batch edit). `sequential:k` on the command line names the same protocol:
//!   the field's usual "100 edits per step" sequential protocol is `sequential:100`.
//! - `Sequential`: one case after another with no reset; every `eval_every` edits *all* edits so
//!   far are evaluated on the current model (the forgetting curve), and always after the last one
//!   (the paper's protocol: evaluate all N edits on the final model).

pub mod ahead;
pub mod baseline;
pub mod checkpoint;
pub mod evaluate;
pub mod records;
pub mod run;
pub mod seeds;
pub mod summary;
pub mod sweep;
pub mod table;
pub mod writer;

use serde::{Deserialize, Serialize};

pub use evaluate::{evaluate, layer_norms, EvalOptions, Evaluation, Reference, Tallies};
pub use records::{
    CaseMetrics, CaseOutcome, EditRecord, EvalPoint, GenMetric, GenMetrics, LayerNorms, Metric,
    ProbMetric, RunConfig, TokenMetric,
};
pub use run::{run, BenchOutcome, BenchRun, BenchSink};

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Protocol {
    Single,
    Batch { size: usize },
    Sequential,
}

impl std::str::FromStr for Protocol {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim().to_ascii_lowercase();
        if s == "single" {
            return Ok(Protocol::Single);
        }
        if s == "sequential" || s == "seq" {
            return Ok(Protocol::Sequential);
        }
        // `sequential:k`, the field's "k edits per step" protocol, is the batch protocol with
        // steps of k: the steps accumulate in one model either way.
        if let Some(k) = s
            .strip_prefix("sequential")
            .or_else(|| s.strip_prefix("seq"))
            .and_then(|k| k.strip_prefix([':', '=']))
        {
            let size: usize = k
                .parse()
                .ok()
                .filter(|&k| k > 0)
                .ok_or_else(|| Error::Input(format!("protocol {s:?}: bad step size")))?;
            return Ok(if size == 1 {
                Protocol::Sequential
            } else {
                Protocol::Batch { size }
            });
        }
        if let Some(k) = s.strip_prefix("batch") {
            let k = k.trim_start_matches([':', '=']);
            let size = if k.is_empty() {
                usize::MAX
            } else {
                k.parse()
                    .map_err(|_| Error::Input(format!("protocol {s:?}: bad batch size")))?
            };
            return Ok(Protocol::Batch { size: size.max(1) });
        }
        Err(Error::Input(format!(
            "unknown protocol {s:?} (single, batch[:k], sequential[:k])"
        )))
    }
}

/// At which evaluation points a run measures the `gen.*` metrics. They decode a greedy answer to
/// every prompt, paraphrase and neighbour, several times the cost of the teacher-forced metrics,
/// so by default only the first point (the unedited model) and the last one decode, as the
/// fluency samples do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GenSchedule {
    Off,
    #[default]
    Ends,
    Every,
}

impl std::str::FromStr for GenSchedule {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "off" | "none" => Ok(GenSchedule::Off),
            "ends" => Ok(GenSchedule::Ends),
            "every" | "all" => Ok(GenSchedule::Every),
            other => Err(Error::Input(format!(
                "unknown generation schedule {other:?} (off, ends, every)"
            ))),
        }
    }
}

/// Where a run's files go.
pub fn method_dir(out: &std::path::Path, method: &str, several: bool) -> std::path::PathBuf {
    if several {
        out.join(method)
    } else {
        out.to_path_buf()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocols_parse_with_their_step_sizes() {
        let p = |s: &str| s.parse::<Protocol>();
        assert_eq!(p("single").unwrap(), Protocol::Single);
        assert_eq!(p("sequential").unwrap(), Protocol::Sequential);
        assert_eq!(p("sequential:1").unwrap(), Protocol::Sequential);
        assert_eq!(p("sequential:100").unwrap(), Protocol::Batch { size: 100 });
        assert_eq!(p("seq=10").unwrap(), Protocol::Batch { size: 10 });
        assert_eq!(p("batch:100").unwrap(), p("sequential:100").unwrap());
        assert_eq!(p("batch").unwrap(), Protocol::Batch { size: usize::MAX });
        for bad in ["sequential:0", "sequential:x", "sequentially", "streaming"] {
            let err = p(bad).unwrap_err().to_string();
            assert!(err.contains("protocol"), "{bad}: {err}");
        }
    }
}
