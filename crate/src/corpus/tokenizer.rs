//! Training a byte-level BPE `tokenizer.json` (GPT-2 style, `<|endoftext|>` = id 0) with the
//! Hugging Face `tokenizers` trainer, for models tunelab pretrains itself.

use tokenizers::models::bpe::{BPE, BpeTrainerBuilder};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, TokenizerBuilder};

use crate::error::{Error, Result};

/// The end-of-text token every trained tokenizer has, as id 0.
pub const EOS: &str = "<|endoftext|>";

/// Train a byte-level BPE with `vocab_size` entries (special token included) on `texts`; returns
/// the `tokenizer.json` bytes. Deterministic for the same texts.
pub fn train_bpe<I>(texts: I, vocab_size: usize) -> Result<Vec<u8>>
where
    I: Iterator<Item = String> + Send,
{
    if vocab_size < 257 {
        return Err(Error::Input(format!(
            "vocab_size {vocab_size}: a byte-level BPE needs at least 257 entries (256 bytes + {EOS})"
        )));
    }
    let mut trainer = BpeTrainerBuilder::new()
        .vocab_size(vocab_size)
        .min_frequency(2)
        .show_progress(false)
        .special_tokens(vec![AddedToken::from(EOS, true)])
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build();
    let byte_level = ByteLevel::new(false, true, true);
    let mut tokenizer = TokenizerBuilder::new()
        .with_model(BPE::default())
        .with_normalizer(None::<tokenizers::NormalizerWrapper>)
        .with_pre_tokenizer(Some(byte_level))
        .with_post_processor(None::<tokenizers::PostProcessorWrapper>)
        .with_decoder(Some(byte_level))
        .build()
        .map_err(|e| Error::Input(format!("tokenizer: {e}")))?;
    tokenizer
        .train(&mut trainer, texts)
        .map_err(|e| Error::Input(format!("tokenizer training: {e}")))?;
    let json = tokenizer
        .to_string(true)
        .map_err(|e| Error::Input(format!("tokenizer: {e}")))?;
    Ok(json.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hf::Tokenizer;

    #[test]
    fn trained_tokenizer_round_trips_and_has_eos_zero() {
        let texts = (0..200)
            .map(|i| format!("The cat sat on mat number {i}.\ndef f(x):\n    return x + {i}\n"));
        let bytes = train_bpe(texts, 400).unwrap();
        let tok = Tokenizer::from_bytes(&bytes, "trained").unwrap();
        assert_eq!(tok.eos_id, Some(0));
        assert!(
            tok.vocab_size() <= 400 && tok.vocab_size() > 300,
            "{}",
            tok.vocab_size()
        );
        let text = "The cat sat on ünïcode mat 42.\n    return x";
        let ids = tok.encode(text).unwrap();
        assert!(ids.len() < text.len(), "merges are used: {} ids", ids.len());
        assert_eq!(tok.decode(&ids).unwrap(), text);
        // Same input, same bytes.
        let again = train_bpe(
            (0..200).map(|i| {
                format!("The cat sat on mat number {i}.\ndef f(x):\n    return x + {i}\n")
            }),
            400,
        )
        .unwrap();
        assert_eq!(bytes, again);
    }

    #[test]
    fn tiny_vocab_is_refused() {
        assert!(train_bpe(std::iter::empty(), 100).is_err());
    }
}
