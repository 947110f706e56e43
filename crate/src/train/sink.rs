//! Where a run's checkpoints go: kept in memory (the browser offers them as downloads; tests
//! inspect them) or written into a directory natively.

use crate::error::Result;
use crate::files::File;

/// Where checkpoints go: a directory natively, downloads in the browser.
pub trait CheckpointSink {
    /// Store `files` as the checkpoint `name` (e.g. `checkpoint-100`, or `final`), atomically.
    fn save(&mut self, name: &str, files: Vec<File>) -> Result<()>;
}

/// A named set of files written by a training run.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    pub name: String,
    pub files: Vec<File>,
}

/// Keeps checkpoints in memory.
#[derive(Debug, Default)]
pub struct MemorySink {
    pub checkpoints: Vec<Checkpoint>,
}

impl CheckpointSink for MemorySink {
    fn save(&mut self, name: &str, files: Vec<File>) -> Result<()> {
        self.checkpoints.push(Checkpoint {
            name: name.to_string(),
            files,
        });
        Ok(())
    }
}

/// Writes each checkpoint as the directory `<root>/<name>/`, whole or not at all, with a manifest
/// ([`crate::files::write_dir_whole`]); the final model, `final`, goes into `<root>` itself,
/// every file through a temporary name and a rename, its manifest last.
#[cfg(feature = "native")]
pub struct DirSink {
    pub root: std::path::PathBuf,
    /// Keep only this many `checkpoint-N` directories, deleting older ones once a newer one is
    /// complete (transformers' `save_total_limit`); `None` keeps them all.
    pub keep: Option<usize>,
}

#[cfg(feature = "native")]
impl DirSink {
    /// A sink writing into `root` that keeps every checkpoint.
    pub fn new(root: impl Into<std::path::PathBuf>) -> Self {
        DirSink {
            root: root.into(),
            keep: None,
        }
    }
}

/// The `checkpoint-N` directories in `root`, oldest (smallest N) first. Staging directories of
/// interrupted writes are hidden names and never listed.
#[cfg(feature = "native")]
pub fn checkpoint_dirs(root: &std::path::Path) -> Vec<(usize, std::path::PathBuf)> {
    let mut found: Vec<_> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let n = name.strip_prefix("checkpoint-")?.parse().ok()?;
            e.path().is_dir().then(|| (n, e.path()))
        })
        .collect();
    found.sort();
    found
}

/// Delete every `checkpoint-N` directory in `root` (a finished run's resume state), each as a
/// whole.
#[cfg(feature = "native")]
pub fn remove_checkpoints(root: &std::path::Path) -> Result<()> {
    for (_, dir) in checkpoint_dirs(root) {
        crate::files::remove_dir_whole(&dir)?;
    }
    Ok(())
}

#[cfg(feature = "native")]
impl CheckpointSink for DirSink {
    fn save(&mut self, name: &str, files: Vec<File>) -> Result<()> {
        if name == "final" {
            return crate::files::write_dir_with_manifest(&self.root, &files);
        }
        let dir = self.root.join(name);
        crate::files::write_dir_whole(&dir, &files)?;
        if let Some(keep) = self.keep {
            let all = checkpoint_dirs(&self.root);
            for (_, old) in all
                .iter()
                .rev()
                .filter(|(_, p)| *p != dir)
                .skip(keep.saturating_sub(1))
            {
                crate::files::remove_dir_whole(old)?;
            }
        }
        Ok(())
    }
}
