//! Logits and NLL of the fixture models match Hugging Face transformers (reference values from
//! tests/fixtures/make_fixtures.py), on the CPU backend and on wgpu, from a directory and from
//! a URL.

mod common;

use burn::tensor::{Bool, Int, Tensor, TensorData};
use common::*;
use tunelab::Session;
use tunelab::hf::ModelSource;
use tunelab::model::read_f32;

const LOGIT_TOL: f32 = 1e-4;
const NLL_TOL: f64 = 1e-4;

fn load(source: &ModelSource, device: burn::tensor::Device) -> Session {
    pollster::block_on(Session::load(source, device, &mut |_| {})).unwrap()
}

fn check_model(model: &str, session: &Session, label: &str) {
    let reference = read_reference(&fixtures().join(model).join("reference.safetensors"));
    let vocab = session.config.vocab_size();
    for seq in ["seq0", "seq1"] {
        let ids: Vec<u32> = reference[&format!("{seq}_ids")]
            .i64
            .iter()
            .map(|&i| i as u32)
            .collect();
        let expected = &reference[&format!("{seq}_logits")];
        assert_eq!(expected.shape, vec![ids.len(), vocab]);
        let got = pollster::block_on(session.logits(&ids)).unwrap();
        let err = max_abs_diff(&got, &expected.f32);
        eprintln!("{model} {label} {seq}: max |Δlogit| = {err:.2e}");
        assert!(
            err <= LOGIT_TOL,
            "{model} on {label}: {seq} logits differ by {err}"
        );
    }

    // Right-padded batch: logits at real tokens must match.
    let ids = &reference["batch_ids"];
    let mask = &reference["batch_mask"];
    let [b, t] = [ids.shape[0], ids.shape[1]];
    let dev = &session.device;
    let ids_t = Tensor::<2, Int>::from_data(TensorData::new(ids.i64.clone(), [b, t]), dev);
    let pad: Vec<bool> = mask.i64.iter().map(|&m| m == 1).collect();
    let pad_t = Tensor::<2, Bool>::from_data(TensorData::new(pad.clone(), [b, t]), dev);
    let got = pollster::block_on(read_f32(session.model.forward(ids_t, Some(pad_t)))).unwrap();
    let expected = &reference["batch_logits"].f32;
    let mut err = 0f32;
    for (pos, real) in pad.iter().enumerate() {
        if *real {
            let r = pos * vocab..(pos + 1) * vocab;
            err = err.max(max_abs_diff(&got[r.clone()], &expected[r]));
        }
    }
    eprintln!("{model} {label} padded batch: max |Δlogit| = {err:.2e}");
    assert!(
        err <= LOGIT_TOL,
        "{model} on {label}: padded batch logits differ by {err}"
    );

    // NLL of the reference text and of both sequences.
    let rj = reference_json(model);
    let text = rj["text"].as_str().unwrap();
    let score = pollster::block_on(session.score_text(text)).unwrap();
    assert_eq!(score.tokens as u64, rj["text_tokens"].as_u64().unwrap());
    let want = rj["text_nll"].as_f64().unwrap();
    assert!(
        (score.nll - want).abs() <= NLL_TOL,
        "{model} on {label}: text nll {} vs {want}",
        score.nll
    );
    for (i, seq) in ["seq0", "seq1"].iter().enumerate() {
        let ids: Vec<u32> = reference[&format!("{seq}_ids")]
            .i64
            .iter()
            .map(|&i| i as u32)
            .collect();
        let s = pollster::block_on(session.score_ids(&ids)).unwrap();
        let want = rj["seq_nll"][i].as_f64().unwrap();
        assert!(
            (s.nll - want).abs() <= NLL_TOL,
            "{model} on {label}: {seq} nll {} vs {want}",
            s.nll
        );
    }
}

#[test]
fn fixture_models_match_transformers_on_every_device() {
    for (label, device) in devices() {
        for model in MODELS.iter().chain(ARCH_MODELS) {
            let session = load(&ModelSource::Dir(fixtures().join(model)), device.clone());
            check_model(model, &session, label);
        }
    }
}

#[test]
fn sharded_model_loads_from_a_local_http_server() {
    let base = serve(fixtures());
    let source = ModelSource::parse(&format!("{base}llama-gqa"));
    let mut files = Vec::new();
    let session = pollster::block_on(Session::load(
        &source,
        burn::tensor::Device::flex(),
        &mut |e| {
            if let tunelab::Event::Progress(p) = e
                && p.total == Some(p.done)
            {
                files.push(p.task.clone());
            }
        },
    ))
    .unwrap();
    assert!(session.checkpoint.sharded);
    assert_eq!(session.checkpoint.shards.len(), 9, "every shard streamed");
    assert_eq!(files.len(), 9, "each shard reported complete progress");
    check_model("llama-gqa", &session, "cpu via http");
}

#[test]
fn long_text_is_windowed_so_every_token_is_predicted_once() {
    let session = load(
        &ModelSource::Dir(fixtures().join("gpt2")),
        burn::tensor::Device::flex(),
    );
    let text = reference_json("gpt2")["text"].as_str().unwrap().repeat(3);
    let ids = session.tokenizer().unwrap().encode(&text).unwrap();
    assert!(ids.len() > session.config.max_positions());
    let score = pollster::block_on(session.score_ids(&ids)).unwrap();
    assert_eq!(score.predictions, ids.len() - 1);
    assert!(score.nll.is_finite() && score.nll > 0.0);
}

#[test]
fn greedy_generation_is_the_argmax_continuation() {
    let session = load(
        &ModelSource::Dir(fixtures().join("llama-gqa")),
        burn::tensor::Device::flex(),
    );
    let opts = tunelab::eval::generate::GenerateOptions {
        max_new_tokens: 5,
        ..Default::default()
    };
    let prompt = "The quick brown";
    let mut pieces = String::new();
    let text = pollster::block_on(session.generate(prompt, &opts, &mut |e| {
        if let tunelab::Event::Token { text } = e {
            pieces.push_str(text);
        }
    }))
    .unwrap();
    assert_eq!(pieces, text, "streamed pieces add up to the result");
    // Check the first generated token against the argmax of the full logits.
    let tok = session.tokenizer().unwrap();
    let ids = tok.encode(prompt).unwrap();
    let logits = pollster::block_on(session.logits(&ids)).unwrap();
    let v = session.config.vocab_size();
    let last = &logits[(ids.len() - 1) * v..];
    let best = (0..v).max_by(|&a, &b| last[a].total_cmp(&last[b])).unwrap() as u32;
    let mut full = ids.clone();
    full.push(best);
    let expected_first = tok.decode(&full).unwrap();
    assert!(
        format!("{prompt}{text}").starts_with(&expected_first),
        "generation {text:?} does not start with the argmax token ({expected_first:?})"
    );
}

#[test]
fn kv_cached_decoding_gives_the_full_forward_logits() {
    for (label, device) in devices() {
        // Ten positions: past the sliding windows, within dynamic RoPE's trained length.
        for model in MODELS.iter().chain(ARCH_MODELS) {
            let session = load(&ModelSource::Dir(fixtures().join(model)), device.clone());
            let ids: Vec<u32> = vec![276, 391, 318, 75, 404, 416, 490, 88, 461, 384];
            let full = pollster::block_on(session.logits(&ids)).unwrap();
            let v = session.config.vocab_size();
            let mut cache = tunelab::model::KvCache::default();
            // A 6-token prompt, then one token at a time.
            let mut got = Vec::new();
            let mut fed = 0;
            for chunk in [6, 1, 1, 1, 1] {
                let t = tunelab::model::ids_tensor(&ids[fed..fed + chunk], v, &device).unwrap();
                got.extend(
                    pollster::block_on(read_f32(session.model.forward_cached(t, &mut cache)))
                        .unwrap(),
                );
                fed += chunk;
            }
            assert_eq!(cache.len(), ids.len());
            let err = max_abs_diff(&got, &full);
            assert!(
                err <= LOGIT_TOL,
                "{model} on {label}: cached logits differ by {err}"
            );
        }
    }
}

#[test]
fn a_shard_download_that_drops_midway_resumes_with_a_range_request() {
    let base = serve_flaky(
        fixtures(),
        "model-00003-of-00009.safetensors",
        Ranges::Honest,
    );
    let source = ModelSource::parse(&format!("{base}llama-gqa"));
    let session = load(&source, burn::tensor::Device::flex());
    assert_eq!(session.checkpoint.shards.len(), 9);
    check_model("llama-gqa", &session, "cpu via a flaky http server");
}
