//! `tunelab pretrain`: rebuild the bundled base model from scratch.

use std::path::PathBuf;

use tunelab::Error;
use tunelab::files::write_dir;
use tunelab::pretrain::{Checkpoints, PretrainConfig};
use tunelab::train::sink::{checkpoint_dirs, remove_checkpoints};

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
    /// Steps between resume checkpoints (`OUT/checkpoint-N`, the newest complete one kept until
    /// the model is written); 0 for none.
    #[arg(long, default_value_t = 100)]
    save_every: usize,
    /// Continue an interrupted run from the newest complete checkpoint in --out.
    #[arg(long)]
    resume: bool,
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
    if a.resume && a.save_every == 0 {
        return Err(Error::Input("--resume needs --save-every above 0".into()));
    }
    // A fresh start would delete an interrupted run's checkpoint: make that a decision.
    if let (false, Some((_, dir))) = (a.resume, checkpoint_dirs(&a.out).pop()) {
        return Err(Error::Input(format!(
            "--out {} holds an interrupted run's checkpoint ({}): pass --resume to continue it, \
             or delete it to start over",
            a.out.display(),
            dir.display()
        )));
    }
    let checkpoints = (a.save_every > 0).then(|| Checkpoints {
        dir: a.out.clone(),
        every: a.save_every,
        resume: a.resume,
    });
    let result = pollster::block_on(tunelab::pretrain::pretrain(
        &cfg,
        selected.device.autodiff(),
        checkpoints.as_ref(),
        &mut |e| show_training_event(&bar, e, g.json),
    ))?;
    bar.finish();
    write_dir(&a.out, &result.files)?;
    // The model is complete: its resume checkpoints are no longer needed.
    remove_checkpoints(&a.out)?;
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
