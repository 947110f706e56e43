//! GSM8K: k-shot prompts in lm-evaluation-harness's format, greedy decoding until a stop
//! sequence, and its two answer filters (strict `#### N` match and flexible last number) with
//! its exact-match normalisation.

use std::sync::OnceLock;

use regex::Regex;

use super::tasks::GsmItem;

/// Stop sequences of lm-eval's gsm8k task.
pub const STOP: &[&str] = &["Question:", "</s>", "<|im_end|>"];

/// What lm-eval reports when a filter finds nothing.
pub const INVALID: &str = "[invalid]";

/// The prompt for `item` after `shots` solved examples:
/// `Question: q\nAnswer: a` blocks joined by a blank line, then `Question: q\nAnswer:`.
pub fn prompt(shots: &[GsmItem], item: &GsmItem) -> String {
    let mut p = String::new();
    for s in shots {
        p.push_str(&format!(
            "Question: {}\nAnswer: {}\n\n",
            s.question, s.answer
        ));
    }
    p.push_str(&format!("Question: {}\nAnswer:", item.question));
    p
}

fn re(cell: &'static OnceLock<Regex>, pattern: &str) -> &'static Regex {
    cell.get_or_init(|| Regex::new(pattern).expect("valid regex"))
}

/// Strict filter: the number after the first `#### `.
pub fn strict(text: &str) -> String {
    static R: OnceLock<Regex> = OnceLock::new();
    re(&R, r"#### (\-?[0-9\.\,]+)")
        .captures(text)
        .and_then(|c| c.get(1))
        .map_or(INVALID.to_string(), |m| m.as_str().to_string())
}

/// Flexible filter: the last number-like match (first non-empty group of it).
pub fn flexible(text: &str) -> String {
    static R: OnceLock<Regex> = OnceLock::new();
    re(&R, r"(-?[$0-9.,]{2,})|(-?[0-9]+)")
        .captures_iter(text)
        .last()
        .and_then(|c| c.get(1).or_else(|| c.get(2)))
        .map_or(INVALID.to_string(), |m| m.as_str().to_string())
}

/// lm-eval's exact-match normalisation for gsm8k (`regexes_to_ignore` `,` `\$`
/// `(?s).*#### ` `\.$`, then `ignore_case`); no trimming, as lm-eval.
pub fn normalize(s: &str) -> String {
    static PREFIX: OnceLock<Regex> = OnceLock::new();
    static DOT: OnceLock<Regex> = OnceLock::new();
    let s = s.replace([',', '$'], "");
    let s = re(&PREFIX, r"(?s).*#### ").replace(&s, "").to_string();
    // Python's `$` also matches before a final newline.
    let s = re(&DOT, r"\.(\n?)$").replace(&s, "$1").to_string();
    s.to_lowercase()
}

/// The gold answer of an item, normalised.
pub fn gold(item: &GsmItem) -> String {
    normalize(&item.answer)
}
