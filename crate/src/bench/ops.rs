//! The per-op benchmark: each hot path of a training step — the tiled matmul kernel alone, a
//! linear layer (trained, and frozen with a LoRA adapter) as the model runs it, causal attention,
//! RoPE with the split into heads, RMSNorm, SwiGLU, the LM head with its loss, the optimizer step (gradient norm, clip, AdamW) over the
//! tensors full fine-tuning trains and over the factors rank-16 LoRA trains —
//! timed alone at a model's shapes with tunelab's WGSL
//! kernels and with burn's generic ones, so the kernels can be judged one by one on any device
//! (`tunelab bench --ops`).
//!
//! Each op runs on random inputs through the same functions the trainer calls
//! ([`crate::kernels::matmul`] or burn's, [`Linear::forward`] — which uses the matmul
//! [`crate::kernels::calibrate`] chose for the device —, [`attention`], [`Rope::apply`],
//! [`RmsNorm::forward`], [`swiglu`], [`head_nll`],
//! [`Optimizer::step`]). A call is timed
//! from launch to the readback of one element of each output (forward) or of each gradient
//! (forward + backward), so it includes one device round trip; the first call (shader
//! compilation) is reported apart and the median of the next `reps` calls is the time.
//!
//! Work counted: FLOPs for the MLP's up projection `[tokens, H] · [H, ff]` (`2·tokens·H·ff`
//! forward; ×3 with the input's and the weight's gradients, for `matmul` and `linear`; frozen with a rank-16 adapter: ×2,
//! plus `2·tokens·16·(H + ff)` per product of the low-rank path, three of them), attention (`4·B·heads·T²·head_dim` forward over the full square, as
//! [`super::train_flops`]; ×3 with backward) and the LM head (`2·tokens·H·V`; ×2 with the
//! hidden states' gradient, the head frozen as in both bench methods); bytes for the
//! memory-bound ops (RMSNorm: read x, write y; backward reads x and dy, writes dx; RoPE and
//! SwiGLU likewise, SwiGLU reading two inputs and writing two gradients; AdamW: read
//! parameter, gradient and both moments, write parameter and moments).

use web_time::Instant;

use burn::module::Param;
use burn::tensor::{Device, Distribution, Int, Tensor};

use crate::error::{Error, Result};
use crate::event::{Event, Progress};
use crate::hf::RopeScaling;
use crate::hf::{Architecture, ModelConfig};
use crate::kernels::Kernels;
use crate::model::layers::{AttentionMasks, Linear, Lora, RmsNorm, attention, swiglu};
use crate::model::rope::Rope;
use crate::model::{CausalLm, read_f32};
use crate::train::loss::head_nll;
use crate::train::optim::{Item, Optimizer, OptimizerConfig};

/// One op measured with one set of kernels.
#[derive(Debug, Clone, serde::Serialize)]
pub struct OpResult {
    pub engine: String,
    pub device: String,
    pub model: String,
    /// `matmul`, `linear`, `lora_linear`, `attention`, `rope`, `rms_norm`, `swiglu`,
    /// `lm_head_loss`, `adamw` or `lora_adamw`.
    pub op: String,
    /// The tensors' shapes, in words.
    pub shape: String,
    pub kernels: Kernels,
    /// The first forward and the first forward + backward call (shader compilation), seconds.
    pub first_s: f64,
    /// Median forward call, milliseconds (None for the optimizer, which has no backward).
    pub forward_ms: Option<f64>,
    /// Median forward + backward call (the optimizer: one update of every tensor), milliseconds.
    pub train_ms: f64,
    /// Floating-point operations of a forward + backward call, where that is the measure.
    pub train_flops: Option<f64>,
    /// Bytes a forward + backward call must move at least, where that is the measure.
    pub train_bytes: Option<f64>,
    /// Achieved TFLOP/s of the forward + backward call.
    pub tflops: Option<f64>,
    /// Achieved GB/s of the forward + backward call.
    pub gb_per_s: Option<f64>,
}

/// The shapes of one benchmark: the model's and the batch's.
struct Shapes {
    batch: usize,
    seq: usize,
    hidden: usize,
    /// The MLP's inner width.
    ff: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    vocab: usize,
    /// RMSNorm's epsilon (None: the model normalises with LayerNorm).
    rms_eps: Option<f64>,
}

impl Shapes {
    fn new(config: &ModelConfig, batch: usize, seq: usize) -> Self {
        let (hidden, ff, heads, kv_heads, head_dim, rms_eps) = match &config.arch {
            Architecture::Llama(c) => (
                c.hidden_size,
                c.intermediate_size,
                c.num_attention_heads,
                c.num_key_value_heads,
                c.head_dim,
                Some(c.rms_norm_eps),
            ),
            Architecture::Gpt2(c) => (
                c.n_embd,
                c.n_inner,
                c.n_head,
                c.n_head,
                c.n_embd / c.n_head,
                None,
            ),
        };
        Shapes {
            batch,
            seq,
            hidden,
            ff,
            heads,
            kv_heads,
            head_dim,
            vocab: config.vocab_size(),
            rms_eps,
        }
    }
}

/// Times of one op under one set of kernels.
struct Timing {
    first_s: f64,
    forward_ms: Option<f64>,
    train_ms: f64,
}

/// The first element of `t`, as a one-element vector: reading it back waits for `t`.
fn first<const D: usize>(t: Tensor<D>) -> Tensor<1> {
    let n = t.shape().num_elements();
    t.reshape([n]).slice_dim(0, 0..1)
}

/// Seconds of the first call of `f` and the median milliseconds of the next `reps`, each call
/// ended by reading back the probe it returns.
async fn time(reps: usize, mut f: impl FnMut() -> Vec<Tensor<1>>) -> Result<(f64, f64)> {
    let mut call = async || -> Result<f64> {
        let t = Instant::now();
        read_f32(Tensor::cat(f(), 0)).await?;
        Ok(t.elapsed().as_secs_f64())
    };
    let first_s = call().await?;
    let mut ms = Vec::with_capacity(reps);
    for _ in 0..reps {
        ms.push(call().await? * 1e3);
    }
    ms.sort_by(f64::total_cmp);
    Ok((first_s, ms[ms.len() / 2]))
}

/// Forward (on the device without autodiff) and forward + backward (with it) of one op.
async fn time_op(
    reps: usize,
    forward: impl FnMut() -> Vec<Tensor<1>>,
    train: impl FnMut() -> Vec<Tensor<1>>,
) -> Result<Timing> {
    let (first_forward, forward_ms) = time(reps, forward).await?;
    let (first_train, train_ms) = time(reps, train).await?;
    Ok(Timing {
        first_s: first_forward + first_train,
        forward_ms: Some(forward_ms),
        train_ms,
    })
}

/// Rank of the adapter in `lora_linear`, as in the benchmark's `lora16`.
const LORA_RANK: usize = 16;

/// The MLP's up projection as a [`Linear`]: trained (full fine-tuning), or frozen with a rank-16
/// adapter whose factors train (`lora`).
async fn linear_op(
    s: &Shapes,
    lora: bool,
    ad: &Device,
    kernels: Kernels,
    reps: usize,
) -> Result<Timing> {
    let normal = Distribution::Normal(0.0, 0.02);
    let x = Tensor::<3>::random([s.batch, s.seq, s.hidden], normal, ad);
    let weight = Tensor::<2>::random([s.hidden, s.ff], normal, ad);
    let factors = [[s.hidden, LORA_RANK], [LORA_RANK, s.ff]]
        .map(|dims| Tensor::<2>::random(dims, normal, ad));
    let dy = Tensor::<3>::random([s.batch, s.seq, s.ff], normal, ad);
    let layer = |autodiff: bool| {
        let on = |t: &Tensor<2>| {
            if autodiff {
                t.clone()
            } else {
                t.clone().inner()
            }
        };
        let mut layer = Linear::from_weight(on(&weight), "up_proj");
        if lora {
            layer.weight = layer.weight.set_require_grad(false);
            layer.lora = Some(Lora {
                a: Param::from_tensor(on(&factors[0])),
                b: Param::from_tensor(on(&factors[1])),
                scaling: 2.0,
                dropout: 0.0,
            });
        }
        layer
    };
    let plain = layer(false);
    time_op(
        reps,
        || vec![first(plain.forward(x.clone().inner(), kernels))],
        || {
            let (x, layer) = (x.clone().require_grad(), layer(true));
            let grads = (layer.forward(x.clone(), kernels) * dy.clone())
                .sum()
                .backward();
            let mut probes = vec![first(x.grad(&grads).expect("an input gradient"))];
            let trained = match &layer.lora {
                Some(l) => vec![l.a.val(), l.b.val()],
                None => vec![layer.weight.val()],
            };
            for p in trained {
                probes.push(first(p.grad(&grads).expect("a weight gradient")));
            }
            probes
        },
    )
    .await
}

/// The up projection's product alone, both operands trained: tunelab's tiled kernel (whatever
/// the calibration chose for the model) or burn's matmul.
async fn matmul_op(s: &Shapes, ad: &Device, kernels: Kernels, reps: usize) -> Result<Timing> {
    let normal = Distribution::Normal(0.0, 0.02);
    let x = Tensor::<2>::random([s.batch * s.seq, s.hidden], normal, ad);
    let w = Tensor::<2>::random([s.hidden, s.ff], normal, ad);
    let dy = Tensor::<2>::random([s.batch * s.seq, s.ff], normal, ad);
    let product = |x: Tensor<2>, w: Tensor<2>| {
        match kernels {
            Kernels::Tunelab => crate::kernels::matmul(x.clone(), w.clone()),
            Kernels::Burn => None,
        }
        .unwrap_or_else(|| x.matmul(w))
    };
    two_input_op(reps, [x, w], dy, product).await
}

/// `op` of two inputs, both trained: forward alone, and forward + backward of `Σ op(a, b) · dy`
/// (both gradients).
async fn two_input_op<const D: usize>(
    reps: usize,
    [a, b]: [Tensor<D>; 2],
    dy: Tensor<D>,
    op: impl Fn(Tensor<D>, Tensor<D>) -> Tensor<D>,
) -> Result<Timing> {
    time_op(
        reps,
        || vec![first(op(a.clone().inner(), b.clone().inner()))],
        || {
            let [a, b] = [&a, &b].map(|t| t.clone().require_grad());
            let grads = (op(a.clone(), b.clone()) * dy.clone()).sum().backward();
            [a, b]
                .iter()
                .map(|t| first(t.grad(&grads).expect("a gradient")))
                .collect()
        },
    )
    .await
}

async fn attention_op(s: &Shapes, ad: &Device, kernels: Kernels, reps: usize) -> Result<Timing> {
    let (b, t, d) = (s.batch, s.seq, s.head_dim);
    let normal = Distribution::Normal(0.0, 1.0);
    let q = Tensor::<4>::random([b, s.heads, t, d], normal, ad);
    let k = Tensor::<4>::random([b, s.kv_heads, t, d], normal, ad);
    let v = Tensor::<4>::random([b, s.kv_heads, t, d], normal, ad);
    let w = Tensor::<3>::random([b, t, s.heads * d], normal, ad);
    let mask = AttentionMasks::new(None, b, t, t, None, ad).full;
    let mut plain_mask = mask.clone();
    plain_mask.additive = plain_mask.additive.inner();
    let scale = 1.0 / (d as f64).sqrt();
    time_op(
        reps,
        || {
            let (q, k, v) = (q.clone().inner(), k.clone().inner(), v.clone().inner());
            vec![first(attention(
                q,
                k,
                v,
                plain_mask.clone(),
                scale,
                0.0,
                kernels,
            ))]
        },
        || {
            let [q, k, v] = [&q, &k, &v].map(|x| x.clone().require_grad());
            let out = attention(
                q.clone(),
                k.clone(),
                v.clone(),
                mask.clone(),
                scale,
                0.0,
                kernels,
            );
            let grads = (out * w.clone()).sum().backward();
            [q, k, v]
                .iter()
                .map(|x| first(x.grad(&grads).expect("a gradient")))
                .collect()
        },
    )
    .await
}

/// RoPE with the split into heads of the query projection's output `[B, T, heads, head_dim]`,
/// as the model runs it.
async fn rope_op(s: &Shapes, ad: &Device, kernels: Kernels, reps: usize) -> Result<Timing> {
    let (b, t, h, d) = (s.batch, s.seq, s.heads, s.head_dim);
    let normal = Distribution::Normal(0.0, 1.0);
    let x = Tensor::<4>::random([b, t, h, d], normal, ad);
    let dy = Tensor::<4>::random([b, h, t, d], normal, ad);
    let rope = |device: &Device| Rope::new(d, 10_000.0, &RopeScaling::Default, t, device);
    let (plain, trained) = (rope(&ad.clone().inner()), rope(ad));
    time_op(
        reps,
        || vec![first(plain.apply(x.clone().inner(), 0, kernels))],
        || {
            let x = x.clone().require_grad();
            let grads = (trained.apply(x.clone(), 0, kernels) * dy.clone())
                .sum()
                .backward();
            vec![first(x.grad(&grads).expect("a gradient"))]
        },
    )
    .await
}

/// Llama's gated MLP activation `silu(gate) · up` over `[B, T, ff]`, as the model runs it.
async fn swiglu_op(s: &Shapes, ad: &Device, kernels: Kernels, reps: usize) -> Result<Timing> {
    let normal = Distribution::Normal(0.0, 1.0);
    let [gate, up, dy] = [0; 3].map(|_| Tensor::<3>::random([s.batch, s.seq, s.ff], normal, ad));
    two_input_op(reps, [gate, up], dy, |gate, up| swiglu(gate, up, kernels)).await
}

/// The decoder's residual add and the RMSNorm after it, as the model runs them.
async fn rms_norm_op(
    s: &Shapes,
    eps: f64,
    ad: &Device,
    kernels: Kernels,
    reps: usize,
) -> Result<Timing> {
    let normal = Distribution::Normal(0.0, 1.0);
    let x = Tensor::<3>::random([s.batch, s.seq, s.hidden], normal, ad);
    let delta = Tensor::<3>::random([s.batch, s.seq, s.hidden], normal, ad);
    let weight = Tensor::<1>::random([s.hidden], normal, ad);
    let dy = Tensor::<3>::random([s.batch, s.seq, s.hidden], normal, ad);
    let norm = |weight: Tensor<1>| RmsNorm {
        weight: Param::from_tensor(weight),
        eps,
        path: "norm".into(),
    };
    let plain = norm(weight.clone().inner());
    time_op(
        reps,
        || {
            let (x, delta) = (x.clone().inner(), Some(delta.clone().inner()));
            vec![first(plain.add_forward(x, delta, kernels).1)]
        },
        || {
            let (x, norm) = (x.clone().require_grad(), norm(weight.clone()));
            let delta = Some(delta.clone());
            let (_, y) = norm.add_forward(x.clone(), delta, kernels);
            let grads = (y * dy.clone()).sum().backward();
            let dw = norm.weight.val().grad(&grads).expect("a weight gradient");
            vec![first(x.grad(&grads).expect("a gradient")), first(dw)]
        },
    )
    .await
}

async fn head_loss_op(s: &Shapes, ad: &Device, kernels: Kernels, reps: usize) -> Result<Timing> {
    let (b, t) = (s.batch, s.seq);
    let hidden = Tensor::<3>::random([b, t, s.hidden], Distribution::Normal(0.0, 1.0), ad);
    let head = Tensor::<2>::random([s.hidden, s.vocab], Distribution::Normal(0.0, 0.02), ad);
    let targets = Tensor::<2, Int>::random([b, t], Distribution::Uniform(0.0, s.vocab as f64), ad);
    time_op(
        reps,
        || {
            let (h, w, y) = (hidden.clone(), head.clone(), targets.clone());
            vec![head_nll(h.inner(), w.inner(), y.inner(), kernels)]
        },
        || {
            let h = hidden.clone().require_grad();
            let grads = head_nll(h.clone(), head.clone(), targets.clone(), kernels).backward();
            vec![first(h.grad(&grads).expect("a gradient"))]
        },
    )
    .await
}

/// One optimizer step as the trainer takes it (global gradient norm, clip, AdamW with weight
/// decay) over tensors of `sizes` elements.
async fn adamw_op(
    sizes: &[usize],
    device: &Device,
    kernels: Kernels,
    reps: usize,
) -> Result<Timing> {
    let normal = Distribution::Normal(0.0, 1.0);
    let mut params: Vec<Tensor<1>> = sizes
        .iter()
        .map(|&n| Tensor::random([n], normal, device))
        .collect();
    let grads: Vec<Tensor<1>> = sizes
        .iter()
        .map(|&n| Tensor::random([n], normal, device))
        .collect();
    let mut opt = Optimizer::new(OptimizerConfig::adamw(0.01), kernels);
    let (first_s, train_ms) = time(reps, || {
        let items = params
            .iter()
            .zip(&grads)
            .enumerate()
            .map(|(i, (p, g))| Item {
                name: i.to_string(),
                param: p.clone(),
                grad: g.clone(),
                lr: 1e-4,
                class: 0,
            })
            .collect();
        params = opt.step(items, Some(1.0)).0;
        params.iter().map(|p| first(p.clone())).collect()
    })
    .await?;
    Ok(Timing {
        first_s,
        forward_ms: None,
        train_ms,
    })
}

/// Element counts of the tensors full fine-tuning trains in `model` (every parameter but the
/// embeddings and the LM head), and of the factors rank-[`LORA_RANK`] LoRA on each of its block
/// linears trains.
fn trainable_sizes(mut model: CausalLm) -> (Vec<usize>, Vec<usize>) {
    let (mut full, mut lora) = (Vec::new(), Vec::new());
    model.for_each_param(&mut |name, p| {
        if CausalLm::is_embedding_or_head(name) {
            return;
        }
        let shape = p.hf_shape();
        full.push(shape.iter().product());
        if let [out, inp] = shape[..] {
            lora.extend([LORA_RANK * inp, out * LORA_RANK]);
        }
    });
    (full, lora)
}

/// Measure every op at the shape of `model` (of `config`, as [`super::model`] gives them; only
/// its parameters' sizes are read, and it is dropped before timing) with a batch of
/// `batch × seq` tokens, `reps` timed calls each, under each of `kernels` on `device` (with or
/// without autodiff). `model_name` and `device_label` are copied into the results.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    model: CausalLm,
    config: &ModelConfig,
    model_name: &str,
    device: &Device,
    device_label: &str,
    batch: usize,
    seq: usize,
    reps: usize,
    kernels: &[Kernels],
    on_event: &mut dyn FnMut(&Event),
) -> Result<Vec<OpResult>> {
    if batch == 0 || reps == 0 || seq < 2 || seq > config.max_positions() {
        return Err(Error::Input(format!(
            "bench --ops: batch and steps must be at least 1 and seq between 2 and the model's \
             max_position_embeddings ({}), got batch {batch}, steps {reps}, seq {seq}",
            config.max_positions()
        )));
    }
    if kernels.contains(&Kernels::Tunelab) {
        crate::kernels::prepare(device, Kernels::Tunelab, on_event).await;
    }
    let s = Shapes::new(config, batch, seq);
    let plain = device.clone().inner();
    let ad = plain.clone().autodiff();
    let (sizes, lora_sizes) = trainable_sizes(model);
    let tokens = (batch * seq) as f64;
    let up_flops = 2.0 * tokens * (s.hidden * s.ff) as f64;
    let up_shape = format!("[{}, {}] · [{}, {}]", batch * seq, s.hidden, s.hidden, s.ff);
    let lora_flops = 2.0 * tokens * (LORA_RANK * (s.hidden + s.ff)) as f64;
    let attention_flops = 3.0 * 4.0 * (batch * s.heads * seq * seq * s.head_dim) as f64;
    let head_flops = 2.0 * 2.0 * tokens * (s.hidden * s.vocab) as f64;
    // The residual add and norm: x and delta in, h and y out; h and dy in, dx out.
    let norm_bytes = 7.0 * 4.0 * tokens * s.hidden as f64;
    // RoPE: x in, y out; dy in, dx out. SwiGLU: gate and up in, y out; gate, up, dy in, both
    // gradients out.
    let rope_bytes = 4.0 * 4.0 * tokens * (s.heads * s.head_dim) as f64;
    let swiglu_bytes = 8.0 * 4.0 * tokens * s.ff as f64;
    // RoPE, RMSNorm and SwiGLU only where the model is a Llama.
    let ops: Vec<&str> = [
        "matmul",
        "linear",
        "lora_linear",
        "attention",
        "rope",
        "rms_norm",
        "swiglu",
        "lm_head_loss",
        "adamw",
        "lora_adamw",
    ]
    .into_iter()
    .filter(|&op| !matches!(op, "rope" | "rms_norm" | "swiglu") || s.rms_eps.is_some())
    .collect();
    let total = (ops.len() * kernels.len()) as u64;
    let mut results = Vec::new();
    for &k in kernels {
        for &op in &ops {
            let (timing, shape, flops, bytes) = match op {
                "matmul" => (
                    matmul_op(&s, &ad, k, reps).await?,
                    up_shape.clone(),
                    Some(3.0 * up_flops),
                    None,
                ),
                "linear" | "lora_linear" => {
                    let lora = op == "lora_linear";
                    (
                        linear_op(&s, lora, &ad, k, reps).await?,
                        if lora {
                            format!("{up_shape} frozen + rank {LORA_RANK}")
                        } else {
                            up_shape.clone()
                        },
                        Some(if lora {
                            2.0 * up_flops + 3.0 * lora_flops
                        } else {
                            3.0 * up_flops
                        }),
                        None,
                    )
                }
                "attention" => (
                    attention_op(&s, &ad, k, reps).await?,
                    format!(
                        "q [{batch}, {}, {seq}, {}], k/v {} heads, causal",
                        s.heads, s.head_dim, s.kv_heads
                    ),
                    Some(attention_flops),
                    None,
                ),
                "rope" => (
                    rope_op(&s, &ad, k, reps).await?,
                    format!("[{batch}, {seq}, {}, {}] → heads", s.heads, s.head_dim),
                    None,
                    Some(rope_bytes),
                ),
                "swiglu" => (
                    swiglu_op(&s, &ad, k, reps).await?,
                    format!("[{batch}, {seq}, {}]", s.ff),
                    None,
                    Some(swiglu_bytes),
                ),
                "rms_norm" => {
                    let Some(eps) = s.rms_eps else { continue };
                    (
                        rms_norm_op(&s, eps, &ad, k, reps).await?,
                        format!("[{batch}, {seq}, {}] + residual", s.hidden),
                        None,
                        Some(norm_bytes),
                    )
                }
                "lm_head_loss" => (
                    head_loss_op(&s, &ad, k, reps).await?,
                    format!(
                        "[{}, {}] · [{}, {}]",
                        batch * seq,
                        s.hidden,
                        s.hidden,
                        s.vocab
                    ),
                    Some(head_flops),
                    None,
                ),
                _ => {
                    let sizes = if op == "adamw" { &sizes } else { &lora_sizes };
                    let trained: usize = sizes.iter().sum();
                    (
                        adamw_op(sizes, &plain, k, reps).await?,
                        format!("{} tensors, {trained} parameters", sizes.len()),
                        None,
                        // Read parameter, gradient and moments, write parameter and moments.
                        Some(7.0 * 4.0 * trained as f64),
                    )
                }
            };
            let seconds = timing.train_ms / 1e3;
            results.push(OpResult {
                engine: super::engine(),
                device: device_label.to_string(),
                model: model_name.to_string(),
                op: op.to_string(),
                shape,
                kernels: k,
                first_s: timing.first_s,
                forward_ms: timing.forward_ms,
                train_ms: timing.train_ms,
                train_flops: flops,
                train_bytes: bytes,
                tflops: flops.map(|f| f / seconds / 1e12),
                gb_per_s: bytes.map(|b| b / seconds / 1e9),
            });
            on_event(&Event::Progress(Progress::items(
                "ops",
                results.len() as u64,
                Some(total),
            )));
        }
    }
    Ok(results)
}
