//! Hugging Face formats: `config.json`, safetensors checkpoints (single file or sharded with an
//! index), `tokenizer.json`, and where they come from (a directory or an HTTP(S) base URL).

pub mod chat;
pub mod checkpoint;
pub mod config;
pub mod hub;
pub mod safetensors;
pub mod source;
pub mod tokenizer;

pub use checkpoint::{CheckpointSummary, ShardSummary};
pub use config::{Architecture, Gpt2Config, LayerType, LlamaConfig, ModelConfig, RopeScaling};
pub use source::{Fetch, MemoryFiles, ModelSource, Opened};
pub use tokenizer::Tokenizer;

/// Everything that can go wrong reading Hugging Face files. Each variant names the file and,
/// where there is one, the tensor or field.
#[derive(Debug, thiserror::Error)]
pub enum HfError {
    #[error("{file}: file not found")]
    MissingFile { file: String },
    #[error("{file}: HTTP {status} from {url}")]
    HttpStatus {
        file: String,
        url: String,
        status: u16,
    },
    #[error("{file}: could not fetch {url}: {message}")]
    HttpConnect {
        file: String,
        url: String,
        message: String,
    },
    #[error(
        "{file}: download from {url} stopped after {received} of {} bytes: {message}",
        total.map_or("?".to_string(), |t| t.to_string())
    )]
    Interrupted {
        file: String,
        url: String,
        received: u64,
        total: Option<u64>,
        message: String,
    },
    #[error("{model}: {file}: {message}")]
    Hub {
        file: String,
        model: String,
        message: String,
    },
    #[error(
        "{model}: {file} is not in the Hugging Face cache ({cache}) and the Hub is not being asked (--offline / HF_HUB_OFFLINE=1); run once online"
    )]
    NotCached {
        file: String,
        model: String,
        cache: String,
    },
    #[error("{path}: Hugging Face cache: {message}")]
    Cache { path: String, message: String },
    #[error("{file}: read error: {message}")]
    Io { file: String, message: String },
    #[error("{file}: malformed JSON: {message}")]
    Json { file: String, message: String },
    #[error("{file}: field `{field}`: {message}")]
    Field {
        file: String,
        field: String,
        message: String,
    },
    #[error(
        "{file}: unsupported model_type `{model_type}`; supported: {}",
        config::MODEL_TYPES.join(", ")
    )]
    UnsupportedModelType { file: String, model_type: String },
    #[error("{file}: not a valid GGUF file: {message}")]
    Gguf { file: String, message: String },
    #[error("{file}: truncated while reading {what}")]
    Truncated { file: String, what: String },
    #[error("{file}: header claims {header_len} bytes but the file has {file_len} bytes")]
    HeaderTooLarge {
        file: String,
        header_len: u64,
        file_len: u64,
    },
    #[error("{file}: tensor `{tensor}`: {reason}")]
    BadOffsets {
        file: String,
        tensor: String,
        reason: String,
    },
    #[error("{file}: tensor `{tensor}` has unknown dtype `{dtype}`")]
    UnknownDtype {
        file: String,
        tensor: String,
        dtype: String,
    },
    #[error("{file}: tensor `{tensor}` has dtype {dtype}; weights must be F32, F16, BF16 or F64")]
    UnsupportedDtype {
        file: String,
        tensor: String,
        dtype: String,
    },
    #[error(
        "{file}: tensor `{tensor}` has shape {found:?} but config.json implies {expected:?} ({hint})"
    )]
    ShapeMismatch {
        file: String,
        tensor: String,
        expected: Vec<usize>,
        found: Vec<usize>,
        hint: String,
    },
    #[error("tensor `{tensor}` is missing from every shard (searched: {searched})")]
    MissingTensor { tensor: String, searched: String },
    #[error("{index}: names tensor `{tensor}` in `{shard}`, but that shard does not contain it")]
    IndexMismatch {
        index: String,
        tensor: String,
        shard: String,
    },
    #[error("{file}: {message}")]
    Tokenizer { file: String, message: String },
    #[error(
        "{file}: tensor `{tensor}` needs a {:.1} MiB f32 buffer, {:.1} MiB over this GPU's max_storage_buffer_binding_size ({:.1} MiB); the model is too large for this adapter",
        mib(*bytes), mib(bytes - limit), mib(*limit)
    )]
    TooLargeForDevice {
        file: String,
        tensor: String,
        bytes: u64,
        limit: u64,
    },
}

impl HfError {
    /// True when the error only says that an optional file is absent.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            HfError::MissingFile { .. }
                | HfError::HttpStatus { status: 404, .. }
                | HfError::NotCached { .. }
        )
    }
}

/// Bytes as MiB, for messages.
pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 20) as f64
}
