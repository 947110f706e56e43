//! Forgetting evals built from held-out source-domain text, in the published JSONL layouts so the
//! same scorers (lm-evaluation-harness semantics) run them:
//! - HellaSwag layout: a sentence and the first half of the next as the context, its real
//!   second half vs. three second halves of other sentences (similar length) as endings.
//! - ARC layout: a sentence's beginning as the question, its real ending (last few words) vs.
//!   three endings of other sentences as the choices.
//! - WinoGrande layout: a sentence with one word blanked, the real word vs. another word of the
//!   text as the two options (the rest of the sentence is what gets scored).
//!
//! Items come from a seeded shuffle, so the same text and seed give the same files.

use crate::rng::SplitMix64;

/// Abbreviations after which a full stop does not end a sentence.
const ABBREVIATIONS: &[&str] = &[
    "Mr", "Mrs", "Dr", "St", "Messrs", "Mme", "Capt", "Col", "Gen",
];

/// Split a paragraph into sentences at `.`, `!` or `?` (and closing quotes) followed by a space
/// and an upper-case letter or opening quote.
pub fn sentences(paragraph: &str) -> Vec<String> {
    let chars: Vec<char> = paragraph.chars().collect();
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < chars.len() {
        if matches!(chars[i], '.' | '!' | '?') {
            let mut end = i + 1;
            while end < chars.len() && matches!(chars[end], '"' | '\'' | '”' | '’' | ')') {
                end += 1;
            }
            let next_starts = end + 1 < chars.len()
                && chars[end] == ' '
                && (chars[end + 1].is_uppercase() || matches!(chars[end + 1], '"' | '“' | '\''));
            let word: String = chars[start..i]
                .iter()
                .rev()
                .take_while(|c| c.is_alphabetic())
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            if next_starts && !(chars[i] == '.' && ABBREVIATIONS.contains(&word.as_str())) {
                out.push(
                    chars[start..end]
                        .iter()
                        .collect::<String>()
                        .trim()
                        .to_string(),
                );
                start = end + 1;
                i = end;
            }
        }
        i += 1;
    }
    let rest: String = chars[start.min(chars.len())..].iter().collect();
    if !rest.trim().is_empty() {
        out.push(rest.trim().to_string());
    }
    out
}

/// The three eval files (JSON lines) built from held-out text.
#[derive(Debug, Clone, PartialEq)]
pub struct ForgettingSets {
    pub hellaswag: Vec<serde_json::Value>,
    pub arc: Vec<serde_json::Value>,
    pub winogrande: Vec<serde_json::Value>,
}

fn pick<'a, T>(rng: &mut SplitMix64, v: &'a [T]) -> &'a T {
    &v[rng.next_u64() as usize % v.len()]
}

/// `n` distractors from `pool` (none equal to `gold`), preferring similar character length.
fn distractors(rng: &mut SplitMix64, pool: &[String], gold: &str, n: usize) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for _ in 0..200 {
        if out.len() == n {
            break;
        }
        let c = pick(rng, pool);
        let ratio = c.len() as f64 / gold.len().max(1) as f64;
        if c != gold && (0.6..1.6).contains(&ratio) && !out.contains(c) {
            out.push(c.clone());
        }
    }
    out
}

/// Put `gold` among `others` at a random position; returns (choices, gold index).
fn place(rng: &mut SplitMix64, gold: &str, mut others: Vec<String>) -> (Vec<String>, usize) {
    let at = rng.next_u64() as usize % (others.len() + 1);
    others.insert(at, gold.to_string());
    (others, at)
}

/// A sentence of at least 10 words cut in the middle: (first half, second half).
fn split_half(s: &str) -> Option<(String, String)> {
    let w: Vec<&str> = s.split(' ').collect();
    (w.len() >= 10).then(|| {
        let mid = w.len() / 2;
        (w[..mid].join(" "), w[mid..].join(" "))
    })
}

impl ForgettingSets {
    /// `hellaswag.jsonl`, `arc.jsonl` and `winogrande.jsonl`.
    pub fn files(&self) -> Vec<crate::files::File> {
        use crate::files::File;
        vec![
            File::jsonl("hellaswag.jsonl", &self.hellaswag),
            File::jsonl("arc.jsonl", &self.arc),
            File::jsonl("winogrande.jsonl", &self.winogrande),
        ]
    }
}

/// Build up to `n` items of each layout from `text` (paragraphs separated by blank lines).
pub fn build(text: &str, n: usize, seed: u64) -> ForgettingSets {
    let mut rng = SplitMix64(seed);
    let paragraphs: Vec<Vec<String>> = text
        .split("\n\n")
        .map(|p| sentences(&p.split_whitespace().collect::<Vec<_>>().join(" ")))
        .filter(|s| !s.is_empty())
        .collect();
    let all: Vec<String> = paragraphs
        .iter()
        .flatten()
        .filter(|s| (40..=220).contains(&s.len()))
        .cloned()
        .collect();
    let words: Vec<String> = all
        .iter()
        .flat_map(|s| s.split(' '))
        .filter(|w| w.len() >= 3 && w.chars().all(|c| c.is_ascii_lowercase()))
        .map(str::to_string)
        .collect();

    // Second halves of sentences: the pool of HellaSwag endings.
    let halves: Vec<String> = all
        .iter()
        .filter_map(|s| split_half(s))
        .map(|(_, b)| b)
        .collect();
    let mut order: Vec<usize> = (0..paragraphs.len()).collect();
    rng.shuffle(&mut order);
    let mut hellaswag = Vec::new();
    for &p in &order {
        if hellaswag.len() == n {
            break;
        }
        let s = &paragraphs[p];
        if s.len() < 2 {
            continue;
        }
        let k = 1 + rng.next_u64() as usize % (s.len() - 1);
        let Some((first, gold)) = split_half(&s[k]) else {
            continue;
        };
        let ctx = format!("{} {first}", s[k - 1]);
        if ctx.len() > 500 {
            continue;
        }
        let others = distractors(&mut rng, &halves, &gold, 3);
        if others.len() < 3 {
            continue;
        }
        let (endings, label) = place(&mut rng, &gold, others);
        hellaswag.push(serde_json::json!({
            "ind": hellaswag.len(), "activity_label": "Story", "ctx": ctx,
            "endings": endings, "label": label.to_string(), "split": "heldout",
        }));
    }

    let mut sentence_order: Vec<usize> = (0..all.len()).collect();
    rng.shuffle(&mut sentence_order);
    let tail = |s: &str, k: usize| -> Option<(String, String)> {
        let w: Vec<&str> = s.split(' ').collect();
        (w.len() >= k + 5).then(|| (w[..w.len() - k].join(" "), w[w.len() - k..].join(" ")))
    };
    let endings: Vec<String> = all.iter().filter_map(|s| tail(s, 4)).map(|t| t.1).collect();
    let mut arc = Vec::new();
    let mut winogrande = Vec::new();
    for &i in &sentence_order {
        let s = &all[i];
        if arc.len() < n
            && let Some((stem, gold)) = tail(s, 4)
        {
            let others = distractors(&mut rng, &endings, &gold, 3);
            if others.len() == 3 {
                let (texts, at) = place(&mut rng, &gold, others);
                let labels = ["A", "B", "C", "D"];
                arc.push(serde_json::json!({
                    "id": format!("heldout-{i}"), "question": stem,
                    "choices": {"text": texts, "label": labels},
                    "answerKey": labels[at],
                }));
                continue;
            }
        }
        if winogrande.len() < n {
            let w: Vec<&str> = s.split(' ').collect();
            // Blank a lower-case word with at least three words on each side.
            let candidates: Vec<usize> = (3..w.len().saturating_sub(3))
                .filter(|&j| w[j].len() >= 3 && w[j].chars().all(|c| c.is_ascii_lowercase()))
                .collect();
            if candidates.is_empty() {
                continue;
            }
            let j = *pick(&mut rng, &candidates);
            let other = distractors(&mut rng, &words, w[j], 1);
            let Some(other) = other.first() else { continue };
            let sentence = [&w[..j], &["_"], &w[j + 1..]].concat().join(" ");
            let gold_first = rng.next_u64().is_multiple_of(2);
            let (o1, o2) = if gold_first {
                (w[j], other.as_str())
            } else {
                (other.as_str(), w[j])
            };
            winogrande.push(serde_json::json!({
                "sentence": sentence, "option1": o1, "option2": o2,
                "answer": if gold_first { "1" } else { "2" },
            }));
        }
        if arc.len() == n && winogrande.len() == n {
            break;
        }
    }
    ForgettingSets {
        hellaswag,
        arc,
        winogrande,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::tasks;

    #[test]
    fn splits_sentences_but_not_abbreviations() {
        let s =
            sentences("Mr. Knightley came in. \"Is it so?\" said Emma! Then she left the room.");
        assert_eq!(
            s,
            [
                "Mr. Knightley came in.",
                "\"Is it so?\" said Emma!",
                "Then she left the room."
            ]
        );
    }

    #[test]
    fn items_parse_in_the_published_layouts_and_are_deterministic() {
        // Varied sentences (numbers differ), so every item finds distinct distractors.
        let text: String = (0..60)
            .map(|i| {
                format!(
                    "The morning of day {i} was cold and grey over the little town. She walked slowly to the gate of house number {} in the lane. Nobody answered when she knocked at the door {} times that day. At last servant {} opened it and looked at her in great surprise.\n\n",
                    i * 7,
                    i % 5 + 2,
                    i * 3
                )
            })
            .collect();
        let sets = build(&text, 10, 7);
        assert_eq!(sets, build(&text, 10, 7));
        assert_eq!(sets.hellaswag.len(), 10);
        assert_eq!(sets.arc.len(), 10);
        assert_eq!(sets.winogrande.len(), 10);
        for v in &sets.hellaswag {
            let item = tasks::parse_hellaswag(v, 1).unwrap();
            assert_eq!(item.choices.len(), 4);
        }
        for v in &sets.arc {
            let item = tasks::parse_arc(v, 1).unwrap();
            assert_eq!(item.choices.len(), 4);
        }
        for v in &sets.winogrande {
            let item = tasks::parse_winogrande(v, 1).unwrap();
            assert_ne!(item.choices[0], item.choices[1]);
        }
    }
}
