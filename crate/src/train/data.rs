//! Training data: plain text or JSONL `text` for continued pretraining (tokenized, EOS appended,
//! concatenated and packed into fixed-length blocks), and prompt/response JSONL for instruction
//! tuning (loss on response tokens only). Files are read line by line; what is kept in memory is
//! the token ids.

use std::io::BufRead;

use burn::tensor::{Bool, Device, Int, Tensor, TensorData};

use super::loss::IGNORE;
use crate::error::{Error, Result};
use crate::event::{Event, ProgressReader};
use crate::hf::Tokenizer;
use crate::rng::SplitMix64;

/// One training sequence of exactly `seq_len` tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    pub ids: Vec<u32>,
    /// `IGNORE` where no loss is taken (prompt, padding).
    pub labels: Vec<i64>,
    /// false on padding.
    pub mask: Vec<bool>,
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
    /// Guess from a file: plain text, or JSONL whose first record has `text`, is continued
    /// pretraining; other JSONL is instruction tuning.
    pub fn detect(path: &std::path::Path) -> Result<Self> {
        Ok(Self::detect_in(open(path)?, is_jsonl(path)))
    }

    /// [`Regime::detect`] over a reader of the (decompressed) contents.
    pub fn detect_in(reader: impl BufRead, jsonl: bool) -> Self {
        if !jsonl {
            return Regime::Cpt;
        }
        for line in reader.lines().map_while(|l| l.ok()) {
            if line.trim().is_empty() {
                continue;
            }
            let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
            return if v.get("text").is_some() {
                Regime::Cpt
            } else {
                Regime::Ift
            };
        }
        Regime::Cpt
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

/// Options for [`load`].
#[derive(Debug, Clone)]
pub struct DataOptions {
    pub regime: Regime,
    pub seq_len: usize,
    pub skip_bad_lines: bool,
    /// Id used for padding instruction examples (usually EOS).
    pub pad_id: u32,
    /// The model's chat template: `messages` records are rendered with it (the response ends
    /// with the template's own end-of-turn tokens, so no EOS is appended).
    pub chat_template: Option<crate::hf::chat::ChatTemplate>,
}

/// Read `path` (`.jsonl` → JSON lines, anything else → plain text; `.gz` is decompressed) into
/// examples, reporting progress (bytes of the file read and tokenized) to `on_event`.
pub fn load(
    path: &std::path::Path,
    tok: &Tokenizer,
    opts: &DataOptions,
    on_event: &mut dyn FnMut(&Event),
) -> Result<Dataset> {
    let file = open_file(path)?;
    let total = file.metadata().ok().map(|m| m.len());
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let counted = ProgressReader::new(
        std::io::BufReader::new(file),
        &format!("tokenizing {name}"),
        total,
        on_event,
    );
    read(
        decode(path, counted),
        &path.display().to_string(),
        is_jsonl(path),
        tok,
        opts,
    )
}

/// A line reader over a data file, gunzipped when its name ends in `.gz`.
pub fn open(path: &std::path::Path) -> Result<Box<dyn BufRead>> {
    Ok(decode(path, std::io::BufReader::new(open_file(path)?)))
}

fn open_file(path: &std::path::Path) -> Result<std::fs::File> {
    std::fs::File::open(path).map_err(|e| Error::File {
        path: path.display().to_string(),
        message: format!("data file: {e}"),
    })
}

/// `reader` gunzipped when `path` ends in `.gz`.
pub fn decode<'a>(path: &std::path::Path, reader: impl BufRead + 'a) -> Box<dyn BufRead + 'a> {
    if path.extension().is_some_and(|e| e == "gz") {
        Box::new(std::io::BufReader::new(flate2::bufread::GzDecoder::new(
            reader,
        )))
    } else {
        Box::new(reader)
    }
}

/// Whether a data file is JSON lines (`.jsonl`/`.json`, also under `.gz`).
pub fn is_jsonl(path: &std::path::Path) -> bool {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let name = name.strip_suffix(".gz").unwrap_or(&name);
    name.ends_with(".jsonl") || name.ends_with(".json")
}

/// Plain text is tokenized in pieces of about this many bytes, cut at blank lines, so a large
/// corpus is never one giant string in the tokenizer.
const TEXT_PIECE: usize = 1 << 16;

/// Read examples from any line reader; `name` is used in messages.
pub fn read(
    reader: impl BufRead,
    name: &str,
    jsonl: bool,
    tok: &Tokenizer,
    opts: &DataOptions,
) -> Result<Dataset> {
    if opts.seq_len < 2 {
        return Err(Error::setting(
            "seq_len",
            format!("must be at least 2, got {}", opts.seq_len),
        ));
    }
    let eos = tok.eos_id;
    let mut stream: Vec<u32> = Vec::new();
    let mut examples = Vec::new();
    let mut skipped = 0usize;
    let mut plain = String::new();
    for (i, line) in reader.lines().enumerate() {
        let line = line.map_err(|e| Error::Input(format!("{name}: line {}: {e}", i + 1)))?;
        if !jsonl {
            if line.trim().is_empty() && plain.len() >= TEXT_PIECE {
                stream.extend(tok.encode(&plain)?);
                plain.clear();
            }
            plain.push_str(&line);
            plain.push('\n');
            continue;
        }
        if line.trim().is_empty() {
            continue;
        }
        let parsed = parse_line(&line, opts);
        let record = match parsed {
            Ok(r) => r,
            Err(msg) if opts.skip_bad_lines => {
                log::warn!("{name}: line {}: {msg} (skipped)", i + 1);
                skipped += 1;
                continue;
            }
            Err(msg) => {
                return Err(Error::Input(format!(
                    "{name}: line {}: {msg} (set `skip_bad_lines` to skip such lines)",
                    i + 1
                )));
            }
        };
        match record {
            Record::Text(t) => {
                stream.extend(tok.encode(&t)?);
                stream.extend(eos);
            }
            Record::Pair(prompt, response) => {
                examples.push(instruction(
                    &tok.encode(&prompt)?,
                    &tok.encode(&response)?,
                    eos,
                    opts,
                ));
            }
            // The template wrote every special token itself (transformers tokenizes rendered
            // chats with add_special_tokens=False).
            Record::Chat(prompt, response) => {
                examples.push(instruction(
                    &tok.encode_plain(&prompt)?,
                    &tok.encode_plain(&response)?,
                    None,
                    opts,
                ));
            }
        }
    }
    if !plain.is_empty() {
        stream.extend(tok.encode(&plain)?);
        stream.extend(eos);
    }
    // Pack the continued-pretraining stream into full blocks; the tail shorter than a block is
    // dropped, as transformers' run_clm does.
    for block in stream.chunks_exact(opts.seq_len) {
        examples.push(Example {
            ids: block.to_vec(),
            labels: block.iter().map(|&i| i as i64).collect(),
            mask: vec![true; opts.seq_len],
        });
    }
    if examples.is_empty() {
        return Err(Error::Input(format!(
            "{name}: no training examples (empty file, or fewer than `seq_len` ({}) tokens)",
            opts.seq_len
        )));
    }
    let target_tokens = examples.iter().map(targets).sum();
    Ok(Dataset {
        examples,
        skipped_lines: skipped,
        target_tokens,
    })
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
    e.labels[1..].iter().filter(|&&l| l != IGNORE).count()
}

enum Record {
    Text(String),
    Pair(String, String),
    /// Prompt and response rendered by the chat template (end-of-turn tokens included).
    Chat(String, String),
}

fn parse_line(line: &str, opts: &DataOptions) -> Result<Record, String> {
    let regime = opts.regime;
    let v: serde_json::Value =
        serde_json::from_str(line).map_err(|e| format!("not valid JSON: {e}"))?;
    let s = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
    match regime {
        Regime::Cpt => s("text")
            .map(Record::Text)
            .ok_or_else(|| "missing string field `text`".to_string()),
        Regime::Ift => {
            if let (Some(p), Some(r)) = (s("prompt"), s("response")) {
                return Ok(Record::Pair(p, r));
            }
            if let (Some(q), Some(a)) = (s("question"), s("answer")) {
                // GSM8K layout, in the prompt format the gsm8k evaluation uses.
                return Ok(Record::Pair(
                    format!("Question: {q}\nAnswer:"),
                    format!(" {a}"),
                ));
            }
            if let (Some(ins), Some(out)) = (s("instruction"), s("output")) {
                let input = s("input").unwrap_or_default();
                let prompt = if input.is_empty() {
                    ins
                } else {
                    format!("{ins}\n\n{input}")
                };
                return Ok(Record::Pair(format!("{prompt}\n"), out));
            }
            if let (Some(msgs), Some(chat)) = (v.get("messages"), &opts.chat_template) {
                let msgs: Vec<crate::hf::chat::Message> =
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
    let mut ids: Vec<u32> = prompt.to_vec();
    let mut labels: Vec<i64> = vec![IGNORE; prompt.len()];
    ids.extend(response);
    labels.extend(response.iter().map(|&i| i as i64));
    if let Some(e) = eos {
        ids.push(e);
        labels.push(e as i64);
    }
    ids.truncate(opts.seq_len);
    labels.truncate(opts.seq_len);
    let real = ids.len();
    ids.resize(opts.seq_len, opts.pad_id);
    labels.resize(opts.seq_len, IGNORE);
    let mut mask = vec![true; real];
    mask.resize(opts.seq_len, false);
    Example { ids, labels, mask }
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
    let labels: Vec<i64> = examples
        .iter()
        .flat_map(|e| e.labels.iter().copied())
        .collect();
    let mask: Vec<bool> = examples
        .iter()
        .flat_map(|e| e.mask.iter().copied())
        .collect();
    let tokens = mask.iter().filter(|&&m| m).count();
    Batch {
        ids: Tensor::from_data(TensorData::new(ids, [b, t]), device),
        labels: Tensor::from_data(TensorData::new(labels, [b, t]), device),
        mask: Tensor::from_data(TensorData::new(mask, [b, t]), device),
        targets: examples.iter().map(|e| targets(e)).sum(),
        tokens,
    }
}
