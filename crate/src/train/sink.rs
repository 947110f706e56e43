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

/// Writes each checkpoint into `<root>/<name>/` (the final one, `final`, into `<root>` itself),
/// every file through a temporary name and a rename.
#[cfg(feature = "native")]
pub struct DirSink {
    pub root: std::path::PathBuf,
}

#[cfg(feature = "native")]
impl CheckpointSink for DirSink {
    fn save(&mut self, name: &str, files: Vec<File>) -> Result<()> {
        let dir = if name == "final" {
            self.root.clone()
        } else {
            self.root.join(name)
        };
        crate::files::write_dir(&dir, &files)
    }
}
