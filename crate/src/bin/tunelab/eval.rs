//! `tunelab eval MODEL --task NAME=FILE…`: benchmark scores as lm-evaluation-harness computes them.

use std::path::PathBuf;

use tunelab::Error;
use tunelab::eval::suite::{self, EvalOptions, TaskKind};
use tunelab::event::Event;

use crate::output::{in_flags, load, print_json, progress_bar, write_file};
use crate::{Global, Result};

#[derive(clap::Args)]
pub struct Args {
    /// Hub id (`org/name[@revision]`), model directory or base URL, or a `.gguf` file.
    model: String,
    /// PEFT LoRA adapter to apply.
    #[arg(long)]
    adapter: Option<String>,
    /// NAME=FILE in the published JSONL layout: hellaswag, arc, winogrande, gsm8k (add
    /// `,train=FILE` for few-shot examples), humaneval, perplexity (text or JSONL `text`).
    #[arg(long = "task", required = true)]
    tasks: Vec<String>,
    /// Score at most this many items per task.
    #[arg(long)]
    limit: Option<usize>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Few-shot examples for gsm8k.
    #[arg(long, default_value_t = 5)]
    shots: usize,
    #[arg(long, default_value_t = 256)]
    max_gen_toks: usize,
    /// Prompt gsm8k through the model's chat template (as lm-eval's `--apply_chat_template
    /// --fewshot_as_multiturn`), for instruction-tuned models.
    #[arg(long)]
    chat: bool,
    /// Samples per humaneval problem (the paper: 50).
    #[arg(long, default_value_t = 10)]
    samples: usize,
    #[arg(long, default_value_t = 0.2)]
    temperature: f64,
    #[arg(long, default_value_t = 0.95)]
    top_p: f64,
    /// Run generated code with the system python3 (dangerous: it runs with your rights; see
    /// the README).
    #[arg(long)]
    allow_exec: bool,
    /// Score each choice with its own forward pass instead of one batch per item.
    #[arg(long)]
    no_batch: bool,
    /// Skip lines that are not valid items, and count them.
    #[arg(long)]
    skip_bad_lines: bool,
    /// Also write the full report (per-item scores, generations) to this JSON file.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// A `--task NAME=FILE[,train=FILE]` spec read into a task.
fn read_task(spec: &str, a: &Args) -> Result<suite::Task> {
    let bad = |m: String| Error::setting("tasks", m);
    // `.gz` files are read decompressed (HumanEval ships as HumanEval.jsonl.gz).
    let open = |p: &str| tunelab::train::data::open(std::path::Path::new(p));
    let (name, rest) = spec
        .split_once('=')
        .ok_or_else(|| bad(format!("`{spec}`: expected NAME=FILE")))?;
    let kind: TaskKind = name.parse().map_err(bad)?;
    let mut parts = rest.split(',');
    let file = parts.next().unwrap_or_default().to_string();
    let mut train = None;
    for p in parts {
        match p.split_once('=') {
            Some(("train", f)) => train = Some(f.to_string()),
            _ => {
                return Err(bad(format!(
                    "`{spec}`: unknown option `{p}` (only train=FILE)"
                )));
            }
        }
    }
    let mut reader = open(&file)?;
    let mut train_reader = train.as_deref().map(open).transpose()?;
    suite::read_task(
        name,
        kind,
        (&file, &mut reader),
        match (&train, train_reader.as_mut()) {
            (Some(t), Some(r)) => Some((t.as_str(), &mut **r as &mut dyn std::io::BufRead)),
            _ => None,
        },
        a.skip_bad_lines,
        a.limit,
    )
}

pub fn run(a: Args, g: &Global) -> Result {
    let tasks = a
        .tasks
        .iter()
        .map(|spec| read_task(spec, &a))
        .collect::<Result<Vec<_>>>()?;
    let session = load(&a.model, a.adapter.as_deref(), g.device, g.json)?;
    let opts = EvalOptions {
        shots: a.shots,
        max_gen_toks: a.max_gen_toks,
        samples: a.samples,
        temperature: a.temperature,
        top_p: a.top_p,
        seed: a.seed,
        allow_exec: a.allow_exec,
        exec_timeout_s: 10.0,
        batched: !a.no_batch,
        chat_template: a
            .chat
            .then(|| session.require_chat_template())
            .transpose()?,
    };
    let bar = progress_bar(
        0,
        "{msg:12} [{bar:30}] {pos}/{len} items [{elapsed_precise}<{eta_precise}]",
        g.json,
    );
    let start = std::time::Instant::now();
    let report = pollster::block_on(suite::run(&session.view(), &tasks, &opts, &mut |e| {
        if let Event::Progress(p) = e {
            bar.set_message(p.task.clone());
            bar.set_length(p.total.unwrap_or(0));
            bar.set_position(p.done);
        }
    }))?;
    bar.finish_and_clear();
    if let Some(out) = &a.out {
        write_file(
            out,
            serde_json::to_vec_pretty(&report).expect("report serializes"),
        )?;
    }
    let notes: Vec<String> = report.notes.iter().map(|n| in_flags(n)).collect();
    if g.json {
        print_json(&serde_json::json!({
            "metrics": report.metrics, "notes": notes, "seconds": start.elapsed().as_secs_f64()
        }));
        return Ok(());
    }
    println!("| task | metric | value | items | variant |");
    println!("|---|---|---|---|---|");
    for m in &report.metrics {
        println!(
            "| {} | {} | {:.4} | {} | {} |",
            m.task, m.metric, m.value, m.items, m.variant
        );
    }
    for n in &notes {
        println!("note: {n}");
    }
    Ok(())
}
