//! GSM8K: k-shot prompts in lm-evaluation-harness's format, greedy decoding until a stop
//! sequence, and its two answer filters (strict `#### N` match and flexible last number) with
//! its exact-match normalisation.

use std::sync::OnceLock;

use regex::Regex;

use super::tasks::GsmItem;
use crate::hf::chat::Message;

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
    p.push_str(&question(item));
    p
}

fn re(cell: &'static OnceLock<Regex>, pattern: &str) -> &'static Regex {
    cell.get_or_init(|| Regex::new(pattern).expect("valid regex"))
}

/// The same prompt as a conversation for a chat model: each shot a user turn and the
/// assistant's answer, then the question (lm-eval's `--apply_chat_template
/// --fewshot_as_multiturn`).
pub fn messages(shots: &[GsmItem], item: &GsmItem) -> Vec<Message> {
    let mut m = Vec::with_capacity(2 * shots.len() + 1);
    for s in shots {
        m.push(Message::user(&question(s)));
        m.push(Message::assistant(&s.answer));
    }
    m.push(Message::user(&question(item)));
    m
}

fn question(item: &GsmItem) -> String {
    format!("Question: {}\nAnswer:", item.question)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hf::chat::ChatTemplate;

    #[test]
    fn chat_prompts_put_each_shot_in_its_own_turns() {
        let item = |q: &str, a: &str| GsmItem {
            question: q.into(),
            answer: a.into(),
            line: 1,
        };
        let shot = item("1 + 1?", "1 + 1 = 2\n#### 2");
        let test = item("2 + 2?", "2 + 2 = 4\n#### 4");
        assert_eq!(
            prompt(std::slice::from_ref(&shot), &test),
            "Question: 1 + 1?\nAnswer: 1 + 1 = 2\n#### 2\n\nQuestion: 2 + 2?\nAnswer:"
        );
        // ChatML, as SmolLM2's and Qwen2's templates write it.
        let chatml = serde_json::json!({
            "chat_template": "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}",
            "eos_token": "<|im_end|>",
        });
        let t = ChatTemplate::from_tokenizer_config(chatml.to_string().as_bytes(), "t.json")
            .unwrap()
            .unwrap();
        assert_eq!(
            t.render(&messages(&[shot], &test), true).unwrap(),
            "<|im_start|>user\nQuestion: 1 + 1?\nAnswer:<|im_end|>\n<|im_start|>assistant\n1 + 1 = 2\n#### 2<|im_end|>\n<|im_start|>user\nQuestion: 2 + 2?\nAnswer:<|im_end|>\n<|im_start|>assistant\n"
        );
    }
}
