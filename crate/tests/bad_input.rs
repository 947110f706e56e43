//! Every kind of bad input gets a typed error naming the file and the tensor or field.

mod common;

use burn::tensor::Device;
use common::*;
use tunelab::hf::{HfError, ModelSource};
use tunelab::{Error, Session};

fn load_err(source: &ModelSource) -> HfError {
    match pollster::block_on(Session::load(source, Device::flex(), &mut |_| {})) {
        Ok(_) => panic!("loading {source} should fail"),
        Err(Error::Hf(e)) => e,
        Err(e) => panic!("expected an HfError, got {e}"),
    }
}

fn dir(d: &tempfile::TempDir) -> ModelSource {
    ModelSource::Dir(d.path().to_path_buf())
}

/// Write a safetensors file with a hand-made header and `data_len` bytes of data.
fn write_raw(path: &std::path::Path, header: &str, data_len: usize) {
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend(std::iter::repeat_n(0u8, data_len));
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn truncated_safetensors_names_file_and_tensor() {
    let d = copy_fixture("gpt2");
    let path = d.path().join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let e = load_err(&dir(&d));
    let msg = e.to_string();
    assert!(matches!(e, HfError::BadOffsets { .. }), "{msg}");
    assert!(
        msg.contains("model.safetensors") && msg.contains("truncated"),
        "{msg}"
    );
    assert!(msg.contains("tensor `"), "{msg}");

    // Cut inside the header itself.
    std::fs::write(&path, &bytes[..20]).unwrap();
    let e = load_err(&dir(&d));
    assert!(matches!(e, HfError::HeaderTooLarge { .. }), "{e}");
}

#[test]
fn header_length_larger_than_file() {
    let d = copy_fixture("gpt2");
    let path = d.path().join("model.safetensors");
    let mut bytes = 1_000_000u64.to_le_bytes().to_vec();
    bytes.extend_from_slice(b"{}");
    std::fs::write(&path, bytes).unwrap();
    let e = load_err(&dir(&d));
    assert!(
        matches!(
            e,
            HfError::HeaderTooLarge {
                header_len: 1_000_000,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("model.safetensors"));
}

#[test]
fn offsets_out_of_range_or_overlapping() {
    let d = copy_fixture("gpt2");
    let path = d.path().join("model.safetensors");
    write_raw(
        &path,
        r#"{"transformer.wte.weight":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},"transformer.ln_f.bias":{"dtype":"F32","shape":[2],"data_offsets":[16,24]}}"#,
        16,
    );
    let e = load_err(&dir(&d));
    let msg = e.to_string();
    assert!(
        matches!(&e, HfError::BadOffsets { tensor, .. } if tensor == "transformer.ln_f.bias"),
        "{msg}"
    );

    write_raw(
        &path,
        r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}"#,
        16,
    );
    let e = load_err(&dir(&d));
    assert!(e.to_string().contains("overlap"), "{e}");
    assert!(
        matches!(&e, HfError::BadOffsets { tensor, .. } if tensor == "b"),
        "{e}"
    );

    // Offsets that disagree with the shape.
    write_raw(
        &path,
        r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,8]}}"#,
        8,
    );
    let e = load_err(&dir(&d));
    assert!(
        matches!(&e, HfError::BadOffsets { tensor, .. } if tensor == "a"),
        "{e}"
    );
}

#[test]
fn unknown_dtype_names_tensor() {
    let d = copy_fixture("gpt2");
    write_raw(
        &d.path().join("model.safetensors"),
        r#"{"transformer.wte.weight":{"dtype":"F12","shape":[2],"data_offsets":[0,4]}}"#,
        4,
    );
    let e = load_err(&dir(&d));
    assert!(
        matches!(&e, HfError::UnknownDtype { tensor, dtype, .. } if tensor == "transformer.wte.weight" && dtype == "F12"),
        "{e}"
    );
}

#[test]
fn shape_contradicting_config_names_tensor_and_field() {
    let d = copy_fixture("llama-gqa");
    let cfg_path = d.path().join("config.json");
    let cfg = std::fs::read_to_string(&cfg_path).unwrap();
    std::fs::write(
        &cfg_path,
        cfg.replace("\"intermediate_size\": 128", "\"intermediate_size\": 100"),
    )
    .unwrap();
    let e = load_err(&dir(&d));
    let msg = e.to_string();
    assert!(
        matches!(&e, HfError::ShapeMismatch { tensor, .. } if tensor.contains("mlp")),
        "{msg}"
    );
    assert!(
        msg.contains("intermediate_size 100") && msg.contains(".safetensors"),
        "{msg}"
    );
}

#[test]
fn tensor_missing_from_every_shard() {
    // Rewrite the GPT-2 checkpoint without `ln_f.weight`.
    let d = copy_fixture("gpt2");
    let path = d.path().join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let mut kept: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
    tunelab::hf::safetensors::stream_tensors(&bytes, "x", |t| {
        if t.info.name != "transformer.ln_f.weight" {
            kept.push((t.info.name.clone(), t.info.shape.clone(), t.values));
        }
        Ok(())
    })
    .unwrap();
    let refs: Vec<(String, Vec<usize>, &[f32])> = kept
        .iter()
        .map(|(n, s, v)| (n.clone(), s.clone(), &v[..]))
        .collect();
    std::fs::write(&path, tunelab::hf::safetensors::serialize_f32(&refs)).unwrap();
    let e = load_err(&dir(&d));
    assert!(
        matches!(&e, HfError::MissingTensor { tensor, .. } if tensor == "transformer.ln_f.weight"),
        "{e}"
    );
    assert!(e.to_string().contains("model.safetensors"), "{e}");
}

#[test]
fn shard_named_in_index_that_does_not_exist() {
    let d = copy_fixture("llama-gqa");
    std::fs::remove_file(d.path().join("model-00003-of-00009.safetensors")).unwrap();
    let e = load_err(&dir(&d));
    assert!(
        matches!(&e, HfError::MissingFile { file } if file.ends_with("model-00003-of-00009.safetensors")),
        "{e}"
    );
}

#[test]
fn index_naming_a_tensor_its_shard_lacks() {
    let d = copy_fixture("llama-gqa");
    let p = d.path().join("model.safetensors.index.json");
    let mut index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    index["weight_map"]["model.norm.weight"] = "model-00001-of-00009.safetensors".into();
    let real = serde_json::from_str::<serde_json::Value>(
        &std::fs::read_to_string(fixtures().join("llama-gqa/model.safetensors.index.json"))
            .unwrap(),
    )
    .unwrap();
    if real["weight_map"]["model.norm.weight"] == "model-00001-of-00009.safetensors" {
        index["weight_map"]["model.norm.weight"] = "model-00002-of-00009.safetensors".into();
    }
    std::fs::write(&p, index.to_string()).unwrap();
    let e = load_err(&dir(&d));
    assert!(
        matches!(&e, HfError::IndexMismatch { tensor, .. } if tensor == "model.norm.weight"),
        "{e}"
    );
}

#[test]
fn unsupported_model_type_lists_supported_ones() {
    let d = copy_fixture("gpt2");
    let p = d.path().join("config.json");
    let cfg = std::fs::read_to_string(&p).unwrap();
    std::fs::write(
        &p,
        cfg.replace("\"model_type\": \"gpt2\"", "\"model_type\": \"bert\""),
    )
    .unwrap();
    let e = load_err(&dir(&d));
    let msg = e.to_string();
    assert!(matches!(e, HfError::UnsupportedModelType { .. }), "{msg}");
    assert!(
        msg.contains("bert")
            && msg.contains("llama")
            && msg.contains("gpt2")
            && msg.contains("config.json"),
        "{msg}"
    );
}

#[test]
fn malformed_json_names_file() {
    let d = copy_fixture("gpt2");
    std::fs::write(d.path().join("config.json"), "{\"model_type\": ").unwrap();
    let e = load_err(&dir(&d));
    assert!(
        matches!(&e, HfError::Json { file, .. } if file.ends_with("config.json")),
        "{e}"
    );

    let d = copy_fixture("llama-gqa");
    std::fs::write(d.path().join("model.safetensors.index.json"), "not json").unwrap();
    let e = load_err(&dir(&d));
    assert!(
        matches!(&e, HfError::Json { file, .. } if file.ends_with("index.json")),
        "{e}"
    );
}

#[test]
fn wrong_field_type_names_field() {
    let d = copy_fixture("llama-gqa");
    let p = d.path().join("config.json");
    let cfg = std::fs::read_to_string(&p).unwrap();
    std::fs::write(
        &p,
        cfg.replace("\"hidden_size\": 64", "\"hidden_size\": \"big\""),
    )
    .unwrap();
    let e = load_err(&dir(&d));
    assert!(
        matches!(&e, HfError::Field { field, .. } if field == "hidden_size"),
        "{e}"
    );
}

#[test]
fn http_404_and_connection_refused() {
    let base = serve(fixtures());
    let e = load_err(&ModelSource::parse(&format!("{base}no-such-model")));
    assert!(
        matches!(&e, HfError::HttpStatus { status: 404, file, .. } if file == "config.json"),
        "{e}"
    );

    // A port nobody listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let e = load_err(&ModelSource::parse(&format!(
        "http://127.0.0.1:{port}/model"
    )));
    assert!(
        matches!(&e, HfError::HttpConnect { file, .. } if file == "config.json"),
        "{e}"
    );
}

#[test]
fn token_id_outside_vocabulary_and_too_long_input() {
    let s = pollster::block_on(Session::load(
        &ModelSource::Dir(fixtures().join("gpt2")),
        Device::flex(),
        &mut |_| {},
    ))
    .unwrap();
    let e = pollster::block_on(s.logits(&[1, 9999])).unwrap_err();
    assert!(e.to_string().contains("9999"), "{e}");
    let e = pollster::block_on(s.logits(&vec![1; 500])).unwrap_err();
    assert!(e.to_string().contains("max_position_embeddings"), "{e}");
}

#[test]
fn a_tensor_over_the_buffer_limit_is_refused_by_name() {
    let source = ModelSource::Dir(fixtures().join("gpt2"));
    // GPT-2's token embedding (vocab × hidden) is the largest tensor of the fixture.
    let limit = 1000;
    let e = match pollster::block_on(Session::load_within(
        &source,
        Device::flex(),
        Some(limit),
        &mut |_| {},
    )) {
        Ok(_) => panic!("a {limit}-byte limit should refuse the fixture"),
        Err(Error::Hf(e)) => e,
        Err(e) => panic!("expected an HfError, got {e}"),
    };
    let msg = e.to_string();
    assert!(
        matches!(e, HfError::TooLargeForDevice { limit: 1000, .. }),
        "{msg}"
    );
    assert!(
        msg.contains("model.safetensors: tensor `")
            && msg.contains("MiB over this GPU's max_storage_buffer_binding_size"),
        "{msg}"
    );
    // A limit the model fits in loads it.
    pollster::block_on(Session::load_within(
        &source,
        Device::flex(),
        Some(1 << 30),
        &mut |_| {},
    ))
    .unwrap();
}

/// The shard [`flaky_load_err`] drops midway.
const DROPPED: &str = "model-00003-of-00009.safetensors";

/// Load the sharded fixture from a server that drops [`DROPPED`] halfway and answers the
/// resumption as `ranges`: the `Interrupted` error's message and the server's base URL.
fn flaky_load_err(ranges: Ranges) -> (String, String) {
    let base = serve_flaky(fixtures(), DROPPED, ranges);
    let e = load_err(&ModelSource::parse(&format!("{base}llama-gqa")));
    let msg = e.to_string();
    assert!(matches!(e, HfError::Interrupted { .. }), "{msg}");
    (msg, base)
}

#[test]
fn a_dropped_download_the_server_cannot_resume_says_how_far_it_got() {
    let shard = DROPPED;
    let (msg, base) = flaky_load_err(Ranges::Ignored);
    let size = std::fs::metadata(fixtures().join("llama-gqa").join(shard))
        .unwrap()
        .len();
    assert!(
        msg.starts_with(&format!(
            "{shard}: download from {base}llama-gqa/{shard} stopped after "
        )) && msg.contains(&format!(" of {size} bytes: "))
            && msg
                .ends_with("the server answered HTTP 200 to a Range request, so it cannot resume"),
        "{msg}"
    );
}

#[test]
fn a_resumed_download_that_would_not_line_up_is_refused() {
    let (msg, _) = flaky_load_err(Ranges::Wrong);
    assert!(
        msg.contains("the server resumed with ") && msg.ends_with(" are missing"),
        "{msg}"
    );
}
