//! Sessions: the journal of edits, replay, resume and export.

pub mod ahead;
pub mod bisect;
pub mod export;
pub mod journal;
pub mod replay;
pub mod snapshot;
pub mod table;

pub use journal::{Event, Session, SessionMeta};
pub use replay::Runner;
