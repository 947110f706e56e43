//! Model families, written once against burn and loaded from Hugging Face checkpoints.

pub mod gpt2;
pub mod layers;
pub mod llama;
pub mod weights;

use burn::module::Module;
use burn::tensor::{Bool, Device, Int, Tensor, TensorData};

use crate::error::{Error, Result};
use crate::event::Event;
use crate::hf::checkpoint::{self, CheckpointSummary};
use crate::hf::{Architecture, Fetch, HfError, ModelConfig, Tokenizer};
pub use gpt2::Gpt2LmHeadModel;
pub use llama::LlamaForCausalLm;
use weights::WeightStore;

/// A causal language model of any supported family.
#[derive(Module, Debug)]
pub enum CausalLm {
    Llama(LlamaForCausalLm),
    Gpt2(Gpt2LmHeadModel),
}

impl CausalLm {
    /// Logits `[batch, seq, vocab]` for `ids` `[batch, seq]`. `padding` is `[batch, seq]`, true
    /// for real tokens (None: no padding).
    pub fn forward(&self, ids: Tensor<2, Int>, padding: Option<Tensor<2, Bool>>) -> Tensor<3> {
        let [b, t] = ids.dims();
        let mask = layers::attention_mask(padding, b, t, t, &ids.device());
        match self {
            CausalLm::Llama(m) => m.forward(ids, mask),
            CausalLm::Gpt2(m) => m.forward(ids, mask),
        }
    }
}

/// A model with everything that came with it.
pub struct LoadedModel {
    pub model: CausalLm,
    pub config: ModelConfig,
    /// `None` when the source has no `tokenizer.json`.
    pub tokenizer: Option<Tokenizer>,
    pub checkpoint: CheckpointSummary,
    /// Tensors in the checkpoint that the model does not use (e.g. GPT-2's mask buffers).
    pub unused_tensors: Vec<String>,
}

/// Load `config.json`, `tokenizer.json` and the weights from `fetch` onto `device`, streaming
/// each shard tensor by tensor onto the device.
pub async fn load(
    fetch: &impl Fetch,
    device: &Device,
    on_event: &mut dyn FnMut(&Event),
) -> Result<LoadedModel> {
    let config_text = fetch.read_string("config.json").await?;
    let config = ModelConfig::parse(&config_text, &fetch.locate("config.json"))?;
    let tokenizer = match fetch.read_string("tokenizer.json").await {
        Ok(text) => Some(Tokenizer::from_bytes(
            text.as_bytes(),
            &fetch.locate("tokenizer.json"),
        )?),
        Err(e) if e.is_not_found() => None,
        Err(e) => return Err(e.into()),
    };
    let layout = checkpoint::layout(fetch).await?;
    let prefix = match config.arch {
        Architecture::Llama(_) => llama::PREFIX,
        Architecture::Gpt2(_) => gpt2::PREFIX,
    };
    let mut store = WeightStore::new(device, prefix);
    let summary = checkpoint::stream(
        fetch,
        &layout,
        |file, t| {
            store.insert(file, t);
            Ok::<(), HfError>(())
        },
        on_event,
    )
    .await?;
    let model = match &config.arch {
        Architecture::Llama(c) => CausalLm::Llama(LlamaForCausalLm::load(c, &mut store)?),
        Architecture::Gpt2(c) => CausalLm::Gpt2(Gpt2LmHeadModel::load(c, &mut store)?),
    };
    Ok(LoadedModel {
        model,
        config,
        tokenizer,
        checkpoint: summary,
        unused_tensors: store.leftover(),
    })
}

/// Token ids as a `[1, len]` tensor, checked against the vocabulary.
pub fn ids_tensor(ids: &[u32], vocab: usize, device: &Device) -> Result<Tensor<2, Int>> {
    if let Some(bad) = ids.iter().find(|&&i| i as usize >= vocab) {
        return Err(Error::Input(format!(
            "token id {bad} is outside the vocabulary (size {vocab})"
        )));
    }
    let v: Vec<i64> = ids.iter().map(|&i| i as i64).collect();
    Ok(Tensor::from_data(
        TensorData::new(v, [1, ids.len()]),
        device,
    ))
}

/// Read a float tensor back as f32 values, asynchronously (required on the web).
pub async fn read_f32<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>> {
    let data = t
        .into_data_async()
        .await
        .map_err(|e| Error::Readback(format!("{e:?}")))?;
    data.try_into_vec::<f32>()
        .map_err(|e| Error::Readback(format!("{e:?}")))
}
