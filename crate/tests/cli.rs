//! The `tunelab` binary: every command's JSON output and exit status.

mod common;

use common::*;

fn json(args: &[&str]) -> serde_json::Value {
    let (ok, stdout, stderr) = tunelab(args);
    assert!(ok, "tunelab {args:?} failed: {stderr}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

fn model(name: &str) -> String {
    fixtures().join(name).display().to_string()
}

#[test]
fn info_counts_parameters_of_a_sharded_model() {
    let v = json(&["info", &model("llama-gqa"), "--json"]);
    // The index's metadata says 139584 parameters.
    assert_eq!(v["total_parameters"], 139584);
    assert_eq!(v["sharded"], true);
    assert_eq!(v["shards"].as_array().unwrap().len(), 9);
    let kinds = &v["parameters_by_kind"];
    let sum: u64 = ["attention", "mlp", "embedding", "norm"]
        .iter()
        .map(|k| kinds[k]["parameters"].as_u64().unwrap())
        .sum();
    assert_eq!(sum, 139584);
    // embed_tokens + lm_head = 2 × 512 × 64
    assert_eq!(kinds["embedding"]["parameters"], 65536);
    assert_eq!(v["config"]["dtype"], "float32");
}

#[test]
fn score_json_matches_transformers() {
    let rj = reference_json("qwen2-tied");
    let v = json(&[
        "score",
        &model("qwen2-tied"),
        "--text",
        rj["text"].as_str().unwrap(),
        "--device",
        "cpu",
        "--json",
    ]);
    assert_eq!(v["tokens"], rj["text_tokens"]);
    let nll = v["nll"].as_f64().unwrap();
    assert!(
        (nll - rj["text_nll"].as_f64().unwrap()).abs() < 1e-4,
        "{nll}"
    );
    assert!((v["perplexity"].as_f64().unwrap() - nll.exp()).abs() < 1e-6);
}

#[test]
fn logits_file_matches_transformers() {
    let reference = read_reference(&fixtures().join("gpt2/reference.safetensors"));
    let ids: Vec<String> = reference["seq0_ids"]
        .i64
        .iter()
        .map(|i| i.to_string())
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("logits.safetensors");
    let (ok, _, stderr) = tunelab(&[
        "logits",
        &model("gpt2"),
        "--tokens",
        &ids.join(","),
        "--out",
        out.to_str().unwrap(),
        "--device",
        "cpu",
    ]);
    assert!(ok, "{stderr}");
    let got = read_reference(&out);
    assert_eq!(got["logits"].shape, reference["seq0_logits"].shape);
    assert!(max_abs_diff(&got["logits"].f32, &reference["seq0_logits"].f32) <= 1e-4);
}

#[test]
fn generate_streams_and_reports_json() {
    let (ok, stdout, stderr) = tunelab(&[
        "generate",
        &model("gpt2"),
        "--prompt",
        "The river",
        "--max-new-tokens",
        "4",
        "--device",
        "cpu",
    ]);
    assert!(ok, "{stderr}");
    assert!(stdout.starts_with("The river"), "{stdout}");
    let v = json(&[
        "generate",
        &model("gpt2"),
        "--prompt",
        "The river",
        "--max-new-tokens",
        "4",
        "--temperature",
        "0.8",
        "--top-p",
        "0.9",
        "--seed",
        "3",
        "--device",
        "cpu",
        "--json",
    ]);
    let again = json(&[
        "generate",
        &model("gpt2"),
        "--prompt",
        "The river",
        "--max-new-tokens",
        "4",
        "--temperature",
        "0.8",
        "--top-p",
        "0.9",
        "--seed",
        "3",
        "--device",
        "cpu",
        "--json",
    ]);
    assert_eq!(
        v["completion"], again["completion"],
        "same seed, same sample"
    );
    assert!(!v["completion"].as_str().unwrap().is_empty());
}

#[test]
fn errors_are_clear_and_exit_nonzero() {
    let (ok, _, stderr) = tunelab(&[
        "score",
        "/nonexistent/model",
        "--text",
        "hi",
        "--device",
        "cpu",
    ]);
    assert!(!ok);
    assert!(
        stderr.contains("config.json") && stderr.contains("not found"),
        "{stderr}"
    );
    let (ok, _, stderr) = tunelab(&[
        "generate",
        &model("gpt2"),
        "--prompt",
        "x",
        "--top-p",
        "2",
        "--device",
        "cpu",
    ]);
    assert!(!ok && stderr.contains("--top-p"), "{stderr}");
    let (ok, _, stderr) = tunelab(&["score", &model("gpt2"), "--device", "tpu", "--text", "x"]);
    assert!(!ok && stderr.contains("tpu"), "{stderr}");
}

#[test]
fn every_command_has_help() {
    for cmd in ["devices", "info", "score", "logits", "generate"] {
        let (ok, stdout, _) = tunelab(&[cmd, "--help"]);
        assert!(ok && stdout.contains("Usage"), "{cmd} --help: {stdout}");
    }
}

#[test]
fn devices_lists_each_adapter_with_its_limits_and_f16_support() {
    let (ok, stdout, stderr) = tunelab(&["devices", "--json"]);
    assert!(ok, "{stderr}");
    let list: Vec<serde_json::Value> = serde_json::from_str(&stdout).unwrap();
    if std::env::var("TUNELAB_REQUIRE_GPU").as_deref() == Ok("1") {
        assert!(
            !list.is_empty(),
            "TUNELAB_REQUIRE_GPU=1 but no adapter listed"
        );
    }
    for a in &list {
        assert!(
            a["max_storage_buffer_binding_size"].as_u64().unwrap() > 0,
            "{a}"
        );
        assert!(a["shader_f16"].is_boolean(), "{a}");
    }
}

/// `tunelab bench --json` lines of `bench MODEL args`, with one-step windows on the CPU backend.
fn bench_lines(model: &str, args: &[&str]) -> Vec<serde_json::Value> {
    let mut all = vec![
        "bench", model, "--window", "1", "--warmup", "0", "--device", "cpu", "--json",
    ];
    all.extend_from_slice(args);
    let (ok, stdout, stderr) = tunelab(&all);
    assert!(ok, "tunelab {args:?} failed: {stderr}");
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

#[test]
fn bench_measures_full_and_lora_of_a_model() {
    let dir = model("llama-gqa");
    let lines = bench_lines(
        &dir,
        &[
            "--methods",
            "full,lora4",
            "--batch",
            "2",
            "--seq",
            "16",
            "--steps",
            "2",
        ],
    );
    assert_eq!(lines.len(), 2);
    let (full, lora) = (&lines[0], &lines[1]);
    // Everything but embed_tokens and lm_head (2 × 512 × 64) trains in full fine-tuning.
    assert_eq!(full["parameters"], 139584);
    assert_eq!(full["trainable_parameters"], 139584 - 65536);
    // r = 4 on q,o (64→64), k,v (64→32), gate,up (64→128), down (128→64), two layers.
    let per_layer = 4 * (2 * 128 + 2 * 96 + 3 * 192);
    assert_eq!(lora["trainable_parameters"], 2 * per_layer);
    assert_eq!(
        (full["method"].as_str(), lora["method"].as_str()),
        (Some("full"), Some("lora"))
    );
    assert_eq!(lora["rank"], 4);
    for r in &lines {
        assert_eq!(r["window_tokens_per_s"].as_array().unwrap().len(), 2);
        let tps = r["tokens_per_s"].as_f64().unwrap();
        assert!(tps > 0.0 && tps.is_finite());
        // The model's own weights: its loss on this batch is a real number near ln(vocab).
        let loss = r["loss_first"].as_f64().unwrap();
        assert!(loss > 1.0 && loss < 20.0, "{loss}");
        let tflops = r["tflops"].as_f64().unwrap();
        let expected = r["flops_per_step"].as_f64().unwrap() / r["step_s"].as_f64().unwrap() / 1e12;
        assert!((tflops - expected).abs() <= 1e-9 * expected);
        assert_eq!(
            r["memory"]["device_reserved_peak_mib"],
            serde_json::Value::Null
        );
        assert!(r["memory"]["peak_rss_mib"].as_f64().unwrap() > 1.0);
    }
    // LoRA drops the block's weight-gradient matmuls and adds its low-rank paths.
    assert!(lora["flops_per_step"].as_f64() < full["flops_per_step"].as_f64());
}

#[test]
fn bench_takes_a_config_for_random_weights_and_refuses_bad_settings() {
    let config = fixtures()
        .join("llama-gqa/config.json")
        .display()
        .to_string();
    let lines = bench_lines(
        &config,
        &[
            "--methods",
            "r2",
            "--batch",
            "1",
            "--seq",
            "8",
            "--steps",
            "1",
            "--attention-dropout",
            "0.1",
        ],
    );
    assert_eq!(lines[0]["parameters"], 139584);
    assert_eq!(lines[0]["attention_dropout"], 0.1);
    let (ok, _, err) = tunelab(&["bench", "small", "--seq", "100000", "--device", "cpu"]);
    assert!(
        !ok && err.contains("max_position_embeddings (2048)"),
        "{err}"
    );
    let (ok, _, err) = tunelab(&["bench", "tiny", "--device", "cpu"]);
    assert!(!ok && err.contains("tiny"), "{err}");
    let (ok, _, err) = tunelab(&["bench", "small", "--methods", "qlora", "--device", "cpu"]);
    assert!(!ok && err.contains("full or lora<rank>"), "{err}");
    let (ok, _, err) = tunelab(&[
        "bench",
        "small",
        "--attention-dropout",
        "1",
        "--device",
        "cpu",
    ]);
    assert!(!ok && err.contains("--attention-dropout"), "{err}");
}

#[test]
fn bench_ops_times_each_op_with_each_kernel_set() {
    let dir = model("llama-gqa");
    let ops = |device: &str| {
        let args = [
            "bench", &dir, "--ops", "--batch", "2", "--seq", "16", "--steps", "2", "--device",
            device, "--json",
        ];
        let (ok, stdout, stderr) = tunelab(&args);
        assert!(ok, "bench --ops on {device} failed: {stderr}");
        stdout
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .collect::<Vec<_>>()
    };
    // Both the CPU backend (the kernels in Rust) and a GPU run tunelab's kernels, then burn's.
    let mut runs = vec![(ops("cpu"), vec!["tunelab", "burn"])];
    if std::env::var("TUNELAB_REQUIRE_GPU").as_deref() == Ok("1") {
        runs.push((ops("gpu"), vec!["tunelab", "burn"]));
        // Attention scores no adapter binds (4 GiB) are refused up front, naming the flags.
        let (ok, _, err) = tunelab(&[
            "bench", "small", "--ops", "--batch", "64", "--seq", "2048", "--device", "gpu",
        ]);
        assert!(!ok && err.contains("--batch"), "{err}");
    }
    for (lines, kernels) in runs {
        let names = [
            "matmul",
            "linear",
            "lora_linear",
            "attention",
            "rope",
            "rms_norm",
            "swiglu",
            "lm_head_loss",
            "adamw",
            "lora_adamw",
        ];
        assert_eq!(lines.len(), names.len() * kernels.len());
        for (i, r) in lines.iter().enumerate() {
            assert_eq!(r["op"], names[i % names.len()]);
            assert_eq!(r["kernels"], kernels[i / names.len()]);
            let ms = r["train_ms"].as_f64().unwrap();
            assert!(ms > 0.0 && ms.is_finite(), "{r}");
            let optimizer = r["op"].as_str().unwrap().ends_with("adamw");
            assert_eq!(r["forward_ms"].is_null(), optimizer, "{r}");
            // The rate is the counted work over the measured time.
            let (work, rate, scale) = match (r["train_flops"].as_f64(), r["train_bytes"].as_f64()) {
                (Some(f), None) => (f, r["tflops"].as_f64().unwrap(), 1e12),
                (None, Some(b)) => (b, r["gb_per_s"].as_f64().unwrap(), 1e9),
                _ => panic!("one measure of work: {r}"),
            };
            assert!(
                (rate - work / (ms / 1e3) / scale).abs() <= 1e-9 * rate,
                "{r}"
            );
        }
        // The up projection [32, 64] · [64, 128]: ×3 with both gradients; frozen with a rank-16
        // adapter, ×2 plus three low-rank products of 2 × 32 × 16 × (64 + 128).
        let up = 2.0 * (32 * 64 * 128) as f64;
        assert_eq!(lines[0]["train_flops"], 3.0 * up);
        assert_eq!(lines[1]["train_flops"], 3.0 * up);
        let low_rank = 2.0 * (32 * 16 * (64 + 128)) as f64;
        assert_eq!(lines[2]["train_flops"], 2.0 * up + 3.0 * low_rank);
        // Attention: 2 × 4 heads × 16² × 16 wide, ×4 forward, ×3 with backward.
        assert_eq!(
            lines[3]["train_flops"],
            3.0 * 4.0 * (2 * 4 * 16 * 16 * 16) as f64
        );
        // AdamW moves 7 floats per trained parameter (all but embed_tokens and lm_head).
        let adamw = lines.iter().find(|r| r["op"] == "adamw").unwrap();
        assert_eq!(adamw["train_bytes"], 7.0 * 4.0 * (139584 - 65536) as f64);
    }
    let (ok, _, err) = tunelab(&["bench", "small", "--ops", "--steps", "0", "--device", "cpu"]);
    assert!(!ok && err.contains("steps"), "{err}");
}

#[test]
fn train_settings_come_from_one_run_spec_and_errors_name_flags() {
    // Defaults, then a spec file, then flags.
    let v = json(&["train", "--print-spec", "--rank", "4"]);
    assert_eq!(v["rank"], 4);
    assert_eq!(v["method"], "lora");
    assert!(v["alpha"].is_null() && v["lr"].is_null(), "{v}");
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("run.toml");
    std::fs::write(
        &spec,
        "method = \"full\"\nlr = 2e-3\nbatch_size = 2\nrslora = true\n",
    )
    .unwrap();
    let spec = spec.to_str().unwrap();
    let v = json(&["train", "--print-spec", "--spec", spec, "--batch-size", "3"]);
    assert_eq!(
        (v["method"].as_str(), v["lr"].as_f64()),
        (Some("full"), Some(2e-3))
    );
    assert_eq!(v["batch_size"], 3);
    assert_eq!(v["rslora"], true);
    // A spec file's true can be turned off; a bare flag turns it on.
    let off = json(&["train", "--print-spec", "--spec", spec, "--rslora=false"]);
    assert_eq!(off["rslora"], false);
    assert_eq!(json(&["train", "--print-spec", "--rslora"])["rslora"], true);
    // The printed spec reads back as the same spec.
    let printed = dir.path().join("printed.json");
    std::fs::write(&printed, v.to_string()).unwrap();
    assert_eq!(
        json(&["train", "--print-spec", "--spec", printed.to_str().unwrap()]),
        v
    );
    // Library errors name fields; the CLI shows its flags.
    let (ok, _, err) = tunelab(&["train", "--print-spec", "--lr=-1"]);
    assert!(
        !ok && err.contains("error: --lr: must be positive, got -1"),
        "{err}"
    );
    let (ok, _, err) = tunelab(&["train", "--print-spec", "--dropout", "1.5"]);
    assert!(!ok && err.contains("--dropout: must be in [0, 1)"), "{err}");
    std::fs::write(dir.path().join("bad.toml"), "bach_size = 2\n").unwrap();
    let bad = dir.path().join("bad.toml");
    let (ok, _, err) = tunelab(&["train", "--print-spec", "--spec", bad.to_str().unwrap()]);
    assert!(
        !ok && err.contains("bad.toml") && err.contains("bach_size"),
        "{err}"
    );
}

#[test]
fn the_bundled_humaneval_is_the_real_one_and_evaluates() {
    use tunelab::eval::suite::{TaskData, TaskKind, read_task};
    let path = fixtures().join("../../data/humaneval/HumanEval.jsonl.gz");
    let mut reader = tunelab::train::data::open(&path).unwrap();
    let task = read_task(
        "humaneval",
        TaskKind::Humaneval,
        ("HumanEval.jsonl.gz", &mut reader),
        None,
        false,
        None,
    )
    .unwrap();
    match &task.data {
        TaskData::Code(problems) => {
            assert_eq!(problems.len(), 164);
            assert_eq!(problems[0].task_id, "HumanEval/0");
            assert_eq!(problems[163].entry_point, "generate_integers");
        }
        _ => panic!("humaneval reads as code problems"),
    }
    let spec = format!("humaneval={}", path.display());
    let v = json(&[
        "eval",
        &model("gpt2"),
        "--task",
        &spec,
        "--limit",
        "2",
        "--samples",
        "1",
        "--max-gen-toks",
        "4",
        "--device",
        "cpu",
        "--json",
    ]);
    let items: Vec<u64> = v["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["items"].as_u64().unwrap())
        .collect();
    assert!(!items.is_empty() && items.iter().all(|&n| n == 2), "{v}");
}
