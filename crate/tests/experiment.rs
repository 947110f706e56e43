//! The experiment runner end to end through the CLI, on the tiny Llama fixture: every method ×
//! budget is evaluated and reported; the same seed gives the same numbers; an experiment killed
//! at random moments resumes to the same numbers; a changed config is refused for an existing
//! output.

mod common;

use std::path::{Path, PathBuf};

use common::{fixtures, tunelab};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A small experiment: code-style CPT on the tiny text, math IFT, full vs two LoRA ranks.
fn config(dir: &Path) -> PathBuf {
    let data = repo().join("data");
    let text = format!(
        r#"
name = "tiny"
base_model = "{model}"
seed = 3
batch_size = 4
full_lr = 1e-3

[[targets]]
name = "text"
regime = "cpt"
train = "{tiny}"
test = "{tiny}"
metric = "perplexity"
seq_len = 32
budgets = [256, 512]
budget_unit = "tokens"

[targets.humaneval]
file = "{data}/humaneval/HumanEval.jsonl.gz"
limit = 2
samples = 3
temperature = 1.0
max_gen_toks = 8

[[targets]]
name = "math"
regime = "ift"
train = "math"
test = "math"
metric = "gsm8k"
seq_len = 128
budgets = [0.25, 0.5]
budget_unit = "epochs"
math_train = 24
math_test = 3
max_gen_toks = 8

[[methods]]
name = "full"
method = "full"

[[methods]]
name = "lora-r2"
method = "lora"
rank = 2

[[methods]]
name = "lora-r8"
method = "lora"
rank = 8
targets = ["attention"]

[forgetting]
hellaswag = "{data}/forgetting/hellaswag.jsonl"
arc = "{data}/forgetting/arc.jsonl"
winogrande = "{data}/forgetting/winogrande.jsonl"
perplexity = "{data}/english/heldout.txt"
limit = 4
perplexity_chars = 1500
"#,
        model = fixtures().join("llama-gqa").display(),
        tiny = fixtures().join("data/tiny.txt").display(),
        data = data.display(),
    );
    let path = dir.join("tiny.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// `tunelab --device cpu experiment CFG --out OUT`.
fn experiment(cfg: &str, out: &Path) -> (bool, String, String) {
    tunelab_at(out, cfg, &[])
}

/// The run directories (`runs/<target>/<method>`) of an experiment's output.
fn glob_runs(out: &Path) -> Vec<PathBuf> {
    let dirs = |p: &Path| -> Vec<PathBuf> {
        std::fs::read_dir(p)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect()
    };
    dirs(&out.join("runs"))
        .iter()
        .flat_map(|t| dirs(t))
        .collect()
}

fn results(out: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(out.join("results.json")).unwrap()).unwrap()
}

/// What must be reproducible: base scores, every point's metrics and the losses.
fn numbers(r: &serde_json::Value) -> serde_json::Value {
    let points: Vec<_> = r["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            serde_json::json!([
                p["target"],
                p["method"],
                p["budget"],
                p["step"],
                p["metrics"],
                p["train_loss"]
            ])
        })
        .collect();
    let losses: Vec<_> = r["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["losses"].clone())
        .collect();
    serde_json::json!({"base": r["base"], "points": points, "losses": losses})
}

#[test]
fn experiment_reports_every_point_reproducibly_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let cfg_s = cfg.to_str().unwrap();
    let a = dir.path().join("a");
    let start = std::time::Instant::now();
    let (ok, stdout, stderr) = experiment(cfg_s, &a);
    let took = start.elapsed();
    assert!(ok, "{stderr}");
    assert!(stdout.contains("The paper's findings"), "{stdout}");
    let r = results(&a);
    // 2 targets × 3 methods × 2 budgets.
    assert_eq!(r["points"].as_array().unwrap().len(), 12);
    assert_eq!(r["runs"].as_array().unwrap().len(), 6);
    for p in r["points"].as_array().unwrap() {
        assert!(p["learning"].as_f64().unwrap().is_finite(), "{p}");
        assert!(p["forgetting"].as_f64().unwrap().is_finite(), "{p}");
        assert!(p["metrics"]["source/perplexity"].as_f64().unwrap() > 1.0);
    }
    for key in [
        "forgetting/score",
        "hellaswag/acc_norm",
        "text/perplexity",
        "math/exact_match_strict",
        "math/answer_loss",
        "text/humaneval/unique_fraction",
        "text/humaneval/distinct_1",
    ] {
        assert!(
            r["base"][key].is_number(),
            "base lacks {key}: {}",
            r["base"]
        );
    }
    // LoRA trains fewer parameters than full; the attention-only rank-8 run its own count.
    let runs = r["runs"].as_array().unwrap();
    let params = |m: &str| {
        runs.iter().find(|x| x["method"] == m).unwrap()["trainable_parameters"]
            .as_u64()
            .unwrap()
    };
    assert!(params("lora-r2") < params("full") && params("lora-r8") < params("full"));
    // Full runs carry a spectrum summary of their weight change.
    assert!(
        runs.iter()
            .all(|x| x["spectrum"]["mean_rank_attention"].is_number())
    );
    let findings = r["findings"].as_array().unwrap();
    for claim in ["1.", "5."] {
        assert!(
            findings
                .iter()
                .any(|f| f["claim"].as_str().unwrap().starts_with(claim)),
            "no finding {claim}"
        );
    }
    // The programs were sampled but not run (`execute` is off): diversity only, no pass@k.
    assert!(r["base"].get("text/humaneval/pass@1").is_none());
    for f in [
        "results.csv",
        "report.md",
        "scatter_text.svg",
        "scatter_math.png",
        "learning_math.svg",
        "forgetting_text.png",
        "loss_text.svg",
        "spectrum/text-full/rank_vs_layer.svg",
        "runs/text/lora-r2/adapter_model.safetensors",
        "runs/math/full/model.safetensors",
    ] {
        assert!(a.join(f).exists(), "missing {f}");
    }
    let csv = std::fs::read_to_string(a.join("results.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 2 + 12, "{csv}");

    // Same seed, same backend → same numbers.
    let b = dir.path().join("b");
    let (ok, _, stderr) = experiment(cfg_s, &b);
    assert!(ok, "{stderr}");
    assert_eq!(numbers(&results(&b)), numbers(&r));

    // Rerunning a finished experiment reuses every run.
    let (ok, _, stderr) = experiment(cfg_s, &b);
    assert!(ok, "{stderr}");
    assert_eq!(results(&b)["timings"]["reused_runs"], 6);

    // SIGKILLed at random moments (each time resumed from what the last attempt left), then
    // finished: every checkpoint left behind is complete, and the numbers are the same.
    let c = dir.path().join("c");
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut kills = 0;
    while kills < 5 {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        // Up to a quarter of a whole run each: five attempts cover most of one.
        let delay = took.mul_f64((seed >> 11) as f64 / (1u64 << 53) as f64 / 4.0);
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tunelab"))
            .args([
                "--device",
                "cpu",
                "experiment",
                cfg_s,
                "--out",
                c.to_str().unwrap(),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let until = std::time::Instant::now() + delay;
        while std::time::Instant::now() < until && child.try_wait().unwrap().is_none() {
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        if child.try_wait().unwrap().is_some() {
            break; // finished before the kill: the rerun below reuses everything
        }
        child.kill().unwrap();
        child.wait().unwrap();
        kills += 1;
        for run in glob_runs(&c) {
            for (_, ckpt) in tunelab::train::sink::checkpoint_dirs(&run) {
                assert!(
                    tunelab::files::verify_dir(&ckpt).unwrap(),
                    "{}",
                    ckpt.display()
                );
            }
        }
    }
    assert!(kills >= 3, "the experiment finished before most kills");
    let (ok, _, stderr) = experiment(cfg_s, &c);
    assert!(ok, "{stderr}");
    assert_eq!(numbers(&results(&c)), numbers(&r));

    // A different configuration is refused for an existing output directory.
    let changed = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("seed = 3", "seed = 4");
    std::fs::write(&cfg, changed).unwrap();
    let (ok, _, stderr) = experiment(cfg_s, &a);
    assert!(!ok);
    assert!(
        stderr.contains("different experiment configuration"),
        "{stderr}"
    );
}

#[test]
fn bad_experiment_configs_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let text = std::fs::read_to_string(&cfg).unwrap();
    for (from, to, expect) in [
        (
            "budget_unit = \"tokens\"",
            "budget_unit = \"bytes\"",
            "bytes",
        ),
        (
            "budgets = [256, 512]",
            "budgets = [512, 256]",
            "budgets must increase",
        ),
        ("rank = 2", "rank = 0", "lora needs rank"),
        (
            "seq_len = 32",
            "seq_len = 4096",
            "exceeds the model's context",
        ),
        ("metric = \"perplexity\"", "metric = \"bleu\"", "bleu"),
        (
            "metric = \"gsm8k\"",
            "metric = \"gsm8k\"\nchat = true",
            "targets.math.chat: ",
        ),
        (
            "samples = 3",
            "samples = 0",
            "targets.text.humaneval: samples",
        ),
    ] {
        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, text.replacen(from, to, 1)).unwrap();
        let out = dir.path().join(format!("out-{}", expect.len()));
        let (ok, _, stderr) = tunelab(&[
            "--device",
            "cpu",
            "experiment",
            bad.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(!ok, "{to} accepted");
        assert!(stderr.contains(expect), "{to}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

/// Results without what depends on when and how fast things ran.
fn comparable(r: &serde_json::Value) -> serde_json::Value {
    let mut r = r.clone();
    r.as_object_mut().unwrap().remove("timings");
    for list in ["points", "runs"] {
        for x in r[list].as_array_mut().unwrap() {
            let x = x.as_object_mut().unwrap();
            x.retain(|k, _| !k.ends_with("_seconds"));
        }
    }
    r
}

/// `tunelab --device cpu experiment CFG --out OUT EXTRA…`.
fn tunelab_at(out: &Path, cfg: &str, extra: &[&str]) -> (bool, String, String) {
    let mut args = vec![
        "--device",
        "cpu",
        "experiment",
        cfg,
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    tunelab(&args)
}

#[test]
fn runs_one_at_a_time_match_one_process_with_seeds() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("seed = 3", "seed = 3\nseeds = [3, 4]");
    std::fs::write(&cfg, text).unwrap();
    let cfg_s = cfg.to_str().unwrap();

    // One process, every run.
    let single = dir.path().join("single");
    let (ok, stdout, stderr) = experiment(cfg_s, &single);
    assert!(ok, "{stderr}");
    let s = results(&single);
    // 2 targets × 3 methods × 2 seeds.
    assert_eq!(s["runs"].as_array().unwrap().len(), 12);
    assert!(stdout.contains(" ± "), "{stdout}");
    assert!(
        stdout.contains("Findings that hold in every seed"),
        "{stdout}"
    );
    for f in s["findings"].as_array().unwrap() {
        assert_eq!(f["per_seed"].as_array().unwrap().len(), 2, "{f}");
    }
    assert!(single.join("runs/math/lora-r2/seed-4/run.json").exists());
    // Seeds give different runs from the same data.
    let loss = |seed: u64| {
        s["runs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["method"] == "full" && x["target"] == "text" && x["seed"] == seed)
            .unwrap()["losses"]
            .clone()
    };
    assert_ne!(loss(3), loss(4));

    // The plan: stable ids and what each needs; it writes nothing.
    let split = dir.path().join("split");
    let (ok, stdout, stderr) = tunelab_at(&split, cfg_s, &["--plan", "--tflops", "0.01"]);
    assert!(ok, "{stderr}");
    assert!(!split.exists(), "--plan wrote into the output directory");
    let plan: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(plan["run_count"], 12);
    assert!(plan["estimated_device_hours"].as_f64().unwrap() > 0.0);
    let ids: Vec<String> = plan["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            assert!(r["memory_bytes"].as_u64().unwrap() > 0, "{r}");
            assert!(r["train_flops"].as_f64().unwrap() > 0.0, "{r}");
            r["id"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(ids[0], "text/full/seed-3");

    // Two runs at once into the same directory (the base model is evaluated once, under a
    // lock), then collect: the rest are named as missing.
    let handles: Vec<_> = ids[..2]
        .iter()
        .map(|id| {
            let (split, cfg, id) = (split.clone(), cfg_s.to_string(), id.clone());
            std::thread::spawn(move || tunelab_at(&split, &cfg, &["--only", &id]))
        })
        .collect();
    for h in handles {
        let (ok, _, stderr) = h.join().unwrap();
        assert!(ok, "{stderr}");
    }
    let (ok, stdout, stderr) =
        tunelab(&["experiment", "--out", split.to_str().unwrap(), "--collect"]);
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains("10 of 12 runs are not finished") && stderr.contains(&ids[2]),
        "{stderr}"
    );
    assert!(stdout.contains("Partial results"), "{stdout}");
    let partial = results(&split);
    assert_eq!(partial["missing"].as_array().unwrap().len(), 10);
    assert_eq!(partial["runs"].as_array().unwrap().len(), 2);

    // The rest one by one (a finished one again is reused), then everything matches.
    for id in ids[1..].iter() {
        let (ok, _, stderr) = tunelab_at(&split, cfg_s, &["--only", id]);
        assert!(ok, "{id}: {stderr}");
    }
    let (ok, _, stderr) = tunelab(&["experiment", "--out", split.to_str().unwrap(), "--collect"]);
    assert!(ok, "{stderr}");
    let collected = results(&split);
    assert!(collected.get("missing").is_none());
    assert_eq!(comparable(&collected), comparable(&s));

    // Unknown ids and a collect of nothing are named errors.
    let (ok, _, stderr) = tunelab_at(&split, cfg_s, &["--only", "text/full/seed-9"]);
    assert!(
        !ok && stderr.contains("no run `text/full/seed-9`"),
        "{stderr}"
    );
    assert!(stderr.contains("text/full/seed-3"), "{stderr}");
    let empty = dir.path().join("empty");
    let (ok, _, stderr) = tunelab(&["experiment", "--out", empty.to_str().unwrap(), "--collect"]);
    assert!(!ok && stderr.contains("holds no experiment"), "{stderr}");
}

#[test]
fn bad_training_lines_stop_the_experiment_unless_skipped_and_then_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let tiny = fixtures().join("data/tiny.txt");
    let mut lines: Vec<String> = std::fs::read_to_string(&tiny)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::json!({ "text": l }).to_string())
        .collect();
    lines.insert(4, "{not json".into());
    lines.insert(9, r#"{"title": "no text field"}"#.into());
    let jsonl = dir.path().join("train.jsonl");
    std::fs::write(&jsonl, lines.join("\n")).unwrap();
    let text = std::fs::read_to_string(&cfg).unwrap().replacen(
        &format!("train = \"{}\"", tiny.display()),
        &format!("train = \"{}\"", jsonl.display()),
        1,
    );
    assert!(text.contains("train.jsonl"));
    std::fs::write(&cfg, &text).unwrap();
    let cfg_s = cfg.to_str().unwrap();
    let out = dir.path().join("out");
    let (ok, _, stderr) = tunelab_at(&out, cfg_s, &["--only", "text/full"]);
    assert!(
        !ok && stderr.contains("train.jsonl") && stderr.contains("line 5"),
        "{stderr}"
    );
    let skipping = text.replacen(
        "budget_unit = \"tokens\"",
        "budget_unit = \"tokens\"\nskip_bad_lines = true",
        1,
    );
    std::fs::write(&cfg, skipping).unwrap();
    let out = dir.path().join("out-skipping");
    let (ok, _, stderr) = tunelab_at(&out, cfg_s, &["--only", "text/full"]);
    assert!(ok, "{stderr}");
    assert!(stderr.contains("2 bad lines"), "{stderr}");
    let (ok, stdout, stderr) =
        tunelab(&["experiment", "--out", out.to_str().unwrap(), "--collect"]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("Target `text`: 2 bad lines"), "{stdout}");
    assert_eq!(results(&out)["runs"][0]["skipped_lines"], 2);
}
