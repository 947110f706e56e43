//! Building an experiment's eval tasks from in-memory data and scoring a model on them, the same
//! natively (the runner reads files) and in the browser (the page fetches them).

use super::config::{CodeEval, Forgetting, LearningMetric, Target};
use super::results::{FORGETTING_SCORE, Metrics};
use crate::error::Result;
use crate::eval::suite::{self, EvalOptions, Task, TaskData, TaskKind};
use crate::event::Event;
use crate::hf::Tokenizer;
use crate::hf::chat::ChatTemplate;
use crate::model::LmView;
use crate::train::data::{self, DataOptions, Dataset, Format, Regime};
use crate::train::trainer::evaluate_loss;

/// A target's learning metric, ready to score.
pub struct TargetEval {
    pub name: String,
    pub task: Task,
    /// Instruction-format test set whose answer loss is also reported (GSM8K-style targets).
    pub test_loss: Option<Dataset>,
    pub max_gen_toks: usize,
    /// GSM8K prompts (and the answer-loss examples) go through this chat template.
    pub chat_template: Option<ChatTemplate>,
    /// HumanEval problems scored beside the learning metric, with how to sample them.
    pub code: Option<(Task, CodeEval)>,
}

/// `text` cut at the first paragraph break after `max_chars` characters (all of it if None).
pub fn cap_text(text: &str, max_chars: Option<usize>) -> String {
    match max_chars {
        Some(m) if text.len() > m => {
            let mut cut = m;
            while !text.is_char_boundary(cut) {
                cut += 1;
            }
            match text[cut..].find("\n\n") {
                Some(i) => text[..cut + i + 1].to_string(),
                None => text.to_string(),
            }
        }
        _ => text.to_string(),
    }
}

/// What scoring a target needs from its config (the browser sends it as JSON).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EvalSpec {
    pub name: String,
    pub metric: LearningMetric,
    /// Sequence length of the answer-loss examples.
    pub seq_len: usize,
    #[serde(default)]
    pub test_chars: Option<usize>,
    #[serde(default = "default_gen")]
    pub max_gen_toks: usize,
}

fn default_gen() -> usize {
    128
}

impl From<&Target> for EvalSpec {
    fn from(t: &Target) -> Self {
        EvalSpec {
            name: t.name.clone(),
            metric: t.metric,
            seq_len: t.seq_len,
            test_chars: t.test_chars,
            max_gen_toks: t.max_gen_toks,
        }
    }
}

/// The learning task of `t` from its test data: GSM8K-layout JSONL bytes for the `gsm8k`
/// metric, text for `perplexity` (capped at `t.test_chars`). With `chat_template`, GSM8K is
/// prompted and its answers scored as conversations (as a chat model's training data is read).
pub fn target_eval(
    t: &EvalSpec,
    test: &[u8],
    tok: &Tokenizer,
    chat_template: Option<ChatTemplate>,
) -> Result<TargetEval> {
    let file = format!("targets.{}.test", t.name);
    let (task, test_loss) = match t.metric {
        LearningMetric::Gsm8k | LearningMetric::AnswerLoss => {
            let task = suite::read_task(
                &t.name,
                TaskKind::Gsm8k,
                (&file, &mut &test[..]),
                None,
                false,
                None,
            )?;
            let opts = DataOptions {
                regime: Some(Regime::Ift),
                seq_len: t.seq_len,
                skip_bad_lines: false,
                pad_id: tok.eos_id.unwrap_or(0),
                chat_template: chat_template.clone(),
            };
            (
                task,
                Some(data::read(test, &file, Format::JSONL, tok, &opts)?),
            )
        }
        LearningMetric::Perplexity => {
            let text = cap_text(&String::from_utf8_lossy(test), t.test_chars);
            let task = Task {
                name: t.name.clone(),
                kind: TaskKind::Perplexity,
                data: TaskData::Text(vec![text]),
                skipped: 0,
            };
            (task, None)
        }
    };
    Ok(TargetEval {
        name: t.name.clone(),
        task,
        test_loss,
        max_gen_toks: t.max_gen_toks,
        chat_template,
        code: None,
    })
}

/// Contents of the forgetting evals named in a config (JSONL bytes, source text).
#[derive(Default)]
pub struct ForgettingData {
    pub hellaswag: Option<Vec<u8>>,
    pub arc: Option<Vec<u8>>,
    pub winogrande: Option<Vec<u8>>,
    pub perplexity: Option<String>,
}

/// The multiple-choice forgetting tasks (at most `f.limit` items each) and the source
/// perplexity task (`source`, capped at `f.perplexity_chars`).
pub fn forgetting_tasks(f: &Forgetting, d: &ForgettingData) -> Result<Vec<Task>> {
    let mut tasks = Vec::new();
    for (name, kind, bytes, file) in [
        ("hellaswag", TaskKind::Hellaswag, &d.hellaswag, &f.hellaswag),
        ("arc", TaskKind::Arc, &d.arc, &f.arc),
        (
            "winogrande",
            TaskKind::Winogrande,
            &d.winogrande,
            &f.winogrande,
        ),
    ] {
        if let Some(bytes) = bytes {
            let file = file.clone().unwrap_or_else(|| name.to_string());
            tasks.push(suite::read_task(
                name,
                kind,
                (&file, &mut &bytes[..]),
                None,
                false,
                f.limit,
            )?);
        }
    }
    if let Some(text) = &d.perplexity {
        tasks.push(Task {
            name: "source".into(),
            kind: TaskKind::Perplexity,
            data: TaskData::Text(vec![cap_text(text, f.perplexity_chars)]),
            skipped: 0,
        });
    }
    Ok(tasks)
}

/// Flatten an eval report into `task/metric` keys; the multiple-choice mean `acc_norm` becomes
/// [`FORGETTING_SCORE`].
fn metrics_of(report: &suite::EvalReport, into: &mut Metrics) {
    for m in &report.metrics {
        let key = if m.task.starts_with("forgetting[") {
            if m.metric != "score_acc_norm" {
                continue;
            }
            FORGETTING_SCORE.to_string()
        } else {
            format!("{}/{}", m.task, m.metric)
        };
        into.insert(key, m.value);
    }
}

/// Score `lm`'s model on the forgetting tasks and, if given, one target's learning task.
pub async fn evaluate(
    lm: &LmView<'_>,
    forgetting: &[Task],
    target: Option<&TargetEval>,
    batch: usize,
    on_event: &mut dyn FnMut(&Event),
) -> Result<Metrics> {
    let mut metrics = Metrics::new();
    let mut opts = EvalOptions {
        shots: 0,
        ..EvalOptions::default()
    };
    if !forgetting.is_empty() {
        let report = suite::run(lm, forgetting, &opts, on_event).await?;
        metrics_of(&report, &mut metrics);
    }
    if let Some(t) = target {
        opts.max_gen_toks = t.max_gen_toks;
        opts.chat_template = t.chat_template.clone();
        let report = suite::run(lm, std::slice::from_ref(&t.task), &opts, on_event).await?;
        metrics_of(&report, &mut metrics);
        if let Some((task, c)) = &t.code {
            let opts = EvalOptions {
                max_gen_toks: c.max_gen_toks,
                samples: c.samples,
                temperature: c.temperature,
                top_p: c.top_p,
                allow_exec: c.execute,
                ..opts.clone()
            };
            let report = suite::run(lm, std::slice::from_ref(task), &opts, on_event).await?;
            metrics_of(&report, &mut metrics);
        }
        if let Some(d) = &t.test_loss {
            let loss = evaluate_loss(lm.model, lm.device, d, batch).await?;
            metrics.insert(format!("{}/answer_loss", t.name), loss);
        }
    }
    Ok(metrics)
}
