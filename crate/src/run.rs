//! A fine-tuning run: one serialisable [`RunSpec`] (every setting with its default; the LoRA
//! alpha and learning-rate rules live here and nowhere else), the data it trains on
//! ([`prepare_data`]), and the [`Run`] that the CLI, the page, the experiment runner and
//! pretraining all drive: train to a step, pause, resume, evaluate, export, analyse, checkpoint.

use burn::module::Module;
use burn::tensor::Device;

use crate::analysis::spectrum::{self, MatrixSpectrum, SpectrumOptions};
use crate::error::{Error, Result};
use crate::eval::suite::{self, EvalOptions, EvalReport, Task};
use crate::event::Event;
use crate::files::File;
use crate::hf::{ModelConfig, Tokenizer};
use crate::kernels::Kernels;
use crate::model::lora::{LoraConfig, LoraInit, PeftAdapter};
use crate::model::{CausalLm, LmView};
use crate::session::Session;
use crate::train::CheckpointSink;
use crate::train::data::{DataOptions, DataReader, Dataset, Format, Regime};
use crate::train::optim::{OptimizerConfig, OptimizerKind};
use crate::train::resume::Resume;
use crate::train::schedule::Schedule;
use crate::train::trainer::{
    FullConfig, Method, Progress, StepShape, Summary, TrainConfig, Trainer, check_buffer_limit,
};

/// Full fine-tuning or LoRA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MethodKind {
    Full,
    Lora,
}

impl std::str::FromStr for MethodKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "full" => Ok(MethodKind::Full),
            "lora" => Ok(MethodKind::Lora),
            _ => Err(format!("unknown method `{s}`; expected full or lora")),
        }
    }
}

impl std::fmt::Display for MethodKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MethodKind::Full => "full",
            MethodKind::Lora => "lora",
        })
    }
}

/// Default learning rate of full fine-tuning.
pub const FULL_LR: f64 = 1e-5;
/// LoRA's learning rate over full fine-tuning's (the paper: LoRA wants about 10× the rate).
pub const LORA_LR_MULTIPLIER: f64 = 10.0;

/// The learning rate of `method` when none is given: `full_lr`, times `lora_multiplier` for LoRA.
pub fn default_lr(method: MethodKind, full_lr: f64, lora_multiplier: f64) -> f64 {
    match method {
        MethodKind::Full => full_lr,
        MethodKind::Lora => full_lr * lora_multiplier,
    }
}

/// LoRA alpha when none is given: 2 × rank, as the paper.
pub fn default_alpha(rank: usize) -> f64 {
    2.0 * rank as f64
}

/// Everything that defines a fine-tuning run besides the model and the data's source, with a
/// default for every field (so a JSON/TOML spec names only what it changes).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunSpec {
    pub method: MethodKind,
    /// LoRA rank.
    pub rank: usize,
    /// LoRA alpha (default 2 × rank).
    pub alpha: Option<f64>,
    pub lora_dropout: f64,
    /// Scale LoRA by alpha/√rank (rsLoRA).
    pub rslora: bool,
    pub lora_init: LoraInit,
    /// LoRA targets: module names (`q_proj`, `c_attn`), presets `attention` / `mlp` / `all`, or
    /// `re:<regex>` on full module paths.
    pub targets: Vec<String>,
    /// LoRA+: learning rate of the B factors is `lr × ratio`.
    pub lora_plus_ratio: Option<f64>,
    /// Full fine-tuning: also train embeddings and the LM head.
    pub train_embeddings: bool,
    /// Full fine-tuning: regexes of tensors to keep frozen.
    pub freeze: Vec<String>,
    pub optimizer: OptimizerKind,
    pub weight_decay: f64,
    /// Peak learning rate (default [`FULL_LR`], × [`LORA_LR_MULTIPLIER`] for LoRA).
    pub lr: Option<f64>,
    pub schedule: Schedule,
    /// Warm-up: a fraction of the steps (below 1) or a number of steps.
    pub warmup: f64,
    pub epochs: f64,
    /// Stop after this many optimizer steps (overrides `epochs`).
    pub max_steps: Option<usize>,
    /// Stop after this many training tokens (overrides `epochs`).
    pub max_tokens: Option<u64>,
    pub batch_size: usize,
    pub grad_accum: usize,
    /// Tokens per training example.
    pub seq_len: usize,
    /// `cpt` (loss on every token, packed) or `ift` (loss on responses); default: from the data.
    pub regime: Option<Regime>,
    /// Skip data lines that are not valid records, and count them.
    pub skip_bad_lines: bool,
    /// Render instruction records (`messages`, and prompt/response pairs as a user and an
    /// assistant turn) with the model's chat template when it has one; false: plain text.
    pub chat_template: bool,
    pub seed: u64,
    /// Clip the global gradient norm to this (0 = off).
    pub clip: f64,
    pub attention_dropout: f64,
    pub residual_dropout: f64,
    /// Read the loss back every this many steps.
    pub log_every: usize,
    pub eval_every: Option<usize>,
    pub save_every: Option<usize>,
    /// Share of the training examples held out (seeded) to measure the evaluation loss on, when
    /// the data comes without evaluation data (0 = none).
    pub holdout: f64,
    /// Recompute memory-bound activations in the backward pass (less memory, more time).
    pub checkpoint_activations: bool,
    /// tunelab's WGSL kernels (on a GPU) or burn's generic ones.
    pub kernels: Kernels,
    /// Keep the frozen weight matrices in f16 (see [`TrainConfig::frozen_f16`]).
    pub frozen_f16: bool,
}

impl Default for RunSpec {
    fn default() -> Self {
        RunSpec {
            method: MethodKind::Lora,
            rank: 16,
            alpha: None,
            lora_dropout: 0.05,
            rslora: false,
            lora_init: LoraInit::Kaiming,
            targets: vec!["all".into()],
            lora_plus_ratio: None,
            train_embeddings: false,
            freeze: Vec::new(),
            optimizer: OptimizerKind::AdamW,
            weight_decay: 0.0,
            lr: None,
            schedule: Schedule::Cosine,
            warmup: 0.1,
            epochs: 1.0,
            max_steps: None,
            max_tokens: None,
            batch_size: 8,
            grad_accum: 1,
            seq_len: 128,
            regime: None,
            skip_bad_lines: false,
            chat_template: true,
            seed: 0,
            clip: 1.0,
            attention_dropout: 0.0,
            residual_dropout: 0.0,
            log_every: 10,
            eval_every: None,
            holdout: 0.0,
            save_every: None,
            checkpoint_activations: false,
            kernels: Kernels::Tunelab,
            frozen_f16: false,
        }
    }
}

impl RunSpec {
    /// Parse a spec from JSON (text starting with `{`) or TOML; `name` (the file) is used in
    /// errors, which also name the field.
    pub fn parse(text: &str, name: &str) -> Result<Self> {
        let spec: RunSpec = if text.trim_start().starts_with('{') {
            serde_json::from_str(text).map_err(|e| Error::File {
                path: name.to_string(),
                message: e.to_string(),
            })?
        } else {
            toml::from_str(text).map_err(|e| Error::File {
                path: name.to_string(),
                message: e.to_string(),
            })?
        };
        spec.validate()?;
        Ok(spec)
    }

    /// Which weights train, with LoRA's alpha rule applied.
    pub fn method(&self) -> Method {
        match self.method {
            MethodKind::Lora => Method::Lora(LoraConfig {
                rank: self.rank,
                alpha: self.alpha.unwrap_or(default_alpha(self.rank)),
                dropout: self.lora_dropout,
                rslora: self.rslora,
                init: self.lora_init,
                targets: self.targets.clone(),
            }),
            MethodKind::Full => Method::Full(FullConfig {
                train_embeddings: self.train_embeddings,
                freeze: self.freeze.clone(),
            }),
        }
    }

    /// The peak learning rate, with the method's default when none is given.
    pub fn lr(&self) -> f64 {
        self.lr
            .unwrap_or(default_lr(self.method, FULL_LR, LORA_LR_MULTIPLIER))
    }

    /// Warm-up steps of a run of `total` steps.
    pub fn warmup_steps(&self, total: usize) -> usize {
        if self.warmup < 1.0 {
            (self.warmup * total as f64).round() as usize
        } else {
            self.warmup as usize
        }
    }

    /// The trainer's settings for a run of `total` optimizer steps.
    pub fn train_config(&self, total: usize) -> TrainConfig {
        TrainConfig {
            optimizer: match self.optimizer {
                OptimizerKind::AdamW => OptimizerConfig::adamw(self.weight_decay),
                OptimizerKind::Lion => OptimizerConfig::lion(self.weight_decay),
            },
            lora_plus_ratio: self.lora_plus_ratio,
            schedule: self.schedule,
            warmup_steps: self.warmup_steps(total),
            epochs: self.epochs,
            max_steps: self.max_steps,
            max_tokens: self.max_tokens,
            batch_size: self.batch_size,
            grad_accum: self.grad_accum,
            seed: self.seed,
            clip: (self.clip > 0.0).then_some(self.clip),
            attention_dropout: self.attention_dropout,
            residual_dropout: self.residual_dropout,
            log_every: self.log_every,
            eval_every: self.eval_every,
            save_every: self.save_every,
            checkpoint_activations: self.checkpoint_activations,
            kernels: self.kernels,
            frozen_f16: self.frozen_f16,
            ..TrainConfig::new(self.method(), self.lr())
        }
    }

    /// Reject settings that cannot work, naming the field.
    pub fn validate(&self) -> Result<()> {
        if !(0.0..=0.5).contains(&self.holdout) {
            return Err(Error::setting(
                "holdout",
                format!("must be in [0, 0.5], got {}", self.holdout),
            ));
        }
        if self.seq_len < 2 {
            return Err(Error::setting(
                "seq_len",
                format!("must be at least 2, got {}", self.seq_len),
            ));
        }
        if !(self.warmup >= 0.0 && self.warmup.is_finite()) {
            return Err(Error::setting(
                "warmup",
                format!(
                    "must be a fraction or a number of steps, got {}",
                    self.warmup
                ),
            ));
        }
        if self.epochs.is_nan() || self.epochs <= 0.0 {
            return Err(Error::setting(
                "epochs",
                format!("must be positive, got {}", self.epochs),
            ));
        }
        if !(self.clip >= 0.0 && self.clip.is_finite()) {
            return Err(Error::setting(
                "clip",
                format!("must be positive (0 = off), got {}", self.clip),
            ));
        }
        if self.method == MethodKind::Lora {
            if self.rank == 0 {
                return Err(Error::setting("rank", "must be at least 1"));
            }
            if !(0.0..1.0).contains(&self.lora_dropout) {
                return Err(Error::setting(
                    "lora_dropout",
                    format!("must be in [0, 1), got {}", self.lora_dropout),
                ));
            }
            if let Some(a) = self.alpha
                && !(a > 0.0 && a.is_finite())
            {
                return Err(Error::setting(
                    "alpha",
                    format!("must be positive, got {a}"),
                ));
            }
        }
        for (field, budget) in [
            ("max_steps", self.max_steps.map(|s| s as u64)),
            ("max_tokens", self.max_tokens),
        ] {
            if budget == Some(0) {
                return Err(Error::setting(field, "must be at least 1"));
            }
        }
        self.train_config(0).validate()
    }
}

/// Where training data comes from.
pub enum DataSource<'a> {
    /// A file natively (`.txt`, `.jsonl`, either `.gz`), read line by line.
    #[cfg(feature = "native")]
    File(&'a std::path::Path),
    /// A file's bytes (the page's upload or download); `name` tells the format.
    Bytes { name: &'a str, bytes: &'a [u8] },
    /// GSM8K-layout word problems generated from `seed`.
    Math {
        train: usize,
        test: usize,
        seed: u64,
    },
}

/// Training data ready for a [`Run`].
pub struct Prepared {
    pub data: Dataset,
    /// The examples `spec.holdout` set aside (the run's evaluation data unless other is given).
    pub held_out: Option<Dataset>,
    /// The regime the data was read as (given, or detected).
    pub regime: Regime,
    /// Files generated along the way (`Math`: `train.jsonl` and `test.jsonl`, the latter the
    /// learning metric's test set).
    pub generated: Vec<File>,
}

/// Tokenize `source` with `session`'s tokenizer into `spec.seq_len`-token examples, read as
/// `spec.regime` (or detected: plain text and JSONL with `text` are continued pretraining, other
/// JSONL instruction tuning; generated math problems default to instruction tuning), reporting
/// progress. Chat records (`messages`) are rendered with the model's chat template if it has one.
pub fn prepare_data(
    session: &Session,
    source: DataSource<'_>,
    spec: &RunSpec,
    on_event: &mut dyn FnMut(&Event),
) -> Result<Prepared> {
    held_out(prepare_source(session, source, spec, on_event)?, spec)
}

/// [`prepare_data`] for a file whose bytes arrive as `body` (a download, or a file read in the
/// browser): each chunk is tokenized as it comes (gunzipped on the fly for `.gz`), so the file
/// is never whole in memory. `name` tells the format; `len` (when known) is its size, for
/// progress.
pub async fn prepare_stream(
    session: &Session,
    name: &str,
    body: &mut dyn crate::hf::source::Body,
    len: Option<u64>,
    spec: &RunSpec,
    on_event: &mut dyn FnMut(&Event),
) -> Result<Prepared> {
    let reader = data_reader(session, name, len, spec, on_event)?;
    held_out(read(reader.read_body(body).await?), spec)
}

/// Data read from a file, before the held-out part is taken.
fn read((data, regime): (Dataset, Regime)) -> Prepared {
    Prepared {
        data,
        held_out: None,
        regime,
        generated: Vec::new(),
    }
}

/// `prepared` with `spec.holdout` of its examples set aside.
fn held_out(mut prepared: Prepared, spec: &RunSpec) -> Result<Prepared> {
    if spec.holdout > 0.0 {
        prepared.held_out = Some(prepared.data.hold_out(spec.holdout, spec.seed)?);
    }
    Ok(prepared)
}

/// A reader of the data file `name` (of `len` bytes when known) with `session`'s tokenizer, as
/// `spec` says.
fn data_reader<'a>(
    session: &'a Session,
    name: &str,
    len: Option<u64>,
    spec: &RunSpec,
    on_event: &'a mut dyn FnMut(&Event),
) -> Result<DataReader<'a>> {
    let opts = data_options(session, spec)?;
    DataReader::new(
        name,
        Format::of(name),
        len,
        session.tokenizer()?,
        opts,
        on_event,
    )
}

/// How `spec` reads data for `session`'s model.
fn data_options(session: &Session, spec: &RunSpec) -> Result<DataOptions> {
    Ok(DataOptions {
        regime: spec.regime,
        seq_len: spec.seq_len,
        skip_bad_lines: spec.skip_bad_lines,
        pad_id: session.tokenizer()?.eos_id.unwrap_or(0),
        chat_template: match spec.chat_template {
            true => session.chat_template()?,
            false => None,
        },
    })
}

fn prepare_source(
    session: &Session,
    source: DataSource<'_>,
    spec: &RunSpec,
    on_event: &mut dyn FnMut(&Event),
) -> Result<Prepared> {
    match source {
        #[cfg(feature = "native")]
        DataSource::File(path) => {
            let opts = data_options(session, spec)?;
            let tok = session.tokenizer()?;
            Ok(read(crate::train::data::load_with_regime(
                path, tok, &opts, on_event,
            )?))
        }
        DataSource::Bytes { name, bytes } => {
            let len = Some(bytes.len() as u64);
            let reader = data_reader(session, name, len, spec, on_event)?;
            Ok(read(reader.read_all(bytes)?))
        }
        DataSource::Math { train, test, seed } => {
            let (tr, te) = crate::corpus::math::splits(train, test, seed);
            let regime = spec.regime.unwrap_or(Regime::Ift);
            let lines = crate::corpus::math::training_lines(&tr, regime);
            let prepared = prepare_source(
                session,
                DataSource::Bytes {
                    name: "math.jsonl",
                    bytes: &lines,
                },
                &RunSpec {
                    regime: Some(regime),
                    ..spec.clone()
                },
                on_event,
            )?;
            Ok(Prepared {
                generated: crate::corpus::math::files(&tr, &te),
                ..prepared
            })
        }
    }
}

/// What [`Run::export`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportKind {
    /// The PEFT adapter (LoRA runs).
    Adapter,
    /// A Hugging Face checkpoint with the adapter merged in, or the fully fine-tuned weights.
    Merged,
    /// Weights or adapter with the optimizer state and progress, to resume from.
    Checkpoint,
}

impl std::str::FromStr for ExportKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "adapter" => Ok(ExportKind::Adapter),
            "merged" => Ok(ExportKind::Merged),
            "checkpoint" => Ok(ExportKind::Checkpoint),
            o => Err(Error::setting(
                "export",
                format!("`{o}`: expected adapter, merged or checkpoint"),
            )),
        }
    }
}

/// A fine-tuning run of a session's model: the trainer, its data and what it needs of the base
/// model (config, tokenizer, files) to evaluate and export.
pub struct Run {
    trainer: Trainer,
    data: Dataset,
    eval_data: Option<Dataset>,
    total: usize,
    config: ModelConfig,
    tokenizer: Option<Tokenizer>,
    source: String,
    /// The non-autodiff device evaluation runs on.
    eval_device: Device,
}

impl Run {
    /// Start a run of `spec` on `data` (held-out `eval` data optional) from `session`'s model.
    /// `max_binding` (the GPU's largest storage buffer binding) refuses a batch too large for it.
    pub fn new(
        session: &Session,
        spec: &RunSpec,
        data: Dataset,
        eval: Option<Dataset>,
        max_binding: Option<u64>,
    ) -> Result<Self> {
        spec.validate()?;
        Self::build(
            session,
            spec.train_config(0),
            Some(spec),
            data,
            eval,
            max_binding,
            None,
            None,
        )
    }

    /// Continue exactly from a checkpoint written by an earlier run (its settings, progress and
    /// optimizer state). Full fine-tuning continues from the checkpoint's weights (loaded, unless
    /// `session` was loaded from the checkpoint itself), LoRA from `session`'s model with the
    /// checkpoint's adapter.
    pub async fn resume(
        session: &Session,
        resume: Resume,
        data: Dataset,
        eval: Option<Dataset>,
        max_binding: Option<u64>,
    ) -> Result<Self> {
        let device = autodiff_device(session);
        let model = match (&resume.config.method, &resume.files) {
            (Method::Full(_), Some(files)) => Some(
                Session::load_within(files, device, max_binding, &mut |_| {})
                    .await?
                    .model,
            ),
            #[cfg(feature = "native")]
            (Method::Full(_), None)
                if session.source != resume.dir.display().to_string().trim_end_matches('/') =>
            {
                let source = crate::hf::ModelSource::Dir(resume.dir.clone());
                Some(Session::load(&source, device, &mut |_| {}).await?.model)
            }
            _ => None,
        };
        resume.check(model.as_ref().unwrap_or(&session.model))?;
        let adapter = resume.adapter().await?;
        let mut run = Self::build(
            session,
            resume.config.clone(),
            None,
            data,
            eval,
            max_binding,
            model,
            adapter.as_ref(),
        )?;
        resume.apply(&mut run.trainer)?;
        Ok(run)
    }

    #[allow(clippy::too_many_arguments)]
    fn build(
        session: &Session,
        config: TrainConfig,
        spec: Option<&RunSpec>,
        data: Dataset,
        eval: Option<Dataset>,
        max_binding: Option<u64>,
        model: Option<CausalLm>,
        adapter: Option<&PeftAdapter>,
    ) -> Result<Self> {
        let seq_len = match data.examples.first() {
            Some(e) => e.ids.len(),
            None => return Err(Error::Input("the training data has no examples".into())),
        };
        let step = StepShape {
            batch: config.batch_size,
            seq: seq_len,
            kernels: config.kernels,
        };
        check_limits(session, &step, max_binding)?;
        let device = autodiff_device(session);
        let model = model.unwrap_or_else(|| {
            if session.device.is_autodiff() {
                session.model.clone()
            } else {
                session.model.clone().train()
            }
        });
        let mut trainer = Trainer::new(
            model,
            device.clone(),
            config,
            session.config_json.clone(),
            session.extra_files.clone(),
            session.source.clone(),
            adapter,
        )?;
        let total = trainer.total_steps(data.examples.len(), seq_len);
        if let Some(spec) = spec {
            trainer.config.warmup_steps = spec.warmup_steps(total);
        }
        Ok(Run {
            trainer,
            data,
            eval_data: eval,
            total,
            config: session.config.clone(),
            tokenizer: session.tokenizer.clone(),
            source: session.source.clone(),
            eval_device: device.inner(),
        })
    }

    /// Optimizer steps the whole run takes.
    pub fn total_steps(&self) -> usize {
        self.total
    }

    /// Steps done, tokens seen, losses and evaluation losses so far.
    pub fn progress(&self) -> &Progress {
        &self.trainer.progress
    }

    /// The trainer's settings (as resolved from the spec, or restored from a checkpoint).
    pub fn config(&self) -> &TrainConfig {
        &self.trainer.config
    }

    /// Parameters that train.
    pub fn trainable_parameters(&self) -> u64 {
        self.trainer.trainable_parameters
    }

    /// Names of the tensors that train.
    pub fn trainable(&self) -> &[String] {
        &self.trainer.trainable
    }

    /// The training data.
    pub fn data(&self) -> &Dataset {
        &self.data
    }

    /// Whether every step has run.
    pub fn done(&self) -> bool {
        self.trainer.progress.step >= self.total
    }

    /// Train until optimizer step `step` (a pause: calling again continues the same schedule),
    /// or to the end (`None`, or a step at or past the end, which also saves the `final`
    /// checkpoint through `sink`). Evaluation loss on the held-out data and periodic
    /// checkpoints follow the spec's `eval_every` and `save_every`.
    pub async fn train_until(
        &mut self,
        step: Option<usize>,
        sink: &mut dyn CheckpointSink,
        on_event: &mut dyn FnMut(&Event),
    ) -> Result<Summary> {
        self.trainer.pause_at = step.filter(|&s| s < self.total);
        self.trainer
            .run(&self.data, self.eval_data.as_ref(), sink, on_event)
            .await
    }

    /// The tuned model for evaluation (no dropout, no gradient tracking).
    pub fn model(&self) -> CausalLm {
        self.trainer.model.valid()
    }

    /// `model` (from [`Run::model`]) as evaluation sees it.
    pub fn view<'a>(&'a self, model: &'a CausalLm) -> LmView<'a> {
        LmView {
            model,
            config: &self.config,
            tokenizer: self.tokenizer.as_ref(),
            device: &self.eval_device,
            source: &self.source,
        }
    }

    /// Score the tuned model on `tasks`.
    pub async fn evaluate(
        &self,
        tasks: &[Task],
        opts: &EvalOptions,
        on_event: &mut dyn FnMut(&Event),
    ) -> Result<EvalReport> {
        let model = self.model();
        suite::run(&self.view(&model), tasks, opts, on_event).await
    }

    /// The run's files of `kind`.
    pub async fn export(&self, kind: ExportKind) -> Result<Vec<File>> {
        match (kind, &self.trainer.config.method) {
            (ExportKind::Adapter, Method::Lora(_)) => self.trainer.model_files().await,
            (ExportKind::Adapter, Method::Full(_)) => Err(Error::setting(
                "export",
                "a full fine-tuning run has no adapter; export merged weights",
            )),
            (ExportKind::Merged, _) => self.trainer.merged_files().await,
            (ExportKind::Checkpoint, _) => self.trainer.checkpoint_files().await,
        }
    }

    /// Spectra of the weight change: of each adapter's `BA` for LoRA, of `W_tuned − W_base`
    /// against `base` (the session's model) for full fine-tuning.
    pub async fn spectrum(
        &self,
        base: &CausalLm,
        opts: &SpectrumOptions,
    ) -> Result<Vec<MatrixSpectrum>> {
        let tuned = self.model();
        match self.trainer.config.method {
            Method::Lora(_) => spectrum::adapter_spectra(&tuned, opts).await,
            Method::Full(_) => spectrum::compare_checkpoints(base, &tuned, opts).await,
        }
    }
}

/// Refuse a run shape `session`'s model or the device cannot take: sequences longer than the
/// model's context, or (given the GPU's largest storage buffer binding) a batch whose largest
/// buffer exceeds it. [`Run::new`] checks this; shells call it before tokenizing, to fail early.
pub fn check_limits(session: &Session, step: &StepShape, max_binding: Option<u64>) -> Result<()> {
    let context = session.config.max_positions();
    if step.seq > context {
        return Err(Error::setting(
            "seq_len",
            format!(
                "{} exceeds the model's context ({context} max_position_embeddings)",
                step.seq
            ),
        ));
    }
    if let Some(max) = max_binding {
        check_buffer_limit(&session.config, step, max)?;
    }
    Ok(())
}

/// The autodiff device a run of `session`'s model trains on (the session's own when it was
/// loaded for training, with its activation-checkpointing strategy).
fn autodiff_device(session: &Session) -> Device {
    if session.device.is_autodiff() {
        session.device.clone()
    } else {
        session.device.clone().autodiff()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fill_what_a_spec_leaves_out() {
        let spec = RunSpec::parse(r#"{"method": "full", "lr": 0.002}"#, "spec.json").unwrap();
        assert_eq!(spec.method, MethodKind::Full);
        assert_eq!(spec.lr(), 0.002);
        assert_eq!(spec.batch_size, RunSpec::default().batch_size);
        let lora = RunSpec::parse("rank = 4\n", "spec.toml").unwrap();
        match lora.method() {
            Method::Lora(l) => assert_eq!((l.rank, l.alpha), (4, 8.0)),
            Method::Full(_) => panic!("LoRA is the default"),
        }
        assert_eq!(lora.lr(), FULL_LR * LORA_LR_MULTIPLIER);
    }

    #[test]
    fn json_and_toml_round_trip_to_the_same_run() {
        let spec = RunSpec {
            method: MethodKind::Lora,
            rank: 8,
            alpha: Some(4.0),
            targets: vec!["q_proj".into(), "v_proj".into()],
            lr: Some(3e-4),
            warmup: 5.0,
            max_steps: Some(40),
            regime: Some(Regime::Ift),
            clip: 0.0,
            ..RunSpec::default()
        };
        let json = serde_json::to_string(&spec).unwrap();
        let toml_text = "method = \"lora\"\nrank = 8\nalpha = 4.0\ntargets = [\"q_proj\", \"v_proj\"]\n\
                         lr = 3e-4\nwarmup = 5.0\nmax_steps = 40\nregime = \"ift\"\nclip = 0.0\n";
        let from_json = RunSpec::parse(&json, "a.json").unwrap();
        let from_toml = RunSpec::parse(toml_text, "a.toml").unwrap();
        assert_eq!(from_json, spec);
        assert_eq!(from_toml, spec);
        let c = serde_json::to_value(from_toml.train_config(100)).unwrap();
        assert_eq!(c, serde_json::to_value(spec.train_config(100)).unwrap());
        assert_eq!(c["warmup_steps"], 5);
        assert!(c["clip"].is_null());
    }

    #[test]
    fn errors_name_the_field() {
        let e = RunSpec::parse(r#"{"batch_size": 0}"#, "s.json").unwrap_err();
        assert!(
            matches!(
                e,
                Error::Setting {
                    field: "batch_size",
                    ..
                }
            ),
            "{e}"
        );
        let e = RunSpec::parse(r#"{"rank": 0}"#, "s.json").unwrap_err();
        assert!(matches!(e, Error::Setting { field: "rank", .. }), "{e}");
        let e = RunSpec::parse(r#"{"lr": -1}"#, "s.json").unwrap_err();
        assert!(matches!(e, Error::Setting { field: "lr", .. }), "{e}");
        let e = RunSpec::parse("bach_size = 4\n", "s.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("s.toml") && e.contains("bach_size"), "{e}");
        let words = [("batch_size", "--batch-size")];
        let e = RunSpec::parse(r#"{"batch_size": 0}"#, "s.json").unwrap_err();
        assert_eq!(e.describe(&words), "--batch-size: must be at least 1");
    }
}
