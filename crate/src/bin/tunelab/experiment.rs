//! `tunelab experiment [CONFIG]`: the learning-vs-forgetting experiment, resumable; or its runs
//! one at a time (`--plan`, `--only ID`, `--collect`) for a scheduler to spread over machines.

use std::path::{Path, PathBuf};

use tunelab::event::{Event, Unit};
use tunelab::experiment::{ExperimentConfig, Results, config::DEFAULT_TOML, plan, report, runner};
use tunelab::files::write_dir;

use crate::output::{print_json, read_text, select, show_training_event, step_bar};
use crate::{Error, Global, Result};

#[derive(clap::Args)]
pub struct Args {
    /// Experiment TOML (relative paths in it are relative to its directory).
    config: Option<PathBuf>,
    /// Output directory (default: experiment-results/<name>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Print the bundled default configuration and exit.
    #[arg(long)]
    print_default: bool,
    /// Print the runs as JSON (stable ids, what each trains, its memory and FLOPs, estimated
    /// device time) and exit; a summary goes to stderr.
    #[arg(long, conflicts_with_all = ["only", "collect"])]
    plan: bool,
    /// Do only the run with this id (from --plan, e.g. `code/lora-r16` or
    /// `code/lora-r16/seed-1`) into the output directory, evaluating the base model first if no
    /// process has yet; resumes the run if it was interrupted.
    #[arg(long, value_name = "ID", conflicts_with = "collect")]
    only: Option<String>,
    /// Build results.json/csv, report.md and plots from the finished runs in the output
    /// directory, naming the missing ones.
    #[arg(long)]
    collect: bool,
    /// --plan: estimate time at this many TFLOP/s (e.g. from `tunelab bench` on the workers'
    /// GPU) instead of the finished runs' rate or a calibration on this device.
    #[arg(long, requires = "plan")]
    tflops: Option<f64>,
    /// A short run of the same experiment, to see it work end to end on a slow device: budgets
    /// scaled down, evals cut, the first seed only, as the config's [quick] table says (else
    /// its defaults). Default output: experiment-results/<name>-quick.
    #[arg(long)]
    quick: bool,
}

pub fn run(a: Args, g: &Global) -> Result {
    let json = g.json;
    if a.print_default {
        print!("{DEFAULT_TOML}");
        return Ok(());
    }
    let (cfg, root) = match &a.config {
        Some(p) => {
            let text = read_text(p)?;
            let root = p.parent().map(Path::to_path_buf).unwrap_or_default();
            (
                ExperimentConfig::parse(&text, &p.display().to_string())?,
                root,
            )
        }
        // The bundled default, as if read from the repository this binary was built from.
        None => (
            ExperimentConfig::parse(DEFAULT_TOML, "experiments/default.toml")?,
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../experiments"),
        ),
    };
    let root = if root.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        root
    };
    // Resolved once, so results name the model's real location.
    let root = root.canonicalize().unwrap_or(root);
    let (cfg, name) = match a.quick {
        true => (cfg.quick(), format!("{}-quick", cfg.name)),
        false => {
            let name = cfg.name.clone();
            (cfg, name)
        }
    };
    let out = a
        .out
        .unwrap_or_else(|| Path::new("experiment-results").join(name));
    if a.collect {
        let results = runner::collect(&out)?;
        if !results.missing.is_empty() {
            eprintln!(
                "{} of {} runs are not finished: {}",
                results.missing.len(),
                results.missing.len() + results.runs.len(),
                results.missing.join(", ")
            );
        }
        return report_results(&results, &out, json);
    }
    let selected = select(g.device)?;
    if !json {
        eprintln!("device: {}; writing to {}", selected.label, out.display());
    }
    let bar = step_bar(json);
    let mut on_event = |e: &Event| match e {
        Event::Progress(p) if p.unit == Unit::Items && !json => {
            bar.set_length(p.total.unwrap_or(0));
            bar.set_position(p.done);
            bar.set_message(format!("eval {}", p.task));
        }
        Event::Progress(_) => {}
        // The plan is the one JSON document on stdout.
        _ if json && a.plan => {}
        _ => show_training_event(&bar, e, json),
    };
    let mut exp = pollster::block_on(runner::Experiment::open(
        &cfg,
        &root,
        &out,
        selected.device.clone(),
        &selected.label,
        &mut on_event,
    ))?;
    if let Some(id) = &a.only {
        let key = plan::find(exp.config(), id)?;
        pollster::block_on(exp.run_one(&key, &mut on_event))?;
        bar.finish_and_clear();
        let done = key.dir(&out).join("run.json");
        if json {
            // One line, after the event lines, for schedulers reading the stream.
            let (record, points): (serde_json::Value, serde_json::Value) =
                serde_json::from_str(&read_text(&done)?)
                    .map_err(|e| Error::Input(format!("{}: {e}", done.display())))?;
            println!(
                "{}",
                serde_json::json!({"event": "run_done", "id": key.id(), "record": record, "points": points})
            );
        } else {
            println!("{} done: {}", key.id(), done.display());
        }
        return Ok(());
    }
    if a.plan {
        let p = pollster::block_on(exp.plan(a.tflops, &mut on_event))?;
        bar.finish_and_clear();
        print_json(&p);
        if !json {
            let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
            let max_mem = p.runs.iter().map(|r| r.memory_bytes).max().unwrap_or(0);
            eprintln!(
                "{} runs ({} done), {:.3e} FLOPs, peak memory per run ≤ {:.2} GiB (estimated){}",
                p.run_count,
                p.done_count,
                p.total_flops,
                gib(max_mem),
                match (&p.throughput, p.estimated_device_hours) {
                    (Some(t), Some(h)) => format!(
                        "; {h:.2} device-hours left at {:.3} TFLOP/s ({})",
                        t.tflops, t.source
                    ),
                    _ => String::new(),
                }
            );
        }
        return Ok(());
    }
    let results = pollster::block_on(exp.run_all(&mut on_event))?;
    bar.finish_and_clear();
    report_results(&results, &out, json)
}

/// Write the report files of `results` into `out` and print the tables and findings (or the
/// results as JSON).
fn report_results(results: &Results, out: &Path, json: bool) -> Result {
    let files = report::files(results)?;
    write_dir(out, &files)?;
    if json {
        print_json(results);
        return Ok(());
    }
    let md = report::markdown(results);
    // The tables and findings; the plots are files.
    for line in md.lines().filter(|l| !l.starts_with("![")) {
        println!("{line}");
    }
    println!("\nreport: {}", out.join("report.md").display());
    Ok(())
}
