//! Reading a checkpoint written by the trainer back, to continue a run exactly: from a directory
//! (the CLI's `--resume`, the experiment runner's restart after an interruption) or from its
//! files in memory (a checkpoint uploaded to the page).

use std::path::{Path, PathBuf};

#[cfg(feature = "native")]
use super::sink::checkpoint_dirs;
use super::trainer::{Method, TrainConfig, Trainer, check_signature};
use crate::error::{Error, Result};
use crate::files::{File, MANIFEST, Manifest};
use crate::hf::MemoryFiles;
use crate::model::CausalLm;
use crate::model::lora::{self, PeftAdapter};

/// A checkpoint's trainer state, settings and optimizer tensors.
pub struct Resume {
    /// The checkpoint's directory (for one given in memory: the name it was given under).
    pub dir: PathBuf,
    /// The checkpoint's files, when they were given in memory rather than read from `dir`.
    pub files: Option<MemoryFiles>,
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
#[cfg(feature = "native")]
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
    #[cfg(feature = "native")]
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
        let path = dir.join("trainer_state.json");
        let state_json = std::fs::read_to_string(&path).map_err(|e| bad(&path, e.to_string()))?;
        let opt_path = dir.join("optimizer.safetensors");
        let optimizer = std::fs::read(&opt_path).map_err(|e| bad(&opt_path, e.to_string()))?;
        let mut resume = Self::parse(&dir, state_json, &optimizer)?;
        resume.skipped = skipped;
        Ok(resume)
    }

    /// A checkpoint from its files in memory (`trainer_state.json`, `optimizer.safetensors`, and
    /// the adapter or the model), checked against its `manifest.json` when it has one. `name`
    /// (what the files were given as) names it in errors.
    pub fn from_files(files: Vec<File>, name: &str) -> Result<Self> {
        let bad = |file: &str, e: String| Error::setting("resume", format!("{name}/{file}: {e}"));
        let files = MemoryFiles(files.into_iter().map(|f| (f.name, f.bytes)).collect());
        if let Some(text) = files.0.get(MANIFEST) {
            let manifest: Manifest =
                serde_json::from_slice(text).map_err(|e| bad(MANIFEST, e.to_string()))?;
            for entry in &manifest.files {
                let bytes = files
                    .0
                    .get(&entry.name)
                    .ok_or_else(|| bad(&entry.name, format!("missing (listed in {MANIFEST})")))?;
                if let Some(why) = entry.mismatch(bytes) {
                    return Err(bad(&entry.name, why));
                }
            }
        }
        let get = |file: &str| {
            files
                .0
                .get(file)
                .ok_or_else(|| bad(file, "missing: not a checkpoint written by tunelab".into()))
        };
        let state_json = String::from_utf8(get("trainer_state.json")?.clone())
            .map_err(|e| bad("trainer_state.json", e.to_string()))?;
        let optimizer = get("optimizer.safetensors")?;
        let mut resume = Self::parse(Path::new(name), state_json, optimizer)?;
        resume.files = Some(files);
        Ok(resume)
    }

    /// The trainer state `state_json` and the optimizer tensors of the checkpoint at `dir`.
    fn parse(dir: &Path, state_json: String, optimizer_bytes: &[u8]) -> Result<Self> {
        let bad = |p: &Path, e: String| Error::setting("resume", format!("{}: {e}", p.display()));
        let path = dir.join("trainer_state.json");
        let v: serde_json::Value =
            serde_json::from_str(&state_json).map_err(|e| bad(&path, e.to_string()))?;
        let config = serde_json::from_value(v["config"].clone())
            .map_err(|e| bad(&path, format!("config: {e}")))?;
        let opt_path = dir.join("optimizer.safetensors");
        let mut optimizer = Vec::new();
        crate::hf::safetensors::stream_tensors(
            optimizer_bytes,
            &opt_path.display().to_string(),
            |t| {
                optimizer.push((t.info.name.clone(), t.values));
                Ok(())
            },
        )?;
        Ok(Resume {
            dir: dir.to_path_buf(),
            files: None,
            state_json,
            config,
            optimizer,
            skipped: Vec::new(),
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
        if let Method::Full(_) = self.config.method {
            return Ok(None);
        }
        Ok(Some(match &self.files {
            Some(files) => lora::read_peft(files).await?,
            #[cfg(feature = "native")]
            None => lora::read_peft(&crate::hf::ModelSource::Dir(self.dir.clone())).await?,
            #[cfg(not(feature = "native"))]
            None => {
                return Err(Error::Input(format!(
                    "{}: a checkpoint directory is only read natively",
                    self.dir.display()
                )));
            }
        }))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::FullConfig;

    /// The files of a (model-less) full fine-tuning checkpoint at learning rate 1e-3.
    fn checkpoint() -> Vec<File> {
        let config = TrainConfig::new(Method::Full(FullConfig::default()), 1e-3);
        let moment = [0.5f32, -1.0];
        vec![
            File::json(
                "trainer_state.json",
                &serde_json::json!({ "config": config }),
            ),
            File::new(
                "optimizer.safetensors",
                crate::hf::safetensors::serialize_f32(&[("w.m".into(), vec![2], &moment[..])]),
            ),
        ]
    }

    #[test]
    fn a_checkpoint_given_in_memory_is_read_and_checked_against_its_manifest() {
        let resume = Resume::from_files(checkpoint(), "upload").unwrap();
        assert_eq!(resume.config.lr, 1e-3);
        assert_eq!(resume.optimizer, vec![("w.m".to_string(), vec![0.5, -1.0])]);
        assert!(resume.files.unwrap().0.contains_key("trainer_state.json"));

        // A manifest that does not match a file: refused, naming the file.
        let mut files = checkpoint();
        let mut manifest = Manifest::of(&files);
        manifest.files[1].sha256 = "0".repeat(64);
        files.push(File::json(MANIFEST, &manifest));
        let err = Resume::from_files(files, "upload")
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("upload/optimizer.safetensors") && err.contains("damaged"),
            "{err}"
        );

        // A listed file that was not given, and a missing optimizer state.
        let mut files = checkpoint();
        files.push(File::json(MANIFEST, &Manifest::of(&files)));
        files.remove(0);
        let err = Resume::from_files(files, "upload")
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("upload/trainer_state.json: missing"), "{err}");
        let err = Resume::from_files(checkpoint()[..1].to_vec(), "upload")
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("upload/optimizer.safetensors: missing"),
            "{err}"
        );
    }
}
