//! `tunelab serve`: the web app and the bundled models and data on 127.0.0.1, files streamed
//! from disk with `Range` support, `HEAD`, and `ETag` revalidation (`Cache-Control: no-cache`,
//! `If-None-Match` → 304) so the page never runs a stale bundle and never downloads a model
//! twice.
//!
//! A small HTTP/1.1 server on std alone, so that its limits are its own: it listens on the
//! loopback interface only, answers only for files under the root (every encoded or decoded
//! form of `..`, backslashes, NUL bytes and symlinks leaving the root are refused), holds at
//! most `--max-connections` connections (others get 503 at once), reads at most
//! [`MAX_HEAD`] bytes of request head (431), and gives each request head `--client-timeout`
//! seconds to arrive, so a slow or idle client cannot hold a connection.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tunelab::Error;

use crate::Result;

/// The most bytes a request line and its headers may take.
const MAX_HEAD: usize = 16 * 1024;

#[derive(clap::Args)]
pub struct Args {
    /// Port on 127.0.0.1 (0 picks a free one; the line printed at start names it).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Directory to serve (default: the repository this binary was built from).
    #[arg(long)]
    root: Option<PathBuf>,
    /// Connections held at once; more are answered 503 and closed.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=4096))]
    max_connections: u32,
    /// Seconds a client has to send each request head (also how long an idle kept-alive
    /// connection stays open) and to take each chunk of a response.
    #[arg(long, default_value_t = 10.0)]
    client_timeout: f64,
}

pub fn run(a: Args) -> Result {
    if !(a.client_timeout.is_finite() && a.client_timeout > 0.0) {
        return Err(Error::Input(format!(
            "--client-timeout must be a positive number of seconds, not {}",
            a.client_timeout
        )));
    }
    serve(
        a.root
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("..")),
        a.port,
        a.max_connections as usize,
        Duration::from_secs_f64(a.client_timeout),
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

/// `%XX` escapes decoded; `None` for a malformed escape.
fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Some(out)
}

/// The file under `root` (canonical) that a request target names, or the status refusing it:
/// 400 for a target that is not a path, 403 for one that tries to leave the root (`..` in any
/// encoding, backslashes, NUL bytes, a symlink pointing outside), 404 for no such file. `/` is
/// the web app's page.
fn resolve(root: &Path, target: &str) -> std::result::Result<PathBuf, u16> {
    let path = target.split(['?', '#']).next().unwrap_or_default();
    if !path.starts_with('/') {
        return Err(400);
    }
    let decoded = String::from_utf8(percent_decode(path).ok_or(400u16)?).map_err(|_| 404u16)?;
    if decoded.contains(['\0', '\\']) {
        return Err(403);
    }
    let mut rel = PathBuf::new();
    for segment in decoded.split('/') {
        match segment {
            "" | "." => {}
            ".." => return Err(403),
            s => rel.push(s),
        }
    }
    let path = if rel.as_os_str().is_empty() {
        root.join("www/index.html")
    } else {
        root.join(rel)
    };
    let real = path.canonicalize().map_err(|_| 404u16)?;
    if !real.starts_with(root) {
        return Err(403);
    }
    if !real.is_file() {
        return Err(404);
    }
    Ok(real)
}

/// One parsed request head.
struct Request {
    method: String,
    target: String,
    /// Lower-cased names.
    headers: Vec<(String, String)>,
    keep_alive: bool,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Parse a request head (without its blank line); `Err(status)` for a malformed one.
fn parse_head(head: &[u8]) -> std::result::Result<Request, u16> {
    let text = std::str::from_utf8(head).map_err(|_| 400u16)?;
    let mut lines = text.split("\r\n");
    let mut parts = lines.next().unwrap_or_default().split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(400);
    };
    let http11 = match version {
        "HTTP/1.1" => true,
        "HTTP/1.0" => false,
        v if v.starts_with("HTTP/") => return Err(505),
        _ => return Err(400),
    };
    let mut headers = Vec::new();
    for line in lines {
        let (name, value) = line.split_once(':').ok_or(400u16)?;
        if name.is_empty() || name.contains([' ', '\t']) {
            return Err(400);
        }
        headers.push((name.to_ascii_lowercase(), value.trim().to_string()));
    }
    let connection = headers
        .iter()
        .find(|(n, _)| n == "connection")
        .map(|(_, v)| v.to_ascii_lowercase());
    let keep_alive = match connection.as_deref() {
        Some(c) if c.contains("close") => false,
        Some(c) if c.contains("keep-alive") => true,
        _ => http11,
    };
    Ok(Request {
        method: method.to_string(),
        target: target.to_string(),
        headers,
        keep_alive,
    })
}

/// How reading the next request head ended.
enum Head {
    /// A head, without its blank line; bytes after it stay in the buffer.
    Got(Vec<u8>),
    /// The client closed or went quiet between requests.
    Closed,
    /// The head is refused with this status.
    Refused(u16),
}

/// Read one request head from `stream`, at most [`MAX_HEAD`] bytes within `timeout` (a deadline
/// for the whole head, so a client dribbling a byte at a time is cut off too).
fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>, timeout: Duration) -> Head {
    let deadline = Instant::now() + timeout;
    let mut chunk = [0u8; 4096];
    loop {
        match buf.windows(4).position(|w| w == b"\r\n\r\n") {
            Some(end) if end <= MAX_HEAD => {
                let head = buf[..end].to_vec();
                buf.drain(..end + 4);
                return Head::Got(head);
            }
            Some(_) => return Head::Refused(431),
            None if buf.len() > MAX_HEAD => return Head::Refused(431),
            None => {}
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return Head::Closed;
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return Head::Closed,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        206 => "Partial Content",
        304 => "Not Modified",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        416 => "Range Not Satisfiable",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Internal Server Error",
    }
}

/// Write a status line and headers (with `Content-Length` and `Connection`).
fn write_head(
    stream: &mut TcpStream,
    status: u16,
    headers: &[(&str, String)],
    length: u64,
    keep_alive: bool,
) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {status} {}\r\n", reason(status));
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    let connection = if keep_alive { "keep-alive" } else { "close" };
    head.push_str(&format!(
        "Content-Length: {length}\r\nConnection: {connection}\r\n\r\n"
    ));
    stream.write_all(head.as_bytes())
}

/// A short text answer (errors, 304).
fn write_text(
    stream: &mut TcpStream,
    status: u16,
    headers: &[(&str, String)],
    keep_alive: bool,
    body: bool,
) -> std::io::Result<()> {
    let text = if status == 304 { "" } else { reason(status) };
    let mut headers = headers.to_vec();
    if !text.is_empty() {
        headers.push(("Content-Type", "text/plain; charset=utf-8".into()));
    }
    write_head(stream, status, &headers, text.len() as u64, keep_alive)?;
    if body {
        stream.write_all(text.as_bytes())?;
    }
    Ok(())
}

/// Answer one request; `Ok(false)` when the connection must close after it.
fn respond(stream: &mut TcpStream, request: &Request, root: &Path) -> std::io::Result<bool> {
    let keep = request.keep_alive;
    let body = request.method != "HEAD";
    if request.method != "GET" && request.method != "HEAD" {
        write_text(stream, 405, &[("Allow", "GET, HEAD".into())], false, true)?;
        return Ok(false);
    }
    // A GET with a body is not something the page sends; rather than skip it, close after.
    let keep = keep
        && request
            .header("content-length")
            .is_none_or(|l| l.trim() == "0")
        && request.header("transfer-encoding").is_none();
    let path = match resolve(root, &request.target) {
        Ok(p) => p,
        Err(status) => {
            write_text(stream, status, &[], keep, body)?;
            return Ok(keep);
        }
    };
    let Ok(mut file) = std::fs::File::open(&path) else {
        write_text(stream, 404, &[], keep, body)?;
        return Ok(keep);
    };
    let meta = file.metadata()?;
    let len = meta.len();
    // A strong validator from what changes when the file does: its size and modification time.
    let modified = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    let etag = format!("\"{len:x}-{modified:x}\"");
    let mut headers = vec![
        ("Content-Type", content_type(&path).to_string()),
        ("Accept-Ranges", "bytes".to_string()),
        ("ETag", etag.clone()),
        ("Cache-Control", "no-cache".to_string()),
    ];
    if request
        .header("if-none-match")
        .is_some_and(|tags| tags.split(',').any(|t| t.trim() == etag || t.trim() == "*"))
    {
        write_text(stream, 304, &headers, keep, false)?;
        return Ok(keep);
    }
    let (status, start, count) = match byte_range(request.header("range"), len) {
        Ok(None) => (200, 0, len),
        Ok(Some((start, end))) => {
            headers.push(("Content-Range", format!("bytes {start}-{end}/{len}")));
            (206, start, end - start + 1)
        }
        Err(()) => {
            let range = [("Content-Range", format!("bytes */{len}"))];
            write_text(stream, 416, &range, keep, body)?;
            return Ok(keep);
        }
    };
    std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(start))?;
    write_head(stream, status, &headers, count, keep)?;
    if body {
        let sent = std::io::copy(&mut file.take(count), stream)?;
        if sent != count {
            // The file shrank while being sent: the promised length cannot be kept.
            return Ok(false);
        }
    }
    Ok(keep)
}

/// Close after a final answer without discarding it: stop writing, then read (briefly) what
/// the client still sends, so the kernel does not reset the connection before it reads ours.
fn close_gracefully(mut stream: TcpStream) {
    let _ = stream.shutdown(Shutdown::Write);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let mut sink = [0u8; 4096];
    let mut left: usize = 64 * 1024;
    while left > 0 {
        match stream.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(n) => left = left.saturating_sub(n),
        }
    }
}

/// Serve requests on one connection until it closes, times out or errs.
fn connection(mut stream: TcpStream, root: &Path, timeout: Duration) {
    if stream.set_write_timeout(Some(timeout)).is_err() {
        return;
    }
    let _ = stream.set_nodelay(true);
    let mut buf = Vec::new();
    loop {
        let request = match read_head(&mut stream, &mut buf, timeout) {
            Head::Got(head) => parse_head(&head),
            Head::Closed => return,
            Head::Refused(status) => Err(status),
        };
        let keep = match request {
            Ok(request) => respond(&mut stream, &request, root).unwrap_or(false),
            Err(status) => {
                let _ = write_text(&mut stream, status, &[], false, true);
                false
            }
        };
        if !keep {
            close_gracefully(stream);
            return;
        }
    }
}

/// Decrements the live-connection count however the connection's thread ends.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A static file server for the web app on 127.0.0.1 (never on other interfaces), a thread per
/// connection (up to `max_connections`) so a large download does not hold up the page's other
/// requests.
fn serve(root: PathBuf, port: u16, max_connections: usize, timeout: Duration) -> Result {
    let root = root.canonicalize().map_err(|e| Error::file(&root, e))?;
    if !root.join("www/pkg/tunelab_bg.wasm").exists() {
        eprintln!(
            "note: {}/www/pkg is missing; build it with scripts/build-web.sh",
            root.display()
        );
    }
    let listener = TcpListener::bind(("127.0.0.1", port))
        .map_err(|e| Error::Input(format!("cannot listen on 127.0.0.1:{port}: {e}")))?;
    // The port actually bound (`--port 0` picks a free one).
    let port = listener.local_addr().map_or(port, |a| a.port());
    println!(
        "serving {} on http://127.0.0.1:{port}/www/ (Ctrl-C to stop)",
        root.display()
    );
    let root = Arc::new(root);
    let live = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        if live.load(Ordering::SeqCst) >= max_connections {
            let _ = stream.set_write_timeout(Some(timeout));
            let _ = write_text(
                &mut stream,
                503,
                &[("Retry-After", "1".into())],
                false,
                true,
            );
            close_gracefully(stream);
            continue;
        }
        live.fetch_add(1, Ordering::SeqCst);
        let slot = Slot(live.clone());
        let root = root.clone();
        std::thread::spawn(move || {
            let _slot = slot;
            connection(stream, &root, timeout);
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn paths_stay_under_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("models/a b")).unwrap();
        std::fs::write(root.join("models/a b/w.bin"), b"w").unwrap();
        std::fs::write(dir.path().join("secret.txt"), b"s").unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret.txt"), root.join("out")).unwrap();
        std::os::unix::fs::symlink(root.join("models"), root.join("in")).unwrap();
        let root = root.canonicalize().unwrap();
        let file = root.join("models/a b/w.bin");
        for ok in [
            "/models/a%20b/w.bin",
            "/models/./a%20b//w.bin?x=1",
            "/in/a%20b/w.bin",
        ] {
            assert_eq!(resolve(&root, ok), Ok(file.clone()), "{ok}");
        }
        for (target, status) in [
            ("/../secret.txt", 403),
            ("/models/../../secret.txt", 403),
            ("/%2e%2e/secret.txt", 403),
            ("/%2E%2E%2Fsecret.txt", 403),
            ("/models%2f..%2f..%2fsecret.txt", 403),
            ("/..%5csecret.txt", 403),
            ("/models\\..\\..\\secret.txt", 403),
            ("/models/a%20b/w.bin%00.txt", 403),
            ("/out", 403),
            ("/models", 404),
            ("/models/missing", 404),
            ("/%ff", 404),
            ("/%zz", 400),
            ("/%2", 400),
            ("secret.txt", 400),
            ("http://127.0.0.1/models/a%20b/w.bin", 400),
        ] {
            assert_eq!(resolve(&root, target), Err(status), "{target}");
        }
        // An absolute path in the target is a path under the root.
        let absolute = format!("/{}", dir.path().join("secret.txt").display());
        assert_eq!(resolve(&root, &absolute), Err(404));
    }

    #[test]
    fn request_heads() {
        let r = parse_head(b"GET /a HTTP/1.1\r\nHost: x\r\nRange: bytes=1-2").unwrap();
        assert_eq!((r.method.as_str(), r.target.as_str()), ("GET", "/a"));
        assert_eq!(r.header("range"), Some("bytes=1-2"));
        assert!(r.keep_alive);
        assert!(
            !parse_head(b"GET / HTTP/1.1\r\nConnection: close")
                .unwrap()
                .keep_alive
        );
        assert!(!parse_head(b"GET / HTTP/1.0").unwrap().keep_alive);
        assert!(
            parse_head(b"GET / HTTP/1.0\r\nConnection: Keep-Alive")
                .unwrap()
                .keep_alive
        );
        for (bad, status) in [
            (&b"GET /"[..], 400),
            (b"GET / HTTP/2.0", 505),
            (b"GET / FTP", 400),
            (b"GET  / HTTP/1.1", 400),
            (b"GET / HTTP/1.1\r\nno colon", 400),
            (b"GET / HTTP/1.1\r\nBad Name: x", 400),
            (b"GET /\xff HTTP/1.1", 400),
        ] {
            assert_eq!(parse_head(bad).err(), Some(status), "{bad:?}");
        }
    }
}
