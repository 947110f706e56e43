//! The bodies of tunelab's fuzz targets: each feeds arbitrary bytes to one parser the way a
//! user's file would reach it, and panics only on a bug (a parser panic, or a property the
//! parser must keep, such as chunked and whole-file parsing agreeing). `cargo fuzz` drives them
//! on nightly (`scripts/fuzz.sh`); `crate/tests/fuzz_regressions.rs` runs the same functions on
//! stable over the seed corpora and every minimised crash.

use std::collections::BTreeMap;

use burn::tensor::Device;
use tunelab::hf::safetensors::TensorStream;
use tunelab::hf::{MemoryFiles, ModelConfig, Tokenizer};
use tunelab::train::data::{self, DataOptions, DataReader, Format, Regime};

/// A fuzz target's body.
pub type Target = fn(&[u8]);

/// Every fuzz target by name, for the regression runner.
pub const TARGETS: &[(&str, Target)] = &[
    ("safetensors", safetensors),
    ("shard_index", shard_index),
    ("config", config),
    ("tokenizer", tokenizer),
    ("data", data_file),
    ("experiment", experiment),
    ("run_spec", run_spec),
    ("peft", peft),
    ("gguf", gguf),
];

/// Chunk sizes a streamed file arrives in, cycled: single bytes, odd sizes and large reads, so
/// every boundary inside a header or a tensor is crossed.
const CHUNKS: &[usize] = &[1, 7, 64, 3, 4096, 1 << 16];

/// Each tensor as (name, shape or dims, value bits), for comparing two parses exactly.
type Parsed = Vec<(String, Vec<u64>, Vec<u32>)>;

/// A safetensors file streamed in small chunks must parse exactly as the whole file does.
pub fn safetensors(bytes: &[u8]) {
    let whole = safetensors_in(bytes, &[usize::MAX]);
    let chunked = safetensors_in(bytes, CHUNKS);
    assert_eq!(whole, chunked, "chunked and whole-file parses differ");
}

fn safetensors_in(bytes: &[u8], chunks: &[usize]) -> Option<Parsed> {
    let mut stream = TensorStream::new("fuzz.safetensors", Some(bytes.len() as u64));
    let mut out = Vec::new();
    in_chunks(bytes, chunks, |piece| {
        stream.push(piece, &mut |_| Ok(()), &mut |t| {
            let shape = t.info.shape.iter().map(|&d| d as u64).collect();
            out.push((t.info.name, shape, bits(&t.values)));
            Ok(())
        })
    })?;
    stream.finish().ok()?;
    Some(out)
}

/// Feed `bytes` to `push` in pieces of the sizes `chunks` cycles through; `None` at the first
/// error.
fn in_chunks<E>(
    bytes: &[u8],
    chunks: &[usize],
    mut push: impl FnMut(&[u8]) -> Result<(), E>,
) -> Option<()> {
    let mut rest = bytes;
    for &n in chunks.iter().cycle() {
        if rest.is_empty() {
            return Some(());
        }
        let (piece, tail) = rest.split_at(n.min(rest.len()));
        rest = tail;
        push(piece).ok()?;
    }
    Some(())
}

fn bits(values: &[f32]) -> Vec<u32> {
    values.iter().map(|v| v.to_bits()).collect()
}

/// `model.safetensors.index.json` as a checkpoint's layout.
pub fn shard_index(bytes: &[u8]) {
    let files = MemoryFiles(BTreeMap::from([(
        "model.safetensors.index.json".to_string(),
        bytes.to_vec(),
    )]));
    if let Ok(layout) = pollster::block_on(tunelab::hf::checkpoint::layout(&files)) {
        assert!(!layout.shards.is_empty());
    }
}

/// `config.json` as a model configuration, and everything derived from it without building.
pub fn config(bytes: &[u8]) {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    if let Ok(c) = ModelConfig::parse(text, "config.json") {
        let _ = (c.vocab_size(), c.max_positions());
        if let tunelab::hf::Architecture::Llama(l) = &c.arch {
            let _ = l.context_length();
            for i in 0..c.num_layers().min(256) {
                let _ = l.window_of(i);
            }
        }
    }
}

/// `tokenizer.json`, then a round trip of a sample through it.
pub fn tokenizer(bytes: &[u8]) {
    if let Ok(tok) = Tokenizer::from_bytes(bytes, "tokenizer.json") {
        if let Ok(ids) = tok.encode("def f(x):\n    return x + 1  # héllo, 世界 🙂") {
            let _ = tok.decode(&ids);
        }
        let _ = tok.vocab_size();
    }
}

/// The tokenizer data files are read with in the data targets.
fn data_tokenizer() -> Tokenizer {
    Tokenizer::from_bytes(
        include_bytes!("../../tests/fixtures/tokenizer.json"),
        "tokenizer.json",
    )
    .expect("the fixture tokenizer loads")
}

/// A training data file (plain text, or JSON lines when it starts with `{`; gzip when it starts
/// with gzip's magic), read for continued pretraining and for instruction tuning, strict and
/// skipping bad lines.
pub fn data_file(bytes: &[u8]) {
    thread_local! { static TOK: Tokenizer = data_tokenizer(); }
    let gz = bytes.starts_with(&[0x1f, 0x8b]);
    let jsonl = !gz && bytes.trim_ascii_start().starts_with(b"{");
    let name = match (jsonl, gz) {
        (true, _) => "fuzz.jsonl",
        (false, true) => "fuzz.jsonl.gz",
        (false, false) => "fuzz.txt",
    };
    TOK.with(|tok| {
        for regime in [None, Some(Regime::Cpt), Some(Regime::Ift)] {
            for skip_bad_lines in [false, true] {
                let opts = DataOptions {
                    regime,
                    seq_len: 16,
                    skip_bad_lines,
                    pad_id: 0,
                    chat_template: None,
                };
                let whole = data::read(bytes, name, Format::of(name), tok, &opts);
                if let Ok(d) = &whole {
                    for e in &d.examples {
                        assert_eq!(e.ids.len(), 16, "examples are padded to seq_len");
                    }
                }
                // Bytes arriving in small chunks (a download) read exactly as the whole file.
                let mut quiet = |_: &tunelab::Event| {};
                let chunked = DataReader::new(name, Format::of(name), None, tok, opts, &mut quiet)
                    .and_then(|mut r| {
                        bytes.chunks(3).try_for_each(|c| r.push(c))?;
                        r.finish()
                    });
                match (whole, chunked) {
                    (Ok(a), Ok((b, _))) => assert_eq!(a.examples, b.examples),
                    (Err(_), Err(_)) => {}
                    (a, b) => panic!("whole: {:?}, chunked: {:?}", a.err(), b.err()),
                }
            }
        }
    });
}

/// An experiment TOML.
pub fn experiment(bytes: &[u8]) {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    if let Ok(c) = tunelab::experiment::ExperimentConfig::parse(text, "fuzz.toml") {
        let _ = c.run_seeds();
        for m in &c.methods {
            let _ = c.lr(m);
        }
    }
}

/// A run spec (JSON or TOML), as `tunelab train --spec` reads it.
pub fn run_spec(bytes: &[u8]) {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    if let Ok(spec) = tunelab::RunSpec::parse(text, "spec.toml")
        && spec.validate().is_ok()
    {
        let _ = spec.train_config(100);
    }
}

/// A PEFT adapter: `adapter_config.json`, a NUL byte, then `adapter_model.safetensors` (JSON
/// cannot hold a raw NUL, so the split is unambiguous), attached to a tiny Llama.
pub fn peft(bytes: &[u8]) {
    thread_local! {
        static MODEL: tunelab::model::CausalLm = {
            let config = ModelConfig::parse(
                include_str!("../../tests/fixtures/llama-gqa/config.json"),
                "config.json",
            )
            .expect("fixture config");
            tunelab::model::init_random(&config, &Device::flex(), 0.02, 0).expect("tiny model")
        };
    }
    let cut = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    let weights = bytes.get(cut + 1..).unwrap_or_default();
    let files = MemoryFiles(BTreeMap::from([
        ("adapter_config.json".to_string(), bytes[..cut].to_vec()),
        ("adapter_model.safetensors".to_string(), weights.to_vec()),
    ]));
    let Ok(adapter) = pollster::block_on(tunelab::model::lora::read_peft(&files)) else {
        return;
    };
    MODEL.with(|model| {
        let mut model = model.clone();
        let _ = tunelab::model::lora::from_peft(&mut model, &adapter, "fuzz", &Device::flex());
    });
}

/// A GGUF file streamed in small chunks must parse exactly as the whole file does; a parsed
/// header goes on to the Hugging Face config, tokenizer and tokenizer config built from it.
pub fn gguf(bytes: &[u8]) {
    let whole = gguf_in(bytes, &[usize::MAX]);
    let chunked = gguf_in(bytes, CHUNKS);
    assert_eq!(
        whole.as_ref().map(|w| &w.1),
        chunked.as_ref().map(|c| &c.1),
        "chunked and whole-file parses differ"
    );
    if let Some((h, _)) = whole {
        let _ = tunelab::gguf::llama::config_json(&h, "fuzz.gguf");
        let _ = tunelab::gguf::tokenizer::tokenizer_json(&h, "fuzz.gguf");
        let _ = tunelab::gguf::tokenizer::tokenizer_config_json(&h);
    }
}

fn gguf_in(bytes: &[u8], chunks: &[usize]) -> Option<(tunelab::gguf::Header, Parsed)> {
    let mut stream = tunelab::gguf::GgufStream::new("fuzz.gguf", Some(bytes.len() as u64));
    let mut out = Vec::new();
    let mut on_tensor =
        |_: &tunelab::gguf::Header, info: &tunelab::gguf::TensorInfo, values: Vec<f32>| {
            out.push((info.name.clone(), info.dims.clone(), bits(&values)));
            Ok(())
        };
    in_chunks(bytes, chunks, |piece| {
        stream.push(piece, &mut |_| Ok(()), &mut on_tensor)
    })?;
    stream.end(&mut |_| Ok(()), &mut on_tensor).ok()?;
    Some((stream.finish().ok()?, out))
}
