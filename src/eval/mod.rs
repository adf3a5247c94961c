//! Evaluation: predictions, edit metrics, datasets, downstream probes, norms and plots.

pub mod bench;
pub mod datasets;
pub mod deck;
pub mod interval;
pub mod metrics;
pub mod plots;
pub mod predict;
pub mod probes;
#[cfg(test)]
pub(crate) mod testkit;
pub mod trace;
