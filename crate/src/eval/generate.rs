//! Text generation: greedy or temperature + nucleus (top-p) sampling, streamed token by token.

use burn::tensor::Device;

use crate::error::{Error, Result};
use crate::event::Event;
use crate::hf::chat::{ChatTemplate, Message};
use crate::model::{CausalLm, KvCache, LmView, ids_tensor, read_f32};
use crate::rng::SplitMix64;

/// How to pick each next token.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GenerateOptions {
    pub max_new_tokens: usize,
    /// 0 means greedy decoding.
    pub temperature: f64,
    /// Nucleus sampling mass in (0, 1].
    pub top_p: f64,
    pub seed: u64,
    /// Stop when this id is produced (usually EOS).
    pub stop_id: Option<u32>,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            max_new_tokens: 32,
            temperature: 0.0,
            top_p: 1.0,
            seed: 0,
            stop_id: None,
        }
    }
}

impl GenerateOptions {
    /// Reject settings that cannot be honoured, naming the field.
    pub fn validate(&self) -> Result<()> {
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return Err(Error::setting(
                "temperature",
                format!("must be >= 0, got {}", self.temperature),
            ));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(Error::setting(
                "top_p",
                format!("must be in (0, 1], got {}", self.top_p),
            ));
        }
        Ok(())
    }
}

/// Generate up to `max_new_tokens` after `prompt`, calling `on_token(id)` as each is chosen;
/// generation stops early when it returns false (a stop sequence) or at `stop_id`.
/// Keys and values are cached, so each new token costs one position's forward pass. When the
/// model's `context` is full, the oldest tokens are dropped and the cache is rebuilt.
pub async fn generate(
    model: &CausalLm,
    prompt: &[u32],
    vocab: usize,
    context: usize,
    device: &Device,
    opts: &GenerateOptions,
    mut on_token: impl FnMut(u32) -> bool,
) -> Result<Vec<u32>> {
    opts.validate()?;
    if prompt.is_empty() {
        return Err(Error::Input("the prompt encodes to no tokens".into()));
    }
    let mut rng = SplitMix64(opts.seed);
    let mut ids = prompt.to_vec();
    let mut out = Vec::new();
    let mut cache = KvCache::default();
    let mut feed: Vec<u32> = ids[ids.len().saturating_sub(context)..].to_vec();
    for _ in 0..opts.max_new_tokens {
        if cache.len() + feed.len() > context {
            cache = KvCache::default();
            feed = ids[ids.len() + 1 - context..].to_vec();
        }
        let t = feed.len();
        let logits = model.forward_cached(ids_tensor(&feed, vocab, device)?, &mut cache);
        let last = read_f32(logits.slice_dim(1, t - 1..t)).await?;
        let next = pick(&last, opts, &mut rng);
        out.push(next);
        ids.push(next);
        feed = vec![next];
        if !on_token(next) || Some(next) == opts.stop_id {
            break;
        }
    }
    Ok(out)
}

/// Continue the text `prompt`, emitting `Event::Token` for each piece of text as it is decoded
/// (multi-token characters come out whole). Stops at EOS unless `opts.stop_id` says otherwise.
/// Returns the generated text.
pub async fn stream_text(
    lm: &LmView<'_>,
    prompt: &str,
    opts: &GenerateOptions,
    on_event: &mut dyn FnMut(&Event),
) -> Result<String> {
    let ids = lm.tokenizer()?.encode(prompt)?;
    stream_ids(lm, &ids, opts, on_event).await
}

/// [`stream_text`] after prompt token ids (a rendered chat, tokenized without special tokens).
pub async fn stream_ids(
    lm: &LmView<'_>,
    ids: &[u32],
    opts: &GenerateOptions,
    on_event: &mut dyn FnMut(&Event),
) -> Result<String> {
    let tok = lm.tokenizer()?;
    let mut opts = opts.clone();
    if opts.stop_id.is_none() {
        opts.stop_id = tok.eos_id;
    }
    let mut generated: Vec<u32> = Vec::new();
    let mut shown = String::new();
    let mut decode_err = None;
    let (vocab, context) = (lm.vocab(), lm.context());
    generate(lm.model, ids, vocab, context, lm.device, &opts, |id| {
        generated.push(id);
        match tok.decode(&generated) {
            Ok(text) => {
                if text.len() > shown.len() && text.starts_with(&shown) {
                    on_event(&Event::Token {
                        text: text[shown.len()..].to_string(),
                    });
                    shown = text;
                }
            }
            Err(e) => decode_err = Some(e),
        }
        true
    })
    .await?;
    if let Some(e) = decode_err {
        return Err(e.into());
    }
    Ok(tok.decode(&generated)?)
}

/// Answer `prompt` as a user turn rendered through `template` (with the generation prompt),
/// stopping at the template's end-of-turn token; tokens stream as `Event::Token`. Returns the
/// rendered prompt and the answer.
pub async fn stream_chat(
    lm: &LmView<'_>,
    template: &ChatTemplate,
    prompt: &str,
    opts: &GenerateOptions,
    on_event: &mut dyn FnMut(&Event),
) -> Result<(String, String)> {
    let tok = lm.tokenizer()?;
    let mut opts = opts.clone();
    opts.stop_id = template.end_of_turn_id(tok);
    let rendered = template.render(&[Message::user(prompt)], true)?;
    let ids = tok.encode_plain(&rendered)?;
    let answer = stream_ids(lm, &ids, &opts, on_event).await?;
    Ok((rendered, answer))
}

/// Generate after `prompt` (token ids) until one of `stop` appears in the decoded text, EOS,
/// or `opts.max_new_tokens`. Returns the text before the first stop sequence.
pub async fn generate_until(
    lm: &LmView<'_>,
    prompt: &[u32],
    stop: &[&str],
    opts: &GenerateOptions,
) -> Result<String> {
    let tok = lm.tokenizer()?;
    let mut generated = Vec::new();
    let mut text = String::new();
    let mut failed = None;
    let (model, vocab, context) = (lm.model, lm.vocab(), lm.context());
    generate(model, prompt, vocab, context, lm.device, opts, |id| {
        generated.push(id);
        match tok.decode(&generated) {
            Ok(t) => text = t,
            Err(e) => failed = Some(e),
        }
        failed.is_none() && !stop.iter().any(|s| text.contains(s))
    })
    .await?;
    if let Some(e) = failed {
        return Err(e.into());
    }
    let cut = stop
        .iter()
        .filter_map(|s| text.find(s))
        .min()
        .unwrap_or(text.len());
    text.truncate(cut);
    Ok(text)
}

/// Choose a token from one row of logits.
fn pick(logits: &[f32], opts: &GenerateOptions, rng: &mut SplitMix64) -> u32 {
    let argmax = || {
        logits
            .iter()
            .enumerate()
            .fold((0usize, f32::NEG_INFINITY), |best, (i, &v)| {
                if v > best.1 { (i, v) } else { best }
            })
            .0 as u32
    };
    if opts.temperature == 0.0 {
        return argmax();
    }
    let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
    let mut probs: Vec<(usize, f64)> = logits
        .iter()
        .enumerate()
        .map(|(i, &v)| (i, ((v as f64 - max) / opts.temperature).exp()))
        .collect();
    let sum: f64 = probs.iter().map(|p| p.1).sum();
    probs.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    // Keep the smallest prefix whose mass reaches top_p (always at least one token).
    let mut kept = 0usize;
    let mut mass = 0.0;
    for p in &probs {
        kept += 1;
        mass += p.1 / sum;
        if mass >= opts.top_p {
            break;
        }
    }
    let probs = &probs[..kept];
    let total: f64 = probs.iter().map(|p| p.1).sum();
    let mut r = rng.next_f64() * total;
    for p in probs {
        r -= p.1;
        if r <= 0.0 {
            return p.0 as u32;
        }
    }
    probs[kept - 1].0 as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_argmax_and_top_p_tiny_keeps_only_best() {
        let logits = [0.1, 3.0, 2.9, -1.0];
        let mut rng = SplitMix64(1);
        let greedy = GenerateOptions::default();
        assert_eq!(pick(&logits, &greedy, &mut rng), 1);
        let nucleus = GenerateOptions {
            temperature: 1.0,
            top_p: 1e-6,
            ..Default::default()
        };
        for _ in 0..20 {
            assert_eq!(pick(&logits, &nucleus, &mut rng), 1);
        }
    }

    #[test]
    fn sampling_follows_the_distribution() {
        // p = softmax([0, ln 3]) = [0.25, 0.75]
        let logits = [0.0, 3f32.ln()];
        let opts = GenerateOptions {
            temperature: 1.0,
            ..Default::default()
        };
        let mut rng = SplitMix64(7);
        let n = 20000;
        let ones = (0..n)
            .filter(|_| pick(&logits, &opts, &mut rng) == 1)
            .count();
        let frac = ones as f64 / n as f64;
        assert!((frac - 0.75).abs() < 0.02, "got {frac}");
    }

    #[test]
    fn invalid_options_name_the_flag() {
        let bad = GenerateOptions {
            top_p: 0.0,
            ..Default::default()
        };
        assert!(bad.validate().unwrap_err().to_string().contains("top_p"));
    }
}
