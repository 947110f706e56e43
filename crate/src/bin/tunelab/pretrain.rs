//! `tunelab pretrain`: rebuild the bundled base model from scratch.

use std::path::PathBuf;

use tunelab::Error;
use tunelab::files::write_dir;
use tunelab::pretrain::PretrainConfig;

use crate::output::{print_json, read_text, select, show_training_event, step_bar};
use crate::{Global, Result};

#[derive(clap::Args)]
pub struct Args {
    /// TOML file with pretraining settings (default: the bundled model's settings).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Override the number of training tokens.
    #[arg(long)]
    max_tokens: Option<u64>,
    #[arg(long, default_value = "models/tunelab-base")]
    out: PathBuf,
}

pub fn run(a: Args, g: &Global) -> Result {
    let mut cfg: PretrainConfig = match &a.config {
        Some(p) => toml::from_str(&read_text(p)?).map_err(|e| Error::file(p, e))?,
        None => PretrainConfig::default(),
    };
    if let Some(t) = a.max_tokens {
        cfg.max_tokens = t;
    }
    let selected = select(g.device)?;
    let bar = step_bar(g.json);
    let result = pollster::block_on(tunelab::pretrain::pretrain(
        &cfg,
        selected.device.autodiff(),
        &mut |e| show_training_event(&bar, e, g.json),
    ))?;
    bar.finish();
    write_dir(&a.out, &result.files)?;
    let s = &result.summary;
    if g.json {
        print_json(&serde_json::json!({"out": a.out, "summary": s}));
    } else {
        println!(
            "pretrained {} steps ({} tokens) in {:.0}s, final loss {}; wrote {}",
            s.steps,
            s.tokens_seen,
            s.seconds,
            s.final_loss.map_or("-".into(), |l| format!("{l:.4}")),
            a.out.display()
        );
    }
    Ok(())
}
