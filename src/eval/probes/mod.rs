//! Downstream probes of general ability (spec §4.6), scored as lm-evaluation-harness does.
//!
//! IMPLEMENTATION IN PROGRESS (helper).

/// TEMPORARY until the probes module lands.
pub fn default_data_dir_hint() -> Option<std::path::PathBuf> {
    None
}
