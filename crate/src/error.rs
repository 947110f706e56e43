//! The library's top-level error: each layer's error, plus settings, files and device problems.
//!
//! Messages speak the library's vocabulary: a setting is named by its field (`batch_size`,
//! `allow_exec`), in backticks, so each shell can put its own words there (CLI flags, the page's
//! form labels) with one table ([`Error::describe`]).

use crate::hf::HfError;

/// Any failure of a library operation, with a message meant for the user.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Hf(#[from] HfError),
    /// A setting whose value cannot work: `field` is the field of the options struct
    /// (the run spec, the eval options, …).
    #[error("`{field}`: {message}")]
    Setting {
        field: &'static str,
        message: String,
    },
    /// A file that cannot be read or written, or whose contents are not what they should be.
    #[error("{path}: {message}")]
    File { path: String, message: String },
    #[error("device: {0}")]
    Device(String),
    #[error("{0}")]
    Input(String),
    #[error("reading results back from the device failed: {0}")]
    Readback(String),
    /// The device failed while running `operation` (which names what ran, with its sizes): it
    /// was lost (driver reset, removed, destroyed) or refused an allocation. Checkpoints already
    /// written are untouched; the run cannot continue on this device.
    #[error("the device failed during {operation}: {message}")]
    DeviceFault { operation: String, message: String },
    #[error("training diverged at step {step}: {message}")]
    Diverged { step: usize, message: String },
}

impl Error {
    /// A [`Error::Setting`] error.
    pub fn setting(field: &'static str, message: impl Into<String>) -> Self {
        Error::Setting {
            field,
            message: message.into(),
        }
    }

    /// A [`Error::File`] error: `path` and what went wrong with it (an I/O or parse error).
    pub fn file(path: &std::path::Path, e: impl std::fmt::Display) -> Self {
        Error::File {
            path: path.display().to_string(),
            message: e.to_string(),
        }
    }

    /// The message with every backticked field name in `names` replaced by the shell's word
    /// for it (a CLI flag, a form label): `(field, word)` pairs.
    pub fn describe(&self, names: &[(&str, &str)]) -> String {
        in_words(&self.to_string(), names)
    }
}

/// `text` (an error message or a report note) with every backticked field name in `names`
/// replaced by the shell's word for it.
pub fn in_words(text: &str, names: &[(&str, &str)]) -> String {
    let mut text = text.to_string();
    for (field, word) in names {
        text = text.replace(&format!("`{field}`"), word);
    }
    text
}

/// Result with the library's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;
