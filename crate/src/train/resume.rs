//! Reading a checkpoint directory written by the trainer back, to continue a run exactly (the CLI's
//! `--resume` and the experiment runner's restart after an interruption).

use std::path::{Path, PathBuf};

use super::sink::checkpoint_dirs;
use super::trainer::{Method, TrainConfig, Trainer, check_signature};
use crate::error::{Error, Result};
use crate::hf::ModelSource;
use crate::model::CausalLm;
use crate::model::lora::{self, PeftAdapter};

/// A checkpoint's trainer state, settings and optimizer tensors.
pub struct Resume {
    pub dir: PathBuf,
    /// `trainer_state.json` as written.
    pub state_json: String,
    /// The run's settings, from the state file (a resumed run keeps them).
    pub config: TrainConfig,
    optimizer: Vec<(String, Vec<f32>)>,
    /// Newer checkpoints that were passed over because they are damaged (one line each).
    pub skipped: Vec<String>,
}

/// The newest complete checkpoint in `root` (a run's output directory): the final one in `root`
/// itself when its manifest verifies (a finished run; a save cut short leaves it unverifiable),
/// else the `checkpoint-N` with the largest N that has its trainer state and matches its
/// manifest. Damaged newer ones are passed over and described in the second value. `None` when
/// there is none.
pub fn latest(root: &Path) -> (Option<PathBuf>, Vec<String>) {
    let mut skipped = Vec::new();
    if root.join("trainer_state.json").is_file() {
        match crate::files::verify_dir(root) {
            Ok(true) => return (Some(root.to_path_buf()), skipped),
            Ok(false) => {}
            Err(e) => skipped.push(e.to_string()),
        }
    }
    for (_, dir) in checkpoint_dirs(root).into_iter().rev() {
        match crate::files::verify_dir(&dir) {
            Ok(_) if dir.join("trainer_state.json").is_file() => return (Some(dir), skipped),
            Ok(_) => skipped.push(format!("{}: no trainer_state.json", dir.display())),
            Err(e) => skipped.push(e.to_string()),
        }
    }
    (None, skipped)
}

impl Resume {
    /// Read `dir/trainer_state.json` and `dir/optimizer.safetensors` after checking the files
    /// against the checkpoint's manifest. `dir` may also be a run's output directory (one with
    /// `checkpoint-N` directories): its newest complete checkpoint is used ([`latest`]).
    pub fn read(dir: &Path) -> Result<Self> {
        let bad = |p: &Path, e: String| Error::setting("resume", format!("{}: {e}", p.display()));
        let mut skipped = Vec::new();
        let checkpoint = dir.join("trainer_state.json").exists() && checkpoint_dirs(dir).is_empty();
        let dir = if checkpoint || !dir.is_dir() {
            crate::files::verify_dir(dir)?;
            dir.to_path_buf()
        } else {
            let (found, passed) = latest(dir);
            skipped = passed;
            found.ok_or_else(|| {
                let why = if skipped.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", skipped.join("; "))
                };
                bad(
                    dir,
                    format!(
                        "neither a checkpoint nor a run directory with a complete checkpoint-N{why}"
                    ),
                )
            })?
        };
        let dir = dir.as_path();
        let path = dir.join("trainer_state.json");
        let state_json = std::fs::read_to_string(&path).map_err(|e| bad(&path, e.to_string()))?;
        let v: serde_json::Value =
            serde_json::from_str(&state_json).map_err(|e| bad(&path, e.to_string()))?;
        let config = serde_json::from_value(v["config"].clone())
            .map_err(|e| bad(&path, format!("config: {e}")))?;
        let opt_path = dir.join("optimizer.safetensors");
        let bytes = std::fs::read(&opt_path).map_err(|e| bad(&opt_path, e.to_string()))?;
        let mut optimizer = Vec::new();
        crate::hf::safetensors::stream_tensors(&bytes, &opt_path.display().to_string(), |t| {
            optimizer.push((t.info.name.clone(), t.values));
            Ok(())
        })?;
        Ok(Resume {
            dir: dir.to_path_buf(),
            state_json,
            config,
            optimizer,
            skipped,
        })
    }

    /// Where to load the model from: the checkpoint's own weights for full fine-tuning, the base
    /// model (`base`) for LoRA.
    pub fn model_source(&self, base: &str) -> String {
        match self.config.method {
            Method::Full(_) => self.dir.display().to_string(),
            Method::Lora(_) => base.to_string(),
        }
    }

    /// The LoRA adapter saved in the checkpoint (None for full fine-tuning).
    pub async fn adapter(&self) -> Result<Option<PeftAdapter>> {
        match self.config.method {
            Method::Lora(_) => Ok(Some(
                lora::read_peft(&ModelSource::Dir(self.dir.clone())).await?,
            )),
            Method::Full(_) => Ok(None),
        }
    }

    /// Refuse a checkpoint written for another model (before an adapter is attached to it).
    pub fn check(&self, model: &CausalLm) -> Result<()> {
        check_signature(model, &self.state_json)
    }

    /// Restore progress and optimizer state into `trainer` (which checks the model again).
    pub fn apply(self, trainer: &mut Trainer) -> Result<()> {
        trainer.restore(&self.state_json, self.optimizer)
    }
}
