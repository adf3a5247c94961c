//! Downstream probes of general ability (spec §4.6), scored as lm-evaluation-harness does.
//!
//! IMPLEMENTATION IN PROGRESS (helper).
