//! Hub ids against a local server that answers as the Hugging Face Hub does (`resolve/<rev>/`
//! URLs, `X-Repo-Commit`, ETags, 302s to a CDN for large files with `X-Linked-Etag`/`-Size`,
//! relative redirects for renamed repos, `X-Error-Code` refusals, gated repos), and the disk
//! cache in the Hub's layout.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use common::*;
use tunelab::Session;
use tunelab::hf::hub::{HubId, HubOptions, HubRepo, list_cache, remove_cached};
use tunelab::hf::{Fetch, HfError};

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
const TOKEN: &str = "hf_test_secret";

/// One request the server saw: method, path, `Range` header.
type Seen = Arc<Mutex<Vec<(String, String, Option<String>)>>>;

/// The ETag of `bytes` (FNV-1a 64, hex, with the length): unique enough for fixtures.
fn etag(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for &b in bytes {
        h = (h ^ b as u64).wrapping_mul(0x100000001b3);
    }
    format!("{h:016x}{:08x}", bytes.len())
}

/// Serve fixture model directories as Hub repositories: `org/tiny` (llama-gqa), `org/gated`
/// (llama-gqa, needs the token), `old/tiny` (renamed to `org/tiny`). Returns the endpoint and
/// the request log.
fn hub_server() -> (String, Seen) {
    let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
    let port = server.server_addr().to_ip().unwrap().port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let seen: Seen = Arc::default();
    let log = seen.clone();
    let base = endpoint.clone();
    std::thread::spawn(move || {
        let model = fixtures().join("llama-gqa");
        let mut blobs: HashMap<String, PathBuf> = HashMap::new();
        for entry in std::fs::read_dir(&model).unwrap() {
            let path = entry.unwrap().path();
            blobs.insert(etag(&std::fs::read(&path).unwrap()), path);
        }
        for request in server.incoming_requests() {
            let url = request.url().to_string();
            let header = |k: &'static str| {
                request
                    .headers()
                    .iter()
                    .find(|h| h.field.equiv(k))
                    .map(|h| h.value.to_string())
            };
            let range = header("Range");
            let auth = header("Authorization");
            log.lock()
                .unwrap()
                .push((request.method().to_string(), url.clone(), range.clone()));
            let h = |k: &str, v: &str| tiny_http::Header::from_bytes(k, v).unwrap();
            let empty = |status: u16, headers: Vec<tiny_http::Header>| {
                let mut r = tiny_http::Response::from_data(vec![]).with_status_code(status);
                for x in headers {
                    r.add_header(x);
                }
                r
            };
            // The CDN: bytes by ETag, with Range.
            if let Some(tag) = url.strip_prefix("/cdn/") {
                let bytes = std::fs::read(&blobs[tag]).unwrap();
                let from = range
                    .and_then(|r| r.strip_prefix("bytes=")?.strip_suffix('-')?.parse().ok())
                    .unwrap_or(0usize);
                let status = if from > 0 { 206 } else { 200 };
                let _ = request.respond(
                    tiny_http::Response::from_data(bytes[from..].to_vec()).with_status_code(status),
                );
                continue;
            }
            let parts: Vec<&str> = url.trim_start_matches('/').splitn(5, '/').collect();
            let [org, name, "resolve", rev, file] = parts[..] else {
                let _ = request.respond(empty(404, vec![]));
                continue;
            };
            if (org, name) == ("old", "tiny") {
                let to = format!("/org/tiny/resolve/{rev}/{file}");
                let _ = request.respond(empty(307, vec![h("Location", &to)]));
                continue;
            }
            let refuse = |status, code: &str| empty(status, vec![h("X-Error-Code", code)]);
            let response = if org != "org" || !["tiny", "gated"].contains(&name) {
                refuse(401, "RepoNotFound")
            } else if name == "gated" && auth.as_deref() != Some(&format!("Bearer {TOKEN}")) {
                refuse(if auth.is_some() { 403 } else { 401 }, "GatedRepo")
            } else if rev != "main" && rev != COMMIT {
                refuse(404, "RevisionNotFound")
            } else {
                let commit = h("X-Repo-Commit", COMMIT);
                match std::fs::read(model.join(file)) {
                    Err(_) => empty(404, vec![h("X-Error-Code", "EntryNotFound"), commit]),
                    Ok(bytes) if file.ends_with(".safetensors") => {
                        // Large files live on the CDN: a 302 with the linked ETag and size.
                        let tag = etag(&bytes);
                        empty(
                            302,
                            vec![
                                h("Location", &format!("{base}/cdn/{tag}")),
                                h("X-Linked-Etag", &format!("\"{tag}\"")),
                                h("X-Linked-Size", &bytes.len().to_string()),
                                h("ETag", "\"not-the-content-hash\""),
                                commit,
                            ],
                        )
                    }
                    Ok(bytes) => {
                        let tag = etag(&bytes);
                        let mut r = tiny_http::Response::from_data(bytes);
                        r.add_header(h("ETag", &format!("\"{tag}\"")));
                        r.add_header(commit);
                        r
                    }
                }
            };
            let _ = request.respond(response);
        }
    });
    (endpoint, seen)
}

fn repo(id: &str, endpoint: &str, cache: &Path, offline: bool) -> HubRepo {
    HubRepo {
        id: HubId::parse(id).unwrap(),
        options: HubOptions {
            endpoint: endpoint.to_string(),
            token: None,
            cache: cache.to_path_buf(),
            offline,
        },
    }
}

fn load(repo: &HubRepo) -> Result<Session, tunelab::Error> {
    pollster::block_on(Session::load(
        repo,
        burn::tensor::Device::flex(),
        &mut |_| {},
    ))
}

/// The model's logits match transformers' (so every byte arrived in order).
fn check_logits(session: &Session) {
    let reference = read_reference(&fixtures().join("llama-gqa/reference.safetensors"));
    let ids: Vec<u32> = reference["seq0_ids"]
        .i64
        .iter()
        .map(|&i| i as u32)
        .collect();
    let got = pollster::block_on(session.logits(&ids)).unwrap();
    let err = max_abs_diff(&got, &reference["seq0_logits"].f32);
    assert!(err <= 1e-4, "logits differ by {err}");
}

fn gets(seen: &Seen) -> Vec<String> {
    let log = seen.lock().unwrap();
    log.iter()
        .filter(|(m, _, _)| m == "GET")
        .map(|(_, p, _)| p.clone())
        .collect()
}

#[test]
fn a_hub_id_loads_through_the_cache_and_a_second_run_downloads_nothing() {
    let (endpoint, seen) = hub_server();
    // TUNELAB_HUB_TEST_CACHE keeps the cache for a look with transformers (see README).
    let keep = std::env::var("TUNELAB_HUB_TEST_CACHE")
        .ok()
        .map(PathBuf::from);
    let tmp = tempfile::tempdir().unwrap();
    let cache = keep.unwrap_or_else(|| tmp.path().to_path_buf());
    let r = repo("org/tiny", &endpoint, &cache, false);

    let t = Instant::now();
    let session = load(&r).unwrap();
    let first = t.elapsed();
    check_logits(&session);
    assert_eq!(session.source, "org/tiny");
    let downloads = gets(&seen);
    assert!(
        downloads.iter().any(|p| p.starts_with("/cdn/")),
        "{downloads:?}"
    );

    // The Hub's layout: refs/main → commit, snapshot links into blobs, absences recorded.
    let dir = cache.join("models--org--tiny");
    assert_eq!(
        std::fs::read_to_string(dir.join("refs/main")).unwrap(),
        COMMIT
    );
    let snap = dir.join("snapshots").join(COMMIT);
    for file in [
        "config.json",
        "model.safetensors.index.json",
        "model-00001-of-00009.safetensors",
    ] {
        let link = std::fs::read_link(snap.join(file)).unwrap();
        assert!(link.starts_with("../../blobs/"), "{link:?}");
        assert_eq!(
            std::fs::read(snap.join(file)).unwrap(),
            std::fs::read(fixtures().join("llama-gqa").join(file)).unwrap(),
            "{file}"
        );
    }
    // Large files are stored under their linked ETag, not the redirect's own ETag.
    let shard =
        std::fs::read(fixtures().join("llama-gqa/model-00001-of-00009.safetensors")).unwrap();
    assert!(dir.join("blobs").join(etag(&shard)).exists());
    let listed = list_cache(&cache).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].repo, "org/tiny");
    assert_eq!(listed[0].refs["main"], COMMIT);
    assert_eq!(listed[0].incomplete_bytes, 0);

    // Second run: only HEAD requests.
    seen.lock().unwrap().clear();
    let t = Instant::now();
    let session = load(&r).unwrap();
    let second = t.elapsed();
    check_logits(&session);
    assert_eq!(gets(&seen), Vec::<String>::new());
    eprintln!(
        "load via the local Hub: first {:.0} ms (download), second {:.0} ms (cache)",
        first.as_secs_f64() * 1e3,
        second.as_secs_f64() * 1e3
    );

    // Offline: no request at all; so with a commit id (its files never change).
    seen.lock().unwrap().clear();
    check_logits(&load(&repo("org/tiny", &endpoint, &cache, true)).unwrap());
    check_logits(
        &load(&repo(
            &format!("org/tiny@{COMMIT}"),
            &endpoint,
            &cache,
            false,
        ))
        .unwrap(),
    );
    assert!(
        seen.lock().unwrap().is_empty(),
        "{:?}",
        seen.lock().unwrap()
    );

    // A renamed repository answers with a relative redirect, which is followed.
    check_logits(&load(&repo("old/tiny", &endpoint, &cache, false)).unwrap());
}

#[test]
fn an_unfinished_download_resumes_and_a_wrong_sized_blob_is_replaced() {
    let (endpoint, seen) = hub_server();
    let tmp = tempfile::tempdir().unwrap();
    let blobs = tmp.path().join("models--org--tiny/blobs");
    std::fs::create_dir_all(&blobs).unwrap();
    let shard_path = fixtures().join("llama-gqa/model-00002-of-00009.safetensors");
    let shard = std::fs::read(&shard_path).unwrap();
    let half = shard.len() / 2;
    std::fs::write(
        blobs.join(format!("{}.incomplete", etag(&shard))),
        &shard[..half],
    )
    .unwrap();
    // A blob cut short (a crash outside tunelab, a full disk) is fetched again.
    let other =
        std::fs::read(fixtures().join("llama-gqa/model-00003-of-00009.safetensors")).unwrap();
    std::fs::write(blobs.join(etag(&other)), &other[..10]).unwrap();

    check_logits(&load(&repo("org/tiny", &endpoint, tmp.path(), false)).unwrap());
    let log = seen.lock().unwrap().clone();
    let resumed: Vec<_> = log
        .iter()
        .filter(|(_, p, _)| p == &format!("/cdn/{}", etag(&shard)))
        .map(|(_, _, r)| r.clone())
        .collect();
    assert_eq!(resumed, vec![Some(format!("bytes={half}-"))]);
    assert_eq!(std::fs::read(blobs.join(etag(&shard))).unwrap(), shard);
    assert_eq!(std::fs::read(blobs.join(etag(&other))).unwrap(), other);
    assert!(!blobs.join(format!("{}.incomplete", etag(&shard))).exists());
}

#[test]
fn refusals_name_the_repository_revision_file_or_token() {
    let (endpoint, _) = hub_server();
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path();
    let config = |r: &HubRepo| pollster::block_on(tunelab::info::config(r)).map(|_| ());
    let text = |r: Result<(), tunelab::Error>| r.unwrap_err().to_string();

    let e = text(config(&repo("org/tiny@v9", &endpoint, cache, false)));
    assert!(e.contains("no revision `v9`"), "{e}");
    let e = text(config(&repo("nobody/nothing", &endpoint, cache, false)));
    assert!(
        e.contains("no repository `nobody/nothing`") && e.contains("HF_TOKEN"),
        "{e}"
    );
    let e = text(config(&repo("org/gated", &endpoint, cache, false)));
    assert!(e.contains("gated") && e.contains("HF_TOKEN"), "{e}");
    let mut wrong = repo("org/gated", &endpoint, cache, false);
    wrong.options.token = Some("hf_wrong".into());
    let e = text(config(&wrong));
    assert!(e.contains("gated") && !e.contains("hf_wrong"), "{e}");
    let mut right = repo("org/gated", &endpoint, cache, false);
    right.options.token = Some(TOKEN.into());
    config(&right).unwrap();

    // A missing file is "not found" (optional files are skipped) and names the revision.
    let r = repo("org/tiny", &endpoint, cache, false);
    let e = pollster::block_on(r.open("no-such-file.json"))
        .err()
        .unwrap();
    assert!(
        e.is_not_found() && e.to_string().contains("no-such-file.json at main"),
        "{e}"
    );
    // ... and is remembered, so offline knows it is absent rather than uncached.
    let off = repo("org/tiny", &endpoint, cache, true);
    let e = pollster::block_on(off.open("no-such-file.json"))
        .err()
        .unwrap();
    assert!(matches!(e, HfError::MissingFile { .. }), "{e}");

    // A name from a hostile shard index cannot reach outside the snapshot.
    let e = pollster::block_on(r.open("../../../escape.json"))
        .err()
        .unwrap();
    assert!(
        e.to_string()
            .contains("not a file name inside the repository"),
        "{e}"
    );

    // Offline with nothing cached: says so, naming the file.
    let empty = tempfile::tempdir().unwrap();
    let e = text(config(&repo("org/tiny", &endpoint, empty.path(), true)));
    assert!(
        e.contains("config.json is not in the Hugging Face cache"),
        "{e}"
    );

    // A cache that cannot be written is a typed error naming it.
    let blocked = tempfile::tempdir().unwrap();
    std::fs::write(
        blocked.path().join("models--org--tiny"),
        b"a file, not a folder",
    )
    .unwrap();
    let e = text(config(&repo("org/tiny", &endpoint, blocked.path(), false)));
    assert!(
        e.contains("Hugging Face cache") && e.contains("models--org--tiny"),
        "{e}"
    );
}

#[test]
fn cli_resolves_hub_ids_and_lists_and_removes_the_cache() {
    let (endpoint, _) = hub_server();
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().display().to_string();
    let run = |args: &[&str], offline: bool| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tunelab"))
            .args(args)
            .env("HF_ENDPOINT", &endpoint)
            .env("HF_HUB_CACHE", &cache)
            .env("HF_HUB_OFFLINE", if offline { "1" } else { "0" })
            .env_remove("HF_TOKEN")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, out, err) = run(&["info", "org/tiny", "--config-only"], false);
    assert!(ok && out.contains("supported:  yes"), "{out}{err}");
    let score = [
        "score",
        "org/tiny",
        "--text",
        "The quick brown fox",
        "--device",
        "cpu",
    ];
    let (ok, out, err) = run(&score, false);
    assert!(ok, "{out}{err}");
    let (ok, _, err) = run(&[&score[..], &["--offline"]].concat(), false);
    assert!(ok, "{err}");
    let (ok, _, err) = run(&["info", "org/tiny@v9", "--config-only"], false);
    assert!(!ok && err.contains("no revision `v9`"), "{err}");

    let (ok, out, _) = run(&["cache", "ls", "--json"], false);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["models"][0]["repo"], "org/tiny");
    assert!(v["models"][0]["bytes"].as_u64().unwrap() > 100_000);
    let (ok, out, err) = run(&["cache", "rm", "org/tiny"], false);
    assert!(ok && out.contains("removed org/tiny"), "{out}{err}");
    assert!(list_cache(tmp.path()).unwrap().is_empty());
    let (ok, _, err) = run(&["cache", "rm", "org/tiny"], false);
    assert!(!ok && err.contains("not cached"), "{err}");
    assert!(remove_cached(tmp.path(), "org/none").is_err());
}
