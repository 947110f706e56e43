//! The evaluation suite scores as lm-evaluation-harness does (references from
//! tests/fixtures/make_eval_fixtures.py, verified there against lm-eval 0.4.13): requests,
//! tokenization, per-choice log-likelihoods, chosen answers, GSM8K prompts, greedy generations
//! and answer filters, pass@k; bad files are reported by file and line.

mod common;

use std::io::BufReader;

use common::*;
use tunelab::Session;
use tunelab::eval::code;
use tunelab::eval::generate::{GenerateOptions, generate};
use tunelab::eval::gsm8k;
use tunelab::eval::multiple_choice::{score_item, summarize};
use tunelab::eval::suite::{self, TaskData, TaskKind};
use tunelab::eval::tasks::{self, McItem};
use tunelab::hf::ModelSource;

fn eval_dir() -> std::path::PathBuf {
    fixtures().join("eval")
}

fn reference(model: &str) -> serde_json::Value {
    serde_json::from_str(
        &std::fs::read_to_string(eval_dir().join(format!("reference-{model}.json"))).unwrap(),
    )
    .unwrap()
}

fn read(kind: TaskKind, file: &str) -> suite::Task {
    let path = eval_dir().join(file);
    let mut r = BufReader::new(std::fs::File::open(&path).unwrap());
    suite::read_task(
        file,
        kind,
        (path.to_str().unwrap(), &mut r),
        None,
        false,
        None,
    )
    .unwrap()
}

fn mc_items(task: &suite::Task) -> &[McItem] {
    match &task.data {
        TaskData::MultipleChoice(items) => items,
        _ => panic!("not multiple choice"),
    }
}

#[test]
fn multiple_choice_matches_lm_eval() {
    for (label, device) in devices() {
        for model in ["llama-gqa", "gpt2"] {
            let s = pollster::block_on(Session::load(
                &ModelSource::Dir(fixtures().join(model)),
                device.clone(),
                &mut |_| {},
            ))
            .unwrap();
            let tok = s.tokenizer().unwrap();
            let rj = reference(model);
            for (kind, file, name) in [
                (TaskKind::Hellaswag, "hellaswag.jsonl", "hellaswag"),
                (TaskKind::Arc, "arc_challenge.jsonl", "arc_challenge"),
                (TaskKind::Winogrande, "winogrande.jsonl", "winogrande"),
            ] {
                let task = read(kind, file);
                let want = &rj["tasks"][name];
                let items = mc_items(&task);
                assert_eq!(items.len(), want["items"].as_array().unwrap().len());
                let mut scored = Vec::new();
                let mut worst = 0f64;
                for (item, w) in items.iter().zip(want["items"].as_array().unwrap()) {
                    let reqs: Vec<(String, String)> =
                        serde_json::from_value::<Vec<(String, String)>>(w["requests"].clone())
                            .unwrap();
                    assert_eq!(item.requests, reqs, "{name} line {}: requests", item.line);
                    let choices: Vec<String> =
                        serde_json::from_value(w["choices"].clone()).unwrap();
                    assert_eq!(item.choices, choices);
                    for (j, (c, x)) in item.requests.iter().enumerate() {
                        let (ct, xt) = tunelab::eval::loglik::encode_pair(tok, c, x).unwrap();
                        assert_eq!(
                            serde_json::json!(ct),
                            w["context_tokens"][j],
                            "{name} line {}",
                            item.line
                        );
                        assert_eq!(
                            serde_json::json!(xt),
                            w["continuation_tokens"][j],
                            "{name} line {}",
                            item.line
                        );
                    }
                    let sc =
                        pollster::block_on(score_item(&s.model, tok, item, 128, &s.device, true))
                            .unwrap();
                    for (j, x) in sc.scores.iter().enumerate() {
                        let wl = w["loglikelihoods"][j].as_f64().unwrap();
                        worst = worst.max((x.loglik - wl).abs());
                        assert_eq!(x.is_greedy, w["is_greedy"][j].as_bool().unwrap());
                    }
                    assert_eq!(sc.gold as u64, w["gold"].as_u64().unwrap());
                    assert_eq!(
                        sc.pred_acc as u64,
                        w["pred_acc"].as_u64().unwrap(),
                        "{name} line {}",
                        item.line
                    );
                    assert_eq!(
                        sc.pred_acc_norm as u64,
                        w["pred_acc_norm"].as_u64().unwrap(),
                        "{name} line {}",
                        item.line
                    );
                    assert_eq!(
                        sc.pred_ppl as u64,
                        w["pred_ppl"].as_u64().unwrap(),
                        "{name} line {}",
                        item.line
                    );
                    scored.push(sc);
                }
                eprintln!("{model} {label} {name}: worst |Δ loglikelihood| {worst:.2e}");
                assert!(
                    worst <= 1e-4,
                    "{model} {label} {name}: loglikelihoods differ by {worst}"
                );
                let r = summarize(scored);
                for (k, v) in [
                    ("acc", r.acc),
                    ("acc_norm", r.acc_norm),
                    ("ppl_acc", r.ppl_acc),
                ] {
                    assert!(
                        (v - want[k].as_f64().unwrap()).abs() < 1e-9,
                        "{model} {name} {k}"
                    );
                }
            }
        }
    }
}

#[test]
fn batching_the_choices_gives_the_same_loglikelihoods() {
    let s = pollster::block_on(Session::load(
        &ModelSource::Dir(fixtures().join("gpt2")),
        burn::tensor::Device::flex(),
        &mut |_| {},
    ))
    .unwrap();
    let task = read(TaskKind::Hellaswag, "hellaswag.jsonl");
    for item in mc_items(&task).iter().take(4) {
        let tok = s.tokenizer().unwrap();
        let a = pollster::block_on(score_item(&s.model, tok, item, 128, &s.device, true)).unwrap();
        let b = pollster::block_on(score_item(&s.model, tok, item, 128, &s.device, false)).unwrap();
        for (x, y) in a.scores.iter().zip(&b.scores) {
            assert!((x.loglik - y.loglik).abs() < 1e-4);
        }
    }
}

#[test]
fn gsm8k_prompts_generations_and_filters_match_lm_eval() {
    let train = read(TaskKind::Gsm8k, "gsm8k_train.jsonl");
    let test = read(TaskKind::Gsm8k, "gsm8k_test.jsonl");
    let (TaskData::Gsm8k { test: shots, .. }, TaskData::Gsm8k { test: items, .. }) =
        (&train.data, &test.data)
    else {
        panic!()
    };
    for model in ["llama-gqa", "gpt2"] {
        let s = pollster::block_on(Session::load(
            &ModelSource::Dir(fixtures().join(model)),
            burn::tensor::Device::flex(),
            &mut |_| {},
        ))
        .unwrap();
        let tok = s.tokenizer().unwrap();
        let rj = reference(model);
        let g = &rj["gsm8k"];
        for w in g["items"].as_array().unwrap() {
            let item = &items[w["doc_index"].as_u64().unwrap() as usize];
            let prompt = gsm8k::prompt(&shots[..3], item);
            assert_eq!(prompt, w["prompt"].as_str().unwrap());
            let ids = tok.encode_plain(&prompt).unwrap();
            assert_eq!(ids.len() as u64, w["prompt_tokens"].as_u64().unwrap());
            let ctx = &ids[ids.len() - 112..];
            assert_eq!(serde_json::json!(ctx), w["context_tokens"]);
            let opts = GenerateOptions {
                max_new_tokens: 16,
                ..Default::default()
            };
            let out =
                pollster::block_on(generate(&s.model, ctx, 512, 128, &s.device, &opts, |_| {
                    true
                }))
                .unwrap();
            assert_eq!(
                serde_json::json!(out),
                w["generated_ids"],
                "{model}: greedy generation"
            );
            let text = w["generated_text_until"].as_str().unwrap();
            assert_eq!(gsm8k::strict(text), w["strict"].as_str().unwrap());
            assert_eq!(gsm8k::flexible(text), w["flexible"].as_str().unwrap());
            assert_eq!(gsm8k::gold(item), w["target_normalized"].as_str().unwrap());
        }
        for e in rj["gsm8k_extraction"].as_array().unwrap() {
            let t = e["text"].as_str().unwrap();
            assert_eq!(gsm8k::strict(t), e["strict"].as_str().unwrap(), "{t:?}");
            assert_eq!(gsm8k::flexible(t), e["flexible"].as_str().unwrap(), "{t:?}");
            assert_eq!(
                gsm8k::normalize(&gsm8k::strict(t)),
                e["strict_normalized"].as_str().unwrap(),
                "{t:?}"
            );
            assert_eq!(
                gsm8k::normalize(&gsm8k::flexible(t)),
                e["flexible_normalized"].as_str().unwrap(),
                "{t:?}"
            );
        }
        for p in rj["pass_at_k"].as_array().unwrap() {
            let (n, c, k) = (
                p["n"].as_u64().unwrap() as usize,
                p["c"].as_u64().unwrap() as usize,
                p["k"].as_u64().unwrap() as usize,
            );
            assert!(
                (code::pass_at_k(n, c, k) - p["pass_at_k"].as_f64().unwrap()).abs() < 1e-12,
                "{n} {c} {k}"
            );
        }
    }
}

#[test]
fn humaneval_canonical_solutions_pass_and_wrong_ones_fail() {
    let task = read(TaskKind::Humaneval, "humaneval.jsonl");
    let TaskData::Code(problems) = &task.data else {
        panic!()
    };
    let raw: Vec<serde_json::Value> = std::fs::read_to_string(eval_dir().join("humaneval.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let t = std::time::Duration::from_secs(20);
    for (p, r) in problems.iter().zip(&raw) {
        let good = r["canonical_solution"].as_str().unwrap();
        assert!(
            code::passes(&code::program(p, good), t).unwrap(),
            "{}",
            p.task_id
        );
        assert!(
            !code::passes(&code::program(p, "    return None\n"), t).unwrap(),
            "{}",
            p.task_id
        );
    }
}

#[test]
fn bad_benchmark_lines_name_file_and_line() {
    for (kind, file, expect) in [
        (
            TaskKind::Hellaswag,
            "hellaswag_missing_endings.jsonl",
            "endings",
        ),
        (
            TaskKind::Arc,
            "arc_answerkey_not_in_labels.jsonl",
            "answerKey",
        ),
        (TaskKind::Arc, "arc_empty_choices.jsonl", "empty"),
        (TaskKind::Winogrande, "winogrande_no_blank.jsonl", "_"),
        (TaskKind::Gsm8k, "gsm8k_no_answer_marker.jsonl", "####"),
        (TaskKind::Hellaswag, "not_json.jsonl", "JSON"),
    ] {
        let path = eval_dir().join("bad").join(file);
        let open = || BufReader::new(std::fs::File::open(&path).unwrap());
        let e = suite::read_task(
            file,
            kind,
            (path.to_str().unwrap(), &mut open()),
            None,
            false,
            None,
        )
        .err()
        .unwrap()
        .to_string();
        assert!(
            e.contains(file) && e.contains("line 2") && e.contains(expect),
            "{e}"
        );
        let t = suite::read_task(
            file,
            kind,
            (path.to_str().unwrap(), &mut open()),
            None,
            true,
            None,
        )
        .unwrap();
        assert_eq!(t.skipped, 1, "{file}");
    }
    // A label out of range.
    let v: serde_json::Value =
        serde_json::json!({"activity_label": "x", "ctx": "y", "endings": ["a", "b"], "label": "5"});
    assert!(
        tasks::parse_hellaswag(&v, 1)
            .unwrap_err()
            .contains("out of range")
    );
}

#[test]
fn eval_cli_reports_every_metric_and_the_forgetting_score() {
    let e = |f: &str| eval_dir().join(f).display().to_string();
    let hellaswag = format!("hellaswag={}", e("hellaswag.jsonl"));
    let arc = format!("arc={}", e("arc_challenge.jsonl"));
    let winogrande = format!("winogrande={}", e("winogrande.jsonl"));
    let gsm8k = format!(
        "gsm8k={},train={}",
        e("gsm8k_test.jsonl"),
        e("gsm8k_train.jsonl")
    );
    let humaneval = format!("humaneval={}", e("humaneval.jsonl"));
    let perplexity = format!("perplexity={}", fixtures().join("data/tiny.txt").display());
    let (ok, stdout, stderr) = tunelab(&[
        "eval",
        fixtures().join("gpt2").to_str().unwrap(),
        "--device",
        "cpu",
        "--json",
        "--task",
        &hellaswag,
        "--task",
        &arc,
        "--task",
        &winogrande,
        "--task",
        &gsm8k,
        "--task",
        &humaneval,
        "--task",
        &perplexity,
        "--shots",
        "3",
        "--max-gen-toks",
        "16",
        "--samples",
        "3",
        "--limit",
        "2",
    ]);
    assert!(ok, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let metric = |task: &str, m: &str| {
        v["metrics"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["task"] == task && x["metric"] == m)
            .unwrap_or_else(|| panic!("{task} {m}"))["value"]
            .as_f64()
            .unwrap()
    };
    let f = metric("forgetting[hellaswag+arc+winogrande]", "score_acc_norm");
    let mean = (metric("hellaswag", "acc_norm")
        + metric("arc", "acc_norm")
        + metric("winogrande", "acc_norm"))
        / 3.0;
    assert!((f - mean).abs() < 1e-12);
    assert!(
        metric("gsm8k", "exact_match_strict") >= 0.0
            && metric("gsm8k", "exact_match_flexible") >= 0.0
    );
    assert!(metric("humaneval", "unique_fraction") > 0.0);
    assert!(metric("perplexity", "bits_per_byte") > 0.0);
    let notes = v["notes"].to_string();
    assert!(notes.contains("--allow-exec"), "{notes}");
}
