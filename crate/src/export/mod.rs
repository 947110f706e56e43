//! Writing models in Hugging Face formats (PEFT adapters, `save_pretrained` checkpoints), as
//! in-memory [`File`]s.

use crate::error::Result;
use crate::files::File;
use crate::hf::safetensors::serialize_f32;
use crate::model::CausalLm;
use crate::model::lora::{self, LoraConfig};

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
        File::json("adapter_config.json", &adapter.config),
        File::new("adapter_model.safetensors", serialize_f32(&tensors)),
    ])
}

/// A Hugging Face checkpoint directory of `model` with LoRA adapters (if any) merged into the
/// base weights, with the base model's tokenizer and generation files (`extra_files`).
pub async fn merged_files(
    model: &CausalLm,
    config_json: &str,
    extra_files: &[File],
) -> Result<Vec<File>> {
    let mut model = model.clone();
    lora::merge(&mut model);
    let mut files = hf_files(&model, config_json, DEFAULT_MAX_SHARD).await?;
    files.extend(extra_files.iter().cloned());
    Ok(files)
}

/// A randomly initialised Hugging Face checkpoint for `config_json` (the start of pretraining)
/// with `tokenizer_json`, weights N(0, `std`) — by default the config's `initializer_range`,
/// else 0.02, as transformers — made repeatable by `seed`. Returns the files and the std used.
/// `names` are the two files' names, for messages.
#[cfg(feature = "native")]
pub async fn random_checkpoint(
    config_json: &str,
    tokenizer_json: Vec<u8>,
    std: Option<f64>,
    seed: u64,
    names: (&str, &str),
) -> Result<(Vec<File>, f64)> {
    let config = crate::hf::ModelConfig::parse(config_json, names.0)?;
    let tok = crate::hf::Tokenizer::from_bytes(&tokenizer_json, names.1)?;
    if tok.vocab_size() > config.vocab_size() {
        return Err(crate::Error::File {
            path: names.1.to_string(),
            message: format!(
                "{} tokens, but the config's vocab_size is {}",
                tok.vocab_size(),
                config.vocab_size()
            ),
        });
    }
    let std = std
        .or_else(|| {
            serde_json::from_str::<serde_json::Value>(config_json).ok()?["initializer_range"]
                .as_f64()
        })
        .unwrap_or(0.02);
    let device = burn::tensor::Device::flex();
    let model = crate::model::init_random(&config, &device, std, seed)?;
    let mut files = hf_files(&model, config_json, DEFAULT_MAX_SHARD).await?;
    files.push(File::new("tokenizer.json", tokenizer_json));
    Ok((files, std))
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
    let mut files = vec![File::json("config.json", &config)];
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
        files.push(File::new(
            "model.safetensors",
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
            files.push(File::new(fname, serialize_f32(&slices(idx))));
        }
        let index =
            serde_json::json!({"metadata": {"total_size": total}, "weight_map": weight_map});
        files.push(File::json("model.safetensors.index.json", &index));
    }
    Ok(files)
}
