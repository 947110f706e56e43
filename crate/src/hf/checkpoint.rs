//! A checkpoint's weight files: `model.safetensors`, or `model.safetensors.index.json` and the
//! shards it names. Shards are streamed one at a time, tensor by tensor.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::safetensors::{Header, RawTensor};
use super::{Fetch, HfError};
use crate::event::{Event, Progress};

/// Name of the single-file checkpoint.
pub const SINGLE: &str = "model.safetensors";
/// Name of the shard index.
pub const INDEX: &str = "model.safetensors.index.json";

/// The weight files of a checkpoint, as found at its source.
#[derive(Debug, Clone)]
pub struct Layout {
    /// Shard file names in load order.
    pub shards: Vec<String>,
    /// tensor name → shard, when an index exists.
    pub weight_map: Option<BTreeMap<String, String>>,
}

/// What was read from one shard.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ShardSummary {
    pub file: String,
    pub bytes: u64,
    pub tensors: usize,
}

/// What was read from a whole checkpoint.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CheckpointSummary {
    pub shards: Vec<ShardSummary>,
    pub sharded: bool,
}

/// Find the weight files: the index if there is one, else the single file.
pub async fn layout(fetch: &impl Fetch) -> Result<Layout, HfError> {
    match fetch.read_string(INDEX).await {
        Ok(text) => {
            let file = fetch.locate(INDEX);
            #[derive(serde::Deserialize)]
            struct Index {
                weight_map: BTreeMap<String, String>,
            }
            let index: Index = serde_json::from_str(&text).map_err(|e| HfError::Json {
                file: file.clone(),
                message: e.to_string(),
            })?;
            if index.weight_map.is_empty() {
                return Err(HfError::Field {
                    file,
                    field: "weight_map".into(),
                    message: "is empty".into(),
                });
            }
            let mut seen = BTreeSet::new();
            let shards = index
                .weight_map
                .values()
                .filter(|s| seen.insert(s.as_str()))
                .cloned()
                .collect();
            Ok(Layout {
                shards,
                weight_map: Some(index.weight_map),
            })
        }
        Err(e) if e.is_not_found() => Ok(Layout {
            shards: vec![SINGLE.to_string()],
            weight_map: None,
        }),
        Err(e) => Err(e),
    }
}

/// Stream every tensor of the checkpoint through `on_tensor(shard_location, tensor)`, shard by
/// shard as the bytes arrive, reporting byte progress per file. Checks that the index and the
/// shards agree and, with `max_tensor_bytes` (a GPU's buffer binding limit), that every tensor
/// of a shard fits once widened to f32 before any of that shard's data is read.
pub async fn stream(
    fetch: &impl Fetch,
    layout: &Layout,
    max_tensor_bytes: Option<u64>,
    mut on_tensor: impl FnMut(&str, RawTensor) -> Result<(), HfError>,
    on_event: &mut dyn FnMut(&Event),
) -> Result<CheckpointSummary, HfError> {
    let mut summary = CheckpointSummary {
        shards: Vec::new(),
        sharded: layout.weight_map.is_some(),
    };
    let mut found: HashMap<String, String> = HashMap::new();
    for shard in &layout.shards {
        let location = fetch.locate(shard);
        let opened = fetch.open(shard).await?;
        let total = opened.len;
        let task = format!("loading {shard}");
        let mut count = 0usize;
        let mut last = 0u64;
        on_event(&Event::Progress(Progress::bytes(&task, 0, total)));
        opened
            .stream_tensors(
                &location,
                &mut |header| match max_tensor_bytes {
                    Some(limit) => check_fits(header, &location, limit),
                    None => Ok(()),
                },
                &mut |t| {
                    found.insert(t.info.name.clone(), shard.clone());
                    count += 1;
                    on_tensor(&location, t)
                },
                &mut |done| {
                    last = done;
                    on_event(&Event::Progress(Progress::bytes(&task, done, total)));
                },
            )
            .await?;
        if total.is_none() {
            // Length unknown up front (chunked HTTP): the end of the stream fixes it.
            on_event(&Event::Progress(Progress::bytes(&task, last, Some(last))));
        }
        summary.shards.push(ShardSummary {
            file: shard.clone(),
            bytes: total.unwrap_or(last),
            tensors: count,
        });
    }
    if let Some(map) = &layout.weight_map {
        for (tensor, shard) in map {
            if found.get(tensor) != Some(shard) {
                return Err(HfError::IndexMismatch {
                    index: fetch.locate(INDEX),
                    tensor: tensor.clone(),
                    shard: shard.clone(),
                });
            }
        }
    }
    Ok(summary)
}

/// Read only the headers of every shard (for `info`): no tensor data is kept.
pub async fn headers(
    fetch: &impl Fetch,
    layout: &Layout,
) -> Result<Vec<(String, Option<u64>, Header)>, HfError> {
    let mut out = Vec::new();
    for shard in &layout.shards {
        let opened = fetch.open(shard).await?;
        let len = opened.len;
        let header = opened.read_header(&fetch.locate(shard)).await?;
        out.push((shard.clone(), len, header));
    }
    Ok(out)
}

/// Refuse a shard holding a tensor that would not fit in one GPU buffer of `limit` bytes once
/// widened to f32 (the model's working precision), naming the tensor and the excess.
fn check_fits(header: &Header, file: &str, limit: u64) -> Result<(), HfError> {
    match header.tensors.iter().find(|t| t.numel() as u64 * 4 > limit) {
        Some(t) => Err(HfError::TooLargeForDevice {
            file: file.to_string(),
            tensor: t.name.clone(),
            bytes: t.numel() as u64 * 4,
            limit,
        }),
        None => Ok(()),
    }
}
