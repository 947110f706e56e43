//! The native command-line shell over the tunelab library: one module per command, parsing
//! flags and showing results; the work is the library's.

mod bench;
mod cache;
mod convert;
mod devices;
mod eval;
mod experiment;
mod generate;
mod info;
mod init;
mod logits;
mod make_data;
mod merge;
mod output;
mod pretrain;
mod score;
mod serve;
mod spectrum;
mod train;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use tunelab::Error;
use tunelab::device::DeviceChoice;

#[derive(Parser)]
#[command(
    name = "tunelab",
    version,
    about = "Fine-tuning lab for small language models: load Hugging Face checkpoints, score, generate, fine-tune (full or LoRA), measure learning and forgetting."
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

/// Flags every command takes.
#[derive(clap::Args)]
pub struct Global {
    /// Where to compute: a hardware GPU if present else the CPU backend (auto), a wgpu adapter
    /// even if software (gpu), or the CPU backend (cpu).
    #[arg(long, global = true, default_value = "auto")]
    pub device: DeviceChoice,
    /// Print machine-readable JSON on stdout instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// Read Hub models from the Hugging Face cache only, never asking the Hub (as
    /// HF_HUB_OFFLINE=1).
    #[arg(long, global = true)]
    pub offline: bool,
}

#[derive(Subcommand)]
enum Command {
    /// List wgpu adapters and their limits.
    Devices,
    /// Architecture, parameter counts by kind, dtypes and shards of a model (no weights loaded).
    Info(info::Args),
    /// Mean next-token negative log-likelihood and perplexity of a text.
    Score(score::Args),
    /// Write the full logits [T, vocab] for token ids to a safetensors file (key `logits`).
    Logits(logits::Args),
    /// Continue a prompt, streaming tokens as they are generated.
    Generate(generate::Args),
    /// Fine-tune a model (full or LoRA) on text or instruction data. Every setting defaults to
    /// the run spec's (see --print-spec); flags override a --spec file.
    Train(Box<train::Args>),
    /// Score benchmarks: what a model learned (gsm8k, humaneval, perplexity) and forgot
    /// (hellaswag, arc, winogrande), as lm-evaluation-harness scores them.
    Eval(Box<eval::Args>),
    /// Spectra of weight changes: rank needed to explain a fraction of ΔW's variance, per
    /// matrix, for fine-tuned checkpoints (or a LoRA adapter) against their base.
    Spectrum(spectrum::Args),
    /// Generate bundled data from a seed: `math` (GSM8K-layout word problems) or `forgetting`
    /// (HellaSwag / ARC / WinoGrande-layout evals from held-out text given with --from).
    MakeData(make_data::Args),
    /// Write a randomly initialised Hugging Face checkpoint for a `config.json` (the start of
    /// pretraining: then `train --method full --train-embeddings`).
    Init(init::Args),
    /// Pretrain a small Llama from scratch (tokenizer, random init, training on the corpus): how
    /// the bundled base model `models/tunelab-base` is rebuilt.
    Pretrain(pretrain::Args),
    /// Run the learning-vs-forgetting experiment: train every method on every target, evaluate
    /// learning and forgetting at each budget, write results.json/csv, report.md and plots.
    /// Without a config it runs the bundled default (experiments/default.toml). Interrupted
    /// runs resume: finished runs in --out are reused.
    Experiment(experiment::Args),
    /// Serve the web app (www/) and the bundled models and data on 127.0.0.1 (build the bundle
    /// first: scripts/build-web.sh; scripts/web.sh does both).
    Serve(serve::Args),
    /// Training speed and memory: tokens/s, TFLOP/s, first-step time and device memory of full
    /// fine-tuning and LoRA at a given shape (`scripts/bench.sh` puts PyTorch beside it).
    Bench(Box<bench::Args>),
    /// Merge a PEFT LoRA adapter into its base model and write a Hugging Face checkpoint.
    Merge(merge::Args),
    /// Write a model (a GGUF file, or any checkpoint tunelab reads) as a Hugging Face
    /// checkpoint directory: config, tokenizer, chat template, f32 safetensors.
    Convert(convert::Args),
    /// The Hugging Face cache that Hub models (`org/name[@revision]`) are downloaded to and
    /// read from (HF_HUB_CACHE, else $HF_HOME/hub; shared with transformers).
    Cache(cache::Args),
}

/// burn's CPU backend allocates a fresh buffer for nearly every op's output and frees it soon
/// after. glibc's malloc hands buffers over 128 KiB back to the kernel on free, and shrinks its
/// heap, so the next tensor of the size faults its pages in again: 15-20 % of a CPU training
/// step went to page faults. Larger thresholds keep them (no more resident memory in a training
/// loop, which frees what it allocates). 32 MiB is glibc's cap on the mmap threshold.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn keep_freed_memory() {
    // SAFETY: mallopt only sets allocator parameters; called first thing, on the only thread.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
        libc::mallopt(libc::M_TOP_PAD, 64 << 20);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn keep_freed_memory() {}

fn main() -> ExitCode {
    keep_freed_memory();
    let cli = Cli::parse();
    let g = &cli.global;
    if g.offline {
        tunelab::hf::hub::set_offline(true);
    }
    let result = match cli.command {
        Command::Devices => devices::run(g),
        Command::Info(a) => info::run(a, g),
        Command::Score(a) => score::run(a, g),
        Command::Logits(a) => logits::run(a, g),
        Command::Generate(a) => generate::run(a, g),
        Command::Train(a) => train::run(*a, g),
        Command::Eval(a) => eval::run(*a, g),
        Command::Spectrum(a) => spectrum::run(a, g),
        Command::MakeData(a) => make_data::run(a, g),
        Command::Init(a) => init::run(a, g),
        Command::Pretrain(a) => pretrain::run(a, g),
        Command::Experiment(a) => experiment::run(a, g),
        Command::Serve(a) => serve::run(a),
        Command::Bench(a) => bench::run(*a, g),
        Command::Merge(a) => merge::run(a, g),
        Command::Convert(a) => convert::run(a, g),
        Command::Cache(a) => cache::run(a, g),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", output::describe(&e));
            ExitCode::FAILURE
        }
    }
}

/// What every command returns.
pub type Result<T = ()> = std::result::Result<T, Error>;
