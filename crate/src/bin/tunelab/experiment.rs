//! `tunelab experiment [CONFIG]`: the learning-vs-forgetting experiment, resumable.

use std::path::{Path, PathBuf};

use tunelab::event::{Event, Unit};
use tunelab::experiment::{ExperimentConfig, config::DEFAULT_TOML, report, runner};
use tunelab::files::write_dir;

use crate::output::{print_json, read_text, select, show_training_event, step_bar};
use crate::{Global, Result};

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
        // The bundled default lives in the repository this binary was built from.
        None => (
            ExperimentConfig::parse(DEFAULT_TOML, "experiments/default.toml")?,
            Path::new(env!("CARGO_MANIFEST_DIR")).join(".."),
        ),
    };
    let root = if root.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        root
    };
    // Resolved once, so results name the model's real location.
    let root = root.canonicalize().unwrap_or(root);
    let out = a
        .out
        .unwrap_or_else(|| Path::new("experiment-results").join(&cfg.name));
    let selected = select(g.device)?;
    if !json {
        eprintln!("device: {}; writing to {}", selected.label, out.display());
    }
    let bar = step_bar(json);
    let results = pollster::block_on(runner::run(
        &cfg,
        &root,
        &out,
        selected.device.clone(),
        &selected.label,
        &mut |e| match e {
            Event::Progress(p) if p.unit == Unit::Items && !json => {
                bar.set_length(p.total.unwrap_or(0));
                bar.set_position(p.done);
                bar.set_message(format!("eval {}", p.task));
            }
            Event::Progress(_) => {}
            _ => show_training_event(&bar, e, json),
        },
    ))?;
    bar.finish_and_clear();
    let files = report::files(&results)?;
    write_dir(&out, &files)?;
    if json {
        print_json(&results);
        return Ok(());
    }
    let md = report::markdown(&results);
    // The tables and findings; the plots are files.
    for line in md.lines().filter(|l| !l.starts_with("![")) {
        println!("{line}");
    }
    println!("\nreport: {}", out.join("report.md").display());
    Ok(())
}
