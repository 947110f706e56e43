//! Pretraining a small Llama from scratch: train a byte-level BPE tokenizer on the corpora, build a
//! randomly initialised model, train every weight (embeddings and head included) on the source
//! corpus, and return the Hugging Face checkpoint (sharded) with its `tokenizer.json`. This is how
//! the bundled base model in `models/tunelab-base` is made, so anyone can rebuild it.

use std::io::BufRead;
use std::path::PathBuf;

use burn::tensor::Device;

use crate::corpus::tokenizer::{EOS, train_bpe};
use crate::error::{Error, Result};
use crate::event::Event;
use crate::files::File;
use crate::hf::{ModelConfig, Tokenizer};
use crate::run::{MethodKind, Run, RunSpec};
use crate::session::Session;
use crate::train::MemorySink;
use crate::train::data::{self, DataOptions, Regime};
use crate::train::schedule::Schedule;
use crate::train::trainer::Summary;

/// Everything that determines a pretrained model (same settings, same backend → same weights).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PretrainConfig {
    /// Source-domain text the model is trained on (`.txt`, `.txt.gz`, JSONL `text`).
    pub corpus: PathBuf,
    /// Texts the tokenizer is trained on (the corpus plus target domains, as a general-purpose
    /// tokenizer would have seen them).
    pub tokenizer_corpora: Vec<PathBuf>,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub max_position_embeddings: usize,
    pub seq_len: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub weight_decay: f64,
    /// Fraction of the steps spent warming up.
    pub warmup: f64,
    /// Training tokens (the run stops there; the schedule is cosine over them).
    pub max_tokens: u64,
    pub seed: u64,
    /// Largest safetensors shard in bytes.
    pub max_shard: usize,
}

impl Default for PretrainConfig {
    fn default() -> Self {
        PretrainConfig {
            corpus: "data/english/train.txt.gz".into(),
            tokenizer_corpora: vec![
                "data/english/train.txt.gz".into(),
                "data/code/train.txt.gz".into(),
            ],
            vocab_size: 4096,
            hidden_size: 192,
            intermediate_size: 512,
            num_hidden_layers: 4,
            num_attention_heads: 4,
            num_key_value_heads: 2,
            max_position_embeddings: 512,
            seq_len: 256,
            batch_size: 8,
            lr: 2e-3,
            weight_decay: 0.1,
            warmup: 0.02,
            max_tokens: 3_000_000,
            seed: 0,
            max_shard: 4 << 20,
        }
    }
}

impl PretrainConfig {
    /// The `config.json` of the model these settings build (a transformers `LlamaForCausalLM`).
    pub fn config_json(&self, vocab_size: usize) -> String {
        let c = serde_json::json!({
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "vocab_size": vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "max_position_embeddings": self.max_position_embeddings,
            "hidden_act": "silu",
            "rms_norm_eps": 1e-5,
            "rope_theta": 10000.0,
            "attention_bias": false,
            "mlp_bias": false,
            "tie_word_embeddings": false,
            "initializer_range": 0.02,
            "bos_token_id": 0,
            "eos_token_id": 0,
            "dtype": "float32",
        });
        serde_json::to_string_pretty(&c).expect("JSON value")
    }
}

/// Pieces of a text file for tokenizer training: paragraphs (blank-line separated) grouped into
/// chunks of a few KiB.
fn pieces(path: &std::path::Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in data::open(path)?.lines() {
        let line = line.map_err(|e| Error::Input(format!("{}: {e}", path.display())))?;
        cur.push_str(&line);
        cur.push('\n');
        if line.trim().is_empty() && cur.len() > 4096 {
            out.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    Ok(out)
}

/// What [`pretrain`] produced.
pub struct Pretrained {
    /// config.json, shards + index, tokenizer.json, pretrain.json (settings and summary).
    pub files: Vec<File>,
    pub summary: Summary,
}

/// Run the whole pipeline on `device` (an autodiff device). Events: notices for each phase, then
/// the trainer's `Step` events.
pub async fn pretrain(
    cfg: &PretrainConfig,
    device: Device,
    on_event: &mut dyn FnMut(&Event),
) -> Result<Pretrained> {
    let notice =
        |on_event: &mut dyn FnMut(&Event), m: String| on_event(&Event::Notice { message: m });
    notice(
        on_event,
        format!("training a {}-token BPE tokenizer", cfg.vocab_size),
    );
    let mut texts = Vec::new();
    for p in &cfg.tokenizer_corpora {
        texts.extend(pieces(p)?);
    }
    let tok_bytes = train_bpe(texts.into_iter(), cfg.vocab_size)?;
    let tok = Tokenizer::from_bytes(&tok_bytes, "tokenizer.json")?;
    let config_json = cfg.config_json(tok.vocab_size());
    let config = ModelConfig::parse(&config_json, "config.json")?;
    let opts = DataOptions {
        regime: Regime::Cpt,
        seq_len: cfg.seq_len,
        skip_bad_lines: false,
        pad_id: tok.eos_id.unwrap_or(0),
        chat_template: None,
    };
    let dataset = data::load(&cfg.corpus, &tok, &opts, on_event)?;
    let corpus_tokens = dataset.examples.len() * cfg.seq_len;
    notice(
        on_event,
        format!(
            "{corpus_tokens} corpus tokens; training {} tokens ({:.1} epochs)",
            cfg.max_tokens,
            cfg.max_tokens as f64 / corpus_tokens as f64
        ),
    );
    let model = crate::model::init_random(&config, &device, 0.02, cfg.seed)?;
    let session = Session::from_model(model, device, &config_json, tok_bytes.clone(), "scratch")?;
    let spec = RunSpec {
        method: MethodKind::Full,
        train_embeddings: true,
        lr: Some(cfg.lr),
        weight_decay: cfg.weight_decay,
        schedule: Schedule::Cosine,
        warmup: cfg.warmup,
        max_tokens: Some(cfg.max_tokens),
        batch_size: cfg.batch_size,
        seq_len: cfg.seq_len,
        seed: cfg.seed,
        log_every: 10,
        ..RunSpec::default()
    };
    let mut run = Run::new(&session, &spec, dataset, None, None)?;
    // Only the final weights are kept; the run's own checkpoint (with optimizer) is dropped.
    let summary = run
        .train_until(None, &mut MemorySink::default(), on_event)
        .await?;
    let mut files = crate::export::hf_files(&run.model(), &config_json, cfg.max_shard).await?;
    files.push(File::new("tokenizer.json", tok_bytes));
    let record = serde_json::json!({
        "tool": "tunelab pretrain",
        "eos_token": EOS,
        "settings": cfg,
        "corpus_tokens": corpus_tokens,
        "summary": summary,
    });
    files.push(File::json("pretrain.json", &record));
    Ok(Pretrained { files, summary })
}
