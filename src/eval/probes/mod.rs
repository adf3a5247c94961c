//! Downstream probes of general ability (spec §4.6), scored as EleutherAI's
//! lm-evaluation-harness scores them.

pub mod data;
pub mod generation;
pub mod scoring;
