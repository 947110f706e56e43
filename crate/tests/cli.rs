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
