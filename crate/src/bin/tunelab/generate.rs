//! `tunelab generate MODEL --prompt`: stream a continuation.

use std::io::Write;

use tunelab::eval::generate::GenerateOptions;
use tunelab::event::Event;

use crate::output::{load, print_json};
use crate::{Global, Result};

#[derive(clap::Args)]
pub struct Args {
    /// Hub id (`org/name[@revision]`), model directory or base URL, or a `.gguf` file.
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
    /// Send the prompt as a user turn through the model's chat template (instruction-tuned
    /// models) and stop at the template's end-of-turn token.
    #[arg(long)]
    chat: bool,
}

pub fn run(a: Args, g: &Global) -> Result {
    let opts = GenerateOptions {
        max_new_tokens: a.max_new_tokens,
        temperature: a.temperature,
        top_p: a.top_p,
        seed: a.seed,
        stop_id: None,
    };
    opts.validate()?;
    let session = load(&a.model, a.adapter.as_deref(), g.device, g.json)?;
    let mut show = |e: &Event| {
        if let (Event::Token { text }, false) = (e, g.json) {
            print!("{text}");
            let _ = std::io::stdout().flush();
        }
    };
    let (prompt, text) = if a.chat {
        // The rendered prompt is only known after rendering: shown with the answer.
        let (prompt, text) = pollster::block_on(session.chat(&a.prompt, &opts, &mut |_| {}))?;
        if !g.json {
            print!("{prompt}{text}");
        }
        (prompt, text)
    } else {
        if !g.json {
            print!("{}", a.prompt);
        }
        let text = pollster::block_on(session.generate(&a.prompt, &opts, &mut show))?;
        (a.prompt.clone(), text)
    };
    if g.json {
        print_json(&serde_json::json!({"prompt": prompt, "completion": text}));
    } else {
        println!();
    }
    Ok(())
}
