//! `tunelab train MODEL --data FILE --out DIR`: a fine-tuning run, its settings from a run spec
//! (defaults, a `--spec` file, then flags), with a progress bar and a JSONL log.

use std::io::Write;
use std::path::{Path, PathBuf};

use tunelab::Error;
use tunelab::model::lora::LoraInit;
use tunelab::run::{MethodKind, Run, RunSpec};
use tunelab::train::data::Regime;
use tunelab::train::optim::OptimizerKind;
use tunelab::train::resume::Resume;
use tunelab::train::schedule::Schedule;
use tunelab::train::sink::DirSink;

use crate::output::{
    load_data, load_on, print_json, read_text, select, show_training_event, step_bar,
};
use crate::{Global, Result};

#[derive(clap::Args)]
pub struct Args {
    /// Base model: Hub id (`org/name[@revision]`), directory, base URL or `.gguf` file.
    #[arg(required_unless_present = "print_spec")]
    model: Option<String>,
    /// Training data: .txt (continued pretraining) or .jsonl (`text`, or prompt/response).
    #[arg(long, required_unless_present = "print_spec")]
    data: Option<PathBuf>,
    /// Held-out data for periodic evaluation loss.
    #[arg(long)]
    eval_data: Option<PathBuf>,
    /// Output directory (the final adapter or checkpoint; checkpoint-N/ inside).
    #[arg(long, required_unless_present = "print_spec")]
    out: Option<PathBuf>,
    /// Continue exactly from a checkpoint directory written by an earlier run (its settings), or
    /// from the newest complete checkpoint in a run's --out directory. Files are checked against
    /// the checkpoint's manifest first.
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Train into an --out that already holds files: its training log and checkpoints are
    /// deleted first, other files are replaced as the run writes its own.
    #[arg(long)]
    overwrite: bool,
    /// Run spec file (JSON or TOML: any fields of --print-spec); flags override it.
    #[arg(long)]
    spec: Option<PathBuf>,
    /// Print the run spec these flags make (every setting, defaults filled in) and exit.
    #[arg(long)]
    print_spec: bool,
    #[command(flatten)]
    set: SpecFlags,
}

/// Flags that override the run spec's fields (same names, `-` for `_`).
#[derive(clap::Args)]
struct SpecFlags {
    /// cpt (loss on every token, packed) or ift (loss on responses); default: from the file.
    #[arg(long)]
    regime: Option<Regime>,
    /// full or lora.
    #[arg(long)]
    method: Option<MethodKind>,
    /// LoRA rank.
    #[arg(long)]
    rank: Option<usize>,
    /// LoRA alpha (default 2 × rank, as the paper).
    #[arg(long)]
    alpha: Option<f64>,
    /// LoRA targets: module names (q_proj, c_attn…), presets attention|mlp|all, or re:<regex>.
    #[arg(long, value_delimiter = ',')]
    targets: Option<Vec<String>>,
    /// LoRA dropout.
    #[arg(long)]
    dropout: Option<f64>,
    /// Scale LoRA by alpha/sqrt(rank) (rsLoRA). `--rslora=false` turns off a spec file's true.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    rslora: Option<bool>,
    /// LoRA A initialisation: kaiming (PEFT default) or gaussian.
    #[arg(long)]
    lora_init: Option<LoraInit>,
    /// LoRA+: learning rate of B = lr × ratio.
    #[arg(long)]
    lora_plus_ratio: Option<f64>,
    /// Full fine-tuning: also train embeddings and LM head. `--train-embeddings=false` turns off a spec file's true.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    train_embeddings: Option<bool>,
    /// Full fine-tuning: keep tensors matching this regex frozen (repeatable).
    #[arg(long)]
    freeze: Vec<String>,
    /// adamw or lion.
    #[arg(long)]
    optimizer: Option<OptimizerKind>,
    /// Peak learning rate (default 1e-5 for full, 10× that for LoRA, as the paper's rule).
    #[arg(long)]
    lr: Option<f64>,
    /// constant, linear, cosine or inverse_sqrt.
    #[arg(long)]
    schedule: Option<Schedule>,
    /// Warm-up: a fraction of the steps (< 1) or a number of steps.
    #[arg(long)]
    warmup: Option<f64>,
    #[arg(long)]
    weight_decay: Option<f64>,
    #[arg(long)]
    epochs: Option<f64>,
    #[arg(long)]
    max_steps: Option<usize>,
    #[arg(long)]
    max_tokens: Option<u64>,
    #[arg(long)]
    batch_size: Option<usize>,
    #[arg(long)]
    grad_accum: Option<usize>,
    #[arg(long)]
    seq_len: Option<usize>,
    #[arg(long)]
    seed: Option<u64>,
    /// Clip the global gradient norm (0 = off).
    #[arg(long)]
    clip: Option<f64>,
    /// Dropout on attention probabilities (regularisation baseline).
    #[arg(long)]
    attention_dropout: Option<f64>,
    /// Dropout on residual branches (regularisation baseline).
    #[arg(long)]
    residual_dropout: Option<f64>,
    #[arg(long)]
    log_every: Option<usize>,
    #[arg(long)]
    eval_every: Option<usize>,
    #[arg(long)]
    save_every: Option<usize>,
    /// Share of the training examples held out to measure the evaluation loss on when no
    /// --eval-data is given (e.g. 0.05).
    #[arg(long)]
    holdout: Option<f64>,
    /// Skip JSONL lines that are not JSON or lack the field, and count them. `--skip-bad-lines=false` turns off a spec file's true.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    skip_bad_lines: Option<bool>,
    /// Render instruction records (messages, prompt/response pairs) with the model's chat
    /// template when it has one (default). `--chat-template=false`: as plain text.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    chat_template: Option<bool>,
    /// Recompute memory-bound activations in the backward pass instead of keeping them: less
    /// memory, more time with `--kernels burn`; with tunelab's kernels (which keep only what
    /// their backward passes read) it holds more than without it (README, Performance; measure
    /// with `tunelab bench --checkpoint-activations`).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    checkpoint_activations: Option<bool>,
    /// Kernels: tunelab (its WGSL kernels on a GPU, its Rust ones on the CPU — all but the
    /// optimizer's — where they apply; the default) or burn.
    #[arg(long)]
    kernels: Option<tunelab::kernels::Kernels>,
    /// Keep the frozen weight matrices (LoRA's base, frozen embeddings or head) in f16 with f32
    /// arithmetic: half their memory. Needs tunelab's kernels on a GPU with f16 shaders.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    frozen_f16: Option<bool>,
}

impl SpecFlags {
    /// `spec` with every flag given applied.
    fn apply(self, mut s: RunSpec) -> RunSpec {
        macro_rules! set {
            ($($field:ident <- $flag:ident),*) => { $(if let Some(v) = self.$flag { s.$field = v; })* };
        }
        set!(method <- method, rank <- rank, targets <- targets, lora_dropout <- dropout,
            lora_init <- lora_init, optimizer <- optimizer, schedule <- schedule,
            warmup <- warmup, weight_decay <- weight_decay, epochs <- epochs,
            batch_size <- batch_size, grad_accum <- grad_accum, seq_len <- seq_len,
            seed <- seed, clip <- clip, attention_dropout <- attention_dropout,
            residual_dropout <- residual_dropout, log_every <- log_every, rslora <- rslora,
            train_embeddings <- train_embeddings, skip_bad_lines <- skip_bad_lines,
            chat_template <- chat_template, checkpoint_activations <- checkpoint_activations, holdout <- holdout,
            kernels <- kernels, frozen_f16 <- frozen_f16);
        macro_rules! set_some {
            ($($field:ident),*) => { $(if self.$field.is_some() { s.$field = self.$field; })* };
        }
        set_some!(
            regime,
            alpha,
            lora_plus_ratio,
            lr,
            max_steps,
            max_tokens,
            eval_every,
            save_every
        );
        if !self.freeze.is_empty() {
            s.freeze = self.freeze;
        }
        s
    }
}

pub fn run(a: Args, g: &Global) -> Result {
    let base = match &a.spec {
        Some(p) => RunSpec::parse(&read_text(p)?, &p.display().to_string())?,
        None => RunSpec::default(),
    };
    let spec = a.set.apply(base);
    spec.validate()?;
    if a.print_spec {
        print_json(&spec);
        return Ok(());
    }
    let (Some(model), Some(data), Some(out)) = (&a.model, &a.data, &a.out) else {
        unreachable!("clap requires MODEL, --data and --out without --print-spec")
    };
    // A resumed run takes its settings from the checkpoint, so it continues exactly.
    let resume = a.resume.as_deref().map(Resume::read).transpose()?;
    if let Some(r) = &resume {
        for s in &r.skipped {
            eprintln!("passing over a damaged checkpoint: {s}");
        }
        eprintln!("resuming from {}", r.dir.display());
    }
    claim_out(out, resume.is_some(), a.overwrite)?;
    let checkpointing = resume.as_ref().map_or(spec.checkpoint_activations, |r| {
        r.config.checkpoint_activations
    });
    let selected = select(g.device)?;
    let device = tunelab::train::training_device(&selected.device, checkpointing);
    // Full fine-tuning resumes from the checkpoint's own weights; LoRA from the base model.
    let source = match &resume {
        Some(r) => r.model_source(model),
        None => model.clone(),
    };
    let session = load_on(&source, device)?;
    let max_binding = selected
        .adapter
        .as_ref()
        .map(|a| a.max_storage_buffer_binding_size);
    let step = match &resume {
        Some(r) => tunelab::train::StepShape {
            batch: r.config.batch_size,
            seq: spec.seq_len,
            kernels: r.config.kernels,
        },
        None => tunelab::train::StepShape {
            batch: spec.batch_size,
            seq: spec.seq_len,
            kernels: spec.kernels,
        },
    };
    tunelab::run::check_limits(&session, &step, max_binding)?;
    let prepared = load_data(data, &session, &spec, g.json)?;
    let train_data = prepared.data;
    // Evaluation data is read as the training data was, and kept whole.
    let eval_spec = RunSpec {
        regime: Some(prepared.regime),
        holdout: 0.0,
        ..spec.clone()
    };
    let eval_data = match &a.eval_data {
        Some(p) => Some(load_data(p, &session, &eval_spec, g.json)?.data),
        None => prepared.held_out,
    };
    let mut run = match resume {
        Some(r) => {
            pollster::block_on(Run::resume(&session, r, train_data, eval_data, max_binding))?
        }
        None => Run::new(&session, &spec, train_data, eval_data, max_binding)?,
    };
    drop(session);
    if !g.json {
        eprintln!("device: {}", selected.label);
        let skipped = run.data().skipped_lines;
        eprintln!(
            "training {} parameters ({} tensors) on {} examples × {} tokens{}, {} steps",
            run.trainable_parameters(),
            run.trainable().len(),
            run.data().examples.len(),
            run.data().examples[0].ids.len(),
            if skipped > 0 {
                format!(" ({skipped} bad lines skipped)")
            } else {
                String::new()
            },
            run.total_steps()
        );
    }
    let summary = train_into(&mut run, out, g.json)?;
    if g.json {
        print_json(&summary);
    } else {
        let fmt = |l: Option<f64>| l.map_or("-".into(), |l| format!("{l:.4}"));
        println!(
            "trained {} steps ({} tokens) in {:.1}s: final loss {}, eval loss {}; wrote {}",
            summary.steps,
            summary.tokens_seen,
            summary.seconds,
            fmt(summary.final_loss),
            fmt(summary.final_eval_loss),
            out.display()
        );
    }
    Ok(())
}

/// Refuse an `--out` that already holds files, so that a new run never mixes its log and
/// checkpoints with another's; a resumed run continues where it is told to, and `overwrite`
/// clears the old run's log and checkpoints first.
fn claim_out(out: &Path, resuming: bool, overwrite: bool) -> Result {
    let mut names: Vec<String> = match std::fs::read_dir(out) {
        Ok(dir) => dir
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::file(out, e)),
    };
    if names.is_empty() || resuming {
        return Ok(());
    }
    names.sort();
    if !overwrite {
        let shown = names.iter().take(4).cloned().collect::<Vec<_>>().join(", ");
        let more = if names.len() > 4 { ", …" } else { "" };
        return Err(Error::Input(format!(
            "--out {}: the directory already holds {} entries ({shown}{more}); a new run would \
             mix with them. Pass --overwrite to replace them, --resume {} to \
             continue the run there, or choose another --out",
            out.display(),
            names.len(),
            out.display()
        )));
    }
    for name in names {
        let path = out.join(&name);
        if name == "train_log.jsonl" {
            std::fs::remove_file(&path).map_err(|e| Error::file(&path, e))?;
        } else if name.starts_with("checkpoint-") && path.is_dir() {
            std::fs::remove_dir_all(&path).map_err(|e| Error::file(&path, e))?;
        }
    }
    Ok(())
}

/// Train `run` to the end, writing checkpoints and the event log `train_log.jsonl` into `out`.
fn train_into(run: &mut Run, out: &Path, json: bool) -> Result<tunelab::train::trainer::Summary> {
    let log_path = out.join("train_log.jsonl");
    std::fs::create_dir_all(out).map_err(|e| Error::file(out, e))?;
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| Error::file(&log_path, e))?;
    let bar = step_bar(json);
    bar.set_length(run.total_steps() as u64);
    bar.set_position(run.progress().step as u64);
    let mut sink = DirSink::new(out);
    let summary = pollster::block_on(run.train_until(None, &mut sink, &mut |e| {
        let line = serde_json::to_string(e).expect("events serialize");
        let _ = writeln!(log, "{line}");
        show_training_event(&bar, e, json);
    }));
    bar.finish();
    summary
}
