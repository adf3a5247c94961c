//! The replay table: every applied step of a journal, measured on the model right after that
//! step landed again, with the method that made it and whether a later undo took it back.
//!
//! Each row is measured inside the replay, not on the final model: a step's rewrite accuracy is
//! `token_accuracy(W after step)` and its probability `target_prob(W after step)`, the same
//! definitions bench uses (`eval::metrics`). Undone steps keep their row, marked, so the table
//! lists the journal as it happened, and a session that switched methods names each step's.

use std::fmt;

use super::journal::Event;
use super::replay::{ReplayReport, Replayed, Runner};
use crate::edit::{EditRequest, Method};
use crate::error::Result;
use crate::eval::metrics::{target_prob, token_accuracy};

/// One applied step of the replayed journal.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplayRow {
    /// The journal's step number.
    pub step: u64,
    pub method: Method,
    pub requests: Vec<EditRequest>,
    /// The target optimization's own probability (mean over the step's requests; some methods
    /// measure it on the unedited model).
    pub prob_optimized: f64,
    /// p(target | prompt) on the model right after the step (mean over its requests).
    pub prob_after: f64,
    /// Token accuracy of the targets on the model right after the step (mean over requests).
    pub rewrite: f64,
    pub seconds: f64,
    /// Taken back by a later undo in the replayed journal.
    pub undone: bool,
}

/// The rows of a replay and what it did.
#[derive(Debug)]
pub struct ReplayTable {
    pub rows: Vec<ReplayRow>,
    pub report: ReplayReport,
}

impl ReplayTable {
    /// The methods of the rows in the order they were first used.
    pub fn methods(&self) -> Vec<Method> {
        let mut used = Vec::new();
        for r in &self.rows {
            if !used.contains(&r.method) {
                used.push(r.method);
            }
        }
        used
    }
}

/// Replays `events` on `runner` (whose model must be the unedited base) and measures every
/// applied step right after it lands. `until` and `verify` are as in [`Runner::replay`].
pub fn replay_table(
    runner: &mut Runner,
    events: &[Event],
    until: Option<usize>,
    verify: bool,
) -> Result<ReplayTable> {
    let mut rows: Vec<ReplayRow> = Vec::new();
    let report = runner.replay(events, until, verify, |replayed| {
        match replayed {
            Replayed::Applied {
                step,
                requests,
                outcome,
                model,
            } => {
                let items: Vec<(String, String)> = requests
                    .iter()
                    .map(|r| (r.filled_prompt(), r.target.clone()))
                    .collect();
                rows.push(ReplayRow {
                    step,
                    method: outcome.method,
                    requests: requests.to_vec(),
                    prob_optimized: mean(outcome.targets.iter().map(|t| t.prob_final)),
                    prob_after: mean(target_prob(model, &items)?),
                    rewrite: mean(token_accuracy(model, &items)?),
                    seconds: outcome.timings.total,
                    undone: false,
                });
            }
            Replayed::Undone { step } => {
                if let Some(row) = rows.iter_mut().find(|r| r.step == step) {
                    row.undone = true;
                }
            }
        }
        Ok(())
    })?;
    Ok(ReplayTable { rows, report })
}

fn mean(values: impl IntoIterator<Item = f64>) -> f64 {
    let (sum, n) = values
        .into_iter()
        .fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    if n == 0 {
        f64::NAN
    } else {
        sum / n as f64
    }
}

impl fmt::Display for ReplayTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:>5}  {:<10}  {:>7}  {:>8}  {:>7}  {:>7}  request",
            "step", "method", "p(opt)", "p(after)", "rewrite", "time"
        )?;
        for r in &self.rows {
            let more = match r.requests.len() {
                0 | 1 => String::new(),
                n => format!(" (+{} more)", n - 1),
            };
            let first = r.requests.first().map(EditRequest::describe);
            writeln!(
                f,
                "{:>5}  {:<10}  {:>7.3}  {:>8.3}  {:>7.3}  {:>6.1}s  {}{more}{}",
                r.step,
                r.method.label(),
                r.prob_optimized,
                r.prob_after,
                r.rewrite,
                r.seconds,
                first.unwrap_or_default(),
                if r.undone { "  [undone later]" } else { "" },
            )?;
        }
        write!(
            f,
            "{} steps and {} undos replayed",
            self.report.steps, self.report.undos
        )
    }
}

#[cfg(test)]
mod tests;
