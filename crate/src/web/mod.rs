//! The browser entry points (wasm-bindgen): a thin shell over [`Session`] and [`Run`], meant to
//! run inside a Web Worker so GPU work never blocks the page. All readbacks are asynchronous.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use burn::tensor::Device;
use burn::tensor::wgpu::{WgpuSetup, wgpu};
use js_sys::{Function, Uint8Array};
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use web_sys::{
    Blob, Headers, ReadableStream, ReadableStreamDefaultReader, ReadableStreamReadResult,
    RequestInit, Response, WorkerGlobalScope,
};

use crate::eval::generate::{GenerateOptions, stream_chat, stream_text};
use crate::event::Event;
use crate::experiment::config::Forgetting;
use crate::experiment::evaluate::{
    EvalSpec, ForgettingData, evaluate, forgetting_tasks, target_eval,
};
use crate::files::File;
use crate::hf::source::{Body, Chunk, HttpResponse, Reopen, Request, open_url};
use crate::hf::{Fetch, HfError, Opened};
use crate::run::{DataSource, ExportKind, Prepared, Run, RunSpec, prepare_data, prepare_stream};
use crate::session::Session;
use crate::train::MemorySink;
use crate::train::data::Dataset;
use crate::train::resume::Resume;
use crate::train::trainer::evaluate_loss;

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
    /// A Hugging Face token and the Hub endpoint it is sent to, alone (held in the worker's
    /// memory, never stored).
    token: Option<(String, String)>,
}

impl WebFetch {
    /// Resolve files relative to `base` (a trailing `/` is added if missing).
    pub fn new(base: &str, token: Option<(String, String)>) -> Self {
        let mut base = base.to_string();
        if !base.ends_with('/') {
            base.push('/');
        }
        WebFetch { base, token }
    }
}

/// `fetch(url)` (the worker's own, so its cache applies), with a `Range` header from byte
/// `from` when resuming and the token as a bearer token when given.
async fn fetch_response(url: &str, from: u64, token: Option<&str>) -> Result<Response, String> {
    let scope: WorkerGlobalScope = js_sys::global()
        .dyn_into()
        .map_err(|_| "the engine runs in a Web Worker, and this is none".to_string())?;
    let headers = Headers::new().map_err(js_message)?;
    if from > 0 {
        headers
            .set("Range", &format!("bytes={from}-"))
            .map_err(js_message)?;
    }
    if let Some(t) = token {
        headers
            .set("Authorization", &format!("Bearer {t}"))
            .map_err(js_message)?;
    }
    let init = RequestInit::new();
    init.set_headers(&headers);
    let promise = scope.fetch_with_str_and_init(url, &init);
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

/// The `Content-Length` of a response, when it states one.
fn content_length(response: &Response) -> Option<u64> {
    let headers = response.headers();
    let header = |name: &str| headers.get(name).ok().flatten();
    // A compressed transfer states the compressed size, but the body yields decoded bytes.
    if header("content-encoding").is_some_and(|e| e != "identity") {
        return None;
    }
    header("content-length")?.parse().ok()
}

/// A stream (a response body, or a file's bytes) read chunk by chunk as it arrives, never whole
/// in memory; `name` names it in errors.
struct WebReader {
    reader: ReadableStreamDefaultReader,
    name: String,
}

impl WebReader {
    fn new(stream: &ReadableStream, name: &str) -> Self {
        WebReader {
            reader: stream.get_reader().unchecked_into(),
            name: name.to_string(),
        }
    }

    /// The next chunk: `Ok(None)` at the end.
    async fn read(&self) -> Result<Option<Vec<u8>>, String> {
        let result: ReadableStreamReadResult = JsFuture::from(self.reader.read())
            .await
            .map_err(js_message)?
            .unchecked_into();
        if result.get_done().unwrap_or(false) {
            return Ok(None);
        }
        Ok(Some(
            result.get_value().unchecked_into::<Uint8Array>().to_vec(),
        ))
    }
}

impl Body for WebReader {
    fn next_chunk(&mut self) -> Chunk<'_> {
        Box::pin(async move {
            self.read().await.map_err(|message| HfError::Io {
                file: self.name.clone(),
                message,
            })
        })
    }
}

/// A body that is never read: the answer to a request that failed with an error status.
struct Unread;

impl Body for Unread {
    fn next_chunk(&mut self) -> Chunk<'_> {
        Box::pin(std::future::ready(Ok(None)))
    }
}

/// A URL fetched with the worker's `fetch`, with a bearer token for the Hub.
struct WebUrl(String, Option<String>);

impl Reopen for WebUrl {
    fn open_at(&self, from: u64) -> Request<'_> {
        Box::pin(async move {
            let response = fetch_response(&self.0, from, self.1.as_deref()).await?;
            let status = response.status();
            let len = content_length(&response);
            // An error status is reported without its body ever being read.
            let body: Box<dyn Body> = match response.body() {
                Some(stream) if response.ok() => Box::new(WebReader::new(&stream, &self.0)),
                None if response.ok() => return Err("the response has no body".into()),
                _ => Box::new(Unread),
            };
            Ok(HttpResponse { status, len, body })
        })
    }
}

impl Fetch for WebFetch {
    async fn open(&self, name: &str) -> Result<Opened, HfError> {
        let url = self.locate(name);
        // The token goes to the Hub only, never to another host the page loads from.
        let token = self
            .token
            .as_ref()
            .filter(|(_, endpoint)| crate::hf::hub::same_origin(&url, endpoint))
            .map(|(t, _)| t.clone());
        open_url(WebUrl(url.clone(), token), &url, name).await
    }

    fn locate(&self, name: &str) -> String {
        format!("{}{name}", self.base)
    }
}

/// The size of the engine's wasm memory in bytes (it only grows: the most it ever needed).
fn heap_bytes() -> f64 {
    let memory: js_sys::WebAssembly::Memory = wasm_bindgen::memory().unchecked_into();
    memory
        .buffer()
        .unchecked_into::<js_sys::ArrayBuffer>()
        .byte_length() as f64
}

/// A model loaded on the browser's GPU, with the training data and the run of the lab page.
/// Calls must not overlap (the worker serialises them).
#[wasm_bindgen]
pub struct WebSession {
    /// The base model.
    inner: Session,
    data: Option<Dataset>,
    /// The examples the spec's `holdout` set aside: scored as the learning metric on any data.
    held_out: Option<Dataset>,
    run: Option<Run>,
}

fn js_err(e: impl std::fmt::Display) -> JsValue {
    JsValue::from(js_sys::Error::new(&e.to_string()))
}

/// A library error as a JavaScript `Error` whose `field` property names the setting at fault
/// (the page puts its own label there; the message names it in backticks). A failed readback
/// or a device fault marks the device lost and sets `device: true`: the models on it are
/// unusable, and the worker loads the next one on a fresh device.
fn lib_err(e: crate::Error) -> JsValue {
    let err = js_sys::Error::new(&e.to_string());
    match &e {
        crate::Error::Setting { field, .. } => {
            let _ = js_sys::Reflect::set(&err, &"field".into(), &(*field).into());
        }
        crate::Error::Readback(_) | crate::Error::DeviceFault { .. } => {
            mark_gpu_lost();
            let _ = js_sys::Reflect::set(&err, &"device".into(), &true.into());
        }
        _ => {}
    }
    err.into()
}

/// A run spec from the page: the fields its form sets; the rest take [`RunSpec`]'s defaults.
fn spec_from(value: JsValue) -> Result<RunSpec, JsValue> {
    let spec: RunSpec = serde_wasm_bindgen::from_value(value)
        .map_err(|e| js_err(format!("training settings: {e}")))?;
    spec.validate().map_err(lib_err)?;
    Ok(spec)
}

/// `spec` (the fields the page sets) with every other field at its `RunSpec` default, or an error
/// naming the field at fault.
#[wasm_bindgen(js_name = validateRunSpec)]
pub fn validate_run_spec(spec: JsValue) -> Result<JsValue, JsValue> {
    to_js(&spec_from(spec)?)
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

/// Files from an object of name → `Uint8Array` (the shape [`files_object`] gives them).
fn files_from(object: &JsValue) -> Result<Vec<File>, JsValue> {
    let entries = js_sys::Object::entries(
        object
            .dyn_ref()
            .ok_or_else(|| js_err("files: not an object"))?,
    );
    entries
        .iter()
        .map(|entry| {
            let pair: js_sys::Array = entry.unchecked_into();
            let name = pair.get(0).as_string().unwrap_or_default();
            let bytes = pair
                .get(1)
                .dyn_into::<Uint8Array>()
                .map_err(|_| js_err(format!("{name}: not a Uint8Array")))?;
            Ok(File::new(name, bytes.to_vec()))
        })
        .collect()
}

fn files_object(files: &[File]) -> Result<JsValue, JsValue> {
    let out = js_sys::Object::new();
    for f in files {
        js_sys::Reflect::set(
            &out,
            &f.name.as_str().into(),
            &Uint8Array::from(&f.bytes[..]),
        )?;
    }
    Ok(out.into())
}

/// The worker's WebGPU device and whether it was lost (destroyed, reset by the browser, or a
/// readback on it failed).
struct Gpu {
    device: Device,
    lost: Arc<AtomicBool>,
}

thread_local! {
    /// The worker's WebGPU device: started on first use, shared by every model it loads, and
    /// replaced by a fresh one on the first use after it was lost.
    static GPU: std::cell::RefCell<Option<Gpu>> = const { std::cell::RefCell::new(None) };
}

/// The worker's WebGPU device, started with the adapter's own limits on first use and again
/// after the previous one was lost (a lost `GPUDevice` never comes back; a new one must be
/// requested from a new adapter).
async fn gpu() -> Result<Device, JsValue> {
    let live = GPU.with(|g| {
        g.borrow()
            .as_ref()
            .filter(|g| !g.lost.load(Ordering::Relaxed))
            .map(|g| g.device.clone())
    });
    if let Some(device) = live {
        return Ok(device);
    }
    let setup = request_setup()
        .await
        .map_err(|e| js_err(format!("WebGPU is not available: {e}")))?;
    let lost = Arc::new(AtomicBool::new(false));
    let flag = lost.clone();
    setup
        .device
        .set_device_lost_callback(move |reason, message| {
            flag.store(true, Ordering::Relaxed);
            log::warn!("the WebGPU device was lost ({reason:?}): {message}");
        });
    // Each registration is a runtime of its own, so a replacement never meets the lost one.
    let device = Device::wgpu_options()
        .setup(setup)
        .init()
        .map_err(|e| js_err(format!("WebGPU is not available: {e}")))?;
    GPU.with(|g| {
        *g.borrow_mut() = Some(Gpu {
            device: device.clone(),
            lost,
        })
    });
    Ok(device)
}

/// A WebGPU adapter (high-performance preference) and a device on it with the adapter's own
/// features and limits: what burn's wgpu runtime requests for itself on the WGSL path.
async fn request_setup() -> Result<WgpuSetup, String> {
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
        backends: wgpu::Backends::BROWSER_WEBGPU,
        ..wgpu::InstanceDescriptor::new_without_display_handle()
    });
    let adapter = instance
        .request_adapter(&wgpu::RequestAdapterOptions {
            power_preference: wgpu::PowerPreference::HighPerformance,
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    let (device, queue) = adapter
        .request_device(&wgpu::DeviceDescriptor {
            label: Some("tunelab"),
            required_features: adapter
                .features()
                .difference(wgpu::Features::MAPPABLE_PRIMARY_BUFFERS),
            required_limits: adapter.limits(),
            // The runtime pools its allocations itself.
            memory_hints: wgpu::MemoryHints::MemoryUsage,
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    Ok(WgpuSetup {
        instance,
        adapter,
        device,
        queue,
        backend: wgpu::Backend::BrowserWebGpu,
    })
}

/// Mark the worker's device lost, so the next model loads on a fresh one.
fn mark_gpu_lost() {
    GPU.with(|g| {
        if let Some(g) = g.borrow().as_ref() {
            g.lost.store(true, Ordering::Relaxed);
        }
    });
}

/// Whether the worker's WebGPU device was lost: every model on it is gone, and the next load
/// requests a fresh device.
#[wasm_bindgen(js_name = gpuLost)]
pub fn gpu_lost() -> bool {
    GPU.with(|g| {
        g.borrow()
            .as_ref()
            .is_some_and(|g| g.lost.load(Ordering::Relaxed))
    })
}

/// The URL a model named `model` loads from: a Hub id (`org/name[@revision]`, optionally
/// `/file.gguf`) becomes its `resolve/<revision>/` URL at `endpoint` (empty: the public Hub);
/// anything else is returned unchanged.
#[wasm_bindgen(js_name = resolveModelUrl)]
pub fn resolve_model_url(model: &str, endpoint: &str) -> String {
    crate::hf::hub::resolve_url(model, hub_endpoint(endpoint))
}

/// Time each hot-path op alone at the shape of benchmark preset `preset` (`small`, `medium`,
/// `smollm2-135m`) with a batch of `batch × seq` tokens, `reps` timed calls each, tunelab's WGSL
/// kernels and then burn's ([`crate::bench::ops`]): one object per op and kernel set, as
/// `tunelab bench --ops --json` prints them. A shape whose largest buffer exceeds `max_binding`
/// (the adapter's `maxStorageBufferBindingSize`) is refused first. `on_event` receives progress
/// events.
#[wasm_bindgen(js_name = benchOps)]
pub async fn bench_ops(
    preset: String,
    batch: usize,
    seq: usize,
    reps: usize,
    max_binding: f64,
    on_event: Function,
) -> Result<JsValue, JsValue> {
    use crate::kernels::Kernels;
    let device = gpu().await?;
    let mut emit = emitter(&on_event);
    let (config, model) = crate::bench::model(&preset, &device, &mut emit)
        .await
        .map_err(lib_err)?;
    // burn's kernels run too, with their logits and attention scores.
    let step = crate::train::StepShape {
        batch,
        seq,
        kernels: Kernels::Burn,
    };
    crate::train::trainer::check_buffer_limit(&config, &step, max_binding as u64)
        .map_err(lib_err)?;
    let kernels = [Kernels::Tunelab, Kernels::Burn];
    let results = crate::bench::ops::run(
        model, &config, &preset, &device, "webgpu", batch, seq, reps, &kernels, &mut emit,
    )
    .await
    .map_err(lib_err)?;
    to_js(&results)
}

fn hub_endpoint(endpoint: &str) -> &str {
    match endpoint.trim() {
        "" => crate::hf::hub::DEFAULT_ENDPOINT,
        e => e,
    }
}

/// Start WebGPU (with the adapter's own limits) and load the model at `base_url` (a Hugging Face
/// base URL, or a `.gguf` file's URL), streaming
/// each shard onto the GPU as it downloads. `max_binding` is the adapter's
/// `maxStorageBufferBindingSize`: a model with a larger tensor is refused, naming it, before
/// that shard's data is read. `on_event` receives each progress event as a plain object.
/// `token` (optional) is sent as a bearer token, for gated or private models, to the Hub at
/// `endpoint` (empty: the public Hub) and to no other host. `f16` keeps the weight matrices in
/// f16 ([`Session::store_weights_in_f16`]); an adapter without `shader-f16` refuses it before
/// anything downloads.
#[wasm_bindgen(js_name = loadModel)]
pub async fn load_model(
    base_url: String,
    max_binding: f64,
    on_event: Function,
    token: Option<String>,
    endpoint: Option<String>,
    f16: Option<bool>,
) -> Result<WebSession, JsValue> {
    let device = gpu().await?;
    let f16 = f16.unwrap_or(false);
    if f16 && let Some(why) = crate::kernels::f16_unavailable(&device) {
        return Err(js_err(format!("base weights in f16: {why}")));
    }
    let max = Some(max_binding as u64);
    let mut emit = emitter(&on_event);
    let endpoint = hub_endpoint(endpoint.as_deref().unwrap_or(""));
    let token = token
        .filter(|t| !t.is_empty())
        .map(|t| (t, endpoint.to_string()));
    let mut inner = match crate::hf::source::gguf_file(&base_url) {
        Some((base, file)) => {
            let fetch = WebFetch::new(&base, token);
            Session::load_gguf(&fetch, &file, device, max, &mut emit).await
        }
        None => {
            let fetch = WebFetch::new(&base_url, token);
            Session::load_within(&fetch, device, max, &mut emit).await
        }
    }
    .map_err(lib_err)?;
    if f16 {
        inner.store_weights_in_f16().map_err(lib_err)?;
    }
    Ok(WebSession {
        inner,
        data: None,
        held_out: None,
        run: None,
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
    /// Score the held-out examples of the training data (`heldout/loss`, `heldout/perplexity`).
    #[serde(default)]
    held_out: bool,
    #[serde(default)]
    source_chars: Option<usize>,
    #[serde(default)]
    target: Option<EvalSpec>,
    /// Test data of the target: GSM8K-layout JSONL or text.
    #[serde(default)]
    target_test: Option<String>,
}

/// Generation settings from the page ([`GenerateOptions`] by their JavaScript names).
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct GenerateRequest {
    max_new_tokens: usize,
    #[serde(default)]
    temperature: f64,
    #[serde(default = "one")]
    top_p: f64,
    #[serde(default)]
    seed: u64,
    #[serde(default)]
    chat: bool,
}

fn one() -> f64 {
    1.0
}

#[wasm_bindgen]
impl WebSession {
    /// Logits `[tokens.length, vocab]`, row-major.
    pub async fn logits(&self, tokens: Vec<u32>) -> Result<Vec<f32>, JsValue> {
        self.inner.logits(&tokens).await.map_err(lib_err)
    }

    /// Mean next-token NLL, perplexity and token count of `text`.
    #[wasm_bindgen(js_name = scoreText)]
    pub async fn score_text(&self, text: String) -> Result<JsValue, JsValue> {
        let score = self.inner.score_text(&text).await.map_err(lib_err)?;
        to_js(&score)
    }

    /// Tokenize the training data at `url` as it downloads (a dropped connection resumes where
    /// it stopped): a file called `name` (`.txt`, `.jsonl`, either `.gz`, decompressed on the
    /// fly), read as `spec` says (`regime` — detected when absent —, `seq_len`,
    /// `skip_bad_lines`, `holdout`), reporting progress (bytes received and tokenized) to
    /// `on_event`. Only the token ids are kept, never the file. Returns `{examples,
    /// targetTokens, skipped, regime, heldOut}`.
    #[wasm_bindgen(js_name = setDataUrl)]
    pub async fn set_data_url(
        &mut self,
        url: String,
        name: String,
        spec: JsValue,
        on_event: Function,
    ) -> Result<JsValue, JsValue> {
        let opened = open_url(WebUrl(url.clone(), None), &url, &name)
            .await
            .map_err(|e| lib_err(e.into()))?;
        self.prepare_stream(&name, opened.body, opened.len, spec, on_event)
            .await
    }

    /// [`setDataUrl`] for a file the user picked (a `File` or any `Blob`; `name` tells the
    /// format), read from disk as it is tokenized.
    ///
    /// [`setDataUrl`]: WebSession::set_data_url
    #[wasm_bindgen(js_name = setDataFile)]
    pub async fn set_data_file(
        &mut self,
        file: Blob,
        name: String,
        spec: JsValue,
        on_event: Function,
    ) -> Result<JsValue, JsValue> {
        let body = Box::new(WebReader::new(&file.stream(), &name));
        let len = Some(file.size() as u64);
        self.prepare_stream(&name, body, len, spec, on_event).await
    }

    /// Generate GSM8K-layout math problems from `seed` (`train` for training, read as `spec`
    /// says, instruction tuning by default; `test` returned as JSONL for the learning metric).
    #[wasm_bindgen(js_name = setMathData)]
    pub fn set_math_data(
        &mut self,
        train: usize,
        test: usize,
        seed: u32,
        spec: JsValue,
        on_event: Function,
    ) -> Result<JsValue, JsValue> {
        let source = DataSource::Math {
            train,
            test,
            seed: seed.into(),
        };
        self.prepare(source, spec, on_event)
    }

    /// Prepare a run of `spec` (the fields the page sets; the rest default) on the loaded data,
    /// starting from the base model. `max_binding` is the GPU adapter's
    /// `maxStorageBufferBindingSize`: a batch whose largest buffer would exceed it is refused,
    /// saying by how much. Returns `{trainableParameters, totalSteps, spec}` (the spec with every
    /// default filled in).
    #[wasm_bindgen(js_name = startTraining)]
    pub fn start_training(&mut self, spec: JsValue, max_binding: f64) -> Result<JsValue, JsValue> {
        let spec = spec_from(spec)?;
        let data = self.make_room()?;
        let run = Run::new(
            &self.inner,
            &spec,
            data,
            self.held_out.clone(),
            Some(max_binding as u64),
        )
        .map_err(lib_err)?;
        let mut info = self.keep_run(run);
        info["spec"] = serde_json::json!(spec);
        to_js(&info)
    }

    /// Continue a run from a checkpoint the page was given (`files`: an object of file name →
    /// `Uint8Array`, as the checkpoint export gives them; `name` names it in errors) on the
    /// data set with [`setDataUrl`] or [`setDataFile`]: its settings, progress and optimizer state, and for full
    /// fine-tuning its weights. Returns what [`startTraining`] returns, without `spec`.
    ///
    /// [`setDataUrl`]: WebSession::set_data_url
    /// [`setDataFile`]: WebSession::set_data_file
    /// [`startTraining`]: WebSession::start_training
    #[wasm_bindgen(js_name = resumeTraining)]
    pub async fn resume_training(
        &mut self,
        files: JsValue,
        name: String,
        max_binding: f64,
    ) -> Result<JsValue, JsValue> {
        let resume = Resume::from_files(files_from(&files)?, &name).map_err(lib_err)?;
        let data = self.make_room()?;
        let run = Run::resume(
            &self.inner,
            resume,
            data,
            self.held_out.clone(),
            Some(max_binding as u64),
        )
        .await
        .map_err(lib_err)?;
        to_js(&self.keep_run(run))
    }

    /// Train `steps` more optimizer steps (or to the end), streaming events to `on_event`.
    /// Calling it in chunks is how the page pauses, resumes and stops. Returns [`progress`].
    ///
    /// [`progress`]: WebSession::progress
    #[wasm_bindgen(js_name = trainSteps)]
    pub async fn train_steps(
        &mut self,
        steps: usize,
        on_event: Function,
    ) -> Result<JsValue, JsValue> {
        let run = self
            .run
            .as_mut()
            .ok_or_else(|| js_err("start a run first"))?;
        let until = run.progress().step + steps;
        run.train_until(
            Some(until),
            &mut MemorySink::default(),
            &mut emitter(&on_event),
        )
        .await
        .map_err(lib_err)?;
        self.progress()
    }

    /// Where the run stands: `{step, totalSteps, done}` (all zero without a run).
    pub fn progress(&self) -> Result<JsValue, JsValue> {
        let (step, total, done) = self.run.as_ref().map_or((0, 0, true), |r| {
            (r.progress().step, r.total_steps(), r.done())
        });
        to_js(&serde_json::json!({"step": step, "totalSteps": total, "done": done}))
    }

    /// Score the current model (the run's, else the base) on forgetting evals and a target.
    /// Returns the metrics keyed as in `results.json` (`forgetting/score`, `source/perplexity`,
    /// `<target>/<metric>`).
    pub async fn evaluate(&self, request: JsValue, on_event: Function) -> Result<JsValue, JsValue> {
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
        let tasks = forgetting_tasks(&forgetting, &d).map_err(lib_err)?;
        let tok = self.inner.tokenizer().map_err(lib_err)?;
        let target = match (&r.target, &r.target_test) {
            (Some(spec), Some(test)) => {
                // As the page's runs read instruction data (RunSpec's `chat_template`).
                let chat = self.inner.chat_template().map_err(lib_err)?;
                Some(target_eval(spec, test.as_bytes(), tok, chat).map_err(lib_err)?)
            }
            _ => None,
        };
        let mut emit = emitter(&on_event);
        let held_out = self.held_out.as_ref().filter(|_| r.held_out);
        let tuned;
        let (view, batch) = match &self.run {
            Some(run) => {
                tuned = run.model();
                (run.view(&tuned), run.config().batch_size)
            }
            None => (self.inner.view(), 8),
        };
        let mut metrics = evaluate(&view, &tasks, target.as_ref(), batch, &mut emit)
            .await
            .map_err(lib_err)?;
        if let Some(data) = held_out {
            let loss = evaluate_loss(view.model, view.device, data, batch)
                .await
                .map_err(lib_err)?;
            metrics.insert("heldout/loss".into(), loss);
            metrics.insert("heldout/perplexity".into(), loss.exp());
        }
        to_js(&metrics)
    }

    /// Continue `prompt` with the current model (the run's, else the loaded one). `options`:
    /// `{maxNewTokens, temperature (0 = greedy), topP, seed, chat}`; with `chat` the prompt is a
    /// user turn rendered through the model's chat template and generation stops at its end of
    /// turn. Each piece of text goes to `on_event` as `{event: "token", text}` as it is decoded.
    /// Returns `{text, prompt}` (`prompt`: what the model was given).
    pub async fn generate(
        &self,
        prompt: String,
        options: JsValue,
        on_event: Function,
    ) -> Result<JsValue, JsValue> {
        let o: GenerateRequest = serde_wasm_bindgen::from_value(options)
            .map_err(|e| js_err(format!("generation settings: {e}")))?;
        let opts = GenerateOptions {
            max_new_tokens: o.max_new_tokens,
            temperature: o.temperature,
            top_p: o.top_p,
            seed: o.seed,
            stop_id: None,
        };
        opts.validate().map_err(lib_err)?;
        let tuned = self.run.as_ref().map(|run| (run, run.model()));
        let view = match &tuned {
            Some((run, model)) => run.view(model),
            None => self.inner.view(),
        };
        let mut emit = emitter(&on_event);
        let (prompt, text) = if o.chat {
            let template = self.inner.require_chat_template().map_err(lib_err)?;
            stream_chat(&view, &template, &prompt, &opts, &mut emit).await
        } else {
            stream_text(&view, &prompt, &opts, &mut emit)
                .await
                .map(|text| (prompt, text))
        }
        .map_err(lib_err)?;
        to_js(&serde_json::json!({ "text": text, "prompt": prompt }))
    }

    /// Whether the model has a chat template (the page then offers chat-formatted generation).
    #[wasm_bindgen(getter, js_name = hasChatTemplate)]
    pub fn has_chat_template(&self) -> bool {
        matches!(self.inner.chat_template(), Ok(Some(_)))
    }

    /// Files of the run: `adapter` (PEFT, LoRA runs), `merged` (a Hugging Face checkpoint with
    /// the adapter merged in, or the fully fine-tuned weights) or `checkpoint` (with optimizer
    /// state, to resume natively).
    pub async fn export(&self, kind: String) -> Result<JsValue, JsValue> {
        let run = self
            .run
            .as_ref()
            .ok_or_else(|| js_err("no run to export"))?;
        let kind: ExportKind = kind.parse().map_err(lib_err)?;
        files_object(&run.export(kind).await.map_err(lib_err)?)
    }

    /// Rank of the run's weight change per matrix (90% of σ² energy), summarised as
    /// [`crate::analysis::spectrum::SpectrumSummary`] (`rank_by_kind`: kind → `[layer, rank]`).
    pub async fn spectrum(&self) -> Result<JsValue, JsValue> {
        use crate::analysis::spectrum;
        let run = self
            .run
            .as_ref()
            .ok_or_else(|| js_err("no run to analyse"))?;
        let opts = spectrum::SpectrumOptions {
            threshold: 0.9,
            modules: Vec::new(),
            noise_scale: 0.01,
            seed: 0,
        };
        let spectra = run
            .spectrum(&self.inner.model, &opts)
            .await
            .map_err(lib_err)?;
        // The page draws the chart from `rank_by_kind` itself: plotters measures text with a DOM
        // canvas on wasm, and a worker has no DOM.
        to_js(&spectrum::summarize(&spectra, opts.threshold))
    }

    /// What the device's allocator holds now, in bytes: `{inUse, reserved}` (`inUse`: live
    /// tensors: the model, a run's trainable copy, gradients and optimizer state; `reserved`:
    /// the pages the allocator has taken from the device). Null where the backend does not say.
    pub fn memory(&self) -> Result<JsValue, JsValue> {
        match self.inner.device.memory_pool_usage() {
            Some(u) => to_js(&serde_json::json!({
                "inUse": u.bytes_in_use,
                "reserved": u.bytes_reserved,
            })),
            None => Ok(JsValue::NULL),
        }
    }

    /// Forget the run (the base model stays loaded).
    #[wasm_bindgen(js_name = resetTraining)]
    pub fn reset_training(&mut self) {
        self.run = None;
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
    /// The training data set with `setDataUrl`/`setDataFile`/`setMathData`, once the previous run's weights, gradients and
    /// optimizer state are gone and their pages are back with the device, so runs on one model
    /// never stack up.
    fn make_room(&mut self) -> Result<Dataset, JsValue> {
        let data = self
            .data
            .clone()
            .ok_or_else(|| js_err("load training data first"))?;
        self.run = None;
        self.inner.device.memory_cleanup();
        Ok(data)
    }

    /// Keep `run` as the session's run; returns what the page shows of it: `{trainableParameters,
    /// totalSteps, step, config}`.
    fn keep_run(&mut self, run: Run) -> serde_json::Value {
        let info = serde_json::json!({
            "trainableParameters": run.trainable_parameters(),
            "totalSteps": run.total_steps(),
            "step": run.progress().step,
            "config": run.config(),
        });
        self.run = Some(run);
        info
    }

    /// Tokenize `source` as `spec` says and keep it as the next run's data (see [`keep_data`]).
    ///
    /// [`keep_data`]: WebSession::keep_data
    fn prepare(
        &mut self,
        source: DataSource<'_>,
        spec: JsValue,
        on_event: Function,
    ) -> Result<JsValue, JsValue> {
        let spec = spec_from(spec)?;
        let before = heap_bytes();
        let prepared =
            prepare_data(&self.inner, source, &spec, &mut emitter(&on_event)).map_err(lib_err)?;
        self.keep_data(prepared, before)
    }

    /// [`prepare`](WebSession::prepare) for a file `name` whose bytes arrive as `body`.
    async fn prepare_stream(
        &mut self,
        name: &str,
        mut body: Box<dyn Body>,
        len: Option<u64>,
        spec: JsValue,
        on_event: Function,
    ) -> Result<JsValue, JsValue> {
        let spec = spec_from(spec)?;
        let before = heap_bytes();
        let mut emit = emitter(&on_event);
        let prepared = prepare_stream(&self.inner, name, &mut *body, len, &spec, &mut emit)
            .await
            .map_err(lib_err)?;
        self.keep_data(prepared, before)
    }

    /// Keep `prepared` as the next run's data. Returns `{examples, targetTokens, skipped,
    /// regime, heldOut, heap: {before, after}}` (`heap`: the engine's wasm memory in bytes
    /// before and after tokenizing), with `test` (JSONL) for generated math problems.
    fn keep_data(&mut self, prepared: Prepared, heap_before: f64) -> Result<JsValue, JsValue> {
        let Prepared {
            data,
            held_out,
            regime,
            generated,
        } = prepared;
        let mut summary = serde_json::json!({
            "examples": data.examples.len(), "targetTokens": data.target_tokens,
            "skipped": data.skipped_lines, "regime": regime.to_string(),
            "heldOut": held_out.as_ref().map_or(0, |h| h.examples.len()),
            "heap": {"before": heap_before, "after": heap_bytes()},
        });
        if let Some(test) = generated.iter().find(|f| f.name == "test.jsonl") {
            summary["test"] = String::from_utf8_lossy(&test.bytes).into_owned().into();
        }
        self.data = Some(data);
        self.held_out = held_out;
        to_js(&summary)
    }
}
