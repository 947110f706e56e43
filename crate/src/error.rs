//! The library's top-level error: each layer's error, plus input and device problems.

use crate::hf::HfError;

/// Any failure of a library operation, with a message meant for the user.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Hf(#[from] HfError),
    #[error("device: {0}")]
    Device(String),
    #[error("{0}")]
    Input(String),
    #[error("reading results back from the device failed: {0}")]
    Readback(String),
    #[error("training diverged at step {step}: {message}")]
    Diverged { step: usize, message: String },
}

/// Result with the library's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;
