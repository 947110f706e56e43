//! Fine-tuning behaviour: exported adapters and checkpoints reload to the same logits, merge is
//! exact, runs resume exactly, divergence keeps the last good state, bad input is reported.

mod common;

use std::path::Path;

use burn::module::Module;
use burn::tensor::Device;
use common::*;
use tunelab::hf::ModelSource;
use tunelab::model::lora::{self, LoraConfig, LoraInit};
use tunelab::train::MemorySink;
use tunelab::train::data::{self, DataOptions, Regime};
use tunelab::train::loss::IGNORE;
use tunelab::train::{FullConfig, Method, TrainConfig, Trainer};
use tunelab::{Error, Session};

fn config(method: Method, lr: f64, steps: usize) -> TrainConfig {
    TrainConfig {
        max_steps: Some(steps),
        batch_size: 2,
        seed: 1,
        ..TrainConfig::new(method, lr)
    }
}

fn lora_cfg(rank: usize, targets: &[&str]) -> LoraConfig {
    LoraConfig {
        rank,
        alpha: 2.0 * rank as f64,
        dropout: 0.0,
        rslora: false,
        init: LoraInit::Kaiming,
        targets: targets.iter().map(|s| s.to_string()).collect(),
    }
}

fn session(model: &str, device: Device) -> Session {
    pollster::block_on(Session::load(
        &ModelSource::Dir(fixtures().join(model)),
        device,
        &mut |_| {},
    ))
    .unwrap()
}

fn trainer(model: &str, cfg: TrainConfig) -> tunelab::Result<Trainer> {
    let device = Device::flex().autodiff();
    let s = session(model, device.clone());
    Trainer::new(
        s.model,
        device,
        cfg,
        s.config_json,
        s.extra_files,
        model.into(),
        None,
    )
}

fn text_data(model: &str, seq_len: usize) -> data::Dataset {
    let s = session(model, Device::flex());
    let opts = data_options(Some(Regime::Cpt), seq_len);
    let path = fixtures().join("data/tiny.txt");
    let mut last = None;
    let d = data::load(&path, s.tokenizer().unwrap(), &opts, &mut |e| {
        if let tunelab::Event::Progress(p) = e {
            last = Some((p.done, p.total));
        }
    })
    .unwrap();
    // Tokenizing reports its progress, ending with the whole file.
    let size = std::fs::metadata(&path).unwrap().len();
    assert_eq!(last, Some((size, Some(size))));
    d
}

fn write_files(dir: &Path, files: &[tunelab::files::File]) {
    tunelab::files::write_dir(dir, files).unwrap();
}

fn logits_of(model: &tunelab::model::CausalLm, ids: &[u32]) -> Vec<f32> {
    let device = Device::flex();
    let input = tunelab::model::ids_tensor(ids, 512, &device).unwrap();
    pollster::block_on(tunelab::model::read_f32(model.valid().forward(input, None))).unwrap()
}

const IDS: &[u32] = &[276, 391, 318, 75, 404, 416, 490, 88];

#[test]
fn lora_adapter_exports_in_peft_layout_and_reloads_to_the_same_logits() {
    for model in ["gpt2", "llama-gqa"] {
        let mut t = trainer(model, config(Method::Lora(lora_cfg(4, &["all"])), 1e-2, 3)).unwrap();
        let mut sink = MemorySink::default();
        pollster::block_on(t.run(&text_data(model, 32), None, &mut sink, &mut |_| {})).unwrap();
        let trained = logits_of(&t.model, IDS);
        let dir = tempfile::tempdir().unwrap();
        let last = sink.checkpoints.last().unwrap();
        let (name, files) = (&last.name, &last.files);
        assert_eq!(name, "final");
        write_files(dir.path(), files);
        let cfg: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("adapter_config.json")).unwrap())
                .unwrap();
        assert_eq!(cfg["peft_type"], "LORA");
        assert_eq!(cfg["task_type"], "CAUSAL_LM");
        assert_eq!(cfg["r"], 4);
        assert_eq!(cfg["lora_alpha"], 8.0);
        assert_eq!(cfg["fan_in_fan_out"], model == "gpt2");
        let adapter =
            pollster::block_on(lora::read_peft(&ModelSource::Dir(dir.path().into()))).unwrap();
        let per_layer = if model == "gpt2" { 4 } else { 7 };
        assert_eq!(adapter.tensors.len(), 2 * 2 * per_layer);
        for (k, (shape, _)) in &adapter.tensors {
            assert!(k.starts_with("base_model.model."), "{k}");
            if k.ends_with("lora_A.weight") {
                assert_eq!(shape[0], 4, "{k}: lora_A is [r, in]");
            } else {
                assert_eq!(shape[1], 4, "{k}: lora_B is [out, r]");
            }
        }
        // Reload onto a fresh base: same logits.
        let mut s = session(model, Device::flex());
        pollster::block_on(s.attach_adapter(&ModelSource::Dir(dir.path().into()))).unwrap();
        let reloaded = logits_of(&s.model, IDS);
        let err = max_abs_diff(&trained, &reloaded);
        assert!(
            err < 1e-5,
            "{model}: reloaded adapter logits differ by {err}"
        );
        // Merging gives the same function; unmerging restores the base weights.
        let before_merge = reloaded;
        lora::merge(&mut s.model);
        assert!(max_abs_diff(&before_merge, &logits_of(&s.model, IDS)) < 1e-4);
        // The merged model exported as an HF checkpoint reloads to the same logits.
        let merged_dir = tempfile::tempdir().unwrap();
        let files = pollster::block_on(tunelab::export::hf_files(&s.model, &s.config_json, 40_000))
            .unwrap();
        assert!(
            files
                .iter()
                .any(|f| f.name == "model.safetensors.index.json"),
            "small shard size → sharded"
        );
        write_files(merged_dir.path(), &files);
        write_files(merged_dir.path(), &s.extra_files);
        let m = session(merged_dir.path().to_str().unwrap(), Device::flex());
        assert!(max_abs_diff(&before_merge, &logits_of(&m.model, IDS)) < 1e-4);
    }
}

#[test]
fn merge_cli_writes_a_loadable_checkpoint_and_unmerge_restores_the_base() {
    let adapter = fixtures().join("train/gpt2-lora-init");
    let out = tempfile::tempdir().unwrap();
    let (ok, _, stderr) = tunelab(&[
        "merge",
        fixtures().join("gpt2").to_str().unwrap(),
        adapter.to_str().unwrap(),
        "--out",
        out.path().to_str().unwrap(),
        "--device",
        "cpu",
    ]);
    assert!(ok, "{stderr}");
    let mut with_adapter = session("gpt2", Device::flex());
    pollster::block_on(with_adapter.attach_adapter(&ModelSource::Dir(adapter))).unwrap();
    let expected = logits_of(&with_adapter.model, IDS);
    let merged = session(out.path().to_str().unwrap(), Device::flex());
    assert!(max_abs_diff(&expected, &logits_of(&merged.model, IDS)) < 1e-4);
    assert!(out.path().join("tokenizer.json").exists());

    let base = logits_of(&session("gpt2", Device::flex()).model, IDS);
    lora::merge(&mut with_adapter.model);
    // merge drops the adapter; unmerge needs it attached, so re-attach and unmerge the merged copy.
    let mut m = merged;
    pollster::block_on(
        m.attach_adapter(&ModelSource::Dir(fixtures().join("train/gpt2-lora-init"))),
    )
    .unwrap();
    lora::unmerge(&mut m.model);
    m.model.for_each_linear(&mut |_, lin| lin.lora = None);
    assert!(max_abs_diff(&base, &logits_of(&m.model, IDS)) < 1e-4);
}

#[test]
fn full_finetuning_checkpoint_is_a_loadable_hf_model() {
    let mut t = trainer(
        "llama-gqa",
        config(Method::Full(FullConfig::default()), 1e-3, 2),
    )
    .unwrap();
    assert!(
        !t.trainable
            .iter()
            .any(|n| n.contains("embed_tokens") || n.starts_with("lm_head"))
    );
    let mut sink = MemorySink::default();
    pollster::block_on(t.run(&text_data("llama-gqa", 32), None, &mut sink, &mut |_| {})).unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_files(dir.path(), &sink.checkpoints.last().unwrap().files);
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "trainer_state.json",
        "optimizer.safetensors",
    ] {
        assert!(dir.path().join(f).exists(), "{f}");
    }
    let reloaded = session(dir.path().to_str().unwrap(), Device::flex());
    let err = max_abs_diff(&logits_of(&t.model, IDS), &logits_of(&reloaded.model, IDS));
    assert!(err < 1e-5, "{err}");
}

fn step_losses(jsonl: &str) -> Vec<(u64, f64)> {
    jsonl
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == "step")
        .map(|v| (v["step"].as_u64().unwrap(), v["loss"].as_f64().unwrap()))
        .collect()
}

#[test]
fn a_resumed_run_continues_exactly() {
    let model = fixtures().join("gpt2");
    let data = fixtures().join("data/tiny.txt");
    let a = tempfile::tempdir().unwrap();
    let common = [
        "--device",
        "cpu",
        "--json",
        "--seq-len",
        "32",
        "--batch-size",
        "2",
        "--max-steps",
        "6",
        "--log-every",
        "1",
        "--lr",
        "5e-3",
        "--warmup",
        "2",
    ];
    for method in ["lora", "full"] {
        let out_a = a.path().join(method);
        let mut args = vec![
            "train",
            model.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--method",
            method,
            "--save-every",
            "3",
            "--out",
            out_a.to_str().unwrap(),
        ];
        args.extend(common);
        let (ok, stdout, stderr) = tunelab(&args);
        assert!(ok, "{stderr}");
        let straight = step_losses(&stdout);
        assert_eq!(straight.len(), 6);
        let out_b = a.path().join(format!("{method}-resumed"));
        let ckpt = out_a.join("checkpoint-3");
        let mut args = vec![
            "train",
            model.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--method",
            method,
            "--resume",
            ckpt.to_str().unwrap(),
            "--out",
            out_b.to_str().unwrap(),
        ];
        args.extend(common);
        let (ok, stdout, stderr) = tunelab(&args);
        assert!(ok, "{stderr}");
        let resumed = step_losses(&stdout);
        assert_eq!(
            resumed,
            straight[3..].to_vec(),
            "{method}: resumed losses differ"
        );
    }
}

#[test]
fn a_used_out_and_resuming_onto_another_model_are_refused() {
    let a = tempfile::tempdir().unwrap();
    let data = fixtures().join("data/tiny.txt");
    let gpt2 = fixtures().join("gpt2");
    let first = [
        "train",
        gpt2.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--method",
        "lora",
        "--rank",
        "2",
        "--max-steps",
        "2",
        "--save-every",
        "1",
        "--seq-len",
        "16",
        "--batch-size",
        "1",
        "--device",
        "cpu",
        "--out",
        a.path().to_str().unwrap(),
    ];
    let (ok, _, stderr) = tunelab(&first);
    assert!(ok, "{stderr}");
    // The same command again would mix a second run into the first's folder: refused, and
    // nothing there is touched; with --overwrite the old log and checkpoints go first.
    let log = std::fs::read_to_string(a.path().join("train_log.jsonl")).unwrap();
    let (ok, _, stderr) = tunelab(&first);
    assert!(
        !ok && stderr.contains("--out") && stderr.contains("--overwrite"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(a.path().join("train_log.jsonl")).unwrap(),
        log
    );
    std::fs::create_dir(a.path().join("checkpoint-9")).unwrap();
    let (ok, _, stderr) = tunelab(&[&first[..], &["--overwrite"]].concat());
    assert!(ok, "{stderr}");
    assert!(!a.path().join("checkpoint-9").exists());
    assert_eq!(
        std::fs::read_to_string(a.path().join("train_log.jsonl"))
            .unwrap()
            .lines()
            .count(),
        log.lines().count(),
        "the log holds one run"
    );
    let (ok, _, stderr) = tunelab(&[
        "train",
        fixtures().join("llama-gqa").to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--resume",
        a.path().join("checkpoint-1").to_str().unwrap(),
        "--device",
        "cpu",
        "--out",
        a.path().join("x").to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(
        stderr.contains("--resume")
            && (stderr.contains("different model") || stderr.contains("no linear layer")),
        "{stderr}"
    );
}

#[test]
fn divergence_stops_the_run_and_keeps_the_last_good_state() {
    let mut cfg = config(Method::Full(FullConfig::default()), 1e30, 8);
    cfg.clip = None;
    let mut t = trainer("gpt2", cfg).unwrap();
    let mut sink = MemorySink::default();
    let err = pollster::block_on(t.run(&text_data("gpt2", 32), None, &mut sink, &mut |_| {}))
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::Diverged { .. }), "{msg}");
    assert!(msg.contains("`lr`") && msg.contains("checkpoint-"), "{msg}");
    let last = sink.checkpoints.last().unwrap();
    let (name, files) = (&last.name, &last.files);
    assert!(name.starts_with("checkpoint-"));
    assert!(files.iter().any(|f| f.name == "model.safetensors"));
}

#[test]
fn lora_bad_settings_name_the_problem() {
    let e = trainer("gpt2", config(Method::Lora(lora_cfg(0, &["all"])), 1e-3, 1))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("`rank`"), "{e}");
    // A rank above a module's smaller dimension (64 here) is allowed, as PEFT allows it.
    assert!(
        trainer(
            "gpt2",
            config(Method::Lora(lora_cfg(100, &["all"])), 1e-3, 1)
        )
        .is_ok()
    );
    let e = trainer(
        "llama-gqa",
        config(Method::Lora(lora_cfg(4, &["qkv_proj"])), 1e-3, 1),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        e.contains("qkv_proj") && e.contains("self_attn.q_proj") && e.contains("mlp.down_proj"),
        "{e}"
    );
}

#[test]
fn presets_select_the_papers_modules() {
    let mut s = session("gpt2", Device::flex());
    let attn = lora::resolve_targets(&mut s.model, &["attention".into()]).unwrap();
    assert_eq!(
        attn,
        vec![
            "transformer.h.0.attn.c_attn",
            "transformer.h.0.attn.c_proj",
            "transformer.h.1.attn.c_attn",
            "transformer.h.1.attn.c_proj"
        ]
    );
    let mlp = lora::resolve_targets(&mut s.model, &["mlp".into()]).unwrap();
    assert!(mlp.iter().all(|p| p.contains(".mlp.")) && mlp.len() == 4);
    let re = lora::resolve_targets(&mut s.model, &["re:.*h\\.1\\..*c_fc".into()]).unwrap();
    assert_eq!(re, vec!["transformer.h.1.mlp.c_fc"]);
    let mut l = session("llama-gqa", Device::flex());
    assert_eq!(
        lora::resolve_targets(&mut l.model, &["all".into()])
            .unwrap()
            .len(),
        14
    );
}

#[test]
fn frozen_weights_get_no_optimizer_state_and_lora_plus_scales_b() {
    // Start from the fixture adapter (non-zero B, so A gets gradients) with B's rate at 0.
    let mut cfg = config(Method::Lora(lora_cfg(4, &["all"])), 1e-2, 1);
    cfg.lora_plus_ratio = Some(0.0);
    let device = Device::flex().autodiff();
    let s = session("gpt2", device.clone());
    let adapter = pollster::block_on(lora::read_peft(&ModelSource::Dir(
        fixtures().join("train/gpt2-lora-init"),
    )))
    .unwrap();
    let mut t = Trainer::new(
        s.model,
        device,
        cfg,
        s.config_json,
        s.extra_files,
        "gpt2".into(),
        Some(&adapter),
    )
    .unwrap();
    let before = t.model.clone();
    let mut sink = MemorySink::default();
    pollster::block_on(t.run(&text_data("gpt2", 16), None, &mut sink, &mut |_| {})).unwrap();
    assert_eq!(
        t.optimizer.tracked(),
        16,
        "only the 8 adapted linears × (A, B) have state"
    );
    // B's learning rate is 0 → B stays; A moved.
    let (mut a_moved, mut b_same) = (false, true);
    let mut after = t.model.clone();
    let mut b4 = before;
    let mut old = Vec::new();
    b4.for_each_linear(&mut |_, lin| {
        if let Some(l) = &lin.lora {
            old.push((l.a.val(), l.b.val()))
        }
    });
    let mut i = 0;
    after.for_each_linear(&mut |_, lin| {
        if let Some(l) = &lin.lora {
            let a = pollster::block_on(tunelab::model::read_f32(l.a.val().inner())).unwrap();
            let a0 =
                pollster::block_on(tunelab::model::read_f32(old[i].0.clone().inner())).unwrap();
            a_moved |= max_abs_diff(&a, &a0) > 0.0;
            let b = pollster::block_on(tunelab::model::read_f32(l.b.val().inner())).unwrap();
            let b0 =
                pollster::block_on(tunelab::model::read_f32(old[i].1.clone().inner())).unwrap();
            b_same &= max_abs_diff(&b, &b0) == 0.0;
            i += 1;
        }
    });
    assert!(a_moved && b_same);
}

/// Data options for the fixture tokenizers: pad with id 0, no chat template, bad lines refused.
fn data_options(regime: Option<Regime>, seq_len: usize) -> DataOptions {
    DataOptions {
        regime,
        seq_len,
        skip_bad_lines: false,
        pad_id: 0,
        chat_template: None,
    }
}

/// Examples of `bytes` (a file called `name`) pushed into a [`data::DataReader`] in chunks of
/// `chunk` bytes.
fn pushed(
    tok: &tunelab::hf::Tokenizer,
    opts: &DataOptions,
    name: &str,
    bytes: &[u8],
    chunk: usize,
) -> Result<Vec<data::Example>, Error> {
    let format = data::Format::of(name);
    let mut quiet = |_: &tunelab::Event| {};
    let mut reader = data::DataReader::new(name, format, None, tok, opts.clone(), &mut quiet)?;
    for piece in bytes.chunks(chunk) {
        reader.push(piece)?;
    }
    Ok(reader.finish()?.0.examples)
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

#[test]
fn data_streams_in_any_chunks_gzipped_or_not() {
    let s = session("gpt2", Device::flex());
    let tok = s.tokenizer().unwrap();
    let opts = data_options(None, 16);
    let text = std::fs::read(fixtures().join("data/tiny.txt")).unwrap();
    let jsonl = std::fs::read(fixtures().join("data/tiny_ift.jsonl")).unwrap();
    for (name, bytes) in [("tiny.txt", &text), ("tiny_ift.jsonl", &jsonl)] {
        let whole = pushed(tok, &opts, name, bytes, usize::MAX).unwrap();
        assert!(!whole.is_empty());
        // Windows line breaks read as Unix ones.
        let crlf = String::from_utf8(bytes.clone())
            .unwrap()
            .replace('\n', "\r\n");
        assert_eq!(pushed(tok, &opts, name, crlf.as_bytes(), 5).unwrap(), whole);
        let gz = gzip(bytes);
        // Two gzip members one after the other (`cat a.gz b.gz`) are one file.
        let half = bytes.len() / 2;
        let cut = bytes[..half].iter().rposition(|&b| b == b'\n').unwrap() + 1;
        let members = [gzip(&bytes[..cut]), gzip(&bytes[cut..])].concat();
        for chunk in [1, 7, 4096] {
            assert_eq!(
                pushed(tok, &opts, name, bytes, chunk).unwrap(),
                whole,
                "{name} {chunk}"
            );
            let gz_name = format!("{name}.gz");
            assert_eq!(pushed(tok, &opts, &gz_name, &gz, chunk).unwrap(), whole);
            assert_eq!(
                pushed(tok, &opts, &gz_name, &members, chunk).unwrap(),
                whole
            );
        }
        // A download cut short, or damaged bytes, is an error naming the file, not fewer examples.
        let e = pushed(tok, &opts, "cut.txt.gz", &gz[..gz.len() - 5], 64).unwrap_err();
        assert!(
            e.to_string().contains("cut.txt.gz") && e.to_string().contains("gzip"),
            "{e}"
        );
        let mut bad = gz.clone();
        bad[gz.len() / 2] ^= 0xff;
        let e = pushed(tok, &opts, "bad.txt.gz", &bad, 64).unwrap_err();
        assert!(e.to_string().contains("bad.txt.gz"), "{e}");
    }
}

#[test]
fn text_without_line_breaks_is_tokenized_in_pieces_as_if_whole() {
    // A corpus with no line breaks (text8, minified dumps) is cut before spaces; GPT-2's
    // pre-tokenizer splits there anyway, so the tokens are those of the whole text.
    let s = session("gpt2", Device::flex());
    let tok = s.tokenizer().unwrap();
    let words = [
        "the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "again",
    ];
    let line: Vec<&str> = (0..60_000)
        .map(|i| words[(i * 7 + i / 3) % words.len()])
        .collect();
    let line = line.join(" ");
    assert!(line.len() > 4 << 16);
    let opts = data_options(Some(Regime::Cpt), 64);
    let examples = pushed(tok, &opts, "line.txt", line.as_bytes(), 1000).unwrap();
    let mut want = tok.encode(&format!("{line}\n")).unwrap();
    want.extend(tok.eos_id);
    let got: Vec<u32> = examples.iter().flat_map(|e| e.ids.clone()).collect();
    assert_eq!(got, want[..want.len() / 64 * 64]);
}

#[test]
fn bad_bytes_in_data_name_their_line() {
    let s = session("gpt2", Device::flex());
    let tok = s.tokenizer().unwrap();
    let opts = data_options(None, 8);
    let text = b"one line\nsecond \xff line\nthird\n";
    let e = pushed(tok, &opts, "t.txt", text, 3)
        .unwrap_err()
        .to_string();
    assert!(e.contains("t.txt: line 2: not valid UTF-8"), "{e}");
    // Also inside a line long enough to be tokenized in pieces before its end arrives.
    let words = b"word ".repeat(10_000);
    let long = [&b"first line\n"[..], &words, b"\xff ", &words].concat();
    let e = pushed(tok, &opts, "long.txt", &long, 4096)
        .unwrap_err()
        .to_string();
    assert!(e.contains("long.txt: line 2: not valid UTF-8"), "{e}");
    let jsonl = b"{\"text\": \"a b c d e f g h i j k l\"}\n{\"text\": \"\xff\"}\n";
    let e = pushed(tok, &opts, "t.jsonl", jsonl, 3)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("line 2") && e.contains("`skip_bad_lines`"),
        "{e}"
    );
    let skip = DataOptions {
        skip_bad_lines: true,
        ..opts.clone()
    };
    assert!(!pushed(tok, &skip, "t.jsonl", jsonl, 3).unwrap().is_empty());
}

#[test]
fn data_files_are_read_with_line_numbers_and_masks() {
    let s = session("gpt2", Device::flex());
    let tok = s.tokenizer().unwrap();
    let opts = data_options(Some(Regime::Cpt), 16);
    let e = data::load(&fixtures().join("data/bad.jsonl"), tok, &opts, &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("bad.jsonl") && e.contains("line 2") && e.contains("`skip_bad_lines`"),
        "{e}"
    );
    let d = data::load(
        &fixtures().join("data/bad.jsonl"),
        tok,
        &DataOptions {
            skip_bad_lines: true,
            ..opts.clone()
        },
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(d.skipped_lines, 2);

    let empty = tempfile::NamedTempFile::with_suffix(".txt").unwrap();
    let e = data::load(empty.path(), tok, &opts, &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(e.contains("no training examples"), "{e}");

    // Packing: every block is full and labels equal inputs.
    let d = data::load(
        &fixtures().join("data/tiny_text.jsonl"),
        tok,
        &opts,
        &mut |_| {},
    )
    .unwrap();
    assert!(
        d.examples
            .iter()
            .all(|x| x.ids.len() == 16 && x.labels().zip(&x.ids).all(|(l, i)| l == *i as i64))
    );

    // Instruction tuning: loss only on the response (+ EOS), padding masked. The regime is found
    // from the first record when not given.
    let (_, regime) = data::load_with_regime(
        &fixtures().join("data/tiny_ift.jsonl"),
        tok,
        &DataOptions {
            regime: None,
            ..opts.clone()
        },
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(regime, Regime::Ift);
    let ift = data_options(Some(Regime::Ift), 32);
    let d = data::load(
        &fixtures().join("data/tiny_ift.jsonl"),
        tok,
        &ift,
        &mut |_| {},
    )
    .unwrap();
    let x = &d.examples[0];
    let labels: Vec<i64> = x.labels().collect();
    let prompt_len = tok.encode("Question: what is").unwrap().len();
    assert!(labels[..prompt_len].iter().all(|&l| l == IGNORE));
    let real = x.mask().filter(|&m| m).count();
    assert!(real < 32 && labels[real..].iter().all(|&l| l == IGNORE));
    assert_eq!(
        labels[real - 1],
        tok.eos_id.unwrap() as i64,
        "EOS is learned"
    );
}

#[test]
fn train_cli_reports_progress_and_checks_sequence_length() {
    let out = tempfile::tempdir().unwrap();
    let (ok, _, stderr) = tunelab(&[
        "train",
        fixtures().join("gpt2").to_str().unwrap(),
        "--data",
        fixtures().join("data/tiny.txt").to_str().unwrap(),
        "--seq-len",
        "4096",
        "--device",
        "cpu",
        "--out",
        out.path().to_str().unwrap(),
    ]);
    assert!(
        !ok && stderr.contains("--seq-len: 4096 exceeds"),
        "{stderr}"
    );
    let (ok, stdout, stderr) = tunelab(&[
        "train",
        fixtures().join("llama-gqa").to_str().unwrap(),
        "--data",
        fixtures().join("data/tiny_ift.jsonl").to_str().unwrap(),
        "--eval-data",
        fixtures().join("data/tiny_ift.jsonl").to_str().unwrap(),
        "--eval-every",
        "2",
        "--method",
        "full",
        "--optimizer",
        "lion",
        "--lr",
        "1e-4",
        "--seq-len",
        "32",
        "--batch-size",
        "4",
        "--grad-accum",
        "2",
        "--max-steps",
        "4",
        "--log-every",
        "2",
        "--device",
        "cpu",
        "--json",
        "--out",
        out.path().to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    let events: Vec<serde_json::Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert_eq!(events.iter().filter(|e| e["event"] == "step").count(), 4);
    assert_eq!(events.iter().filter(|e| e["event"] == "eval").count(), 2);
    assert!(
        out.path().join("train_log.jsonl").exists()
            && out.path().join("model.safetensors").exists()
    );
}

#[test]
fn a_held_out_share_is_the_evaluation_data_when_none_is_given() {
    let mut d = text_data("gpt2", 32);
    let (n, tokens) = (d.examples.len(), d.target_tokens);
    let held = d.hold_out(0.2, 7).unwrap();
    assert_eq!(held.examples.len(), (n as f64 * 0.2).round() as usize);
    assert_eq!(d.examples.len() + held.examples.len(), n);
    assert_eq!(d.target_tokens + held.target_tokens, tokens);
    // Seeded: the same share again, a different one with another seed; no example in both.
    let mut again = text_data("gpt2", 32);
    assert_eq!(
        again.hold_out(0.2, 7).unwrap().examples[0].ids,
        held.examples[0].ids
    );
    assert!(
        d.examples
            .iter()
            .all(|e| !held.examples.iter().any(|h| h.ids == e.ids))
    );
    let mut one = data::Dataset {
        examples: d.examples[..1].to_vec(),
        skipped_lines: 0,
        target_tokens: 0,
    };
    let e = one.hold_out(0.1, 0).unwrap_err();
    assert!(e.to_string().contains("`holdout`"), "{e}");

    let out = tempfile::tempdir().unwrap();
    let train = |holdout: &str| {
        tunelab(&[
            "train",
            fixtures().join("gpt2").to_str().unwrap(),
            "--data",
            fixtures().join("data/tiny.txt").to_str().unwrap(),
            "--holdout",
            holdout,
            "--eval-every",
            "1",
            "--seq-len",
            "32",
            "--max-steps",
            "2",
            "--device",
            "cpu",
            "--json",
            "--out",
            out.path().to_str().unwrap(),
        ])
    };
    let (ok, stdout, stderr) = train("0.1");
    assert!(ok, "{stderr}");
    let evals = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["event"] == "eval")
        .count();
    assert_eq!(evals, 2, "{stdout}");
    let (ok, _, stderr) = train("0.9");
    assert!(
        !ok && stderr.contains("--holdout: must be in [0, 0.5]"),
        "{stderr}"
    );
}

#[test]
fn oversized_batches_are_refused_before_allocation() {
    use tunelab::kernels::Kernels;
    use tunelab::train::StepShape;
    use tunelab::train::trainer::check_buffer_limit;
    let s = session("gpt2", Device::flex());
    let step = |batch, seq, kernels| StepShape {
        batch,
        seq,
        kernels,
    };
    // burn's ops: 64 × 128 × 512 × 4 B = 16 MiB of logits against a 8 MiB binding limit.
    let e = check_buffer_limit(&s.config, &step(64, 128, Kernels::Burn), 8 << 20)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("16.0 MiB logits buffer")
            && e.contains("max_storage_buffer_binding_size")
            && e.contains("8.0 MiB over")
            && e.contains("`batch_size`"),
        "{e}"
    );
    assert!(check_buffer_limit(&s.config, &step(1, 128, Kernels::Burn), 8 << 20).is_ok());
    // At 1024 × 128 burn's logits (and scores) take 256 MiB; tunelab's kernels keep one 64 MiB
    // chunk of logits and a 64 MiB mask instead, so the largest buffer left is the MLP's
    // (1024 × 128 × 4·n_embd floats, 128 MiB), under a 160 MiB limit.
    let e = check_buffer_limit(&s.config, &step(1024, 128, Kernels::Burn), 160 << 20)
        .unwrap_err()
        .to_string();
    assert!(e.contains("256.0 MiB logits buffer, 96.0 MiB over"), "{e}");
    let fused = step(1024, 128, Kernels::Tunelab);
    assert!(check_buffer_limit(&s.config, &fused, 160 << 20).is_ok());
    let largest = tunelab::train::trainer::largest_buffer(&s.config, &fused);
    assert_eq!(largest, (1024 * 128 * 256 * 4, "MLP activation"));
    // At 1,024 positions burn's attention scores are the largest buffer; the fused kernel (with
    // attention dropout too, drawn in the kernel) keeps only the mask.
    let (_, what) =
        tunelab::train::trainer::largest_buffer(&s.config, &step(64, 1024, Kernels::Burn));
    assert_eq!(what, "attention-score");
    let (_, what) =
        tunelab::train::trainer::largest_buffer(&s.config, &step(64, 1024, Kernels::Tunelab));
    assert_eq!(what, "attention-mask");
}

#[test]
fn gradient_accumulation_equals_one_large_batch() {
    let data = text_data("gpt2", 16);
    let device = Device::flex().autodiff();
    let ex: Vec<_> = data.examples.iter().take(2).collect();
    let mut t = trainer("gpt2", config(Method::Full(FullConfig::default()), 1e-3, 1)).unwrap();
    let (l1, g1) = t.gradients(&[data::collate(&ex, &device)]);
    let (l2, g2) = t.gradients(&[
        data::collate(&ex[..1], &device),
        data::collate(&ex[1..], &device),
    ]);
    let read = |t| pollster::block_on(tunelab::model::read_f32(t)).unwrap();
    assert!((read(l1)[0] - read(l2)[0]).abs() < 1e-5);
    for ((n, a), (_, b)) in g1.into_iter().zip(g2) {
        let (a, b) = (read(a.flat), read(b.flat));
        let scale = a.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
        assert!(max_abs_diff(&a, &b) / scale < 1e-4, "{n}");
    }
}

#[test]
fn generated_math_data_trains_and_evaluates() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, _, stderr) = tunelab(&[
        "make-data",
        "math",
        "--train",
        "40",
        "--test",
        "4",
        "--seed",
        "3",
        "--out",
        dir.path().to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    // GSM8K layout reads as instruction data with the evaluation's prompt format.
    let s = session("gpt2", Device::flex());
    let tok = s.tokenizer().unwrap();
    let d = data::load(
        &dir.path().join("train.jsonl"),
        tok,
        &data_options(Some(Regime::Ift), 96),
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(d.examples.len(), 40);
    let prompt = tok.encode("Question:").unwrap();
    assert_eq!(&d.examples[0].ids[..prompt.len()], &prompt[..]);
    let test = dir.path().join("test.jsonl");
    let (ok, stdout, stderr) = tunelab(&[
        "eval",
        fixtures().join("gpt2").to_str().unwrap(),
        "--device",
        "cpu",
        "--json",
        "--task",
        &format!(
            "gsm8k={},train={}",
            test.display(),
            dir.path().join("train.jsonl").display()
        ),
        "--shots",
        "1",
        "--max-gen-toks",
        "8",
    ]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("exact_match_strict"));
}

#[test]
fn init_writes_a_random_checkpoint_that_pretraining_improves() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("base");
    let (ok, _, stderr) = tunelab(&[
        "init",
        fixtures().join("llama-gqa/config.json").to_str().unwrap(),
        "--tokenizer",
        fixtures().join("tokenizer.json").to_str().unwrap(),
        "--seed",
        "1",
        "--out",
        model.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    let s = session(model.to_str().unwrap(), Device::flex());
    let logits = logits_of(&s.model, IDS);
    assert!(logits.iter().all(|v| v.is_finite()));
    // Pretraining from scratch (embeddings included) lowers the loss.
    let out = dir.path().join("pre");
    let (ok, stdout, stderr) = tunelab(&[
        "train",
        model.to_str().unwrap(),
        "--data",
        fixtures().join("data/tiny.txt").to_str().unwrap(),
        "--method",
        "full",
        "--train-embeddings",
        "--lr",
        "3e-3",
        "--max-steps",
        "12",
        "--seq-len",
        "32",
        "--batch-size",
        "4",
        "--log-every",
        "1",
        "--device",
        "cpu",
        "--json",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    let losses: Vec<f64> = step_losses(&stdout).into_iter().map(|x| x.1).collect();
    assert!(losses.last().unwrap() < &(losses[0] - 0.5), "{losses:?}");
}

#[test]
fn optimizer_state_that_does_not_fit_the_model_is_refused_on_resume() {
    let mut t = trainer("gpt2", config(Method::Lora(lora_cfg(4, &["all"])), 1e-2, 1)).unwrap();
    let mut sink = MemorySink::default();
    pollster::block_on(t.run(&text_data("gpt2", 16), None, &mut sink, &mut |_| {})).unwrap();
    let files = pollster::block_on(t.checkpoint_files()).unwrap();
    let state = files
        .iter()
        .find(|f| f.name == "trainer_state.json")
        .expect("a trainer state");
    let state = String::from_utf8(state.bytes.clone()).unwrap();
    let moments = pollster::block_on(t.optimizer.export()).unwrap();
    t.restore(&state, moments.clone()).unwrap();
    // A moment one value short, and one of no parameter: named, before anything is imported.
    let (key, mut short) = moments[0].clone();
    short.pop();
    let e = t.restore(&state, vec![(key.clone(), short)]).unwrap_err();
    assert!(e.to_string().contains(&format!("`{key}` has")), "{e}");
    let e = t
        .restore(&state, vec![("exp_avg.nothing".into(), vec![0.0])])
        .unwrap_err();
    assert!(e.to_string().contains("exp_avg.nothing"), "{e}");
}
