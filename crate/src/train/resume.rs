//! Reading a checkpoint directory written by the trainer back, to continue a run exactly (the CLI's
//! `--resume` and the experiment runner's restart after an interruption).

use std::path::{Path, PathBuf};

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
}

impl Resume {
    /// Read `dir/trainer_state.json` and `dir/optimizer.safetensors`.
    pub fn read(dir: &Path) -> Result<Self> {
        let bad = |p: &Path, e: String| Error::setting("resume", format!("{}: {e}", p.display()));
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
