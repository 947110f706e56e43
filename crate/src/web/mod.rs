//! The browser entry points (wasm-bindgen): a thin shell over [`Session`], meant to run inside a
//! Web Worker so GPU work never blocks the page. All readbacks are asynchronous.

use std::io::Cursor;

use burn::tensor::Device;
use js_sys::{Function, Uint8Array};
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;

use crate::event::Event;
use crate::hf::{Fetch, HfError, Opened};
use crate::session::Session;

/// Install the panic hook and a console logger, so cubecl's WGSL errors (reported through
/// `log::error!`) and panics reach the browser console.
#[wasm_bindgen(start)]
pub fn start() {
    console_error_panic_hook::set_once();
    let _ = console_log::init_with_level(log::Level::Warn);
}

/// Files fetched from a base URL with the browser's `fetch`.
pub struct WebFetch {
    base: String,
}

impl WebFetch {
    /// Resolve files relative to `base` (a trailing `/` is added if missing).
    pub fn new(base: &str) -> Self {
        let mut base = base.to_string();
        if !base.ends_with('/') {
            base.push('/');
        }
        WebFetch { base }
    }
}

async fn fetch_bytes(url: &str, name: &str) -> Result<Vec<u8>, HfError> {
    let connect = |message: String| HfError::HttpConnect {
        file: name.to_string(),
        url: url.to_string(),
        message,
    };
    let global = js_sys::global();
    let fetch: Function = js_sys::Reflect::get(&global, &"fetch".into())
        .map_err(|_| connect("no fetch() in this context".into()))?
        .unchecked_into();
    let promise: js_sys::Promise = fetch
        .call1(&global, &url.into())
        .map_err(|e| connect(format!("{e:?}")))?
        .unchecked_into();
    let response: web_sys::Response = JsFuture::from(promise)
        .await
        .map_err(|e| connect(format!("{e:?}")))?
        .unchecked_into();
    if !response.ok() {
        return Err(HfError::HttpStatus {
            file: name.to_string(),
            url: url.to_string(),
            status: response.status(),
        });
    }
    let buffer = JsFuture::from(
        response
            .array_buffer()
            .map_err(|e| connect(format!("{e:?}")))?,
    )
    .await
    .map_err(|e| connect(format!("{e:?}")))?;
    Ok(Uint8Array::new(&buffer).to_vec())
}

impl Fetch for WebFetch {
    async fn open(&self, name: &str) -> Result<Opened, HfError> {
        let bytes = fetch_bytes(&self.locate(name), name).await?;
        let len = Some(bytes.len() as u64);
        Ok(Opened {
            reader: Box::new(Cursor::new(bytes)),
            len,
        })
    }

    fn locate(&self, name: &str) -> String {
        format!("{}{name}", self.base)
    }
}

/// A model loaded on the browser's GPU.
#[wasm_bindgen]
pub struct WebSession {
    inner: Session,
}

fn js_err(e: impl std::fmt::Display) -> JsValue {
    JsValue::from(js_sys::Error::new(&e.to_string()))
}

/// Start WebGPU (with the adapter's own limits) and load the model at `base_url`.
/// `on_event` receives each progress event as a plain object.
#[wasm_bindgen(js_name = loadModel)]
pub async fn load_model(base_url: String, on_event: Function) -> Result<WebSession, JsValue> {
    let device: Device = Device::wgpu_options()
        .init_async()
        .await
        .map_err(|e| js_err(format!("WebGPU is not available: {e}")))?;
    let fetch = WebFetch::new(&base_url);
    let mut emit = |e: &Event| {
        if let Ok(v) = serde_wasm_bindgen::to_value(e) {
            let _ = on_event.call1(&JsValue::NULL, &v);
        }
    };
    let inner = Session::load(&fetch, device, &mut emit)
        .await
        .map_err(js_err)?;
    Ok(WebSession { inner })
}

#[wasm_bindgen]
impl WebSession {
    /// Logits `[tokens.length, vocab]`, row-major.
    pub async fn logits(&self, tokens: Vec<u32>) -> Result<Vec<f32>, JsValue> {
        self.inner.logits(&tokens).await.map_err(js_err)
    }

    /// Mean next-token NLL, perplexity and token count of `text`.
    #[wasm_bindgen(js_name = scoreText)]
    pub async fn score_text(&self, text: String) -> Result<JsValue, JsValue> {
        let score = self.inner.score_text(&text).await.map_err(js_err)?;
        serde_wasm_bindgen::to_value(&score).map_err(js_err)
    }

    /// Fine-tune the loaded model on plain `text` (packed into `seq_len`-token blocks) with
    /// `config` (the fields of `TrainConfig`), calling `on_event` with every event (steps, loss).
    /// The trained model replaces the session's model. Returns `{summary, files}` where `files`
    /// maps file names of the final checkpoint (PEFT adapter or HF checkpoint) to bytes.
    pub async fn train(
        &mut self,
        config: JsValue,
        text: String,
        seq_len: usize,
        on_event: Function,
    ) -> Result<JsValue, JsValue> {
        use crate::export::MemorySink;
        use crate::train::data::{self, DataOptions, Regime};
        use crate::train::{TrainConfig, Trainer};
        use burn::module::Module;

        let config: TrainConfig = serde_wasm_bindgen::from_value(config)
            .map_err(|e| js_err(format!("training settings: {e}")))?;
        let tok = self.inner.tokenizer().map_err(js_err)?;
        let opts = DataOptions {
            regime: Regime::Cpt,
            seq_len,
            skip_bad_lines: false,
            pad_id: tok.eos_id.unwrap_or(0),
        };
        let data = data::read(
            std::io::Cursor::new(text.as_bytes()),
            "training text",
            false,
            tok,
            &opts,
        )
        .map_err(js_err)?;
        let device = self.inner.device.clone().autodiff();
        let mut trainer = Trainer::new(
            self.inner.model.clone().train(),
            device,
            config,
            self.inner.config_json.clone(),
            self.inner.extra_files.clone(),
            self.inner.source.clone(),
            None,
        )
        .map_err(js_err)?;
        let mut sink = MemorySink::default();
        let mut emit = |e: &Event| {
            if let Ok(v) = serde_wasm_bindgen::to_value(e) {
                let _ = on_event.call1(&JsValue::NULL, &v);
            }
        };
        let summary = trainer
            .run(&data, None, &mut sink, &mut emit)
            .await
            .map_err(js_err)?;
        self.inner.model = trainer.model.valid();
        let files = js_sys::Object::new();
        if let Some(last) = sink.checkpoints.last() {
            for (name, bytes) in &last.files {
                js_sys::Reflect::set(&files, &name.into(), &Uint8Array::from(&bytes[..]))?;
            }
        }
        let out = js_sys::Object::new();
        js_sys::Reflect::set(
            &out,
            &"summary".into(),
            &serde_wasm_bindgen::to_value(&summary).map_err(js_err)?,
        )?;
        js_sys::Reflect::set(&out, &"files".into(), &files)?;
        Ok(out.into())
    }

    /// Vocabulary size.
    #[wasm_bindgen(getter, js_name = vocabSize)]
    pub fn vocab_size(&self) -> usize {
        self.inner.config.vocab_size()
    }

    /// The parsed `config.json` as an object.
    #[wasm_bindgen(getter)]
    pub fn config(&self) -> JsValue {
        serde_wasm_bindgen::to_value(&self.inner.config).unwrap_or(JsValue::NULL)
    }
}
