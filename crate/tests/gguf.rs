//! GGUF files: every tensor type dequantises as gguf-py does, a llama GGUF (Q/K permuted,
//! mixed quantisations) loads to the logits transformers computes from the same file, on the CPU
//! backend and on wgpu, from a path and from a URL; its tokenizer and chat template come back;
//! `tunelab convert` writes a checkpoint that loads to the same logits; bad files are errors
//! naming the file; SentencePiece vocabularies and the Qwen architectures as transformers reads
//! them. References: tests/fixtures/make_gguf_fixtures.py, make_gguf_spm_fixtures.py,
//! make_gguf_arch_fixtures.py, make_smollm2_reference.py.

mod common;

use common::*;
use tunelab::Session;
use tunelab::gguf::{self, GgufStream};
use tunelab::hf::{HfError, ModelSource};

fn gguf_dir() -> std::path::PathBuf {
    fixtures().join("gguf")
}

fn load(source: &ModelSource, device: burn::tensor::Device) -> Session {
    pollster::block_on(Session::load_gguf(
        source,
        "llama-gqa.gguf",
        device,
        None,
        &mut |_| {},
    ))
    .unwrap()
}

fn check_logits(session: &Session, label: &str) {
    let r = read_reference(&gguf_dir().join("reference.safetensors"));
    let ids: Vec<u32> = r["ids"].i64.iter().map(|&i| i as u32).collect();
    let got = pollster::block_on(session.logits(&ids)).unwrap();
    let worst = max_abs_diff(&got, &r["logits"].f32);
    assert!(worst <= 1e-4, "{label}: max |Δlogit| {worst}");
    eprintln!("{label}: max |Δlogit| vs transformers on the GGUF {worst:.2e}");
}

#[test]
fn every_tensor_type_dequantises_as_gguf_py() {
    let r = read_reference(&gguf_dir().join("reference.safetensors"));
    for file in ["kquants", "llama-gqa"] {
        let bytes = std::fs::read(gguf_dir().join(format!("{file}.gguf"))).unwrap();
        let mut seen = 0;
        let header = gguf::read(&bytes, file, |_, t, values| {
            let expected = &r[&format!("{file}/{}", t.name)].f32;
            assert_eq!(values.len(), expected.len(), "{}", t.name);
            let worst = values
                .iter()
                .zip(expected)
                .map(|(a, b)| (a - b).abs() / b.abs().max(1e-3))
                .fold(0f32, f32::max);
            assert!(
                worst <= 1e-6,
                "{file}/{} ({}): {worst}",
                t.name,
                t.kind.name()
            );
            seen += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, header.tensors.len());
        assert!(header.version == 3 && seen >= 11, "{file}: {seen} tensors");
    }
}

#[test]
fn chunk_sizes_do_not_change_what_is_read() {
    let bytes = std::fs::read(gguf_dir().join("kquants.gguf")).unwrap();
    let mut whole = Vec::new();
    gguf::read(&bytes, "k", |_, t, v| {
        whole.push((t.name.clone(), v));
        Ok(())
    })
    .unwrap();
    for size in [1, 7, 333] {
        let mut stream = GgufStream::new("k", Some(bytes.len() as u64));
        let mut got = Vec::new();
        for piece in bytes.chunks(size) {
            stream
                .push(piece, &mut |_| Ok(()), &mut |_, t, v| {
                    got.push((t.name.clone(), v));
                    Ok(())
                })
                .unwrap();
        }
        stream.finish().unwrap();
        assert_eq!(got, whole, "chunks of {size}");
    }
}

#[test]
fn a_llama_gguf_loads_to_transformers_logits_on_every_device_and_from_a_url() {
    for (label, device) in devices() {
        check_logits(&load(&ModelSource::Dir(gguf_dir()), device), label);
    }
    let url = serve(fixtures());
    let session = load(
        &ModelSource::parse(&format!("{url}gguf/")),
        burn::tensor::Device::flex(),
    );
    check_logits(&session, "cpu, from a URL");
    assert!(
        session.source.ends_with("gguf/llama-gqa.gguf"),
        "{}",
        session.source
    );
}

#[test]
fn the_tokenizer_and_chat_template_come_back_from_the_metadata() {
    let session = load(&ModelSource::Dir(gguf_dir()), burn::tensor::Device::flex());
    let reference: serde_json::Value =
        serde_json::from_slice(&std::fs::read(gguf_dir().join("reference.json")).unwrap()).unwrap();
    let ids: Vec<u64> = session
        .tokenizer()
        .unwrap()
        .encode(reference["text"].as_str().unwrap())
        .unwrap()
        .into_iter()
        .map(u64::from)
        .collect();
    let expected: Vec<u64> = serde_json::from_value(reference["ids"].clone()).unwrap();
    assert_eq!(ids, expected);
    let config = session
        .extra_files
        .iter()
        .find(|f| f.name == "tokenizer_config.json")
        .unwrap();
    let config: serde_json::Value = serde_json::from_slice(&config.bytes).unwrap();
    assert_eq!(config["chat_template"], reference["chat_template"]);
    assert_eq!(config["eos_token"], "<|endoftext|>");
    assert_eq!(session.config.max_positions(), 128);
}

#[test]
fn convert_writes_a_checkpoint_with_the_same_logits() {
    let out = tempfile::tempdir().unwrap();
    let model = gguf_dir().join("llama-gqa.gguf");
    let (ok, stdout, stderr) = tunelab(&[
        "convert",
        model.to_str().unwrap(),
        "--out",
        out.path().to_str().unwrap(),
        "--json",
    ]);
    assert!(ok, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    for f in [
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "model.safetensors",
    ] {
        assert!(v["files"].as_array().unwrap().iter().any(|x| x == f), "{v}");
    }
    let converted = pollster::block_on(Session::load(
        &ModelSource::Dir(out.path().to_path_buf()),
        burn::tensor::Device::flex(),
        &mut |_| {},
    ))
    .unwrap();
    check_logits(&converted, "converted checkpoint");
    // Every command takes the .gguf path as a model.
    let (ok, stdout, stderr) = tunelab(&[
        "score",
        model.to_str().unwrap(),
        "--text",
        "The quick brown fox",
        "--device",
        "cpu",
        "--json",
    ]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("perplexity"), "{stdout}");
}

#[test]
fn bad_gguf_files_are_errors_naming_the_file() {
    let bytes = std::fs::read(gguf_dir().join("kquants.gguf")).unwrap();
    let err = |b: &[u8]| {
        gguf::read(b, "bad.gguf", |_, _, _| Ok(()))
            .unwrap_err()
            .to_string()
    };
    // Cut short: caught from the header when the length is known, at the end of the stream
    // when it is not.
    let e = err(&bytes[..bytes.len() - 10]);
    assert!(
        e.contains("bad.gguf") && e.contains("but the file has"),
        "{e}"
    );
    let mut stream = GgufStream::new("bad.gguf", None);
    stream
        .push(
            &bytes[..bytes.len() - 10],
            &mut |_| Ok(()),
            &mut |_, _, _| Ok(()),
        )
        .unwrap();
    let e = stream.finish().unwrap_err().to_string();
    assert!(
        e.contains("bad.gguf") && e.contains("truncated") && e.contains("tensor"),
        "{e}"
    );
    let e = err(&bytes[..20]);
    assert!(e.contains("bad.gguf") && e.contains("header"), "{e}");
    let e = err(b"GGML\x03\0\0\0");
    assert!(e.contains("not a valid GGUF file: no GGUF magic"), "{e}");
    let mut v1 = bytes.clone();
    v1[4] = 1;
    assert!(err(&v1).contains("GGUF version 1"));
    // A header claiming 2^40 tensors is refused before anything is allocated for them.
    let mut huge = bytes.clone();
    huge[8..16].copy_from_slice(&(1u64 << 40).to_le_bytes());
    let e = err(&huge);
    assert!(e.contains("claims"), "{e}");
    // A string claiming 2^60 bytes.
    let mut long = bytes.clone();
    long[24..32].copy_from_slice(&(1u64 << 60).to_le_bytes());
    let e = err(&long);
    assert!(e.contains("bad.gguf"), "{e}");
    // An unsupported quantisation names the tensor and the type.
    let header = gguf::read(&bytes, "k", |_, _, _| Ok(())).unwrap();
    let first = &header.tensors[0].name;
    let at = bytes
        .windows(first.len())
        .position(|w| w == first.as_bytes())
        .unwrap();
    let type_at = at + first.len() + 4 + 8 * header.tensors[0].dims.len();
    let mut q3 = bytes.clone();
    q3[type_at..type_at + 4].copy_from_slice(&11u32.to_le_bytes());
    let e = err(&q3);
    assert!(e.contains(first.as_str()) && e.contains("Q3_K"), "{e}");
    // A missing file through the model loader.
    let e = pollster::block_on(Session::load_gguf(
        &ModelSource::Dir(gguf_dir()),
        "missing.gguf",
        burn::tensor::Device::flex(),
        None,
        &mut |_| {},
    ))
    .err()
    .unwrap();
    assert!(
        matches!(e, tunelab::Error::Hf(HfError::MissingFile { .. })),
        "{e}"
    );
}

#[test]
fn info_reads_only_the_header() {
    let model = gguf_dir().join("llama-gqa.gguf");
    let (ok, stdout, stderr) = tunelab(&["info", model.to_str().unwrap(), "--json"]);
    assert!(ok, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    // The same counts as the safetensors fixture it was made from.
    assert_eq!(v["total_parameters"], 139584);
    assert_eq!(v["parameters_by_kind"]["embedding"]["parameters"], 65536);
    assert_eq!(v["config"]["model_type"], "llama");
    assert_eq!(v["dtypes"]["Q8_0"], 1);
    assert_eq!(v["dtypes"]["BF16"], 1);
}

#[test]
fn chat_templates_render_as_transformers_and_split_training_turns() {
    use tunelab::hf::chat::{ChatTemplate, Message};
    let reference: serde_json::Value =
        serde_json::from_slice(&std::fs::read(gguf_dir().join("reference.json")).unwrap()).unwrap();
    let template = |name: &str| {
        let config = serde_json::json!({
            "chat_template": reference["templates"][name], "bos_token": "<s>",
            "eos_token": {"content": "</s>", "special": true},
        });
        ChatTemplate::from_tokenizer_config(config.to_string().as_bytes(), "tokenizer_config.json")
            .unwrap()
            .unwrap()
    };
    let cases = reference["chat"].as_array().unwrap();
    assert_eq!(cases.len(), 12);
    for case in cases {
        let t = template(case["template"].as_str().unwrap());
        let messages: Vec<Message> = serde_json::from_value(case["messages"].clone()).unwrap();
        let generation = case["add_generation_prompt"].as_bool().unwrap();
        assert_eq!(
            t.render(&messages, generation).unwrap(),
            case["text"].as_str().unwrap(),
            "{case}"
        );
        if !generation {
            // Training: the prompt is everything up to the last assistant turn's content.
            let (prompt, response) = t.split_last_turn(&messages).unwrap();
            assert_eq!(
                format!("{prompt}{response}"),
                case["text"].as_str().unwrap()
            );
            let last = messages.last().unwrap().content.trim();
            assert!(
                response.contains(last) && !prompt.ends_with(last),
                "{prompt:?} | {response:?}"
            );
        }
    }
    // A role the template refuses is an error naming the file and the template's message.
    let bad = [Message {
        role: "tool".into(),
        content: "x".into(),
    }];
    let e = template("styled")
        .render(&bad, false)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("tokenizer_config.json") && e.contains("unknown role tool"),
        "{e}"
    );
}

#[test]
fn chat_records_train_on_the_assistant_turn_as_the_template_renders_it() {
    use tunelab::hf::chat::Message;
    use tunelab::run::{DataSource, RunSpec, prepare_data};
    let session = load(&ModelSource::Dir(gguf_dir()), burn::tensor::Device::flex());
    let tok = session.tokenizer().unwrap();
    let chat = session.chat_template().unwrap().unwrap();
    // Each record form and the conversation it is for a chat model: `messages` as written;
    // instruction pairs as a user turn and an assistant turn (GSM8K's in the eval's prompt).
    let cases = [
        (
            serde_json::json!({"messages": [
                {"role": "user", "content": "What is 2 + 3?"},
                {"role": "assistant", "content": "2 + 3 = 5."}]}),
            ["What is 2 + 3?", "2 + 3 = 5."],
        ),
        (
            serde_json::json!({"prompt": "What is 2 + 3?", "response": " 2 + 3 = 5."}),
            ["What is 2 + 3?", "2 + 3 = 5."],
        ),
        (
            serde_json::json!({"question": "What is 2 + 3?", "answer": "2 + 3 = 5.\n#### 5"}),
            ["Question: What is 2 + 3?\nAnswer:", "2 + 3 = 5.\n#### 5"],
        ),
    ];
    let prepare = |record: &serde_json::Value, chat_template: bool| {
        let spec = RunSpec {
            seq_len: 128,
            chat_template,
            ..RunSpec::default()
        };
        let bytes = format!("{record}\n");
        let source = DataSource::Bytes {
            name: "chat.jsonl",
            bytes: bytes.as_bytes(),
        };
        let prepared = prepare_data(&session, source, &spec, &mut |_| {}).unwrap();
        prepared.data.examples[0].clone()
    };
    for (record, [user, assistant]) in &cases {
        let example = prepare(record, true);
        let turns = [Message::user(user), Message::assistant(assistant)];
        let (prompt, response) = chat.split_last_turn(&turns).unwrap();
        let (p, r) = (tok.encode(&prompt).unwrap(), tok.encode(&response).unwrap());
        assert_eq!(
            &example.ids[..p.len() + r.len()],
            [p.clone(), r.clone()].concat(),
            "{record}"
        );
        // Loss on the response only (its end-of-turn tokens included, no EOS added after them).
        let targets: Vec<i64> = example.labels().filter(|&l| l >= 0).collect();
        assert_eq!(targets, r.iter().map(|&i| i as i64).collect::<Vec<_>>());
    }
    // `chat_template = false`: the pair as plain text, then EOS.
    let example = prepare(&cases[1].0, false);
    let (p, r) = (
        tok.encode("What is 2 + 3?").unwrap(),
        tok.encode(" 2 + 3 = 5.").unwrap(),
    );
    let want = [p, r, vec![tok.eos_id.unwrap()]].concat();
    assert_eq!(&example.ids[..want.len()], want);
}

#[test]
fn a_sentencepiece_vocabulary_tokenizes_as_transformers_reads_it() {
    let path = gguf_dir().join("spm.gguf");
    let bytes = std::fs::read(&path).unwrap();
    let header = tunelab::gguf::read(&bytes, "spm.gguf", |_, _, _| Ok(())).unwrap();
    let json = tunelab::gguf::tokenizer::tokenizer_json(&header, "spm.gguf")
        .unwrap()
        .unwrap();
    let tok = tunelab::hf::Tokenizer::from_bytes(&json, "tokenizer.json").unwrap();
    let reference: serde_json::Value =
        serde_json::from_slice(&std::fs::read(gguf_dir().join("spm.json")).unwrap()).unwrap();
    let cases = reference["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 10);
    let ids = |v: &serde_json::Value| -> Vec<u32> { serde_json::from_value(v.clone()).unwrap() };
    for case in cases {
        let text = case["text"].as_str().unwrap();
        assert_eq!(tok.encode(text).unwrap(), ids(&case["ids"]), "{text:?}");
        let plain = tok.encode_plain(text).unwrap();
        assert_eq!(plain, ids(&case["ids_plain"]), "{text:?}");
        assert_eq!(tok.decode(&plain).unwrap(), case["decoded"], "{text:?}");
    }
    // A SentencePiece vocabulary without its scores cannot give merges: named.
    let mut broken = header.clone();
    broken.metadata.remove("tokenizer.ggml.scores");
    let e = tunelab::gguf::tokenizer::tokenizer_json(&broken, "spm.gguf")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("spm.gguf") && e.contains("tokenizer.ggml.scores"),
        "{e}"
    );
}

/// SmolLM2-135M-Instruct itself (installed by scripts/get-smollm2.sh; CI installs it and sets
/// `TUNELAB_REQUIRE_SMOLLM2=1`): transformers' token ids and logits on a few prompts
/// (tests/fixtures/make_smollm2_reference.py).
#[test]
fn smollm2_gives_transformers_ids_and_logits_when_installed() {
    let dir = fixtures().join("../../models/smollm2");
    let reference: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixtures().join("smollm2/reference.json")).unwrap())
            .unwrap();
    let file = reference["file"].as_str().unwrap();
    if !dir.join(file).exists() {
        assert_ne!(
            std::env::var("TUNELAB_REQUIRE_SMOLLM2").as_deref(),
            Ok("1"),
            "TUNELAB_REQUIRE_SMOLLM2=1 but {} is missing (scripts/get-smollm2.sh)",
            dir.join(file).display()
        );
        eprintln!("skipped: {} is not installed", dir.join(file).display());
        return;
    }
    let session = pollster::block_on(Session::load_gguf(
        &ModelSource::Dir(dir),
        file,
        burn::tensor::Device::flex(),
        None,
        &mut |_| {},
    ))
    .unwrap();
    let tok = session.tokenizer().unwrap();
    let vocab = session.config.vocab_size();
    let stride = reference["stride"].as_u64().unwrap() as usize;
    for case in reference["cases"].as_array().unwrap() {
        let prompt = case["prompt"].as_str().unwrap();
        let ids: Vec<u32> = serde_json::from_value(case["ids"].clone()).unwrap();
        assert_eq!(tok.encode_plain(prompt).unwrap(), ids, "{prompt:?}");
        let logits = pollster::block_on(session.logits(&ids)).unwrap();
        let strided: Vec<Vec<f32>> = serde_json::from_value(case["strided"].clone()).unwrap();
        let top: Vec<Vec<usize>> = serde_json::from_value(case["top_ids"].clone()).unwrap();
        let (mut worst, mut largest) = (0f32, 0f32);
        for (pos, (row, top)) in strided.iter().zip(&top).enumerate() {
            let got = &logits[pos * vocab..(pos + 1) * vocab];
            for (k, &want) in row.iter().enumerate() {
                worst = worst.max((got[k * stride] - want).abs());
                largest = largest.max(want.abs());
            }
            let argmax = (0..vocab)
                .max_by(|&a, &b| got[a].total_cmp(&got[b]))
                .unwrap();
            assert_eq!(argmax, top[0], "{prompt:?} position {pos}");
        }
        assert!(
            worst <= 1e-4 * largest,
            "{prompt:?}: max |Δlogit| {worst} (largest {largest})"
        );
        eprintln!("{prompt:?}: max |Δlogit| {worst:.2e} (largest logit {largest:.1})");
    }
}

#[test]
fn qwen2_and_qwen3_ggufs_load_to_transformers_logits_and_ids() {
    let r = read_reference(&gguf_dir().join("arch_reference.safetensors"));
    let texts: serde_json::Value =
        serde_json::from_slice(&std::fs::read(gguf_dir().join("arch_reference.json")).unwrap())
            .unwrap();
    let ids: Vec<u32> = r["ids"].i64.iter().map(|&i| i as u32).collect();
    for arch in ["qwen2", "qwen3"] {
        let session = pollster::block_on(Session::load_gguf(
            &ModelSource::Dir(gguf_dir()),
            &format!("{arch}.gguf"),
            burn::tensor::Device::flex(),
            None,
            &mut |_| {},
        ))
        .unwrap();
        assert_eq!(session.config.model_type, arch);
        let got = pollster::block_on(session.logits(&ids)).unwrap();
        let worst = max_abs_diff(&got, &r[&format!("{arch}/logits")].f32);
        assert!(worst <= 1e-4, "{arch}: max |Δlogit| {worst}");
        let want: Vec<u32> = serde_json::from_value(texts["ids"][arch].clone()).unwrap();
        let text = texts["text"].as_str().unwrap();
        assert_eq!(
            session.tokenizer().unwrap().encode(text).unwrap(),
            want,
            "{arch}"
        );
    }
}
