//! Streaming reader for the safetensors format: validate the header completely, then hand out
//! tensors one at a time in file order, so a checkpoint never sits in memory twice.

use std::collections::HashMap;
use std::io::Read;

use super::HfError;

/// Largest header we accept; the format's reference implementation uses the same bound.
const MAX_HEADER: u64 = 100 * 1024 * 1024;

/// Element types named by the safetensors specification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    Bool,
    U8,
    I8,
    U16,
    I16,
    F16,
    BF16,
    U32,
    I32,
    F32,
    U64,
    I64,
    F64,
}

impl Dtype {
    /// Parse the dtype string of a header entry.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "BOOL" => Self::Bool,
            "U8" => Self::U8,
            "I8" => Self::I8,
            "U16" => Self::U16,
            "I16" => Self::I16,
            "F16" => Self::F16,
            "BF16" => Self::BF16,
            "U32" => Self::U32,
            "I32" => Self::I32,
            "F32" => Self::F32,
            "U64" => Self::U64,
            "I64" => Self::I64,
            "F64" => Self::F64,
            _ => return None,
        })
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Self::Bool | Self::U8 | Self::I8 => 1,
            Self::U16 | Self::I16 | Self::F16 | Self::BF16 => 2,
            Self::U32 | Self::I32 | Self::F32 => 4,
            Self::U64 | Self::I64 | Self::F64 => 8,
        }
    }

    /// The name used in headers and `config.json`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Bool => "BOOL",
            Self::U8 => "U8",
            Self::I8 => "I8",
            Self::U16 => "U16",
            Self::I16 => "I16",
            Self::F16 => "F16",
            Self::BF16 => "BF16",
            Self::U32 => "U32",
            Self::I32 => "I32",
            Self::F32 => "F32",
            Self::U64 => "U64",
            Self::I64 => "I64",
            Self::F64 => "F64",
        }
    }
}

/// One header entry, validated against the file's data section.
#[derive(Debug, Clone)]
pub struct TensorInfo {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    /// Byte range within the data section (after the header).
    pub begin: u64,
    pub end: u64,
}

impl TensorInfo {
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// A tensor read from a file: its metadata and its values widened to f32.
#[derive(Debug)]
pub struct RawTensor {
    pub info: TensorInfo,
    pub values: Vec<f32>,
}

/// Parsed and validated header of one safetensors file.
#[derive(Debug, Clone)]
pub struct Header {
    /// Entries sorted by their offset in the data section.
    pub tensors: Vec<TensorInfo>,
    pub metadata: HashMap<String, String>,
    /// Size of the 8-byte length prefix plus the JSON header.
    pub header_bytes: u64,
}

#[derive(serde::Deserialize)]
struct Entry {
    dtype: String,
    shape: Vec<usize>,
    data_offsets: (u64, u64),
}

/// Read and validate the header from the start of `reader`.
///
/// `file_len`, when known (file size or HTTP Content-Length), lets us reject a header that
/// claims more bytes than the file has and tensors that point past its end before reading them.
pub fn read_header(
    reader: &mut impl Read,
    file: &str,
    file_len: Option<u64>,
) -> Result<Header, HfError> {
    let mut len_bytes = [0u8; 8];
    read_exact(reader, &mut len_bytes, file, "the 8-byte header length")?;
    let n = header_len(len_bytes, file, file_len)?;
    let mut json = vec![0u8; n as usize];
    read_exact(reader, &mut json, file, "the JSON header")?;
    parse_header(&json, file, file_len)
}

/// Check the 8-byte length prefix against the file size and the format's bound.
fn header_len(prefix: [u8; 8], file: &str, file_len: Option<u64>) -> Result<u64, HfError> {
    let n = u64::from_le_bytes(prefix);
    if let Some(total) = file_len
        && n > total.saturating_sub(8)
    {
        return Err(HfError::HeaderTooLarge {
            file: file.to_string(),
            header_len: n,
            file_len: total,
        });
    }
    if n > MAX_HEADER {
        return Err(HfError::HeaderTooLarge {
            file: file.to_string(),
            header_len: n,
            file_len: file_len.unwrap_or(0),
        });
    }
    Ok(n)
}

/// Parse and validate the JSON header (the bytes after the length prefix).
fn parse_header(json: &[u8], file: &str, file_len: Option<u64>) -> Result<Header, HfError> {
    let n = json.len() as u64;
    let header: HashMap<String, serde_json::Value> =
        serde_json::from_slice(json).map_err(|e| HfError::Json {
            file: file.to_string(),
            message: format!("safetensors header: {e}"),
        })?;
    let data_len = file_len.map(|t| t - 8 - n);
    let mut metadata = HashMap::new();
    let mut tensors = Vec::with_capacity(header.len());
    for (name, value) in header {
        if name == "__metadata__" {
            if let Ok(m) = serde_json::from_value::<HashMap<String, String>>(value) {
                metadata = m;
            }
            continue;
        }
        let entry: Entry = serde_json::from_value(value).map_err(|e| HfError::Json {
            file: file.to_string(),
            message: format!("safetensors header entry `{name}`: {e}"),
        })?;
        let dtype = Dtype::parse(&entry.dtype).ok_or_else(|| HfError::UnknownDtype {
            file: file.to_string(),
            tensor: name.clone(),
            dtype: entry.dtype.clone(),
        })?;
        let (begin, end) = entry.data_offsets;
        let numel: u64 = entry.shape.iter().map(|&d| d as u64).product();
        if end < begin || end - begin != numel * dtype.size() as u64 {
            return Err(HfError::BadOffsets {
                file: file.to_string(),
                tensor: name,
                reason: format!(
                    "offsets [{begin}, {end}) hold {} bytes but shape {:?} of {} needs {}",
                    end.saturating_sub(begin),
                    entry.shape,
                    dtype.name(),
                    numel * dtype.size() as u64
                ),
            });
        }
        if let Some(d) = data_len
            && end > d
        {
            return Err(HfError::BadOffsets {
                file: file.to_string(),
                tensor: name,
                reason: format!(
                    "offsets [{begin}, {end}) run past the end of the data section ({d} bytes): \
                         the file is truncated or its header is wrong"
                ),
            });
        }
        tensors.push(TensorInfo {
            name,
            dtype,
            shape: entry.shape,
            begin,
            end,
        });
    }
    tensors.sort_by_key(|a| (a.begin, a.end));
    for pair in tensors.windows(2) {
        if pair[1].begin < pair[0].end {
            return Err(HfError::BadOffsets {
                file: file.to_string(),
                tensor: pair[1].name.clone(),
                reason: format!(
                    "its bytes [{}, {}) overlap those of `{}` [{}, {})",
                    pair[1].begin, pair[1].end, pair[0].name, pair[0].begin, pair[0].end
                ),
            });
        }
    }
    Ok(Header {
        tensors,
        metadata,
        header_bytes: 8 + n,
    })
}

/// An incremental safetensors parser: bytes go in as they arrive (a file read in pieces, a
/// network stream), each tensor comes out as soon as its last byte is in. Only the header and
/// the bytes of the tensor being completed are held, so a shard is never in memory whole.
pub struct TensorStream {
    file: String,
    file_len: Option<u64>,
    /// Bytes received but not yet consumed.
    pending: Vec<u8>,
    /// Bytes of the file consumed so far (header included).
    consumed: u64,
    header: Option<Header>,
    /// Index of the next tensor to hand out, in file order.
    next: usize,
}

impl TensorStream {
    /// A parser for `file` (named in errors) of `file_len` bytes when known.
    pub fn new(file: &str, file_len: Option<u64>) -> Self {
        TensorStream {
            file: file.to_string(),
            file_len,
            pending: Vec::new(),
            consumed: 0,
            header: None,
            next: 0,
        }
    }

    /// The validated header, once its bytes have arrived.
    pub fn header(&self) -> Option<&Header> {
        self.header.as_ref()
    }

    /// Feed the next `bytes` of the file. `on_header` sees the validated header as soon as it
    /// is complete, before any tensor data is touched (and may refuse it); every tensor the
    /// bytes complete goes to `on_tensor`.
    pub fn push(
        &mut self,
        bytes: &[u8],
        on_header: &mut dyn FnMut(&Header) -> Result<(), HfError>,
        on_tensor: &mut dyn FnMut(RawTensor) -> Result<(), HfError>,
    ) -> Result<(), HfError> {
        self.pending.extend_from_slice(bytes);
        let mut at = 0usize;
        let result = self.consume(&mut at, on_header, on_tensor);
        self.pending.drain(..at);
        self.consumed += at as u64;
        result
    }

    /// Consume complete pieces of `pending` from `*at` on, advancing `*at` past them.
    fn consume(
        &mut self,
        at: &mut usize,
        on_header: &mut dyn FnMut(&Header) -> Result<(), HfError>,
        on_tensor: &mut dyn FnMut(RawTensor) -> Result<(), HfError>,
    ) -> Result<(), HfError> {
        if self.header.is_none() {
            let avail = &self.pending[*at..];
            if avail.len() < 8 {
                return Ok(());
            }
            let prefix = avail[..8].try_into().expect("8 bytes");
            let n = header_len(prefix, &self.file, self.file_len)? as usize;
            if avail.len() < 8 + n {
                return Ok(());
            }
            let header = parse_header(&avail[8..8 + n], &self.file, self.file_len)?;
            on_header(&header)?;
            self.header = Some(header);
            *at += 8 + n;
        }
        let header = self.header.as_ref().expect("parsed above");
        while let Some(info) = header.tensors.get(self.next) {
            // Position within the data section of the first pending byte.
            let pos = self.consumed + *at as u64 - header.header_bytes;
            if info.begin > pos {
                // Padding or unreferenced bytes between tensors: skip them.
                let skip = (info.begin - pos).min((self.pending.len() - *at) as u64) as usize;
                *at += skip;
                if pos + (skip as u64) < info.begin {
                    return Ok(());
                }
            }
            let len = usize::try_from(info.end - info.begin).map_err(|_| HfError::BadOffsets {
                file: self.file.clone(),
                tensor: info.name.clone(),
                reason: "is larger than this platform's address space".into(),
            })?;
            if self.pending.len() - *at < len {
                // Make room once for the whole tensor rather than growing chunk by chunk.
                self.pending.reserve(len - (self.pending.len() - *at));
                return Ok(());
            }
            let values = widen(&self.pending[*at..*at + len], info.dtype).ok_or_else(|| {
                HfError::UnsupportedDtype {
                    file: self.file.clone(),
                    tensor: info.name.clone(),
                    dtype: info.dtype.name().to_string(),
                }
            })?;
            *at += len;
            self.next += 1;
            on_tensor(RawTensor {
                info: info.clone(),
                values,
            })?;
        }
        // Bytes after the last tensor are not part of any tensor: drop them.
        *at = self.pending.len();
        Ok(())
    }

    /// The end of the file: an error naming what is missing if it stopped short.
    pub fn finish(self) -> Result<Header, HfError> {
        let truncated = |what: String| HfError::Truncated {
            file: self.file.clone(),
            what,
        };
        let Some(header) = self.header else {
            let what = if self.pending.len() < 8 {
                "the 8-byte header length"
            } else {
                "the JSON header"
            };
            return Err(truncated(what.into()));
        };
        match header.tensors.get(self.next) {
            Some(info) => Err(truncated(format!("tensor `{}`", info.name))),
            None => Ok(header),
        }
    }
}

/// Every tensor of a safetensors file already in memory, through `on_tensor` in file order,
/// after validating the header (fed to [`TensorStream`] a chunk at a time, so only one tensor
/// is widened at once). Files on disk or the network stream through [`super::Opened`].
pub fn stream_tensors(
    bytes: &[u8],
    file: &str,
    mut on_tensor: impl FnMut(RawTensor) -> Result<(), HfError>,
) -> Result<Header, HfError> {
    let mut stream = TensorStream::new(file, Some(bytes.len() as u64));
    for piece in bytes.chunks(CHUNK) {
        stream.push(piece, &mut |_| Ok(()), &mut on_tensor)?;
    }
    stream.finish()
}

/// Bytes read from a blocking reader at a time.
pub const CHUNK: usize = 1 << 20;

/// Convert little-endian float bytes to f32; `None` for non-float dtypes.
pub fn widen(bytes: &[u8], dtype: Dtype) -> Option<Vec<f32>> {
    Some(match dtype {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::BF16 => bytes
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::F64 => bytes
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().expect("chunk of 8")) as f32)
            .collect(),
        _ => return None,
    })
}

/// Serialize named f32 tensors as one safetensors file (keys sorted, as the Python writer does).
pub fn serialize_f32(tensors: &[(String, Vec<usize>, &[f32])]) -> Vec<u8> {
    let mut sorted: Vec<_> = tensors.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut header = serde_json::Map::new();
    let mut offset = 0u64;
    for (name, shape, values) in &sorted {
        let end = offset + 4 * values.len() as u64;
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [offset, end]}),
        );
        offset = end;
    }
    let mut json = serde_json::to_vec(&header).expect("a JSON map always serializes");
    // Pad the header with spaces so the data section starts 8-byte aligned, as the spec suggests.
    while !(json.len() + 8).is_multiple_of(8) {
        json.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + json.len() + offset as usize);
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(&json);
    for (_, _, values) in &sorted {
        for v in values.iter() {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    out
}

fn read_exact(
    reader: &mut impl Read,
    buf: &mut [u8],
    file: &str,
    what: &str,
) -> Result<(), HfError> {
    reader.read_exact(buf).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            HfError::Truncated {
                file: file.to_string(),
                what: what.to_string(),
            }
        } else {
            io_error(file, e)
        }
    })
}

fn io_error(file: &str, e: std::io::Error) -> HfError {
    HfError::Io {
        file: file.to_string(),
        message: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file with a gap of padding between its two tensors (allowed by the format).
    fn file_with_gap() -> Vec<u8> {
        let header = serde_json::json!({
            "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
            "b": {"dtype": "F16", "shape": [3], "data_offsets": [12, 18]},
            "__metadata__": {"format": "pt"},
        });
        let json = serde_json::to_vec(&header).unwrap();
        let mut out = (json.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(&json);
        for v in [1.5f32, -2.0] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&[0xAA; 4]);
        for v in [0.5f32, 3.0, -1.0] {
            out.extend_from_slice(&half::f16::from_f32(v).to_le_bytes());
        }
        out
    }

    fn feed(bytes: &[u8], piece: usize) -> Result<Vec<(String, Vec<f32>)>, HfError> {
        let mut stream = TensorStream::new("f.safetensors", Some(bytes.len() as u64));
        let mut got = Vec::new();
        for chunk in bytes.chunks(piece) {
            stream.push(chunk, &mut |_| Ok(()), &mut |t| {
                got.push((t.info.name.clone(), t.values));
                Ok(())
            })?;
        }
        stream.finish()?;
        Ok(got)
    }

    #[test]
    fn tensors_come_out_the_same_whatever_the_chunking() {
        let bytes = file_with_gap();
        let expected = vec![
            ("a".to_string(), vec![1.5, -2.0]),
            ("b".to_string(), vec![0.5, 3.0, -1.0]),
        ];
        for piece in [1, 3, 7, 8, 13, bytes.len()] {
            assert_eq!(feed(&bytes, piece).unwrap(), expected, "chunks of {piece}");
        }
    }

    #[test]
    fn a_stream_that_stops_short_names_what_is_missing() {
        let bytes = file_with_gap();
        let n = bytes.len();
        let mut stream = TensorStream::new("f.safetensors", None);
        stream
            .push(&bytes[..n - 1], &mut |_| Ok(()), &mut |_| Ok(()))
            .unwrap();
        let err = stream.finish().unwrap_err().to_string();
        assert_eq!(err, "f.safetensors: truncated while reading tensor `b`");
        let mut stream = TensorStream::new("f.safetensors", None);
        stream
            .push(&bytes[..5], &mut |_| Ok(()), &mut |_| Ok(()))
            .unwrap();
        let err = stream.finish().unwrap_err().to_string();
        assert_eq!(
            err,
            "f.safetensors: truncated while reading the 8-byte header length"
        );
        let mut stream = TensorStream::new("f.safetensors", None);
        stream
            .push(&bytes[..20], &mut |_| Ok(()), &mut |_| Ok(()))
            .unwrap();
        assert!(stream.header().is_none());
        let err = stream.finish().unwrap_err().to_string();
        assert_eq!(
            err,
            "f.safetensors: truncated while reading the JSON header"
        );
    }

    #[test]
    fn the_header_is_available_before_any_tensor_data() {
        let bytes = file_with_gap();
        let header_len = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let mut stream = TensorStream::new("f.safetensors", Some(bytes.len() as u64));
        let mut seen = 0;
        stream
            .push(&bytes[..header_len], &mut |_| Ok(()), &mut |_| {
                seen += 1;
                Ok(())
            })
            .unwrap();
        let header = stream.header().expect("header parsed");
        assert_eq!(header.tensors.len(), 2);
        assert_eq!(header.metadata["format"], "pt");
        assert_eq!(seen, 0);
    }

    #[test]
    fn opened_body_streams_tensors_and_lets_the_header_refuse_them() {
        let bytes = file_with_gap();
        let len = Some(bytes.len() as u64);
        let opened = crate::hf::Opened::from_reader(std::io::Cursor::new(bytes.clone()), len, "f");
        let mut names = Vec::new();
        let mut progress = Vec::new();
        let header = pollster::block_on(opened.stream_tensors(
            "f",
            &mut |_| Ok(()),
            &mut |t| {
                names.push(t.info.name);
                Ok(())
            },
            &mut |done| progress.push(done),
        ))
        .unwrap();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(header.tensors.len(), 2);
        assert_eq!(progress.last(), len.as_ref());
        let opened = crate::hf::Opened::from_reader(std::io::Cursor::new(bytes), len, "f");
        let mut any = false;
        let err = pollster::block_on(opened.stream_tensors(
            "f",
            &mut |h| {
                Err(HfError::Field {
                    file: "f".into(),
                    field: h.tensors[0].name.clone(),
                    message: "refused".into(),
                })
            },
            &mut |_| {
                any = true;
                Ok(())
            },
            &mut |_| {},
        ))
        .unwrap_err();
        assert_eq!(err.to_string(), "f: field `a`: refused");
        assert!(!any, "a tensor was handed out before the header check");
    }
}
