//! The library's one entry point for shells: a loaded model on a device, and what can be done
//! with it. The CLI and the web page are thin layers over this.

use burn::tensor::Device;

use crate::error::{Error, Result};
use crate::eval::generate::{self, GenerateOptions};
use crate::eval::perplexity::{self, Score};
use crate::event::Event;
use crate::hf::{CheckpointSummary, Fetch, ModelConfig, Tokenizer};
use crate::model::{self, CausalLm, ids_tensor, read_f32};

/// A model loaded on a device.
pub struct Session {
    pub device: Device,
    pub model: CausalLm,
    pub config: ModelConfig,
    pub tokenizer: Option<Tokenizer>,
    pub checkpoint: CheckpointSummary,
    /// Where the model came from (path or URL).
    pub source: String,
    /// `config.json` as written.
    pub config_json: String,
    /// Tokenizer and generation files that came with the model.
    pub extra_files: Vec<crate::export::File>,
}

impl Session {
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
        Ok(Session {
            device,
            model: loaded.model,
            config: loaded.config,
            tokenizer: loaded.tokenizer,
            checkpoint: loaded.checkpoint,
            source: fetch.locate(""),
            config_json: loaded.config_json,
            extra_files: loaded.extra_files,
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

    /// The tokenizer, or an error saying the model has none.
    pub fn tokenizer(&self) -> Result<&Tokenizer> {
        self.tokenizer.as_ref().ok_or_else(|| {
            Error::Input(format!(
                "{} has no tokenizer.json; pass token ids instead of text",
                self.source
            ))
        })
    }

    /// Full logits `[len, vocab]` (row-major) for one sequence of token ids.
    pub async fn logits(&self, ids: &[u32]) -> Result<Vec<f32>> {
        self.check_len(ids.len())?;
        let input = ids_tensor(ids, self.config.vocab_size(), &self.device)?;
        read_f32(self.model.forward(input, None)).await
    }

    /// Mean next-token NLL and perplexity of `text`.
    pub async fn score_text(&self, text: &str) -> Result<Score> {
        let ids = self.tokenizer()?.encode(text)?;
        self.score_ids(&ids).await
    }

    /// Mean next-token NLL and perplexity of token ids (long inputs are windowed).
    pub async fn score_ids(&self, ids: &[u32]) -> Result<Score> {
        perplexity::score_ids(
            &self.model,
            ids,
            self.config.vocab_size(),
            self.config.max_positions(),
            &self.device,
        )
        .await
    }

    /// Continue `prompt`, emitting `Event::Token` for each piece of text as it is decoded.
    /// Returns the generated text.
    pub async fn generate(
        &self,
        prompt: &str,
        opts: &GenerateOptions,
        on_event: &mut dyn FnMut(&Event),
    ) -> Result<String> {
        let tok = self.tokenizer()?;
        let ids = tok.encode(prompt)?;
        let mut opts = opts.clone();
        if opts.stop_id.is_none() {
            opts.stop_id = tok.eos_id;
        }
        let mut generated: Vec<u32> = Vec::new();
        let mut shown = String::new();
        let mut decode_err = None;
        generate::generate(
            &self.model,
            &ids,
            self.config.vocab_size(),
            self.config.max_positions(),
            &self.device,
            &opts,
            |id| {
                generated.push(id);
                // Decode the whole continuation so multi-token characters come out whole.
                match tok.decode(&generated) {
                    Ok(text) => {
                        if text.len() > shown.len() && text.starts_with(&shown) {
                            on_event(&Event::Token {
                                text: text[shown.len()..].to_string(),
                            });
                            shown = text;
                        }
                    }
                    Err(e) => decode_err = Some(e),
                }
                true
            },
        )
        .await?;
        if let Some(e) = decode_err {
            return Err(e.into());
        }
        Ok(tok.decode(&generated)?)
    }

    fn check_len(&self, len: usize) -> Result<()> {
        let max = self.config.max_positions();
        if len == 0 {
            return Err(Error::Input("no tokens given".into()));
        }
        if len > max {
            return Err(Error::Input(format!(
                "{len} tokens exceed the model's context of {max} (max_position_embeddings)"
            )));
        }
        Ok(())
    }
}
