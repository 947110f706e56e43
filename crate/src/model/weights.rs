//! Tensors of a checkpoint, held on the device by name until the model takes them, with the
//! shape checks that tie a checkpoint to its `config.json`.

use std::collections::HashMap;

use burn::module::Param;
use burn::tensor::{Device, Tensor, TensorData};

use crate::hf::HfError;
use crate::hf::safetensors::RawTensor;

struct Stored {
    tensor: Tensor<1>,
    shape: Vec<usize>,
    file: String,
}

/// Checkpoint tensors on the device, keyed by their Hugging Face names.
pub struct WeightStore {
    device: Device,
    tensors: HashMap<String, Stored>,
    /// Prefix of the body's names in `*ForCausalLM` checkpoints (`model.`, `transformer.`);
    /// checkpoints of the bare body (`LlamaModel`, original GPT-2) lack it.
    prefix: &'static str,
    files: Vec<String>,
    /// When set, missing tensors are initialised as transformers does (`initializer_range`
    /// std normal for matrices, ones for norm weights, zeros for biases) instead of failing.
    init_std: Option<f64>,
}

impl WeightStore {
    /// An empty store placing tensors on `device`; body tensors are looked up with and without
    /// `prefix`, so both `model.layers.0...` and `layers.0...` checkpoints load.
    pub fn new(device: &Device, prefix: &'static str) -> Self {
        WeightStore {
            device: device.clone(),
            tensors: HashMap::new(),
            prefix,
            files: Vec::new(),
            init_std: None,
        }
    }

    /// A store that creates every tensor fresh (a randomly initialised model), with normal
    /// weights of standard deviation `std`.
    pub fn random(device: &Device, prefix: &'static str, std: f64) -> Self {
        WeightStore {
            init_std: Some(std),
            ..Self::new(device, prefix)
        }
    }

    /// The Hugging Face name of a body tensor or module (`layers.0.mlp` → `model.layers.0.mlp`):
    /// recorded in each layer at load, so the names are spelled once, where they are loaded.
    pub fn path(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// Move one tensor onto the device as soon as it has been read.
    pub fn insert(&mut self, file: &str, raw: RawTensor) {
        if !self.files.iter().any(|f| f == file) {
            self.files.push(file.to_string());
        }
        let name = raw.info.name.clone();
        let n = raw.values.len();
        let tensor = Tensor::<1>::from_data(TensorData::new(raw.values, [n]), &self.device);
        self.tensors.insert(
            name,
            Stored {
                tensor,
                shape: raw.info.shape,
                file: file.to_string(),
            },
        );
    }

    /// Take a body tensor (`layers.0.mlp.up_proj.weight`, with or without the body prefix),
    /// checking its shape against what the config implies.
    pub fn take<const D: usize>(
        &mut self,
        name: &str,
        expected: [usize; D],
        hint: &str,
    ) -> Result<Tensor<D>, HfError> {
        let full = format!("{}{name}", self.prefix);
        let key = if self.tensors.contains_key(&full) {
            full
        } else if self.tensors.contains_key(name) {
            name.to_string()
        } else {
            full
        };
        self.take_exact(&key, expected, hint)
    }

    /// Take a tensor by its exact name (top-level ones such as `lm_head.weight`).
    pub fn take_exact<const D: usize>(
        &mut self,
        name: &str,
        expected: [usize; D],
        hint: &str,
    ) -> Result<Tensor<D>, HfError> {
        if let (Some(std), false) = (self.init_std, self.tensors.contains_key(name)) {
            return Ok(self.fresh(name, expected, std));
        }
        let stored = self
            .tensors
            .remove(name)
            .ok_or_else(|| HfError::MissingTensor {
                tensor: name.to_string(),
                searched: if self.files.is_empty() {
                    "no shard".into()
                } else {
                    self.files.join(", ")
                },
            })?;
        if stored.shape != expected {
            return Err(HfError::ShapeMismatch {
                file: stored.file,
                tensor: name.to_string(),
                expected: expected.to_vec(),
                found: stored.shape,
                hint: hint.to_string(),
            });
        }
        Ok(stored.tensor.reshape(expected))
    }

    fn fresh<const D: usize>(&self, name: &str, shape: [usize; D], std: f64) -> Tensor<D> {
        let norm = name.contains("norm") || name.contains("ln_");
        if name.ends_with(".bias") {
            Tensor::zeros(shape, &self.device)
        } else if norm {
            Tensor::ones(shape, &self.device)
        } else {
            Tensor::random(
                shape,
                burn::tensor::Distribution::Normal(0.0, std),
                &self.device,
            )
        }
    }

    /// Take a tensor as a trainable parameter.
    pub fn param<const D: usize>(
        &mut self,
        name: &str,
        expected: [usize; D],
        hint: &str,
    ) -> Result<Param<Tensor<D>>, HfError> {
        Ok(Param::from_tensor(self.take(name, expected, hint)?))
    }

    /// Names left over after the model took what it needs (ignored buffers such as GPT-2's
    /// `attn.bias` masks, or tensors of heads we do not build).
    pub fn leftover(&self) -> Vec<String> {
        let mut v: Vec<String> = self.tensors.keys().cloned().collect();
        v.sort();
        v
    }
}
