//! The step loop shared by full fine-tuning and LoRA: forward, loss, backward, clip, step,
//! schedule. It emits events, reads the loss back only every `log_every` steps (no synchronous
//! readback in the inner loop, so it also runs in the browser), evaluates and checkpoints.

use std::collections::BTreeMap;

use burn::module::{Module, Param};
use burn::tensor::{Device, FloatDType, Tensor};
use web_time::Instant;

use super::data::{Batch, Dataset, collate, epoch_order};
use super::loss::summed_lm_loss;
use super::optim::{Item, Optimizer, OptimizerConfig};
use super::schedule::{Schedule, factor};
use super::sink::CheckpointSink;
use crate::error::{Error, Result};
use crate::event::Event;
use crate::export;
use crate::files::File;
use crate::kernels::Kernels;
use crate::model::lora::{self, LoraConfig};
use crate::model::{CausalLm, ParamMut, read_f32};

/// Which weights train.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(tag = "method", rename_all = "lowercase")]
pub enum Method {
    Full(FullConfig),
    Lora(LoraConfig),
}

/// Full fine-tuning options: by default every weight except embeddings and LM head trains.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct FullConfig {
    /// Also train token/position embeddings and the LM head.
    pub train_embeddings: bool,
    /// Regexes (matched anywhere in the HF tensor name) of tensors to keep frozen.
    pub freeze: Vec<String>,
}

/// Everything that defines a training run.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct TrainConfig {
    pub method: Method,
    pub optimizer: OptimizerConfig,
    pub lr: f64,
    /// LoRA+: learning rate of the B factors is `lr × ratio`.
    pub lora_plus_ratio: Option<f64>,
    pub schedule: Schedule,
    /// Warm-up optimizer steps.
    pub warmup_steps: usize,
    pub epochs: f64,
    /// Stop after this many optimizer steps (overrides `epochs`).
    pub max_steps: Option<usize>,
    /// Stop after this many training tokens (overrides `epochs`).
    pub max_tokens: Option<u64>,
    pub batch_size: usize,
    pub grad_accum: usize,
    pub seed: u64,
    /// Clip the global gradient norm to this value.
    pub clip: Option<f64>,
    pub attention_dropout: f64,
    pub residual_dropout: f64,
    /// Read the loss back (and emit a `Step` event) every this many steps.
    pub log_every: usize,
    pub eval_every: Option<usize>,
    pub save_every: Option<usize>,
    /// Recompute memory-bound activations (norms, activations, elementwise products) in the
    /// backward pass instead of keeping them (burn's balanced gradient checkpointing); matmul
    /// outputs are still kept. Needs a device made by [`training_device`].
    #[serde(default)]
    pub checkpoint_activations: bool,
    /// tunelab's WGSL kernels (on a GPU) or burn's generic ones.
    #[serde(default)]
    pub kernels: Kernels,
    /// Keep the frozen weight matrices (LoRA's base, frozen embeddings or head) in f16, with f32
    /// arithmetic: half their memory, at f16's rounding of their values. Needs tunelab's kernels
    /// on a GPU with f16 shaders (WebGPU's `shader-f16`).
    #[serde(default)]
    pub frozen_f16: bool,
}

impl TrainConfig {
    /// `method` at learning rate `lr` with plain settings: AdamW without weight decay, constant
    /// rate, one epoch, batch 8, clipping at 1, no dropout, loss read back every step. Callers
    /// change what they need with struct-update syntax.
    pub fn new(method: Method, lr: f64) -> Self {
        TrainConfig {
            method,
            optimizer: OptimizerConfig::adamw(0.0),
            lr,
            lora_plus_ratio: None,
            schedule: Schedule::Constant,
            warmup_steps: 0,
            epochs: 1.0,
            max_steps: None,
            max_tokens: None,
            batch_size: 8,
            grad_accum: 1,
            seed: 0,
            clip: Some(1.0),
            attention_dropout: 0.0,
            residual_dropout: 0.0,
            log_every: 1,
            eval_every: None,
            save_every: None,
            checkpoint_activations: false,
            kernels: Kernels::Tunelab,
            frozen_f16: false,
        }
    }

    /// Reject settings that cannot work, naming the field.
    pub fn validate(&self) -> Result<()> {
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(Error::setting(
                "lr",
                format!("must be positive, got {}", self.lr),
            ));
        }
        for (field, v) in [
            ("batch_size", self.batch_size),
            ("grad_accum", self.grad_accum),
            ("log_every", self.log_every),
        ] {
            if v == 0 {
                return Err(Error::setting(field, "must be at least 1"));
            }
        }
        for (field, p) in [
            ("attention_dropout", self.attention_dropout),
            ("residual_dropout", self.residual_dropout),
        ] {
            if !(0.0..1.0).contains(&p) {
                return Err(Error::setting(field, format!("must be in [0, 1), got {p}")));
            }
        }
        if let Some(c) = self.clip
            && !(c > 0.0 && c.is_finite())
        {
            return Err(Error::setting("clip", format!("must be positive, got {c}")));
        }
        Ok(())
    }
}

/// The autodiff device to load a model on for training: `device` with autodiff, and with
/// activation checkpointing when asked (every tensor of a step must carry the same strategy, so
/// the model is loaded on this device, not converted later).
pub fn training_device(device: &Device, checkpoint_activations: bool) -> Device {
    let d = device.clone().autodiff();
    if checkpoint_activations {
        d.gradient_checkpointing()
    } else {
        d
    }
}

/// `t` as a tracked tensor of the training device (same checkpointing strategy as the device).
fn on_device<const D: usize>(t: Tensor<D>, device: &Device) -> Tensor<D> {
    let t = t.autodiff();
    match device.gradient_checkpointing_strategy() {
        Some(s) => t.with_gradient_checkpointing_strategy(s),
        None => t,
    }
}

/// Mean loss per target token of `model` (on a non-autodiff `device`) over `data`, in batches of
/// `batch_size`.
pub async fn evaluate_loss(
    model: &CausalLm,
    device: &Device,
    data: &Dataset,
    batch_size: usize,
) -> Result<f64> {
    let mut total = 0.0;
    let refs: Vec<_> = data.examples.iter().collect();
    for chunk in refs.chunks(batch_size.max(1)) {
        let b = collate(chunk, device);
        let loss = summed_lm_loss(model, b.ids, b.mask, b.labels);
        total += read_f32(loss).await?[0] as f64;
    }
    Ok(total / data.target_tokens.max(1) as f64)
}

/// Training progress that a checkpoint must restore.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Progress {
    /// Optimizer steps done.
    pub step: usize,
    pub tokens_seen: u64,
    /// (step, loss) of every step read back so far.
    pub losses: Vec<(usize, f64)>,
    pub evals: Vec<(usize, f64)>,
}

/// What a run produced.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Summary {
    pub steps: usize,
    pub tokens_seen: u64,
    pub final_loss: Option<f64>,
    pub final_eval_loss: Option<f64>,
    pub trainable_parameters: u64,
    pub seconds: f64,
}

/// The gradient of one tensor, flattened, with its shape in our layout.
pub struct Grad {
    pub flat: Tensor<1>,
    pub dims: Vec<usize>,
    /// True when the Hugging Face / PEFT layout is the transpose of `dims`.
    pub hf_transposed: bool,
}

/// A model set up for training, with optimizer state and progress.
pub struct Trainer {
    pub model: CausalLm,
    pub config: TrainConfig,
    pub optimizer: Optimizer,
    pub progress: Progress,
    /// Names of the trainable tensors.
    pub trainable: Vec<String>,
    pub trainable_parameters: u64,
    /// When set, [`Trainer::run`] returns after this many optimizer steps without writing the
    /// final checkpoint; calling it again continues the same schedule (evaluation at budgets,
    /// pause in the browser).
    pub pause_at: Option<usize>,
    device: Device,
    /// `config.json` of the base model (written into full checkpoints).
    base_config_json: String,
    /// Files copied into every full checkpoint (tokenizer files).
    extra_files: Vec<File>,
    /// Name recorded as the adapter's base model.
    base_name: String,
}

impl Trainer {
    /// Prepare `model` (loaded on an autodiff `device`) for `config.method`: freeze what must not
    /// train, attach LoRA adapters (fresh, or `adapter` when resuming or continuing one), set
    /// dropout.
    pub fn new(
        mut model: CausalLm,
        device: Device,
        config: TrainConfig,
        base_config_json: String,
        extra_files: Vec<File>,
        base_name: String,
        adapter: Option<&lora::PeftAdapter>,
    ) -> Result<Self> {
        config.validate()?;
        if !device.is_autodiff() {
            return Err(Error::Device("training needs an autodiff device".into()));
        }
        let checkpointing = device.gradient_checkpointing_strategy()
            == Some(burn::tensor::GradientCheckpointingStrategy::Balanced);
        if config.checkpoint_activations != checkpointing {
            return Err(Error::Device(format!(
                "checkpoint_activations is {} but the model was loaded on a device {} activation checkpointing (make it with train::training_device)",
                config.checkpoint_activations,
                if checkpointing { "with" } else { "without" }
            )));
        }
        crate::kernels::seed(&device, config.seed);
        match &config.method {
            Method::Lora(l) => match adapter {
                Some(a) => {
                    lora::from_peft(&mut model, a, "adapter_config.json", &device)?;
                }
                None => {
                    lora::attach(&mut model, l, &device)?;
                }
            },
            Method::Full(f) => {
                let res: Vec<regex::Regex> = f
                    .freeze
                    .iter()
                    .map(|r| {
                        regex::Regex::new(r)
                            .map_err(|e| Error::setting("freeze", format!("`{r}`: {e}")))
                    })
                    .collect::<Result<_>>()?;
                model.for_each_param(&mut |name, mut p| {
                    let frozen = (!f.train_embeddings && CausalLm::is_embedding_or_head(name))
                        || res.iter().any(|r| r.is_match(name));
                    p.set_trainable(!frozen);
                });
            }
        }
        // What trains does so in f32, whatever the model's storage (a base kept in f16); with
        // burn's kernels everything is f32 (its matmul would otherwise cast an f16 weight at
        // every step and keep the f32 copy for the backward pass).
        let burn = config.kernels == Kernels::Burn;
        model.store_matrices(FloatDType::F32, &|trains| trains || burn);
        if config.frozen_f16 {
            let why = match config.kernels {
                Kernels::Burn => Some("needs tunelab's kernels (--kernels tunelab)"),
                Kernels::Tunelab => crate::kernels::f16_unavailable(&device),
            };
            if let Some(why) = why {
                return Err(Error::setting("frozen_f16", why));
            }
            model.store_matrices(FloatDType::F16, &|trains| !trains);
        }
        model.set_dropout(config.attention_dropout, config.residual_dropout);
        model.set_kernels(config.kernels);
        let mut trainable = Vec::new();
        let mut count = 0u64;
        model.for_each_trainable(&mut |name, p| {
            trainable.push(name.to_string());
            count += p.hf_shape().iter().product::<usize>() as u64;
        });
        if trainable.is_empty() {
            return Err(Error::Input(
                "nothing to train: every parameter is frozen".into(),
            ));
        }
        Ok(Trainer {
            model,
            optimizer: Optimizer::new(config.optimizer.clone(), config.kernels),
            config,
            progress: Progress::default(),
            trainable,
            trainable_parameters: count,
            pause_at: None,
            device,
            base_config_json,
            extra_files,
            base_name,
        })
    }

    /// Optimizer steps a run over `examples` examples takes.
    pub fn total_steps(&self, examples: usize, seq_len: usize) -> usize {
        let per_step = self.config.batch_size * self.config.grad_accum;
        if let Some(s) = self.config.max_steps {
            return s;
        }
        if let Some(t) = self.config.max_tokens {
            return (t as usize).div_ceil(per_step * seq_len).max(1);
        }
        ((examples as f64 * self.config.epochs) / per_step as f64)
            .ceil()
            .max(1.0) as usize
    }

    /// The micro-batches of optimizer step `step` (a pure function of the step, so a resumed
    /// run sees exactly the data it would have seen).
    pub fn batches(&self, data: &Dataset, step: usize) -> Vec<Batch> {
        let n = data.examples.len();
        let (bs, acc) = (self.config.batch_size, self.config.grad_accum);
        let mut order_cache: Option<(usize, Vec<usize>)> = None;
        (0..acc)
            .map(|m| {
                let picked: Vec<_> = (0..bs)
                    .map(|k| {
                        let global = (step * acc + m) * bs + k;
                        let (epoch, pos) = (global / n, global % n);
                        if order_cache.as_ref().map(|c| c.0) != Some(epoch) {
                            order_cache = Some((epoch, epoch_order(n, self.config.seed, epoch)));
                        }
                        &data.examples[order_cache.as_ref().expect("set above").1[pos]]
                    })
                    .collect();
                collate(&picked, &self.device)
            })
            .collect()
    }

    /// One optimizer step over `micro` batches: forward, loss, backward, clip, update. Returns
    /// the mean loss and the pre-clip global gradient norm as device tensors (not read back).
    pub fn step(&mut self, micro: &[Batch], lr: f64) -> (Tensor<1>, Tensor<1>) {
        let (loss, mut grads) = self.gradients(micro);
        let plus = self.config.lora_plus_ratio.unwrap_or(1.0);
        let mut items = Vec::new();
        self.model.for_each_trainable(&mut |name, p| {
            let Some(g) = grads.remove(name) else { return };
            let param = match p {
                ParamMut::Vector(t) => t.val().inner(),
                ParamMut::Matrix(t, _) => t.val().inner().reshape([-1]),
            };
            let lora_b = name.ends_with("lora_B.weight");
            items.push(Item {
                name: name.to_string(),
                param,
                grad: g.flat,
                lr: if lora_b { lr * plus } else { lr },
                class: lora_b as usize,
            });
        });
        let names: Vec<String> = items.iter().map(|it| it.name.clone()).collect();
        let (new, norm) = self.optimizer.step(items, self.config.clip);
        let mut new: BTreeMap<String, Tensor<1>> = names.into_iter().zip(new).collect();
        self.model.for_each_trainable(&mut |name, p| {
            let Some(t) = new.remove(name) else { return };
            match p {
                ParamMut::Vector(p) => *p = Param::from_tensor(on_device(t, &self.device)),
                ParamMut::Matrix(p, _) => {
                    let t = t.reshape(p.val().dims());
                    *p = Param::from_tensor(on_device(t, &self.device));
                }
            }
        });
        (loss, norm)
    }

    /// Mean loss over `micro` batches (weighted by their target tokens, so accumulation equals
    /// one large batch) and the gradient of every trainable tensor, summed over micro-batches.
    pub fn gradients(&mut self, micro: &[Batch]) -> (Tensor<1>, BTreeMap<String, Grad>) {
        let targets = micro.iter().map(|b| b.targets).sum::<usize>().max(1) as f64;
        let mut grads: BTreeMap<String, Grad> = BTreeMap::new();
        let mut loss_sum: Option<Tensor<1>> = None;
        for b in micro {
            let loss = summed_lm_loss(&self.model, b.ids.clone(), b.mask.clone(), b.labels.clone())
                .div_scalar(targets);
            let g = loss.backward();
            self.model.for_each_trainable(&mut |name, p| {
                let (grad, dims, hf_transposed) = match &p {
                    ParamMut::Vector(t) => (
                        t.val().grad(&g).map(|x| x.reshape([-1])),
                        t.val().dims().to_vec(),
                        false,
                    ),
                    ParamMut::Matrix(t, tr) => (
                        t.val().grad(&g).map(|x| x.reshape([-1])),
                        t.val().dims().to_vec(),
                        *tr,
                    ),
                };
                let Some(grad) = grad else { return };
                let flat = match grads.remove(name) {
                    Some(prev) => prev.flat + grad,
                    None => grad,
                };
                grads.insert(
                    name.to_string(),
                    Grad {
                        flat,
                        dims,
                        hf_transposed,
                    },
                );
            });
            let l = loss.inner();
            loss_sum = Some(match loss_sum {
                Some(s) => s + l,
                None => l,
            });
        }
        (loss_sum.expect("at least one micro-batch"), grads)
    }

    /// Mean loss of the model on `data` (no dropout, no gradients).
    pub async fn evaluate(&self, data: &Dataset) -> Result<f64> {
        evaluate_loss(
            &self.model.valid(),
            &self.device.clone().inner(),
            data,
            self.config.batch_size,
        )
        .await
    }

    /// What a training step is, with its sizes, for device errors.
    fn describe_step(&self, step: usize, seq_len: usize) -> String {
        format!(
            "training step {} (batch {} × {seq_len} tokens × {} accumulated, {} trainable parameters)",
            step + 1,
            self.config.batch_size,
            self.config.grad_accum,
            self.trainable_parameters
        )
    }

    /// Train on `data` until the configured budget is spent, evaluating on `eval` and saving
    /// checkpoints through `sink`. Starts from `self.progress` (non-zero after a resume).
    pub async fn run(
        &mut self,
        data: &Dataset,
        eval: Option<&Dataset>,
        sink: &mut dyn CheckpointSink,
        on_event: &mut dyn FnMut(&Event),
    ) -> Result<Summary> {
        crate::kernels::prepare(&self.device, self.config.kernels, on_event).await;
        let seq_len = data.examples[0].ids.len();
        let total = self.total_steps(data.examples.len(), seq_len);
        let per_step = self.config.batch_size * self.config.grad_accum;
        let start = Instant::now();
        let mut window = (Instant::now(), 0u64);
        let mut pending: Vec<(usize, f64, Tensor<1>, Tensor<1>)> = Vec::new();
        let mut last_good: Option<(usize, CausalLm, Optimizer, Progress)> = None;
        while self.progress.step < total && self.pause_at != Some(self.progress.step) {
            let step = self.progress.step;
            let lr = self.config.lr
                * factor(self.config.schedule, step, total, self.config.warmup_steps);
            // Dropout masks depend only on (seed, step), so a resumed run draws the same ones.
            crate::kernels::seed(&self.device, self.config.seed.wrapping_add(step as u64));
            let batches = self.batches(data, step);
            let tokens: u64 = batches.iter().map(|b| b.tokens as u64).sum();
            // A device fault during the step (an allocation refused, the device lost) surfaces
            // at the next readback, which names the step.
            let (loss, norm) = self.step(&batches, lr);
            pending.push((step, lr, loss, norm));
            self.progress.step += 1;
            self.progress.tokens_seen += tokens;
            window.1 += tokens;
            let done = self.progress.step;
            if done.is_multiple_of(self.config.log_every)
                || done == total
                || self.pause_at == Some(done)
            {
                for (s, lr, loss, norm) in pending.drain(..) {
                    let what = || self.describe_step(s, seq_len);
                    let loss = device_fault(what, read_f32(loss).await)?[0] as f64;
                    let norm = device_fault(what, read_f32(norm).await)?[0] as f64;
                    if !loss.is_finite() || !norm.is_finite() {
                        let kept = match last_good.take() {
                            Some((good_step, model, optim, progress)) => {
                                let (m, o, p) = (
                                    std::mem::replace(&mut self.model, model),
                                    std::mem::replace(&mut self.optimizer, optim),
                                    std::mem::replace(&mut self.progress, progress),
                                );
                                let name = format!("checkpoint-{good_step}");
                                self.save(sink, &name, on_event).await?;
                                drop((m, o, p));
                                format!("the last good state (step {good_step}) is saved as {name}")
                            }
                            None => "no good state to keep (it diverged before the first readback)"
                                .into(),
                        };
                        return Err(Error::Diverged {
                            step: s + 1,
                            message: format!(
                                "loss {loss}, gradient norm {norm} (try a lower `lr` or `clip` 1.0); {kept}"
                            ),
                        });
                    }
                    self.progress.losses.push((s + 1, loss));
                    let secs = window.0.elapsed().as_secs_f64().max(1e-9);
                    on_event(&Event::Step {
                        step: s + 1,
                        total_steps: total,
                        epoch: ((s + 1) * per_step) as f64 / data.examples.len() as f64,
                        loss,
                        lr,
                        grad_norm: norm,
                        tokens_per_s: window.1 as f64 / secs,
                        tokens_seen: self.progress.tokens_seen,
                    });
                }
                window = (Instant::now(), 0);
                last_good = Some((
                    done,
                    self.model.clone(),
                    self.optimizer.clone(),
                    self.progress.clone(),
                ));
            }
            if let (Some(e), Some(every)) = (eval, self.config.eval_every)
                && (done.is_multiple_of(every) || done == total)
            {
                let what = || {
                    format!(
                        "the evaluation at step {done} ({} examples)",
                        e.examples.len()
                    )
                };
                let loss = device_fault(what, self.evaluate(e).await)?;
                self.progress.evals.push((done, loss));
                on_event(&Event::Eval {
                    step: done,
                    loss,
                    perplexity: loss.exp(),
                });
            }
            if let Some(every) = self.config.save_every
                && done.is_multiple_of(every)
                && done < total
            {
                self.save(sink, &format!("checkpoint-{done}"), on_event)
                    .await?;
            }
        }
        if self.progress.step == total {
            self.save(sink, "final", on_event).await?;
        }
        Ok(Summary {
            steps: self.progress.step,
            tokens_seen: self.progress.tokens_seen,
            final_loss: self.progress.losses.last().map(|l| l.1),
            final_eval_loss: self.progress.evals.last().map(|l| l.1),
            trainable_parameters: self.trainable_parameters,
            seconds: start.elapsed().as_secs_f64(),
        })
    }

    /// The trained model's files: the PEFT adapter of a LoRA run, the Hugging Face checkpoint
    /// (with the base model's tokenizer files) of full fine-tuning.
    pub async fn model_files(&self) -> Result<Vec<File>> {
        match &self.config.method {
            Method::Lora(l) => export::peft_files(&self.model, l, &self.base_name).await,
            Method::Full(_) => self.merged_files().await,
        }
    }

    /// A Hugging Face checkpoint of the trained model, LoRA adapters merged into the weights.
    pub async fn merged_files(&self) -> Result<Vec<File>> {
        export::merged_files(&self.model, &self.base_config_json, &self.extra_files).await
    }

    /// The files of a checkpoint: the model (PEFT adapter or HF checkpoint), optimizer state and
    /// `trainer_state.json`.
    pub async fn checkpoint_files(&self) -> Result<Vec<File>> {
        let mut files = self.model_files().await?;
        let opt = self.optimizer.export().await?;
        let tensors: Vec<(String, Vec<usize>, &[f32])> = opt
            .iter()
            .map(|(k, v)| (k.clone(), vec![v.len()], &v[..]))
            .collect();
        files.push(File::new(
            "optimizer.safetensors",
            crate::hf::safetensors::serialize_f32(&tensors),
        ));
        let state = serde_json::json!({
            "progress": self.progress,
            "optimizer_steps": self.optimizer.steps,
            "config": self.config,
            "model_signature": signature(&self.model),
            "trainable_parameters": self.trainable_parameters,
        });
        files.push(File::json("trainer_state.json", &state));
        Ok(files)
    }

    async fn save(
        &self,
        sink: &mut dyn CheckpointSink,
        name: &str,
        on_event: &mut dyn FnMut(&Event),
    ) -> Result<()> {
        let what = || {
            format!(
                "reading back {name} ({} trainable parameters)",
                self.trainable_parameters
            )
        };
        sink.save(name, device_fault(what, self.checkpoint_files().await)?)?;
        on_event(&Event::Checkpoint {
            step: self.progress.step,
            name: name.to_string(),
        });
        Ok(())
    }

    /// Continue from a checkpoint's `trainer_state.json` and `optimizer.safetensors` (the model
    /// weights or adapter must already be loaded). Fails if the checkpoint is of another model.
    pub fn restore(&mut self, state_json: &str, optimizer: Vec<(String, Vec<f32>)>) -> Result<()> {
        let bad = |m: String| Error::setting("resume", format!("trainer_state.json: {m}"));
        let v: serde_json::Value =
            serde_json::from_str(state_json).map_err(|e| bad(e.to_string()))?;
        let sig = v["model_signature"].as_str().unwrap_or_default();
        if sig != signature(&self.model) {
            return Err(bad(
                "the checkpoint belongs to a different model (parameter names or shapes differ)"
                    .into(),
            ));
        }
        // Each moment belongs to a trainable tensor and has its length, checked before anything
        // changes (a mismatch would otherwise stop the run at its first step).
        let mut sizes = BTreeMap::new();
        self.model.for_each_trainable(&mut |name, p| {
            sizes.insert(name.to_string(), p.hf_shape().iter().product::<usize>());
        });
        let bad_state = |m: String| Error::setting("resume", format!("optimizer.safetensors: {m}"));
        for (key, values) in &optimizer {
            let name = key
                .strip_prefix("exp_avg_sq.")
                .or_else(|| key.strip_prefix("exp_avg."));
            match name.and_then(|n| sizes.get(n)) {
                Some(&n) if n == values.len() => {}
                Some(&n) => {
                    return Err(bad_state(format!(
                        "`{key}` has {} values, its parameter {n}",
                        values.len()
                    )));
                }
                None => {
                    return Err(bad_state(format!(
                        "`{key}` is not the state of a trainable parameter"
                    )));
                }
            }
        }
        self.progress =
            serde_json::from_value(v["progress"].clone()).map_err(|e| bad(e.to_string()))?;
        let steps = v["optimizer_steps"].as_u64().unwrap_or(0);
        self.optimizer
            .import(steps, optimizer, &self.device.clone().inner());
        Ok(())
    }
}

/// `result` with a failed readback turned into a [`Error::DeviceFault`] naming `operation`: a
/// lost device or a refused allocation surfaces at the next readback, not where it happened.
fn device_fault<T>(operation: impl FnOnce() -> String, result: Result<T>) -> Result<T> {
    result.map_err(|e| match e {
        Error::Readback(message) => Error::DeviceFault {
            operation: operation(),
            message,
        },
        e => e,
    })
}

/// Fail unless the checkpoint state `state_json` was written for a model of `model`'s
/// architecture (same parameter names and shapes).
pub fn check_signature(model: &CausalLm, state_json: &str) -> Result<()> {
    let v: serde_json::Value = serde_json::from_str(state_json)
        .map_err(|e| Error::setting("resume", format!("trainer_state.json: {e}")))?;
    if v["model_signature"].as_str().unwrap_or_default() != signature(model) {
        return Err(Error::setting(
            "resume",
            "the checkpoint belongs to a different model (parameter names or shapes differ)",
        ));
    }
    Ok(())
}

/// A fingerprint of the model's base parameter names and shapes (FNV-1a), so a checkpoint is
/// never resumed onto another architecture.
pub fn signature(model: &CausalLm) -> String {
    let mut m = model.clone();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    m.for_each_param(&mut |name, p| {
        for byte in format!("{name}{:?};", p.hf_shape()).bytes() {
            h ^= byte as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    });
    format!("{h:016x}")
}

/// A training step's shape and the settings that decide which large intermediates it allocates.
#[derive(Debug, Clone, Copy)]
pub struct StepShape {
    pub batch: usize,
    pub seq: usize,
    pub kernels: Kernels,
}

/// The largest single buffer a training step allocates on a GPU (bytes) and what it holds, in
/// f32. With burn's ops: the logits `[batch, seq, vocab]` or the attention scores
/// `[batch, heads, seq, seq]`. With tunelab's kernels neither exists whole: the loss holds one
/// chunk of logit rows ([`crate::kernels::chunked_nll`]; assuming the head carries no adapter)
/// and fused attention (attention dropout included) no scores, only the additive mask
/// `[batch, 1, seq, seq]`; then the MLP's inner activations or the embedding table may be the
/// largest.
pub fn largest_buffer(config: &crate::hf::ModelConfig, step: &StepShape) -> (u64, &'static str) {
    let (heads, head_dim, hidden, inner) = match &config.arch {
        crate::hf::Architecture::Llama(c) => (
            c.num_attention_heads,
            c.head_dim,
            c.hidden_size,
            c.intermediate_size,
        ),
        crate::hf::Architecture::Gpt2(c) => (c.n_head, c.n_embd / c.n_head, c.n_embd, c.n_inner),
    };
    let kernels = step.kernels == Kernels::Tunelab;
    let fused_attention = kernels && crate::kernels::takes_heads(step.batch, heads, head_dim);
    // In u64: on wasm32 the products overflow usize at shapes a browser must refuse.
    let [batch, seq, heads, hidden, inner, vocab] = [
        step.batch,
        step.seq,
        heads,
        hidden,
        inner,
        config.vocab_size(),
    ]
    .map(|x| x as u64);
    let rows = batch * seq;
    let logit_rows = match kernels {
        true => rows.min((crate::kernels::CHUNK_BYTES as u64 / (4 * vocab)).max(1)),
        false => rows,
    };
    let square = batch * seq * seq * 4;
    [
        (logit_rows * vocab * 4, "logits"),
        match fused_attention {
            true => (square, "attention-mask"),
            false => (heads * square, "attention-score"),
        },
        (rows * inner * 4, "MLP activation"),
        (vocab * hidden * 4, "embedding-table"),
    ]
    .into_iter()
    .fold((0, "logits"), |best, c| if c.0 > best.0 { c } else { best })
}

/// Refuse a step whose largest buffer would exceed the device's binding limit (WebGPU and
/// Vulkan fail such allocations), saying which limit, by how much, and which settings to lower.
pub fn check_buffer_limit(
    config: &crate::hf::ModelConfig,
    step: &StepShape,
    max_binding: u64,
) -> Result<()> {
    let (bytes, what) = largest_buffer(config, step);
    if bytes > max_binding {
        let (batch, seq) = (step.batch, step.seq);
        return Err(Error::Device(format!(
            "a batch of {batch} × {seq} tokens needs a {:.1} MiB {what} buffer, {:.1} MiB over this adapter's max_storage_buffer_binding_size ({:.1} MiB); use a smaller `batch_size` or `seq_len`",
            crate::hf::mib(bytes),
            crate::hf::mib(bytes - max_binding),
            crate::hf::mib(max_binding)
        )));
    }
    Ok(())
}
