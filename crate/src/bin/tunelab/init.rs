//! `tunelab init CONFIG --tokenizer FILE --out DIR`: a randomly initialised checkpoint.

use std::path::PathBuf;

use tunelab::files::{read, write_dir};

use crate::output::{print_json, read_text};
use crate::{Global, Result};

#[derive(clap::Args)]
pub struct Args {
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
}

pub fn run(a: Args, g: &Global) -> Result {
    let config = read_text(&a.config)?;
    let names = (
        a.config.display().to_string(),
        a.tokenizer.display().to_string(),
    );
    let (files, std) = pollster::block_on(tunelab::export::random_checkpoint(
        &config,
        read(&a.tokenizer)?,
        a.std,
        a.seed,
        (&names.0, &names.1),
    ))?;
    write_dir(&a.out, &files)?;
    if g.json {
        print_json(&serde_json::json!({"out": a.out, "std": std, "seed": a.seed}));
    } else {
        println!(
            "wrote a randomly initialised model (std {std}) to {}",
            a.out.display()
        );
    }
    Ok(())
}
