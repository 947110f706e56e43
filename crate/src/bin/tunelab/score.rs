//! `tunelab score MODEL --text|--file`: likelihood of a text.

use std::path::PathBuf;

use crate::output::{load, print_json, read_text};
use crate::{Global, Result};

#[derive(clap::Args)]
pub struct Args {
    /// Hub id (`org/name[@revision]`), model directory or base URL, or a `.gguf` file.
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
}

pub fn run(a: Args, g: &Global) -> Result {
    let text = match (a.text, &a.file) {
        (Some(t), _) => t,
        (None, Some(f)) => read_text(f)?,
        (None, None) => unreachable!("clap requires --text or --file"),
    };
    let session = load(&a.model, a.adapter.as_deref(), g.device, g.json)?;
    let score = pollster::block_on(session.score_text(&text))?;
    if g.json {
        print_json(&serde_json::json!({
            "tokens": score.tokens, "nll": score.nll, "perplexity": score.perplexity
        }));
    } else {
        println!(
            "tokens {}  nll {:.6}  perplexity {:.4}",
            score.tokens, score.nll, score.perplexity
        );
    }
    Ok(())
}
