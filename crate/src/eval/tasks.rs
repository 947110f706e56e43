//! Benchmark files in their published JSONL layouts, turned into scoring requests exactly as
//! lm-evaluation-harness builds them (task YAMLs and `utils.py` of hellaswag, arc, winogrande,
//! gsm8k, humaneval). Bad lines are reported with file and line number.

use std::io::BufRead;

use serde_json::Value;

use crate::error::{Error, Result};

/// A multiple-choice item: one (context, continuation) request per choice.
#[derive(Debug, Clone, PartialEq)]
pub struct McItem {
    /// (context, continuation) per choice.
    pub requests: Vec<(String, String)>,
    /// The strings lm-eval's `doc_to_choice` returns; their lengths normalise `acc_norm`.
    pub choices: Vec<String>,
    pub gold: usize,
    /// 1-based line in the file.
    pub line: usize,
}

/// A GSM8K problem.
#[derive(Debug, Clone, PartialEq)]
pub struct GsmItem {
    pub question: String,
    /// The worked answer, ending in `#### N`.
    pub answer: String,
    pub line: usize,
}

/// A HumanEval problem.
#[derive(Debug, Clone, PartialEq)]
pub struct CodeProblem {
    pub task_id: String,
    pub prompt: String,
    pub test: String,
    pub entry_point: String,
    pub line: usize,
}

/// Items read from a file and the number of bad lines skipped.
#[derive(Debug, Clone)]
pub struct Loaded<T> {
    pub items: Vec<T>,
    pub skipped: usize,
}

/// Read a JSONL file, parsing each line with `parse`; bad lines fail (naming file and line)
/// or, with `skip_bad`, are counted.
pub fn read_jsonl<T>(
    reader: impl BufRead,
    file: &str,
    skip_bad: bool,
    limit: Option<usize>,
    parse: impl Fn(&Value, usize) -> Result<T, String>,
) -> Result<Loaded<T>> {
    let mut items = Vec::new();
    let mut skipped = 0;
    for (i, line) in reader.lines().enumerate() {
        if limit.is_some_and(|l| items.len() >= l) {
            break;
        }
        let line = line.map_err(|e| Error::Input(format!("{file}: line {}: {e}", i + 1)))?;
        if line.trim().is_empty() {
            continue;
        }
        let parsed = serde_json::from_str::<Value>(&line)
            .map_err(|e| format!("not valid JSON: {e}"))
            .and_then(|v| parse(&v, i + 1));
        match parsed {
            Ok(item) => items.push(item),
            Err(_) if skip_bad => skipped += 1,
            Err(msg) => {
                return Err(Error::Input(format!(
                    "{file}: line {}: {msg} (set `skip_bad_lines` to skip such lines)",
                    i + 1
                )));
            }
        }
    }
    Ok(Loaded { items, skipped })
}

fn str_field<'a>(v: &'a Value, key: &str) -> Result<&'a str, String> {
    v.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("missing string field `{key}`"))
}

fn str_list(v: &Value, key: &str) -> Result<Vec<String>, String> {
    let list = v
        .get(key)
        .and_then(Value::as_array)
        .ok_or_else(|| format!("missing list field `{key}`"))?;
    let out: Vec<String> = list
        .iter()
        .map(|x| x.as_str().map(str::to_string))
        .collect::<Option<_>>()
        .ok_or_else(|| format!("`{key}` must hold strings"))?;
    if out.is_empty() {
        return Err(format!("`{key}` is empty: no choices"));
    }
    Ok(out)
}

/// lm-eval's `hellaswag.utils.preprocess`.
pub fn hellaswag_preprocess(text: &str) -> String {
    let text = text.trim().replace(" [title]", ". ");
    let text = regex_brackets().replace_all(&text, "");
    text.replace("  ", " ")
}

fn regex_brackets() -> &'static regex::Regex {
    static RE: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    RE.get_or_init(|| regex::Regex::new(r"\[.*?\]").expect("valid regex"))
}

/// Python's `str.capitalize()`: first character upper-cased, the rest lower-cased.
fn capitalize(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c
            .to_uppercase()
            .chain(chars.flat_map(char::to_lowercase))
            .collect(),
        None => String::new(),
    }
}

/// HellaSwag (`ctx` or `ctx_a`/`ctx_b`, `activity_label`, `endings`, `label`).
pub fn parse_hellaswag(v: &Value, line: usize) -> Result<McItem, String> {
    let label = str_field(v, "activity_label")?;
    let ctx = match (
        v.get("ctx_a").and_then(Value::as_str),
        v.get("ctx_b").and_then(Value::as_str),
    ) {
        (Some(a), Some(b)) => format!("{a} {}", capitalize(b)),
        _ => str_field(v, "ctx")?.to_string(),
    };
    let query = hellaswag_preprocess(&format!("{label}: {ctx}"));
    let choices: Vec<String> = str_list(v, "endings")?
        .iter()
        .map(|e| hellaswag_preprocess(e))
        .collect();
    let gold = match v.get("label") {
        Some(Value::String(s)) => s
            .parse::<usize>()
            .map_err(|_| format!("label `{s}` is not a number"))?,
        Some(Value::Number(n)) => {
            n.as_u64().ok_or("label must be a non-negative integer")? as usize
        }
        _ => return Err("missing field `label`".into()),
    };
    mc(query, choices, gold, line)
}

fn mc(context: String, choices: Vec<String>, gold: usize, line: usize) -> Result<McItem, String> {
    if gold >= choices.len() {
        return Err(format!(
            "label {gold} is out of range for {} choices",
            choices.len()
        ));
    }
    Ok(McItem {
        requests: choices
            .iter()
            .map(|c| (context.clone(), format!(" {c}")))
            .collect(),
        choices,
        gold,
        line,
    })
}

/// ARC (`question`, `choices.text`, `choices.label`, `answerKey`).
pub fn parse_arc(v: &Value, line: usize) -> Result<McItem, String> {
    let question = str_field(v, "question")?;
    let choices_v = v.get("choices").ok_or("missing field `choices`")?;
    let texts = str_list(choices_v, "text").map_err(|e| format!("choices: {e}"))?;
    let labels = str_list(choices_v, "label").map_err(|e| format!("choices: {e}"))?;
    let key = str_field(v, "answerKey")?;
    let gold = labels
        .iter()
        .position(|l| l == key)
        .ok_or_else(|| format!("answerKey `{key}` is not among the labels {labels:?}"))?;
    mc(format!("Question: {question}\nAnswer:"), texts, gold, line)
}

/// WinoGrande (`sentence` with `_`, `option1`, `option2`, `answer`), with lm-eval's partial
/// scoring: each option fills the blank to make a context; the rest of the sentence is scored.
pub fn parse_winogrande(v: &Value, line: usize) -> Result<McItem, String> {
    let sentence = str_field(v, "sentence")?;
    let idx = sentence.find('_').ok_or("sentence has no `_` blank")?;
    let options = [str_field(v, "option1")?, str_field(v, "option2")?];
    let gold = match str_field(v, "answer")? {
        "1" => 0,
        "2" => 1,
        a => return Err(format!("answer `{a}` must be \"1\" or \"2\"")),
    };
    let target = format!(" {}", sentence[idx + 1..].trim());
    let contexts: Vec<String> = options
        .iter()
        .map(|o| format!("{}{o}", &sentence[..idx]))
        .collect();
    Ok(McItem {
        requests: contexts
            .iter()
            .map(|c| (c.clone(), target.clone()))
            .collect(),
        choices: contexts,
        gold,
        line,
    })
}

/// GSM8K (`question`, `answer` ending in `#### N`).
pub fn parse_gsm8k(v: &Value, line: usize) -> Result<GsmItem, String> {
    let answer = str_field(v, "answer")?;
    if !answer.contains("#### ") {
        return Err("answer has no `#### ` final-answer marker".into());
    }
    Ok(GsmItem {
        question: str_field(v, "question")?.to_string(),
        answer: answer.to_string(),
        line,
    })
}

/// HumanEval (`task_id`, `prompt`, `test`, `entry_point`).
pub fn parse_humaneval(v: &Value, line: usize) -> Result<CodeProblem, String> {
    Ok(CodeProblem {
        task_id: v
            .get("task_id")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| format!("line {line}")),
        prompt: str_field(v, "prompt")?.to_string(),
        test: str_field(v, "test")?.to_string(),
        entry_point: str_field(v, "entry_point")?.to_string(),
        line,
    })
}
