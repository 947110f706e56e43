//! Running an experiment: evaluate the base model once, train every method on every target (per
//! seed), evaluate learning and forgetting at each budget, and keep everything in an output
//! directory so an interrupted experiment resumes where it stopped (finished runs are read back,
//! an unfinished one continues from its last budget's checkpoint).
//!
//! Each run is a unit of work ([`super::plan`]): one process may do them all
//! ([`Experiment::run_all`]), or many processes on many machines each do one
//! ([`Experiment::run_one`]) into a shared output directory, and [`collect`] builds the
//! results from whatever is finished. Files shared between processes (the config, the base
//! evaluation, a run's folder) are written under file locks.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burn::tensor::Device;
use web_time::Instant;

use super::config::{BudgetUnit, ExperimentConfig, MethodSpec, Target};
use super::evaluate::{self, ForgettingData, TargetEval, evaluate, target_eval};
use super::plan::{self, Plan, PlannedRun, RunKey, Throughput};
use super::results::{Metrics, Point, Results, RunRecord, Timings, forgetting_key};
use crate::analysis::{plot, spectrum};
use crate::bench::{self, BenchMethod};
use crate::corpus::math;
use crate::error::{Error, Result};
use crate::eval::suite::{self, Task, TaskData, TaskKind};
use crate::event::Event;
use crate::files::{File, write_dir};
use crate::hf::Tokenizer;
use crate::hf::chat::ChatTemplate;
use crate::run::{ExportKind, MethodKind, Run, RunSpec};
use crate::session::Session;
use crate::train::data::{self, DataOptions, Dataset, Format};
use crate::train::resume::{self, Resume};
use crate::train::sink::{CheckpointSink, DirSink, remove_checkpoints};

/// A target's data, ready for training and evaluation.
struct Prepared {
    train: Dataset,
    eval: TargetEval,
}

fn notice(on_event: &mut dyn FnMut(&Event), message: String) {
    on_event(&Event::Notice { message });
}

fn input(m: String) -> Error {
    Error::Input(m)
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Option<T> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

fn write_json<T: serde::Serialize>(dir: &Path, name: &str, v: &T) -> Result<()> {
    write_dir(dir, &[File::json(name, v)])
}

/// Text of a file (`.gz` decompressed).
fn read_text(path: &Path) -> Result<String> {
    let mut text = String::new();
    std::io::Read::read_to_string(&mut data::open(path)?, &mut text)
        .map_err(|e| input(format!("{}: {e}", path.display())))?;
    Ok(text)
}

/// The forgetting tasks named in the config, read from files under `root`.
fn forgetting_tasks(cfg: &ExperimentConfig, root: &Path) -> Result<Vec<Task>> {
    let f = &cfg.forgetting;
    let read = |file: &Option<String>| -> Result<Option<Vec<u8>>> {
        file.as_ref()
            .map(|p| Ok(read_text(&root.join(p))?.into_bytes()))
            .transpose()
    };
    let d = ForgettingData {
        hellaswag: read(&f.hellaswag)?,
        arc: read(&f.arc)?,
        winogrande: read(&f.winogrande)?,
        perplexity: f
            .perplexity
            .as_ref()
            .map(|p| read_text(&root.join(p)))
            .transpose()?,
    };
    evaluate::forgetting_tasks(f, &d)
}

/// Target `t`'s data; generated `math` data is also written to `data_dir` (to inspect and reuse).
/// Instruction data and GSM8K prompts go through `chat` when given.
fn prepare(
    t: &Target,
    cfg: &ExperimentConfig,
    root: &Path,
    data_dir: Option<&Path>,
    tok: &Tokenizer,
    chat: Option<ChatTemplate>,
) -> Result<Prepared> {
    let opts = DataOptions {
        regime: Some(t.regime),
        seq_len: t.seq_len,
        skip_bad_lines: t.skip_bad_lines,
        pad_id: tok.eos_id.unwrap_or(0),
        chat_template: chat.clone(),
    };
    let field = |f: &str| format!("targets.{}.{f}", t.name);
    // `math` data is generated from the seed and written out, so it can be inspected and reused.
    let math = (t.train == "math" || t.test == "math")
        .then(|| math::splits(t.math_train, t.math_test, cfg.seed));
    if let (Some((train, test)), Some(dir)) = (&math, data_dir) {
        write_dir(
            dir,
            &[
                File::new("train.jsonl", math::jsonl(train)),
                File::new("test.jsonl", math::jsonl(test)),
            ],
        )?;
    }
    let train = match (&math, t.train.as_str()) {
        (Some((problems, _)), "math") => {
            let lines = math::training_lines(problems, t.regime);
            data::read(&lines[..], &field("train"), Format::JSONL, tok, &opts)?
        }
        (_, file) => data::load(&root.join(file), tok, &opts, &mut |_| {})?,
    };
    let test = match (&math, t.test.as_str()) {
        (Some((_, test)), "math") => math::jsonl(test),
        (_, file) => read_text(&root.join(file))
            .map_err(|e| input(format!("{}: {e}", field("test"))))?
            .into_bytes(),
    };
    let mut eval = target_eval(&t.into(), &test, tok, chat)?;
    if let Some(h) = &t.humaneval {
        let path = root.join(&h.file);
        let task = suite::read_task(
            &format!("{}/humaneval", t.name),
            TaskKind::Humaneval,
            (&path.display().to_string(), &mut data::open(&path)?),
            None,
            false,
            h.limit,
        )?;
        eval.code = Some((task, h.clone()));
    }
    Ok(Prepared { train, eval })
}

fn steps_for(t: &Target, budget: f64, examples: usize, batch: usize) -> usize {
    match t.budget_unit {
        BudgetUnit::Tokens => (budget / (batch * t.seq_len) as f64).ceil() as usize,
        BudgetUnit::Epochs => (budget * examples as f64 / batch as f64).ceil() as usize,
    }
    .max(1)
}

/// The run `key` of method `m` for `total` steps, as the experiment sets every method up.
fn run_spec(
    cfg: &ExperimentConfig,
    key: &RunKey,
    m: &MethodSpec,
    t: &Target,
    total: usize,
) -> RunSpec {
    RunSpec {
        method: m.method,
        rank: m.rank,
        alpha: m.alpha,
        lora_dropout: m.dropout,
        targets: m.targets.clone(),
        weight_decay: m.weight_decay,
        lr: Some(cfg.lr(m)),
        schedule: cfg.schedule,
        warmup: cfg.warmup,
        max_steps: Some(total),
        batch_size: cfg.batch_size,
        seq_len: t.seq_len,
        regime: Some(t.regime),
        seed: key.train_seed(cfg),
        attention_dropout: m.attention_dropout,
        residual_dropout: m.residual_dropout,
        log_every: 5,
        ..RunSpec::default()
    }
}

/// An exclusive lock on `path` (created if absent), held until dropped; waits for another
/// process holding it, saying so.
fn lock(path: &Path, what: &str, on_event: &mut dyn FnMut(&Event)) -> Result<std::fs::File> {
    let err = |e: std::io::Error| Error::File {
        path: path.display().to_string(),
        message: format!("cannot lock: {e}"),
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let file = std::fs::File::create(path).map_err(err)?;
    if file.try_lock().is_err() {
        notice(
            on_event,
            format!("waiting for another process working on {what}"),
        );
        file.lock().map_err(err)?;
    }
    Ok(file)
}

/// The config with paths resolved as the runs see them. `base_model`: a URL as is; a path that
/// exists relative to `root` (local wins, as transformers); else a Hub id as is. With
/// `base_model_fallbacks`: the first of `base_model` and the fallbacks that exists locally.
fn resolve(cfg: &ExperimentConfig, root: &Path) -> Result<ExperimentConfig> {
    let mut cfg = cfg.clone();
    // Canonical, so results name the model's real location (no `..`).
    let local = |m: &str| {
        (!m.contains("://"))
            .then(|| root.join(m).canonicalize().ok())
            .flatten()
    };
    cfg.base_model = if cfg.base_model_fallbacks.is_empty() {
        match local(&cfg.base_model) {
            Some(p) => p.display().to_string(),
            None if cfg.base_model.contains("://")
                || crate::hf::hub::HubId::parse(&cfg.base_model).is_some() =>
            {
                cfg.base_model.clone()
            }
            // Loading names the missing path.
            None => root.join(&cfg.base_model).display().to_string(),
        }
    } else {
        std::iter::once(&cfg.base_model)
            .chain(&cfg.base_model_fallbacks)
            .find_map(|m| local(m))
            .ok_or_else(|| {
                input(format!(
                    "base_model `{}` and base_model_fallbacks {:?}: none exists under {}",
                    cfg.base_model,
                    cfg.base_model_fallbacks,
                    root.display()
                ))
            })?
            .display()
            .to_string()
    };
    Ok(cfg)
}

/// Refuse an output directory that holds another configuration's results.
fn check_config(cfg: &ExperimentConfig, out: &Path) -> Result<()> {
    match read_json::<ExperimentConfig>(&out.join("config.json")) {
        Some(old) if old != *cfg => Err(input(format!(
            "{} holds results of a different experiment configuration; use another `out` directory (or delete it)",
            out.display()
        ))),
        _ => Ok(()),
    }
}

/// An experiment opened on its output directory: the base model loaded, the forgetting tasks
/// read, targets prepared when a run needs them.
pub struct Experiment {
    cfg: ExperimentConfig,
    root: PathBuf,
    out: PathBuf,
    device_label: String,
    /// The base model on the evaluation device.
    session: Session,
    forgetting: Vec<Task>,
    prepared: HashMap<String, Prepared>,
    /// Whether `config.json` is written (by [`Experiment::claim`]).
    claimed: bool,
    /// Seconds spent opening (loading the model, reading the evals).
    pub setup_seconds: f64,
}

impl Experiment {
    /// Open `cfg` (relative paths relative to `root`) on `out`, which must be new or hold this
    /// same configuration. `device` is the (non-autodiff) device; training uses its autodiff
    /// twin.
    pub async fn open(
        cfg: &ExperimentConfig,
        root: &Path,
        out: &Path,
        device: Device,
        device_label: &str,
        on_event: &mut dyn FnMut(&Event),
    ) -> Result<Self> {
        let start = Instant::now();
        // Paths are resolved once, so results.json records where everything came from.
        let cfg = resolve(cfg, root)?;
        check_config(&cfg, out)?;
        notice(on_event, format!("loading {}", cfg.base_model));
        let session = Session::open(&cfg.base_model, device, on_event).await?;
        for t in &cfg.targets {
            if t.seq_len > session.config.max_positions() {
                return Err(input(format!(
                    "targets.{}.seq_len {} exceeds the model's context ({})",
                    t.name,
                    t.seq_len,
                    session.config.max_positions()
                )));
            }
        }
        let forgetting = forgetting_tasks(&cfg, root)?;
        Ok(Experiment {
            cfg,
            root: root.to_path_buf(),
            out: out.to_path_buf(),
            device_label: device_label.to_string(),
            session,
            forgetting,
            prepared: HashMap::new(),
            claimed: false,
            setup_seconds: start.elapsed().as_secs_f64(),
        })
    }

    /// Make the output directory this experiment's (write `config.json`) before writing
    /// anything else there; `--plan` never does.
    fn claim(&mut self, on_event: &mut dyn FnMut(&Event)) -> Result<()> {
        if !self.claimed {
            let _lock = lock(&self.out.join(".lock"), "the experiment's config", on_event)?;
            check_config(&self.cfg, &self.out)?;
            write_json(&self.out, "config.json", &self.cfg)?;
            self.claimed = true;
        }
        Ok(())
    }

    /// The configuration with its paths resolved.
    pub fn config(&self) -> &ExperimentConfig {
        &self.cfg
    }

    /// The data of target `name`, prepared on first use.
    fn prepared(&mut self, name: &str, on_event: &mut dyn FnMut(&Event)) -> Result<&Prepared> {
        if !self.prepared.contains_key(name) {
            let t = self.target(name)?;
            notice(on_event, format!("preparing target `{name}`"));
            let tok = self.session.tokenizer()?;
            let chat = match (t.chat, self.session.chat_template()?) {
                (Some(false), _) => None,
                (Some(true), None) => {
                    return Err(input(format!(
                        "targets.{name}.chat: {} has no chat template",
                        self.cfg.base_model
                    )));
                }
                (_, template) => template,
            };
            let data_dir = self.claimed.then(|| self.out.join("data").join(name));
            let p = prepare(t, &self.cfg, &self.root, data_dir.as_deref(), tok, chat)?;
            if p.train.skipped_lines > 0 {
                notice(
                    on_event,
                    format!(
                        "target `{name}`: {} bad lines of {} skipped (skip_bad_lines)",
                        p.train.skipped_lines, t.train
                    ),
                );
            }
            self.prepared.insert(name.to_string(), p);
        }
        Ok(&self.prepared[name])
    }

    fn target(&self, name: &str) -> Result<&Target> {
        self.cfg
            .targets
            .iter()
            .find(|t| t.name == name)
            .ok_or_else(|| input(format!("no target `{name}`")))
    }

    fn method(&self, name: &str) -> Result<&MethodSpec> {
        self.cfg
            .methods
            .iter()
            .find(|m| m.name == name)
            .ok_or_else(|| input(format!("no method `{name}`")))
    }

    /// The base model's scores: read from `base.json`, or evaluated (forgetting evals and every
    /// target's learning metric) and written there, by one process at a time.
    pub async fn base(&mut self, on_event: &mut dyn FnMut(&Event)) -> Result<Metrics> {
        self.claim(on_event)?;
        let base_path = self.out.join("base.json");
        if let Some(b) = read_json::<Metrics>(&base_path) {
            return Ok(b);
        }
        let _lock = lock(
            &self.out.join(".lock-base"),
            "the base evaluation",
            on_event,
        )?;
        // Another process may have finished it while this one waited.
        if let Some(b) = read_json::<Metrics>(&base_path) {
            return Ok(b);
        }
        notice(on_event, "evaluating the base model".into());
        let t0 = Instant::now();
        let names: Vec<String> = self.cfg.targets.iter().map(|t| t.name.clone()).collect();
        for n in &names {
            self.prepared(n, on_event)?;
        }
        let batch = self.cfg.batch_size;
        let mut base = evaluate(
            &self.session.view(),
            &self.forgetting,
            None,
            batch,
            on_event,
        )
        .await?;
        for n in &names {
            let p = &self.prepared[n];
            let m = evaluate(&self.session.view(), &[], Some(&p.eval), batch, on_event).await?;
            base.extend(m);
        }
        write_json(&self.out, "base_seconds.json", &t0.elapsed().as_secs_f64())?;
        write_json(&self.out, "base.json", &base)?;
        Ok(base)
    }

    /// Do the run `key` (after the base evaluation, if no process has done it yet): reused if
    /// finished, resumed from its checkpoint if interrupted. Two processes given the same run
    /// take turns: the second reuses what the first finished.
    pub async fn run_one(&mut self, key: &RunKey, on_event: &mut dyn FnMut(&Event)) -> Result<()> {
        self.base(on_event).await?;
        let dir = key.dir(&self.out);
        let _lock = lock(&dir.join(".lock"), &format!("run {}", key.id()), on_event)?;
        self.prepared(&key.target, on_event)?;
        let mut ctx = Ctx {
            cfg: &self.cfg,
            out: &self.out,
            session: &self.session,
            forgetting: &self.forgetting,
            device_label: &self.device_label,
        };
        let t = self.target(&key.target)?;
        let m = self.method(&key.method)?;
        ctx.run_method(key, t, &self.prepared[&key.target], m, on_event)
            .await
            .map(|_| ())
    }

    /// The runs, what each needs and how long they should take: FLOPs counted from the shape
    /// (as `tunelab bench`), at `tflops` if given, else at the rate the finished runs in the
    /// output directory achieved, else at the rate of a short training calibration on this
    /// device.
    pub async fn plan(
        &mut self,
        tflops: Option<f64>,
        on_event: &mut dyn FnMut(&Event),
    ) -> Result<Plan> {
        let config = self.session.config.clone();
        let mut parameters = 0u64;
        self.session.model.for_each_param(&mut |_, p| {
            parameters += p.hf_shape().iter().product::<usize>() as u64
        });
        let eval_tokens = self.forgetting_tokens()?;
        let mut runs = Vec::new();
        // Trainable parameters per method (the same on every target): from the trainer itself.
        let mut trainable: HashMap<String, u64> = HashMap::new();
        for key in plan::run_keys(&self.cfg) {
            let t = self.target(&key.target)?.clone();
            let m = self.method(&key.method)?.clone();
            self.prepared(&t.name, on_event)?;
            let p = &self.prepared[&t.name];
            let examples = p.train.examples.len();
            let target_tokens = eval_task_tokens(&p.eval, self.session.tokenizer()?)?;
            let budget_steps: Vec<usize> = t
                .budgets
                .iter()
                .map(|&b| steps_for(&t, b, examples, self.cfg.batch_size))
                .collect();
            let steps = *budget_steps.last().expect("validated: budgets non-empty");
            let count = match trainable.get(&m.name) {
                Some(&c) => c,
                None => {
                    let spec = run_spec(&self.cfg, &key, &m, &t, steps);
                    let c = Run::new(&self.session, &spec, p.train.clone(), None, None)?
                        .trainable_parameters();
                    trainable.insert(m.name.clone(), c);
                    c
                }
            };
            let method = match m.method {
                MethodKind::Full => BenchMethod::Full,
                MethodKind::Lora => BenchMethod::Lora(m.rank),
            };
            let batch = self.cfg.batch_size;
            let evals = budget_steps.len();
            let eval_seq = t.seq_len;
            runs.push(PlannedRun {
                id: key.id(),
                target: t.name.clone(),
                method: m.name.clone(),
                kind: m.method.to_string(),
                rank: (m.method == MethodKind::Lora).then_some(m.rank),
                modules: if m.method == MethodKind::Lora {
                    m.targets.clone()
                } else {
                    Vec::new()
                },
                lr: self.cfg.lr(&m),
                seed: key.train_seed(&self.cfg),
                steps,
                budget_steps,
                tokens: (steps * batch * t.seq_len) as u64,
                trainable_parameters: count,
                memory_bytes: bench::estimate_memory(
                    &config,
                    parameters,
                    count,
                    m.method == MethodKind::Lora,
                    batch,
                    t.seq_len,
                ),
                train_flops: steps as f64 * bench::train_flops(&config, method, batch, t.seq_len),
                eval_flops: evals as f64
                    * bench::forward_flops(&config, eval_tokens + target_tokens, eval_seq),
                estimated_seconds: None,
                done: key.dir(&self.out).join("run.json").exists(),
            });
        }
        let throughput = match tflops {
            Some(t) if t > 0.0 => Some(Throughput {
                tflops: t,
                source: "given".into(),
            }),
            Some(t) => return Err(input(format!("--tflops must be positive, got {t}"))),
            None => match self.measured_rate(&runs) {
                Some(t) => Some(t),
                None => Some(self.calibrate(on_event).await?),
            },
        };
        let rate = throughput.as_ref().map(|t| t.tflops * 1e12);
        for r in &mut runs {
            r.estimated_seconds = rate.map(|rate| (r.train_flops + r.eval_flops) / rate);
        }
        let left: f64 = runs
            .iter()
            .filter(|r| !r.done)
            .filter_map(|r| r.estimated_seconds)
            .sum();
        Ok(Plan {
            experiment: self.cfg.name.clone(),
            base_model: self.cfg.base_model.clone(),
            parameters,
            device: self.device_label.clone(),
            run_count: runs.len(),
            done_count: runs.iter().filter(|r| r.done).count(),
            seeds: self.cfg.run_seeds(),
            base_evaluated: self.out.join("base.json").exists(),
            total_flops: runs.iter().map(|r| r.train_flops + r.eval_flops).sum(),
            runs,
            estimated_device_hours: rate.map(|_| left / 3600.0),
            throughput,
            memory_formula: bench::MEMORY_FORMULA.into(),
            flops_formula: "training: `tunelab bench`'s count per step (matmuls of forward, input gradients, weight gradients of what trains, LoRA's factors on every linear) × steps; evaluation: forward matmuls over the tokens the forgetting evals and the target's learning metric score (generated tokens counted at max_gen_toks) × budgets".into(),
        })
    }

    /// Tokens the forgetting evals score in one evaluation.
    fn forgetting_tokens(&self) -> Result<usize> {
        let tok = self.session.tokenizer()?;
        self.forgetting.iter().map(|t| task_tokens(t, tok, 0)).sum()
    }

    /// The rate the finished runs achieved: their device seconds (training, evaluation,
    /// spectrum) over their counted FLOPs.
    fn measured_rate(&self, runs: &[PlannedRun]) -> Option<Throughput> {
        let (mut flops, mut secs, mut n) = (0.0, 0.0, 0);
        for r in runs.iter().filter(|r| r.done) {
            let path = self.out.join("runs").join(&r.id).join("run.json");
            let (rec, _) = read_json::<(RunRecord, Vec<Point>)>(&path)?;
            flops += r.train_flops + r.eval_flops;
            secs += rec.train_seconds + rec.eval_seconds + rec.spectrum_seconds;
            n += 1;
        }
        (secs > 0.0).then(|| Throughput {
            tflops: flops / secs / 1e12,
            source: format!("{n} finished runs"),
        })
    }

    /// A few full fine-tuning steps of the model's shape (random weights) at the first target's
    /// sequence length on this device.
    async fn calibrate(&self, on_event: &mut dyn FnMut(&Event)) -> Result<Throughput> {
        notice(
            on_event,
            "calibrating: a few training steps on this device".into(),
        );
        let device = crate::train::training_device(&self.session.device, false);
        let model = crate::model::init_random(&self.session.config, &device, 0.02, 0)?;
        let opts = bench::BenchOptions {
            batch: self.cfg.batch_size,
            seq: self.cfg.targets[0].seq_len,
            steps: 2,
            warmup: 1,
            window: 1,
            ..Default::default()
        };
        let r = bench::run(
            model,
            &self.session.config,
            &self.cfg.base_model,
            &device,
            &self.device_label,
            BenchMethod::Full,
            &opts,
            on_event,
        )
        .await?;
        Ok(Throughput {
            tflops: r.tflops,
            source: "calibration".into(),
        })
    }
}

/// Tokens a task scores (a generation task: its prompts plus `max_gen` tokens per item).
fn task_tokens(task: &Task, tok: &Tokenizer, max_gen: usize) -> Result<usize> {
    let n = |s: &str| -> Result<usize> { Ok(tok.encode_plain(s)?.len()) };
    Ok(match &task.data {
        TaskData::MultipleChoice(items) => {
            let mut sum = 0;
            for it in items {
                for (ctx, cont) in &it.requests {
                    sum += n(ctx)? + n(cont)?;
                }
            }
            sum
        }
        TaskData::Gsm8k { test, .. } => {
            let mut sum = 0;
            for it in test {
                sum += n(&it.question)? + max_gen;
            }
            sum
        }
        TaskData::Code(problems) => {
            let mut sum = 0;
            for p in problems {
                sum += n(&p.prompt)? + max_gen;
            }
            sum
        }
        TaskData::Text(texts) => {
            let mut sum = 0;
            for t in texts {
                sum += n(t)?;
            }
            sum
        }
    })
}

/// Tokens a target's learning metric scores (with its answer-loss set and HumanEval samples).
fn eval_task_tokens(e: &TargetEval, tok: &Tokenizer) -> Result<usize> {
    let loss = e
        .test_loss
        .as_ref()
        .map_or(0, |d| d.examples.iter().map(|x| x.ids.len()).sum::<usize>());
    // Each HumanEval sample is generated from its prompt anew.
    let code = match &e.code {
        Some((task, c)) => task_tokens(task, tok, c.max_gen_toks)? * c.samples,
        None => 0,
    };
    Ok(task_tokens(&e.task, tok, e.max_gen_toks)? + loss + code)
}

/// What one run needs of the opened experiment.
struct Ctx<'a> {
    cfg: &'a ExperimentConfig,
    out: &'a Path,
    session: &'a Session,
    forgetting: &'a [Task],
    device_label: &'a str,
}

impl Ctx<'_> {
    async fn run_method(
        &mut self,
        key: &RunKey,
        t: &Target,
        p: &Prepared,
        m: &MethodSpec,
        on_event: &mut dyn FnMut(&Event),
    ) -> Result<(RunRecord, Vec<Point>)> {
        let dir = key.dir(self.out);
        let id = key.id();
        if let Some(done) = read_json::<(RunRecord, Vec<Point>)>(&dir.join("run.json")) {
            notice(on_event, format!("[{id}] already done; reusing"));
            return Ok(done);
        }
        let mut points: Vec<Point> = read_json(&dir.join("points.json")).unwrap_or_default();
        let examples = p.train.examples.len();
        let steps: Vec<usize> = t
            .budgets
            .iter()
            .map(|&b| steps_for(t, b, examples, self.cfg.batch_size))
            .collect();
        let total = *steps.last().expect("validated: budgets non-empty");
        let (ckpt, damaged) = resume::latest(&dir);
        for d in damaged {
            notice(
                on_event,
                format!("[{id}] passing over a damaged checkpoint: {d}"),
            );
        }
        let mut run = if let Some(ckpt) = ckpt {
            notice(on_event, format!("[{id}] resuming from {}", ckpt.display()));
            let resume = Resume::read(&ckpt)?;
            Run::resume(self.session, resume, p.train.clone(), None, None).await?
        } else {
            let spec = run_spec(self.cfg, key, m, t, total);
            Run::new(self.session, &spec, p.train.clone(), None, None)?
        };
        // Each budget's checkpoint replaces the one before, once it is complete.
        let mut sink = DirSink {
            root: dir.clone(),
            keep: Some(1),
        };
        let mut train_s = points.last().map_or(0.0, |p| p.train_seconds);
        for (k, (&budget, &at)) in t.budgets.iter().zip(&steps).enumerate() {
            if points.iter().any(|p| p.budget == budget) {
                continue;
            }
            notice(
                on_event,
                format!(
                    "[{id}] training to budget {}/{} ({budget} {}, step {at})",
                    k + 1,
                    steps.len(),
                    t.budget_unit.as_str()
                ),
            );
            let start = Instant::now();
            run.train_until(Some(at), &mut sink, on_event).await?;
            train_s += start.elapsed().as_secs_f64();
            let files = run.export(ExportKind::Checkpoint).await?;
            sink.save(&format!("checkpoint-{at}"), files)?;
            let start = Instant::now();
            notice(on_event, format!("[{id}] evaluating"));
            let tuned = run.model();
            let metrics = evaluate(
                &run.view(&tuned),
                self.forgetting,
                Some(&p.eval),
                self.cfg.batch_size,
                on_event,
            )
            .await?;
            let secs = start.elapsed().as_secs_f64();
            let recent: Vec<f64> = run
                .progress()
                .losses
                .iter()
                .rev()
                .take(4)
                .map(|l| l.1)
                .collect();
            points.push(point(
                self.cfg, key, t, m, budget, &run, metrics, &recent, train_s, secs,
            ));
            write_json(&dir, "points.json", &points)?;
        }
        let t0 = Instant::now();
        let spectrum = if self.cfg.spectrum {
            notice(on_event, format!("[{id}] spectrum of the weight change"));
            Some(self.spectrum(&run, key).await?)
        } else {
            None
        };
        let spectrum_seconds = t0.elapsed().as_secs_f64();
        let record = RunRecord {
            target: t.name.clone(),
            method: m.name.clone(),
            seed: key.train_seed(self.cfg),
            device: self.device_label.to_string(),
            kind: m.method.to_string(),
            rank: (m.method == MethodKind::Lora).then_some(m.rank),
            lr: self.cfg.lr(m),
            trainable_parameters: run.trainable_parameters(),
            skipped_lines: p.train.skipped_lines,
            total_steps: total,
            losses: run.progress().losses.clone(),
            train_seconds: train_s,
            eval_seconds: points.iter().map(|p| p.eval_seconds).sum(),
            spectrum,
            spectrum_seconds,
        };
        let done = (record, points);
        write_json(&dir, "run.json", &done)?;
        // The final weights are in `dir`; the resume checkpoint is no longer needed.
        let _ = remove_checkpoints(&dir);
        Ok(done)
    }

    async fn spectrum(&self, run: &Run, key: &RunKey) -> Result<serde_json::Value> {
        let opts = spectrum::SpectrumOptions {
            threshold: 0.9,
            modules: Vec::new(),
            noise_scale: 0.01,
            seed: key.train_seed(self.cfg),
        };
        let spectra = run.spectrum(&self.session.model, &opts).await?;
        let title = format!("rank of ΔW: {} on {}", key.method, key.target);
        let files = plot::spectrum_plots(&spectra, opts.threshold, &title)?;
        let mut name = format!("{}-{}", key.target, key.method);
        if let Some(s) = key.seed {
            name.push_str(&format!("-seed-{s}"));
        }
        write_dir(&self.out.join("spectrum").join(name), &files)?;
        Ok(serde_json::to_value(spectrum::summarize(&spectra, opts.threshold)).unwrap_or_default())
    }
}

#[allow(clippy::too_many_arguments)]
fn point(
    cfg: &ExperimentConfig,
    key: &RunKey,
    t: &Target,
    m: &MethodSpec,
    budget: f64,
    run: &Run,
    metrics: Metrics,
    recent_losses: &[f64],
    train_seconds: f64,
    eval_seconds: f64,
) -> Point {
    let (lkey, _) = t.metric.key(&t.name);
    let (fkey, _) = forgetting_key(cfg, &metrics);
    Point {
        target: t.name.clone(),
        method: m.name.clone(),
        seed: key.train_seed(cfg),
        budget,
        budget_unit: t.budget_unit,
        step: run.progress().step,
        tokens_seen: run.progress().tokens_seen,
        learning: metrics.get(&lkey).copied().unwrap_or(f64::NAN),
        forgetting: metrics.get(fkey).copied().unwrap_or(f64::NAN),
        train_loss: (!recent_losses.is_empty())
            .then(|| recent_losses.iter().sum::<f64>() / recent_losses.len() as f64),
        metrics,
        train_seconds,
        eval_seconds,
    }
}

/// The results of the experiment in `out` from whatever runs are finished there (the others
/// are listed in `missing`); the report files are made by [`super::report::files`]. Timings
/// are the device seconds each phase took when it ran.
pub fn collect(out: &Path) -> Result<Results> {
    let cfg: ExperimentConfig = read_json(&out.join("config.json")).ok_or_else(|| {
        input(format!(
            "{} holds no experiment (no readable config.json): run some of it first",
            out.display()
        ))
    })?;
    let base: Metrics = read_json(&out.join("base.json")).ok_or_else(|| {
        input(format!(
            "{}: the base model has not been evaluated yet (base.json): run some of the experiment first",
            out.display()
        ))
    })?;
    let mut timings = Timings {
        base_eval: read_json(&out.join("base_seconds.json")).unwrap_or(0.0),
        collected: true,
        ..Timings::default()
    };
    let (mut runs, mut points, mut missing, mut devices) = (vec![], vec![], vec![], vec![]);
    for key in plan::run_keys(&cfg) {
        match read_json::<(RunRecord, Vec<Point>)>(&key.dir(out).join("run.json")) {
            Some((record, pts)) => {
                timings.train += record.train_seconds;
                timings.eval += record.eval_seconds;
                timings.spectrum += record.spectrum_seconds;
                if !devices.contains(&record.device) {
                    devices.push(record.device.clone());
                }
                runs.push(record);
                points.extend(pts);
            }
            None => missing.push(key.id()),
        }
    }
    timings.total = timings.base_eval + timings.train + timings.eval + timings.spectrum;
    let mut results = Results {
        config: cfg,
        device: devices.join(", "),
        base,
        points,
        runs,
        timings,
        findings: Vec::new(),
        missing,
    };
    results.findings = super::report::findings(&results);
    Ok(results)
}

impl Experiment {
    /// Run (or resume) every planned run in this process and collect the results: the same
    /// as `--only` for each run and then [`collect`], with this invocation's wall time.
    pub async fn run_all(&mut self, on_event: &mut dyn FnMut(&Event)) -> Result<Results> {
        let start = Instant::now();
        let mut reused = 0;
        for key in plan::run_keys(&self.cfg) {
            if key.dir(&self.out).join("run.json").exists() {
                reused += 1;
            }
            self.run_one(&key, on_event).await?;
        }
        let mut results = collect(&self.out)?;
        results.timings.setup = self.setup_seconds;
        results.timings.reused_runs = reused;
        results.timings.total = self.setup_seconds + start.elapsed().as_secs_f64();
        results.timings.collected = false;
        Ok(results)
    }
}
