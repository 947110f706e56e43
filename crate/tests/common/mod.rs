//! Shared helpers for the integration tests: fixture paths, reference tensors, devices and a
//! local HTTP server.
#![allow(dead_code)] // each test binary uses a different subset

use std::collections::HashMap;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use burn::tensor::Device;
use tunelab::device::{self, DeviceChoice};
use tunelab::hf::safetensors::{Dtype, read_header, widen};

/// `tests/fixtures` at the repository root.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

/// The tiny models the fixture script builds.
pub const MODELS: &[&str] = &["llama-gqa", "qwen2-tied", "gpt2"];

/// The tiny models of tests/fixtures/make_arch_fixtures.py: RoPE scalings, sliding windows,
/// Qwen3.
pub const ARCH_MODELS: &[&str] = &[
    "llama3-rope",
    "llama-linear-rope",
    "llama-dynamic-rope",
    "qwen2-yarn-rope",
    "mistral-sliding",
    "qwen3",
];

/// A tensor from `reference.safetensors`: f32 or i64 values with a shape.
pub struct RefTensor {
    pub shape: Vec<usize>,
    pub f32: Vec<f32>,
    pub i64: Vec<i64>,
}

/// All tensors of a safetensors file, read with the library's own header parser.
pub fn read_reference(path: &Path) -> HashMap<String, RefTensor> {
    let bytes = std::fs::read(path).unwrap();
    let mut cur = Cursor::new(&bytes[..]);
    let header = read_header(
        &mut cur,
        &path.display().to_string(),
        Some(bytes.len() as u64),
    )
    .unwrap();
    let base = header.header_bytes as usize;
    header
        .tensors
        .into_iter()
        .map(|t| {
            let raw = &bytes[base + t.begin as usize..base + t.end as usize];
            let (f, i) = match t.dtype {
                Dtype::I64 => (
                    vec![],
                    raw.chunks_exact(8)
                        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                        .collect(),
                ),
                d => (widen(raw, d).unwrap(), vec![]),
            };
            (
                t.name.clone(),
                RefTensor {
                    shape: t.shape,
                    f32: f,
                    i64: i,
                },
            )
        })
        .collect()
}

/// `reference.json` of a fixture model.
pub fn reference_json(model: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(fixtures().join(model).join("reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Largest absolute difference.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// The devices to check: the CPU backend always; a wgpu adapter (hardware or software such as
/// lavapipe) when one exists. With `TUNELAB_REQUIRE_GPU=1` (set by CI) a missing adapter fails
/// the test instead of being skipped.
pub fn devices() -> Vec<(&'static str, Device)> {
    static GPU: OnceLock<Option<Device>> = OnceLock::new();
    let gpu = GPU.get_or_init(|| match device::select(DeviceChoice::Gpu) {
        Ok(s) => {
            eprintln!("wgpu tests on {}", s.label);
            Some(s.device)
        }
        Err(e) => {
            if std::env::var("TUNELAB_REQUIRE_GPU").as_deref() == Ok("1") {
                panic!("TUNELAB_REQUIRE_GPU=1 but no wgpu adapter: {e}");
            }
            eprintln!("no wgpu adapter, wgpu tests skipped: {e}");
            None
        }
    });
    let mut v = vec![("cpu", Device::flex())];
    if let Some(g) = gpu {
        v.push(("wgpu", g.clone()));
    }
    v
}

/// Serve `root` over HTTP on 127.0.0.1 from a background thread; returns the base URL.
pub fn serve(root: PathBuf) -> String {
    let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
    let port = server.server_addr().to_ip().unwrap().port();
    std::thread::spawn(move || {
        for request in server.incoming_requests() {
            let rel = request.url().trim_start_matches('/').to_string();
            let path = root.join(&rel);
            let response = match std::fs::read(&path) {
                Ok(bytes) => tiny_http::Response::from_data(bytes),
                Err(_) => {
                    tiny_http::Response::from_data(b"not found".to_vec()).with_status_code(404)
                }
            };
            let _ = request.respond(response);
        }
    });
    format!("http://127.0.0.1:{port}/")
}

/// How [`serve_flaky`] answers a `Range: bytes=N-` request.
#[allow(dead_code)] // used by some test crates only
#[derive(Clone, Copy, PartialEq)]
pub enum Ranges {
    /// The rest of the file (206), as model hosts do.
    Honest,
    /// The whole file again (200), as a server that cannot resume.
    Ignored,
    /// 206, but from the wrong byte (one too late).
    Wrong,
}

/// Serve `root` like [`serve`], but as a flaky network: the first response for the file
/// `drop_once` stops halfway through its body and the connection closes; `ranges` says how a
/// resumption is answered. Returns the base URL.
#[allow(dead_code)] // used by some test crates only
pub fn serve_flaky(root: PathBuf, drop_once: &str, ranges: Ranges) -> String {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let drop_once = drop_once.to_string();
    std::thread::spawn(move || {
        let mut dropped = false;
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            let _ = reader.read_line(&mut request_line);
            let path = request_line.split(' ').nth(1).unwrap_or("/").to_string();
            let mut from = None;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
                    break;
                }
                let lower = line.to_ascii_lowercase();
                if let Some(v) = lower.strip_prefix("range: bytes=") {
                    from = v.trim().trim_end_matches('-').parse::<usize>().ok();
                }
            }
            let Ok(body) = std::fs::read(root.join(path.trim_start_matches('/'))) else {
                let _ = stream.write_all(
                    b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                );
                continue;
            };
            let (status, part) = match (from, ranges) {
                (Some(n), Ranges::Honest) if n < body.len() => ("206 Partial Content", &body[n..]),
                (Some(n), Ranges::Wrong) if n < body.len() => {
                    ("206 Partial Content", &body[n + 1..])
                }
                _ => ("200 OK", &body[..]),
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                part.len()
            );
            if !dropped && status.starts_with("200") && path.ends_with(&drop_once) {
                dropped = true;
                let _ = stream.write_all(&part[..part.len() / 2]);
            } else {
                let _ = stream.write_all(part);
            }
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    });
    format!("http://127.0.0.1:{port}/")
}

/// A fresh copy of a fixture model directory to damage in a test.
pub fn copy_fixture(model: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixtures().join(model)).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    dir
}

/// Run the `tunelab` binary: (success, stdout, stderr).
pub fn tunelab(args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tunelab"))
        .args(args)
        .output()
        .expect("run tunelab");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The tiny text fixture as continued-pretraining rows of `seq_len` tokens.
pub fn tiny_text(
    tokenizer: &tunelab::hf::Tokenizer,
    seq_len: usize,
) -> tunelab::train::data::Dataset {
    use tunelab::train::data::{self, DataOptions, Regime};
    let opts = DataOptions {
        regime: Some(Regime::Cpt),
        seq_len,
        skip_bad_lines: false,
        pad_id: 0,
        chat_template: None,
    };
    data::load(
        &fixtures().join("data/tiny.txt"),
        tokenizer,
        &opts,
        &mut |_| {},
    )
    .unwrap()
}
