//! `tunelab info MODEL`: what a checkpoint holds, without loading its weights.

use tunelab::hf::ModelSource;

use crate::output::print_json;
use crate::{Global, Result};

#[derive(clap::Args)]
pub struct Args {
    /// Hub id (`org/name[@revision]`), model directory, base URL (…/resolve/main/), or a `.gguf`
    /// file.
    model: String,
    /// Read config.json only and say whether tunelab supports the model (nothing else is
    /// downloaded).
    #[arg(long)]
    config_only: bool,
}

pub fn run(a: Args, g: &Global) -> Result {
    if a.config_only && tunelab::hf::source::gguf_file(&a.model).is_none() {
        let config = pollster::block_on(tunelab::info::config(&ModelSource::parse(&a.model)))?;
        if g.json {
            print_json(&serde_json::json!({"model": a.model, "supported": true, "config": config}));
        } else {
            println!("supported:  yes ({} as {})", a.model, config.model_type);
            println!(
                "config:     {}",
                serde_json::to_string(&config.arch).unwrap_or_default()
            );
        }
        return Ok(());
    }
    let info = match tunelab::hf::source::gguf_file(&a.model) {
        Some((base, file)) => pollster::block_on(tunelab::info::inspect_gguf(
            &ModelSource::parse(&base),
            &file,
        ))?,
        None => pollster::block_on(tunelab::info::inspect(&ModelSource::parse(&a.model)))?,
    };
    if g.json {
        print_json(&info);
        return Ok(());
    }
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
    Ok(())
}
