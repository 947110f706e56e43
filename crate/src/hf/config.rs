//! `config.json` of the supported model families, read field by field so that an error names
//! the field that is wrong.

use serde_json::{Map, Value};

use super::HfError;

/// Hyper-parameters of a Llama-family model (llama, qwen2, mistral without sliding window).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LlamaConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    /// Bias on q/k/v projections (always on for qwen2, `attention_bias` for llama).
    pub qkv_bias: bool,
    /// Bias on o_proj (llama's `attention_bias`; never for qwen2).
    pub o_bias: bool,
    /// Bias on the MLP projections (llama's `mlp_bias`).
    pub mlp_bias: bool,
}

/// Hyper-parameters of a GPT-2 model.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Gpt2Config {
    pub vocab_size: usize,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_positions: usize,
    pub n_inner: usize,
    pub layer_norm_epsilon: f64,
    pub activation_function: String,
    pub scale_attn_weights: bool,
    pub scale_attn_by_inverse_layer_idx: bool,
    pub tie_word_embeddings: bool,
}

/// The architecture a `config.json` describes.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "family")]
pub enum Architecture {
    Llama(LlamaConfig),
    Gpt2(Gpt2Config),
}

/// A parsed `config.json`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ModelConfig {
    /// `model_type` as written (llama, qwen2, mistral, gpt2).
    pub model_type: String,
    /// `torch_dtype` / `dtype` as written, if any.
    pub dtype: Option<String>,
    pub arch: Architecture,
}

/// GPT-2 activations we implement, by their Hugging Face names.
pub const GPT2_ACTIVATIONS: &[&str] = &["gelu_new", "gelu_pytorch_tanh", "gelu", "relu", "silu"];

impl ModelConfig {
    /// Parse `config.json` text; `file` is used in messages.
    pub fn parse(text: &str, file: &str) -> Result<Self, HfError> {
        let value: Value = serde_json::from_str(text).map_err(|e| HfError::Json {
            file: file.to_string(),
            message: e.to_string(),
        })?;
        let obj = value.as_object().ok_or_else(|| HfError::Json {
            file: file.to_string(),
            message: "expected a JSON object".into(),
        })?;
        let f = Fields { obj, file };
        let model_type: String = f.req("model_type")?;
        let dtype = f
            .opt::<String>("torch_dtype")?
            .or(f.opt::<String>("dtype")?);
        let arch = match model_type.as_str() {
            "llama" | "qwen2" | "mistral" => Architecture::Llama(parse_llama(&f, &model_type)?),
            "gpt2" => Architecture::Gpt2(parse_gpt2(&f)?),
            _ => {
                return Err(HfError::UnsupportedModelType {
                    file: file.to_string(),
                    model_type,
                });
            }
        };
        Ok(ModelConfig {
            model_type,
            dtype,
            arch,
        })
    }

    /// Vocabulary size.
    pub fn vocab_size(&self) -> usize {
        match &self.arch {
            Architecture::Llama(c) => c.vocab_size,
            Architecture::Gpt2(c) => c.vocab_size,
        }
    }

    /// Longest sequence the model accepts.
    pub fn max_positions(&self) -> usize {
        match &self.arch {
            Architecture::Llama(c) => c.max_position_embeddings,
            Architecture::Gpt2(c) => c.n_positions,
        }
    }

    /// Number of transformer blocks.
    pub fn num_layers(&self) -> usize {
        match &self.arch {
            Architecture::Llama(c) => c.num_hidden_layers,
            Architecture::Gpt2(c) => c.n_layer,
        }
    }
}

fn parse_llama(f: &Fields, model_type: &str) -> Result<LlamaConfig, HfError> {
    let hidden_size: usize = f.req("hidden_size")?;
    let num_attention_heads: usize = f.req("num_attention_heads")?;
    let num_key_value_heads = f.opt("num_key_value_heads")?.unwrap_or(num_attention_heads);
    f.positive("hidden_size", hidden_size)?;
    f.positive("num_attention_heads", num_attention_heads)?;
    f.positive("num_key_value_heads", num_key_value_heads)?;
    if !num_attention_heads.is_multiple_of(num_key_value_heads) {
        return Err(f.err(
            "num_key_value_heads",
            format!(
                "{num_key_value_heads} does not divide num_attention_heads ({num_attention_heads})"
            ),
        ));
    }
    let head_dim = match f.opt::<usize>("head_dim")? {
        Some(d) => d,
        None => {
            if !hidden_size.is_multiple_of(num_attention_heads) {
                return Err(f.err(
                    "hidden_size",
                    format!(
                        "{hidden_size} is not divisible by num_attention_heads ({num_attention_heads}) and no head_dim is given"
                    ),
                ));
            }
            hidden_size / num_attention_heads
        }
    };
    if head_dim % 2 != 0 {
        return Err(f.err("head_dim", format!("{head_dim} must be even for RoPE")));
    }
    let act = f.opt::<String>("hidden_act")?.unwrap_or("silu".into());
    if act != "silu" {
        return Err(f.err(
            "hidden_act",
            format!("`{act}` is not supported (only silu)"),
        ));
    }
    // Newer transformers write RoPE settings under `rope_parameters`; older ones use
    // `rope_theta` + `rope_scaling`. Only the plain (unscaled) RoPE is implemented.
    let mut rope_theta = f.opt::<f64>("rope_theta")?;
    for key in ["rope_scaling", "rope_parameters"] {
        match f.obj.get(key) {
            None | Some(Value::Null) => {}
            Some(Value::Object(p)) => {
                let kind = p
                    .get("rope_type")
                    .or_else(|| p.get("type"))
                    .and_then(Value::as_str)
                    .unwrap_or("default");
                if kind != "default" {
                    return Err(f.err(
                        key,
                        format!("RoPE scaling `{kind}` is not supported (only unscaled RoPE)"),
                    ));
                }
                if let Some(t) = p.get("rope_theta").and_then(Value::as_f64) {
                    rope_theta = Some(t);
                }
            }
            Some(_) => return Err(f.err(key, "expected an object or null".into())),
        }
    }
    let max_position_embeddings: usize = f.opt("max_position_embeddings")?.unwrap_or(2048);
    let sliding: Option<usize> = f.opt("sliding_window")?;
    let use_sliding = f
        .opt::<bool>("use_sliding_window")?
        .unwrap_or(model_type == "mistral");
    if use_sliding
        && let Some(w) = sliding
        && w < max_position_embeddings
    {
        return Err(f.err(
                    "sliding_window",
                    format!(
                        "sliding-window attention ({w} < max_position_embeddings {max_position_embeddings}) is not supported"
                    ),
                ));
    }
    let attention_bias = f.opt::<bool>("attention_bias")?.unwrap_or(false);
    let qwen = model_type == "qwen2";
    let cfg = LlamaConfig {
        vocab_size: f.req("vocab_size")?,
        hidden_size,
        intermediate_size: f.req("intermediate_size")?,
        num_hidden_layers: f.req("num_hidden_layers")?,
        num_attention_heads,
        num_key_value_heads,
        head_dim,
        rms_norm_eps: f.opt("rms_norm_eps")?.unwrap_or(1e-6),
        rope_theta: rope_theta.unwrap_or(10000.0),
        max_position_embeddings,
        tie_word_embeddings: f.opt("tie_word_embeddings")?.unwrap_or(false),
        qkv_bias: qwen || attention_bias,
        o_bias: !qwen && attention_bias,
        mlp_bias: f.opt("mlp_bias")?.unwrap_or(false),
    };
    f.positive("vocab_size", cfg.vocab_size)?;
    f.positive("intermediate_size", cfg.intermediate_size)?;
    f.positive("num_hidden_layers", cfg.num_hidden_layers)?;
    Ok(cfg)
}

fn parse_gpt2(f: &Fields) -> Result<Gpt2Config, HfError> {
    let n_embd: usize = f.req("n_embd")?;
    let n_head: usize = f.req("n_head")?;
    f.positive("n_embd", n_embd)?;
    f.positive("n_head", n_head)?;
    if !n_embd.is_multiple_of(n_head) {
        return Err(f.err(
            "n_embd",
            format!("{n_embd} is not divisible by n_head ({n_head})"),
        ));
    }
    let activation_function = f
        .opt::<String>("activation_function")?
        .unwrap_or("gelu_new".into());
    if !GPT2_ACTIVATIONS.contains(&activation_function.as_str()) {
        return Err(f.err(
            "activation_function",
            format!(
                "`{activation_function}` is not supported; supported: {}",
                GPT2_ACTIVATIONS.join(", ")
            ),
        ));
    }
    let cfg = Gpt2Config {
        vocab_size: f.req("vocab_size")?,
        n_embd,
        n_layer: f.req("n_layer")?,
        n_head,
        n_positions: f.opt("n_positions")?.unwrap_or(1024),
        n_inner: f.opt("n_inner")?.unwrap_or(4 * n_embd),
        layer_norm_epsilon: f.opt("layer_norm_epsilon")?.unwrap_or(1e-5),
        activation_function,
        scale_attn_weights: f.opt("scale_attn_weights")?.unwrap_or(true),
        scale_attn_by_inverse_layer_idx: f.opt("scale_attn_by_inverse_layer_idx")?.unwrap_or(false),
        tie_word_embeddings: f.opt("tie_word_embeddings")?.unwrap_or(true),
    };
    f.positive("vocab_size", cfg.vocab_size)?;
    f.positive("n_layer", cfg.n_layer)?;
    Ok(cfg)
}

/// Typed access to the fields of a JSON object, with errors naming file and field.
struct Fields<'a> {
    obj: &'a Map<String, Value>,
    file: &'a str,
}

impl Fields<'_> {
    fn err(&self, field: &str, message: String) -> HfError {
        HfError::Field {
            file: self.file.to_string(),
            field: field.to_string(),
            message,
        }
    }

    fn opt<T: serde::de::DeserializeOwned>(&self, field: &str) -> Result<Option<T>, HfError> {
        match self.obj.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => serde_json::from_value(v.clone())
                .map(Some)
                .map_err(|e| self.err(field, format!("{e} (found {v})"))),
        }
    }

    fn req<T: serde::de::DeserializeOwned>(&self, field: &str) -> Result<T, HfError> {
        self.opt(field)?
            .ok_or_else(|| self.err(field, "missing".into()))
    }

    fn positive(&self, field: &str, v: usize) -> Result<(), HfError> {
        if v == 0 {
            return Err(self.err(field, "must be positive".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LLAMA: &str = r#"{"model_type":"llama","vocab_size":32,"hidden_size":16,"intermediate_size":32,
        "num_hidden_layers":1,"num_attention_heads":4,"num_key_value_heads":2,"rope_theta":500000.0,
        "rope_scaling":null,"torch_dtype":"bfloat16"}"#;

    fn llama(text: &str) -> LlamaConfig {
        match ModelConfig::parse(text, "config.json").unwrap().arch {
            Architecture::Llama(c) => c,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn reads_transformers_v4_and_v5_rope_fields() {
        let c = llama(LLAMA);
        assert_eq!(
            (c.rope_theta, c.head_dim, c.num_key_value_heads),
            (500000.0, 4, 2)
        );
        let v5 = LLAMA.replace(
            r#""rope_theta":500000.0,"#,
            r#""rope_parameters":{"rope_type":"default","rope_theta":1000.0},"#,
        );
        assert_eq!(llama(&v5).rope_theta, 1000.0);
        assert_eq!(
            ModelConfig::parse(LLAMA, "c").unwrap().dtype.as_deref(),
            Some("bfloat16")
        );
    }

    #[test]
    fn rejects_what_is_not_implemented_naming_the_field() {
        let scaled = LLAMA.replace(
            r#""rope_scaling":null"#,
            r#""rope_scaling":{"rope_type":"llama3","factor":8.0}"#,
        );
        let e = ModelConfig::parse(&scaled, "config.json").unwrap_err();
        assert!(
            matches!(&e, HfError::Field { field, .. } if field == "rope_scaling"),
            "{e}"
        );

        let mistral = LLAMA.replace(
            r#""model_type":"llama""#,
            r#""model_type":"mistral","sliding_window":16,"max_position_embeddings":64"#,
        );
        let e = ModelConfig::parse(&mistral, "config.json").unwrap_err();
        assert!(
            matches!(&e, HfError::Field { field, .. } if field == "sliding_window"),
            "{e}"
        );
        let mistral_full = mistral.replace(r#""sliding_window":16"#, r#""sliding_window":null"#);
        assert!(ModelConfig::parse(&mistral_full, "config.json").is_ok());

        let bad_heads = LLAMA.replace(r#""num_key_value_heads":2"#, r#""num_key_value_heads":3"#);
        let e = ModelConfig::parse(&bad_heads, "config.json").unwrap_err();
        assert!(e.to_string().contains("num_key_value_heads"), "{e}");

        let missing = LLAMA.replace(r#""vocab_size":32,"#, "");
        let e = ModelConfig::parse(&missing, "config.json").unwrap_err();
        assert!(
            matches!(&e, HfError::Field { field, .. } if field == "vocab_size"),
            "{e}"
        );
    }

    #[test]
    fn qwen2_has_qkv_bias_and_llama_attention_bias_covers_o() {
        let qwen = llama(&LLAMA.replace("\"llama\"", "\"qwen2\""));
        assert!(qwen.qkv_bias && !qwen.o_bias);
        let biased = llama(&LLAMA.replace("\"rope_scaling\":null", "\"attention_bias\":true"));
        assert!(biased.qkv_bias && biased.o_bias);
    }
}
