//! Writing results in Hugging Face formats, as in-memory files (name, bytes) so the same code
//! serves the CLI (written atomically to a directory) and the browser (offered as downloads).

use crate::error::Result;
use crate::hf::safetensors::serialize_f32;
use crate::model::CausalLm;
use crate::model::lora::{self, LoraConfig};

/// A file to write: its name inside the output directory and its bytes.
pub type File = (String, Vec<u8>);

/// Checkpoints larger than this are split into shards with an index, as `save_pretrained`.
pub const DEFAULT_MAX_SHARD: usize = 2 << 30;

/// `adapter_config.json` + `adapter_model.safetensors` for the model's LoRA adapters.
pub async fn peft_files(model: &CausalLm, cfg: &LoraConfig, base_model: &str) -> Result<Vec<File>> {
    let adapter = lora::to_peft(model, cfg, base_model).await?;
    let tensors: Vec<(String, Vec<usize>, &[f32])> = adapter
        .tensors
        .iter()
        .map(|(k, (shape, v))| (k.clone(), shape.clone(), &v[..]))
        .collect();
    Ok(vec![
        (
            "adapter_config.json".into(),
            serde_json::to_vec_pretty(&adapter.config).expect("JSON value"),
        ),
        ("adapter_model.safetensors".into(), serialize_f32(&tensors)),
    ])
}

/// The model's base weights as a Hugging Face checkpoint: `config.json` (from `config_json`,
/// with `dtype` set to float32) and `model.safetensors`, or shards of at most `max_shard`
/// bytes plus `model.safetensors.index.json`.
pub async fn hf_files(model: &CausalLm, config_json: &str, max_shard: usize) -> Result<Vec<File>> {
    let mut m = model.clone();
    let mut named = Vec::new();
    let mut pending = Vec::new();
    m.for_each_param(&mut |name, p| pending.push((name.to_string(), p.hf_shape(), p.snapshot())));
    for (name, shape, snap) in pending {
        named.push((name, shape, snap.read().await?));
    }
    let mut config: serde_json::Value =
        serde_json::from_str(config_json).unwrap_or_else(|_| serde_json::json!({}));
    if let Some(obj) = config.as_object_mut() {
        obj.remove("torch_dtype");
        obj.insert("dtype".into(), "float32".into());
    }
    let mut files = vec![(
        "config.json".to_string(),
        serde_json::to_vec_pretty(&config).expect("JSON value"),
    )];
    // Greedy sharding in parameter order.
    let mut shards: Vec<Vec<usize>> = vec![Vec::new()];
    let mut size = 0usize;
    for (i, (_, _, v)) in named.iter().enumerate() {
        let bytes = v.len() * 4;
        if size > 0 && size + bytes > max_shard {
            shards.push(Vec::new());
            size = 0;
        }
        shards.last_mut().expect("non-empty").push(i);
        size += bytes;
    }
    let slices = |idx: &[usize]| -> Vec<(String, Vec<usize>, &[f32])> {
        idx.iter()
            .map(|&i| (named[i].0.clone(), named[i].1.clone(), &named[i].2[..]))
            .collect()
    };
    if shards.len() == 1 {
        files.push((
            "model.safetensors".into(),
            serialize_f32(&slices(&shards[0])),
        ));
    } else {
        let n = shards.len();
        let mut weight_map = serde_json::Map::new();
        let mut total = 0usize;
        for (k, idx) in shards.iter().enumerate() {
            let fname = format!("model-{:05}-of-{n:05}.safetensors", k + 1);
            for &i in idx {
                weight_map.insert(named[i].0.clone(), fname.clone().into());
                total += named[i].2.len() * 4;
            }
            files.push((fname, serialize_f32(&slices(idx))));
        }
        let index =
            serde_json::json!({"metadata": {"total_size": total}, "weight_map": weight_map});
        files.push((
            "model.safetensors.index.json".into(),
            serde_json::to_vec_pretty(&index).expect("JSON value"),
        ));
    }
    Ok(files)
}

/// A named set of files written by a training run.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    pub name: String,
    pub files: Vec<File>,
}

/// Keeps checkpoints in memory (the browser offers them as downloads; tests inspect them).
#[derive(Debug, Default)]
pub struct MemorySink {
    pub checkpoints: Vec<Checkpoint>,
}

impl crate::train::CheckpointSink for MemorySink {
    fn save(&mut self, name: &str, files: Vec<File>) -> Result<()> {
        self.checkpoints.push(Checkpoint {
            name: name.to_string(),
            files,
        });
        Ok(())
    }
}

/// Writes each checkpoint into `<root>/<name>/` (the final one, `final`, into `<root>` itself),
/// every file through a temporary name and a rename, so an interrupted write never leaves a
/// half-written file under a real name.
#[cfg(feature = "native")]
pub struct DirSink {
    pub root: std::path::PathBuf,
}

#[cfg(feature = "native")]
impl crate::train::CheckpointSink for DirSink {
    fn save(&mut self, name: &str, files: Vec<File>) -> Result<()> {
        let dir = if name == "final" {
            self.root.clone()
        } else {
            self.root.join(name)
        };
        write_dir(&dir, &files)
    }
}

/// Write `files` into `dir` atomically file by file (temp + rename).
#[cfg(feature = "native")]
pub fn write_dir(dir: &std::path::Path, files: &[File]) -> Result<()> {
    let err = |p: &std::path::Path, e: std::io::Error| {
        crate::Error::Input(format!("cannot write {}: {e}", p.display()))
    };
    std::fs::create_dir_all(dir).map_err(|e| err(dir, e))?;
    for (name, bytes) in files {
        let path = dir.join(name);
        let tmp = dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, bytes).map_err(|e| err(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| err(&path, e))?;
    }
    Ok(())
}
