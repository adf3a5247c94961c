//! Evaluation: predictions, edit metrics, datasets, downstream probes, norms and plots.

pub mod metrics;
pub mod predict;
