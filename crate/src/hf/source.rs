//! Where a model's files come from: a local directory or an HTTP(S) base URL laid out as the
//! Hugging Face hub's `resolve/main/`. Fetching is async so the same loader runs in the browser;
//! natively it is driven to completion with a blocking executor.

use std::io::Read;
use std::path::PathBuf;

use super::HfError;

/// An opened file: a byte stream and its length when known.
pub struct Opened {
    pub reader: Box<dyn Read>,
    pub len: Option<u64>,
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
        let mut opened = self.open(name).await?;
        let mut s = String::new();
        opened
            .reader
            .read_to_string(&mut s)
            .map_err(|e| HfError::Io {
                file: self.locate(name),
                message: e.to_string(),
            })?;
        Ok(s)
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
                Ok(Opened {
                    reader: Box::new(std::io::BufReader::with_capacity(1 << 20, file)),
                    len,
                })
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
                Ok(Opened {
                    reader: Box::new(reader),
                    len,
                })
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
