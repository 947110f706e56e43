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
