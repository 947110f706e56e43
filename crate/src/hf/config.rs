//! `config.json` of the supported model families, read field by field so that an error names
//! the field that is wrong.

use serde_json::{Map, Value};

use super::HfError;

/// RoPE frequency scaling (`rope_scaling` / `rope_parameters`), as transformers'
/// `modeling_rope_utils.py` computes it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "rope_type", rename_all = "lowercase")]
pub enum RopeScaling {
    /// Plain RoPE.
    Default,
    /// Position interpolation: every frequency divided by `factor`.
    Linear { factor: f64 },
    /// Dynamic NTK: beyond `max_position_embeddings` the base grows with the sequence length.
    Dynamic { factor: f64 },
    /// Llama 3.1: low frequencies divided by `factor`, high ones kept, a smooth ramp between.
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: f64,
    },
    /// YaRN: interpolation blended with extrapolation per frequency, cos/sin scaled by
    /// `attention_factor`.
    Yarn {
        factor: f64,
        original_max_position_embeddings: f64,
        beta_fast: f64,
        beta_slow: f64,
        attention_factor: f64,
        truncate: bool,
    },
}

/// RoPE types tunelab implements, for messages.
pub const ROPE_TYPES: &[&str] = &["default", "linear", "dynamic", "llama3", "yarn"];

/// The attention a decoder layer uses (`layer_types` in transformers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LayerType {
    /// Causal attention over every earlier position.
    FullAttention,
    /// Causal attention over the last `sliding_window` positions (the query's own included).
    SlidingAttention,
}

/// `model_type`s tunelab implements, for messages.
pub const MODEL_TYPES: &[&str] = &["llama", "mistral", "qwen2", "qwen3", "gpt2"];

/// Hyper-parameters of a Llama-family model (llama, mistral, qwen2, qwen3).
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
    pub rope_scaling: RopeScaling,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    /// Bias on q/k/v projections (always on for qwen2, `attention_bias` for llama).
    pub qkv_bias: bool,
    /// Bias on o_proj (llama's `attention_bias`; never for qwen2).
    pub o_bias: bool,
    /// Bias on the MLP projections (llama's `mlp_bias`).
    pub mlp_bias: bool,
    /// RMSNorm over each head's queries and keys before RoPE (qwen3's `q_norm`/`k_norm`).
    pub qk_norm: bool,
    /// Window of the layers whose type is sliding attention (none: every layer is full).
    pub sliding_window: Option<usize>,
    /// Attention type per layer.
    pub layer_types: Vec<LayerType>,
}

impl LlamaConfig {
    /// Longest sequence the model accepts: `max_position_embeddings`, or `factor` times it
    /// under dynamic NTK scaling, whose point is to run past the trained length.
    pub fn context_length(&self) -> usize {
        match self.rope_scaling {
            RopeScaling::Dynamic { factor } if factor > 1.0 => {
                (self.max_position_embeddings as f64 * factor) as usize
            }
            _ => self.max_position_embeddings,
        }
    }

    /// The sliding window of layer `i`, if it has one.
    pub fn window_of(&self, i: usize) -> Option<usize> {
        match self.layer_types.get(i) {
            Some(LayerType::SlidingAttention) => self.sliding_window,
            _ => None,
        }
    }
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

/// More layers than any real model has: a config claiming more is refused before anything is
/// sized by it.
const MAX_LAYERS: usize = 1 << 16;

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
            "llama" | "mistral" | "qwen2" | "qwen3" => {
                Architecture::Llama(parse_llama(&f, &model_type)?)
            }
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
            Architecture::Llama(c) => c.context_length(),
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
    let max_position_embeddings: usize = f.opt("max_position_embeddings")?.unwrap_or(2048);
    f.positive("max_position_embeddings", max_position_embeddings)?;
    let (rope_theta, rope_scaling) = parse_rope(f, max_position_embeddings)?;
    let num_hidden_layers: usize = f.req("num_hidden_layers")?;
    // Checked before anything is sized by it (a per-layer list; found by fuzzing).
    f.at_most("num_hidden_layers", num_hidden_layers, MAX_LAYERS)?;
    let (sliding_window, layer_types) = parse_layer_types(f, model_type, num_hidden_layers)?;
    let attention_bias = f.opt::<bool>("attention_bias")?.unwrap_or(false);
    // Qwen2 always has q/k/v biases; Qwen3 follows `attention_bias` as Llama does.
    let qwen = model_type == "qwen2";
    let cfg = LlamaConfig {
        vocab_size: f.req("vocab_size")?,
        hidden_size,
        intermediate_size: f.req("intermediate_size")?,
        num_hidden_layers,
        num_attention_heads,
        num_key_value_heads,
        head_dim,
        rms_norm_eps: f.opt("rms_norm_eps")?.unwrap_or(1e-6),
        rope_theta,
        rope_scaling,
        max_position_embeddings,
        tie_word_embeddings: f.opt("tie_word_embeddings")?.unwrap_or(false),
        qkv_bias: qwen || attention_bias,
        o_bias: !qwen && attention_bias,
        mlp_bias: f.opt("mlp_bias")?.unwrap_or(false),
        qk_norm: model_type == "qwen3",
        sliding_window,
        layer_types,
    };
    f.positive("vocab_size", cfg.vocab_size)?;
    f.positive("intermediate_size", cfg.intermediate_size)?;
    f.positive("num_hidden_layers", cfg.num_hidden_layers)?;
    Ok(cfg)
}

/// `rope_theta` and the RoPE scaling, from transformers v4's `rope_theta` + `rope_scaling` or
/// v5's `rope_parameters`.
fn parse_rope(f: &Fields, max_position_embeddings: usize) -> Result<(f64, RopeScaling), HfError> {
    let mut rope_theta = f.opt::<f64>("rope_theta")?.unwrap_or(10000.0);
    let mut scaling = RopeScaling::Default;
    whole_head_rotates(f)?;
    for key in ["rope_scaling", "rope_parameters"] {
        let p = match f.obj.get(key) {
            None | Some(Value::Null) => continue,
            Some(Value::Object(p)) => Fields {
                obj: p,
                file: f.file,
            },
            Some(_) => return Err(f.err(key, "expected an object or null".into())),
        };
        // Errors inside the object name it as `rope_scaling.factor` and so on.
        let sub = |e: HfError| match e {
            HfError::Field {
                file,
                field,
                message,
            } => HfError::Field {
                file,
                field: format!("{key}.{field}"),
                message,
            },
            other => other,
        };
        if let Some(t) = p.opt::<f64>("rope_theta").map_err(sub)? {
            rope_theta = t;
        }
        whole_head_rotates(&p).map_err(sub)?;
        let kind = match p.opt::<String>("rope_type").map_err(sub)? {
            Some(k) => k,
            None => p
                .opt::<String>("type")
                .map_err(sub)?
                .unwrap_or("default".into()),
        };
        let original = || -> Result<f64, HfError> {
            Ok(p.opt::<f64>("original_max_position_embeddings")
                .map_err(sub)?
                .unwrap_or(max_position_embeddings as f64))
        };
        let factor = || -> Result<f64, HfError> {
            let v: f64 = p.req("factor").map_err(sub)?;
            if !(v.is_finite() && v >= 1.0) {
                return Err(sub(p.err("factor", format!("{v} must be a number >= 1"))));
            }
            Ok(v)
        };
        scaling = match kind.as_str() {
            "default" => RopeScaling::Default,
            "linear" => RopeScaling::Linear { factor: factor()? },
            "dynamic" => RopeScaling::Dynamic { factor: factor()? },
            "llama3" => {
                let low: f64 = p.req("low_freq_factor").map_err(sub)?;
                let high: f64 = p.req("high_freq_factor").map_err(sub)?;
                if !(low > 0.0 && high > low) {
                    return Err(sub(p.err(
                        "high_freq_factor",
                        format!("{high} must exceed low_freq_factor ({low}) > 0"),
                    )));
                }
                RopeScaling::Llama3 {
                    factor: factor()?,
                    low_freq_factor: low,
                    high_freq_factor: high,
                    original_max_position_embeddings: original()?,
                }
            }
            "yarn" => {
                let original = original()?;
                let factor = match p.opt::<f64>("factor").map_err(sub)? {
                    Some(_) => factor()?,
                    None => max_position_embeddings as f64 / original,
                };
                let mscale = |scale: f64, m: f64| {
                    if scale <= 1.0 {
                        1.0
                    } else {
                        0.1 * m * scale.ln() + 1.0
                    }
                };
                let attention_factor = match p.opt::<f64>("attention_factor").map_err(sub)? {
                    Some(a) => a,
                    None => {
                        let m = p.opt::<f64>("mscale").map_err(sub)?.unwrap_or(0.0);
                        let all = p.opt::<f64>("mscale_all_dim").map_err(sub)?.unwrap_or(0.0);
                        if m != 0.0 && all != 0.0 {
                            mscale(factor, m) / mscale(factor, all)
                        } else {
                            mscale(factor, 1.0)
                        }
                    }
                };
                // transformers treats 0 / null as "use the paper's default".
                let beta = |name, default| -> Result<f64, HfError> {
                    Ok(match p.opt::<f64>(name).map_err(sub)? {
                        Some(b) if b != 0.0 => b,
                        _ => default,
                    })
                };
                RopeScaling::Yarn {
                    factor,
                    original_max_position_embeddings: original,
                    beta_fast: beta("beta_fast", 32.0)?,
                    beta_slow: beta("beta_slow", 1.0)?,
                    attention_factor,
                    truncate: p.opt::<bool>("truncate").map_err(sub)?.unwrap_or(true),
                }
            }
            other => {
                return Err(f.err(
                    key,
                    format!(
                        "RoPE type `{other}` is not supported; supported: {}",
                        ROPE_TYPES.join(", ")
                    ),
                ));
            }
        };
    }
    if !(rope_theta.is_finite() && rope_theta > 1.0) {
        return Err(f.err("rope_theta", format!("{rope_theta} must be a number > 1")));
    }
    Ok((rope_theta, scaling))
}

/// Refuse a `partial_rotary_factor` other than 1 in `f` (top level or a RoPE object).
fn whole_head_rotates(f: &Fields) -> Result<(), HfError> {
    match f.opt::<f64>("partial_rotary_factor")? {
        Some(r) if r != 1.0 => Err(f.err(
            "partial_rotary_factor",
            format!("{r}: Llama-family models rotate the whole head (1.0)"),
        )),
        _ => Ok(()),
    }
}

/// The sliding window and the attention type of each layer, as each family's transformers
/// config derives them: Mistral slides every layer when `sliding_window` is set; Qwen2/Qwen3
/// only with `use_sliding_window`, from layer `max_window_layers` on, unless `layer_types`
/// lists them.
fn parse_layer_types(
    f: &Fields,
    model_type: &str,
    layers: usize,
) -> Result<(Option<usize>, Vec<LayerType>), HfError> {
    let window: Option<usize> = f.opt("sliding_window")?;
    if window == Some(0) {
        return Err(f.err("sliding_window", "must be positive".into()));
    }
    let full = vec![LayerType::FullAttention; layers];
    match model_type {
        "mistral" => Ok(match window {
            Some(w) => (Some(w), vec![LayerType::SlidingAttention; layers]),
            None => (None, full),
        }),
        "qwen2" | "qwen3" => {
            let slides = f.opt::<bool>("use_sliding_window")?.unwrap_or(false);
            let window = window.filter(|_| slides);
            let types = match f.opt::<Vec<String>>("layer_types")? {
                Some(names) => {
                    if names.len() != layers {
                        return Err(f.err(
                            "layer_types",
                            format!(
                                "lists {} layers but num_hidden_layers is {layers}",
                                names.len()
                            ),
                        ));
                    }
                    names
                        .iter()
                        .map(|n| match n.as_str() {
                            "full_attention" => Ok(LayerType::FullAttention),
                            "sliding_attention" => Ok(LayerType::SlidingAttention),
                            other => Err(f.err(
                                "layer_types",
                                format!(
                                    "`{other}` is not supported; supported: full_attention, sliding_attention"
                                ),
                            )),
                        })
                        .collect::<Result<Vec<_>, _>>()?
                }
                None => {
                    let from: usize = f.opt("max_window_layers")?.unwrap_or(28);
                    (0..layers)
                        .map(|i| {
                            if window.is_some() && i >= from {
                                LayerType::SlidingAttention
                            } else {
                                LayerType::FullAttention
                            }
                        })
                        .collect()
                }
            };
            Ok((window, types))
        }
        _ => Ok((None, full)),
    }
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
        n_layer: f
            .req("n_layer")
            .and_then(|n| f.at_most("n_layer", n, MAX_LAYERS).map(|()| n))?,
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

    fn at_most(&self, field: &str, v: usize, max: usize) -> Result<(), HfError> {
        if v > max {
            return Err(self.err(field, format!("{v} is more than {max}")));
        }
        Ok(())
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
    fn reads_rope_scalings_and_sliding_windows_as_transformers_derives_them() {
        let with = |from: &str, to: &str| LLAMA.replace(from, to);
        let llama3 = llama(&with(
            r#""rope_scaling":null"#,
            r#""rope_scaling":{"rope_type":"llama3","factor":8.0,"low_freq_factor":1.0,"high_freq_factor":4.0,"original_max_position_embeddings":8192}"#,
        ));
        assert!(matches!(
            llama3.rope_scaling,
            RopeScaling::Llama3 { factor: 8.0, .. }
        ));
        // v4's `type` key; YaRN's attention factor from the paper's formula.
        let yarn = llama(&with(
            r#""rope_scaling":null"#,
            r#""rope_scaling":{"type":"yarn","factor":4.0,"original_max_position_embeddings":32}"#,
        ));
        match yarn.rope_scaling {
            RopeScaling::Yarn {
                attention_factor,
                beta_fast,
                ..
            } => assert!(
                (attention_factor - (0.1 * 4f64.ln() + 1.0)).abs() < 1e-12 && beta_fast == 32.0
            ),
            other => panic!("{other:?}"),
        }
        let dynamic = llama(&with(
            r#""rope_scaling":null"#,
            r#""max_position_embeddings":64,"rope_scaling":{"type":"dynamic","factor":2.0}"#,
        ));
        assert_eq!(dynamic.context_length(), 128);

        let mistral = with(
            r#""model_type":"llama""#,
            r#""model_type":"mistral","sliding_window":16,"max_position_embeddings":64"#,
        );
        let m = llama(&mistral);
        assert_eq!((m.window_of(0), m.sliding_window), (Some(16), Some(16)));
        let m = llama(&mistral.replace(r#""sliding_window":16"#, r#""sliding_window":null"#));
        assert_eq!(m.window_of(0), None);
        // Qwen slides only with use_sliding_window, from max_window_layers on.
        let qwen = with(
            r#""model_type":"llama""#,
            r#""model_type":"qwen3","num_hidden_layers":3,"sliding_window":8,"max_window_layers":1"#,
        )
        .replace(r#""num_hidden_layers":1,"#, "");
        let off = llama(&qwen);
        assert_eq!(
            (off.window_of(2), off.qk_norm, off.qkv_bias),
            (None, true, false)
        );
        let on = llama(&qwen.replace(
            r#""sliding_window":8"#,
            r#""sliding_window":8,"use_sliding_window":true"#,
        ));
        assert_eq!(
            (on.window_of(0), on.window_of(1), on.window_of(2)),
            (None, Some(8), Some(8))
        );
    }

    #[test]
    fn rejects_what_is_not_implemented_naming_the_field() {
        let scaled = LLAMA.replace(
            r#""rope_scaling":null"#,
            r#""rope_scaling":{"rope_type":"longrope","factor":8.0}"#,
        );
        let e = ModelConfig::parse(&scaled, "config.json").unwrap_err();
        assert!(
            matches!(&e, HfError::Field { field, .. } if field == "rope_scaling"),
            "{e}"
        );
        assert!(e.to_string().contains("llama3, yarn"), "{e}");
        let no_factor = LLAMA.replace(
            r#""rope_scaling":null"#,
            r#""rope_parameters":{"rope_type":"linear"}"#,
        );
        let e = ModelConfig::parse(&no_factor, "config.json").unwrap_err();
        assert!(
            matches!(&e, HfError::Field { field, .. } if field == "rope_parameters.factor"),
            "{e}"
        );
        let partial = LLAMA.replace(r#""rope_scaling":null"#, r#""partial_rotary_factor":0.5"#);
        assert!(ModelConfig::parse(&partial, "config.json").is_err());
        let layers = LLAMA.replace(
            r#""model_type":"llama""#,
            r#""model_type":"qwen2","layer_types":["full_attention","chunked_attention"]"#,
        );
        let e = ModelConfig::parse(&layers, "config.json").unwrap_err();
        assert!(e.to_string().contains("layer_types"), "{e}");
        let e = ModelConfig::parse(&LLAMA.replace("\"llama\"", "\"phi3\""), "c").unwrap_err();
        assert!(e.to_string().contains("qwen3"), "{e}");

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
