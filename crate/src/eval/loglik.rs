//! Log-likelihood of continuations given contexts, as lm-evaluation-harness's HF backend
//! computes it (`_encode_pair`, `_loglikelihood_tokens`): the context's trailing whitespace
//! moves to the continuation, the pair is encoded whole, the input is cut from the left to the
//! model's context, and the continuation's token log-probabilities are summed.

use burn::tensor::activation::log_softmax;
use burn::tensor::{Bool, Device, Int, Tensor, TensorData};

use crate::error::Result;
use crate::hf::Tokenizer;
use crate::model::{CausalLm, read_f32, read_i64};

/// The score of one (context, continuation) request.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Scored {
    /// Sum of the continuation tokens' log-probabilities (nats).
    pub loglik: f64,
    /// Continuation tokens.
    pub tokens: usize,
    /// Every continuation token is the argmax prediction.
    pub is_greedy: bool,
    /// The input was cut from the left to fit the context.
    pub truncated: bool,
}

/// Context and continuation token ids, as lm-eval's `_encode_pair`.
pub fn encode_pair(
    tok: &Tokenizer,
    context: &str,
    continuation: &str,
) -> Result<(Vec<u32>, Vec<u32>)> {
    let trimmed = context.trim_end();
    let (context, continuation) = if trimmed.len() < context.len() {
        (
            trimmed.to_string(),
            format!("{}{continuation}", &context[trimmed.len()..]),
        )
    } else {
        (context.to_string(), continuation.to_string())
    };
    if context.is_empty() {
        // lm-eval scores a context-free continuation after the end-of-text token.
        let prefix = tok.eos_id.unwrap_or(0);
        return Ok((vec![prefix], tok.encode_plain(&continuation)?));
    }
    let whole = tok.encode_plain(&format!("{context}{continuation}"))?;
    let ctx = tok.encode_plain(&context)?;
    let n = ctx.len().min(whole.len());
    Ok((ctx, whole[n..].to_vec()))
}

/// Score requests given as token ids, `batched` into one forward pass (right-padded) or one
/// pass each. `max_len` is the model's context.
pub async fn score_tokens(
    model: &CausalLm,
    pairs: &[(Vec<u32>, Vec<u32>)],
    max_len: usize,
    device: &Device,
    batched: bool,
) -> Result<Vec<Scored>> {
    if !batched {
        let mut out = Vec::with_capacity(pairs.len());
        for p in pairs {
            out.extend(score_batch(model, std::slice::from_ref(p), max_len, device).await?);
        }
        return Ok(out);
    }
    score_batch(model, pairs, max_len, device).await
}

async fn score_batch(
    model: &CausalLm,
    pairs: &[(Vec<u32>, Vec<u32>)],
    max_len: usize,
    device: &Device,
) -> Result<Vec<Scored>> {
    // Per row: the input tokens, the targets of the continuation and where they start.
    let rows: Vec<(Vec<u32>, Vec<u32>, bool)> = pairs
        .iter()
        .map(|(ctx, cont)| {
            let whole: Vec<u32> = ctx.iter().chain(cont).copied().collect();
            let keep = (max_len + 1).min(whole.len());
            let truncated = whole.len() > max_len + 1;
            let window = &whole[whole.len() - keep..];
            let cont = cont[cont.len().saturating_sub(keep - 1)..].to_vec();
            (window[..window.len() - 1].to_vec(), cont, truncated)
        })
        .collect();
    let (b, l) = (
        rows.len(),
        rows.iter().map(|r| r.0.len()).max().unwrap_or(1),
    );
    let mut ids = vec![0i64; b * l];
    let mut targets = vec![0i64; b * l];
    let mut mask = vec![false; b * l];
    for (r, (input, cont, _)) in rows.iter().enumerate() {
        for (j, &t) in input.iter().enumerate() {
            ids[r * l + j] = t as i64;
            mask[r * l + j] = true;
        }
        let start = input.len() - cont.len();
        for (j, &t) in cont.iter().enumerate() {
            targets[r * l + start + j] = t as i64;
        }
    }
    let ids_t = Tensor::<2, Int>::from_data(TensorData::new(ids, [b, l]), device);
    let mask_t = Tensor::<2, Bool>::from_data(TensorData::new(mask, [b, l]), device);
    let targets_t = Tensor::<3, Int>::from_data(TensorData::new(targets, [b, l, 1]), device);
    let logp = log_softmax(model.forward(ids_t, Some(mask_t)), 2);
    let greedy = logp.clone().argmax(2);
    let picked = read_f32(logp.gather(2, targets_t.clone())).await?;
    let argmax = read_i64(greedy).await?;
    Ok(rows
        .iter()
        .enumerate()
        .map(|(r, (input, cont, truncated))| {
            let start = input.len() - cont.len();
            let mut loglik = 0.0;
            let mut is_greedy = true;
            for (j, &t) in cont.iter().enumerate() {
                let k = r * l + start + j;
                loglik += picked[k] as f64;
                is_greedy &= argmax[k] == t as i64;
            }
            Scored {
                loglik,
                tokens: cont.len(),
                is_greedy,
                truncated: *truncated,
            }
        })
        .collect())
}
