//! What a checkpoint holds, read from `config.json` and the safetensors headers alone (no
//! weights are loaded).

use std::collections::BTreeMap;

use crate::error::Result;
use crate::hf::checkpoint;
use crate::hf::{Fetch, ModelConfig};

/// Parameter count of one kind of tensor.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct KindCount {
    pub tensors: usize,
    pub parameters: u64,
}

/// Summary printed by `tunelab info`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ModelInfo {
    pub source: String,
    pub config: ModelConfig,
    /// attention / mlp / embedding / norm / other → counts.
    pub parameters_by_kind: BTreeMap<String, KindCount>,
    pub total_parameters: u64,
    /// dtype → number of tensors stored in it.
    pub dtypes: BTreeMap<String, usize>,
    pub shards: Vec<checkpoint::ShardSummary>,
    pub sharded: bool,
}

/// The kind of a tensor, from its Hugging Face name.
pub fn kind_of(name: &str) -> &'static str {
    let has = |s: &str| name.contains(s);
    if has("norm") || has(".ln_") || name.starts_with("ln_") || has("ln_f") {
        "norm"
    } else if has("attn") || has("attention") {
        "attention"
    } else if has("mlp") {
        "mlp"
    } else if has("embed") || has("wte") || has("wpe") || has("lm_head") {
        "embedding"
    } else {
        "other"
    }
}

/// Parameter counts by kind and tensor counts by dtype, tensor by tensor.
#[derive(Default)]
struct Tally {
    by_kind: BTreeMap<String, KindCount>,
    dtypes: BTreeMap<String, usize>,
    total: u64,
}

impl Tally {
    /// Count tensor `name` (Hugging Face name) of `n` values stored as `dtype`.
    fn add(&mut self, name: &str, n: u64, dtype: &str) {
        let entry = self.by_kind.entry(kind_of(name).to_string()).or_default();
        entry.tensors += 1;
        entry.parameters += n;
        self.total += n;
        *self.dtypes.entry(dtype.to_string()).or_default() += 1;
    }
}

/// Inspect the GGUF file `file` at `fetch`: only its header is read.
pub async fn inspect_gguf(fetch: &impl Fetch, file: &str) -> Result<ModelInfo> {
    let location = fetch.locate(file);
    let opened = fetch.open(file).await?;
    let len = opened.len;
    let header = crate::gguf::read_header(opened, &location).await?;
    let config_json = crate::gguf::llama::config_json(&header, &location)?;
    let config = ModelConfig::parse(&config_json, &location)?;
    let mut tally = Tally::default();
    for t in &header.tensors {
        if let Some(name) = crate::gguf::llama::hf_name(&t.name) {
            tally.add(&name, t.elements(), t.kind.name());
        }
    }
    Ok(ModelInfo {
        source: location,
        config,
        parameters_by_kind: tally.by_kind,
        total_parameters: tally.total,
        dtypes: tally.dtypes,
        shards: vec![checkpoint::ShardSummary {
            file: file.to_string(),
            bytes: len.unwrap_or(0),
            tensors: header.tensors.len(),
        }],
        sharded: false,
    })
}

/// The model's `config.json`, parsed: the error says what tunelab does not support (and lists
/// what it does) before any weights are fetched.
pub async fn config(fetch: &impl Fetch) -> Result<ModelConfig> {
    let config_text = fetch.read_string("config.json").await?;
    Ok(ModelConfig::parse(
        &config_text,
        &fetch.locate("config.json"),
    )?)
}

/// Inspect the model at `fetch`.
pub async fn inspect(fetch: &impl Fetch) -> Result<ModelInfo> {
    let config = config(fetch).await?;
    let layout = checkpoint::layout(fetch).await?;
    let headers = checkpoint::headers(fetch, &layout).await?;
    let mut tally = Tally::default();
    let mut shards = Vec::new();
    for (file, len, header) in &headers {
        for t in &header.tensors {
            // GPT-2's causal-mask buffers are not parameters.
            if t.name.ends_with(".attn.bias") || t.name.ends_with(".attn.masked_bias") {
                continue;
            }
            tally.add(&t.name, t.numel() as u64, t.dtype.name());
        }
        shards.push(checkpoint::ShardSummary {
            file: file.clone(),
            bytes: len.unwrap_or(0),
            tensors: header.tensors.len(),
        });
    }
    Ok(ModelInfo {
        source: fetch.locate(""),
        config,
        parameters_by_kind: tally.by_kind,
        total_parameters: tally.total,
        dtypes: tally.dtypes,
        shards,
        sharded: layout.weight_map.is_some(),
    })
}
