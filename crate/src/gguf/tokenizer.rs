//! A GGUF file's tokenizer (`tokenizer.ggml.*`) as Hugging Face files, built as transformers'
//! GGUF loading builds it: `tokenizer.json` for the `gpt2` byte-level BPE model and the `llama`
//! SentencePiece model (BPE with byte fallback, merges recovered from the pieces' scores), and
//! `tokenizer_config.json` with the chat template and the special tokens.

use serde_json::json;

use super::llama::field;
use super::{Header, Value};
use crate::hf::HfError;

/// The pre-tokenizer of llama.cpp's `tokenizer.ggml.pre` name, as the Hugging Face tokenizer of
/// that family spells it.
fn pre_tokenizer(pre: &str, file: &str) -> Result<serde_json::Value, HfError> {
    let byte_level = |use_regex: bool| json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": use_regex});
    let split = |regex: &str| json!({"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": false});
    Ok(match pre {
        "default" | "gpt2" | "gpt-2" => byte_level(true),
        "smollm" | "starcoder" => json!({"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": true}, byte_level(true)]}),
        "llama-bpe" | "llama3" => json!({"type": "Sequence", "pretokenizers": [
            split(r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"),
            byte_level(false)]}),
        "qwen2" => json!({"type": "Sequence", "pretokenizers": [
            split(r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"),
            byte_level(false)]}),
        other => {
            return Err(HfError::Tokenizer {
                file: file.to_string(),
                message: format!(
                    "tokenizer.ggml.pre `{other}` is not supported (supported: default, gpt2, smollm, starcoder, llama-bpe, qwen2)"
                ),
            });
        }
    })
}

/// `tokenizer.json` rebuilt from `tokenizer.ggml.*` — the `gpt2` byte-level BPE model or the
/// `llama` SentencePiece model — or None when the file has no tokenizer.
pub fn tokenizer_json(h: &Header, file: &str) -> Result<Option<Vec<u8>>, HfError> {
    let Some(model) = h.get("tokenizer.ggml.model").and_then(|v| v.as_str()) else {
        return Ok(None);
    };
    if model != "gpt2" && model != "llama" {
        return Err(HfError::Tokenizer {
            file: file.to_string(),
            message: format!(
                "tokenizer.ggml.model `{model}` is not supported (supported: `gpt2`, byte-level BPE; `llama`, SentencePiece)"
            ),
        });
    }
    let array = |key: &str| match h.get(key) {
        Some(Value::Array(a)) => Ok(a),
        _ => Err(field(file, key, "missing")),
    };
    let strings = |key: &str| -> Result<Vec<&str>, HfError> {
        array(key)?
            .iter()
            .map(|v| v.as_str().ok_or_else(|| field(file, key, "not strings")))
            .collect()
    };
    let tokens = strings("tokenizer.ggml.tokens")?;
    let types: Vec<u64> = match h.get("tokenizer.ggml.token_type") {
        Some(Value::Array(a)) => a.iter().map(|v| v.as_u64().unwrap_or(1)).collect(),
        _ => vec![1; tokens.len()],
    };
    // As a Python dict of the tokens: a repeated token keeps its last id.
    let vocab: serde_json::Map<String, serde_json::Value> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.to_string(), i.into()))
        .collect();
    let id = |key: &str| {
        h.get(key)
            .and_then(|v| v.as_u64())
            .filter(|&i| (i as usize) < tokens.len())
    };
    let named: Vec<u64> = [
        "tokenizer.ggml.unknown_token_id",
        "tokenizer.ggml.bos_token_id",
        "tokenizer.ggml.eos_token_id",
        "tokenizer.ggml.padding_token_id",
    ]
    .iter()
    .filter_map(|k| id(k))
    .collect();
    // Control (3) tokens and the named special tokens are special added tokens, user-defined
    // (4) ones plain added tokens: all matched whole before the model sees the text.
    let added: Vec<serde_json::Value> = tokens
        .iter()
        .zip(&types)
        .enumerate()
        .filter(|&(i, (_, &ty))| ty == 3 || ty == 4 || named.contains(&(i as u64)))
        .map(|(i, (t, &ty))| {
            json!({"id": i, "content": t, "single_word": false, "lstrip": false, "rstrip": false,
                   "normalized": false, "special": ty != 4})
        })
        .collect();
    let flag = |key: &str| match h.get(key) {
        Some(Value::Bool(b)) => Some(*b),
        _ => None,
    };
    // llama.cpp adds BOS to a SentencePiece vocabulary that does not say otherwise.
    let add_bos = flag("tokenizer.ggml.add_bos_token").unwrap_or(model == "llama");
    let add_eos = flag("tokenizer.ggml.add_eos_token").unwrap_or(false);
    let bos = id("tokenizer.ggml.bos_token_id").filter(|_| add_bos);
    let eos = id("tokenizer.ggml.eos_token_id").filter(|_| add_eos);
    let post = post_processor(&tokens, bos, eos);
    let (pre_tokenizer, decoder, model) = if model == "gpt2" {
        let merges = strings("tokenizer.ggml.merges")?;
        let pre = h
            .get("tokenizer.ggml.pre")
            .and_then(|v| v.as_str())
            .unwrap_or("default");
        (
            pre_tokenizer(pre, file)?,
            json!({"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true}),
            json!({
                "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
                "ignore_merges": matches!(pre, "llama-bpe" | "llama3"),
                "vocab": vocab, "merges": merges,
            }),
        )
    } else {
        let scores: Vec<f64> = array("tokenizer.ggml.scores")?
            .iter()
            .map(|v| {
                v.as_f64()
                    .ok_or_else(|| field(file, "tokenizer.ggml.scores", "not numbers"))
            })
            .collect::<Result<_, _>>()?;
        if scores.len() != tokens.len() {
            return Err(field(
                file,
                "tokenizer.ggml.scores",
                format!("{} scores for {} tokens", scores.len(), tokens.len()),
            ));
        }
        // transformers' LlamaTokenizer: a `▁` before the first word (the file's
        // `add_space_prefix` is not read there either), pieces merged by BPE, unknown
        // characters spelled as byte tokens.
        (
            json!({"type": "Metaspace", "replacement": "\u{2581}", "prepend_scheme": "first", "split": false}),
            json!({"type": "Sequence", "decoders": [
                {"type": "Replace", "pattern": {"String": "\u{2581}"}, "content": " "},
                {"type": "ByteFallback"}, {"type": "Fuse"},
                {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}),
            json!({
                "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                "end_of_word_suffix": null, "fuse_unk": true, "byte_fallback": true,
                "ignore_merges": false,
                "vocab": vocab, "merges": sentencepiece_merges(&tokens, &scores),
            }),
        )
    };
    let tok = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": post,
        "decoder": decoder,
        "model": model,
    });
    Ok(Some(serde_json::to_vec_pretty(&tok).expect("JSON value")))
}

/// BOS before and EOS after each sequence, as the file asks (None when it asks for neither).
fn post_processor(tokens: &[&str], bos: Option<u64>, eos: Option<u64>) -> serde_json::Value {
    if bos.is_none() && eos.is_none() {
        return serde_json::Value::Null;
    }
    let special = |id: Option<u64>, type_id: u32| {
        id.map(|i| json!({"SpecialToken": {"id": tokens[i as usize], "type_id": type_id}}))
    };
    let seq = |name: &str, type_id: u32| json!({"Sequence": {"id": name, "type_id": type_id}});
    let single: Vec<serde_json::Value> = special(bos, 0)
        .into_iter()
        .chain([seq("A", 0)])
        .chain(special(eos, 0))
        .collect();
    let pair: Vec<serde_json::Value> = single
        .iter()
        .cloned()
        .chain(special(bos, 1))
        .chain([seq("B", 1)])
        .chain(special(eos, 1))
        .collect();
    let mut specials = serde_json::Map::new();
    for i in bos.into_iter().chain(eos) {
        let t = tokens[i as usize];
        specials.insert(t.into(), json!({"id": t, "ids": [i], "tokens": [t]}));
    }
    json!({"type": "TemplateProcessing", "single": single, "pair": pair, "special_tokens": specials})
}

/// The BPE merges a SentencePiece vocabulary implies (a GGUF stores pieces and scores, no
/// merges), as transformers' `generate_merges` recovers them: every split of a piece into two
/// pieces of the vocabulary, ordered by the merged piece's score (then the halves' lengths),
/// highest first; splits of one piece by their halves' ids.
fn sentencepiece_merges(tokens: &[&str], scores: &[f64]) -> Vec<[String; 2]> {
    let mut ids: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    let mut score: std::collections::HashMap<&str, f64> = std::collections::HashMap::new();
    let mut order: Vec<&str> = Vec::new();
    for (i, (&t, &s)) in tokens.iter().zip(scores).enumerate() {
        ids.insert(t, i);
        if score.insert(t, s).is_none() {
            order.push(t);
        }
    }
    // (left, right, score, chars of left, chars of right)
    let mut merges: Vec<(&str, &str, f64, usize, usize)> = Vec::new();
    for piece in order {
        let s = score[piece];
        let mut local: Vec<(&str, &str, f64, usize, usize)> = piece
            .char_indices()
            .skip(1)
            .enumerate()
            .filter_map(|(n, (at, _))| {
                let (l, r) = piece.split_at(at);
                (ids.contains_key(l) && ids.contains_key(r))
                    .then(|| (l, r, s, n + 1, piece[at..].chars().count()))
            })
            .collect();
        local.sort_by_key(|m| (ids[m.0], ids[m.1]));
        merges.extend(local);
    }
    // Stable, highest first: equal keys keep their order, as Python's sorted(reverse=True).
    merges.sort_by(|a, b| {
        b.2.partial_cmp(&a.2)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(b.3.cmp(&a.3))
            .then(b.4.cmp(&a.4))
    });
    merges
        .into_iter()
        .map(|(l, r, ..)| [l.to_string(), r.to_string()])
        .collect()
}

/// `tokenizer_config.json`: the chat template and the BOS/EOS/PAD tokens, when the file names
/// them.
pub fn tokenizer_config_json(h: &Header) -> Option<Vec<u8>> {
    let tokens = match h.get("tokenizer.ggml.tokens") {
        Some(Value::Array(a)) => a,
        _ => return None,
    };
    let token = |key: &str| {
        let id = h.get(key)?.as_u64()? as usize;
        tokens.get(id)?.as_str()
    };
    let mut c = json!({"tokenizer_class": "PreTrainedTokenizerFast", "clean_up_tokenization_spaces": false});
    if let Some(t) = h.get("tokenizer.chat_template").and_then(|v| v.as_str()) {
        c["chat_template"] = t.into();
    }
    for (key, out) in [
        ("tokenizer.ggml.bos_token_id", "bos_token"),
        ("tokenizer.ggml.eos_token_id", "eos_token"),
        ("tokenizer.ggml.padding_token_id", "pad_token"),
        ("tokenizer.ggml.unknown_token_id", "unk_token"),
    ] {
        if let Some(t) = token(key) {
            c[out] = t.into();
        }
    }
    Some(serde_json::to_vec_pretty(&c).expect("JSON value"))
}
