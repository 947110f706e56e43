//! Running an experiment: evaluate the base model once, train every method on every target,
//! evaluate learning and forgetting at each budget, and keep everything in an output directory
//! so an interrupted experiment resumes where it stopped (finished runs are read back, an
//! unfinished one continues from its last budget's checkpoint).

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use web_time::Instant;

use super::config::{BudgetUnit, ExperimentConfig, MethodSpec, Target};
use super::evaluate::{self, ForgettingData, TargetEval, evaluate, target_eval};
use super::results::{Metrics, Point, Results, RunRecord, Timings, forgetting_key};
use crate::analysis::{plot, spectrum};
use crate::corpus::math;
use crate::error::{Error, Result};
use crate::eval::suite::Task;
use crate::event::Event;
use crate::files::{File, write_dir};
use crate::hf::Tokenizer;
use crate::run::{ExportKind, MethodKind, Run, RunSpec};
use crate::session::Session;
use crate::train::data::{self, DataOptions, Dataset};
use crate::train::resume::Resume;
use crate::train::sink::DirSink;

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

fn prepare(
    t: &Target,
    cfg: &ExperimentConfig,
    root: &Path,
    out: &Path,
    tok: &Tokenizer,
) -> Result<Prepared> {
    let opts = DataOptions {
        regime: t.regime,
        seq_len: t.seq_len,
        skip_bad_lines: false,
        pad_id: tok.eos_id.unwrap_or(0),
        chat_template: None,
    };
    let field = |f: &str| format!("targets.{}.{f}", t.name);
    // `math` data is generated from the seed and written out, so it can be inspected and reused.
    let math = (t.train == "math" || t.test == "math")
        .then(|| math::splits(t.math_train, t.math_test, cfg.seed));
    if let Some((train, test)) = &math {
        write_dir(
            &out.join("data").join(&t.name),
            &[
                File::new("train.jsonl", math::jsonl(train)),
                File::new("test.jsonl", math::jsonl(test)),
            ],
        )?;
    }
    let train = match (&math, t.train.as_str()) {
        (Some((problems, _)), "math") => {
            let lines = math::training_lines(problems, t.regime);
            data::read(&lines[..], &field("train"), true, tok, &opts)?
        }
        (_, file) => data::load(&root.join(file), tok, &opts, &mut |_| {})?,
    };
    let test = match (&math, t.test.as_str()) {
        (Some((_, test)), "math") => math::jsonl(test),
        (_, file) => read_text(&root.join(file))
            .map_err(|e| input(format!("{}: {e}", field("test"))))?
            .into_bytes(),
    };
    let eval = target_eval(&t.into(), &test, tok)?;
    Ok(Prepared { train, eval })
}

fn steps_for(t: &Target, budget: f64, examples: usize, batch: usize) -> usize {
    match t.budget_unit {
        BudgetUnit::Tokens => (budget / (batch * t.seq_len) as f64).ceil() as usize,
        BudgetUnit::Epochs => (budget * examples as f64 / batch as f64).ceil() as usize,
    }
    .max(1)
}

/// The run of method `m` for `total` steps, as the experiment sets every method up.
fn run_spec(cfg: &ExperimentConfig, m: &MethodSpec, t: &Target, total: usize) -> RunSpec {
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
        seed: cfg.seed,
        attention_dropout: m.attention_dropout,
        residual_dropout: m.residual_dropout,
        log_every: 5,
        ..RunSpec::default()
    }
}

/// Where a run keeps its state.
fn run_dir(out: &Path, target: &str, method: &str) -> PathBuf {
    out.join("runs").join(target).join(method)
}

/// Shared state of one experiment invocation.
struct Ctx<'a> {
    cfg: &'a ExperimentConfig,
    out: &'a Path,
    /// The base model on the evaluation device.
    session: Session,
    forgetting: Vec<Task>,
}

impl Ctx<'_> {
    async fn run_method(
        &mut self,
        t: &Target,
        p: &Prepared,
        m: &MethodSpec,
        on_event: &mut dyn FnMut(&Event),
    ) -> Result<(RunRecord, Vec<Point>)> {
        let dir = run_dir(self.out, &t.name, &m.name);
        if let Some(done) = read_json::<(RunRecord, Vec<Point>)>(&dir.join("run.json")) {
            notice(
                on_event,
                format!("[{}/{}] already done; reusing", t.name, m.name),
            );
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
        let ckpt = dir.join("checkpoint");
        let mut run = if ckpt.join("trainer_state.json").exists() {
            notice(
                on_event,
                format!("[{}/{}] resuming from {}", t.name, m.name, ckpt.display()),
            );
            let resume = Resume::read(&ckpt)?;
            Run::resume(&self.session, resume, p.train.clone(), None, None).await?
        } else {
            let spec = run_spec(self.cfg, m, t, total);
            Run::new(&self.session, &spec, p.train.clone(), None, None)?
        };
        let mut sink = DirSink { root: dir.clone() };
        let mut train_s = points.last().map_or(0.0, |p| p.train_seconds);
        for (k, (&budget, &at)) in t.budgets.iter().zip(&steps).enumerate() {
            if points.iter().any(|p| p.budget == budget) {
                continue;
            }
            notice(
                on_event,
                format!(
                    "[{}/{}] training to budget {}/{} ({budget} {}, step {at})",
                    t.name,
                    m.name,
                    k + 1,
                    steps.len(),
                    t.budget_unit.as_str()
                ),
            );
            let start = Instant::now();
            run.train_until(Some(at), &mut sink, on_event).await?;
            train_s += start.elapsed().as_secs_f64();
            write_dir(&ckpt, &run.export(ExportKind::Checkpoint).await?)?;
            let start = Instant::now();
            notice(on_event, format!("[{}/{}] evaluating", t.name, m.name));
            let tuned = run.model();
            let metrics = evaluate(
                &run.view(&tuned),
                &self.forgetting,
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
                self.cfg, t, m, budget, &run, metrics, &recent, train_s, secs,
            ));
            write_json(&dir, "points.json", &points)?;
        }
        let t0 = Instant::now();
        let spectrum = if self.cfg.spectrum {
            notice(
                on_event,
                format!("[{}/{}] spectrum of the weight change", t.name, m.name),
            );
            Some(self.spectrum(&run, t, m).await?)
        } else {
            None
        };
        let spectrum_seconds = t0.elapsed().as_secs_f64();
        let record = RunRecord {
            target: t.name.clone(),
            method: m.name.clone(),
            kind: m.method.to_string(),
            rank: (m.method == MethodKind::Lora).then_some(m.rank),
            lr: self.cfg.lr(m),
            trainable_parameters: run.trainable_parameters(),
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
        let _ = std::fs::remove_dir_all(&ckpt);
        Ok(done)
    }

    async fn spectrum(&self, run: &Run, t: &Target, m: &MethodSpec) -> Result<serde_json::Value> {
        let opts = spectrum::SpectrumOptions {
            threshold: 0.9,
            modules: Vec::new(),
            noise_scale: 0.01,
            seed: self.cfg.seed,
        };
        let spectra = run.spectrum(&self.session.model, &opts).await?;
        let title = format!("rank of ΔW: {} on {}", m.name, t.name);
        let files = plot::spectrum_plots(&spectra, opts.threshold, &title)?;
        write_dir(
            &self
                .out
                .join("spectrum")
                .join(format!("{}-{}", t.name, m.name)),
            &files,
        )?;
        Ok(serde_json::to_value(spectrum::summarize(&spectra, opts.threshold)).unwrap_or_default())
    }
}

#[allow(clippy::too_many_arguments)]
fn point(
    cfg: &ExperimentConfig,
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

/// Run (or resume) the experiment `cfg`, whose relative paths are relative to `root`, writing
/// everything under `out`. `device` is the (non-autodiff) device; training uses its autodiff
/// twin. Returns the results (the report files are written by [`super::report::write`]).
pub async fn run(
    cfg: &ExperimentConfig,
    root: &Path,
    out: &Path,
    device: Device,
    device_label: &str,
    on_event: &mut dyn FnMut(&Event),
) -> Result<Results> {
    let start = Instant::now();
    let mut cfg = cfg.clone();
    // Paths are resolved once, so results.json records where everything came from.
    if !cfg.base_model.contains("://") {
        cfg.base_model = root.join(&cfg.base_model).display().to_string();
    }
    let config_path = out.join("config.json");
    if let Some(old) = read_json::<ExperimentConfig>(&config_path)
        && old != cfg
    {
        return Err(input(format!(
            "{} holds results of a different experiment configuration; use another `out` directory (or delete it)",
            out.display()
        )));
    }
    write_json(out, "config.json", &cfg)?;
    notice(on_event, format!("loading {}", cfg.base_model));
    let session = Session::open(&cfg.base_model, device, on_event).await?;
    let tok = session.tokenizer()?;
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
    let mut prepared = Vec::new();
    for t in &cfg.targets {
        notice(on_event, format!("preparing target `{}`", t.name));
        prepared.push(prepare(t, &cfg, root, out, tok)?);
    }
    let mut timings = Timings {
        setup: start.elapsed().as_secs_f64(),
        ..Timings::default()
    };
    let mut ctx = Ctx {
        cfg: &cfg,
        out,
        session,
        forgetting,
    };
    let base_path = out.join("base.json");
    let base = match read_json::<Metrics>(&base_path) {
        Some(b) => {
            timings.base_eval = read_json(&out.join("base_seconds.json")).unwrap_or(0.0);
            b
        }
        None => {
            notice(on_event, "evaluating the base model".into());
            let t0 = Instant::now();
            let mut base = evaluate(
                &ctx.session.view(),
                &ctx.forgetting,
                None,
                cfg.batch_size,
                on_event,
            )
            .await?;
            for p in &prepared {
                let m = evaluate(
                    &ctx.session.view(),
                    &[],
                    Some(&p.eval),
                    cfg.batch_size,
                    on_event,
                )
                .await?;
                base.extend(m);
            }
            timings.base_eval = t0.elapsed().as_secs_f64();
            write_json(out, "base_seconds.json", &timings.base_eval)?;
            write_json(out, "base.json", &base)?;
            base
        }
    };
    let mut points = Vec::new();
    let mut runs = Vec::new();
    for (t, p) in cfg.targets.iter().zip(&prepared) {
        for m in &cfg.methods {
            if run_dir(out, &t.name, &m.name).join("run.json").exists() {
                timings.reused_runs += 1;
            }
            let (record, pts) = ctx.run_method(t, p, m, on_event).await?;
            // Times as measured when each run ran (also for runs reused from an earlier call).
            timings.train += record.train_seconds;
            timings.eval += record.eval_seconds;
            timings.spectrum += record.spectrum_seconds;
            runs.push(record);
            points.extend(pts);
        }
    }
    timings.total = start.elapsed().as_secs_f64();
    let mut results = Results {
        config: cfg.clone(),
        device: device_label.to_string(),
        base,
        points,
        runs,
        timings,
        findings: Vec::new(),
    };
    results.findings = super::report::findings(&results);
    Ok(results)
}
