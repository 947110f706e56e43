//! Named in-memory files: what model loading, exports and checkpoints pass around, so the same
//! code serves the CLI (written atomically to a directory) and the browser (offered as
//! downloads).

#[cfg(feature = "native")]
use crate::error::{Error, Result};

/// A file to write: its name inside the output directory and its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    pub name: String,
    pub bytes: Vec<u8>,
}

impl File {
    /// A file called `name` holding `bytes`.
    pub fn new(name: impl Into<String>, bytes: impl Into<Vec<u8>>) -> Self {
        File {
            name: name.into(),
            bytes: bytes.into(),
        }
    }

    /// `value` as pretty-printed JSON.
    pub fn json<T: serde::Serialize>(name: impl Into<String>, value: &T) -> Self {
        File::new(
            name,
            serde_json::to_vec_pretty(value).expect("our types always serialize"),
        )
    }

    /// One JSON document per line.
    pub fn jsonl<T: serde::Serialize>(name: impl Into<String>, values: &[T]) -> Self {
        let text: String = values
            .iter()
            .map(|v| serde_json::to_string(v).expect("our types always serialize") + "\n")
            .collect();
        File::new(name, text)
    }
}

/// Write `files` into `dir` atomically file by file (temp + rename), so an interrupted write
/// never leaves a half-written file under a real name.
#[cfg(feature = "native")]
pub fn write_dir(dir: &std::path::Path, files: &[File]) -> Result<()> {
    let err = |p: &std::path::Path, e: std::io::Error| Error::File {
        path: p.display().to_string(),
        message: format!("cannot write: {e}"),
    };
    std::fs::create_dir_all(dir).map_err(|e| err(dir, e))?;
    for f in files {
        let path = dir.join(&f.name);
        // Unique per process: processes sharing an output directory may write the same file.
        let tmp = dir.join(format!(".{}.{}.tmp", f.name, std::process::id()));
        std::fs::write(&tmp, &f.bytes).map_err(|e| err(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| err(&path, e))?;
    }
    Ok(())
}

/// Read a whole file, naming it on error.
#[cfg(feature = "native")]
pub fn read(path: &std::path::Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::file(path, e))
}
