//! d4s: a workbench for knowledge editing of language models — D4S (Dump for Sequence) and the
//! baselines, evaluation, sessions and a terminal UI.

pub mod edit;
pub mod error;
pub mod eval;
pub mod model;
pub mod session;
pub mod tui;
pub mod util;
pub mod worker;

pub use error::{Error, Result};
