//! `tunelab convert MODEL --out DIR`: any model tunelab reads (a GGUF file, a checkpoint
//! directory or URL) written as a Hugging Face checkpoint directory: config.json,
//! tokenizer.json, tokenizer_config.json (chat template) and f32 safetensors.

use std::path::PathBuf;

use tunelab::files::write_dir;

use crate::output::{load, print_json};
use crate::{Global, Result};

#[derive(clap::Args)]
pub struct Args {
    /// A `.gguf` file (path or URL), or a Hub id / model directory / base URL.
    model: String,
    /// Output directory.
    #[arg(long)]
    out: PathBuf,
}

pub fn run(a: Args, g: &Global) -> Result {
    // The weights only pass through: the CPU backend holds them.
    let session = load(&a.model, None, tunelab::device::DeviceChoice::Cpu, true)?;
    let files = pollster::block_on(session.merged_files())?;
    write_dir(&a.out, &files)?;
    let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
    if g.json {
        print_json(&serde_json::json!({"out": a.out, "files": names}));
    } else {
        println!(
            "wrote {} ({}) to {}",
            a.model,
            names.join(", "),
            a.out.display()
        );
    }
    Ok(())
}
