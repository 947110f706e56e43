//! Model families, written once against burn and loaded from Hugging Face checkpoints.

pub mod gpt2;
pub mod layers;
pub mod llama;
pub mod lora;
pub mod rope;
pub mod weights;

use burn::module::{Module, Param};
use burn::tensor::{Bool, Device, FloatDType, Int, Tensor, TensorData};

use crate::error::{Error, Result};
use crate::event::Event;
use crate::hf::checkpoint::{self, CheckpointSummary};
use crate::hf::{Architecture, Fetch, HfError, ModelConfig, Tokenizer};
use crate::kernels::Kernels;
pub use gpt2::Gpt2LmHeadModel;
pub use layers::KvCache;
use layers::Linear;
pub use llama::LlamaForCausalLm;
use weights::WeightStore;

/// A mutable reference to one named parameter.
pub enum ParamMut<'a> {
    /// A vector (norm weights, biases).
    Vector(&'a mut Param<Tensor<1>>),
    /// A matrix; the flag is true when the Hugging Face layout is the transpose of ours
    /// (`nn.Linear` weights are `[out, in]`, we keep `[in, out]`).
    Matrix(&'a mut Param<Tensor<2>>, bool),
}

impl ParamMut<'_> {
    /// Shape in the Hugging Face layout.
    pub fn hf_shape(&self) -> Vec<usize> {
        match self {
            ParamMut::Vector(p) => p.val().dims().to_vec(),
            ParamMut::Matrix(p, t) => {
                let [a, b] = p.val().dims();
                if *t { vec![b, a] } else { vec![a, b] }
            }
        }
    }

    /// Freeze (false) or unfreeze (true) the parameter.
    pub fn set_trainable(&mut self, on: bool) {
        match self {
            ParamMut::Vector(p) => **p = p.clone().set_require_grad(on),
            ParamMut::Matrix(p, _) => **p = p.clone().set_require_grad(on),
        }
    }

    /// The current value in the Hugging Face layout, to read back later (outside a visitor).
    pub fn snapshot(&self) -> Snapshot {
        match self {
            ParamMut::Vector(p) => Snapshot::Vector(p.val()),
            ParamMut::Matrix(p, true) => Snapshot::Matrix(p.val().transpose()),
            ParamMut::Matrix(p, false) => Snapshot::Matrix(p.val()),
        }
    }
}

/// A parameter value captured in Hugging Face layout.
pub enum Snapshot {
    Vector(Tensor<1>),
    Matrix(Tensor<2>),
}

impl Snapshot {
    /// Values flattened row-major (async readback).
    pub async fn read(self) -> Result<Vec<f32>> {
        match self {
            Snapshot::Vector(t) => read_f32(t).await,
            Snapshot::Matrix(t) => read_f32(t).await,
        }
    }
}

/// Visitor over named parameters.
pub type Visit<'v> = dyn FnMut(&str, ParamMut<'_>) + 'v;

/// A causal language model of any supported family. (Not boxed: there is one per session, and
/// burn's `Module` derive needs the variants inline.)
#[derive(Module, Debug)]
#[allow(clippy::large_enum_variant)]
pub enum CausalLm {
    Llama(LlamaForCausalLm),
    Gpt2(Gpt2LmHeadModel),
}

impl CausalLm {
    /// Logits `[batch, seq, vocab]` for `ids` `[batch, seq]`. `padding` is `[batch, seq]`, true
    /// for real tokens (None: no padding).
    pub fn forward(&self, ids: Tensor<2, Int>, padding: Option<Tensor<2, Bool>>) -> Tensor<3> {
        self.forward_masked(ids, padding, None)
    }

    /// Logits for `ids` `[batch, new]` that continue the positions in `cache`, appending their
    /// keys and values to it (no padding).
    pub fn forward_cached(&self, ids: Tensor<2, Int>, cache: &mut KvCache) -> Tensor<3> {
        self.forward_masked(ids, None, Some(cache))
    }

    fn forward_masked(
        &self,
        ids: Tensor<2, Int>,
        padding: Option<Tensor<2, Bool>>,
        cache: Option<&mut KvCache>,
    ) -> Tensor<3> {
        self.project(self.hidden_masked(ids, padding, cache))
    }

    /// Final hidden states `[batch, seq, hidden]` (before the LM head) for `ids`; `padding` as
    /// in [`CausalLm::forward`].
    pub fn hidden(&self, ids: Tensor<2, Int>, padding: Option<Tensor<2, Bool>>) -> Tensor<3> {
        self.hidden_masked(ids, padding, None)
    }

    /// The LM head: logits `[batch, seq, vocab]` from [`CausalLm::hidden`]'s states.
    pub fn project(&self, x: Tensor<3>) -> Tensor<3> {
        match self {
            CausalLm::Llama(m) => m.project(x),
            CausalLm::Gpt2(m) => m.project(x),
        }
    }

    /// The LM head as a plain `[hidden, vocab]` matrix (tied heads: the embedding table
    /// transposed), or None when it has a bias or an adapter.
    pub fn head_matrix(&self) -> Option<Tensor<2>> {
        match self {
            CausalLm::Llama(m) => m.head_matrix(),
            CausalLm::Gpt2(m) => m.head_matrix(),
        }
    }

    fn hidden_masked(
        &self,
        ids: Tensor<2, Int>,
        padding: Option<Tensor<2, Bool>>,
        cache: Option<&mut KvCache>,
    ) -> Tensor<3> {
        let [b, t] = ids.dims();
        let past = cache.as_ref().map_or(0, |c| c.len());
        let window = match self {
            CausalLm::Llama(m) => m.sliding_window(),
            CausalLm::Gpt2(_) => None,
        };
        let masks = layers::AttentionMasks::new(padding, b, t, past + t, window, &ids.device());
        match self {
            CausalLm::Llama(m) => m.hidden(ids, &masks, cache),
            CausalLm::Gpt2(m) => m.hidden(ids, masks.full, cache),
        }
    }

    /// Visit every linear layer with its HF module path (`model.layers.0.self_attn.q_proj`).
    pub fn for_each_linear(&mut self, f: &mut dyn FnMut(&str, &mut Linear)) {
        match self {
            CausalLm::Llama(m) => m.for_each_linear(f),
            CausalLm::Gpt2(m) => m.for_each_linear(f),
        }
    }

    /// Visit every base parameter (not LoRA) with its HF tensor name.
    pub fn for_each_param(&mut self, f: &mut Visit) {
        match self {
            CausalLm::Llama(m) => m.for_each_other_param(f),
            CausalLm::Gpt2(m) => m.for_each_other_param(f),
        }
        self.for_each_linear(&mut |path, lin| {
            f(
                &format!("{path}.weight"),
                ParamMut::Matrix(&mut lin.weight, !lin.conv1d),
            );
            if let Some(b) = &mut lin.bias {
                f(&format!("{path}.bias"), ParamMut::Vector(b));
            }
        });
    }

    /// Visit every parameter that receives gradients: base parameters not frozen, and LoRA
    /// factors (named `<module>.lora_A.weight` / `.lora_B.weight`, in PEFT's layout).
    pub fn for_each_trainable(&mut self, f: &mut Visit) {
        self.for_each_param(&mut |name, p| {
            let on = match &p {
                ParamMut::Vector(t) => t.val().is_require_grad(),
                ParamMut::Matrix(t, _) => t.val().is_require_grad(),
            };
            if on {
                f(name, p);
            }
        });
        self.for_each_linear(&mut |path, lin| {
            if let Some(l) = &mut lin.lora {
                f(
                    &format!("{path}.lora_A.weight"),
                    ParamMut::Matrix(&mut l.a, true),
                );
                f(
                    &format!("{path}.lora_B.weight"),
                    ParamMut::Matrix(&mut l.b, true),
                );
            }
        });
    }

    /// Store the base weight matrices (not LoRA factors) whose training flag `select` accepts in
    /// `dtype`, values rounded to it, each keeping its flag. In f16 the layers read a matrix as
    /// stored and compute in f32 ([`crate::kernels::linear`], the embedding lookup); vectors
    /// (norm weights, biases) stay f32: they are small and feed elementwise ops.
    pub fn store_matrices(&mut self, dtype: FloatDType, select: &dyn Fn(bool) -> bool) {
        self.for_each_param(&mut |_, p| {
            if let ParamMut::Matrix(t, _) = p {
                let trains = t.val().is_require_grad();
                if select(trains) && FloatDType::from(t.val().dtype()) != dtype {
                    // A new leaf: the cast is not part of any graph.
                    *t = t
                        .clone()
                        .map(|w| w.cast(dtype).detach())
                        .set_require_grad(trains);
                }
            }
        });
    }

    /// Set attention-probability and residual dropout (active only while training).
    pub fn set_dropout(&mut self, attention: f64, residual: f64) {
        match self {
            CausalLm::Llama(m) => m.set_dropout(attention, residual),
            CausalLm::Gpt2(m) => m.set_dropout(attention, residual),
        }
    }

    /// Run attention and the loss with tunelab's kernels or burn's ops.
    pub fn set_kernels(&mut self, kernels: Kernels) {
        match self {
            CausalLm::Llama(m) => m.kernels = kernels,
            CausalLm::Gpt2(m) => m.kernels = kernels,
        }
    }

    /// The kernels attention and the loss run with.
    pub fn kernels(&self) -> Kernels {
        match self {
            CausalLm::Llama(m) => m.kernels,
            CausalLm::Gpt2(m) => m.kernels,
        }
    }

    /// Names of the embedding and output-head tensors (frozen by default in full fine-tuning).
    pub fn is_embedding_or_head(name: &str) -> bool {
        name.ends_with("embed_tokens.weight")
            || name.ends_with("wte.weight")
            || name.ends_with("wpe.weight")
            || name.starts_with("lm_head.")
    }
}

/// A model with what running it needs (its config, tokenizer and device), borrowed: a session's
/// base model and a run's tuned model are evaluated and sampled from alike.
#[derive(Clone, Copy)]
pub struct LmView<'a> {
    pub model: &'a CausalLm,
    pub config: &'a ModelConfig,
    pub tokenizer: Option<&'a Tokenizer>,
    /// A non-autodiff device (evaluation tracks no gradients).
    pub device: &'a Device,
    /// Where the model came from, for messages.
    pub source: &'a str,
}

impl<'a> LmView<'a> {
    /// The tokenizer, or an error saying the model has none.
    pub fn tokenizer(&self) -> Result<&'a Tokenizer> {
        self.tokenizer.ok_or_else(|| {
            Error::Input(format!(
                "{} has no tokenizer.json; pass token ids instead of text",
                self.source
            ))
        })
    }

    /// Vocabulary size.
    pub fn vocab(&self) -> usize {
        self.config.vocab_size()
    }

    /// Context length (`max_position_embeddings`).
    pub fn context(&self) -> usize {
        self.config.max_positions()
    }

    /// Full logits `[len, vocab]` (row-major) for one sequence of token ids.
    pub async fn logits(&self, ids: &[u32]) -> Result<Vec<f32>> {
        let max = self.context();
        if ids.is_empty() {
            return Err(Error::Input("no tokens given".into()));
        }
        if ids.len() > max {
            return Err(Error::Input(format!(
                "{} tokens exceed the model's context of {max} (max_position_embeddings)",
                ids.len()
            )));
        }
        let input = ids_tensor(ids, self.vocab(), self.device)?;
        read_f32(self.model.forward(input, None)).await
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
    /// `config.json` as written (re-used when exporting a fine-tuned checkpoint).
    pub config_json: String,
    /// Tokenizer and generation files present beside the weights, copied into exports.
    pub extra_files: Vec<crate::files::File>,
}

/// Optional files that travel with a checkpoint.
pub const EXTRA_FILES: &[&str] = &[
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "generation_config.json",
];

/// Load `config.json`, `tokenizer.json` and the weights from `fetch` onto `device`, streaming
/// each shard tensor by tensor onto the device as its bytes arrive. With `max_tensor_bytes`
/// (the device's buffer limit), a tensor too large for it is refused before it is read.
pub async fn load(
    fetch: &impl Fetch,
    device: &Device,
    max_tensor_bytes: Option<u64>,
    on_event: &mut dyn FnMut(&Event),
) -> Result<LoadedModel> {
    let config_text = fetch.read_string("config.json").await?;
    let config = ModelConfig::parse(&config_text, &fetch.locate("config.json"))?;
    let mut extra_files = Vec::new();
    for name in EXTRA_FILES {
        match fetch.read_string(name).await {
            Ok(text) => extra_files.push(crate::files::File::new(*name, text)),
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
    }
    let tokenizer = tokenizer_of(&extra_files, &fetch.locate("tokenizer.json"))?;
    let layout = checkpoint::layout(fetch).await?;
    let mut store = WeightStore::new(device, body_prefix(&config));
    let summary = checkpoint::stream(
        fetch,
        &layout,
        max_tensor_bytes,
        |file, t| {
            store.insert(file, t);
            Ok::<(), HfError>(())
        },
        on_event,
    )
    .await?;
    Ok(LoadedModel {
        model: build(&config, &mut store)?,
        config,
        tokenizer,
        checkpoint: summary,
        unused_tensors: store.leftover(),
        config_json: config_text,
        extra_files,
    })
}

/// Load a GGUF file (`file` at `fetch`) onto `device`: its header gives `config.json`, the
/// tokenizer and the chat template; each tensor is dequantised to f32, renamed and un-permuted
/// to the Hugging Face layout and moved to the device as soon as its bytes have arrived. With
/// `max_tensor_bytes`, a tensor too large once widened to f32 is refused before any data is read.
pub async fn load_gguf(
    fetch: &impl Fetch,
    file: &str,
    device: &Device,
    max_tensor_bytes: Option<u64>,
    on_event: &mut dyn FnMut(&Event),
) -> Result<LoadedModel> {
    use crate::event::Progress;
    use crate::gguf::{self, GgufStream};
    let location = fetch.locate(file);
    let mut opened = fetch.open(file).await?;
    let total = opened.len;
    let task = format!("loading {file}");
    on_event(&Event::Progress(Progress::bytes(&task, 0, total)));
    let mut stream = GgufStream::new(&location, total);
    let mut store = WeightStore::new(device, llama::PREFIX);
    let mut done = 0u64;
    let mut count = 0usize;
    let mut on_header = |h: &gguf::Header| {
        // The config must be readable before any tensor data is.
        ModelConfig::parse(&gguf::llama::config_json(h, &location)?, &location)?;
        if let (Some(limit), Some(t)) = (
            max_tensor_bytes,
            h.tensors
                .iter()
                .find(|t| Some(t.elements().saturating_mul(4)) > max_tensor_bytes),
        ) {
            return Err(HfError::TooLargeForDevice {
                file: location.clone(),
                tensor: t.name.clone(),
                bytes: t.elements().saturating_mul(4),
                limit,
            });
        }
        Ok(())
    };
    let mut on_tensor = |h: &gguf::Header, t: &gguf::TensorInfo, values: Vec<f32>| {
        if let Some(raw) = gguf::llama::to_hf(h, t, values, &location)? {
            store.insert(&location, raw);
            count += 1;
        }
        Ok(())
    };
    while let Some(chunk) = opened.body.next_chunk().await? {
        done += chunk.len() as u64;
        stream.push(&chunk, &mut on_header, &mut on_tensor)?;
        on_event(&Event::Progress(Progress::bytes(&task, done, total)));
    }
    stream.end(&mut on_header, &mut on_tensor)?;
    let h = stream.finish()?;
    if total.is_none() {
        on_event(&Event::Progress(Progress::bytes(&task, done, Some(done))));
    }
    let config_json = gguf::llama::config_json(&h, &location)?;
    let config = ModelConfig::parse(&config_json, &location)?;
    let mut extra_files = Vec::new();
    if let Some(t) = gguf::tokenizer::tokenizer_json(&h, &location)? {
        extra_files.push(crate::files::File::new("tokenizer.json", t));
    }
    if let Some(t) = gguf::tokenizer::tokenizer_config_json(&h) {
        extra_files.push(crate::files::File::new("tokenizer_config.json", t));
    }
    let tokenizer = tokenizer_of(&extra_files, &location)?;
    Ok(LoadedModel {
        model: build(&config, &mut store)?,
        config,
        tokenizer,
        checkpoint: CheckpointSummary {
            shards: vec![crate::hf::ShardSummary {
                file: file.to_string(),
                bytes: total.unwrap_or(done),
                tensors: count,
            }],
            sharded: false,
        },
        unused_tensors: store.leftover(),
        config_json,
        extra_files,
    })
}

/// A randomly initialised model for `config` (the starting point of pretraining), with
/// transformers' initialisation: N(0, `std`) weights, unit norms, zero biases; `seed` makes it
/// repeatable on one backend.
pub fn init_random(config: &ModelConfig, device: &Device, std: f64, seed: u64) -> Result<CausalLm> {
    device.seed(seed);
    build(
        config,
        &mut WeightStore::random(device, body_prefix(config), std),
    )
}

/// Prefix of the body's tensor names in `config`'s family's `*ForCausalLM` checkpoints.
fn body_prefix(config: &ModelConfig) -> &'static str {
    match config.arch {
        Architecture::Llama(_) => llama::PREFIX,
        Architecture::Gpt2(_) => gpt2::PREFIX,
    }
}

/// The model of `config`'s family, built from the tensors in `store`.
fn build(config: &ModelConfig, store: &mut WeightStore) -> Result<CausalLm> {
    Ok(match &config.arch {
        Architecture::Llama(c) => CausalLm::Llama(LlamaForCausalLm::load(c, store)?),
        Architecture::Gpt2(c) => CausalLm::Gpt2(Gpt2LmHeadModel::load(c, store)?),
    })
}

/// The tokenizer among a model's files (`tokenizer.json`), if there is one; `file` names it.
fn tokenizer_of(files: &[crate::files::File], file: &str) -> Result<Option<Tokenizer>> {
    match files.iter().find(|f| f.name == "tokenizer.json") {
        Some(f) => Ok(Some(Tokenizer::from_bytes(&f.bytes, file)?)),
        None => Ok(None),
    }
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

/// A failed readback as one readable line: the runtime's chain of causes (written in its debug
/// form, line breaks escaped or not) joined with `; `, without the backtrace, repeated causes,
/// or the generic "an error happened" wrappers around a specific one.
fn readback_message(e: &impl std::fmt::Debug) -> String {
    let text = format!("{e:?}").replace(r"\n", "\n");
    let mut causes: Vec<&str> = Vec::new();
    for line in text
        .lines()
        .map(|l| l.trim().trim_end_matches(':'))
        .take_while(|l| !l.starts_with("Backtrace") && !l.starts_with("No backtrace"))
        .filter(|l| !l.is_empty() && *l != "Caused by")
    {
        if !causes.contains(&line) {
            causes.push(line);
        }
    }
    let generic = |l: &&str| l.starts_with("An error happened during execution");
    if causes.iter().any(|l| !generic(l)) {
        causes.retain(|l| !generic(l));
    }
    causes.join("; ")
}

/// Read an integer tensor back as i64 values, asynchronously.
pub async fn read_i64<const D: usize>(t: Tensor<D, Int>) -> Result<Vec<i64>> {
    let data = t
        .into_data_async()
        .await
        .map_err(|e| Error::Readback(readback_message(&e)))?;
    data.convert::<i64>()
        .try_into_vec::<i64>()
        .map_err(|e| Error::Readback(readback_message(&e)))
}

/// Read a float tensor back as f32 values, asynchronously (required on the web).
pub async fn read_f32<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>> {
    let data = t
        .into_data_async()
        .await
        .map_err(|e| Error::Readback(readback_message(&e)))?;
    // Widened where the tensor is stored in another float type (frozen weights kept in f16).
    data.try_into_vec_as::<f32>()
        .map_err(|e| Error::Readback(readback_message(&e)))
}

#[cfg(test)]
mod tests {
    use super::readback_message;

    /// An error written in its debug form as `text` says.
    struct Chain(&'static str);

    impl std::fmt::Debug for Chain {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    #[test]
    fn readback_message_names_each_specific_cause_once() {
        let lost = Chain(
            "An error happened during execution:\n  Caused by:\n  An error happened during execution:\n  \
             the staging buffer could not be mapped: device lost\nBacktrace:\n  0: cubecl::read",
        );
        assert_eq!(
            readback_message(&lost),
            "the staging buffer could not be mapped: device lost"
        );
        // Escaped line breaks (a cause chain inside a debug-printed string) split the same way.
        let escaped = Chain(r"Readback(\n out of memory\n out of memory\n No backtrace)");
        assert_eq!(readback_message(&escaped), "Readback(; out of memory");
        // Nothing more specific: the generic cause is kept.
        let generic = Chain("An error happened during execution");
        assert_eq!(
            readback_message(&generic),
            "An error happened during execution"
        );
    }
}
