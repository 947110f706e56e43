//! `tunelab logits MODEL --tokens --out`: full logits to a safetensors file.

use std::path::PathBuf;

use tunelab::hf::safetensors::serialize_f32;

use crate::output::{load, print_json, write_file};
use crate::{Global, Result};

#[derive(clap::Args)]
pub struct Args {
    /// Hub id (`org/name[@revision]`), model directory or base URL, or a `.gguf` file.
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
}

pub fn run(a: Args, g: &Global) -> Result {
    let session = load(&a.model, a.adapter.as_deref(), g.device, g.json)?;
    let logits = pollster::block_on(session.logits(&a.tokens))?;
    let shape = vec![a.tokens.len(), session.config.vocab_size()];
    write_file(
        &a.out,
        serialize_f32(&[("logits".to_string(), shape.clone(), &logits)]),
    )?;
    if g.json {
        print_json(&serde_json::json!({"out": a.out, "shape": shape}));
    } else {
        println!("wrote logits {:?} to {}", shape, a.out.display());
    }
    Ok(())
}
