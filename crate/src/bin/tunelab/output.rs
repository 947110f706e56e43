//! What the CLI shows: library errors in flag words, progress bars, JSON output, and loading a
//! model or data with bars (the only library calls every command shares).

use std::collections::HashMap;
use std::path::Path;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use tunelab::device::{self, DeviceChoice, Selected};
use tunelab::event::{Event, Unit};
use tunelab::hf::ModelSource;
use tunelab::run::{DataSource, Prepared, RunSpec};
use tunelab::{Error, Session};

/// Library fields whose CLI flag is not `--field-name`.
const FLAGS: &[(&str, &str)] = &[("lora_dropout", "--dropout"), ("tasks", "--task")];

/// Fields of library options that are not in [`RunSpec`] but that messages name.
const OTHER_FIELDS: &[&str] = &[
    "allow_exec",
    "device",
    "export",
    "limit",
    "max_gen_toks",
    "modules",
    "out",
    "resume",
    "samples",
    "shots",
    "tasks",
    "temperature",
    "threshold",
    "top_p",
];

/// The CLI flag of a library field.
pub fn flag(field: &str) -> String {
    FLAGS.iter().find(|(f, _)| *f == field).map_or_else(
        || format!("--{}", field.replace('_', "-")),
        |(_, w)| w.to_string(),
    )
}

/// `text` (an error message or a note) with library field names (in backticks) replaced by CLI
/// flags: the run spec's fields (from its schema) and the other options' fields.
pub fn in_flags(text: &str) -> String {
    let spec = serde_json::to_value(RunSpec::default()).expect("the spec serializes");
    let fields = spec
        .as_object()
        .expect("the spec is an object")
        .keys()
        .map(String::as_str)
        .chain(OTHER_FIELDS.iter().copied());
    let words: Vec<(String, String)> = fields.map(|f| (f.to_string(), flag(f))).collect();
    let words: Vec<(&str, &str)> = words
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    tunelab::error::in_words(text, &words)
}

/// A library error as the CLI shows it.
pub fn describe(e: &Error) -> String {
    in_flags(&e.to_string())
}

/// Pick the device, printing why when it is not what was asked.
pub fn select(choice: DeviceChoice) -> Result<Selected, Error> {
    let selected = device::select(choice)?;
    if let Some(n) = &selected.notice {
        eprintln!("note: {}", in_flags(n));
    }
    Ok(selected)
}

/// Pick the device, then load the model (and adapter) with a progress bar per shard.
pub fn load(
    model: &str,
    adapter: Option<&str>,
    choice: DeviceChoice,
    quiet: bool,
) -> Result<Session, Error> {
    let selected = select(choice)?;
    if !quiet {
        eprintln!("device: {}", selected.label);
    }
    let mut session = load_on(model, selected.device)?;
    if let Some(a) = adapter {
        pollster::block_on(session.attach_adapter(&ModelSource::parse(a)))?;
    }
    Ok(session)
}

/// Load the model at `model` (directory, base URL or `.gguf` file) onto `device` with a
/// progress bar per file.
pub fn load_on(model: &str, device: burn::tensor::Device) -> Result<Session, Error> {
    let bars = MultiProgress::new();
    let mut open: HashMap<String, ProgressBar> = HashMap::new();
    let style =
        ProgressStyle::with_template("{msg:30} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}")
            .expect("valid template")
            .progress_chars("=> ");
    pollster::block_on(Session::open(model, device, &mut |e| {
        if let Event::Progress(p) = e {
            if p.unit != Unit::Bytes {
                return;
            }
            let bar = open.entry(p.task.clone()).or_insert_with(|| {
                let b = bars.add(ProgressBar::new(p.total.unwrap_or(0)));
                b.set_style(style.clone());
                b.set_message(p.task.clone());
                b
            });
            bar.set_position(p.done);
            if p.total == Some(p.done) {
                bar.finish();
            }
        }
    }))
}

/// Tokenize a data file as `spec` says, with a progress bar (bytes of the file read); the data
/// and the regime it was read as.
pub fn load_data(
    path: &Path,
    session: &Session,
    spec: &RunSpec,
    json: bool,
) -> Result<Prepared, Error> {
    let bar = progress_bar(
        0,
        "{msg:30} [{bar:30}] {bytes}/{total_bytes} [{elapsed_precise}<{eta_precise}]",
        json,
    );
    let prepared = tunelab::run::prepare_data(session, DataSource::File(path), spec, &mut |e| {
        if let Event::Progress(p) = e {
            bar.set_message(p.task.clone());
            bar.set_length(p.total.unwrap_or(p.done));
            bar.set_position(p.done);
        }
    });
    bar.finish_and_clear();
    prepared
}

/// The progress bar of a training run (length set by the first step event).
pub fn step_bar(json: bool) -> ProgressBar {
    progress_bar(
        0,
        "{bar:30} {pos}/{len} steps {msg} [{elapsed_precise}<{eta_precise}]",
        json,
    )
}

/// Show a training event: JSON lines with `--json`, else on the progress bar.
pub fn show_training_event(bar: &ProgressBar, e: &Event, json: bool) {
    if json {
        println!("{}", serde_json::to_string(e).expect("events serialize"));
        return;
    }
    match e {
        Event::Step {
            step,
            total_steps,
            loss,
            lr,
            tokens_per_s,
            ..
        } => {
            bar.set_length(*total_steps as u64);
            bar.set_position(*step as u64);
            bar.set_message(format!(
                "loss {loss:.4} lr {lr:.2e} {tokens_per_s:.0} tok/s"
            ));
        }
        Event::Eval { step, loss, .. } => say(bar, format!("step {step}: eval loss {loss:.4}")),
        Event::Checkpoint { name, .. } => say(bar, format!("saved {name}")),
        Event::Notice { message } => say(bar, in_flags(message)),
        // Work before the first step (tokenizing): shown on the bar until steps begin.
        Event::Progress(p) if p.unit == Unit::Bytes => bar.set_message(format!(
            "{} {:.1}/{} MB",
            p.task,
            p.done as f64 / 1e6,
            p.total
                .map_or("?".into(), |t| format!("{:.1}", t as f64 / 1e6))
        )),
        _ => {}
    }
}

/// A line above the bar, or plain on stderr where the bar is not drawn (stderr is a file or a
/// pipe), so that logs keep what a terminal shows.
fn say(bar: &ProgressBar, line: String) {
    if bar.is_hidden() {
        eprintln!("{line}");
    } else {
        bar.println(line);
    }
}

/// A progress bar on stderr, hidden when the output is JSON.
pub fn progress_bar(len: u64, template: &str, hidden: bool) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(ProgressStyle::with_template(template).expect("valid template"));
    if hidden {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar
}

/// Print `v` as pretty JSON on stdout.
pub fn print_json<T: serde::Serialize>(v: &T) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).expect("our types always serialize")
    );
}

/// Write one file atomically (temporary name beside it, then rename).
pub fn write_file(path: &Path, bytes: Vec<u8>) -> Result<(), Error> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    let name = path
        .file_name()
        .ok_or_else(|| Error::File {
            path: path.display().to_string(),
            message: "not a file name".into(),
        })?
        .to_string_lossy();
    tunelab::files::write_dir(
        dir.unwrap_or(Path::new(".")),
        &[tunelab::files::File::new(name, bytes)],
    )
}

/// Text of a file, naming it on error.
pub fn read_text(path: &Path) -> Result<String, Error> {
    let bytes = tunelab::files::read(path)?;
    String::from_utf8(bytes).map_err(|e| Error::File {
        path: path.display().to_string(),
        message: format!("not UTF-8 text: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_become_flags() {
        assert_eq!(flag("batch_size"), "--batch-size");
        assert_eq!(flag("lora_dropout"), "--dropout");
        assert_eq!(
            in_flags("`lr`: must be positive (try a lower `lr` or `clip` 1.0); target `q_proj`"),
            "--lr: must be positive (try a lower --lr or --clip 1.0); target `q_proj`"
        );
        assert!(in_flags("set `skip_bad_lines`").contains("--skip-bad-lines"));
        assert!(in_flags("set `allow_exec`").contains("--allow-exec"));
        let e = Error::setting("seq_len", "must be at least 2, got 1");
        assert_eq!(describe(&e), "--seq-len: must be at least 2, got 1");
    }
}
