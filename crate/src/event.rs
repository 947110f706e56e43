//! Events that long operations emit, so every shell (CLI progress bars, the web page) can show
//! them with a few lines of code.

/// What a progress count measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Unit {
    Bytes,
    Items,
    Tokens,
}

/// Progress of one named task.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Progress {
    pub task: String,
    pub done: u64,
    pub total: Option<u64>,
    pub unit: Unit,
}

impl Progress {
    /// Byte progress of `task`.
    pub fn bytes(task: &str, done: u64, total: Option<u64>) -> Self {
        Progress {
            task: task.to_string(),
            done,
            total,
            unit: Unit::Bytes,
        }
    }

    /// Item progress of `task`.
    pub fn items(task: &str, done: u64, total: Option<u64>) -> Self {
        Progress {
            task: task.to_string(),
            done,
            total,
            unit: Unit::Items,
        }
    }
}

/// Anything a long operation reports while it runs.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A task advanced.
    Progress(Progress),
    /// A line of information worth showing (e.g. which device was chosen).
    Notice { message: String },
    /// A generated piece of text, streamed as soon as it is decoded.
    Token { text: String },
    /// A training step whose loss has been read back.
    Step {
        step: usize,
        total_steps: usize,
        epoch: f64,
        loss: f64,
        lr: f64,
        grad_norm: f64,
        tokens_per_s: f64,
        tokens_seen: u64,
    },
    /// An evaluation during training.
    Eval {
        step: usize,
        loss: f64,
        perplexity: f64,
    },
    /// A checkpoint was written.
    Checkpoint { step: usize, name: String },
}
