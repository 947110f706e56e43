//! Models named as people name them: Hugging Face Hub ids (`org/name[@revision]`) resolved
//! against the Hub's `resolve/<revision>/` URL layout, and (natively) a disk cache in the Hub's
//! own layout (`models--org--name/{blobs,refs,snapshots}`), so files tunelab downloads are
//! reused by transformers and the other way round.

/// The public Hub, unless `HF_ENDPOINT` names another.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// A Hub repository and the revision (branch, tag or commit) to read it at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubId {
    /// `org/name`.
    pub repo: String,
    /// `main` unless given after `@`.
    pub revision: String,
}

impl HubId {
    /// `org/name` or `org/name@revision` (a trailing `/` is ignored); None for anything else.
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.strip_suffix('/').unwrap_or(s);
        let (repo, revision) = match s.split_once('@') {
            Some((repo, rev)) => (repo, rev),
            None => (s, "main"),
        };
        let (org, name) = repo.split_once('/')?;
        // The Hub's naming rules: letters, digits, `-`, `_`, `.`; no leading `-`/`.`, no `..`.
        let part_ok = |p: &str| {
            !p.is_empty()
                && p.len() <= 96
                && !p.starts_with(['-', '.'])
                && !p.contains("..")
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        };
        let revision_ok = !revision.is_empty()
            && !revision.contains("..")
            && !revision.starts_with('/')
            && !revision.ends_with('/')
            && revision.chars().all(|c| c.is_ascii_graphic());
        (part_ok(org) && part_ok(name) && revision_ok).then(|| HubId {
            repo: repo.to_string(),
            revision: revision.to_string(),
        })
    }

    /// True when the revision is a full commit hash (its files can never change).
    pub fn is_commit(&self) -> bool {
        is_commit(&self.revision)
    }

    /// The base URL of the revision's files: `<endpoint>/<org>/<name>/resolve/<revision>/`
    /// (the revision percent-encoded, as `refs/pr/1` must be).
    pub fn base_url(&self, endpoint: &str) -> String {
        let rev: String = self
            .revision
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        format!(
            "{}/{}/resolve/{rev}/",
            endpoint.trim_end_matches('/'),
            self.repo
        )
    }
}

impl std::fmt::Display for HubId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.revision == "main" {
            write!(f, "{}", self.repo)
        } else {
            write!(f, "{}@{}", self.repo, self.revision)
        }
    }
}

/// A 40-digit hexadecimal commit hash.
fn is_commit(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `scheme://host[:port]` of a URL.
fn origin(url: &str) -> &str {
    let after = url.find("://").map_or(0, |i| i + 3);
    match url[after..].find('/') {
        Some(i) => &url[..after + i],
        None => url,
    }
}

/// True when `url` is on `endpoint`'s host: the only place a token is sent.
pub fn same_origin(url: &str, endpoint: &str) -> bool {
    origin(url) == origin(endpoint)
}

/// Where a model named `model` is fetched from in the browser: a Hub id becomes its
/// `resolve/<revision>/` URL at `endpoint`; anything else is returned as it is.
pub fn resolve_url(model: &str, endpoint: &str) -> String {
    if model.starts_with("http://") || model.starts_with("https://") {
        return model.to_string();
    }
    // `org/name[@rev]/file.gguf`: the file stays after the resolved base.
    if let Some((base, file)) = super::source::gguf_file(model)
        && let Some(id) = HubId::parse(&base)
    {
        return format!("{}{file}", id.base_url(endpoint));
    }
    match HubId::parse(model) {
        Some(id) => id.base_url(endpoint),
        None => model.to_string(),
    }
}

#[cfg(feature = "native")]
pub use native::*;

#[cfg(feature = "native")]
mod native {
    use std::io::{Read, Write};
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::{DEFAULT_ENDPOINT, HubId, is_commit, origin, same_origin};
    use crate::hf::HfError;
    use crate::hf::safetensors::CHUNK;
    use crate::hf::source::{
        Body, Chunk, Fetch, Opened, Reopen, Request, http_response, open_url_at,
    };

    static OFFLINE: AtomicBool = AtomicBool::new(false);

    /// Use the cache only, as `HF_HUB_OFFLINE=1` does (the CLI's `--offline`).
    pub fn set_offline(offline: bool) {
        OFFLINE.store(offline, Ordering::Relaxed);
    }

    /// How to reach the Hub and where its cache lives.
    #[derive(Clone)]
    pub struct HubOptions {
        /// `HF_ENDPOINT`, default the public Hub.
        pub endpoint: String,
        /// `HF_TOKEN`, sent as a bearer token to the endpoint only (never logged).
        pub token: Option<String>,
        /// The hub cache directory (`HF_HUB_CACHE`, else `$HF_HOME/hub`, else
        /// `$XDG_CACHE_HOME/huggingface/hub`, else `~/.cache/huggingface/hub`).
        pub cache: PathBuf,
        /// Read the cache only (`HF_HUB_OFFLINE=1` or `--offline`).
        pub offline: bool,
    }

    impl std::fmt::Debug for HubOptions {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("HubOptions")
                .field("endpoint", &self.endpoint)
                .field("token", &self.token.as_ref().map(|_| "<set>"))
                .field("cache", &self.cache)
                .field("offline", &self.offline)
                .finish()
        }
    }

    impl HubOptions {
        /// The options the environment gives, as huggingface_hub reads them.
        pub fn from_env() -> Self {
            let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
            let truthy = |k: &str| {
                var(k).is_some_and(|v| {
                    matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on")
                })
            };
            let home = var("HF_HOME").map(PathBuf::from).unwrap_or_else(|| {
                let cache = var("XDG_CACHE_HOME").map(PathBuf::from).unwrap_or_else(|| {
                    PathBuf::from(var("HOME").unwrap_or_else(|| ".".into())).join(".cache")
                });
                cache.join("huggingface")
            });
            HubOptions {
                endpoint: var("HF_ENDPOINT")
                    .unwrap_or_else(|| DEFAULT_ENDPOINT.into())
                    .trim_end_matches('/')
                    .to_string(),
                token: var("HF_TOKEN"),
                cache: var("HF_HUB_CACHE")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| home.join("hub")),
                offline: OFFLINE.load(Ordering::Relaxed) || truthy("HF_HUB_OFFLINE"),
            }
        }
    }

    /// A Hub repository at a revision, fetched through the disk cache.
    pub struct HubRepo {
        pub id: HubId,
        pub options: HubOptions,
    }

    /// The cache folder of repository `repo` (`models--org--name`).
    pub fn repo_dir(cache: &Path, repo: &str) -> PathBuf {
        cache.join(format!("models--{}", repo.replace('/', "--")))
    }

    fn cache_err(path: &Path, e: impl std::fmt::Display) -> HfError {
        HfError::Cache {
            path: path.display().to_string(),
            message: e.to_string(),
        }
    }

    /// What the Hub says about one file before it is downloaded.
    struct Meta {
        commit: Option<String>,
        etag: String,
        size: Option<u64>,
        /// Where its bytes are (the resolve URL itself, or a CDN the Hub redirects to).
        location: String,
    }

    impl HubRepo {
        /// `id` with the environment's options.
        pub fn new(id: HubId) -> Self {
            HubRepo {
                id,
                options: HubOptions::from_env(),
            }
        }

        fn dir(&self) -> PathBuf {
            repo_dir(&self.options.cache, &self.id.repo)
        }

        fn url(&self, name: &str) -> String {
            format!("{}{name}", self.id.base_url(&self.options.endpoint))
        }

        /// The commit the revision points to, as the cache last recorded it.
        fn cached_commit(&self) -> Option<String> {
            if self.id.is_commit() {
                return Some(self.id.revision.clone());
            }
            let text =
                std::fs::read_to_string(self.dir().join("refs").join(&self.id.revision)).ok()?;
            let commit = text.trim();
            is_commit(commit).then(|| commit.to_string())
        }

        /// `name` from the cache alone: its snapshot file, a recorded absence, or NotCached.
        fn open_cached(&self, name: &str) -> Result<Opened, HfError> {
            let not_cached = || HfError::NotCached {
                file: name.to_string(),
                model: self.id.to_string(),
                cache: self.dir().display().to_string(),
            };
            let commit = self.cached_commit().ok_or_else(not_cached)?;
            let path = self.dir().join("snapshots").join(&commit).join(name);
            match std::fs::File::open(&path) {
                Ok(file) => {
                    let len = file.metadata().ok().map(|m| m.len());
                    Ok(Opened::from_reader(file, len, &path.display().to_string()))
                }
                Err(_)
                    if self
                        .dir()
                        .join(".no_exist")
                        .join(&commit)
                        .join(name)
                        .exists() =>
                {
                    Err(HfError::MissingFile {
                        file: format!("{} ({name} at {})", self.id, self.id.revision),
                    })
                }
                Err(_) => Err(not_cached()),
            }
        }

        /// HEAD the file's resolve URL, following the Hub's relative redirects (renamed repos)
        /// and stopping at an absolute one (the CDN holding a large file's bytes).
        fn head(&self, name: &str) -> Result<Meta, HfError> {
            let mut url = self.url(name);
            for _ in 0..5 {
                let r = request(&self.options, "HEAD", &url, 0).map_err(|message| {
                    HfError::HttpConnect {
                        file: name.to_string(),
                        url: url.clone(),
                        message,
                    }
                })?;
                let header = |k: &str| {
                    r.headers()
                        .get(k)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string)
                };
                let status = r.status().as_u16();
                if let Some(code) = header("x-error-code")
                    .or_else(|| matches!(status, 401 | 403 | 404).then(String::new))
                {
                    let refused = self.refusal(name, status, &code);
                    if let HfError::MissingFile { .. } = refused
                        && let Some(commit) = header("x-repo-commit").filter(|c| is_commit(c))
                    {
                        self.record_absent(&commit, name)?;
                    }
                    return Err(refused);
                }
                let location = header("location");
                if (300..400).contains(&status)
                    && let Some(loc) = &location
                    && loc.starts_with('/')
                {
                    url = format!("{}{loc}", origin(&url));
                    continue;
                }
                if !(200..400).contains(&status) {
                    return Err(HfError::HttpStatus {
                        file: name.to_string(),
                        url,
                        status,
                    });
                }
                let etag = header("x-linked-etag")
                    .or_else(|| header("etag"))
                    .map(|e| e.trim_start_matches("W/").trim_matches('"').to_string())
                    .filter(|e| !e.is_empty() && !e.contains(['/', '\\']) && !e.contains(".."))
                    .ok_or_else(|| HfError::Io {
                        file: url.clone(),
                        message: "the server sent no ETag, so the file cannot be cached".into(),
                    })?;
                let size = header("x-linked-size")
                    .or_else(|| header("content-length"))
                    .and_then(|s| s.parse().ok());
                let commit = header("x-repo-commit").filter(|c| is_commit(c));
                let location = match location {
                    Some(loc) if (300..400).contains(&status) => loc,
                    _ => url,
                };
                return Ok(Meta {
                    commit,
                    etag,
                    size,
                    location,
                });
            }
            Err(HfError::HttpConnect {
                file: name.to_string(),
                url,
                message: "too many redirects".into(),
            })
        }

        /// The error for a refused file, from the Hub's `X-Error-Code` or the status alone.
        fn refusal(&self, name: &str, status: u16, code: &str) -> HfError {
            let id = &self.id;
            let why = match code {
                "RepoNotFound" => format!(
                    "the Hub has no repository `{}` (nor is it a local directory); if it is private, set HF_TOKEN",
                    id.repo
                ),
                "RevisionNotFound" => format!("`{}` has no revision `{}`", id.repo, id.revision),
                "EntryNotFound" => {
                    return HfError::MissingFile {
                        file: format!("{id} ({name} at {})", id.revision),
                    };
                }
                "GatedRepo" => format!(
                    "`{}` is gated: accept its conditions on the Hub, then set HF_TOKEN to a token of that account",
                    id.repo
                ),
                _ if status == 404 => {
                    return HfError::MissingFile {
                        file: format!("{id} ({name} at {})", id.revision),
                    };
                }
                _ => format!(
                    "HTTP {status}: `{}` is gated or private and HF_TOKEN is {}",
                    id.repo,
                    if self.options.token.is_some() {
                        "not accepted"
                    } else {
                        "not set"
                    }
                ),
            };
            HfError::Hub {
                file: name.to_string(),
                model: id.to_string(),
                message: why,
            }
        }

        /// Remember that `name` does not exist at `commit` (as huggingface_hub does), so that
        /// offline it is known absent rather than not cached.
        fn record_absent(&self, commit: &str, name: &str) -> Result<(), HfError> {
            self.write_ref(commit)?;
            let path = self.dir().join(".no_exist").join(commit).join(name);
            write_atomic(&path, b"")
        }

        /// Point `refs/<revision>` at `commit`.
        fn write_ref(&self, commit: &str) -> Result<(), HfError> {
            if self.id.revision == commit {
                return Ok(());
            }
            let path = self.dir().join("refs").join(&self.id.revision);
            write_atomic(&path, commit.as_bytes())
        }
    }

    impl Fetch for HubRepo {
        async fn open(&self, name: &str) -> Result<Opened, HfError> {
            // Names come from files the repository serves (a shard index): none may reach
            // outside the snapshot folder it is linked into.
            if name.is_empty()
                || name.starts_with('/')
                || name.contains('\\')
                || name
                    .split('/')
                    .any(|part| part.is_empty() || part == "." || part == "..")
            {
                return Err(HfError::Hub {
                    file: name.to_string(),
                    model: self.id.to_string(),
                    message: "not a file name inside the repository".into(),
                });
            }
            if self.options.offline {
                return self.open_cached(name);
            }
            // A commit's files never change: one cached (or known absent) needs no request.
            if self.id.is_commit() {
                match self.open_cached(name) {
                    Err(HfError::NotCached { .. }) => {}
                    done => return done,
                }
            }
            let meta = match self.head(name) {
                Ok(meta) => meta,
                // Unreachable Hub: what the cache has is as good as it gets (as transformers).
                Err(e @ HfError::HttpConnect { .. }) => {
                    return self.open_cached(name).map_err(|_| e);
                }
                Err(e) => return Err(e),
            };
            let dir = self.dir();
            let blobs = dir.join("blobs");
            std::fs::create_dir_all(&blobs).map_err(|e| cache_err(&blobs, e))?;
            let commit = meta
                .commit
                .clone()
                .unwrap_or_else(|| self.id.revision.clone());
            if meta.commit.is_some() {
                self.write_ref(&commit)?;
            }
            let blob = blobs.join(&meta.etag);
            if let Ok(file) = std::fs::File::open(&blob) {
                let len = file.metadata().map_err(|e| cache_err(&blob, e))?.len();
                if meta.size.is_none_or(|s| s == len) {
                    link_in(&dir, &commit, name, &meta.etag)?;
                    return Ok(Opened::from_reader(
                        file,
                        Some(len),
                        &blob.display().to_string(),
                    ));
                }
                log::warn!(
                    "{}: {len} bytes where the Hub says {}; downloading it again",
                    blob.display(),
                    meta.size.unwrap_or(0)
                );
            }
            self.download(name, &commit, meta).await
        }

        fn locate(&self, name: &str) -> String {
            if name.is_empty() {
                self.id.to_string()
            } else {
                self.url(name)
            }
        }
    }

    impl HubRepo {
        /// Stream `name` from `meta.location` into `blobs/<etag>.incomplete` (resuming what an
        /// earlier download left there) while handing its bytes on; when complete, it becomes
        /// the blob and the snapshot links to it.
        async fn download(&self, name: &str, commit: &str, meta: Meta) -> Result<Opened, HfError> {
            let blobs = self.dir().join("blobs");
            let partial = blobs.join(format!("{}.incomplete", meta.etag));
            // Where huggingface_hub keeps its locks, so the two never write one blob at once.
            let locks = self.options.cache.join(".locks").join(
                self.dir()
                    .file_name()
                    .expect("a repository folder has a name"),
            );
            std::fs::create_dir_all(&locks).map_err(|e| cache_err(&locks, e))?;
            let lock_path = locks.join(format!("{}.lock", meta.etag));
            let lock = std::fs::File::create(&lock_path).map_err(|e| cache_err(&lock_path, e))?;
            if lock.try_lock().is_err() {
                // Another process is downloading it: read it from the network without caching.
                log::warn!(
                    "{}: another download holds the lock; not caching",
                    partial.display()
                );
                let get = HubGet {
                    options: self.options.clone(),
                    url: meta.location.clone(),
                };
                return crate::hf::source::open_url(get, &meta.location, name).await;
            }
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .read(true)
                .open(&partial)
                .map_err(|e| cache_err(&partial, e))?;
            let mut have = file.metadata().map_err(|e| cache_err(&partial, e))?.len();
            if meta.size.is_some_and(|s| have > s) {
                have = 0;
            }
            let get = HubGet {
                options: self.options.clone(),
                url: meta.location.clone(),
            };
            let (net, start) = open_url_at(get, &meta.location, name, have).await?;
            if start == 0 && have > 0 {
                log::warn!(
                    "{}: the server cannot resume; starting over",
                    partial.display()
                );
            }
            if start == 0 {
                file.set_len(0).map_err(|e| cache_err(&partial, e))?;
            }
            let total = net.len.or(meta.size);
            // The part already on disk is handed on first.
            let replay = if start > 0 {
                Some(std::fs::File::open(&partial).map_err(|e| cache_err(&partial, e))?)
            } else {
                None
            };
            let body = CachingBody {
                replay,
                replayed: 0,
                start,
                net: net.body,
                out: file,
                partial,
                blob: blobs.join(&meta.etag),
                written: start,
                total,
                finish: Some(Finish {
                    repo_dir: self.dir(),
                    commit: commit.to_string(),
                    name: name.to_string(),
                    etag: meta.etag,
                }),
                _lock: lock,
            };
            Ok(Opened {
                body: Box::new(body),
                len: total,
            })
        }
    }

    /// What to do once a download is complete.
    struct Finish {
        repo_dir: PathBuf,
        commit: String,
        name: String,
        etag: String,
    }

    /// The body of a download that is written to the cache as it is read.
    struct CachingBody {
        replay: Option<std::fs::File>,
        replayed: u64,
        start: u64,
        net: Box<dyn Body>,
        out: std::fs::File,
        partial: PathBuf,
        blob: PathBuf,
        written: u64,
        total: Option<u64>,
        finish: Option<Finish>,
        /// Held (and so the download's lock) until the body is dropped.
        _lock: std::fs::File,
    }

    impl CachingBody {
        async fn next(&mut self) -> Result<Option<Vec<u8>>, HfError> {
            if let Some(replay) = &mut self.replay {
                let want = (self.start - self.replayed).min(CHUNK as u64) as usize;
                if want > 0 {
                    let mut buf = vec![0u8; want];
                    replay
                        .read_exact(&mut buf)
                        .map_err(|e| cache_err(&self.partial, e))?;
                    self.replayed += want as u64;
                    return Ok(Some(buf));
                }
                self.replay = None;
            }
            match self.net.next_chunk().await? {
                Some(chunk) => {
                    self.out
                        .write_all(&chunk)
                        .map_err(|e| cache_err(&self.partial, e))?;
                    self.written += chunk.len() as u64;
                    Ok(Some(chunk))
                }
                None => {
                    self.complete()?;
                    Ok(None)
                }
            }
        }

        /// Sync, check the size, rename into place and link the snapshot.
        fn complete(&mut self) -> Result<(), HfError> {
            let Some(f) = self.finish.take() else {
                return Ok(());
            };
            if let Some(total) = self.total
                && total != self.written
            {
                return Err(cache_err(
                    &self.partial,
                    format!("download ended at {} of {total} bytes", self.written),
                ));
            }
            self.out
                .sync_all()
                .map_err(|e| cache_err(&self.partial, e))?;
            std::fs::rename(&self.partial, &self.blob).map_err(|e| cache_err(&self.blob, e))?;
            link_in(&f.repo_dir, &f.commit, &f.name, &f.etag)
        }
    }

    impl Body for CachingBody {
        fn next_chunk(&mut self) -> Chunk<'_> {
            Box::pin(self.next())
        }
    }

    /// A request to the Hub or its CDN; the token goes only to the endpoint's own host.
    fn request(
        options: &HubOptions,
        method: &str,
        url: &str,
        from: u64,
    ) -> Result<ureq::http::Response<ureq::Body>, String> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .build()
            .into();
        let mut req = ureq::http::Request::builder()
            .method(method)
            .uri(url)
            .header("Accept-Encoding", "identity")
            .header("User-Agent", concat!("tunelab/", env!("CARGO_PKG_VERSION")));
        if from > 0 {
            req = req.header("Range", format!("bytes={from}-"));
        }
        if let Some(token) = &options.token
            && same_origin(url, &options.endpoint)
        {
            req = req.header("Authorization", format!("Bearer {token}"));
        }
        let req = req.body(()).map_err(|e| e.to_string())?;
        agent.run(req).map_err(|e| e.to_string())
    }

    /// GET requests for one download, as [`Reopen`] wants them.
    struct HubGet {
        options: HubOptions,
        url: String,
    }

    impl Reopen for HubGet {
        fn open_at(&self, from: u64) -> Request<'_> {
            let r = request(&self.options, "GET", &self.url, from)
                .map(|response| http_response(response, &self.url));
            Box::pin(std::future::ready(r))
        }
    }

    /// One repository in the cache, as `tunelab cache ls` shows it.
    #[derive(Debug, Clone, serde::Serialize)]
    pub struct CachedRepo {
        /// `org/name`.
        pub repo: String,
        /// Its folder (`models--org--name`).
        pub path: PathBuf,
        /// Bytes of its complete blobs.
        pub bytes: u64,
        /// Bytes of downloads left unfinished (`*.incomplete`, resumed next time).
        pub incomplete_bytes: u64,
        /// Files in its snapshots.
        pub files: usize,
        /// Revision name → commit (`refs/`).
        pub refs: std::collections::BTreeMap<String, String>,
        /// Commits with a snapshot.
        pub snapshots: Vec<String>,
    }

    /// Every model repository in the cache directory `cache` (none if it does not exist).
    pub fn list_cache(cache: &Path) -> Result<Vec<CachedRepo>, HfError> {
        let entries = match std::fs::read_dir(cache) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
            Err(e) => return Err(cache_err(cache, e)),
        };
        let mut out = vec![];
        for entry in entries {
            let entry = entry.map_err(|e| cache_err(cache, e))?;
            let folder = entry.file_name().to_string_lossy().into_owned();
            let Some(name) = folder.strip_prefix("models--") else {
                continue;
            };
            let path = entry.path();
            let (mut bytes, mut incomplete_bytes) = (0, 0);
            for blob in std::fs::read_dir(path.join("blobs"))
                .into_iter()
                .flatten()
                .flatten()
            {
                let len = blob.metadata().map(|m| m.len()).unwrap_or(0);
                let n = blob.file_name().to_string_lossy().into_owned();
                if n.ends_with(".incomplete") {
                    incomplete_bytes += len;
                } else {
                    bytes += len;
                }
            }
            let mut refs = std::collections::BTreeMap::new();
            walk(&path.join("refs"), &mut |rel, file| {
                if let Ok(commit) = std::fs::read_to_string(file) {
                    refs.insert(rel.to_string(), commit.trim().to_string());
                }
            });
            let mut snapshots = vec![];
            let mut files = 0;
            for snap in std::fs::read_dir(path.join("snapshots"))
                .into_iter()
                .flatten()
                .flatten()
            {
                snapshots.push(snap.file_name().to_string_lossy().into_owned());
                walk(&snap.path(), &mut |_, _| files += 1);
            }
            snapshots.sort();
            out.push(CachedRepo {
                repo: name.replacen("--", "/", 1),
                path,
                bytes,
                incomplete_bytes,
                files,
                refs,
                snapshots,
            });
        }
        out.sort_by(|a, b| a.repo.cmp(&b.repo));
        Ok(out)
    }

    /// Call `f` with the path relative to `root` (with `/`) and the path of every file below it.
    fn walk(root: &Path, f: &mut dyn FnMut(&str, &Path)) {
        fn go(root: &Path, dir: &Path, f: &mut dyn FnMut(&str, &Path)) {
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let path = entry.path();
                // `symlink_metadata`: a snapshot's links count as files, never followed as dirs.
                match std::fs::symlink_metadata(&path) {
                    Ok(m) if m.is_dir() => go(root, &path, f),
                    Ok(_) => {
                        let rel = path.strip_prefix(root).unwrap_or(&path);
                        f(&rel.to_string_lossy().replace('\\', "/"), &path)
                    }
                    Err(_) => {}
                }
            }
        }
        go(root, root, f)
    }

    /// Delete repository `repo` (`org/name`) from the cache; returns the bytes it held.
    pub fn remove_cached(cache: &Path, repo: &str) -> Result<u64, HfError> {
        let found = list_cache(cache)?
            .into_iter()
            .find(|r| r.repo == repo)
            .ok_or_else(|| HfError::Cache {
                path: repo_dir(cache, repo).display().to_string(),
                message: format!("`{repo}` is not cached (see `tunelab cache ls`)"),
            })?;
        std::fs::remove_dir_all(&found.path).map_err(|e| cache_err(&found.path, e))?;
        if let Some(folder) = found.path.file_name() {
            let _ = std::fs::remove_dir_all(cache.join(".locks").join(folder));
        }
        Ok(found.bytes + found.incomplete_bytes)
    }

    /// `snapshots/<commit>/<name>` in `repo_dir` as a relative link to `blobs/<etag>`.
    fn link_in(repo_dir: &Path, commit: &str, name: &str, etag: &str) -> Result<(), HfError> {
        let link = repo_dir.join("snapshots").join(commit).join(name);
        let parent = link.parent().expect("a snapshot path has a parent");
        std::fs::create_dir_all(parent).map_err(|e| cache_err(parent, e))?;
        let ups = "../".repeat(2 + name.matches('/').count());
        let _ = std::fs::remove_file(&link);
        #[cfg(unix)]
        let made = std::os::unix::fs::symlink(format!("{ups}blobs/{etag}"), &link);
        #[cfg(not(unix))]
        let made = std::fs::copy(repo_dir.join("blobs").join(etag), &link).map(|_| ());
        made.map_err(|e| cache_err(&link, e))
    }

    /// Write `bytes` to `path` through a temporary file and a rename.
    fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), HfError> {
        let parent = path.parent().expect("a cache path has a parent");
        std::fs::create_dir_all(parent).map_err(|e| cache_err(parent, e))?;
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, bytes).map_err(|e| cache_err(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| cache_err(path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_ids_parse_as_the_hub_names_them() {
        let id = HubId::parse("HuggingFaceTB/SmolLM2-135M-Instruct").unwrap();
        assert_eq!(
            (id.repo.as_str(), id.revision.as_str()),
            ("HuggingFaceTB/SmolLM2-135M-Instruct", "main")
        );
        let id = HubId::parse("org/name@refs/pr/1/").unwrap();
        assert_eq!(id.revision, "refs/pr/1");
        assert_eq!(
            id.base_url("https://hub.example/"),
            "https://hub.example/org/name/resolve/refs%2Fpr%2F1/"
        );
        assert_eq!(id.to_string(), "org/name@refs/pr/1");
        for bad in [
            "name",
            "a/b/c",
            "/abs/path",
            "./x/y",
            "a/../b",
            "org/na me",
            "org/n@",
            "../x",
        ] {
            assert_eq!(HubId::parse(bad), None, "{bad}");
        }
        assert!(
            HubId::parse(&format!("o/n@{}", "ab".repeat(20)))
                .unwrap()
                .is_commit()
        );
    }

    #[test]
    fn the_page_resolves_hub_ids_and_gguf_files_in_them_to_urls() {
        let hub = "https://huggingface.co";
        assert_eq!(
            resolve_url("org/m", hub),
            "https://huggingface.co/org/m/resolve/main/"
        );
        assert_eq!(
            resolve_url("org/m@v1/model.Q4_0.gguf", hub),
            "https://huggingface.co/org/m/resolve/v1/model.Q4_0.gguf"
        );
        assert_eq!(
            resolve_url("http://127.0.0.1:8/m/", hub),
            "http://127.0.0.1:8/m/"
        );
        assert_eq!(
            resolve_url("../models/tunelab-base/", hub),
            "../models/tunelab-base/"
        );
    }
}
