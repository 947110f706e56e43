//! The browser entry points (wasm-bindgen): a thin shell over [`Session`], meant to run inside a
//! Web Worker so GPU work never blocks the page. All readbacks are asynchronous.

use burn::tensor::Device;
use js_sys::{Function, Uint8Array};
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;

use crate::eval::generate::GenerateOptions;
use crate::event::{Event, ProgressReader};
use crate::experiment::config::Forgetting;
use crate::experiment::evaluate::{
    EvalSpec, ForgettingData, evaluate, forgetting_tasks, math_jsonl, math_training_lines,
    target_eval,
};
use crate::export::{DEFAULT_MAX_SHARD, MemorySink, hf_files, peft_files};
use crate::hf::source::{Body, Chunk, HttpResponse, Reopen, Request, open_url};
use crate::hf::{Fetch, HfError, Opened};
use crate::session::Session;
use crate::train::data::{self, DataOptions, Dataset, Regime};
use crate::train::{Method, TrainConfig, Trainer};
use burn::module::Module;

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

/// `fetch(url)` (the worker's own, so its cache applies), with a `Range` header from byte
/// `from` when resuming.
async fn fetch_response(url: &str, from: u64) -> Result<web_sys::Response, String> {
    let global = js_sys::global();
    let fetch: Function = js_sys::Reflect::get(&global, &"fetch".into())
        .map_err(|_| "no fetch() in this context".to_string())?
        .unchecked_into();
    let call = if from == 0 {
        fetch.call1(&global, &url.into())
    } else {
        let headers = js_sys::Object::new();
        js_sys::Reflect::set(&headers, &"Range".into(), &format!("bytes={from}-").into())
            .map_err(|e| format!("{e:?}"))?;
        let init = js_sys::Object::new();
        js_sys::Reflect::set(&init, &"headers".into(), &headers).map_err(|e| format!("{e:?}"))?;
        fetch.call2(&global, &url.into(), &init)
    };
    let promise: js_sys::Promise = call.map_err(js_message)?.unchecked_into();
    Ok(JsFuture::from(promise)
        .await
        .map_err(js_message)?
        .unchecked_into())
}

/// The message of a thrown JavaScript value.
fn js_message(e: JsValue) -> String {
    match e.dyn_ref::<js_sys::Error>() {
        Some(err) => String::from(err.message()),
        None => format!("{e:?}"),
    }
}

/// A response body's stream reader (`response.body.getReader()`).
fn body_reader(response: &web_sys::Response) -> Result<JsValue, String> {
    // Through Reflect, so web-sys needs no more features (adding some rebuilds wgpu and burn).
    let body = js_sys::Reflect::get(response, &"body".into()).map_err(js_message)?;
    if body.is_null() || body.is_undefined() {
        return Err("the response has no body".into());
    }
    let get_reader: Function = js_sys::Reflect::get(&body, &"getReader".into())
        .map_err(js_message)?
        .unchecked_into();
    get_reader.call0(&body).map_err(js_message)
}

/// The `Content-Length` of a response, when it states one.
fn content_length(response: &web_sys::Response) -> Option<u64> {
    let headers = js_sys::Reflect::get(response, &"headers".into()).ok()?;
    let get: Function = js_sys::Reflect::get(&headers, &"get".into())
        .ok()?
        .unchecked_into();
    let header = |name: &str| get.call1(&headers, &name.into()).ok()?.as_string();
    // A compressed transfer states the compressed size, but the body yields decoded bytes.
    if header("content-encoding").is_some_and(|e| e != "identity") {
        return None;
    }
    header("content-length")?.parse().ok()
}

/// The next `{done, value}` of a stream reader: `Ok(None)` at the end.
async fn read_chunk(reader: &JsValue) -> Result<Option<Vec<u8>>, String> {
    let read: Function = js_sys::Reflect::get(reader, &"read".into())
        .map_err(js_message)?
        .unchecked_into();
    let promise: js_sys::Promise = read.call0(reader).map_err(js_message)?.unchecked_into();
    let result = JsFuture::from(promise).await.map_err(js_message)?;
    let done = js_sys::Reflect::get(&result, &"done".into()).map_err(js_message)?;
    if done.is_truthy() {
        return Ok(None);
    }
    let value = js_sys::Reflect::get(&result, &"value".into()).map_err(js_message)?;
    Ok(Some(value.unchecked_into::<Uint8Array>().to_vec()))
}

/// A response body read chunk by chunk as it arrives (never whole in memory).
struct WebReader {
    reader: JsValue,
    url: String,
}

impl Body for WebReader {
    fn next_chunk(&mut self) -> Chunk<'_> {
        Box::pin(async move {
            read_chunk(&self.reader)
                .await
                .map_err(|message| HfError::Io {
                    file: self.url.clone(),
                    message,
                })
        })
    }
}

/// A URL fetched with the worker's `fetch`.
struct WebUrl(String);

impl Reopen for WebUrl {
    fn open_at(&self, from: u64) -> Request<'_> {
        Box::pin(async move {
            let response = fetch_response(&self.0, from).await?;
            let status = response.status();
            let len = content_length(&response);
            // An error status is reported without its body ever being read.
            let reader = if response.ok() {
                body_reader(&response)?
            } else {
                JsValue::NULL
            };
            let body = Box::new(WebReader {
                reader,
                url: self.0.clone(),
            });
            Ok(HttpResponse { status, len, body })
        })
    }
}

impl Fetch for WebFetch {
    async fn open(&self, name: &str) -> Result<Opened, HfError> {
        let url = self.locate(name);
        open_url(WebUrl(url.clone()), &url, name).await
    }

    fn locate(&self, name: &str) -> String {
        format!("{}{name}", self.base)
    }
}

/// A model loaded on the browser's GPU, with the training data, run and evaluations of the lab
/// page. Calls must not overlap (the worker serialises them).
#[wasm_bindgen]
pub struct WebSession {
    /// The base model (and, while a run's model is being evaluated, that model).
    inner: Session,
    data: Option<Dataset>,
    trainer: Option<Trainer>,
}

fn js_err(e: impl std::fmt::Display) -> JsValue {
    JsValue::from(js_sys::Error::new(&e.to_string()))
}

fn to_js<T: serde::Serialize>(v: &T) -> Result<JsValue, JsValue> {
    // Maps become plain objects, so results read naturally in JavaScript.
    v.serialize(&serde_wasm_bindgen::Serializer::json_compatible())
        .map_err(js_err)
}

/// Call `on_event` with each event as a plain object.
fn emitter(on_event: &Function) -> impl FnMut(&Event) + '_ {
    move |e: &Event| {
        if let Ok(v) = to_js(e) {
            let _ = on_event.call1(&JsValue::NULL, &v);
        }
    }
}

fn files_object(files: &[crate::export::File]) -> Result<JsValue, JsValue> {
    let out = js_sys::Object::new();
    for (name, bytes) in files {
        js_sys::Reflect::set(&out, &name.into(), &Uint8Array::from(&bytes[..]))?;
    }
    Ok(out.into())
}

thread_local! {
    /// The worker's WebGPU device: started once, shared by every model it loads (the runtime
    /// refuses to register a second one for the same adapter).
    static GPU: std::cell::RefCell<Option<Device>> = const { std::cell::RefCell::new(None) };
}

/// The worker's WebGPU device, started on first use with the adapter's own limits.
async fn gpu() -> Result<Device, JsValue> {
    if let Some(device) = GPU.with(|g| g.borrow().clone()) {
        return Ok(device);
    }
    let device: Device = Device::wgpu_options()
        .init_async()
        .await
        .map_err(|e| js_err(format!("WebGPU is not available: {e}")))?;
    GPU.with(|g| *g.borrow_mut() = Some(device.clone()));
    Ok(device)
}

/// Start WebGPU (with the adapter's own limits) and load the model at `base_url`, streaming
/// each shard onto the GPU as it downloads. `max_binding` is the adapter's
/// `maxStorageBufferBindingSize`: a model with a larger tensor is refused, naming it, before
/// that shard's data is read. `on_event` receives each progress event as a plain object.
#[wasm_bindgen(js_name = loadModel)]
pub async fn load_model(
    base_url: String,
    max_binding: f64,
    on_event: Function,
) -> Result<WebSession, JsValue> {
    let device = gpu().await?;
    let fetch = WebFetch::new(&base_url);
    let inner = Session::load_within(
        &fetch,
        device,
        Some(max_binding as u64),
        &mut emitter(&on_event),
    )
    .await
    .map_err(js_err)?;
    Ok(WebSession {
        inner,
        data: None,
        trainer: None,
    })
}

/// What the page asks [`WebSession::evaluate`] to score: forgetting evals (file contents) and
/// optionally one target's learning metric.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct EvalRequest {
    #[serde(default)]
    hellaswag: Option<String>,
    #[serde(default)]
    arc: Option<String>,
    #[serde(default)]
    winogrande: Option<String>,
    #[serde(default)]
    source_text: Option<String>,
    #[serde(default)]
    limit: Option<usize>,
    #[serde(default)]
    source_chars: Option<usize>,
    #[serde(default)]
    target: Option<EvalSpec>,
    /// Test data of the target: GSM8K-layout JSONL or text.
    #[serde(default)]
    target_test: Option<String>,
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
        to_js(&score)
    }

    /// Tokenize training data: the bytes of a file called `name` (`.txt`, `.jsonl`, `.gz`),
    /// read as `regime` (`cpt`, `ift` or `auto`: text → cpt, JSONL with `text` → cpt, else ift)
    /// into `seq_len`-token examples, reporting progress (bytes tokenized) to `on_event`.
    /// Returns `{examples, targetTokens, skipped, regime}`.
    #[wasm_bindgen(js_name = setData)]
    pub fn set_data(
        &mut self,
        bytes: Vec<u8>,
        name: String,
        regime: String,
        seq_len: usize,
        on_event: Function,
    ) -> Result<JsValue, JsValue> {
        let gz = name.ends_with(".gz");
        let bytes = if gz {
            let mut out = Vec::new();
            std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&bytes[..]), &mut out)
                .map_err(|e| js_err(format!("{name}: not valid gzip: {e}")))?;
            out
        } else {
            bytes
        };
        let jsonl = crate::train::data::is_jsonl(std::path::Path::new(&name));
        let regime = match regime.as_str() {
            "auto" => {
                let first = String::from_utf8_lossy(&bytes)
                    .lines()
                    .find(|l| !l.trim().is_empty())
                    .map(str::to_string)
                    .unwrap_or_default();
                let text_field = serde_json::from_str::<serde_json::Value>(&first)
                    .is_ok_and(|v| v.get("text").is_some());
                if !jsonl || text_field {
                    Regime::Cpt
                } else {
                    Regime::Ift
                }
            }
            r => r.parse::<Regime>().map_err(js_err)?,
        };
        let tok = self.inner.tokenizer().map_err(js_err)?;
        let opts = DataOptions {
            regime,
            seq_len,
            skip_bad_lines: false,
            pad_id: tok.eos_id.unwrap_or(0),
        };
        let mut emit = emitter(&on_event);
        let reader = ProgressReader::new(
            &bytes[..],
            &format!("tokenizing {name}"),
            Some(bytes.len() as u64),
            &mut emit,
        );
        let data = data::read(reader, &name, jsonl, tok, &opts).map_err(js_err)?;
        let summary = serde_json::json!({
            "examples": data.examples.len(), "targetTokens": data.target_tokens,
            "skipped": data.skipped_lines, "regime": regime.to_string(),
        });
        self.data = Some(data);
        to_js(&summary)
    }

    /// Generate GSM8K-layout math problems from `seed` (`train` for training, read as `regime`;
    /// `test` returned as JSONL for the learning metric).
    #[wasm_bindgen(js_name = setMathData)]
    pub fn set_math_data(
        &mut self,
        train: usize,
        test: usize,
        seed: u32,
        regime: String,
        seq_len: usize,
        on_event: Function,
    ) -> Result<JsValue, JsValue> {
        let (tr, te) = crate::corpus::math::splits(train, test, seed.into());
        let regime: Regime = regime.parse().map_err(js_err)?;
        let lines = math_training_lines(&tr, regime);
        let summary = self.set_data(
            lines,
            "math.jsonl".into(),
            regime.to_string(),
            seq_len,
            on_event,
        )?;
        js_sys::Reflect::set(
            &summary,
            &"test".into(),
            &String::from_utf8_lossy(&math_jsonl(&te))
                .into_owned()
                .into(),
        )?;
        Ok(summary)
    }

    /// Prepare a run on the loaded data with `config` (the fields of `TrainConfig`), starting from
    /// the base model. `max_binding` is the GPU adapter's `maxStorageBufferBindingSize`: a batch
    /// whose largest buffer would exceed it is refused, saying by how much. Returns
    /// `{trainableParameters, totalSteps}`.
    #[wasm_bindgen(js_name = startTraining)]
    pub fn start_training(
        &mut self,
        config: JsValue,
        max_binding: f64,
    ) -> Result<JsValue, JsValue> {
        let config: TrainConfig = serde_wasm_bindgen::from_value(config)
            .map_err(|e| js_err(format!("training settings: {e}")))?;
        let data = self
            .data
            .as_ref()
            .ok_or_else(|| js_err("load training data first"))?;
        let seq_len = data.examples[0].ids.len();
        crate::train::trainer::check_buffer_limit(
            &self.inner.config,
            config.batch_size,
            seq_len,
            max_binding as u64,
            "batch or sequence length",
        )
        .map_err(js_err)?;
        let device = self.inner.device.clone().autodiff();
        let trainer = Trainer::new(
            self.inner.model.clone().train(),
            device,
            config,
            self.inner.config_json.clone(),
            self.inner.extra_files.clone(),
            self.inner.source.clone(),
            None,
        )
        .map_err(js_err)?;
        let total = trainer.total_steps(data.examples.len(), data.examples[0].ids.len());
        let out = serde_json::json!({"trainableParameters": trainer.trainable_parameters, "totalSteps": total});
        self.trainer = Some(trainer);
        to_js(&out)
    }

    /// Train until optimizer step `step` (or the end), streaming events to `on_event`. Calling
    /// it in chunks is how the page pauses, resumes and stops. Returns `{step, totalSteps,
    /// done}`.
    #[wasm_bindgen(js_name = trainUntil)]
    pub async fn train_until(
        &mut self,
        step: usize,
        on_event: Function,
    ) -> Result<JsValue, JsValue> {
        let data = self
            .data
            .as_ref()
            .ok_or_else(|| js_err("load training data first"))?;
        let trainer = self
            .trainer
            .as_mut()
            .ok_or_else(|| js_err("start a run first"))?;
        let total = trainer.total_steps(data.examples.len(), data.examples[0].ids.len());
        trainer.pause_at = (step < total).then_some(step);
        let mut sink = MemorySink::default();
        trainer
            .run(data, None, &mut sink, &mut emitter(&on_event))
            .await
            .map_err(js_err)?;
        let done = trainer.progress.step >= total;
        to_js(
            &serde_json::json!({"step": trainer.progress.step, "totalSteps": total, "done": done}),
        )
    }

    /// Score the current model (the run's, else the base) on forgetting evals and a target.
    /// Returns the metrics keyed as in `results.json` (`forgetting/score`, `source/perplexity`,
    /// `<target>/<metric>`).
    pub async fn evaluate(
        &mut self,
        request: JsValue,
        on_event: Function,
    ) -> Result<JsValue, JsValue> {
        let r: EvalRequest = serde_wasm_bindgen::from_value(request)
            .map_err(|e| js_err(format!("evaluation request: {e}")))?;
        let forgetting = Forgetting {
            hellaswag: None,
            arc: None,
            winogrande: None,
            perplexity: None,
            limit: r.limit,
            perplexity_chars: r.source_chars,
        };
        let d = ForgettingData {
            hellaswag: r.hellaswag.map(String::into_bytes),
            arc: r.arc.map(String::into_bytes),
            winogrande: r.winogrande.map(String::into_bytes),
            perplexity: r.source_text,
        };
        let tasks = forgetting_tasks(&forgetting, &d).map_err(js_err)?;
        let tok = self.inner.tokenizer().map_err(js_err)?;
        let target = match (&r.target, &r.target_test) {
            (Some(spec), Some(test)) => {
                Some(target_eval(spec, test.as_bytes(), tok).map_err(js_err)?)
            }
            _ => None,
        };
        let mut emit = emitter(&on_event);
        let batch = self.trainer.as_ref().map_or(8, |t| t.config.batch_size);
        let result = self
            .with_current_model(async |s: &Session| {
                evaluate(s, &tasks, target.as_ref(), batch, &mut emit).await
            })
            .await;
        to_js(&result.map_err(js_err)?)
    }

    /// Greedy continuation of `prompt` by the current model (the run's, else the base).
    pub async fn generate(
        &mut self,
        prompt: String,
        max_new_tokens: usize,
    ) -> Result<String, JsValue> {
        let opts = GenerateOptions {
            max_new_tokens,
            temperature: 0.0,
            top_p: 1.0,
            seed: 0,
            stop_id: None,
        };
        self.with_current_model(async |s: &Session| s.generate(&prompt, &opts, &mut |_| {}).await)
            .await
            .map_err(js_err)
    }

    /// Files of the run: `adapter` (PEFT, LoRA runs), `merged` (a Hugging Face checkpoint with
    /// the adapter merged in, or the fully fine-tuned weights) or `checkpoint` (with optimizer
    /// state, to resume natively).
    pub async fn export(&self, kind: String) -> Result<JsValue, JsValue> {
        let trainer = self
            .trainer
            .as_ref()
            .ok_or_else(|| js_err("no run to export"))?;
        let files = match kind.as_str() {
            "adapter" => match &trainer.config.method {
                Method::Lora(l) => peft_files(&trainer.model.valid(), l, &self.inner.source)
                    .await
                    .map_err(js_err)?,
                Method::Full(_) => {
                    return Err(js_err(
                        "a full fine-tuning run has no adapter; export merged weights",
                    ));
                }
            },
            "merged" => {
                let mut model = trainer.model.valid();
                crate::model::lora::merge(&mut model);
                let mut files = hf_files(&model, &self.inner.config_json, DEFAULT_MAX_SHARD)
                    .await
                    .map_err(js_err)?;
                files.extend(self.inner.extra_files.iter().cloned());
                files
            }
            "checkpoint" => trainer.checkpoint_files().await.map_err(js_err)?,
            o => {
                return Err(js_err(format!(
                    "export `{o}`: expected adapter, merged or checkpoint"
                )));
            }
        };
        files_object(&files)
    }

    /// Rank of the run's weight change per matrix (90% of σ² energy), summarised as
    /// [`crate::analysis::spectrum::SpectrumSummary`] (`rank_by_kind`: kind → `[layer, rank]`).
    pub async fn spectrum(&self) -> Result<JsValue, JsValue> {
        use crate::analysis::spectrum;
        let trainer = self
            .trainer
            .as_ref()
            .ok_or_else(|| js_err("no run to analyse"))?;
        let opts = spectrum::SpectrumOptions {
            threshold: 0.9,
            modules: Vec::new(),
            noise_scale: 0.01,
            seed: 0,
        };
        let tuned = trainer.model.valid();
        let spectra = match trainer.config.method {
            Method::Lora(_) => spectrum::adapter_spectra(&tuned, &opts).await,
            Method::Full(_) => {
                spectrum::compare_checkpoints(&self.inner.model, &tuned, &opts).await
            }
        }
        .map_err(js_err)?;
        // The page draws the chart from `rank_by_kind` itself: plotters measures text with a DOM
        // canvas on wasm, and a worker has no DOM.
        to_js(&spectrum::summarize(&spectra, opts.threshold))
    }

    /// Forget the run (the base model stays loaded).
    #[wasm_bindgen(js_name = resetTraining)]
    pub fn reset_training(&mut self) {
        self.trainer = None;
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

impl WebSession {
    /// Run `f` on a session holding the run's model (if there is a run), then put the base back.
    async fn with_current_model<T>(
        &mut self,
        f: impl AsyncFnOnce(&Session) -> crate::Result<T>,
    ) -> crate::Result<T> {
        let Some(trainer) = &self.trainer else {
            return f(&self.inner).await;
        };
        let base = std::mem::replace(&mut self.inner.model, trainer.model.valid());
        let result = f(&self.inner).await;
        self.inner.model = base;
        result
    }
}
