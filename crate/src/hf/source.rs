//! Where a model's files come from: a local directory or an HTTP(S) base URL laid out as the
//! Hugging Face hub's `resolve/main/`. Fetching is async so the same loader runs in the browser;
//! natively it is driven to completion with a blocking executor.

use std::future::Future;
use std::io::Read;
use std::path::PathBuf;
use std::pin::Pin;

use super::HfError;
use super::safetensors::{CHUNK, Header, RawTensor, TensorStream};

/// The next chunk of an opened file, or `None` at its end.
pub type Chunk<'a> = Pin<Box<dyn Future<Output = Result<Option<Vec<u8>>, HfError>> + 'a>>;

/// A file's bytes, delivered in chunks as they arrive (a blocking reader natively, the
/// browser's streaming `fetch` body on the web).
pub trait Body {
    /// The next chunk, `Ok(None)` at the end.
    fn next_chunk(&mut self) -> Chunk<'_>;
}

/// A blocking reader as a [`Body`]: each chunk is read at once.
struct ReaderBody {
    reader: Box<dyn Read>,
    file: String,
}

impl ReaderBody {
    /// `reader`'s bytes; `file` names it in errors.
    fn new(reader: impl Read + 'static, file: &str) -> Self {
        ReaderBody {
            reader: Box::new(reader),
            file: file.to_string(),
        }
    }
}

impl Body for ReaderBody {
    fn next_chunk(&mut self) -> Chunk<'_> {
        let mut buf = vec![0u8; CHUNK];
        let read = loop {
            match self.reader.read(&mut buf) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                r => break r,
            }
        };
        let out = match read {
            Ok(0) => Ok(None),
            Ok(n) => {
                buf.truncate(n);
                Ok(Some(buf))
            }
            Err(e) => Err(HfError::Io {
                file: self.file.clone(),
                message: e.to_string(),
            }),
        };
        Box::pin(std::future::ready(out))
    }
}

/// An opened file: its bytes and its length when known.
pub struct Opened {
    pub body: Box<dyn Body>,
    pub len: Option<u64>,
}

impl Opened {
    /// A file read from a blocking `reader`; `file` names it in errors.
    pub fn from_reader(reader: impl Read + 'static, len: Option<u64>, file: &str) -> Self {
        Opened {
            body: Box::new(ReaderBody::new(reader, file)),
            len,
        }
    }

    /// All the bytes.
    pub async fn read_all(mut self) -> Result<Vec<u8>, HfError> {
        // The stated length is only a hint: a server may claim anything.
        let mut out = Vec::with_capacity(self.len.unwrap_or(0).min(CHUNK as u64) as usize);
        while let Some(chunk) = self.body.next_chunk().await? {
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }

    /// Stream the tensors of this safetensors file (`file` names it in errors) as its bytes
    /// arrive: `on_header` sees the validated header before any tensor data is read (and may
    /// refuse it), `on_tensor` each tensor in file order, `on_progress` the bytes received.
    pub async fn stream_tensors(
        mut self,
        file: &str,
        on_header: &mut dyn FnMut(&Header) -> Result<(), HfError>,
        on_tensor: &mut dyn FnMut(RawTensor) -> Result<(), HfError>,
        on_progress: &mut dyn FnMut(u64),
    ) -> Result<Header, HfError> {
        let mut stream = TensorStream::new(file, self.len);
        let mut done = 0u64;
        while let Some(chunk) = self.body.next_chunk().await? {
            done += chunk.len() as u64;
            stream.push(&chunk, on_header, on_tensor)?;
            on_progress(done);
        }
        stream.finish()
    }

    /// Only the header: reads until it is complete, then stops.
    pub async fn read_header(mut self, file: &str) -> Result<Header, HfError> {
        let mut stream = TensorStream::new(file, self.len);
        let mut found = None;
        while found.is_none() {
            let Some(chunk) = self.body.next_chunk().await? else {
                break;
            };
            // Refusing the header stops the parser before it reads any tensor data.
            let pushed = stream.push(
                &chunk,
                &mut |h| {
                    found = Some(h.clone());
                    Err(HfError::Io {
                        file: file.to_string(),
                        message: "stopped after the header".into(),
                    })
                },
                &mut |_| Ok(()),
            );
            if found.is_none() {
                pushed?;
            }
        }
        match found {
            Some(header) => Ok(header),
            None => stream.finish(),
        }
    }
}

/// An HTTP response as [`open_url`] needs it: status, length when stated, and the body.
pub struct HttpResponse {
    pub status: u16,
    pub len: Option<u64>,
    pub body: Box<dyn Body>,
}

/// The future of a [`Reopen::open_at`] request.
pub type Request<'a> = Pin<Box<dyn Future<Output = Result<HttpResponse, String>> + 'a>>;

/// One URL that can be requested from a byte offset: the first request (`from` = 0) and each
/// resumption after a dropped connection (`Range: bytes=<from>-`). Natively ureq, in the
/// browser `fetch`.
pub trait Reopen {
    /// Request the URL's bytes from `from` on.
    fn open_at(&self, from: u64) -> Request<'_>;
}

/// How often a dropped download is resumed before giving up.
pub const RESUME_ATTEMPTS: u32 = 3;

/// Open `url` (the file `name`) through `reopen` as a body that resumes a dropped connection
/// from the byte where it stopped, so a multi-gigabyte shard survives a network hiccup; a
/// server that cannot resume, or a connection that keeps dropping, gives an error saying how
/// far the download got.
pub async fn open_url(
    reopen: impl Reopen + 'static,
    url: &str,
    name: &str,
) -> Result<Opened, HfError> {
    Ok(open_url_at(reopen, url, name, 0).await?.0)
}

/// [`open_url`] from byte `from` (`Range: bytes=<from>-`, continuing a download kept on disk):
/// the body and the byte it starts at, which is 0 when the server answered the range with the
/// whole file. The body's `len` is the whole file's.
pub async fn open_url_at(
    reopen: impl Reopen + 'static,
    url: &str,
    name: &str,
    from: u64,
) -> Result<(Opened, u64), HfError> {
    let first = reopen
        .open_at(from)
        .await
        .map_err(|message| HfError::HttpConnect {
            file: name.to_string(),
            url: url.to_string(),
            message,
        })?;
    let start = match first.status {
        200 => 0,
        206 if from > 0 => from,
        status => {
            return Err(HfError::HttpStatus {
                file: name.to_string(),
                url: url.to_string(),
                status,
            });
        }
    };
    let len = first.len.map(|l| l + start);
    Ok((
        Opened {
            len,
            body: Box::new(Resuming {
                reopen,
                url: url.to_string(),
                name: name.to_string(),
                body: first.body,
                received: start,
                len,
                attempts: 0,
            }),
        },
        start,
    ))
}

/// The body behind [`open_url`].
struct Resuming<R> {
    reopen: R,
    url: String,
    name: String,
    body: Box<dyn Body>,
    received: u64,
    len: Option<u64>,
    attempts: u32,
}

impl<R: Reopen> Resuming<R> {
    async fn next(&mut self) -> Result<Option<Vec<u8>>, HfError> {
        loop {
            let why = match self.body.next_chunk().await {
                Ok(Some(chunk)) => {
                    self.received += chunk.len() as u64;
                    return Ok(Some(chunk));
                }
                Ok(None) => match self.len {
                    Some(len) if self.received < len => "the connection closed early".to_string(),
                    _ => return Ok(None),
                },
                Err(HfError::Io { message, .. }) => message,
                Err(e) => e.to_string(),
            };
            self.resume(why).await?;
        }
    }

    /// Reopen the download at `received`, or fail naming the reason it stopped (`why`).
    async fn resume(&mut self, why: String) -> Result<(), HfError> {
        let fail = |message: String| HfError::Interrupted {
            file: self.name.clone(),
            url: self.url.clone(),
            received: self.received,
            total: self.len,
            message,
        };
        if self.attempts >= RESUME_ATTEMPTS {
            return Err(fail(format!(
                "{why} (after {RESUME_ATTEMPTS} resumed attempts)"
            )));
        }
        self.attempts += 1;
        log::warn!(
            "{}: {why} at byte {}; resuming (attempt {})",
            self.url,
            self.received,
            self.attempts
        );
        let response = self
            .reopen
            .open_at(self.received)
            .await
            .map_err(|e| fail(format!("{why}; resuming failed: {e}")))?;
        // Nothing received yet: the request went without a Range (`open_at(0)`), and the whole
        // file (200) is the resumed download (a connection that died before its first chunk).
        let whole = self.received == 0 && response.status == 200;
        if response.status != 206 && !whole {
            return Err(fail(format!(
                "{why}; the server answered HTTP {} to a Range request, so it cannot resume",
                response.status
            )));
        }
        // The rest must be exactly what is missing, or the bytes would not line up.
        if let (Some(total), Some(rest)) = (self.len, response.len)
            && rest != total - self.received
        {
            return Err(fail(format!(
                "{why}; the server resumed with {rest} bytes where {} are missing",
                total - self.received
            )));
        }
        self.body = response.body;
        Ok(())
    }
}

impl<R: Reopen> Body for Resuming<R> {
    fn next_chunk(&mut self) -> Chunk<'_> {
        Box::pin(self.next())
    }
}

/// Something that can open the files of one model by name (`config.json`, shards, ...).
#[allow(async_fn_in_trait)] // used through generics only, never as `dyn`
pub trait Fetch {
    /// Open `name` for reading.
    async fn open(&self, name: &str) -> Result<Opened, HfError>;

    /// Human-readable location of `name` (path or URL), for messages.
    fn locate(&self, name: &str) -> String;

    /// Read `name` completely as UTF-8 text.
    async fn read_string(&self, name: &str) -> Result<String, HfError> {
        let bytes = self.open(name).await?.read_all().await?;
        String::from_utf8(bytes).map_err(|e| HfError::Io {
            file: self.locate(name),
            message: format!("not UTF-8 text: {e}"),
        })
    }
}

/// Files held in memory by name (uploaded in a browser, or built by a test or fuzz target), read
/// through the same [`Fetch`] code as a directory or a URL.
#[derive(Debug, Clone, Default)]
pub struct MemoryFiles(pub std::collections::BTreeMap<String, Vec<u8>>);

impl Fetch for MemoryFiles {
    async fn open(&self, name: &str) -> Result<Opened, HfError> {
        let bytes = self
            .0
            .get(name)
            .cloned()
            .ok_or_else(|| HfError::MissingFile {
                file: self.locate(name),
            })?;
        let len = bytes.len() as u64;
        Ok(Opened::from_reader(
            std::io::Cursor::new(bytes),
            Some(len),
            name,
        ))
    }

    fn locate(&self, name: &str) -> String {
        name.to_string()
    }
}

/// A `.gguf` file named by path or URL, split into its directory (or base URL) and file name.
pub fn gguf_file(model: &str) -> Option<(String, String)> {
    // A URL's query (a presigned link) stays with the file name.
    let path = model.split(['?', '#']).next().unwrap_or(model);
    if !path.to_ascii_lowercase().ends_with(".gguf") {
        return None;
    }
    let cut = path.rfind('/').map_or(0, |i| i + 1);
    let base = if cut == 0 { "." } else { &path[..cut] };
    Some((base.to_string(), model[cut..].to_string()))
}

/// A model location given by the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// A local directory holding `config.json` and friends.
    Dir(PathBuf),
    /// A base URL; files are fetched as `<base>/<name>`.
    Url(String),
    /// A Hugging Face Hub repository at a revision, through the disk cache.
    Hub(super::hub::HubId),
}

impl ModelSource {
    /// Interpret a command-line or page argument: `http(s)://...` is a URL; an existing path is
    /// a directory; `org/name[@revision]` is a Hub id (as transformers decides: a local
    /// directory wins); anything else is a path.
    pub fn parse(s: &str) -> Self {
        if s.starts_with("http://") || s.starts_with("https://") {
            let mut base = s.to_string();
            if !base.ends_with('/') {
                base.push('/');
            }
            return ModelSource::Url(base);
        }
        match super::hub::HubId::parse(s) {
            Some(id) if !std::path::Path::new(s).exists() => ModelSource::Hub(id),
            _ => ModelSource::Dir(PathBuf::from(s)),
        }
    }
}

impl std::fmt::Display for ModelSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ModelSource::Dir(p) => write!(f, "{}", p.display()),
            ModelSource::Url(u) => write!(f, "{u}"),
            ModelSource::Hub(id) => write!(f, "{id}"),
        }
    }
}

#[cfg(feature = "native")]
impl Fetch for ModelSource {
    async fn open(&self, name: &str) -> Result<Opened, HfError> {
        match self {
            ModelSource::Dir(dir) => {
                let path = dir.join(name);
                let file = std::fs::File::open(&path).map_err(|e| {
                    if e.kind() == std::io::ErrorKind::NotFound {
                        HfError::MissingFile {
                            file: path.display().to_string(),
                        }
                    } else {
                        HfError::Io {
                            file: path.display().to_string(),
                            message: e.to_string(),
                        }
                    }
                })?;
                let len = file.metadata().ok().map(|m| m.len());
                Ok(Opened::from_reader(file, len, &path.display().to_string()))
            }
            ModelSource::Url(base) => {
                let url = format!("{base}{name}");
                open_url(UreqUrl(url.clone()), &url, name).await
            }
            ModelSource::Hub(id) => super::hub::HubRepo::new(id.clone()).open(name).await,
        }
    }

    fn locate(&self, name: &str) -> String {
        match self {
            ModelSource::Dir(dir) => dir.join(name).display().to_string(),
            ModelSource::Url(base) => format!("{base}{name}"),
            ModelSource::Hub(id) => super::hub::HubRepo::new(id.clone()).locate(name),
        }
    }
}

/// A URL fetched natively with ureq.
#[cfg(feature = "native")]
struct UreqUrl(String);

#[cfg(feature = "native")]
impl Reopen for UreqUrl {
    fn open_at(&self, from: u64) -> Request<'_> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut request = agent.get(&self.0);
        if from > 0 {
            request = request.header("Range", &format!("bytes={from}-"));
        }
        let response = request
            .call()
            .map_err(|e| e.to_string())
            .map(|r| http_response(r, &self.0));
        Box::pin(std::future::ready(response))
    }
}

/// A ureq response from `url` as an [`HttpResponse`] whose body streams (no size limit).
#[cfg(feature = "native")]
pub(crate) fn http_response(response: ureq::http::Response<ureq::Body>, url: &str) -> HttpResponse {
    let status = response.status().as_u16();
    let len = response.body().content_length();
    let reader = response
        .into_body()
        .into_with_config()
        .limit(u64::MAX)
        .reader();
    HttpResponse {
        status,
        len,
        body: Box::new(ReaderBody::new(reader, url)),
    }
}
