//! The native command-line shell over the tunelab library.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use tunelab::device::{self, DeviceChoice};
use tunelab::eval::generate::GenerateOptions;
use tunelab::event::{Event, Unit};
use tunelab::export::{DirSink, write_dir};
use tunelab::hf::safetensors::serialize_f32;
use tunelab::hf::{ModelSource, Tokenizer};
use tunelab::model::lora::{LoraConfig, LoraInit};
use tunelab::train::data::{self, DataOptions, Regime};
use tunelab::train::optim::{OptimizerConfig, OptimizerKind};
use tunelab::train::resume::Resume;
use tunelab::train::schedule::Schedule;
use tunelab::train::{FullConfig, Method, TrainConfig, Trainer};
use tunelab::{Error, Session};

#[derive(Parser)]
#[command(
    name = "tunelab",
    version,
    about = "Fine-tuning lab for small language models: load Hugging Face checkpoints, score, generate."
)]
struct Cli {
    /// Where to compute: a hardware GPU if present else the CPU backend (auto), a wgpu adapter
    /// even if software (gpu), or the CPU backend (cpu).
    #[arg(long, global = true, default_value = "auto")]
    device: DeviceChoice,
    /// Print machine-readable JSON on stdout instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List wgpu adapters and their limits.
    Devices,
    /// Architecture, parameter counts by kind, dtypes and shards of a model (no weights loaded).
    Info {
        /// Model directory or Hugging Face base URL (…/resolve/main/).
        model: String,
    },
    /// Mean next-token negative log-likelihood and perplexity of a text.
    Score {
        /// Model directory or Hugging Face base URL.
        model: String,
        /// PEFT LoRA adapter directory or URL to apply to the model.
        #[arg(long)]
        adapter: Option<String>,
        /// Text to score.
        #[arg(long, conflicts_with = "file", required_unless_present = "file")]
        text: Option<String>,
        /// File whose contents to score.
        #[arg(long)]
        file: Option<PathBuf>,
    },
    /// Write the full logits [T, vocab] for token ids to a safetensors file (key `logits`).
    Logits {
        /// Model directory or Hugging Face base URL.
        model: String,
        /// PEFT LoRA adapter directory or URL to apply to the model.
        #[arg(long)]
        adapter: Option<String>,
        /// Comma-separated token ids, e.g. 1,2,3.
        #[arg(long, value_delimiter = ',', required = true)]
        tokens: Vec<u32>,
        /// Output .safetensors file.
        #[arg(long)]
        out: PathBuf,
    },
    /// Continue a prompt, streaming tokens as they are generated.
    Generate {
        /// Model directory or Hugging Face base URL.
        model: String,
        /// PEFT LoRA adapter directory or URL to apply to the model.
        #[arg(long)]
        adapter: Option<String>,
        /// Text to continue.
        #[arg(long)]
        prompt: String,
        #[arg(long, default_value_t = 32)]
        max_new_tokens: usize,
        /// 0 = greedy.
        #[arg(long, default_value_t = 0.0)]
        temperature: f64,
        #[arg(long, default_value_t = 1.0)]
        top_p: f64,
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Fine-tune a model (full or LoRA) on text or instruction data.
    Train(Box<TrainArgs>),
    /// Score benchmarks: what a model learned (gsm8k, humaneval, perplexity) and forgot
    /// (hellaswag, arc, winogrande), as lm-evaluation-harness scores them.
    Eval(Box<EvalArgs>),
    /// Spectra of weight changes: rank needed to explain a fraction of ΔW's variance, per
    /// matrix, for fine-tuned checkpoints (or a LoRA adapter) against their base.
    Spectrum(SpectrumArgs),
    /// Generate bundled data from a seed: `math` (GSM8K-layout word problems) or `forgetting`
    /// (HellaSwag / ARC / WinoGrande-layout evals from held-out text given with --from).
    MakeData {
        /// Which data: math or forgetting.
        kind: String,
        /// forgetting: the held-out source text (paragraphs separated by blank lines).
        #[arg(long)]
        from: Option<PathBuf>,
        /// forgetting: items per eval.
        #[arg(long, default_value_t = 300)]
        items: usize,
        #[arg(long, default_value_t = 2000)]
        train: usize,
        #[arg(long, default_value_t = 200)]
        test: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Output directory: train.jsonl and test.jsonl (GSM8K layout, also usable for
        /// instruction tuning) and train.txt (continued-pretraining form).
        #[arg(long)]
        out: PathBuf,
    },
    /// Write a randomly initialised Hugging Face checkpoint for a `config.json` (the start of
    /// pretraining: then `train --method full --train-embeddings`).
    Init {
        /// A config.json (llama, qwen2, mistral or gpt2).
        config: PathBuf,
        /// The tokenizer.json to ship with it.
        #[arg(long)]
        tokenizer: PathBuf,
        /// Standard deviation of the weights (transformers' `initializer_range`; default: the
        /// config's, else 0.02).
        #[arg(long)]
        std: Option<f64>,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(long)]
        out: PathBuf,
    },
    /// Pretrain a small Llama from scratch (tokenizer, random init, training on the corpus): how
    /// the bundled base model `models/tunelab-base` is rebuilt.
    Pretrain {
        /// TOML file with pretraining settings (default: the bundled model's settings).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Override the number of training tokens.
        #[arg(long)]
        max_tokens: Option<u64>,
        #[arg(long, default_value = "models/tunelab-base")]
        out: PathBuf,
    },
    /// Run the learning-vs-forgetting experiment: train every method on every target, evaluate
    /// learning and forgetting at each budget, write results.json/csv, report.md and plots.
    /// Without a config it runs the bundled default (experiments/default.toml). Interrupted
    /// runs resume: finished runs in --out are reused.
    Experiment {
        /// Experiment TOML (relative paths in it are relative to its directory).
        config: Option<PathBuf>,
        /// Output directory (default: experiment-results/<name>).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Print the bundled default configuration and exit.
        #[arg(long)]
        print_default: bool,
    },
    /// Serve the web app (www/) and the bundled models and data on 127.0.0.1 (build the bundle
    /// first: scripts/build-web.sh; scripts/web.sh does both).
    Serve {
        #[arg(long, default_value_t = 8080)]
        port: u16,
        /// Directory to serve (default: the repository this binary was built from).
        #[arg(long)]
        root: Option<PathBuf>,
    },
    /// Training speed and memory: tokens/s, TFLOP/s, first-step time and device memory of full
    /// fine-tuning and LoRA at a given shape (`scripts/bench.sh` puts PyTorch beside it).
    Bench(Box<BenchArgs>),
    /// Merge a PEFT LoRA adapter into its base model and write a Hugging Face checkpoint.
    Merge {
        /// Base model directory or URL.
        base: String,
        /// PEFT adapter directory or URL.
        adapter: String,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(clap::Args)]
struct EvalArgs {
    /// Model directory or Hugging Face base URL.
    model: String,
    /// PEFT LoRA adapter to apply.
    #[arg(long)]
    adapter: Option<String>,
    /// NAME=FILE in the published JSONL layout: hellaswag, arc, winogrande, gsm8k (add
    /// `,train=FILE` for few-shot examples), humaneval, perplexity (text or JSONL `text`).
    #[arg(long = "task", required = true)]
    tasks: Vec<String>,
    /// Score at most this many items per task.
    #[arg(long)]
    limit: Option<usize>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Few-shot examples for gsm8k.
    #[arg(long, default_value_t = 5)]
    shots: usize,
    #[arg(long, default_value_t = 256)]
    max_gen_toks: usize,
    /// Samples per humaneval problem (the paper: 50).
    #[arg(long, default_value_t = 10)]
    samples: usize,
    #[arg(long, default_value_t = 0.2)]
    temperature: f64,
    #[arg(long, default_value_t = 0.95)]
    top_p: f64,
    /// Run generated code with the system python3 (dangerous: it runs with your rights; see
    /// the README).
    #[arg(long)]
    allow_exec: bool,
    /// Score each choice with its own forward pass instead of one batch per item.
    #[arg(long)]
    no_batch: bool,
    /// Skip lines that are not valid items, and count them.
    #[arg(long)]
    skip_bad_lines: bool,
    /// Also write the full report (per-item scores, generations) to this JSON file.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(clap::Args)]
struct TrainArgs {
    /// Base model directory or Hugging Face base URL.
    model: String,
    /// Training data: .txt (continued pretraining) or .jsonl (`text`, or prompt/response).
    #[arg(long)]
    data: PathBuf,
    /// Held-out data for periodic evaluation loss.
    #[arg(long)]
    eval_data: Option<PathBuf>,
    /// cpt (loss on every token, packed) or ift (loss on responses); default: from the file.
    #[arg(long)]
    regime: Option<Regime>,
    /// full or lora.
    #[arg(long, default_value = "lora")]
    method: String,
    /// LoRA rank.
    #[arg(long, default_value_t = 16)]
    rank: usize,
    /// LoRA alpha (default 2 × rank, as the paper).
    #[arg(long)]
    alpha: Option<f64>,
    /// LoRA targets: module names (q_proj, c_attn…), presets attention|mlp|all, or re:<regex>.
    #[arg(long, value_delimiter = ',', default_value = "all")]
    targets: Vec<String>,
    /// LoRA dropout.
    #[arg(long, default_value_t = 0.05)]
    dropout: f64,
    /// Scale LoRA by alpha/sqrt(rank) (rsLoRA).
    #[arg(long)]
    rslora: bool,
    /// LoRA A initialisation: kaiming (PEFT default) or gaussian.
    #[arg(long, default_value = "kaiming")]
    lora_init: String,
    /// LoRA+: learning rate of B = lr × ratio.
    #[arg(long)]
    lora_plus_ratio: Option<f64>,
    /// Full fine-tuning: also train embeddings and LM head.
    #[arg(long)]
    train_embeddings: bool,
    /// Full fine-tuning: keep tensors matching this regex frozen (repeatable).
    #[arg(long)]
    freeze: Vec<String>,
    /// adamw or lion.
    #[arg(long, default_value = "adamw")]
    optimizer: OptimizerKind,
    /// Peak learning rate (default 1e-4 for LoRA, 1e-5 for full, as the paper's ~10× rule).
    #[arg(long)]
    lr: Option<f64>,
    /// constant, linear, cosine or inverse_sqrt.
    #[arg(long, default_value = "cosine")]
    schedule: Schedule,
    /// Warm-up: a fraction of the steps (< 1) or a number of steps.
    #[arg(long, default_value_t = 0.1)]
    warmup: f64,
    #[arg(long, default_value_t = 0.0)]
    weight_decay: f64,
    #[arg(long, default_value_t = 1.0)]
    epochs: f64,
    #[arg(long)]
    max_steps: Option<usize>,
    #[arg(long)]
    max_tokens: Option<u64>,
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    #[arg(long, default_value_t = 1)]
    grad_accum: usize,
    #[arg(long, default_value_t = 128)]
    seq_len: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Clip the global gradient norm (0 = off).
    #[arg(long, default_value_t = 1.0)]
    clip: f64,
    /// Dropout on attention probabilities (regularisation baseline).
    #[arg(long, default_value_t = 0.0)]
    attention_dropout: f64,
    /// Dropout on residual branches (regularisation baseline).
    #[arg(long, default_value_t = 0.0)]
    residual_dropout: f64,
    #[arg(long, default_value_t = 10)]
    log_every: usize,
    #[arg(long)]
    eval_every: Option<usize>,
    #[arg(long)]
    save_every: Option<usize>,
    /// Skip JSONL lines that are not JSON or lack the field, and count them.
    #[arg(long)]
    skip_bad_lines: bool,
    /// Output directory (the final adapter or checkpoint; checkpoint-N/ inside).
    #[arg(long)]
    out: PathBuf,
    /// Continue exactly from a checkpoint directory written by an earlier run.
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Recompute memory-bound activations in the backward pass instead of keeping them: less
    /// memory, more time (see `tunelab bench --checkpoint-activations`).
    #[arg(long)]
    checkpoint_activations: bool,
}

#[derive(clap::Args)]
struct BenchArgs {
    /// A preset shape (small, medium, smollm2-135m) with random weights, a config.json (random
    /// weights), or a model directory / Hugging Face base URL (its weights).
    #[arg(default_value = "small")]
    model: String,
    /// Comma-separated methods: full, lora<rank> (e.g. full,lora16,lora256).
    #[arg(long, value_delimiter = ',', default_value = "full,lora16,lora256")]
    methods: Vec<tunelab::bench::BenchMethod>,
    #[arg(long, default_value_t = 8)]
    batch: usize,
    #[arg(long, default_value_t = 128)]
    seq: usize,
    /// Timed steps (rounded up to whole windows).
    #[arg(long, default_value_t = 20)]
    steps: usize,
    /// Untimed steps after the first.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Steps per timing window (tokens/s is the median window).
    #[arg(long, default_value_t = 5)]
    window: usize,
    /// Recompute memory-bound activations in the backward pass.
    #[arg(long)]
    checkpoint_activations: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), Error> {
    let json = cli.json;
    match cli.command {
        Command::Devices => {
            let list = device::adapters();
            if json {
                print_json(&list);
            } else if list.is_empty() {
                println!("no wgpu adapters (the CPU backend is always available)");
            } else {
                for (i, a) in list.iter().enumerate() {
                    println!(
                        "{i}: {} [{} {}{}] driver: {}",
                        a.name,
                        a.backend,
                        a.device_type,
                        if a.software { ", software" } else { "" },
                        a.driver
                    );
                    println!(
                        "   max_buffer_size {} MiB, max_storage_buffer_binding_size {} MiB, workgroup storage {} KiB, invocations {}",
                        a.max_buffer_size >> 20,
                        a.max_storage_buffer_binding_size >> 20,
                        a.max_compute_workgroup_storage_size >> 10,
                        a.max_compute_invocations_per_workgroup
                    );
                }
                println!("cpu: burn flex backend (always available)");
            }
        }
        Command::Info { model } => {
            let source = ModelSource::parse(&model);
            let info = pollster::block_on(tunelab::info::inspect(&source))?;
            if json {
                print_json(&info);
            } else {
                println!("model:      {}", info.source);
                println!("model_type: {}", info.config.model_type);
                println!(
                    "dtype:      {} (stored: {})",
                    info.config.dtype.as_deref().unwrap_or("unspecified"),
                    info.dtypes
                        .iter()
                        .map(|(d, n)| format!("{d} ×{n}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                println!("parameters: {}", info.total_parameters);
                for (kind, c) in &info.parameters_by_kind {
                    println!(
                        "  {kind:<10} {:>12} in {} tensors ({:.1}%)",
                        c.parameters,
                        c.tensors,
                        100.0 * c.parameters as f64 / info.total_parameters.max(1) as f64
                    );
                }
                println!(
                    "shards:     {}{}",
                    info.shards.len(),
                    if info.sharded { " (indexed)" } else { "" }
                );
                for s in &info.shards {
                    println!("  {} {} bytes, {} tensors", s.file, s.bytes, s.tensors);
                }
                println!(
                    "config:     {}",
                    serde_json::to_string(&info.config.arch).unwrap_or_default()
                );
            }
        }
        Command::Score {
            model,
            adapter,
            text,
            file,
        } => {
            let text = match (text, file) {
                (Some(t), _) => t,
                (None, Some(f)) => std::fs::read_to_string(&f)
                    .map_err(|e| Error::Input(format!("--file {}: {e}", f.display())))?,
                (None, None) => unreachable!("clap requires --text or --file"),
            };
            let session = load(&model, adapter.as_deref(), cli.device, json)?;
            let score = pollster::block_on(session.score_text(&text))?;
            if json {
                print_json(&serde_json::json!({
                    "tokens": score.tokens, "nll": score.nll, "perplexity": score.perplexity
                }));
            } else {
                println!(
                    "tokens {}  nll {:.6}  perplexity {:.4}",
                    score.tokens, score.nll, score.perplexity
                );
            }
        }
        Command::Logits {
            model,
            adapter,
            tokens,
            out,
        } => {
            let session = load(&model, adapter.as_deref(), cli.device, json)?;
            let logits = pollster::block_on(session.logits(&tokens))?;
            let shape = vec![tokens.len(), session.config.vocab_size()];
            let bytes = serialize_f32(&[("logits".to_string(), shape.clone(), &logits)]);
            write_atomic(&out, &bytes)?;
            if json {
                print_json(&serde_json::json!({"out": out, "shape": shape}));
            } else {
                println!("wrote logits {:?} to {}", shape, out.display());
            }
        }
        Command::Generate {
            model,
            adapter,
            prompt,
            max_new_tokens,
            temperature,
            top_p,
            seed,
        } => {
            let opts = GenerateOptions {
                max_new_tokens,
                temperature,
                top_p,
                seed,
                stop_id: None,
            };
            opts.validate()?;
            let session = load(&model, adapter.as_deref(), cli.device, json)?;
            if !json {
                print!("{prompt}");
            }
            let text = pollster::block_on(session.generate(&prompt, &opts, &mut |e| {
                if let (Event::Token { text }, false) = (e, json) {
                    print!("{text}");
                    let _ = std::io::stdout().flush();
                }
            }))?;
            if json {
                print_json(&serde_json::json!({"prompt": prompt, "completion": text}));
            } else {
                println!();
            }
        }
        Command::Train(args) => train(*args, cli.device, json)?,
        Command::Eval(args) => eval(*args, cli.device, json)?,
        Command::Init {
            config,
            tokenizer,
            std,
            seed,
            out,
        } => {
            let read = |p: &Path| {
                std::fs::read(p).map_err(|e| Error::Input(format!("{}: {e}", p.display())))
            };
            let text = String::from_utf8_lossy(&read(&config)?).into_owned();
            let cfg = tunelab::hf::ModelConfig::parse(&text, &config.display().to_string())?;
            let tok_bytes = read(&tokenizer)?;
            let tok =
                tunelab::hf::Tokenizer::from_bytes(&tok_bytes, &tokenizer.display().to_string())?;
            if tok.vocab_size() > cfg.vocab_size() {
                return Err(Error::Input(format!(
                    "{} has {} tokens but vocab_size is {}",
                    tokenizer.display(),
                    tok.vocab_size(),
                    cfg.vocab_size()
                )));
            }
            let std = std
                .or_else(|| {
                    serde_json::from_str::<serde_json::Value>(&text).ok()?["initializer_range"]
                        .as_f64()
                })
                .unwrap_or(0.02);
            let device = burn::tensor::Device::flex();
            let model = tunelab::model::init_random(&cfg, &device, std, seed)?;
            let mut files = pollster::block_on(tunelab::export::hf_files(
                &model,
                &text,
                tunelab::export::DEFAULT_MAX_SHARD,
            ))?;
            files.push(("tokenizer.json".into(), tok_bytes));
            write_dir(&out, &files)?;
            if json {
                print_json(&serde_json::json!({"out": out, "std": std, "seed": seed}));
            } else {
                println!(
                    "wrote a randomly initialised {} (std {std}) to {}",
                    cfg.model_type,
                    out.display()
                );
            }
        }
        Command::MakeData {
            kind,
            from,
            items,
            train,
            test,
            seed,
            out,
        } => {
            if kind == "forgetting" {
                return make_forgetting(from, items, seed, &out, json);
            }
            if kind != "math" {
                return Err(Error::Input(format!(
                    "make-data `{kind}`: expected math or forgetting"
                )));
            }
            let (tr, te) = tunelab::corpus::math::splits(train, test, seed);
            let jsonl = |v: &[tunelab::corpus::math::Problem]| -> Vec<u8> {
                v.iter()
                    .map(|p| serde_json::to_string(p).expect("serializes") + "\n")
                    .collect::<String>()
                    .into_bytes()
            };
            let text: String = tr
                .iter()
                .map(|p| format!("Question: {}\nAnswer: {}\n\n", p.question, p.answer))
                .collect();
            write_dir(
                &out,
                &[
                    ("train.jsonl".into(), jsonl(&tr)),
                    ("test.jsonl".into(), jsonl(&te)),
                    ("train.txt".into(), text.into_bytes()),
                ],
            )?;
            if json {
                print_json(
                    &serde_json::json!({"out": out, "train": tr.len(), "test": te.len(), "seed": seed}),
                );
            } else {
                println!(
                    "wrote {} train and {} test problems to {}",
                    tr.len(),
                    te.len(),
                    out.display()
                );
            }
        }
        Command::Spectrum(args) => spectrum(args, json)?,
        Command::Serve { port, root } => serve(
            root.unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("..")),
            port,
        )?,
        Command::Experiment {
            config,
            out,
            print_default,
        } => {
            if print_default {
                print!("{}", tunelab::experiment::config::DEFAULT_TOML);
                return Ok(());
            }
            experiment(config, out, cli.device, json)?
        }
        Command::Pretrain {
            config,
            max_tokens,
            out,
        } => {
            let mut cfg = match &config {
                Some(p) => read_toml(p)?,
                None => tunelab::pretrain::PretrainConfig::default(),
            };
            if let Some(t) = max_tokens {
                cfg.max_tokens = t;
            }
            let selected = device::select(cli.device)?;
            if let Some(n) = &selected.notice {
                eprintln!("note: {n}");
            }
            let bar = step_bar(json);
            let result = pollster::block_on(tunelab::pretrain::pretrain(
                &cfg,
                selected.device.autodiff(),
                &mut |e| show_training_event(&bar, e, json),
            ))?;
            bar.finish();
            write_dir(&out, &result.files)?;
            if json {
                print_json(&serde_json::json!({"out": out, "summary": result.summary}));
            } else {
                println!(
                    "pretrained {} steps ({} tokens) in {:.0}s, final loss {}; wrote {}",
                    result.summary.steps,
                    result.summary.tokens_seen,
                    result.summary.seconds,
                    result
                        .summary
                        .final_loss
                        .map_or("-".into(), |l| format!("{l:.4}")),
                    out.display()
                );
            }
        }
        Command::Bench(a) => bench(*a, cli.device, json)?,
        Command::Merge { base, adapter, out } => {
            let mut session = load(&base, Some(&adapter), cli.device, json)?;
            tunelab::model::lora::merge(&mut session.model);
            let mut files = pollster::block_on(tunelab::export::hf_files(
                &session.model,
                &session.config_json,
                tunelab::export::DEFAULT_MAX_SHARD,
            ))?;
            files.extend(session.extra_files.iter().cloned());
            write_dir(&out, &files)?;
            if json {
                print_json(
                    &serde_json::json!({"out": out, "files": files.iter().map(|f| &f.0).collect::<Vec<_>>()}),
                );
            } else {
                println!("merged {adapter} into {base}: {}", out.display());
            }
        }
    }
    Ok(())
}

#[derive(clap::Args)]
struct SpectrumArgs {
    /// Base model directory or URL.
    base: String,
    /// One or more fine-tuned checkpoints of the same architecture (several: how the rank
    /// grows with training).
    finetuned: Vec<String>,
    /// A PEFT LoRA adapter instead of fine-tuned checkpoints.
    #[arg(long, conflicts_with = "finetuned")]
    adapter: Option<String>,
    /// Fraction of σ² energy to explain.
    #[arg(long, default_value_t = 0.9)]
    threshold: f64,
    /// Only these modules (e.g. q_proj,down_proj or attn.c_proj).
    #[arg(long, value_delimiter = ',')]
    modules: Vec<String>,
    /// Scale c of the Gaussian baseline W + c·N(0,1).
    #[arg(long, default_value_t = 0.01)]
    noise: f64,
    /// Write SVG and PNG plots into this directory.
    #[arg(long)]
    plot: Option<PathBuf>,
}

fn spectrum(a: SpectrumArgs, json: bool) -> Result<(), Error> {
    use tunelab::analysis::{plot, spectrum};
    let opts = spectrum::SpectrumOptions {
        threshold: a.threshold,
        modules: a.modules.clone(),
        noise_scale: a.noise,
        seed: 0,
    };
    opts.validate()?;
    if a.finetuned.is_empty() && a.adapter.is_none() {
        return Err(Error::Input(
            "give a fine-tuned checkpoint or --adapter DIR".into(),
        ));
    }
    // The SVDs run on the CPU (faer); weights are loaded on the CPU backend.
    let base = load(&a.base, None, DeviceChoice::Cpu, true)?;
    let mut runs: Vec<(String, Vec<spectrum::MatrixSpectrum>)> = Vec::new();
    let start = std::time::Instant::now();
    if let Some(ad) = &a.adapter {
        let with = load(&a.base, Some(ad), DeviceChoice::Cpu, true)?;
        runs.push((
            ad.clone(),
            pollster::block_on(spectrum::adapter_spectra(&with.model, &opts))?,
        ));
    }
    for ft in &a.finetuned {
        let other = load(ft, None, DeviceChoice::Cpu, true)?;
        runs.push((
            ft.clone(),
            pollster::block_on(spectrum::compare_checkpoints(
                &base.model,
                &other.model,
                &opts,
            ))?,
        ));
    }
    let seconds = start.elapsed().as_secs_f64();
    let summaries: Vec<_> = runs
        .iter()
        .map(|(n, s)| (n.clone(), spectrum::summarize(s, a.threshold)))
        .collect();
    if let Some(dir) = &a.plot {
        for (i, (name, s)) in runs.iter().enumerate() {
            let files = plot::spectrum_plots(s, a.threshold, &format!("rank of ΔW: {name}"))?;
            let sub = if runs.len() == 1 {
                dir.clone()
            } else {
                dir.join(format!("checkpoint-{i}"))
            };
            write_dir(&sub, &files)?;
        }
    }
    if json {
        print_json(&serde_json::json!({
            "threshold": a.threshold, "seconds": seconds,
            "runs": runs.iter().zip(&summaries).map(|((n, s), (_, sum))| serde_json::json!({"finetuned": n, "summary": sum, "matrices": s})).collect::<Vec<_>>(),
        }));
        return Ok(());
    }
    for ((name, s), (_, sum)) in runs.iter().zip(&summaries) {
        println!(
            "{name}: rank needed for {:.0}% of ΔW's σ² energy",
            a.threshold * 100.0
        );
        println!("| module | shape | ΔW | W_base | W_ft | c·N(0,1) | W_base + c·N |");
        println!("|---|---|---|---|---|---|---|");
        let opt = |v: Option<usize>| v.map_or("-".to_string(), |r| r.to_string());
        for m in s {
            println!(
                "| {} | {}×{} | {} | {} | {} | {} | {} |",
                m.module,
                m.shape[0],
                m.shape[1],
                m.rank_delta,
                opt(m.rank_base),
                opt(m.rank_ft),
                opt(m.rank_noise),
                opt(m.rank_base_plus_noise)
            );
        }
        println!(
            "mean rank: attention {:.1} ({:.0}% of full), MLP {:.1} ({:.0}% of full); first/last layers {:.1}, middle {}",
            sum.mean_rank_attention,
            100.0 * sum.mean_rank_fraction_attention,
            sum.mean_rank_mlp,
            100.0 * sum.mean_rank_fraction_mlp,
            sum.mean_rank_first_last,
            sum.mean_rank_middle
                .map_or("-".into(), |m| format!("{m:.1}"))
        );
    }
    if runs.len() > 1 {
        println!("growth over checkpoints (mean rank of ΔW):");
        for (name, sum) in &summaries {
            println!(
                "  {name}: attention {:.1}, MLP {:.1}",
                sum.mean_rank_attention, sum.mean_rank_mlp
            );
        }
    }
    eprintln!("analysed in {seconds:.2}s");
    Ok(())
}

fn eval(a: EvalArgs, choice: DeviceChoice, json: bool) -> Result<(), Error> {
    use tunelab::eval::suite::{self, EvalOptions, TaskKind};
    let input = |m: String| Error::Input(m);
    let open = |p: &str| -> Result<std::io::BufReader<std::fs::File>, Error> {
        std::fs::File::open(p)
            .map(std::io::BufReader::new)
            .map_err(|e| input(format!("--task: {p}: {e}")))
    };
    let mut tasks = Vec::new();
    for spec in &a.tasks {
        let (name, rest) = spec
            .split_once('=')
            .ok_or_else(|| input(format!("--task `{spec}`: expected NAME=FILE")))?;
        let kind: TaskKind = name.parse().map_err(input)?;
        let mut parts = rest.split(',');
        let file = parts.next().unwrap_or_default().to_string();
        let mut train = None;
        for p in parts {
            match p.split_once('=') {
                Some(("train", f)) => train = Some(f.to_string()),
                _ => {
                    return Err(input(format!(
                        "--task `{spec}`: unknown option `{p}` (only train=FILE)"
                    )));
                }
            }
        }
        let mut reader = open(&file)?;
        let mut train_reader = match &train {
            Some(t) => Some(open(t)?),
            None => None,
        };
        tasks.push(suite::read_task(
            name,
            kind,
            (&file, &mut reader),
            match (&train, train_reader.as_mut()) {
                (Some(t), Some(r)) => Some((t.as_str(), r as &mut dyn std::io::BufRead)),
                _ => None,
            },
            a.skip_bad_lines,
            a.limit,
        )?);
    }
    let opts = EvalOptions {
        shots: a.shots,
        max_gen_toks: a.max_gen_toks,
        samples: a.samples,
        temperature: a.temperature,
        top_p: a.top_p,
        seed: a.seed,
        allow_exec: a.allow_exec,
        exec_timeout_s: 10.0,
        batched: !a.no_batch,
    };
    let session = load(&a.model, a.adapter.as_deref(), choice, json)?;
    let bar = progress_bar(
        0,
        "{msg:12} [{bar:30}] {pos}/{len} items [{elapsed_precise}<{eta_precise}]",
        json,
    );
    let start = std::time::Instant::now();
    let report = pollster::block_on(suite::run(&session, &tasks, &opts, &mut |e| {
        if let Event::Progress(p) = e {
            bar.set_message(p.task.clone());
            bar.set_length(p.total.unwrap_or(0));
            bar.set_position(p.done);
        }
    }))?;
    bar.finish_and_clear();
    if let Some(out) = &a.out {
        write_atomic(
            out,
            &serde_json::to_vec_pretty(&report).expect("report serializes"),
        )?;
    }
    if json {
        print_json(
            &serde_json::json!({"metrics": report.metrics, "notes": report.notes, "seconds": start.elapsed().as_secs_f64()}),
        );
    } else {
        println!("| task | metric | value | items | variant |");
        println!("|---|---|---|---|---|");
        for m in &report.metrics {
            println!(
                "| {} | {} | {:.4} | {} | {} |",
                m.task, m.metric, m.value, m.items, m.variant
            );
        }
        for n in &report.notes {
            println!("note: {n}");
        }
    }
    Ok(())
}

fn train(a: TrainArgs, choice: DeviceChoice, json: bool) -> Result<(), Error> {
    let input = |m: String| Error::Input(m);
    // A resumed run takes its settings from the checkpoint, so it continues exactly.
    let resumed = match &a.resume {
        Some(dir) => Some(Resume::read(dir)?),
        None => None,
    };
    let was_resumed = resumed.is_some();
    let config = match &resumed {
        Some(r) => r.config.clone(),
        None => {
            let method = match a.method.as_str() {
                "lora" => Method::Lora(LoraConfig {
                    rank: a.rank,
                    alpha: a.alpha.unwrap_or(2.0 * a.rank as f64),
                    dropout: a.dropout,
                    rslora: a.rslora,
                    init: match a.lora_init.as_str() {
                        "kaiming" => LoraInit::Kaiming,
                        "gaussian" => LoraInit::Gaussian,
                        o => {
                            return Err(input(format!(
                                "--lora-init `{o}`: expected kaiming or gaussian"
                            )));
                        }
                    },
                    targets: a.targets.clone(),
                }),
                "full" => Method::Full(FullConfig {
                    train_embeddings: a.train_embeddings,
                    freeze: a.freeze.clone(),
                }),
                o => return Err(input(format!("--method `{o}`: expected full or lora"))),
            };
            let lr = a.lr.unwrap_or(match method {
                Method::Lora(_) => 1e-4,
                Method::Full(_) => 1e-5,
            });
            TrainConfig {
                method,
                optimizer: match a.optimizer {
                    OptimizerKind::AdamW => OptimizerConfig::adamw(a.weight_decay),
                    OptimizerKind::Lion => OptimizerConfig::lion(a.weight_decay),
                },
                lr,
                lora_plus_ratio: a.lora_plus_ratio,
                schedule: a.schedule,
                warmup_steps: 0,
                epochs: a.epochs,
                max_steps: a.max_steps,
                max_tokens: a.max_tokens,
                batch_size: a.batch_size,
                grad_accum: a.grad_accum,
                seed: a.seed,
                clip: (a.clip > 0.0).then_some(a.clip),
                attention_dropout: a.attention_dropout,
                residual_dropout: a.residual_dropout,
                log_every: a.log_every,
                eval_every: a.eval_every,
                save_every: a.save_every,
                checkpoint_activations: a.checkpoint_activations,
            }
        }
    };
    let selected = device::select(choice)?;
    if let Some(n) = &selected.notice {
        eprintln!("note: {n}");
    }
    // Full fine-tuning resumes from the checkpoint's own weights; LoRA from the base model.
    let model_src = match &resumed {
        Some(r) => r.model_source(&a.model),
        None => a.model.clone(),
    };
    let device = tunelab::train::training_device(&selected.device, config.checkpoint_activations);
    let session = pollster::block_on(Session::load(
        &ModelSource::parse(&model_src),
        device.clone(),
        &mut |_| {},
    ))?;
    let tok = session.tokenizer()?;
    let regime = match a.regime {
        Some(r) => r,
        None => Regime::detect(&a.data)?,
    };
    let opts = DataOptions {
        regime,
        seq_len: a.seq_len,
        skip_bad_lines: a.skip_bad_lines,
        pad_id: tok.eos_id.unwrap_or(0),
    };
    if a.seq_len > session.config.max_positions() {
        return Err(input(format!(
            "--seq-len {} exceeds the model's context ({} max_position_embeddings)",
            a.seq_len,
            session.config.max_positions()
        )));
    }
    if let Some(adapter) = &selected.adapter {
        tunelab::train::trainer::check_buffer_limit(
            &session.config,
            a.batch_size,
            a.seq_len,
            adapter.max_storage_buffer_binding_size,
            "--batch-size or --seq-len",
        )?;
    }
    let train_data = load_data(&a.data, tok, &opts, json)?;
    let eval_data = match &a.eval_data {
        Some(p) => Some(load_data(p, tok, &opts, json)?),
        None => None,
    };
    if let Some(r) = &resumed {
        r.check(&session.model)?;
    }
    let adapter = match &resumed {
        Some(r) => pollster::block_on(r.adapter())?,
        None => None,
    };
    let base_name = a.model.clone();
    let mut trainer = Trainer::new(
        session.model,
        device,
        config,
        session.config_json.clone(),
        session.extra_files.clone(),
        base_name,
        adapter.as_ref(),
    )?;
    let total = trainer.total_steps(train_data.examples.len(), a.seq_len);
    if !was_resumed {
        trainer.config.warmup_steps = if a.warmup < 1.0 {
            (a.warmup * total as f64).round() as usize
        } else {
            a.warmup as usize
        };
    }
    if let Some(r) = resumed {
        r.apply(&mut trainer)?;
    }
    if !json {
        eprintln!("device: {}", selected.label);
        eprintln!(
            "training {} parameters ({} tensors) on {} examples × {} tokens{}, {} steps",
            trainer.trainable_parameters,
            trainer.trainable.len(),
            train_data.examples.len(),
            a.seq_len,
            if train_data.skipped_lines > 0 {
                format!(" ({} bad lines skipped)", train_data.skipped_lines)
            } else {
                String::new()
            },
            total
        );
    }
    std::fs::create_dir_all(&a.out)
        .map_err(|e| input(format!("--out {}: {e}", a.out.display())))?;
    let log_path = a.out.join("train_log.jsonl");
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| input(format!("{}: {e}", log_path.display())))?;
    let bar = step_bar(json);
    bar.set_length(total as u64);
    bar.set_position(trainer.progress.step as u64);
    let mut sink = DirSink {
        root: a.out.clone(),
    };
    let summary =
        pollster::block_on(
            trainer.run(&train_data, eval_data.as_ref(), &mut sink, &mut |e| {
                let line = serde_json::to_string(e).expect("events serialize");
                let _ = writeln!(log, "{line}");
                show_training_event(&bar, e, json);
            }),
        );
    bar.finish();
    let summary = summary?;
    if json {
        print_json(&summary);
    } else {
        println!(
            "trained {} steps ({} tokens) in {:.1}s: final loss {}, eval loss {}; wrote {}",
            summary.steps,
            summary.tokens_seen,
            summary.seconds,
            summary
                .final_loss
                .map(|l| format!("{l:.4}"))
                .unwrap_or("-".into()),
            summary
                .final_eval_loss
                .map(|l| format!("{l:.4}"))
                .unwrap_or("-".into()),
            a.out.display()
        );
    }
    Ok(())
}

fn bench(a: BenchArgs, choice: DeviceChoice, json: bool) -> Result<(), Error> {
    use tunelab::bench;
    let selected = device::select(choice)?;
    if let Some(n) = &selected.notice {
        eprintln!("note: {n}");
    }
    let device = tunelab::train::training_device(&selected.device, a.checkpoint_activations);
    let opts = bench::BenchOptions {
        batch: a.batch,
        seq: a.seq,
        steps: a.steps,
        warmup: a.warmup,
        window: a.window,
        checkpoint_activations: a.checkpoint_activations,
    };
    if !json {
        eprintln!("device: {}", selected.label);
        println!(
            "{:<8} {:>12} {:>9} {:>10} {:>8} {:>10} {:>10} {:>10} {:>10} {:>9}",
            "method",
            "trainable",
            "first s",
            "tok/s",
            "TFLOP/s",
            "dev MiB",
            "optim MiB",
            "activ MiB",
            "grads MiB",
            "RSS MiB"
        );
    }
    let mib = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.0}"));
    for method in &a.methods {
        let bar = step_bar(json);
        let (config, model) = pollster::block_on(bench::model(&a.model, &device, &mut |_| {}))?;
        if let Some(adapter) = &selected.adapter {
            tunelab::train::trainer::check_buffer_limit(
                &config,
                a.batch,
                a.seq,
                adapter.max_storage_buffer_binding_size,
                "--batch or --seq",
            )?;
        }
        let r = pollster::block_on(bench::run(
            model,
            &config,
            &a.model,
            &device,
            &selected.label,
            *method,
            &opts,
            &mut |e| {
                if let Event::Progress(p) = e {
                    bar.set_length(p.total.unwrap_or(0));
                    bar.set_position(p.done);
                    bar.set_message(p.task.clone());
                }
            },
        ));
        bar.finish_and_clear();
        let r = r?;
        if json {
            println!("{}", serde_json::to_string(&r).expect("results serialize"));
        } else {
            println!(
                "{:<8} {:>12} {:>9.2} {:>10.0} {:>8.3} {:>10} {:>10} {:>10} {:>10} {:>9}",
                method.to_string(),
                r.trainable_parameters,
                r.first_step_s,
                r.tokens_per_s,
                r.tflops,
                mib(r.memory.device_reserved_peak_mib),
                mib(r.memory.optimizer_state_mib),
                mib(r.memory.activations_mib),
                mib(r.memory.gradients_mib),
                mib(r.memory.peak_rss_mib)
            );
        }
    }
    Ok(())
}

fn make_forgetting(
    from: Option<PathBuf>,
    items: usize,
    seed: u64,
    out: &Path,
    json: bool,
) -> Result<(), Error> {
    let from =
        from.ok_or_else(|| Error::Input("make-data forgetting needs --from HELDOUT_TEXT".into()))?;
    let text = std::fs::read_to_string(&from)
        .map_err(|e| Error::Input(format!("--from {}: {e}", from.display())))?;
    let sets = tunelab::corpus::forgetting::build(&text, items, seed);
    let lines = |v: &[serde_json::Value]| -> Vec<u8> {
        v.iter()
            .map(|x| x.to_string() + "\n")
            .collect::<String>()
            .into_bytes()
    };
    write_dir(
        out,
        &[
            ("hellaswag.jsonl".into(), lines(&sets.hellaswag)),
            ("arc.jsonl".into(), lines(&sets.arc)),
            ("winogrande.jsonl".into(), lines(&sets.winogrande)),
        ],
    )?;
    let counts = [sets.hellaswag.len(), sets.arc.len(), sets.winogrande.len()];
    if json {
        print_json(
            &serde_json::json!({"out": out, "hellaswag": counts[0], "arc": counts[1], "winogrande": counts[2]}),
        );
    } else {
        println!(
            "wrote {} hellaswag, {} arc and {} winogrande items from {} to {}",
            counts[0],
            counts[1],
            counts[2],
            from.display(),
            out.display()
        );
    }
    Ok(())
}

fn experiment(
    config: Option<PathBuf>,
    out: Option<PathBuf>,
    choice: DeviceChoice,
    json: bool,
) -> Result<(), Error> {
    use tunelab::experiment::{ExperimentConfig, config::DEFAULT_TOML, report, runner};
    let (cfg, root) = match &config {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .map_err(|e| Error::Input(format!("{}: {e}", p.display())))?;
            let root = p.parent().map(Path::to_path_buf).unwrap_or_default();
            (
                ExperimentConfig::parse(&text, &p.display().to_string())?,
                root,
            )
        }
        // The bundled default lives in the repository this binary was built from.
        None => (
            ExperimentConfig::parse(DEFAULT_TOML, "experiments/default.toml")?,
            Path::new(env!("CARGO_MANIFEST_DIR")).join(".."),
        ),
    };
    let root = if root.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        root
    };
    // Resolved once, so results name the model's real location.
    let root = root.canonicalize().unwrap_or(root);
    let out = out.unwrap_or_else(|| Path::new("experiment-results").join(&cfg.name));
    let selected = device::select(choice)?;
    if let Some(n) = &selected.notice {
        eprintln!("note: {n}");
    }
    if !json {
        eprintln!("device: {}; writing to {}", selected.label, out.display());
    }
    let bar = step_bar(json);
    let results = pollster::block_on(runner::run(
        &cfg,
        &root,
        &out,
        selected.device.clone(),
        &selected.label,
        &mut |e| match e {
            Event::Progress(p) if p.unit == Unit::Items && !json => {
                bar.set_length(p.total.unwrap_or(0));
                bar.set_position(p.done);
                bar.set_message(format!("eval {}", p.task));
            }
            Event::Progress(_) => {}
            _ => show_training_event(&bar, e, json),
        },
    ))?;
    bar.finish_and_clear();
    let files = report::files(&results)?;
    write_dir(&out, &files)?;
    if json {
        print_json(&results);
        return Ok(());
    }
    let md = report::markdown(&results);
    // The tables and findings; the plots are files.
    for line in md.lines().filter(|l| !l.starts_with("![")) {
        println!("{line}");
    }
    println!("\nreport: {}", out.join("report.md").display());
    Ok(())
}

/// Content type by file extension: what WebAssembly and ES modules need; data files (also
/// `.gz`) as plain bytes, so the browser does not decompress what the engine gunzips itself.
fn content_type(path: &Path) -> &'static str {
    match path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or_default()
    {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "wasm" => "application/wasm",
        "json" => "application/json",
        "css" => "text/css",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "txt" | "md" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// A static file server for the web app on 127.0.0.1 (never on other interfaces).
fn serve(root: PathBuf, port: u16) -> Result<(), Error> {
    let root = root
        .canonicalize()
        .map_err(|e| Error::Input(format!("--root {}: {e}", root.display())))?;
    if !root.join("www/pkg/tunelab_bg.wasm").exists() {
        eprintln!(
            "note: {}/www/pkg is missing; build it with scripts/build-web.sh",
            root.display()
        );
    }
    let server = tiny_http::Server::http(("127.0.0.1", port))
        .map_err(|e| Error::Input(format!("cannot listen on 127.0.0.1:{port}: {e}")))?;
    println!(
        "serving {} on http://127.0.0.1:{port}/www/ (Ctrl-C to stop)",
        root.display()
    );
    for request in server.incoming_requests() {
        let url = request.url().split('?').next().unwrap_or("/").to_string();
        let rel = url.trim_start_matches('/');
        let path = if rel.is_empty() {
            root.join("www/index.html")
        } else {
            root.join(rel)
        };
        // Only files under the root: no `..`, and symlinks resolved before the check.
        let inside = !rel.split('/').any(|c| c == "..")
            && path
                .canonicalize()
                .is_ok_and(|p| p.starts_with(&root) && p.is_file());
        let response = if inside {
            match std::fs::read(&path) {
                Ok(bytes) => tiny_http::Response::from_data(bytes).with_header(
                    tiny_http::Header::from_bytes("Content-Type", content_type(&path))
                        .expect("valid header"),
                ),
                Err(_) => tiny_http::Response::from_string("cannot read").with_status_code(500),
            }
        } else {
            tiny_http::Response::from_string("not found").with_status_code(404)
        };
        let _ = request.respond(response);
    }
    Ok(())
}

/// Pick the device, then load the model (and adapter) with a progress bar per shard.
fn load(
    model: &str,
    adapter: Option<&str>,
    choice: DeviceChoice,
    quiet: bool,
) -> Result<Session, Error> {
    let selected = device::select(choice)?;
    if let Some(n) = &selected.notice {
        eprintln!("note: {n}");
    }
    if !quiet {
        eprintln!("device: {}", selected.label);
    }
    let source = ModelSource::parse(model);
    let bars = MultiProgress::new();
    let mut open: HashMap<String, ProgressBar> = HashMap::new();
    let style =
        ProgressStyle::with_template("{msg:30} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}")
            .expect("valid template")
            .progress_chars("=> ");
    let session = pollster::block_on(Session::load(&source, selected.device, &mut |e| {
        if let Event::Progress(p) = e {
            if p.unit != Unit::Bytes {
                return;
            }
            let bar = open.entry(p.task.clone()).or_insert_with(|| {
                let b = bars.add(ProgressBar::new(p.total.unwrap_or(0)));
                b.set_style(style.clone());
                b.set_message(p.task.clone());
                b
            });
            bar.set_position(p.done);
            if p.total == Some(p.done) {
                bar.finish();
            }
        }
    }))?;
    let mut session = session;
    if let Some(a) = adapter {
        pollster::block_on(session.attach_adapter(&ModelSource::parse(a)))?;
    }
    Ok(session)
}

/// Tokenize a data file with a progress bar (bytes of the file read).
fn load_data(
    path: &Path,
    tok: &Tokenizer,
    opts: &DataOptions,
    json: bool,
) -> Result<data::Dataset, Error> {
    let bar = progress_bar(
        0,
        "{msg:30} [{bar:30}] {bytes}/{total_bytes} [{elapsed_precise}<{eta_precise}]",
        json,
    );
    let dataset = data::load(path, tok, opts, &mut |e| {
        if let Event::Progress(p) = e {
            bar.set_message(p.task.clone());
            bar.set_length(p.total.unwrap_or(p.done));
            bar.set_position(p.done);
        }
    });
    bar.finish_and_clear();
    dataset
}

/// The progress bar of a training run (length set by the first step event).
fn step_bar(json: bool) -> ProgressBar {
    progress_bar(
        0,
        "{bar:30} {pos}/{len} steps {msg} [{elapsed_precise}<{eta_precise}]",
        json,
    )
}

/// Show a training event: JSON lines with `--json`, else on the progress bar.
fn show_training_event(bar: &ProgressBar, e: &Event, json: bool) {
    if json {
        println!("{}", serde_json::to_string(e).expect("events serialize"));
        return;
    }
    match e {
        Event::Step {
            step,
            total_steps,
            loss,
            lr,
            tokens_per_s,
            ..
        } => {
            bar.set_length(*total_steps as u64);
            bar.set_position(*step as u64);
            bar.set_message(format!(
                "loss {loss:.4} lr {lr:.2e} {tokens_per_s:.0} tok/s"
            ));
        }
        Event::Eval { step, loss, .. } => bar.println(format!("step {step}: eval loss {loss:.4}")),
        Event::Checkpoint { name, .. } => bar.println(format!("saved {name}")),
        Event::Notice { message } => bar.println(message.clone()),
        // Work before the first step (tokenizing): shown on the bar until steps begin.
        Event::Progress(p) if p.unit == Unit::Bytes => bar.set_message(format!(
            "{} {:.1}/{} MB",
            p.task,
            p.done as f64 / 1e6,
            p.total
                .map_or("?".into(), |t| format!("{:.1}", t as f64 / 1e6))
        )),
        _ => {}
    }
}

/// Parse a TOML settings file, naming the file and field on error.
fn read_toml<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, Error> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Input(format!("{}: {e}", path.display())))?;
    toml::from_str(&text).map_err(|e| Error::Input(format!("{}: {e}", path.display())))
}

/// A progress bar on stderr, hidden when the output is JSON.
fn progress_bar(len: u64, template: &str, hidden: bool) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(ProgressStyle::with_template(template).expect("valid template"));
    if hidden {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar
}

fn print_json<T: serde::Serialize>(v: &T) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).expect("our types always serialize")
    );
}

/// Write to a temporary file beside `path`, then rename, so a crash never leaves half a file.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let err = |e: std::io::Error| Error::Input(format!("cannot write {}: {e}", path.display()));
    let tmp = path.with_extension("tmp-tunelab");
    std::fs::write(&tmp, bytes).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}
