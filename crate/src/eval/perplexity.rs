//! Mean next-token negative log-likelihood and perplexity of a token sequence.

use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::error::{Error, Result};
use crate::model::{CausalLm, LmView, ids_tensor, read_f32};

/// Likelihood of a text under a model.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Score {
    /// Tokens in the text.
    pub tokens: usize,
    /// Next-token predictions scored (`tokens - 1`).
    pub predictions: usize,
    /// Mean negative log-likelihood per prediction, in nats.
    pub nll: f64,
    /// `exp(nll)`.
    pub perplexity: f64,
}

/// Per-position NLL of `ids[1..]` given the preceding tokens, for one window that fits the
/// model's context. Returns `len - 1` values.
pub async fn token_nll(
    model: &CausalLm,
    ids: &[u32],
    vocab: usize,
    device: &Device,
) -> Result<Vec<f32>> {
    let t = ids.len();
    let input = ids_tensor(ids, vocab, device)?;
    let logits = model.forward(input, None);
    let logp = log_softmax(logits.slice_dim(1, 0..t - 1), 2);
    let targets: Vec<i64> = ids[1..].iter().map(|&i| i as i64).collect();
    let targets = Tensor::<3, Int>::from_data(TensorData::new(targets, [1, t - 1, 1]), device);
    let picked = logp.gather(2, targets).neg();
    read_f32(picked).await
}

/// Mean next-token NLL and perplexity of `text` under `lm` (long texts are windowed).
pub async fn score_text(lm: &LmView<'_>, text: &str) -> Result<Score> {
    let ids = lm.tokenizer()?.encode(text)?;
    score_ids(lm.model, &ids, lm.vocab(), lm.context(), lm.device).await
}

/// Score `ids`, splitting sequences longer than `context` into windows that overlap by one
/// token, so that every token after the first is predicted exactly once.
pub async fn score_ids(
    model: &CausalLm,
    ids: &[u32],
    vocab: usize,
    context: usize,
    device: &Device,
) -> Result<Score> {
    if ids.len() < 2 {
        return Err(Error::Input(format!(
            "need at least 2 tokens to score, got {}",
            ids.len()
        )));
    }
    let context = context.max(2);
    let mut total = 0.0f64;
    let mut count = 0usize;
    let mut start = 0usize;
    while start + 1 < ids.len() {
        let end = (start + context).min(ids.len());
        for v in token_nll(model, &ids[start..end], vocab, device).await? {
            total += v as f64;
            count += 1;
        }
        start = end - 1;
    }
    let nll = total / count as f64;
    Ok(Score {
        tokens: ids.len(),
        predictions: count,
        nll,
        perplexity: nll.exp(),
    })
}
