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
use tunelab::hf::ModelSource;
use tunelab::hf::safetensors::serialize_f32;
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
        Command::Score { model, text, file } => {
            let text = match (text, file) {
                (Some(t), _) => t,
                (None, Some(f)) => std::fs::read_to_string(&f)
                    .map_err(|e| Error::Input(format!("--file {}: {e}", f.display())))?,
                (None, None) => unreachable!("clap requires --text or --file"),
            };
            let session = load(&model, cli.device, json)?;
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
        Command::Logits { model, tokens, out } => {
            let session = load(&model, cli.device, json)?;
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
            let session = load(&model, cli.device, json)?;
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
    }
    Ok(())
}

/// Pick the device, then load the model with a progress bar per shard.
fn load(model: &str, choice: DeviceChoice, quiet: bool) -> Result<Session, Error> {
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
    Ok(session)
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
