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

/// Write `files` into `dir` atomically file by file (temp + rename, each flushed to disk), so an
/// interrupted write never leaves a half-written file under a real name.
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
        write_synced(&tmp, &f.bytes)?;
        std::fs::rename(&tmp, &path).map_err(|e| err(&path, e))?;
    }
    sync_dir(dir)
}

/// Write `files` into `dir` as [`write_dir`] does, then their [`MANIFEST`] last (the old one is
/// removed first), so `dir` verifies only once every file is in place: for a set of files that
/// shares its directory with others (a run's final model beside its checkpoints).
#[cfg(feature = "native")]
pub fn write_dir_with_manifest(dir: &std::path::Path, files: &[File]) -> Result<()> {
    let manifest = dir.join(MANIFEST);
    match std::fs::remove_file(&manifest) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(Error::file(&manifest, e));
        }
        _ => {}
    }
    write_dir(dir, files)?;
    write_dir(dir, &[File::json(MANIFEST, &Manifest::of(files))])
}

/// Create `path` holding `bytes`, flushed to disk.
#[cfg(feature = "native")]
fn write_synced(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut out = std::fs::File::create(path).map_err(|e| Error::file(path, e))?;
    out.write_all(bytes)
        .and_then(|()| out.sync_all())
        .map_err(|e| Error::file(path, e))
}

/// The file a whole-directory write ([`write_dir_whole`]) leaves beside the files: each file's
/// size and SHA-256, so a reader can tell a complete directory from a damaged one.
pub const MANIFEST: &str = "manifest.json";

/// What [`MANIFEST`] holds.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Manifest {
    pub files: Vec<ManifestEntry>,
}

/// One file of a [`Manifest`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ManifestEntry {
    pub name: String,
    pub bytes: u64,
    /// Lower-case hex, as `sha256sum` prints it.
    pub sha256: String,
}

impl ManifestEntry {
    /// Why `bytes` are not this file as the manifest describes it, if they are not.
    pub fn mismatch(&self, bytes: &[u8]) -> Option<String> {
        (bytes.len() as u64 != self.bytes || sha256_hex(bytes) != self.sha256).then(|| {
            format!(
                "does not match {MANIFEST} ({} bytes, expected {}; the checkpoint is damaged)",
                bytes.len(),
                self.bytes
            )
        })
    }
}

impl Manifest {
    /// The manifest of `files`.
    pub fn of(files: &[File]) -> Self {
        Manifest {
            files: files
                .iter()
                .map(|f| ManifestEntry {
                    name: f.name.clone(),
                    bytes: f.bytes.len() as u64,
                    sha256: sha256_hex(&f.bytes),
                })
                .collect(),
        }
    }
}

/// SHA-256 of `bytes` in lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Write `files` as the directory `dir`, all or nothing: they are written into a hidden sibling
/// (`.NAME.partial-PID`) with a [`MANIFEST`], every file and the directory fsynced, and the
/// sibling is renamed to `dir` as a whole, so `dir` is either absent or complete whenever the
/// process dies. An existing `dir` (a run that saves the same step again) is replaced only once
/// the new one is complete. Stale partial directories of the same name (a writer killed
/// mid-save) are removed first: one writer per directory, as the run locks guarantee.
#[cfg(feature = "native")]
pub fn write_dir_whole(dir: &std::path::Path, files: &[File]) -> Result<()> {
    let (parent, name) = match (dir.parent(), dir.file_name()) {
        (Some(p), Some(n)) => (p, n.to_string_lossy().into_owned()),
        _ => return Err(Error::file(dir, "not a directory name")),
    };
    std::fs::create_dir_all(parent).map_err(|e| Error::file(parent, e))?;
    remove_partials(parent, &name)?;
    let staging = parent.join(format!(".{name}.partial-{}", std::process::id()));
    std::fs::create_dir(&staging).map_err(|e| Error::file(&staging, e))?;
    let manifest = File::json(MANIFEST, &Manifest::of(files));
    for f in files.iter().chain([&manifest]) {
        write_synced(&staging.join(&f.name), &f.bytes)?;
    }
    sync_dir(&staging)?;
    if dir.exists() {
        let old = parent.join(format!(".{name}.replaced-{}", std::process::id()));
        std::fs::rename(dir, &old).map_err(|e| Error::file(dir, e))?;
        std::fs::rename(&staging, dir).map_err(|e| Error::file(dir, e))?;
        std::fs::remove_dir_all(&old).map_err(|e| Error::file(&old, e))?;
    } else {
        std::fs::rename(&staging, dir).map_err(|e| Error::file(dir, e))?;
    }
    sync_dir(parent)
}

/// Delete the directory `dir` as a whole: it is renamed to a hidden name first, so a process
/// killed while deleting never leaves a half-deleted directory under its real name (where it
/// could pass for a complete one).
#[cfg(feature = "native")]
pub fn remove_dir_whole(dir: &std::path::Path) -> Result<()> {
    let (Some(parent), Some(name)) = (dir.parent(), dir.file_name()) else {
        return Err(Error::file(dir, "not a directory name"));
    };
    let doomed = parent.join(format!(
        ".{}.replaced-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    std::fs::rename(dir, &doomed).map_err(|e| Error::file(dir, e))?;
    std::fs::remove_dir_all(&doomed).map_err(|e| Error::file(&doomed, e))
}

/// Remove `.NAME.partial-*` and `.NAME.replaced-*` leftovers of killed writers in `parent`.
#[cfg(feature = "native")]
fn remove_partials(parent: &std::path::Path, name: &str) -> Result<()> {
    let entries = std::fs::read_dir(parent).map_err(|e| Error::file(parent, e))?;
    for e in entries.flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        let leftover = [".partial-", ".replaced-"]
            .iter()
            .any(|kind| n.starts_with(&format!(".{name}{kind}")));
        if leftover {
            let p = e.path();
            std::fs::remove_dir_all(&p).map_err(|e| Error::file(&p, e))?;
        }
    }
    Ok(())
}

/// Make a directory's entries (new names, renames) durable.
#[cfg(feature = "native")]
fn sync_dir(dir: &std::path::Path) -> Result<()> {
    // Directories can be opened and fsynced on Unix; elsewhere renames are durable on their own
    // or not at all, and there is nothing more to do.
    #[cfg(unix)]
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::file(dir, e))?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Check `dir` against its [`MANIFEST`]: every listed file present with its size and SHA-256.
/// `Ok(false)` when there is no manifest (a directory written before manifests, or by hand).
#[cfg(feature = "native")]
pub fn verify_dir(dir: &std::path::Path) -> Result<bool> {
    let path = dir.join(MANIFEST);
    let text = match std::fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(Error::file(&path, e)),
    };
    let manifest: Manifest = serde_json::from_slice(&text).map_err(|e| Error::file(&path, e))?;
    for f in &manifest.files {
        let p = dir.join(&f.name);
        if let Some(why) = f.mismatch(&read(&p)?) {
            return Err(Error::file(&p, why));
        }
    }
    Ok(true)
}

/// Read a whole file, naming it on error.
#[cfg(feature = "native")]
pub fn read(path: &std::path::Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::file(path, e))
}
