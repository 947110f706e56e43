//! The llama family in GGUF (`llama`, `qwen2`, `qwen3`), as llama.cpp's `convert_hf_to_gguf.py`
//! writes it, turned back into a Hugging Face checkpoint: tensor names (`blk.0.attn_q.weight` →
//! `model.layers.0.self_attn.q_proj.weight`), Q/K rows un-permuted for `llama` (that converter
//! interleaves the rotary halves of each head; the Qwen ones do not), and `config.json` from the
//! `<architecture>.*` metadata. The tokenizer is [`super::tokenizer`]'s.

use serde_json::json;

use super::{Header, TensorInfo};
use crate::hf::HfError;
use crate::hf::safetensors::{Dtype, RawTensor, TensorInfo as SafeInfo};

pub(super) fn field(file: &str, field: &str, message: impl Into<String>) -> HfError {
    HfError::Field {
        file: file.to_string(),
        field: field.to_string(),
        message: message.into(),
    }
}

/// The GGUF architectures read, with the transformers class each becomes.
const ARCHITECTURES: &[(&str, &str)] = &[
    ("llama", "LlamaForCausalLM"),
    ("qwen2", "Qwen2ForCausalLM"),
    ("qwen3", "Qwen3ForCausalLM"),
];

/// The architecture, checked to be one tunelab reads from GGUF.
pub fn architecture<'h>(h: &'h Header, file: &str) -> Result<&'h str, HfError> {
    let arch = h
        .get("general.architecture")
        .and_then(|v| v.as_str())
        .ok_or_else(|| field(file, "general.architecture", "missing"))?;
    if !ARCHITECTURES.iter().any(|(a, _)| *a == arch) {
        let known: Vec<&str> = ARCHITECTURES.iter().map(|(a, _)| *a).collect();
        return Err(HfError::UnsupportedModelType {
            file: file.to_string(),
            model_type: format!(
                "{arch} (GGUF architecture; supported: {})",
                known.join(", ")
            ),
        });
    }
    // llama.cpp files Mistral and SmolLM checkpoints under `llama` too. Llama 3.1+ keeps its
    // scaled rotary frequencies as a tensor, which tunelab's RoPE does not apply yet.
    if h.tensors.iter().any(|t| t.name == "rope_freqs.weight") {
        return Err(HfError::Gguf {
            file: file.to_string(),
            message: "`rope_freqs.weight` (Llama 3.1-style scaled RoPE) is not supported yet"
                .into(),
        });
    }
    Ok(arch)
}

fn meta_u64(h: &Header, file: &str, key: &str) -> Result<u64, HfError> {
    h.get(key)
        .and_then(|v| v.as_u64())
        .ok_or_else(|| field(file, key, "missing or not an integer"))
}

/// The Hugging Face name of a llama.cpp tensor name (None: not part of the model, e.g.
/// `rope_freqs.weight`).
pub fn hf_name(name: &str) -> Option<String> {
    let top = match name {
        "token_embd.weight" => Some("model.embed_tokens.weight"),
        "output_norm.weight" => Some("model.norm.weight"),
        "output.weight" => Some("lm_head.weight"),
        _ => None,
    };
    if let Some(t) = top {
        return Some(t.to_string());
    }
    let rest = name.strip_prefix("blk.")?;
    let (layer, rest) = rest.split_once('.')?;
    layer.parse::<usize>().ok()?;
    let (module, kind) = rest.rsplit_once('.')?;
    let hf = match module {
        "attn_norm" => "input_layernorm",
        "ffn_norm" => "post_attention_layernorm",
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_output" => "self_attn.o_proj",
        "ffn_gate" => "mlp.gate_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        "attn_q_norm" => "self_attn.q_norm",
        "attn_k_norm" => "self_attn.k_norm",
        _ => return None,
    };
    Some(format!("model.layers.{layer}.{hf}.{kind}"))
}

/// Undo the converter's permutation of Q or K rows (`heads` heads of `rows / heads` rows, each
/// stored with its two rotary halves interleaved) in a row-major `[rows, cols]` matrix.
fn unpermute(values: &[f32], rows: usize, cols: usize, heads: usize) -> Vec<f32> {
    let head_dim = rows / heads;
    let half = head_dim / 2;
    let mut out = vec![0f32; values.len()];
    for h in 0..heads {
        for i in 0..2 {
            for j in 0..half {
                let dst = h * head_dim + i * half + j;
                let src = h * head_dim + 2 * j + i;
                out[dst * cols..(dst + 1) * cols]
                    .copy_from_slice(&values[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
}

/// A dequantised GGUF tensor as the safetensors loader hands it on: Hugging Face name and
/// shape, Q/K un-permuted. None for tensors the model does not use.
pub fn to_hf(
    h: &Header,
    t: &TensorInfo,
    values: Vec<f32>,
    file: &str,
) -> Result<Option<RawTensor>, HfError> {
    let Some(name) = hf_name(&t.name) else {
        return Ok(None);
    };
    let shape = t.shape();
    // Only llama.cpp's Llama converter permutes Q/K (its Qwen converters keep HF's order).
    let llama = architecture(h, file)? == "llama";
    let heads = if !llama {
        None
    } else if name.ends_with("q_proj.weight") || name.ends_with("q_proj.bias") {
        Some(meta_u64(h, file, "llama.attention.head_count")?)
    } else if name.ends_with("k_proj.weight") || name.ends_with("k_proj.bias") {
        Some(match h.get("llama.attention.head_count_kv") {
            Some(v) => v
                .as_u64()
                .ok_or_else(|| field(file, "llama.attention.head_count_kv", "not an integer"))?,
            None => meta_u64(h, file, "llama.attention.head_count")?,
        })
    } else {
        None
    };
    let values = match heads {
        Some(heads) => {
            let heads = heads as usize;
            let (rows, cols) = (shape[0], shape.get(1).copied().unwrap_or(1));
            if heads == 0 || !rows.is_multiple_of(2 * heads) || rows * cols != values.len() {
                return Err(field(
                    file,
                    &t.name,
                    format!("{rows} rows cannot be {heads} heads of rotary pairs"),
                ));
            }
            unpermute(&values, rows, cols, heads)
        }
        None => values,
    };
    let bytes = values.len() as u64 * 4;
    Ok(Some(RawTensor {
        info: SafeInfo {
            name,
            dtype: Dtype::F32,
            shape,
            begin: t.offset,
            end: t.offset + bytes,
        },
        values,
    }))
}

/// `config.json` of the checkpoint (a transformers `LlamaForCausalLM`, `Qwen2ForCausalLM` or
/// `Qwen3ForCausalLM`), from the `<architecture>.*` metadata.
pub fn config_json(h: &Header, file: &str) -> Result<String, HfError> {
    let arch = architecture(h, file)?;
    let class = ARCHITECTURES
        .iter()
        .find(|(a, _)| *a == arch)
        .map(|(_, c)| *c)
        .expect("checked by architecture()");
    let key = |k: &str| format!("{arch}.{k}");
    let get = |k: &str| meta_u64(h, file, &key(k));
    let heads = get("attention.head_count")?;
    let hidden = get("embedding_length")?;
    let has = |name: &str| h.tensors.iter().any(|t| t.name == name);
    let vocab = match h.get(&key("vocab_size")).and_then(|v| v.as_u64()) {
        Some(v) => v,
        None => match h.get("tokenizer.ggml.tokens") {
            Some(super::Value::Array(a)) => a.len() as u64,
            _ => h
                .tensors
                .iter()
                .find(|t| t.name == "token_embd.weight")
                .and_then(|t| t.dims.get(1).copied())
                .ok_or_else(|| {
                    field(
                        file,
                        &key("vocab_size"),
                        "missing, and no token_embd.weight",
                    )
                })?,
        },
    };
    let float = |k: &str, default: f64| h.get(&key(k)).and_then(|v| v.as_f64()).unwrap_or(default);
    let mut c = json!({
        "architectures": [class],
        "model_type": arch,
        "vocab_size": vocab,
        "hidden_size": hidden,
        "intermediate_size": get("feed_forward_length")?,
        "num_hidden_layers": get("block_count")?,
        "num_attention_heads": heads,
        "num_key_value_heads": h.get(&key("attention.head_count_kv")).and_then(|v| v.as_u64()).unwrap_or(heads),
        "head_dim": h.get(&key("attention.key_length")).and_then(|v| v.as_u64()).unwrap_or(hidden / heads.max(1)),
        "max_position_embeddings": get("context_length")?,
        "rms_norm_eps": float("attention.layer_norm_rms_epsilon", 1e-5),
        "rope_theta": float("rope.freq_base", 10000.0),
        "hidden_act": "silu",
        "attention_bias": has("blk.0.attn_q.bias"),
        "mlp_bias": false,
        "tie_word_embeddings": !has("output.weight"),
        "dtype": "float32",
    });
    for (k, out) in [
        ("tokenizer.ggml.bos_token_id", "bos_token_id"),
        ("tokenizer.ggml.eos_token_id", "eos_token_id"),
        ("tokenizer.ggml.padding_token_id", "pad_token_id"),
    ] {
        if let Some(v) = h.get(k).and_then(|v| v.as_u64()) {
            c[out] = v.into();
        }
    }
    if let Some(s) = h.get(&key("rope.scaling.type")).and_then(|v| v.as_str())
        && s != "none"
    {
        c["rope_scaling"] = json!({"type": s, "factor": float("rope.scaling.factor", 1.0)});
        // YaRN needs the trained context, which llama.cpp keeps under its own key.
        if let Some(n) = h
            .get(&key("rope.scaling.original_context_length"))
            .and_then(|v| v.as_u64())
        {
            c["rope_scaling"]["original_max_position_embeddings"] = n.into();
        }
    }
    Ok(serde_json::to_string_pretty(&c).expect("JSON value"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_hugging_face() {
        assert_eq!(
            hf_name("blk.12.attn_k.weight").as_deref(),
            Some("model.layers.12.self_attn.k_proj.weight")
        );
        assert_eq!(hf_name("output.weight").as_deref(), Some("lm_head.weight"));
        assert_eq!(hf_name("rope_freqs.weight"), None);
        assert_eq!(hf_name("blk.x.attn_k.weight"), None);
    }

    #[test]
    fn unpermute_inverts_the_converter() {
        // 2 heads of head_dim 4, 1 column: converter order per head is [0, 2, 1, 3].
        let permuted = [0.0, 2.0, 1.0, 3.0, 4.0, 6.0, 5.0, 7.0];
        assert_eq!(
            unpermute(&permuted, 8, 1, 2),
            vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]
        );
    }
}
