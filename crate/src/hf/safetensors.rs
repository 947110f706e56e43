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
    let n = u64::from_le_bytes(len_bytes);
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
    let mut json = vec![0u8; n as usize];
    read_exact(reader, &mut json, file, "the JSON header")?;
    let header: HashMap<String, serde_json::Value> =
        serde_json::from_slice(&json).map_err(|e| HfError::Json {
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

/// Stream every tensor of a file through `on_tensor`, in file order, after validating the header.
///
/// Only one tensor's bytes are held at a time. `on_progress` receives the bytes read so far.
pub fn stream_tensors(
    mut reader: impl Read,
    file: &str,
    file_len: Option<u64>,
    mut on_tensor: impl FnMut(RawTensor) -> Result<(), HfError>,
    mut on_progress: impl FnMut(u64),
) -> Result<Header, HfError> {
    let header = read_header(&mut reader, file, file_len)?;
    let mut pos = 0u64;
    let mut buf = Vec::new();
    on_progress(header.header_bytes);
    for info in &header.tensors {
        if info.begin > pos {
            // Padding or unreferenced bytes between tensors: skip them.
            let gap = info.begin - pos;
            let skipped = std::io::copy(&mut (&mut reader).take(gap), &mut std::io::sink())
                .map_err(|e| io_error(file, e))?;
            if skipped < gap {
                return Err(truncated(file, &info.name));
            }
        }
        buf.resize((info.end - info.begin) as usize, 0);
        read_exact(
            &mut reader,
            &mut buf,
            file,
            &format!("tensor `{}`", info.name),
        )?;
        pos = info.end;
        let values = widen(&buf, info.dtype).ok_or_else(|| HfError::UnsupportedDtype {
            file: file.to_string(),
            tensor: info.name.clone(),
            dtype: info.dtype.name().to_string(),
        })?;
        on_tensor(RawTensor {
            info: info.clone(),
            values,
        })?;
        on_progress(header.header_bytes + pos);
    }
    Ok(header)
}

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

fn truncated(file: &str, tensor: &str) -> HfError {
    HfError::Truncated {
        file: file.to_string(),
        what: format!("tensor `{tensor}`"),
    }
}

fn io_error(file: &str, e: std::io::Error) -> HfError {
    HfError::Io {
        file: file.to_string(),
        message: e.to_string(),
    }
}
