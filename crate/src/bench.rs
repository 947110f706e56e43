//! The training benchmark: tokens/s, achieved FLOP/s and device memory of full fine-tuning and
//! LoRA at a given shape, measured with the real training step ([`Trainer::step`]), so the CLI
//! (`tunelab bench`) and later the page measure exactly what users run.
//!
//! What is counted, and how:
//! - **first step**: wall time of the first optimizer step including the readback of its loss
//!   (on wgpu this is where shaders compile and, with autotune, kernels are tuned);
//! - **tokens/s**: the steps after `warmup` are timed in windows of `window` steps, each ended by
//!   a loss readback (the device is idle at both ends of a window); the median window is reported,
//!   every window is kept in the JSON;
//! - **FLOPs** ([`train_flops`]): matmul FLOPs of one optimizer step counted from the shape, so
//!   the same formula applies to any engine (`scripts/bench_torch.py` uses it too);
//! - **memory**: what the device's allocator reports (`bytes_in_use`, `bytes_reserved`, sampled at
//!   known points of a step) where the backend reports it (wgpu/cubecl), and the process's peak
//!   RSS (the CPU backend's allocations are ordinary heap memory).

pub mod ops;

use web_time::Instant;

use burn::tensor::Device;

use crate::error::{Error, Result};
use crate::event::{Event, Progress};
use crate::hf::{Architecture, ModelConfig};
use crate::kernels::Kernels;
use crate::model::lora::{LoraConfig, LoraInit};
use crate::model::{CausalLm, ParamMut, read_f32};
use crate::train::data::{Batch, Example, collate};
use crate::train::loss::summed_lm_loss;
use crate::train::{FullConfig, Method, TrainConfig, Trainer};

/// Model shapes of the benchmark, as `config.json` text (random weights): `small` and `medium`
/// Llamas, and the shape of SmolLM2-135M. `scripts/bench_torch.py` reads the same files.
pub const PRESETS: &[(&str, &str)] = &[
    ("small", include_str!("../presets/small.json")),
    ("medium", include_str!("../presets/medium.json")),
    ("smollm2-135m", include_str!("../presets/smollm2-135m.json")),
];

/// The `config.json` text of preset `name`.
pub fn preset(name: &str) -> Option<&'static str> {
    PRESETS.iter().find(|p| p.0 == name).map(|p| p.1)
}

/// What trains in one configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BenchMethod {
    /// Every block weight (embeddings and LM head frozen, as `train --method full`).
    Full,
    /// LoRA of this rank on all seven Llama linears (GPT-2: all block linears), alpha = 2r,
    /// dropout 0.
    Lora(usize),
}

impl std::str::FromStr for BenchMethod {
    type Err = String;
    /// `full`, or `lora16` / `lora:16` / `r16` for LoRA of rank 16.
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let s = s.trim();
        if s == "full" {
            return Ok(Self::Full);
        }
        let rank = s
            .strip_prefix("lora")
            .or_else(|| s.strip_prefix('r'))
            .map(|r| r.trim_start_matches([':', '-', '=']));
        match rank.and_then(|r| r.parse::<usize>().ok()) {
            Some(r) if r > 0 => Ok(Self::Lora(r)),
            _ => Err(format!(
                "unknown method `{s}`: expected full or lora<rank> (e.g. lora16)"
            )),
        }
    }
}

impl std::fmt::Display for BenchMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Full => write!(f, "full"),
            Self::Lora(r) => write!(f, "lora{r}"),
        }
    }
}

impl BenchMethod {
    /// The LoRA rank (0 for full fine-tuning, as in the JSON output).
    pub fn rank(&self) -> usize {
        match *self {
            Self::Full => 0,
            Self::Lora(r) => r,
        }
    }

    /// The training method with the benchmark's fixed settings.
    pub fn method(&self) -> Method {
        match *self {
            Self::Full => Method::Full(FullConfig::default()),
            Self::Lora(rank) => Method::Lora(LoraConfig {
                rank,
                alpha: 2.0 * rank as f64,
                dropout: 0.0,
                rslora: false,
                init: LoraInit::Kaiming,
                targets: vec!["all".into()],
            }),
        }
    }
}

/// Batch shape and how long to measure.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchOptions {
    pub batch: usize,
    pub seq: usize,
    /// Timed steps after warm-up (rounded up to whole windows).
    pub steps: usize,
    /// Untimed steps after the first one.
    pub warmup: usize,
    /// Steps per timing window.
    pub window: usize,
    /// Recompute memory-bound activations in the backward pass (see
    /// [`TrainConfig::checkpoint_activations`]); the device must have been made with
    /// [`crate::train::training_device`].
    pub checkpoint_activations: bool,
    /// tunelab's WGSL kernels or burn's (compared on the same device).
    pub kernels: Kernels,
    /// Keep the frozen weight matrices in f16 ([`TrainConfig::frozen_f16`]).
    pub frozen_f16: bool,
    /// Dropout on the attention probabilities ([`TrainConfig::attention_dropout`]).
    pub attention_dropout: f64,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            batch: 8,
            seq: 128,
            steps: 20,
            warmup: 2,
            window: 5,
            checkpoint_activations: false,
            kernels: Kernels::Tunelab,
            frozen_f16: false,
            attention_dropout: 0.0,
        }
    }
}

impl BenchOptions {
    /// Reject settings that cannot be measured, naming the field.
    pub fn validate(&self, config: &ModelConfig) -> Result<()> {
        for (field, v) in [
            ("batch", self.batch),
            ("window", self.window),
            ("steps", self.steps),
        ] {
            if v == 0 {
                return Err(Error::Input(format!("bench: {field} must be at least 1")));
            }
        }
        if self.seq < 2 || self.seq > config.max_positions() {
            return Err(Error::Input(format!(
                "bench: seq must be between 2 and the model's max_position_embeddings ({}), got {}",
                config.max_positions(),
                self.seq
            )));
        }
        Ok(())
    }
}

/// Device memory at known points of a step, in MiB. `None` where the backend does not report
/// its allocator (the CPU backend: see `peak_rss_mib`).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Memory {
    /// Highest `bytes_reserved` seen (the allocator's pages: what the GPU driver counts, less the
    /// context), over the whole configuration.
    pub device_reserved_peak_mib: Option<f64>,
    /// Highest `bytes_in_use` at the sampled points (a lower bound of the true peak, which falls
    /// inside the backward pass).
    pub device_in_use_peak_mib: Option<f64>,
    /// In use before training starts (weights, plus whatever the process held before).
    pub before_mib: Option<f64>,
    /// Growth after the first optimizer step: optimizer state (and the LoRA factors).
    pub optimizer_state_mib: Option<f64>,
    /// Growth from a forward pass with the graph kept: saved activations and logits.
    pub activations_mib: Option<f64>,
    /// Growth while the gradients of one step are held (after backward, before the update).
    pub gradients_mib: Option<f64>,
    /// The process's peak resident memory (Linux; all configurations of the process so far).
    pub peak_rss_mib: Option<f64>,
}

/// Parameter bytes by category, counted from the model (each tensor at its stored precision), in
/// MiB.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ParamMemory {
    pub weights_mib: f64,
    pub trainable_mib: f64,
    /// AdamW's two moments of every trainable parameter.
    pub optimizer_state_mib: f64,
}

/// One measured configuration.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchResult {
    pub engine: String,
    pub device: String,
    pub model: String,
    pub method: String,
    pub rank: usize,
    pub batch: usize,
    pub seq: usize,
    pub checkpoint_activations: bool,
    pub kernels: Kernels,
    /// Frozen weight matrices kept in f16.
    pub frozen_f16: bool,
    pub attention_dropout: f64,
    pub parameters: u64,
    pub trainable_parameters: u64,
    pub first_step_s: f64,
    /// Median over the timing windows.
    pub tokens_per_s: f64,
    pub step_s: f64,
    /// Tokens/s of each timing window, in order.
    pub window_tokens_per_s: Vec<f64>,
    /// Matmul FLOPs of one optimizer step ([`train_flops`]).
    pub flops_per_step: f64,
    pub tflops: f64,
    pub loss_first: f64,
    pub loss_last: f64,
    pub params: ParamMemory,
    pub memory: Memory,
}

/// Matmul FLOPs of one training step of `config` at `batch × seq` tokens, one multiply-add = 2.
///
/// Per token, forward: `2·in·out` for every linear (attention projections, MLP, LM head, tied or
/// not) and `2·2·seq·head_dim` per query head and layer for the attention scores and their
/// product with the values (the full `seq × seq` square, as eager engines compute it, causal mask
/// or not). Backward: `2·in·out` for the input gradient of every linear (always needed below the
/// first trainable layer in practice, and computed by both engines), another `2·in·out` for the
/// weight gradient of trainable linears only, twice the forward for attention. A LoRA adapter of
/// rank r on an `in × out` linear costs `2·r·(in + out)` forward and twice that backward. Norms,
/// activations, softmax and the optimizer are not counted (memory-bound).
pub fn train_flops(config: &ModelConfig, method: BenchMethod, batch: usize, seq: usize) -> f64 {
    let s = Shape::of(config);
    let tokens = (batch * seq) as f64;
    let block_fwd = s.block_fwd();
    let (block_bwd, lora) = match method {
        BenchMethod::Full => (2.0 * block_fwd, 0.0),
        BenchMethod::Lora(r) => {
            let fwd: f64 =
                s.block.iter().map(|&(i, o)| mm(r, i + o)).sum::<f64>() * s.layers as f64;
            (block_fwd, 3.0 * fwd)
        }
    };
    // The LM head (or tied embedding) is frozen, as in `train --method full`: input gradient only.
    tokens * (block_fwd + block_bwd + 2.0 * s.head_fwd() + 3.0 * s.attn_fwd(seq) + lora)
}

/// Matmul FLOPs of one forward pass over `tokens` tokens in sequences of `seq` (evaluation),
/// counted as [`train_flops`] counts the forward.
pub fn forward_flops(config: &ModelConfig, tokens: usize, seq: usize) -> f64 {
    let s = Shape::of(config);
    tokens as f64 * (s.block_fwd() + s.head_fwd() + s.attn_fwd(seq))
}

/// How [`estimate_memory`] estimates.
pub const MEMORY_FORMULA: &str = "f32 bytes: 4·parameters (weights) + 16·trainable (LoRA factors or trained weights, their gradients, AdamW's two moments) + 4·batch·seq·(layers·(6·hidden + 4·intermediate + q + 2·kv + 2·heads·seq) + 2·vocab) (activations kept for backward: norm inputs, projections, MLP intermediates, attention scores and probabilities, logits and their gradient). An estimate: the allocator's pages and temporaries come on top (measure with `tunelab bench`).";

/// Estimated peak device memory (bytes) of training `config` with `trainable` of its
/// `parameters` (plus LoRA factors, if `lora`) at `batch × seq` ([`MEMORY_FORMULA`]).
pub fn estimate_memory(
    config: &ModelConfig,
    parameters: u64,
    trainable: u64,
    lora: bool,
    batch: usize,
    seq: usize,
) -> u64 {
    let s = Shape::of(config);
    let (q, kv) = (s.heads * s.head_dim, s.kv_heads * s.head_dim);
    let per_layer = 6 * s.d + 4 * s.ff + q + 2 * kv + 2 * s.heads * seq;
    let activations = 4 * (batch * seq * (s.layers * per_layer + 2 * s.vocab)) as u64;
    let weights = 4 * parameters + if lora { 4 * trainable } else { 0 };
    weights + 12 * trainable + activations
}

/// The sizes FLOPs and memory are counted from.
struct Shape {
    d: usize,
    layers: usize,
    heads: usize,
    head_dim: usize,
    kv_heads: usize,
    ff: usize,
    vocab: usize,
    /// (in, out) of the block linears of one layer.
    block: Vec<(usize, usize)>,
}

fn mm(i: usize, o: usize) -> f64 {
    2.0 * i as f64 * o as f64
}

impl Shape {
    fn of(config: &ModelConfig) -> Self {
        let (d, layers, heads, head_dim, kv_heads, ff, vocab) = match &config.arch {
            Architecture::Llama(c) => (
                c.hidden_size,
                c.num_hidden_layers,
                c.num_attention_heads,
                c.head_dim,
                c.num_key_value_heads,
                c.intermediate_size,
                c.vocab_size,
            ),
            Architecture::Gpt2(c) => (
                c.n_embd,
                c.n_layer,
                c.n_head,
                c.n_embd / c.n_head,
                c.n_head,
                c.n_inner,
                c.vocab_size,
            ),
        };
        let (q, kv) = (heads * head_dim, kv_heads * head_dim);
        let block = match &config.arch {
            Architecture::Llama(_) => {
                vec![(d, q), (d, kv), (d, kv), (q, d), (d, ff), (d, ff), (ff, d)]
            }
            Architecture::Gpt2(_) => vec![(d, 3 * d), (d, d), (d, ff), (ff, d)],
        };
        Shape {
            d,
            layers,
            heads,
            head_dim,
            kv_heads,
            ff,
            vocab,
            block,
        }
    }

    /// Per token, forward, all block linears.
    fn block_fwd(&self) -> f64 {
        self.block.iter().map(|&(i, o)| mm(i, o)).sum::<f64>() * self.layers as f64
    }

    fn head_fwd(&self) -> f64 {
        mm(self.d, self.vocab)
    }

    /// Per token, forward: scores and their product with the values, full `seq × seq`.
    fn attn_fwd(&self, seq: usize) -> f64 {
        (2 * 2 * seq * self.head_dim * self.heads * self.layers) as f64
    }
}

/// The allocator's (in use, reserved) bytes, after the device has finished its queued work.
fn device_memory(device: &Device) -> Option<(u64, u64)> {
    // A failed sync only means the numbers may lag; they are still the allocator's.
    let _ = device.sync();
    device
        .memory_pool_usage()
        .map(|u| (u.bytes_in_use, u.bytes_reserved))
}

/// Peak resident memory of this process in MiB (Linux only).
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse::<f64>()
        .ok()?;
    Some(kb / 1024.0)
}

const MIB: f64 = 1024.0 * 1024.0;

/// Tracks the samples of one configuration.
#[derive(Default)]
struct Sampler {
    in_use_peak: Option<u64>,
    reserved_peak: Option<u64>,
}

impl Sampler {
    /// Sample now; returns bytes in use.
    fn sample(&mut self, device: &Device) -> Option<u64> {
        let (used, reserved) = device_memory(device)?;
        self.in_use_peak = Some(self.in_use_peak.unwrap_or(0).max(used));
        self.reserved_peak = Some(self.reserved_peak.unwrap_or(0).max(reserved));
        Some(used)
    }
}

fn diff_mib(after: Option<u64>, before: Option<u64>) -> Option<f64> {
    Some((after? as f64 - before? as f64) / MIB)
}

/// `tunelab <version>` and the burn features that change speed on wgpu, e.g.
/// `tunelab 0.1.0 (fusion, autotune)`.
pub fn engine() -> String {
    let features: Vec<&str> = [
        (cfg!(feature = "fusion"), "fusion"),
        (cfg!(feature = "autotune"), "autotune"),
    ]
    .into_iter()
    .filter_map(|(on, name)| on.then_some(name))
    .collect();
    let version = env!("CARGO_PKG_VERSION");
    if features.is_empty() {
        format!("tunelab {version}")
    } else {
        format!("tunelab {version} ({})", features.join(", "))
    }
}

/// A deterministic batch of `batch × seq` token ids spread over the vocabulary (every position
/// is a target).
pub fn synthetic_batch(vocab: usize, batch: usize, seq: usize, device: &Device) -> Batch {
    let examples: Vec<Example> = (0..batch)
        .map(|b| {
            let ids: Vec<u32> = (0..seq)
                .map(|i| ((i as u64 * 7919 + b as u64 * 104_729) % vocab as u64) as u32)
                .collect();
            Example::text(ids)
        })
        .collect();
    let refs: Vec<&Example> = examples.iter().collect();
    collate(&refs, device)
}

async fn read_loss(t: burn::tensor::Tensor<1>) -> Result<f64> {
    Ok(read_f32(t).await?[0] as f64)
}

/// Measure one configuration: train `model` (loaded on the autodiff `device`, and not shared with
/// anything else, or its old weights would stay allocated) with `method` on a synthetic batch.
/// `model_name` and `device_label` are copied into the result.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    mut model: CausalLm,
    config: &ModelConfig,
    model_name: &str,
    device: &Device,
    device_label: &str,
    method: BenchMethod,
    opts: &BenchOptions,
    on_event: &mut dyn FnMut(&Event),
) -> Result<BenchResult> {
    opts.validate(config)?;
    crate::kernels::prepare(device, opts.kernels, on_event).await;
    let train_config = TrainConfig {
        batch_size: opts.batch,
        checkpoint_activations: opts.checkpoint_activations,
        kernels: opts.kernels,
        frozen_f16: opts.frozen_f16,
        attention_dropout: opts.attention_dropout,
        ..TrainConfig::new(method.method(), 1e-4)
    };
    let mut parameters = 0u64;
    model.for_each_param(&mut |_, p| parameters += p.hf_shape().iter().product::<usize>() as u64);
    let mut trainer = Trainer::new(
        model,
        device.clone(),
        train_config,
        String::new(),
        Vec::new(),
        String::new(),
        None,
    )?;
    // Sampled once the trainer holds the model as it trains (adapters attached, frozen weights
    // in their stored precision), so the first step's growth is the optimizer's state.
    let mut sampler = Sampler::default();
    device.memory_cleanup();
    let before = sampler.sample(device);
    let batch = synthetic_batch(config.vocab_size(), opts.batch, opts.seq, device);
    let micro = std::slice::from_ref(&batch);
    let task = format!("{method}");
    let windows = opts.steps.div_ceil(opts.window);
    let total = 1 + opts.warmup + windows * opts.window;
    let progress =
        |done: usize| Event::Progress(Progress::items(&task, done as u64, Some(total as u64)));

    let t0 = Instant::now();
    let loss_first = read_loss(trainer.step(micro, 1e-4).0).await?;
    let first_step_s = t0.elapsed().as_secs_f64();
    let after_first = sampler.sample(device);
    on_event(&progress(1));
    let mut last = None;
    for i in 0..opts.warmup {
        last = Some(trainer.step(micro, 1e-4).0);
        on_event(&progress(2 + i));
    }
    if let Some(l) = last.take() {
        read_loss(l).await?;
    }
    let tokens = (opts.batch * opts.seq * opts.window) as f64;
    let mut window_tokens_per_s = Vec::with_capacity(windows);
    let mut loss_last = loss_first;
    for w in 0..windows {
        let t = Instant::now();
        for _ in 0..opts.window {
            last = Some(trainer.step(micro, 1e-4).0);
        }
        loss_last = read_loss(last.take().expect("window ≥ 1 step")).await?;
        window_tokens_per_s.push(tokens / t.elapsed().as_secs_f64());
        sampler.sample(device);
        on_event(&progress(1 + opts.warmup + (w + 1) * opts.window));
    }
    // One instrumented step, outside the timing: the graph of a forward pass held (activations),
    // then the gradients held.
    let base = sampler.sample(device);
    let loss = summed_lm_loss(
        &trainer.model,
        batch.ids.clone(),
        batch.mask.clone(),
        batch.labels.clone(),
    );
    read_loss(loss.clone().inner()).await?;
    let with_graph = sampler.sample(device);
    drop(loss);
    let (_, grads) = trainer.gradients(micro);
    let with_grads = sampler.sample(device);
    drop(grads);

    let mut sorted = window_tokens_per_s.clone();
    sorted.sort_by(f64::total_cmp);
    let tokens_per_s = sorted[sorted.len() / 2];
    let flops_per_step = train_flops(config, method, opts.batch, opts.seq);
    let step_s = (opts.batch * opts.seq) as f64 / tokens_per_s;
    let trainable = trainer.trainable_parameters;
    let lora_params = if method.rank() > 0 { trainable } else { 0 };
    let mut base_bytes = 0u64;
    trainer.model.for_each_param(&mut |_, p| {
        let (elems, dtype) = match p {
            ParamMut::Vector(t) => (t.shape().num_elements(), t.val().dtype()),
            ParamMut::Matrix(t, _) => (t.shape().num_elements(), t.val().dtype()),
        };
        base_bytes += (elems * dtype.size()) as u64;
    });
    Ok(BenchResult {
        engine: engine(),
        device: device_label.to_string(),
        model: model_name.to_string(),
        method: if method.rank() > 0 { "lora" } else { "full" }.into(),
        rank: method.rank(),
        batch: opts.batch,
        seq: opts.seq,
        checkpoint_activations: opts.checkpoint_activations,
        kernels: opts.kernels,
        frozen_f16: opts.frozen_f16,
        attention_dropout: opts.attention_dropout,
        parameters,
        trainable_parameters: trainable,
        first_step_s,
        tokens_per_s,
        step_s,
        window_tokens_per_s,
        flops_per_step,
        tflops: flops_per_step / step_s / 1e12,
        loss_first,
        loss_last,
        params: ParamMemory {
            weights_mib: (base_bytes + 4 * lora_params) as f64 / MIB,
            trainable_mib: trainable as f64 * 4.0 / MIB,
            optimizer_state_mib: trainable as f64 * 8.0 / MIB,
        },
        memory: Memory {
            device_reserved_peak_mib: sampler.reserved_peak.map(|b| b as f64 / MIB),
            device_in_use_peak_mib: sampler.in_use_peak.map(|b| b as f64 / MIB),
            before_mib: before.map(|b| b as f64 / MIB),
            optimizer_state_mib: diff_mib(after_first, before),
            activations_mib: diff_mib(with_graph, base),
            gradients_mib: diff_mib(with_grads, base),
            peak_rss_mib: peak_rss_mib(),
        },
    })
}

/// The model a benchmark runs on, by what the user named: a preset (random weights), a
/// `…/config.json` (file or URL: random weights of that shape), or a model directory / URL (its
/// own weights). Each call builds a fresh model on `device`.
pub async fn model(
    spec: &str,
    device: &Device,
    on_event: &mut dyn FnMut(&Event),
) -> Result<(ModelConfig, CausalLm)> {
    if let Some(text) = preset(spec) {
        return random_model(text, &format!("preset {spec}"), device);
    }
    from_source(spec, device, on_event).await
}

/// A `config.json` or model directory / URL, natively (the page has its own transport and uses
/// the presets).
#[cfg(feature = "native")]
async fn from_source(
    spec: &str,
    device: &Device,
    on_event: &mut dyn FnMut(&Event),
) -> Result<(ModelConfig, CausalLm)> {
    use crate::hf::{Fetch, ModelSource};
    let source = ModelSource::parse(spec);
    if let ModelSource::Dir(path) = &source
        && !path.exists()
    {
        return Err(not_a_model(spec));
    }
    if let Some(base) = spec.strip_suffix("config.json") {
        let source = ModelSource::parse(if base.is_empty() { "." } else { base });
        let text = source.read_string("config.json").await?;
        return random_model(&text, &source.locate("config.json"), device);
    }
    let loaded = crate::model::load(&source, device, None, on_event).await?;
    Ok((loaded.config, loaded.model))
}

#[cfg(not(feature = "native"))]
async fn from_source(
    spec: &str,
    _device: &Device,
    _on_event: &mut dyn FnMut(&Event),
) -> Result<(ModelConfig, CausalLm)> {
    Err(not_a_model(spec))
}

fn not_a_model(spec: &str) -> Error {
    Error::Input(format!(
        "`{spec}` is neither a preset ({}) nor a model directory or config.json",
        PRESETS.iter().map(|p| p.0).collect::<Vec<_>>().join(", ")
    ))
}

/// A model of the shape `config_json` describes, with random weights (N(0, 0.02)); `file` names
/// the config in errors.
fn random_model(config_json: &str, file: &str, device: &Device) -> Result<(ModelConfig, CausalLm)> {
    let config = ModelConfig::parse(config_json, file)?;
    let model = crate::model::init_random(&config, device, 0.02, 0)?;
    Ok((config, model))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_parse() {
        assert_eq!("full".parse(), Ok(BenchMethod::Full));
        assert_eq!("lora16".parse(), Ok(BenchMethod::Lora(16)));
        assert_eq!("lora:256".parse(), Ok(BenchMethod::Lora(256)));
        assert_eq!("r8".parse(), Ok(BenchMethod::Lora(8)));
        assert!("lora0".parse::<BenchMethod>().is_err());
        assert!("qlora".parse::<BenchMethod>().is_err());
    }

    #[test]
    fn flops_of_the_medium_preset_match_the_hand_count() {
        // h1024 L8 ff2816 V4096, 16 heads of 64, batch 8 × 256.
        let config = ModelConfig::parse(preset("medium").unwrap(), "medium").unwrap();
        let full = train_flops(&config, BenchMethod::Full, 8, 256);
        let tokens = 8.0 * 256.0;
        let block = 8.0 * 2.0 * (4.0 * 1024.0 * 1024.0 + 3.0 * 1024.0 * 2816.0);
        let head = 2.0 * 1024.0 * 4096.0;
        let attn = 8.0 * 16.0 * 2.0 * 2.0 * 256.0 * 64.0;
        let expected = tokens * (3.0 * block + 2.0 * head + 3.0 * attn);
        assert!(
            (full - expected).abs() / expected < 1e-12,
            "{full} vs {expected}"
        );
        // LoRA drops the weight-gradient matmuls of the block and adds the low-rank paths.
        let lora = train_flops(&config, BenchMethod::Lora(16), 8, 256);
        let lora_paths = 8.0 * 2.0 * 16.0 * (4.0 * 2048.0 + 2.0 * 3840.0 + 3840.0) * 3.0;
        let expected = tokens * (2.0 * block + 2.0 * head + 3.0 * attn + lora_paths);
        assert!(
            (lora - expected).abs() / expected < 1e-12,
            "{lora} vs {expected}"
        );
    }

    #[test]
    fn presets_parse_with_their_documented_shapes() {
        for (name, text) in PRESETS {
            let c = ModelConfig::parse(text, name).unwrap();
            let Architecture::Llama(l) = c.arch else {
                panic!("{name} is not a llama")
            };
            let shape = (
                l.hidden_size,
                l.num_hidden_layers,
                l.intermediate_size,
                l.vocab_size,
                l.num_attention_heads,
                l.num_key_value_heads,
                l.tie_word_embeddings,
            );
            let expected = match *name {
                "small" => (256, 4, 688, 4096, 4, 4, false),
                "medium" => (1024, 8, 2816, 4096, 16, 16, false),
                _ => (576, 30, 1536, 49152, 9, 3, true),
            };
            assert_eq!(shape, expected, "{name}");
        }
    }
}
