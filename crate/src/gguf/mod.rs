//! GGUF, llama.cpp's single-file checkpoint format (versions 2 and 3): header, metadata, tensor
//! infos and alignment, then every tensor dequantised to f32 as its bytes arrive — the file is
//! never whole in memory, as with safetensors shards. [`llama`] maps the llama family to Hugging
//! Face names, `config.json` and `tokenizer.json`.

pub mod dequant;
pub mod llama;
pub mod tokenizer;

use std::collections::BTreeMap;

pub use dequant::GgmlType;

use crate::hf::HfError;

/// Headers larger than this are refused (SmolLM2's, with 49k tokens and merges, is ~2.5 MB).
const MAX_HEADER: usize = 256 << 20;
/// Dimensions of a tensor (ggml has at most 4).
const MAX_DIMS: u32 = 4;

/// A metadata value (integers widened to 64 bits, floats to f64).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(untagged)]
pub enum Value {
    UInt(u64),
    Int(i64),
    Float(f64),
    Bool(bool),
    String(String),
    Array(Vec<Value>),
}

impl Value {
    /// The value as an unsigned integer, if it is a non-negative integer.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::UInt(v) => Some(v),
            Value::Int(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as a float, if it is a number.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::Float(v) => Some(v),
            Value::UInt(v) => Some(v as f64),
            Value::Int(v) => Some(v as f64),
            _ => None,
        }
    }

    /// The value as text, if it is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }
}

/// One tensor as the header describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    /// ggml order: `dims[0]` varies fastest (a row's length).
    pub dims: Vec<u64>,
    pub kind: GgmlType,
    /// Byte offset within the data section.
    pub offset: u64,
    /// Bytes of its data.
    pub bytes: u64,
}

impl TensorInfo {
    /// Elements of the tensor.
    pub fn elements(&self) -> u64 {
        self.dims.iter().product()
    }

    /// The shape row-major with the slowest dimension first (PyTorch's order).
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }
}

/// A parsed, validated GGUF header.
#[derive(Debug, Clone)]
pub struct Header {
    pub version: u32,
    pub metadata: BTreeMap<String, Value>,
    /// Sorted by offset.
    pub tensors: Vec<TensorInfo>,
    /// Offset of the data section in the file.
    pub data_start: u64,
}

impl Header {
    /// A metadata value.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.get(key)
    }
}

/// Why the header could not be parsed yet.
enum Stop {
    /// The bytes end before the header does.
    More,
    Bad(String),
}

/// A little-endian reader over the bytes received so far.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], Stop> {
        if n > MAX_HEADER {
            return Err(Stop::Bad(format!("a header field claims {n} bytes")));
        }
        let end = self.pos.checked_add(n).ok_or(Stop::More)?;
        let out = self.bytes.get(self.pos..end).ok_or(Stop::More)?;
        self.pos = end;
        Ok(out)
    }

    fn u32(&mut self) -> Result<u32, Stop> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    fn u64(&mut self) -> Result<u64, Stop> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    fn string(&mut self) -> Result<String, Stop> {
        let n = self.u64()?;
        let bytes =
            self.take(usize::try_from(n).map_err(|_| Stop::Bad("string length".into()))?)?;
        String::from_utf8(bytes.to_vec()).map_err(|e| Stop::Bad(format!("string not UTF-8: {e}")))
    }

    fn value(&mut self, kind: u32, depth: usize) -> Result<Value, Stop> {
        let mut n = |k: usize| -> Result<[u8; 8], Stop> {
            let mut b = [0u8; 8];
            b[..k].copy_from_slice(self.take(k)?);
            Ok(b)
        };
        Ok(match kind {
            0 => Value::UInt(n(1)?[0] as u64),
            1 => Value::Int(n(1)?[0] as i8 as i64),
            2 => Value::UInt(u16::from_le_bytes(n(2)?[..2].try_into().expect("2")) as u64),
            3 => Value::Int(i16::from_le_bytes(n(2)?[..2].try_into().expect("2")) as i64),
            4 => Value::UInt(u32::from_le_bytes(n(4)?[..4].try_into().expect("4")) as u64),
            5 => Value::Int(i32::from_le_bytes(n(4)?[..4].try_into().expect("4")) as i64),
            6 => Value::Float(f32::from_le_bytes(n(4)?[..4].try_into().expect("4")) as f64),
            7 => Value::Bool(n(1)?[0] != 0),
            8 => Value::String(self.string()?),
            9 => {
                if depth > 2 {
                    return Err(Stop::Bad("arrays nested too deeply".into()));
                }
                let inner = self.u32()?;
                let len = self.u64()?;
                // Every element takes at least one byte: a count beyond the limit is a lie.
                if len > MAX_HEADER as u64 {
                    return Err(Stop::Bad(format!("an array claims {len} elements")));
                }
                let mut items = Vec::with_capacity((len as usize).min(1 << 16));
                for _ in 0..len {
                    items.push(self.value(inner, depth + 1)?);
                }
                Value::Array(items)
            }
            10 => Value::UInt(u64::from_le_bytes(n(8)?)),
            11 => Value::Int(i64::from_le_bytes(n(8)?)),
            12 => Value::Float(f64::from_le_bytes(n(8)?)),
            other => return Err(Stop::Bad(format!("unknown metadata type {other}"))),
        })
    }
}

/// Parse the header from the first bytes of a file.
fn parse_header(bytes: &[u8], file_len: Option<u64>) -> Result<Header, Stop> {
    let mut c = Cursor { bytes, pos: 0 };
    if c.take(4)? != b"GGUF" {
        return Err(Stop::Bad("no GGUF magic at the start".into()));
    }
    let version = c.u32()?;
    if !(2..=3).contains(&version) {
        return Err(Stop::Bad(format!(
            "GGUF version {version}; versions 2 and 3 are supported"
        )));
    }
    let tensor_count = c.u64()?;
    let kv_count = c.u64()?;
    if tensor_count > 1 << 20 || kv_count > 1 << 20 {
        return Err(Stop::Bad(format!(
            "the header claims {tensor_count} tensors and {kv_count} metadata entries"
        )));
    }
    let mut metadata = BTreeMap::new();
    for _ in 0..kv_count {
        let key = c.string()?;
        let kind = c.u32()?;
        let value = c.value(kind, 0)?;
        metadata.insert(key, value);
    }
    // Each tensor info takes at least 32 bytes: reserve no more than the bytes can hold.
    let mut tensors = Vec::with_capacity((tensor_count as usize).min(bytes.len() / 32 + 1));
    for _ in 0..tensor_count {
        let name = c.string()?;
        let n_dims = c.u32()?;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return Err(Stop::Bad(format!(
                "tensor `{name}` has {n_dims} dimensions"
            )));
        }
        let dims = (0..n_dims)
            .map(|_| c.u64())
            .collect::<Result<Vec<_>, _>>()?;
        let kind = GgmlType::from_id(c.u32()?)
            .map_err(|e| Stop::Bad(format!("tensor `{name}`: {e} is not supported")))?;
        let offset = c.u64()?;
        // Its f32 values must be addressable here (wasm32 included).
        let elements = dims
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d))
            .filter(|&e| e > 0 && e.checked_mul(4).is_some_and(|b| usize::try_from(b).is_ok()))
            .ok_or_else(|| Stop::Bad(format!("tensor `{name}` has dimensions {dims:?}")))?;
        if !dims[0].is_multiple_of(kind.block().0 as u64) {
            return Err(Stop::Bad(format!(
                "tensor `{name}`: rows of {} elements are not whole {} blocks",
                dims[0],
                kind.name()
            )));
        }
        let bytes = kind
            .bytes_for(elements)
            .ok_or_else(|| Stop::Bad(format!("tensor `{name}` is too large")))?;
        tensors.push(TensorInfo {
            name,
            dims,
            kind,
            offset,
            bytes,
        });
    }
    let alignment = match metadata.get("general.alignment") {
        None => 32,
        Some(v) => match v.as_u64() {
            Some(a) if a > 0 && a.is_power_of_two() && a <= 1 << 20 => a,
            _ => return Err(Stop::Bad(format!("general.alignment {v:?}"))),
        },
    };
    let data_start = (c.pos as u64).div_ceil(alignment) * alignment;
    tensors.sort_by_key(|t| t.offset);
    let mut end = 0u64;
    for t in &tensors {
        if !t.offset.is_multiple_of(alignment) || t.offset < end {
            return Err(Stop::Bad(format!(
                "tensor `{}`: offset {} overlaps the previous tensor or is not aligned to {alignment}",
                t.name, t.offset
            )));
        }
        end = t
            .offset
            .checked_add(t.bytes)
            .and_then(|e| e.checked_add(data_start))
            .ok_or_else(|| Stop::Bad(format!("tensor `{}`: offset {}", t.name, t.offset)))?
            - data_start;
        if let Some(len) = file_len
            && data_start + end > len
        {
            return Err(Stop::Bad(format!(
                "tensor `{}` ends at byte {} but the file has {len} bytes",
                t.name,
                data_start + end
            )));
        }
    }
    Ok(Header {
        version,
        metadata,
        tensors,
        data_start,
    })
}

/// What [`GgufStream::push`] calls with each tensor: the header, the tensor, its f32 values.
pub type OnTensor<'a> = dyn FnMut(&Header, &TensorInfo, Vec<f32>) -> Result<(), HfError> + 'a;

/// An incremental GGUF parser: feed it the file's bytes as they arrive; it calls back with the
/// header once complete and with each tensor (dequantised to f32, with the header) once its
/// last byte arrived.
pub struct GgufStream {
    file: String,
    file_len: Option<u64>,
    pending: Vec<u8>,
    /// Bytes of the file before `pending`.
    consumed: u64,
    /// Try parsing the header again once this many bytes are pending.
    next_try: usize,
    header: Option<Header>,
    next: usize,
}

impl GgufStream {
    /// A parser for `file` (named in errors) of `file_len` bytes when known.
    pub fn new(file: &str, file_len: Option<u64>) -> Self {
        GgufStream {
            file: file.to_string(),
            file_len,
            pending: Vec::new(),
            consumed: 0,
            next_try: 0,
            header: None,
            next: 0,
        }
    }

    fn bad(&self, message: String) -> HfError {
        HfError::Gguf {
            file: self.file.clone(),
            message,
        }
    }

    /// Feed the next bytes of the file.
    pub fn push(
        &mut self,
        bytes: &[u8],
        on_header: &mut dyn FnMut(&Header) -> Result<(), HfError>,
        on_tensor: &mut OnTensor,
    ) -> Result<(), HfError> {
        self.pending.extend_from_slice(bytes);
        if self.header.is_none() {
            if self.pending.len() < self.next_try {
                return Ok(());
            }
            match parse_header(&self.pending, self.file_len) {
                Ok(h) => {
                    on_header(&h)?;
                    self.header = Some(h);
                }
                Err(Stop::More) if self.pending.len() > MAX_HEADER => {
                    return Err(self.bad(format!("header larger than {MAX_HEADER} bytes")));
                }
                Err(Stop::More) => {
                    // Parse again when twice as many bytes are in: linear time overall.
                    self.next_try = self.pending.len() * 2;
                    return Ok(());
                }
                Err(Stop::Bad(m)) => return Err(self.bad(m)),
            }
        }
        let header = self.header.as_ref().expect("parsed above");
        while let Some(t) = header.tensors.get(self.next) {
            let start = header.data_start + t.offset;
            let end = start + t.bytes;
            if self.consumed + (self.pending.len() as u64) < end {
                break;
            }
            let from = (start - self.consumed) as usize;
            let to = (end - self.consumed) as usize;
            let mut values = Vec::new();
            dequant::dequantize(t.kind, &self.pending[from..to], &mut values);
            self.pending.drain(..to);
            self.consumed = end;
            self.next += 1;
            on_tensor(header, t, values)?;
        }
        Ok(())
    }

    /// The file has ended: parse a header whose last bytes arrived while parsing was deferred
    /// (attempts are spaced out as bytes double), delivering its tensors. Call before
    /// [`GgufStream::finish`], with the callbacks given to `push`.
    pub fn end(
        &mut self,
        on_header: &mut dyn FnMut(&Header) -> Result<(), HfError>,
        on_tensor: &mut OnTensor,
    ) -> Result<(), HfError> {
        self.next_try = 0;
        self.push(&[], on_header, on_tensor)
    }

    /// The end of the file (after [`GgufStream::end`]): the header, or an error if the file
    /// ended early.
    pub fn finish(self) -> Result<Header, HfError> {
        let Some(header) = self.header else {
            return Err(match parse_header(&self.pending, self.file_len) {
                Err(Stop::Bad(m)) => self.bad(m),
                _ => HfError::Truncated {
                    file: self.file,
                    what: "the GGUF header".into(),
                },
            });
        };
        match header.tensors.get(self.next) {
            Some(t) => Err(HfError::Truncated {
                file: self.file,
                what: format!("tensor `{}`", t.name),
            }),
            None => Ok(header),
        }
    }
}

/// Only the header of an opened GGUF file: reads until it is complete (at most one chunk of
/// tensor data beyond it), then stops.
pub async fn read_header(mut opened: crate::hf::Opened, file: &str) -> Result<Header, HfError> {
    let mut stream = GgufStream::new(file, opened.len);
    while stream.header.is_none() {
        let Some(chunk) = opened.body.next_chunk().await? else {
            stream.end(&mut |_| Ok(()), &mut |_, _, _| Ok(()))?;
            return stream.finish();
        };
        stream.push(&chunk, &mut |_| Ok(()), &mut |_, _, _| Ok(()))?;
    }
    Ok(stream.header.expect("parsed above"))
}

/// Parse a whole GGUF file in memory (tests, small files), calling `on_tensor` for each tensor.
pub fn read(
    bytes: &[u8],
    file: &str,
    mut on_tensor: impl FnMut(&Header, &TensorInfo, Vec<f32>) -> Result<(), HfError>,
) -> Result<Header, HfError> {
    let mut stream = GgufStream::new(file, Some(bytes.len() as u64));
    for piece in bytes.chunks(1 << 16) {
        stream.push(piece, &mut |_| Ok(()), &mut on_tensor)?;
    }
    stream.end(&mut |_| Ok(()), &mut on_tensor)?;
    stream.finish()
}
