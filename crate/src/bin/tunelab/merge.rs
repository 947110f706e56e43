//! `tunelab merge BASE ADAPTER --out DIR`: a PEFT adapter merged into its base model.

use std::path::PathBuf;

use tunelab::files::write_dir;

use crate::output::{load, print_json};
use crate::{Global, Result};

#[derive(clap::Args)]
pub struct Args {
    /// Base model directory or URL.
    base: String,
    /// PEFT adapter directory or URL.
    adapter: String,
    /// Output directory.
    #[arg(long)]
    out: PathBuf,
}

pub fn run(a: Args, g: &Global) -> Result {
    let session = load(&a.base, Some(&a.adapter), g.device, g.json)?;
    let files = pollster::block_on(session.merged_files())?;
    write_dir(&a.out, &files)?;
    if g.json {
        let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
        print_json(&serde_json::json!({"out": a.out, "files": names}));
    } else {
        println!("merged {} into {}: {}", a.adapter, a.base, a.out.display());
    }
    Ok(())
}
