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
use crate::train::resume::Resume;
use crate::train::schedule::Schedule;
use crate::train::sink::{CheckpointSink, DirSink};
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

/// Where a pretraining run keeps its resume checkpoints.
#[derive(Debug, Clone)]
pub struct Checkpoints {
    /// `checkpoint-N` directories go here (only the newest complete one is kept).
    pub dir: PathBuf,
    /// Steps between checkpoints.
    pub every: usize,
    /// Continue from the newest complete checkpoint in `dir` (written with the same settings).
    pub resume: bool,
}

/// Passes the periodic checkpoints on to a directory and drops the trainer's own `final` one
/// (pretraining returns its model as sharded files instead).
struct Periodic(DirSink);

impl CheckpointSink for Periodic {
    fn save(&mut self, name: &str, files: Vec<File>) -> Result<()> {
        if name == "final" {
            return Ok(());
        }
        self.0.save(name, files)
    }
}

/// Run the whole pipeline on `device` (an autodiff device), checkpointing into `checkpoints`
/// when given. Events: notices for each phase, then the trainer's `Step` events.
pub async fn pretrain(
    cfg: &PretrainConfig,
    device: Device,
    checkpoints: Option<&Checkpoints>,
    on_event: &mut dyn FnMut(&Event),
) -> Result<Pretrained> {
    let notice =
        |on_event: &mut dyn FnMut(&Event), m: String| on_event(&Event::Notice { message: m });
    let resume = match checkpoints {
        Some(c) if c.resume => Some(Resume::read(&c.dir)?),
        _ => None,
    };
    // A resumed run reuses the checkpoint's tokenizer: the one it was training with.
    let tok_bytes = match &resume {
        Some(r) => {
            for s in &r.skipped {
                notice(on_event, format!("passing over a damaged checkpoint: {s}"));
            }
            notice(on_event, format!("resuming from {}", r.dir.display()));
            crate::files::read(&r.dir.join("tokenizer.json"))?
        }
        None => {
            notice(
                on_event,
                format!("training a {}-token BPE tokenizer", cfg.vocab_size),
            );
            let mut texts = Vec::new();
            for p in &cfg.tokenizer_corpora {
                texts.extend(pieces(p)?);
            }
            train_bpe(texts.into_iter(), cfg.vocab_size)?
        }
    };
    let tok = Tokenizer::from_bytes(&tok_bytes, "tokenizer.json")?;
    let config_json = cfg.config_json(tok.vocab_size());
    let config = ModelConfig::parse(&config_json, "config.json")?;
    let opts = DataOptions {
        regime: Some(Regime::Cpt),
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
        save_every: checkpoints.map(|c| c.every),
        ..RunSpec::default()
    };
    let mut run = match resume {
        Some(r) => {
            // What decides the weights must match; the warm-up steps follow from the run's
            // length (checked through max_tokens), checkpoint and log intervals do not matter.
            let decisive = |c: &crate::train::TrainConfig| {
                let mut v = serde_json::to_value(c).expect("serializes");
                for k in ["warmup_steps", "save_every", "log_every", "eval_every"] {
                    v[k] = serde_json::Value::Null;
                }
                v
            };
            if decisive(&r.config) != decisive(&spec.train_config(0)) {
                return Err(Error::setting(
                    "resume",
                    format!(
                        "{}: the checkpoint was written with other pretraining settings",
                        r.dir.display()
                    ),
                ));
            }
            Run::resume(&session, r, dataset, None, None).await?
        }
        None => Run::new(&session, &spec, dataset, None, None)?,
    };
    // Only the final weights are returned; the run's own final checkpoint (with optimizer) is
    // dropped.
    let summary = match checkpoints {
        Some(c) => {
            let mut sink = Periodic(DirSink {
                root: c.dir.clone(),
                keep: Some(1),
            });
            run.train_until(None, &mut sink, on_event).await?
        }
        None => {
            run.train_until(None, &mut MemorySink::default(), on_event)
                .await?
        }
    };
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
