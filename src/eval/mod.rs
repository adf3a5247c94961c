//! Evaluation: predictions, edit metrics, datasets, downstream probes, norms and plots.

pub mod bench;
pub mod checkpoint;
pub mod datasets;
pub mod deck;
pub mod metrics;
pub mod plots;
pub mod predict;
pub mod probes;
pub mod report;
#[cfg(test)]
pub(crate) mod testkit;
