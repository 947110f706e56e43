//! `tokenizer.json` through the Hugging Face `tokenizers` crate.

use super::HfError;

/// A loaded tokenizer plus the end-of-sequence id if the vocabulary has a known EOS token.
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    file: String,
    /// Id of the end-of-sequence token, if one of the usual names is in the vocabulary.
    pub eos_id: Option<u32>,
}

/// EOS spellings of the families we load, tried in order.
const EOS_NAMES: &[&str] = &[
    "<|endoftext|>",
    "</s>",
    "<|im_end|>",
    "<|end_of_text|>",
    "<eos>",
];

impl Tokenizer {
    /// Parse `tokenizer.json` bytes; `file` is used in messages.
    pub fn from_bytes(bytes: &[u8], file: &str) -> Result<Self, HfError> {
        let bad = |e: &dyn std::fmt::Display| HfError::Tokenizer {
            file: file.to_string(),
            message: format!("cannot parse tokenizer: {e}"),
        };
        // Valid JSON first, strings decoded: tokenizers panics (rather than erring) on a
        // syntax error or a string that is not UTF-8 inside some sections, e.g. `{"decoder":`
        // (both found by fuzzing).
        serde_json::from_slice::<serde_json::Value>(bytes).map_err(|e| bad(&e))?;
        let inner = tokenizers::Tokenizer::from_bytes(bytes).map_err(|e| bad(&e))?;
        let eos_id = EOS_NAMES.iter().find_map(|t| inner.token_to_id(t));
        Ok(Tokenizer {
            inner,
            file: file.to_string(),
            eos_id,
        })
    }

    /// Token ids of `text`, with the special tokens the tokenizer's post-processor adds (as
    /// `tokenizer(text)` does in Python).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, HfError> {
        self.encode_with(text, true)
    }

    /// The id of a token of the vocabulary (added tokens included).
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Token ids of `text` without special tokens (lm-evaluation-harness's `tok_encode` for
    /// causal models).
    pub fn encode_plain(&self, text: &str) -> Result<Vec<u32>, HfError> {
        self.encode_with(text, false)
    }

    fn encode_with(&self, text: &str, special: bool) -> Result<Vec<u32>, HfError> {
        let enc = self
            .inner
            .encode(text, special)
            .map_err(|e| HfError::Tokenizer {
                file: self.file.clone(),
                message: format!("cannot encode text: {e}"),
            })?;
        Ok(enc.get_ids().to_vec())
    }

    /// Text of `ids`, skipping special tokens.
    pub fn decode(&self, ids: &[u32]) -> Result<String, HfError> {
        self.inner
            .decode(ids, true)
            .map_err(|e| HfError::Tokenizer {
                file: self.file.clone(),
                message: format!("cannot decode ids: {e}"),
            })
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }
}
