//! `tunelab make-data math|forgetting --out DIR`: bundled data generated from a seed.

use std::path::PathBuf;

use tunelab::Error;
use tunelab::files::write_dir;

use crate::output::{print_json, read_text};
use crate::{Global, Result};

#[derive(clap::Args)]
pub struct Args {
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
}

pub fn run(a: Args, g: &Global) -> Result {
    match a.kind.as_str() {
        "math" => {
            let (train, test) = tunelab::corpus::math::splits(a.train, a.test, a.seed);
            write_dir(&a.out, &tunelab::corpus::math::files(&train, &test))?;
            if g.json {
                print_json(&serde_json::json!({
                    "out": a.out, "train": train.len(), "test": test.len(), "seed": a.seed
                }));
            } else {
                println!(
                    "wrote {} train and {} test problems to {}",
                    train.len(),
                    test.len(),
                    a.out.display()
                );
            }
        }
        "forgetting" => {
            let from = a.from.as_ref().ok_or_else(|| {
                Error::Input("make-data forgetting needs --from HELDOUT_TEXT".into())
            })?;
            let sets = tunelab::corpus::forgetting::build(&read_text(from)?, a.items, a.seed);
            write_dir(&a.out, &sets.files())?;
            let counts = [sets.hellaswag.len(), sets.arc.len(), sets.winogrande.len()];
            if g.json {
                print_json(&serde_json::json!({
                    "out": a.out, "hellaswag": counts[0], "arc": counts[1], "winogrande": counts[2]
                }));
            } else {
                println!(
                    "wrote {} hellaswag, {} arc and {} winogrande items from {} to {}",
                    counts[0],
                    counts[1],
                    counts[2],
                    from.display(),
                    a.out.display()
                );
            }
        }
        other => {
            return Err(Error::Input(format!(
                "make-data `{other}`: expected math or forgetting"
            )));
        }
    }
    Ok(())
}
