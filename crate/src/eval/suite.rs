//! Running evaluation tasks on a loaded model and collecting every metric with its variant:
//! what a model learned (GSM8K, HumanEval, perplexity) and what it forgot (multiple choice).

use std::io::BufRead;

use super::code::{self, Diversity};
use super::generate::{GenerateOptions, generate_until};
use super::gsm8k;
use super::multiple_choice::{self, McResult};
use super::perplexity;
use super::tasks::{self, CodeProblem, GsmItem, McItem};
use crate::error::{Error, Result};
use crate::event::{Event, Progress};
use crate::hf::chat::ChatTemplate;
use crate::model::LmView;

/// The task families tunelab scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskKind {
    Hellaswag,
    Arc,
    Winogrande,
    Gsm8k,
    Humaneval,
    Perplexity,
}

impl std::str::FromStr for TaskKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "hellaswag" => Self::Hellaswag,
            "arc" | "arc_challenge" | "arc_easy" => Self::Arc,
            "winogrande" => Self::Winogrande,
            "gsm8k" => Self::Gsm8k,
            "humaneval" => Self::Humaneval,
            "perplexity" | "ppl" => Self::Perplexity,
            _ => {
                return Err(format!(
                    "unknown task `{s}`; expected hellaswag, arc, winogrande, gsm8k, humaneval or perplexity"
                ));
            }
        })
    }
}

/// A task's items, parsed.
pub enum TaskData {
    MultipleChoice(Vec<McItem>),
    Gsm8k {
        test: Vec<GsmItem>,
        train: Vec<GsmItem>,
    },
    Code(Vec<CodeProblem>),
    /// Documents to score.
    Text(Vec<String>),
}

/// A task ready to run.
pub struct Task {
    /// Name shown in results (e.g. `arc` or `arc_challenge`).
    pub name: String,
    pub kind: TaskKind,
    pub data: TaskData,
    /// Bad lines skipped while reading.
    pub skipped: usize,
}

/// Read a task from its file(s) in the published layout.
pub fn read_task(
    name: &str,
    kind: TaskKind,
    file: (&str, &mut dyn BufRead),
    train: Option<(&str, &mut dyn BufRead)>,
    skip_bad: bool,
    limit: Option<usize>,
) -> Result<Task> {
    let (fname, reader) = file;
    let mc = |parse: fn(&serde_json::Value, usize) -> Result<McItem, String>,
              r: &mut dyn BufRead| {
        tasks::read_jsonl(r, fname, skip_bad, limit, parse)
    };
    let (data, skipped) = match kind {
        TaskKind::Hellaswag => mc(tasks::parse_hellaswag, reader)
            .map(|l| (TaskData::MultipleChoice(l.items), l.skipped))?,
        TaskKind::Arc => {
            mc(tasks::parse_arc, reader).map(|l| (TaskData::MultipleChoice(l.items), l.skipped))?
        }
        TaskKind::Winogrande => mc(tasks::parse_winogrande, reader)
            .map(|l| (TaskData::MultipleChoice(l.items), l.skipped))?,
        TaskKind::Gsm8k => {
            let test = tasks::read_jsonl(reader, fname, skip_bad, limit, tasks::parse_gsm8k)?;
            let train = match train {
                Some((tname, r)) => {
                    tasks::read_jsonl(r, tname, skip_bad, None, tasks::parse_gsm8k)?.items
                }
                None => Vec::new(),
            };
            (
                TaskData::Gsm8k {
                    test: test.items,
                    train,
                },
                test.skipped,
            )
        }
        TaskKind::Humaneval => {
            let l = tasks::read_jsonl(reader, fname, skip_bad, limit, tasks::parse_humaneval)?;
            (TaskData::Code(l.items), l.skipped)
        }
        TaskKind::Perplexity => {
            let mut docs = Vec::new();
            let mut text = String::new();
            let jsonl = fname.ends_with(".jsonl") || fname.ends_with(".json");
            for (i, line) in reader.lines().enumerate() {
                let line =
                    line.map_err(|e| Error::Input(format!("{fname}: line {}: {e}", i + 1)))?;
                if jsonl {
                    if line.trim().is_empty() {
                        continue;
                    }
                    let v: serde_json::Value = serde_json::from_str(&line).map_err(|e| {
                        Error::Input(format!("{fname}: line {}: not valid JSON: {e}", i + 1))
                    })?;
                    let t = v.get("text").and_then(|t| t.as_str()).ok_or_else(|| {
                        Error::Input(format!(
                            "{fname}: line {}: missing string field `text`",
                            i + 1
                        ))
                    })?;
                    docs.push(t.to_string());
                    if limit.is_some_and(|l| docs.len() >= l) {
                        break;
                    }
                } else {
                    text.push_str(&line);
                    text.push('\n');
                }
            }
            if !jsonl {
                docs.push(text);
            }
            (TaskData::Text(docs), 0)
        }
    };
    Ok(Task {
        name: name.to_string(),
        kind,
        data,
        skipped,
    })
}

/// Settings of an evaluation run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EvalOptions {
    /// Few-shot examples for GSM8K (taken in file order from the train file).
    pub shots: usize,
    pub max_gen_toks: usize,
    /// Samples per code problem.
    pub samples: usize,
    pub temperature: f64,
    pub top_p: f64,
    pub seed: u64,
    /// Execute generated code (HumanEval) with the system python3.
    pub allow_exec: bool,
    pub exec_timeout_s: f64,
    /// Score the choices of an item in one batched forward pass.
    pub batched: bool,
    /// Prompt GSM8K through this chat template (the question as a user turn, few-shot examples
    /// as earlier turns), stopping at its end-of-turn token.
    #[serde(skip)]
    pub chat_template: Option<ChatTemplate>,
}

impl Default for EvalOptions {
    fn default() -> Self {
        EvalOptions {
            shots: 5,
            max_gen_toks: 256,
            samples: 10,
            temperature: 0.2,
            top_p: 0.95,
            seed: 0,
            allow_exec: false,
            exec_timeout_s: 10.0,
            batched: true,
            chat_template: None,
        }
    }
}

/// One number of the results table.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Metric {
    pub task: String,
    pub metric: String,
    /// How the number is computed (e.g. `highest summed log-likelihood`).
    pub variant: String,
    pub value: f64,
    pub items: usize,
}

/// Everything an evaluation produced.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct EvalReport {
    pub metrics: Vec<Metric>,
    /// Per-task details (per-item scores, generations).
    pub details: serde_json::Map<String, serde_json::Value>,
    /// Notes such as "execution disabled" or truncation counts.
    pub notes: Vec<String>,
}

impl EvalReport {
    fn push(&mut self, task: &str, metric: &str, variant: &str, value: f64, items: usize) {
        self.metrics.push(Metric {
            task: task.into(),
            metric: metric.into(),
            variant: variant.into(),
            value,
            items,
        });
    }

    /// The value of `metric` for `task`, if present.
    pub fn get(&self, task: &str, metric: &str) -> Option<f64> {
        self.metrics
            .iter()
            .find(|m| m.task == task && m.metric == metric)
            .map(|m| m.value)
    }
}

const VARIANT_ACC: &str = "highest summed log-likelihood";
const VARIANT_NORM: &str = "highest log-likelihood per character (lm-eval acc_norm)";
const VARIANT_PPL: &str = "lowest per-token perplexity (paper's harness)";

/// Run `tasks` on the lm's model, in order, reporting item progress.
pub async fn run(
    lm: &LmView<'_>,
    tasks: &[Task],
    opts: &EvalOptions,
    on_event: &mut dyn FnMut(&Event),
) -> Result<EvalReport> {
    let mut report = EvalReport::default();
    let mut mc_results: Vec<(String, McResult)> = Vec::new();
    for task in tasks {
        if task.skipped > 0 {
            report
                .notes
                .push(format!("{}: {} bad lines skipped", task.name, task.skipped));
        }
        match &task.data {
            TaskData::MultipleChoice(items) => {
                let r = run_mc(lm, task, items, opts, on_event).await?;
                report.push(&task.name, "acc", VARIANT_ACC, r.acc, r.items);
                report.push(&task.name, "acc_norm", VARIANT_NORM, r.acc_norm, r.items);
                report.push(&task.name, "ppl_acc", VARIANT_PPL, r.ppl_acc, r.items);
                if r.truncated > 0 {
                    report.notes.push(format!(
                        "{}: {} items cut from the left to fit the context",
                        task.name, r.truncated
                    ));
                }
                report.details.insert(
                    task.name.clone(),
                    serde_json::to_value(&r).unwrap_or_default(),
                );
                mc_results.push((task.name.clone(), r));
            }
            TaskData::Gsm8k { test, train } => {
                run_gsm8k(lm, task, test, train, opts, on_event, &mut report).await?
            }
            TaskData::Code(problems) => {
                run_code(lm, task, problems, opts, on_event, &mut report).await?
            }
            TaskData::Text(docs) => run_perplexity(lm, task, docs, on_event, &mut report).await?,
        }
    }
    if !mc_results.is_empty() {
        let n = mc_results.len() as f64;
        let names: Vec<&str> = mc_results.iter().map(|(n, _)| n.as_str()).collect();
        let task = format!("forgetting[{}]", names.join("+"));
        let items = mc_results.iter().map(|(_, r)| r.items).sum();
        for (metric, variant, f) in [
            (
                "acc",
                VARIANT_ACC,
                (|r: &McResult| r.acc) as fn(&McResult) -> f64,
            ),
            ("acc_norm", VARIANT_NORM, |r: &McResult| r.acc_norm),
            ("ppl_acc", VARIANT_PPL, |r: &McResult| r.ppl_acc),
        ] {
            let mean = mc_results.iter().map(|(_, r)| f(r)).sum::<f64>() / n;
            report.push(
                &task,
                &format!("score_{metric}"),
                &format!("mean accuracy, {variant}"),
                mean,
                items,
            );
        }
    }
    Ok(report)
}

fn progress(task: &str, done: usize, total: usize) -> Event {
    Event::Progress(Progress::items(task, done as u64, Some(total as u64)))
}

async fn run_mc(
    lm: &LmView<'_>,
    task: &Task,
    items: &[McItem],
    opts: &EvalOptions,
    on_event: &mut dyn FnMut(&Event),
) -> Result<McResult> {
    let tok = lm.tokenizer()?;
    let mut per_item = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        per_item.push(
            multiple_choice::score_item(lm.model, tok, item, lm.context(), lm.device, opts.batched)
                .await?,
        );
        on_event(&progress(&task.name, i + 1, items.len()));
    }
    Ok(multiple_choice::summarize(per_item))
}

/// The model's context and the new tokens a generation task may use (at most context − 1).
fn generation_budget(lm: &LmView<'_>, opts: &EvalOptions) -> (usize, usize) {
    let context = lm.context();
    (context, opts.max_gen_toks.min(context - 1))
}

/// Prompt ids cut from the left so that `max_gen` new tokens still fit the context.
fn fit_prompt(ids: Vec<u32>, context: usize, max_gen: usize) -> (Vec<u32>, bool) {
    let room = context.saturating_sub(max_gen).max(1);
    if ids.len() > room {
        (ids[ids.len() - room..].to_vec(), true)
    } else {
        (ids, false)
    }
}

async fn run_gsm8k(
    lm: &LmView<'_>,
    task: &Task,
    test: &[GsmItem],
    train: &[GsmItem],
    opts: &EvalOptions,
    on_event: &mut dyn FnMut(&Event),
    report: &mut EvalReport,
) -> Result<()> {
    let tok = lm.tokenizer()?;
    let (context, max_gen) = generation_budget(lm, opts);
    let shots = &train[..opts.shots.min(train.len())];
    if shots.len() < opts.shots {
        report.notes.push(format!(
            "{}: {} of {} few-shot examples available (pass train=FILE)",
            task.name,
            shots.len(),
            opts.shots
        ));
    }
    let chat = opts.chat_template.as_ref();
    let gen_opts = GenerateOptions {
        max_new_tokens: max_gen,
        temperature: 0.0,
        top_p: 1.0,
        seed: opts.seed,
        stop_id: chat.map_or(tok.eos_id, |c| c.end_of_turn_id(tok)),
    };
    let (mut strict_ok, mut flex_ok, mut truncated) = (0usize, 0usize, 0usize);
    let mut outputs = Vec::new();
    for (i, item) in test.iter().enumerate() {
        let prompt = match chat {
            Some(c) => c.render(&gsm8k::messages(shots, item), true)?,
            None => gsm8k::prompt(shots, item),
        };
        let (ids, cut) = fit_prompt(tok.encode_plain(&prompt)?, context, max_gen);
        truncated += cut as usize;
        let text = generate_until(lm, &ids, gsm8k::STOP, &gen_opts).await?;
        let gold = gsm8k::gold(item);
        let (s, f) = (gsm8k::strict(&text), gsm8k::flexible(&text));
        strict_ok += (gsm8k::normalize(&s) == gold) as usize;
        flex_ok += (gsm8k::normalize(&f) == gold) as usize;
        outputs.push(serde_json::json!({"line": item.line, "output": text, "strict": s, "flexible": f, "gold": gold}));
        on_event(&progress(&task.name, i + 1, test.len()));
    }
    let n = test.len().max(1) as f64;
    let how = if chat.is_some() { " chat" } else { "" };
    report.push(
        &task.name,
        "exact_match_strict",
        &format!("{}-shot{how}, greedy, number after `#### `", shots.len()),
        strict_ok as f64 / n,
        test.len(),
    );
    report.push(
        &task.name,
        "exact_match_flexible",
        &format!("{}-shot{how}, greedy, last number", shots.len()),
        flex_ok as f64 / n,
        test.len(),
    );
    if truncated > 0 {
        report.notes.push(format!(
            "{}: {truncated} prompts cut from the left to fit the context",
            task.name
        ));
    }
    report
        .details
        .insert(task.name.clone(), serde_json::Value::Array(outputs));
    Ok(())
}

async fn run_code(
    lm: &LmView<'_>,
    task: &Task,
    problems: &[CodeProblem],
    opts: &EvalOptions,
    on_event: &mut dyn FnMut(&Event),
    report: &mut EvalReport,
) -> Result<()> {
    let tok = lm.tokenizer()?;
    let (context, max_gen) = generation_budget(lm, opts);
    let executing = opts.allow_exec && cfg!(feature = "native");
    if !executing {
        report.notes.push(format!(
            "{}: generated code was not executed ({}), so pass@k is not reported",
            task.name,
            if cfg!(feature = "native") {
                "set `allow_exec` to run it with python3"
            } else {
                "execution is unavailable in the browser"
            }
        ));
    }
    let mut pass_rates: Vec<(usize, usize)> = Vec::new();
    let mut div: Vec<Diversity> = Vec::new();
    let mut details = Vec::new();
    let total = problems.len() * opts.samples;
    for (pi, p) in problems.iter().enumerate() {
        let (ids, _) = fit_prompt(tok.encode_plain(&p.prompt)?, context, max_gen);
        let mut samples = Vec::with_capacity(opts.samples);
        for s in 0..opts.samples {
            let gen_opts = GenerateOptions {
                max_new_tokens: max_gen,
                temperature: opts.temperature,
                top_p: opts.top_p,
                seed: opts.seed.wrapping_add((pi * opts.samples + s) as u64),
                stop_id: tok.eos_id,
            };
            samples.push(generate_until(lm, &ids, code::STOP, &gen_opts).await?);
            on_event(&progress(&task.name, pi * opts.samples + s + 1, total));
        }
        let passed: Option<Vec<bool>> = if executing {
            Some(exec_all(p, &samples, opts)?)
        } else {
            None
        };
        if let Some(ok) = &passed {
            pass_rates.push((samples.len(), ok.iter().filter(|&&b| b).count()));
        }
        div.push(code::diversity(&samples, passed.as_deref()));
        details
            .push(serde_json::json!({"task_id": p.task_id, "samples": samples, "passed": passed}));
    }
    let n = problems.len();
    for k in [1usize, 10, 100] {
        if !pass_rates.is_empty() && k <= opts.samples {
            let v = pass_rates
                .iter()
                .map(|&(n, c)| code::pass_at_k(n, c, k))
                .sum::<f64>()
                / pass_rates.len() as f64;
            report.push(
                &task.name,
                &format!("pass@{k}"),
                &format!(
                    "unbiased estimator, n={}, T={}, top-p={}",
                    opts.samples, opts.temperature, opts.top_p
                ),
                v,
                n,
            );
        }
    }
    let mean =
        |f: &dyn Fn(&Diversity) -> f64| div.iter().map(f).sum::<f64>() / div.len().max(1) as f64;
    report.push(
        &task.name,
        "unique_fraction",
        "distinct outputs / samples per prompt",
        mean(&|d| d.unique_fraction),
        n,
    );
    report.push(
        &task.name,
        "distinct_1",
        "distinct word unigrams / unigrams per prompt",
        mean(&|d| d.distinct_1),
        n,
    );
    report.push(
        &task.name,
        "distinct_2",
        "distinct word bigrams / bigrams per prompt",
        mean(&|d| d.distinct_2),
        n,
    );
    if executing {
        report.push(
            &task.name,
            "unique_passing",
            "distinct passing outputs per prompt",
            mean(&|d| d.unique_passing.unwrap_or(0) as f64),
            n,
        );
        report.push(
            &task.name,
            "unique_failing",
            "distinct failing outputs per prompt",
            mean(&|d| d.unique_failing.unwrap_or(0) as f64),
            n,
        );
    }
    report
        .details
        .insert(task.name.clone(), serde_json::Value::Array(details));
    Ok(())
}

#[cfg(feature = "native")]
fn exec_all(p: &CodeProblem, samples: &[String], opts: &EvalOptions) -> Result<Vec<bool>> {
    let timeout = std::time::Duration::from_secs_f64(opts.exec_timeout_s);
    samples
        .iter()
        .map(|s| {
            code::passes(&code::program(p, s), timeout)
                .map_err(|e| Error::Input(format!("cannot run python3 for {}: {e}", p.task_id)))
        })
        .collect()
}

#[cfg(not(feature = "native"))]
fn exec_all(_: &CodeProblem, _: &[String], _: &EvalOptions) -> Result<Vec<bool>> {
    Err(Error::Input(
        "code execution is unavailable in the browser".into(),
    ))
}

async fn run_perplexity(
    lm: &LmView<'_>,
    task: &Task,
    docs: &[String],
    on_event: &mut dyn FnMut(&Event),
    report: &mut EvalReport,
) -> Result<()> {
    let tok = lm.tokenizer()?;
    let (mut nll, mut preds, mut bytes) = (0.0f64, 0usize, 0usize);
    for (i, d) in docs.iter().enumerate() {
        let ids = tok.encode(d)?;
        if ids.len() >= 2 {
            let s =
                perplexity::score_ids(lm.model, &ids, lm.vocab(), lm.context(), lm.device).await?;
            nll += s.nll * s.predictions as f64;
            preds += s.predictions;
            bytes += d.len();
        }
        on_event(&progress(&task.name, i + 1, docs.len()));
    }
    if preds == 0 {
        return Err(Error::Input(format!(
            "{}: no text with at least 2 tokens to score",
            task.name
        )));
    }
    let mean = nll / preds as f64;
    report.push(
        &task.name,
        "nll",
        "mean next-token NLL (nats)",
        mean,
        docs.len(),
    );
    report.push(
        &task.name,
        "perplexity",
        "exp(mean token NLL)",
        mean.exp(),
        docs.len(),
    );
    report.push(
        &task.name,
        "bits_per_byte",
        "total NLL / ln 2 / UTF-8 bytes",
        nll / std::f64::consts::LN_2 / bytes as f64,
        docs.len(),
    );
    Ok(())
}
