//! Multiple choice by likelihood: `acc` (highest summed log-likelihood), `acc_norm`
//! (log-likelihood per character of the choice, as lm-evaluation-harness) and per-token
//! perplexity accuracy (lowest mean NLL per continuation token, as the paper's harness).

use burn::tensor::Device;

use super::loglik::{Scored, encode_pair, score_tokens};
use super::tasks::McItem;
use crate::error::Result;
use crate::hf::Tokenizer;
use crate::model::CausalLm;

/// How one item was scored.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ItemScore {
    pub line: usize,
    pub scores: Vec<Scored>,
    pub gold: usize,
    pub pred_acc: usize,
    pub pred_acc_norm: usize,
    pub pred_ppl: usize,
}

/// Accuracy of a multiple-choice task under the three variants.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct McResult {
    pub items: usize,
    pub acc: f64,
    pub acc_norm: f64,
    /// Lowest per-token perplexity (the paper's evaluation suite).
    pub ppl_acc: f64,
    /// Items whose input was cut from the left to fit the context.
    pub truncated: usize,
    pub per_item: Vec<ItemScore>,
}

fn argmax(v: impl Iterator<Item = f64>) -> usize {
    v.enumerate()
        .fold(
            (0, f64::NEG_INFINITY),
            |b, (i, x)| if x > b.1 { (i, x) } else { b },
        )
        .0
}

/// Score one item; all its choices go through the model as one batch when `batched`.
pub async fn score_item(
    model: &CausalLm,
    tok: &Tokenizer,
    item: &McItem,
    max_len: usize,
    device: &Device,
    batched: bool,
) -> Result<ItemScore> {
    let pairs = item
        .requests
        .iter()
        .map(|(c, x)| encode_pair(tok, c, x))
        .collect::<Result<Vec<_>>>()?;
    let scores = score_tokens(model, &pairs, max_len, device, batched).await?;
    let pred_acc = argmax(scores.iter().map(|s| s.loglik));
    let pred_acc_norm = argmax(
        scores
            .iter()
            .zip(&item.choices)
            .map(|(s, c)| s.loglik / c.chars().count().max(1) as f64),
    );
    let pred_ppl = argmax(scores.iter().map(|s| s.loglik / s.tokens.max(1) as f64));
    Ok(ItemScore {
        line: item.line,
        scores,
        gold: item.gold,
        pred_acc,
        pred_acc_norm,
        pred_ppl,
    })
}

/// Aggregate item scores.
pub fn summarize(per_item: Vec<ItemScore>) -> McResult {
    let n = per_item.len().max(1) as f64;
    let frac = |f: &dyn Fn(&ItemScore) -> bool| per_item.iter().filter(|i| f(i)).count() as f64 / n;
    McResult {
        items: per_item.len(),
        acc: frac(&|i| i.pred_acc == i.gold),
        acc_norm: frac(&|i| i.pred_acc_norm == i.gold),
        ppl_acc: frac(&|i| i.pred_ppl == i.gold),
        truncated: per_item
            .iter()
            .filter(|i| i.scores.iter().any(|s| s.truncated))
            .count(),
        per_item,
    }
}
