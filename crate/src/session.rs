//! A loaded model on a device and what can be done with it directly (score, logits, generate);
//! fine-tuning it is a `Run` (run.rs). The CLI and the web page are thin layers over both.

use burn::tensor::Device;

use crate::error::{Error, Result};
use crate::eval::generate::{self, GenerateOptions};
use crate::eval::perplexity::{self, Score};
use crate::event::Event;
use crate::files::File;
use crate::hf::chat::ChatTemplate;
use crate::hf::{CheckpointSummary, Fetch, ModelConfig, Tokenizer};
use crate::model::{self, CausalLm, LmView};

/// A model loaded on a device.
pub struct Session {
    pub device: Device,
    pub model: CausalLm,
    pub config: ModelConfig,
    pub tokenizer: Option<Tokenizer>,
    pub checkpoint: CheckpointSummary,
    /// Where the model came from (path or URL); recorded as the base model of adapters.
    pub source: String,
    /// `config.json` as written.
    pub config_json: String,
    /// Tokenizer and generation files that came with the model.
    pub extra_files: Vec<File>,
}

impl Session {
    /// Keep the model's weight matrices in f16 from now on (the page's "base weights in f16"):
    /// half their memory, values rounded to f16. Runs started from this session share them as
    /// their frozen base; what a run trains it trains as an f32 copy.
    pub fn store_weights_in_f16(&mut self) -> Result<()> {
        if let Some(why) = crate::kernels::f16_unavailable(&self.device) {
            return Err(Error::Device(format!("keeping the weights in f16 {why}")));
        }
        self.model
            .store_matrices(burn::tensor::FloatDType::F16, &|_| true);
        Ok(())
    }

    /// Load the model at `fetch` onto `device`, reporting progress through `on_event`.
    pub async fn load(
        fetch: &impl Fetch,
        device: Device,
        on_event: &mut dyn FnMut(&Event),
    ) -> Result<Self> {
        Self::load_within(fetch, device, None, on_event).await
    }

    /// [`Session::load`], refusing (before reading it) a tensor larger than `max_tensor_bytes`:
    /// the browser passes its adapter's buffer binding limit.
    pub async fn load_within(
        fetch: &impl Fetch,
        device: Device,
        max_tensor_bytes: Option<u64>,
        on_event: &mut dyn FnMut(&Event),
    ) -> Result<Self> {
        let loaded = model::load(fetch, &device, max_tensor_bytes, on_event).await?;
        Ok(Self::from_loaded(loaded, device, fetch.locate(""), on_event).await)
    }

    /// [`Session::load_within`] of the GGUF file `file` at `fetch` (a directory or base URL).
    pub async fn load_gguf(
        fetch: &impl Fetch,
        file: &str,
        device: Device,
        max_tensor_bytes: Option<u64>,
        on_event: &mut dyn FnMut(&Event),
    ) -> Result<Self> {
        let loaded = model::load_gguf(fetch, file, &device, max_tensor_bytes, on_event).await?;
        Ok(Self::from_loaded(loaded, device, fetch.locate(file), on_event).await)
    }

    /// Load the model named `model` the way a user names it: a directory or base URL of a
    /// Hugging Face checkpoint, or a `.gguf` file (path or URL).
    #[cfg(feature = "native")]
    pub async fn open(
        model: &str,
        device: Device,
        on_event: &mut dyn FnMut(&Event),
    ) -> Result<Self> {
        use crate::hf::ModelSource;
        match crate::hf::source::gguf_file(model) {
            Some((base, file)) => {
                Self::load_gguf(&ModelSource::parse(&base), &file, device, None, on_event).await
            }
            None => Self::load(&ModelSource::parse(model), device, on_event).await,
        }
    }

    /// The session over `loaded`, with the device's matmul calibrated ([`crate::kernels::prepare`])
    /// so that evaluations before any training (the base model's scores) already run the faster
    /// one.
    async fn from_loaded(
        loaded: model::LoadedModel,
        device: Device,
        source: String,
        on_event: &mut dyn FnMut(&Event),
    ) -> Self {
        crate::kernels::prepare(&device, crate::kernels::Kernels::Tunelab, on_event).await;
        Session {
            device,
            model: loaded.model,
            config: loaded.config,
            tokenizer: loaded.tokenizer,
            checkpoint: loaded.checkpoint,
            source: source.trim_end_matches('/').to_string(),
            config_json: loaded.config_json,
            extra_files: loaded.extra_files,
        }
    }

    /// A session over a model built in memory (pretraining's random initialisation): its
    /// `config.json` text and tokenizer file, which become the checkpoint's files.
    pub fn from_model(
        model: CausalLm,
        device: Device,
        config_json: &str,
        tokenizer_json: Vec<u8>,
        source: &str,
    ) -> Result<Self> {
        Ok(Session {
            config: ModelConfig::parse(config_json, "config.json")?,
            tokenizer: Some(Tokenizer::from_bytes(&tokenizer_json, "tokenizer.json")?),
            checkpoint: CheckpointSummary::default(),
            source: source.to_string(),
            config_json: config_json.to_string(),
            extra_files: vec![File::new("tokenizer.json", tokenizer_json)],
            model,
            device,
        })
    }

    /// Attach a PEFT adapter (read from `fetch`) to the model, freezing the base.
    pub async fn attach_adapter(
        &mut self,
        fetch: &impl Fetch,
    ) -> Result<crate::model::lora::LoraConfig> {
        let adapter = crate::model::lora::read_peft(fetch).await?;
        crate::model::lora::from_peft(
            &mut self.model,
            &adapter,
            &fetch.locate("adapter_config.json"),
            &self.device,
        )
    }

    /// The model's chat template, or an error naming the model when it has none (generation
    /// then runs without chat formatting).
    pub fn require_chat_template(&self) -> Result<ChatTemplate> {
        self.chat_template()?.ok_or_else(|| {
            crate::Error::Input(format!(
                "{} has no chat template: generate without chat formatting",
                self.source
            ))
        })
    }

    /// The model's chat template (from its `tokenizer_config.json`), if it has one.
    pub fn chat_template(&self) -> Result<Option<ChatTemplate>> {
        match self
            .extra_files
            .iter()
            .find(|f| f.name == "tokenizer_config.json")
        {
            Some(f) => Ok(ChatTemplate::from_tokenizer_config(
                &f.bytes,
                &format!("{}/tokenizer_config.json", self.source),
            )?),
            None => Ok(None),
        }
    }

    /// The session's model as evaluation sees it.
    pub fn view(&self) -> LmView<'_> {
        self.view_of(&self.model)
    }

    /// Another model of the same architecture (a run's tuned model) with this session's
    /// config, tokenizer and device.
    pub fn view_of<'a>(&'a self, model: &'a CausalLm) -> LmView<'a> {
        LmView {
            model,
            config: &self.config,
            tokenizer: self.tokenizer.as_ref(),
            device: &self.device,
            source: &self.source,
        }
    }

    /// The tokenizer, or an error saying the model has none.
    pub fn tokenizer(&self) -> Result<&Tokenizer> {
        self.view().tokenizer()
    }

    /// Full logits `[len, vocab]` (row-major) for one sequence of token ids.
    pub async fn logits(&self, ids: &[u32]) -> Result<Vec<f32>> {
        self.view().logits(ids).await
    }

    /// Mean next-token NLL and perplexity of `text`.
    pub async fn score_text(&self, text: &str) -> Result<Score> {
        perplexity::score_text(&self.view(), text).await
    }

    /// Mean next-token NLL and perplexity of token ids (long inputs are windowed).
    pub async fn score_ids(&self, ids: &[u32]) -> Result<Score> {
        let lm = self.view();
        perplexity::score_ids(lm.model, ids, lm.vocab(), lm.context(), lm.device).await
    }

    /// Continue `prompt`, emitting `Event::Token` for each piece of text as it is decoded.
    /// Returns the generated text.
    pub async fn generate(
        &self,
        prompt: &str,
        opts: &GenerateOptions,
        on_event: &mut dyn FnMut(&Event),
    ) -> Result<String> {
        generate::stream_text(&self.view(), prompt, opts, on_event).await
    }

    /// Answer `prompt` as a user turn through the model's chat template, stopping at the
    /// template's end-of-turn token. Returns the rendered prompt and the answer.
    pub async fn chat(
        &self,
        prompt: &str,
        opts: &GenerateOptions,
        on_event: &mut dyn FnMut(&Event),
    ) -> Result<(String, String)> {
        let template = self.require_chat_template()?;
        generate::stream_chat(&self.view(), &template, prompt, opts, on_event).await
    }

    /// The model (with any attached adapter merged in) as a Hugging Face checkpoint, with the
    /// tokenizer and generation files it came with.
    pub async fn merged_files(&self) -> Result<Vec<File>> {
        crate::export::merged_files(&self.model, &self.config_json, &self.extra_files).await
    }
}
