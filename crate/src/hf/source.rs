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
            body: Box::new(ReaderBody {
                reader: Box::new(reader),
                file: file.to_string(),
            }),
            len,
        }
    }

    /// All the bytes.
    pub async fn read_all(mut self) -> Result<Vec<u8>, HfError> {
        let mut out = Vec::with_capacity(self.len.unwrap_or(0) as usize);
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

/// A model location given by the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// A local directory holding `config.json` and friends.
    Dir(PathBuf),
    /// A base URL; files are fetched as `<base>/<name>`.
    Url(String),
}

impl ModelSource {
    /// Interpret a command-line or page argument: `http(s)://...` is a URL, anything else a path.
    pub fn parse(s: &str) -> Self {
        if s.starts_with("http://") || s.starts_with("https://") {
            let mut base = s.to_string();
            if !base.ends_with('/') {
                base.push('/');
            }
            ModelSource::Url(base)
        } else {
            ModelSource::Dir(PathBuf::from(s))
        }
    }
}

impl std::fmt::Display for ModelSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ModelSource::Dir(p) => write!(f, "{}", p.display()),
            ModelSource::Url(u) => write!(f, "{u}"),
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
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .build()
                    .into();
                let response = agent.get(&url).call().map_err(|e| HfError::HttpConnect {
                    file: name.to_string(),
                    url: url.clone(),
                    message: e.to_string(),
                })?;
                let status = response.status().as_u16();
                if status != 200 {
                    return Err(HfError::HttpStatus {
                        file: name.to_string(),
                        url,
                        status,
                    });
                }
                let len = response.body().content_length();
                let reader = response
                    .into_body()
                    .into_with_config()
                    .limit(u64::MAX)
                    .reader();
                Ok(Opened::from_reader(reader, len, &url))
            }
        }
    }

    fn locate(&self, name: &str) -> String {
        match self {
            ModelSource::Dir(dir) => dir.join(name).display().to_string(),
            ModelSource::Url(base) => format!("{base}{name}"),
        }
    }
}
