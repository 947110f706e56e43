//! kill -9 anywhere: training and pretraining run as child processes and are SIGKILLed at random
//! moments (mid-step, mid-evaluation, mid-save), then resumed. Every checkpoint directory left
//! behind is complete (its manifest verifies), no more than one checkpoint interval of logged
//! progress is lost, and the final weights are byte-identical to an uninterrupted run.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{fixtures, tunelab};
use tunelab::files::verify_dir;
use tunelab::train::sink::checkpoint_dirs;

/// A small deterministic generator (xorshift64*), so a failing kill schedule can be replayed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1)
    }
}

const STEPS: u64 = 60;
const SAVE_EVERY: u64 = 5;

fn train_args(method: &str, out: &Path) -> Vec<String> {
    let model = fixtures().join("gpt2");
    let data = fixtures().join("data/tiny.txt");
    [
        "--device",
        "cpu",
        "--json",
        "train",
        model.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--method",
        method,
        "--seq-len",
        "32",
        "--batch-size",
        "2",
        "--max-steps",
        &STEPS.to_string(),
        "--log-every",
        "1",
        "--save-every",
        &SAVE_EVERY.to_string(),
        "--eval-every",
        "7",
        "--holdout",
        "0.2",
        "--out",
        out.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// The steps logged in `train_log.jsonl` after byte `from`.
fn logged_steps(log: &Path, from: usize) -> Vec<u64> {
    let text = std::fs::read(log).unwrap_or_default();
    String::from_utf8_lossy(text.get(from..).unwrap_or_default())
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == "step")
        .filter_map(|v| v["step"].as_u64())
        .collect()
}

/// Hidden staging directories of checkpoint writes in `out` (a save in progress or killed).
fn partials(out: &Path) -> Vec<String> {
    std::fs::read_dir(out)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".checkpoint-"))
        .collect()
}

/// Every checkpoint in `out` is complete; returns the newest one's step.
fn check_checkpoints(out: &Path) -> Option<u64> {
    let all = checkpoint_dirs(out);
    for (_, dir) in &all {
        assert!(
            verify_dir(dir).unwrap(),
            "{} has no manifest",
            dir.display()
        );
    }
    all.last().map(|(n, _)| *n as u64)
}

/// How a kill is timed.
#[derive(Debug, Clone, Copy)]
enum Trigger {
    /// Once step `.0` has been logged, wait `.1` microseconds (lands in the next step, an
    /// evaluation or a save).
    AfterStep(u64, u64),
    /// As soon as a checkpoint's staging directory appears (mid-save).
    Saving,
}

/// Run `args` as a child and SIGKILL it when `trigger` fires; true when it finished first.
fn run_until(args: &[String], out: &Path, trigger: Trigger) -> bool {
    let log = out.join("train_log.jsonl");
    let from = std::fs::metadata(&log).map_or(0, |m| m.len() as usize);
    let mut child = Command::new(env!("CARGO_BIN_EXE_tunelab"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            use std::io::Read;
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            assert!(status.success(), "{args:?}: {err}");
            return true;
        }
        let fire = match trigger {
            Trigger::AfterStep(s, wait) => {
                let fired = logged_steps(&log, from).last().is_some_and(|&l| l >= s);
                if fired {
                    std::thread::sleep(Duration::from_micros(wait));
                }
                fired
            }
            Trigger::Saving => !partials(out).is_empty(),
        };
        if fire {
            child.kill().unwrap();
            child.wait().unwrap();
            return false;
        }
        assert!(Instant::now() < deadline, "{args:?} hangs");
        std::thread::sleep(Duration::from_micros(100));
    }
}

/// The CLI with owned arguments.
fn cli(args: &[String]) -> (bool, String, String) {
    tunelab(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

fn final_weights(out: &Path, method: &str) -> Vec<u8> {
    let name = if method == "lora" {
        "adapter_model.safetensors"
    } else {
        "model.safetensors"
    };
    std::fs::read(out.join(name)).unwrap()
}

#[test]
fn training_killed_anywhere_resumes_to_the_same_weights() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(0x5eed_cafe);
    let mut total_kills = 0;
    let mut saw_partial = false;
    for (method, kills) in [("full", 16), ("lora", 8)] {
        let reference = dir.path().join(format!("{method}-straight"));
        let (ok, _, stderr) = cli(&train_args(method, &reference));
        assert!(ok, "{stderr}");
        let expected = final_weights(&reference, method);

        let out = dir.path().join(method);
        let mut killed = 0;
        let mut fresh = true;
        loop {
            let mut args = train_args(method, &out);
            if fresh {
                let _ = std::fs::remove_dir_all(&out);
            } else {
                args.extend(["--resume".into(), out.display().to_string()]);
            }
            let start = check_checkpoints(&out).unwrap_or(0);
            let trigger = if killed == kills {
                // Enough kills: let it finish.
                Trigger::AfterStep(u64::MAX, 0)
            } else if rng.below(3) == 0 {
                Trigger::Saving
            } else {
                Trigger::AfterStep(start + 1 + rng.below(STEPS - start), rng.below(3000))
            };
            let log = out.join("train_log.jsonl");
            let from = std::fs::metadata(&log).map_or(0, |m| m.len() as usize);
            if run_until(&args, &out, trigger) {
                if killed == kills {
                    break;
                }
                // It finished before the trigger fired: compare, then go again from scratch.
                assert_eq!(final_weights(&out, method), expected, "{method}");
                fresh = true;
                continue;
            }
            killed += 1;
            let mid_save = !partials(&out).is_empty();
            saw_partial |= mid_save;
            eprintln!("{method} kill {killed}: {trigger:?}, mid-save: {mid_save}");
            let newest = check_checkpoints(&out);
            let last_logged = logged_steps(&log, from).last().copied().unwrap_or(start);
            assert!(
                last_logged.max(start) - newest.unwrap_or(0) <= SAVE_EVERY,
                "{method}, kill {killed} ({trigger:?}): logged step {last_logged} but the newest \
                 checkpoint is {newest:?}"
            );
            fresh = newest.is_none();
        }
        total_kills += killed;
        assert_eq!(
            final_weights(&out, method),
            expected,
            "{method}: resumed weights differ"
        );
        assert!(partials(&out).is_empty(), "{:?}", partials(&out));
    }
    assert!(total_kills >= 20);
    assert!(
        saw_partial,
        "no kill landed mid-save: the schedule does not test it"
    );
}

/// A pretraining configuration small enough for a test: the tiny text, a 320-token tokenizer,
/// a 2-layer model.
fn pretrain_config(dir: &Path) -> PathBuf {
    let tiny = fixtures().join("data/tiny.txt");
    let text = format!(
        r#"
corpus = "{tiny}"
tokenizer_corpora = ["{tiny}"]
vocab_size = 320
hidden_size = 32
intermediate_size = 64
num_hidden_layers = 2
num_attention_heads = 2
num_key_value_heads = 1
max_position_embeddings = 64
seq_len = 32
batch_size = 2
max_tokens = 2560
"#,
        tiny = tiny.display()
    );
    let path = dir.join("pretrain.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn pretrain_args(cfg: &Path, out: &Path, resume: bool) -> Vec<String> {
    let mut args: Vec<String> = [
        "--device",
        "cpu",
        "--json",
        "pretrain",
        "--config",
        cfg.to_str().unwrap(),
        "--save-every",
        "4",
        "--out",
        out.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if resume {
        args.push("--resume".into());
    }
    args
}

/// The model files pretraining writes (all but its record, which holds timings).
fn model_files(out: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(out)
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "pretrain.json")
        .map(|n| (n.clone(), std::fs::read(out.join(&n)).unwrap()))
        .collect();
    files.sort();
    files
}

#[test]
fn pretraining_killed_midway_resumes_to_the_same_weights() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = pretrain_config(dir.path());
    let straight = dir.path().join("straight");
    let args = pretrain_args(&cfg, &straight, false);
    let (ok, _, stderr) = cli(&args);
    assert!(ok, "{stderr}");
    assert!(checkpoint_dirs(&straight).is_empty(), "checkpoints left");
    let expected = model_files(&straight);
    assert!(expected.iter().any(|(n, _)| n.ends_with(".safetensors")));

    // Killed as soon as a checkpoint is complete (pretraining logs no steps to a file).
    let out = dir.path().join("killed");
    let mut child = Command::new(env!("CARGO_BIN_EXE_tunelab"))
        .args(pretrain_args(&cfg, &out, false))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while checkpoint_dirs(&out).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_micros(200));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let newest = check_checkpoints(&out).expect("a checkpoint before the kill");
    assert!(
        !out.join("model.safetensors").exists() && newest < 40,
        "the kill came too late to test resuming"
    );

    // Starting over would delete the interrupted run's checkpoint: refused.
    let args = pretrain_args(&cfg, &out, false);
    let (ok, _, stderr) = cli(&args);
    assert!(!ok && stderr.contains("--resume"), "{stderr}");

    let args = pretrain_args(&cfg, &out, true);
    let (ok, stdout, stderr) = cli(&args);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("resuming from"), "{stdout}");
    assert_eq!(model_files(&out), expected, "resumed weights differ");
    assert!(checkpoint_dirs(&out).is_empty(), "checkpoints left");
}

#[test]
fn damaged_checkpoints_are_refused_or_passed_over() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let (ok, _, stderr) = cli(&train_args("lora", &out));
    assert!(ok, "{stderr}");
    let newest = checkpoint_dirs(&out).pop().unwrap().1;
    let flip_last_byte = |path: &Path| {
        let mut bytes = std::fs::read(path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(path, bytes).unwrap();
    };
    // The finished run's final checkpoint (in the run directory) and its newest checkpoint-N.
    flip_last_byte(&out.join("adapter_model.safetensors"));
    flip_last_byte(&newest.join("adapter_model.safetensors"));

    // Named explicitly: refused, naming the file.
    let mut args = train_args("lora", &dir.path().join("a"));
    args.extend(["--resume".into(), newest.display().to_string()]);
    let (ok, _, stderr) = cli(&args);
    assert!(!ok, "a damaged checkpoint was accepted");
    assert!(
        stderr.contains("adapter_model.safetensors") && stderr.contains("manifest"),
        "{stderr}"
    );

    // Picked from the run directory: both damaged ones are passed over for the one before.
    let mut args = train_args("lora", &out);
    args.extend(["--resume".into(), out.display().to_string()]);
    let (ok, _, stderr) = cli(&args);
    assert!(ok, "{stderr}");
    assert_eq!(
        stderr.matches("passing over a damaged checkpoint").count(),
        2,
        "{stderr}"
    );
    let previous = format!("checkpoint-{}", STEPS - 2 * SAVE_EVERY);
    assert!(stderr.contains(&previous), "{stderr}");

    // A directory without any checkpoint is named.
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let mut args = train_args("lora", &dir.path().join("b"));
    args.extend(["--resume".into(), empty.display().to_string()]);
    let (ok, _, stderr) = cli(&args);
    assert!(!ok);
    assert!(stderr.contains("neither a checkpoint"), "{stderr}");
}
