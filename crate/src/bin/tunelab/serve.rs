//! `tunelab serve`: the web app and the bundled models and data on 127.0.0.1, files streamed
//! from disk with `Range` support, `HEAD`, and `ETag` revalidation (`Cache-Control: no-cache`,
//! `If-None-Match` → 304) so the page never runs a stale bundle and never downloads a model
//! twice.

use std::path::{Path, PathBuf};

use tunelab::Error;

use crate::Result;

#[derive(clap::Args)]
pub struct Args {
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Directory to serve (default: the repository this binary was built from).
    #[arg(long)]
    root: Option<PathBuf>,
}

pub fn run(a: Args) -> Result {
    serve(
        a.root
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("..")),
        a.port,
    )
}

/// Content type by file extension: what WebAssembly and ES modules need; data files (also
/// `.gz`) as plain bytes, so the browser does not decompress what the engine gunzips itself.
fn content_type(path: &Path) -> &'static str {
    match path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or_default()
    {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "wasm" => "application/wasm",
        "json" => "application/json",
        "css" => "text/css",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "txt" | "md" => "text/plain; charset=utf-8",
        "jsonl" => "application/jsonl",
        _ => "application/octet-stream",
    }
}

/// The byte range a `Range` header asks of a `len`-byte file: `Ok(None)` for the whole file
/// (no header, or one this server does not serve partially, such as several ranges),
/// `Err(())` when the range lies outside the file (416).
fn byte_range(header: Option<&str>, len: u64) -> std::result::Result<Option<(u64, u64)>, ()> {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((start, end)) = spec.split_once('-') else {
        return Ok(None);
    };
    let (start, end) = match (start.trim(), end.trim()) {
        ("", suffix) => match suffix.parse::<u64>() {
            Ok(n) if n > 0 => (len.saturating_sub(n), len.saturating_sub(1)),
            _ => return Err(()),
        },
        (s, e) => {
            let Ok(s) = s.parse::<u64>() else {
                return Ok(None);
            };
            let e = if e.is_empty() {
                len.saturating_sub(1)
            } else {
                match e.parse::<u64>() {
                    Ok(e) => e.min(len.saturating_sub(1)),
                    Err(_) => return Ok(None),
                }
            };
            (s, e)
        }
    };
    if len == 0 || start >= len || start > end {
        return Err(());
    }
    Ok(Some((start, end)))
}

fn header(name: &str, value: &str) -> tiny_http::Header {
    tiny_http::Header::from_bytes(name, value).expect("valid header")
}

/// Answer one request for a file under `root`: streamed from disk (never whole in memory), with
/// `Range` requests answered 206 so the page's interrupted downloads resume.
fn respond(request: tiny_http::Request, root: &Path) {
    let url = request.url().split('?').next().unwrap_or("/").to_string();
    let rel = url.trim_start_matches('/');
    let path = if rel.is_empty() {
        root.join("www/index.html")
    } else {
        root.join(rel)
    };
    // Only files under the root: no `..`, and symlinks resolved before the check.
    let inside = !rel.split('/').any(|c| c == "..")
        && path
            .canonicalize()
            .is_ok_and(|p| p.starts_with(root) && p.is_file());
    let file = inside
        .then(|| std::fs::File::open(&path))
        .and_then(|f| f.ok());
    let Some(mut file) = file else {
        let _ =
            request.respond(tiny_http::Response::from_string("not found").with_status_code(404));
        return;
    };
    let meta = file.metadata().ok();
    let len = meta.as_ref().map_or(0, |m| m.len());
    let request_header = |name: &'static str| {
        request
            .headers()
            .iter()
            .find(|h| h.field.equiv(name))
            .map(|h| h.value.as_str().to_string())
    };
    let range = request_header("Range");
    // A strong validator from what changes when the file does: its size and modification time.
    let modified = meta
        .and_then(|m| m.modified().ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    let etag = format!("\"{len:x}-{modified:x}\"");
    let mut headers = vec![
        header("Content-Type", content_type(&path)),
        header("Accept-Ranges", "bytes"),
        header("ETag", &etag),
        header("Cache-Control", "no-cache"),
    ];
    if request_header("If-None-Match")
        .is_some_and(|tags| tags.split(',').any(|t| t.trim() == etag || t.trim() == "*"))
    {
        let mut response = tiny_http::Response::empty(304);
        for h in headers {
            response.add_header(h);
        }
        let _ = request.respond(response);
        return;
    }
    let (status, start, count) = match byte_range(range.as_deref(), len) {
        Ok(None) => (200, 0, len),
        Ok(Some((start, end))) => {
            headers.push(header(
                "Content-Range",
                &format!("bytes {start}-{end}/{len}"),
            ));
            (206, start, end - start + 1)
        }
        Err(()) => {
            let response = tiny_http::Response::from_string("range not satisfiable")
                .with_status_code(416)
                .with_header(header("Content-Range", &format!("bytes */{len}")));
            let _ = request.respond(response);
            return;
        }
    };
    if std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(start)).is_err() {
        let _ =
            request.respond(tiny_http::Response::from_string("cannot read").with_status_code(500));
        return;
    }
    let body = std::io::Read::take(file, count);
    let response = tiny_http::Response::new(
        tiny_http::StatusCode(status),
        headers,
        body,
        Some(count as usize),
        None,
    );
    let _ = request.respond(response);
}

/// A static file server for the web app on 127.0.0.1 (never on other interfaces), a thread per
/// request so a large download does not hold up the page's other requests.
fn serve(root: PathBuf, port: u16) -> Result {
    let root = root.canonicalize().map_err(|e| Error::File {
        path: root.display().to_string(),
        message: e.to_string(),
    })?;
    if !root.join("www/pkg/tunelab_bg.wasm").exists() {
        eprintln!(
            "note: {}/www/pkg is missing; build it with scripts/build-web.sh",
            root.display()
        );
    }
    let server = tiny_http::Server::http(("127.0.0.1", port))
        .map_err(|e| Error::Input(format!("cannot listen on 127.0.0.1:{port}: {e}")))?;
    // The port actually bound (`--port 0` picks a free one).
    let port = server.server_addr().to_ip().map_or(port, |a| a.port());
    println!(
        "serving {} on http://127.0.0.1:{port}/www/ (Ctrl-C to stop)",
        root.display()
    );
    let root = std::sync::Arc::new(root);
    for request in server.incoming_requests() {
        let root = root.clone();
        std::thread::spawn(move || respond(request, &root));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::byte_range;

    #[test]
    fn ranges_as_rfc_9110_reads_them() {
        assert_eq!(byte_range(None, 100), Ok(None));
        assert_eq!(byte_range(Some("bytes=10-"), 100), Ok(Some((10, 99))));
        assert_eq!(byte_range(Some("bytes=10-19"), 100), Ok(Some((10, 19))));
        assert_eq!(byte_range(Some("bytes=90-500"), 100), Ok(Some((90, 99))));
        assert_eq!(byte_range(Some("bytes=-4"), 100), Ok(Some((96, 99))));
        assert_eq!(byte_range(Some("bytes=-400"), 100), Ok(Some((0, 99))));
        assert_eq!(byte_range(Some("bytes=100-"), 100), Err(()));
        assert_eq!(byte_range(Some("bytes=20-10"), 100), Err(()));
        assert_eq!(byte_range(Some("bytes=0-1,5-6"), 100), Ok(None));
        assert_eq!(byte_range(Some("items=0-1"), 100), Ok(None));
    }
}
