//! Training data: plain text or JSONL `text` for continued pretraining (tokenized, EOS appended,
//! concatenated and packed into fixed-length blocks), and prompt/response JSONL for instruction
//! tuning (loss on response tokens only). A file is read as its bytes arrive ([`DataReader`]:
//! pushed chunk by chunk, gunzipped on the fly, split into lines and tokenized line by line), so
//! what is kept in memory is the token ids, never the file.

use std::io::{Read, Write};

use burn::tensor::{Bool, Device, Int, Tensor, TensorData};

use super::loss::IGNORE;
use crate::error::{Error, Result};
use crate::event::{ByteProgress, Event};
use crate::hf::Tokenizer;
use crate::hf::chat::Message;
use crate::hf::source::Body;
use crate::rng::SplitMix64;

/// One training sequence of exactly `seq_len` tokens: a prompt (no loss), the tokens the loss is
/// taken on, and padding (masked out). Kept as ids and two bounds, not as per-token labels and
/// mask, so a large corpus costs 4 bytes per token.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    /// The ids, padding included.
    pub ids: Vec<u32>,
    /// Positions before this are prompt: no loss on them.
    pub prompt: usize,
    /// Positions from this one on are padding: masked out, no loss.
    pub len: usize,
}

impl Example {
    /// A sequence with the loss on every token (continued pretraining).
    pub fn text(ids: Vec<u32>) -> Self {
        let len = ids.len();
        Example {
            ids,
            prompt: 0,
            len,
        }
    }

    /// The label of position `i`: its id where the loss is taken, else `IGNORE`.
    pub fn label(&self, i: usize) -> i64 {
        if (self.prompt..self.len).contains(&i) {
            self.ids[i] as i64
        } else {
            IGNORE
        }
    }

    /// The labels, one per position.
    pub fn labels(&self) -> impl Iterator<Item = i64> + '_ {
        (0..self.ids.len()).map(|i| self.label(i))
    }

    /// The attention mask: false on padding.
    pub fn mask(&self) -> impl Iterator<Item = bool> + '_ {
        (0..self.ids.len()).map(|i| i < self.len)
    }
}

/// How to read a data file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Regime {
    /// Continued pretraining: loss on every token, sequences packed.
    Cpt,
    /// Instruction fine-tuning: loss on response tokens only, one example per line.
    Ift,
}

impl Regime {
    /// The regime a file's first non-empty line implies: plain text, or JSONL whose first record
    /// has `text`, is continued pretraining; other JSONL is instruction tuning.
    fn of_first_line(line: &str, jsonl: bool) -> Self {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_default();
        if !jsonl || v.get("text").is_some() {
            Regime::Cpt
        } else {
            Regime::Ift
        }
    }
}

impl std::fmt::Display for Regime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Regime::Cpt => "cpt",
            Regime::Ift => "ift",
        })
    }
}

impl std::str::FromStr for Regime {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cpt" => Ok(Self::Cpt),
            "ift" => Ok(Self::Ift),
            _ => Err(format!("unknown regime `{s}`; expected cpt or ift")),
        }
    }
}

/// A loaded dataset and what was skipped while reading it.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub examples: Vec<Example>,
    /// Lines skipped (`skip_bad_lines`).
    pub skipped_lines: usize,
    /// Tokens that take part in the loss, over all examples.
    pub target_tokens: usize,
}

/// Options for reading data.
#[derive(Debug, Clone)]
pub struct DataOptions {
    /// How to read the records; `None`: as the first record implies (plain text, or JSONL with
    /// `text`, is continued pretraining; other JSONL instruction tuning).
    pub regime: Option<Regime>,
    pub seq_len: usize,
    pub skip_bad_lines: bool,
    /// Id used for padding instruction examples (usually EOS).
    pub pad_id: u32,
    /// The model's chat template: `messages` records, and instruction pairs as a user turn and
    /// an assistant turn, are rendered with it (the response ends with the template's own
    /// end-of-turn tokens, so no EOS is appended).
    pub chat_template: Option<crate::hf::chat::ChatTemplate>,
}

/// How a data file's bytes are laid out: JSON lines or plain text, gzipped or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Format {
    pub jsonl: bool,
    pub gzip: bool,
}

impl Format {
    /// Uncompressed JSON lines.
    pub const JSONL: Format = Format {
        jsonl: true,
        gzip: false,
    };

    /// The format a file name says: `.jsonl`/`.json` are JSON lines, anything else plain text;
    /// a further `.gz` is gzip.
    pub fn of(name: &str) -> Self {
        let base = name.strip_suffix(".gz");
        let name = base.unwrap_or(name);
        Format {
            jsonl: name.ends_with(".jsonl") || name.ends_with(".json"),
            gzip: base.is_some(),
        }
    }
}

/// Read the data file `path` (format from its name) into examples, reporting progress (bytes of
/// the file read) to `on_event`.
pub fn load(
    path: &std::path::Path,
    tok: &Tokenizer,
    opts: &DataOptions,
    on_event: &mut dyn FnMut(&Event),
) -> Result<Dataset> {
    Ok(load_with_regime(path, tok, opts, on_event)?.0)
}

/// [`load`], also returning the regime the data was read as (given, or found).
pub fn load_with_regime(
    path: &std::path::Path,
    tok: &Tokenizer,
    opts: &DataOptions,
    on_event: &mut dyn FnMut(&Event),
) -> Result<(Dataset, Regime)> {
    let file = open_file(path)?;
    let total = file.metadata().ok().map(|m| m.len());
    let name = path.display().to_string();
    let reader = DataReader::new(&name, Format::of(&name), total, tok, opts.clone(), on_event)?;
    reader.read_all(file)
}

/// Read examples from `reader`, laid out as `format`; `name` is used in messages.
pub fn read(
    reader: impl Read,
    name: &str,
    format: Format,
    tok: &Tokenizer,
    opts: &DataOptions,
) -> Result<Dataset> {
    let mut quiet = |_: &Event| {};
    let data = DataReader::new(name, format, None, tok, opts.clone(), &mut quiet)?;
    Ok(data.read_all(reader)?.0)
}

/// A line reader over a data file, gunzipped when its name ends in `.gz`.
pub fn open(path: &std::path::Path) -> Result<Box<dyn std::io::BufRead>> {
    let file = std::io::BufReader::new(open_file(path)?);
    Ok(if Format::of(&path.to_string_lossy()).gzip {
        Box::new(std::io::BufReader::new(
            flate2::bufread::MultiGzDecoder::new(file),
        ))
    } else {
        Box::new(file)
    })
}

fn open_file(path: &std::path::Path) -> Result<std::fs::File> {
    std::fs::File::open(path).map_err(|e| Error::File {
        path: path.display().to_string(),
        message: format!("data file: {e}"),
    })
}

/// Plain text is tokenized in pieces of about this many bytes, cut at blank lines (or, within a
/// longer line, before a space), so a large corpus is never one giant string in the tokenizer.
const TEXT_PIECE: usize = 1 << 16;

/// The longest JSON line accepted: a longer one is not a record but a damaged file.
const MAX_JSON_LINE: usize = 64 << 20;

/// A data file tokenized as its bytes arrive: [`push`](DataReader::push) each chunk (compressed
/// bytes for a gzipped file), then [`finish`](DataReader::finish). Holds the examples made so
/// far and at most one unfinished line or text piece.
pub struct DataReader<'a> {
    input: Input<'a>,
    name: String,
    progress: ByteProgress<'a>,
}

/// The pushed bytes' way to the line splitter.
enum Input<'a> {
    Plain(Box<Lines<'a>>),
    Gzip(Box<flate2::write::MultiGzDecoder<Lines<'a>>>),
}

impl<'a> DataReader<'a> {
    /// A reader of the file `name` (used in messages) laid out as `format`, of `total` bytes
    /// when known; `on_event` sees the bytes pushed so far.
    pub fn new(
        name: &str,
        format: Format,
        total: Option<u64>,
        tok: &'a Tokenizer,
        opts: DataOptions,
        on_event: &'a mut dyn FnMut(&Event),
    ) -> Result<Self> {
        if opts.seq_len < 2 {
            return Err(Error::setting(
                "seq_len",
                format!("must be at least 2, got {}", opts.seq_len),
            ));
        }
        let lines = Lines {
            pending: Vec::new(),
            failed: None,
            records: Records {
                name: name.to_string(),
                jsonl: format.jsonl,
                tok,
                regime: opts.regime,
                opts,
                line: 1,
                stream: Vec::new(),
                plain: String::new(),
                examples: Vec::new(),
                skipped: 0,
            },
        };
        Ok(DataReader {
            input: if format.gzip {
                Input::Gzip(Box::new(flate2::write::MultiGzDecoder::new(lines)))
            } else {
                Input::Plain(Box::new(lines))
            },
            name: name.to_string(),
            progress: ByteProgress::new(&format!("tokenizing {name}"), total, on_event),
        })
    }

    /// Tokenize the next chunk of the file.
    pub fn push(&mut self, chunk: &[u8]) -> Result<()> {
        match &mut self.input {
            Input::Plain(lines) => lines.take(chunk)?,
            Input::Gzip(gz) => {
                if let Err(e) = gz.write_all(chunk) {
                    return Err(gzip_error(&self.name, gz.get_mut().failed.take(), e));
                }
            }
        }
        self.progress.add(chunk.len());
        Ok(())
    }

    /// The examples, once the last chunk was pushed, and the regime they were read as.
    pub fn finish(mut self) -> Result<(Dataset, Regime)> {
        let lines = match self.input {
            Input::Plain(lines) => *lines,
            Input::Gzip(mut gz) => {
                // A stream cut short fails here: its last block or checksum is missing.
                if let Err(e) = gz.try_finish() {
                    return Err(gzip_error(&self.name, gz.get_mut().failed.take(), e));
                }
                gz.finish().map_err(|e| gzip_error(&self.name, None, e))?
            }
        };
        self.progress.finish();
        lines.finish()
    }

    /// Push everything `reader` yields, then finish.
    pub fn read_all(mut self, mut reader: impl Read) -> Result<(Dataset, Regime)> {
        let mut buf = vec![0u8; TEXT_PIECE];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(Error::File {
                        path: self.name.clone(),
                        message: format!(
                            "reading stopped after {} bytes: {e}",
                            self.progress.done()
                        ),
                    });
                }
            };
            self.push(&buf[..n])?;
        }
        self.finish()
    }

    /// Push each chunk of `body` as it arrives (a download, or a file read in the browser),
    /// then finish.
    pub async fn read_body(mut self, body: &mut dyn Body) -> Result<(Dataset, Regime)> {
        while let Some(chunk) = body.next_chunk().await? {
            self.push(&chunk)?;
        }
        self.finish()
    }
}

/// The error that stopped the gzip decoder: the line splitter's own (`failed`: a bad record),
/// or damaged gzip data.
fn gzip_error(name: &str, failed: Option<Error>, e: std::io::Error) -> Error {
    failed.unwrap_or_else(|| Error::File {
        path: name.to_string(),
        message: format!("not valid gzip: {e}"),
    })
}

/// Splits the (decompressed) bytes into lines for [`Records`]; a `Write` so the gzip decoder
/// can write into it.
struct Lines<'a> {
    /// The start of a line whose end has not arrived yet.
    pending: Vec<u8>,
    /// The error that stopped the splitter while the gzip decoder was writing into it.
    failed: Option<Error>,
    records: Records<'a>,
}

impl Lines<'_> {
    fn take(&mut self, mut bytes: &[u8]) -> Result<()> {
        while let Some(end) = bytes.iter().position(|&b| b == b'\n') {
            if self.pending.is_empty() {
                self.records.line(&bytes[..end])?;
            } else {
                self.pending.extend_from_slice(&bytes[..end]);
                let line = std::mem::take(&mut self.pending);
                self.records.line(&line)?;
                self.pending = line;
                self.pending.clear();
            }
            bytes = &bytes[end + 1..];
        }
        self.pending.extend_from_slice(bytes);
        if self.pending.len() <= TEXT_PIECE {
            return Ok(());
        }
        if self.records.jsonl {
            if self.pending.len() > MAX_JSON_LINE {
                return Err(self.records.bad_input(format!(
                    "longer than {} MiB (not a JSON record)",
                    MAX_JSON_LINE >> 20
                )));
            }
        } else {
            // A text line longer than a piece (a corpus without line breaks) is tokenized in
            // pieces cut before a space, where the pre-tokenizer splits anyway: the last space of
            // the piece, else the first one after it. The cut depends on the text alone, never on
            // how its bytes were chunked. A space is never part of a multi-byte character, so
            // each piece is whole UTF-8.
            while self.pending.len() > TEXT_PIECE {
                let space = |b: &u8| *b == b' ';
                let head = &self.pending[1..=TEXT_PIECE];
                let Some(cut) = head.iter().rposition(space).or_else(|| {
                    let tail = &self.pending[TEXT_PIECE + 1..];
                    tail.iter().position(space).map(|i| i + TEXT_PIECE)
                }) else {
                    break;
                };
                let rest = self.pending.split_off(cut + 1);
                let piece = std::mem::replace(&mut self.pending, rest);
                self.records.text(&piece, false)?;
            }
        }
        Ok(())
    }

    fn finish(mut self) -> Result<(Dataset, Regime)> {
        if !self.pending.is_empty() {
            let line = std::mem::take(&mut self.pending);
            self.records.line(&line)?;
        }
        self.records.finish()
    }
}

impl Write for Lines<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        match self.take(bytes) {
            Ok(()) => Ok(bytes.len()),
            Err(e) => {
                self.failed = Some(e);
                Err(std::io::Error::other("the data could not be read"))
            }
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Turns lines into examples: JSON records one by one, text in pieces; continued-pretraining
/// tokens are packed into blocks as they come.
struct Records<'a> {
    name: String,
    jsonl: bool,
    tok: &'a Tokenizer,
    opts: DataOptions,
    regime: Option<Regime>,
    /// The number of the line being read (1-based).
    line: usize,
    /// Continued-pretraining tokens not yet packed (less than one block between lines).
    stream: Vec<u32>,
    /// Plain text not yet tokenized.
    plain: String,
    examples: Vec<Example>,
    skipped: usize,
}

impl Records<'_> {
    /// An input error naming the file and the current line.
    fn bad_input(&self, message: String) -> Error {
        Error::Input(format!("{}: line {}: {message}", self.name, self.line))
    }

    /// One line, without its line break (`\n`, or `\r\n`).
    fn line(&mut self, bytes: &[u8]) -> Result<()> {
        let read = self.read_line(bytes);
        self.line += 1;
        read
    }

    fn read_line(&mut self, bytes: &[u8]) -> Result<()> {
        let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
        let line = match std::str::from_utf8(bytes) {
            Ok(line) => line,
            Err(e) => return self.bad_record(format!("not valid UTF-8 ({e})")),
        };
        if self.regime.is_none() && !line.trim().is_empty() {
            self.regime = Some(Regime::of_first_line(line, self.jsonl));
        }
        if !self.jsonl {
            // Cut at a blank line once a piece is full, at any line once it is well over.
            let blank = line.trim().is_empty();
            if self.plain.len() >= TEXT_PIECE && (blank || self.plain.len() >= 4 * TEXT_PIECE) {
                self.flush_text()?;
            }
            return self.text(line.as_bytes(), true);
        }
        if line.trim().is_empty() {
            return Ok(());
        }
        let record = match parse_line(line, self.regime.unwrap_or(Regime::Cpt), &self.opts) {
            Ok(r) => r,
            Err(message) => return self.bad_record(message),
        };
        let tok = self.tok;
        match record {
            Record::Text(t) => {
                self.stream.extend(tok.encode(&t)?);
                self.stream.extend(tok.eos_id);
                self.pack();
            }
            Record::Pair(prompt, response) => {
                let e = instruction(
                    &tok.encode(&prompt)?,
                    &tok.encode(&response)?,
                    tok.eos_id,
                    &self.opts,
                );
                self.examples.push(e);
            }
            // The template wrote every special token itself (transformers tokenizes rendered
            // chats with add_special_tokens=False).
            Record::Chat(prompt, response) => {
                let e = instruction(
                    &tok.encode_plain(&prompt)?,
                    &tok.encode_plain(&response)?,
                    None,
                    &self.opts,
                );
                self.examples.push(e);
            }
        }
        Ok(())
    }

    /// A line that is not a record: skipped when `skip_bad_lines` says so, else the error.
    fn bad_record(&mut self, message: String) -> Result<()> {
        if self.opts.skip_bad_lines && self.jsonl {
            log::warn!("{}: line {}: {message} (skipped)", self.name, self.line);
            self.skipped += 1;
            return Ok(());
        }
        let hint = if self.jsonl {
            " (set `skip_bad_lines` to skip such lines)"
        } else {
            ""
        };
        Err(self.bad_input(format!("{message}{hint}")))
    }

    /// Plain text: a line (`newline`: its break is kept) or a piece of a long line.
    fn text(&mut self, bytes: &[u8], newline: bool) -> Result<()> {
        match std::str::from_utf8(bytes) {
            Ok(text) => self.plain.push_str(text),
            Err(e) => return self.bad_record(format!("not valid UTF-8 ({e})")),
        }
        if newline {
            self.plain.push('\n');
        } else {
            self.flush_text()?;
        }
        Ok(())
    }

    fn flush_text(&mut self) -> Result<()> {
        self.stream.extend(self.tok.encode(&self.plain)?);
        self.plain.clear();
        self.pack();
        Ok(())
    }

    /// Pack the continued-pretraining tokens into full blocks, keeping the rest for later.
    fn pack(&mut self) {
        let seq = self.opts.seq_len;
        let full = self.stream.len() / seq * seq;
        let blocks = self.stream[..full].chunks_exact(seq);
        self.examples
            .extend(blocks.map(|block| Example::text(block.to_vec())));
        self.stream.drain(..full);
    }

    fn finish(mut self) -> Result<(Dataset, Regime)> {
        if !self.plain.is_empty() {
            self.flush_text()?;
            self.stream.extend(self.tok.eos_id);
            self.pack();
        }
        // The tail shorter than a block is dropped, as transformers' run_clm does.
        if self.examples.is_empty() {
            return Err(Error::Input(format!(
                "{}: no training examples (empty file, or fewer than `seq_len` ({}) tokens)",
                self.name, self.opts.seq_len
            )));
        }
        let target_tokens = self.examples.iter().map(targets).sum();
        let data = Dataset {
            examples: self.examples,
            skipped_lines: self.skipped,
            target_tokens,
        };
        Ok((data, self.regime.unwrap_or(Regime::Cpt)))
    }
}

impl Dataset {
    /// Hold out `fraction` of the examples (a seeded random choice, at least one, and at least
    /// one left to train on): the learning metric for data that comes without a test set.
    /// Returns the held-out examples; `self` keeps the rest in their original order.
    pub fn hold_out(&mut self, fraction: f64, seed: u64) -> Result<Dataset> {
        let n = self.examples.len();
        if n < 2 {
            return Err(Error::setting(
                "holdout",
                format!("the data has {n} example(s); holding some out needs at least 2"),
            ));
        }
        let k = ((n as f64 * fraction).round() as usize).clamp(1, n - 1);
        let mut order: Vec<usize> = (0..n).collect();
        SplitMix64(seed ^ 0x486f_6c64_4f75_7421).shuffle(&mut order);
        let mut held = vec![false; n];
        for &i in &order[..k] {
            held[i] = true;
        }
        let (mut kept, mut out) = (Vec::with_capacity(n - k), Vec::with_capacity(k));
        for (e, h) in std::mem::take(&mut self.examples).into_iter().zip(held) {
            if h { out.push(e) } else { kept.push(e) }
        }
        self.examples = kept;
        self.target_tokens = self.examples.iter().map(targets).sum();
        Ok(Dataset {
            target_tokens: out.iter().map(targets).sum(),
            examples: out,
            skipped_lines: 0,
        })
    }
}

/// Tokens of an example that take part in the loss (labels shifted by one).
pub fn targets(e: &Example) -> usize {
    e.len.saturating_sub(e.prompt.max(1))
}

enum Record {
    Text(String),
    Pair(String, String),
    /// Prompt and response rendered by the chat template (end-of-turn tokens included).
    Chat(String, String),
}

fn parse_line(line: &str, regime: Regime, opts: &DataOptions) -> Result<Record, String> {
    let v: serde_json::Value =
        serde_json::from_str(line).map_err(|e| format!("not valid JSON: {e}"))?;
    let s = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
    match regime {
        Regime::Cpt => s("text")
            .map(Record::Text)
            .ok_or_else(|| "missing string field `text`".to_string()),
        Regime::Ift => {
            let pair = if let (Some(p), Some(r)) = (s("prompt"), s("response")) {
                Some((p, r))
            } else if let (Some(q), Some(a)) = (s("question"), s("answer")) {
                // GSM8K layout, in the prompt format the gsm8k evaluation uses.
                Some((format!("Question: {q}\nAnswer:"), format!(" {a}")))
            } else if let (Some(ins), Some(out)) = (s("instruction"), s("output")) {
                let input = s("input").unwrap_or_default();
                let prompt = if input.is_empty() {
                    ins
                } else {
                    format!("{ins}\n\n{input}")
                };
                Some((format!("{prompt}\n"), out))
            } else {
                None
            };
            if let Some((prompt, response)) = pair {
                return match &opts.chat_template {
                    // A chat model is tuned on the pair as a user turn and its answer, the way
                    // it was instruction-tuned and is prompted (whitespace that only separated
                    // the two in plain text is dropped).
                    Some(chat) => {
                        let turns = [
                            Message::user(prompt.trim()),
                            Message::assistant(response.trim()),
                        ];
                        let (p, r) = chat.split_last_turn(&turns).map_err(|e| e.to_string())?;
                        Ok(Record::Chat(p, r))
                    }
                    None => Ok(Record::Pair(prompt, response)),
                };
            }
            if let (Some(msgs), Some(chat)) = (v.get("messages"), &opts.chat_template) {
                let msgs: Vec<Message> =
                    serde_json::from_value(msgs.clone()).map_err(|e| format!("`messages`: {e}"))?;
                let (prompt, response) = chat.split_last_turn(&msgs).map_err(|e| e.to_string())?;
                return Ok(Record::Chat(prompt, response));
            }
            if let Some(msgs) = v.get("messages").and_then(|m| m.as_array()) {
                // Without a chat template: "role: content" lines; the last assistant turn is the
                // response.
                let mut turns: Vec<(String, String)> = msgs
                    .iter()
                    .filter_map(|m| {
                        Some((
                            m.get("role")?.as_str()?.to_string(),
                            m.get("content")?.as_str()?.to_string(),
                        ))
                    })
                    .collect();
                match turns.pop() {
                    Some((role, content)) if role == "assistant" => {
                        let mut prompt: String =
                            turns.iter().map(|(r, c)| format!("{r}: {c}\n")).collect();
                        prompt.push_str("assistant: ");
                        return Ok(Record::Pair(prompt, content));
                    }
                    _ => return Err("`messages` must end with an assistant turn".into()),
                }
            }
            Err("needs `prompt`/`response`, `question`/`answer`, `instruction`/`output` or `messages`".into())
        }
    }
}

/// Prompt + response + EOS, truncated (response last) and right-padded to `seq_len`.
fn instruction(prompt: &[u32], response: &[u32], eos: Option<u32>, opts: &DataOptions) -> Example {
    let mut ids: Vec<u32> = [prompt, response].concat();
    ids.extend(eos);
    ids.truncate(opts.seq_len);
    let len = ids.len();
    ids.resize(opts.seq_len, opts.pad_id);
    Example {
        ids,
        prompt: prompt.len().min(len),
        len,
    }
}

/// Epoch-wise shuffled order of example indices, reproducible from the seed.
pub fn epoch_order(n: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    SplitMix64(seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)).shuffle(&mut order);
    order
}

/// A batch on the device.
pub struct Batch {
    pub ids: Tensor<2, Int>,
    pub labels: Tensor<2, Int>,
    pub mask: Tensor<2, Bool>,
    /// Targets that count in the loss.
    pub targets: usize,
    /// Real (non-padding) tokens.
    pub tokens: usize,
}

/// Stack examples into a batch on `device`.
pub fn collate(examples: &[&Example], device: &Device) -> Batch {
    let (b, t) = (examples.len(), examples[0].ids.len());
    let ids: Vec<i64> = examples
        .iter()
        .flat_map(|e| e.ids.iter().map(|&i| i as i64))
        .collect();
    let labels: Vec<i64> = examples.iter().flat_map(|e| e.labels()).collect();
    let mask: Vec<bool> = examples.iter().flat_map(|e| e.mask()).collect();
    let tokens = mask.iter().filter(|&&m| m).count();
    Batch {
        ids: Tensor::from_data(TensorData::new(ids, [b, t]), device),
        labels: Tensor::from_data(TensorData::new(labels, [b, t]), device),
        mask: Tensor::from_data(TensorData::new(mask, [b, t]), device),
        targets: examples.iter().map(|e| targets(e)).sum(),
        tokens,
    }
}
