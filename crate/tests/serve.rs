//! `tunelab serve` as a browser and as a hostile client meet it: files, ranges and
//! revalidation; paths that try to leave the root; connection, header-size and slow-client
//! limits; and a loopback soak of many concurrent connections.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `tunelab serve` child on a free port, killed when dropped.
struct Server {
    child: Child,
    /// `127.0.0.1:PORT`
    addr: String,
}

impl Server {
    fn start(root: &Path, extra: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tunelab"))
            .args(["serve", "--port", "0", "--root", root.to_str().unwrap()])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("http://"))
            .and_then(|w| w.split('/').next())
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .to_string();
        Server { child, addr }
    }

    fn base(&self) -> String {
        format!("http://{}/", self.addr)
    }

    fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(&self.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One response read off a raw connection.
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Read one response (`Content-Length` framed, as this server always sends).
fn read_response(r: &mut impl BufRead, head_request: bool) -> std::io::Result<Response> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    let status = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        r.read_line(&mut line)?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (n, v) = l.split_once(':').unwrap();
        headers.push((n.to_string(), v.trim().to_string()));
    }
    let mut resp = Response {
        status,
        headers,
        body: Vec::new(),
    };
    let len: usize = resp
        .header("content-length")
        .map_or(0, |l| l.parse().unwrap());
    if !head_request && status != 304 {
        resp.body = vec![0; len];
        r.read_exact(&mut resp.body)?;
    }
    Ok(resp)
}

/// Send `raw` on a fresh connection and read the one response.
fn raw(server: &Server, raw: &[u8]) -> Response {
    let mut s = server.connect();
    s.write_all(raw).unwrap();
    read_response(&mut BufReader::new(s), false).unwrap()
}

fn get(server: &Server, target: &str) -> Response {
    raw(
        server,
        format!("GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    )
}

fn pattern(n: usize, salt: u32) -> Vec<u8> {
    (0..n as u32)
        .map(|i| (i.wrapping_mul(7).wrapping_add(salt) % 251) as u8)
        .collect()
}

#[test]
fn streams_files_and_answers_range_requests() {
    let root = tempfile::tempdir().unwrap();
    let bytes = pattern(5000, 0);
    std::fs::create_dir_all(root.path().join("models")).unwrap();
    std::fs::write(root.path().join("models/w.gguf"), &bytes).unwrap();
    let server = Server::start(root.path(), &[]);
    let base = server.base();
    // A real HTTP client, as the page's fetches are.
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let get = |path: &str, range: Option<&str>| {
        let mut r = agent.get(format!("{base}{path}"));
        if let Some(range) = range {
            r = r.header("Range", range);
        }
        let mut resp = r.call().unwrap();
        let status = resp.status().as_u16();
        let header = |h: &str| {
            resp.headers()
                .get(h)
                .map(|v| v.to_str().unwrap().to_string())
        };
        let (accept, content_range) = (header("accept-ranges"), header("content-range"));
        let body = resp.body_mut().read_to_vec().unwrap();
        (status, accept, content_range, body)
    };
    let (status, accept, _, body) = get("models/w.gguf", None);
    assert_eq!((status, accept.as_deref()), (200, Some("bytes")));
    assert_eq!(body, bytes);
    let (status, _, range, body) = get("models/w.gguf", Some("bytes=1234-"));
    assert_eq!(
        (status, range.as_deref()),
        (206, Some("bytes 1234-4999/5000"))
    );
    assert_eq!(body, bytes[1234..]);
    let (status, _, range, body) = get("models/w.gguf", Some("bytes=-10"));
    assert_eq!(
        (status, range.as_deref()),
        (206, Some("bytes 4990-4999/5000"))
    );
    assert_eq!(body, bytes[4990..]);
    let (status, _, range, _) = get("models/w.gguf", Some("bytes=5000-"));
    assert_eq!((status, range.as_deref()), (416, Some("bytes */5000")));
    // HEAD: the headers alone; ETag revalidation answers 304 without a body.
    let head = agent.head(format!("{base}models/w.gguf")).call().unwrap();
    let h = |k: &str| {
        head.headers()
            .get(k)
            .map(|v| v.to_str().unwrap().to_string())
    };
    assert_eq!(head.status().as_u16(), 200);
    assert_eq!(h("content-length").as_deref(), Some("5000"));
    assert_eq!(h("cache-control").as_deref(), Some("no-cache"));
    let etag = h("etag").unwrap();
    assert!(etag.starts_with('"') && etag.len() > 4, "{etag}");
    let mut again = agent
        .get(format!("{base}models/w.gguf"))
        .header("If-None-Match", &etag)
        .call()
        .unwrap();
    assert_eq!(again.status().as_u16(), 304);
    assert!(again.body_mut().read_to_vec().unwrap().is_empty());
    let stale = agent
        .get(format!("{base}models/w.gguf"))
        .header("If-None-Match", "\"other\"")
        .call()
        .unwrap();
    assert_eq!(stale.status().as_u16(), 200);
    assert_eq!(get("models/missing.gguf", None).0, 404);
    // Methods other than GET and HEAD are refused.
    let post = raw(
        &server,
        b"POST /models/w.gguf HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(
        (post.status, post.header("allow")),
        (405, Some("GET, HEAD"))
    );
    // Requests on one kept-alive connection, pipelined.
    let mut s = server.connect();
    s.write_all(
        b"GET /models/w.gguf HTTP/1.1\r\nRange: bytes=0-9\r\n\r\n\
          HEAD /models/w.gguf HTTP/1.1\r\n\r\n\
          GET /models/w.gguf HTTP/1.1\r\nRange: bytes=10-19\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let mut r = BufReader::new(s);
    assert_eq!(read_response(&mut r, false).unwrap().body, bytes[..10]);
    assert_eq!(read_response(&mut r, true).unwrap().status, 200);
    let last = read_response(&mut r, false).unwrap();
    assert_eq!(
        (last.body.as_slice(), last.header("connection")),
        (&bytes[10..20], Some("close"))
    );
}

#[test]
fn nothing_outside_the_root_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("models")).unwrap();
    std::fs::write(root.join("models/w.bin"), b"weights").unwrap();
    let secret = dir.path().join("secret.txt");
    std::fs::write(&secret, b"SECRET-BYTES").unwrap();
    std::os::unix::fs::symlink(&secret, root.join("models/link")).unwrap();
    std::os::unix::fs::symlink(dir.path(), root.join("up")).unwrap();
    let server = Server::start(&root, &[]);
    assert_eq!(get(&server, "/models/w.bin").body, b"weights");
    let absolute = format!("/{}", secret.display());
    for target in [
        "/../secret.txt",
        "/models/../../secret.txt",
        "/%2e%2e/secret.txt",
        "/%2E%2e%2fsecret.txt",
        "/models%2f..%2f..%2fsecret.txt",
        "/models/%252e%252e/%252e%252e/secret.txt",
        "/..%5csecret.txt",
        "/models\\..\\..\\secret.txt",
        "/models/w.bin%00",
        "/models/link",
        "/up/secret.txt",
        absolute.as_str(),
        "//../secret.txt",
    ] {
        let r = get(&server, target);
        assert!(
            r.status == 403 || r.status == 404,
            "{target}: status {}",
            r.status
        );
        assert!(
            !r.body.windows(6).any(|w| w == b"SECRET"),
            "{target} leaked the file"
        );
    }
    // A raw NUL byte and a target that is not a path.
    let r = raw(&server, b"GET /models/w.bin\0 HTTP/1.1\r\n\r\n");
    assert_eq!(r.status, 403);
    assert_eq!(get(&server, "secret.txt").status, 400);
    // The server is still up and serving.
    assert_eq!(get(&server, "/models/w.bin").status, 200);
}

#[test]
fn connections_header_size_and_slow_clients_are_bounded() {
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("f.txt"), b"hello").unwrap();
    let server = Server::start(
        root.path(),
        &["--max-connections", "2", "--client-timeout", "1"],
    );
    // Two idle connections fill the server: a third is turned away at once.
    let idle = [server.connect(), server.connect()];
    std::thread::sleep(Duration::from_millis(200));
    let busy = get(&server, "/f.txt");
    assert_eq!((busy.status, busy.header("retry-after")), (503, Some("1")));
    // Idle clients are dropped after the timeout, which frees their places.
    let start = Instant::now();
    for mut s in idle {
        let mut b = [0u8; 1];
        assert!(matches!(s.read(&mut b), Ok(0) | Err(_)));
    }
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    // (Places free as the server's threads see their clients go, so a loaded machine may
    // still answer 503 for a moment: ask again until it does not.)
    let with_room = |request: &dyn Fn() -> Response| {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let r = request();
            if r.status != 503 {
                return r;
            }
            assert!(Instant::now() < deadline, "the server stayed full");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let r = with_room(&|| get(&server, "/f.txt"));
    assert_eq!((r.status, &r.body[..]), (200, &b"hello"[..]));
    // A head larger than 16 KiB is refused.
    let mut big = b"GET /f.txt HTTP/1.1\r\nX-Pad: ".to_vec();
    big.extend(std::iter::repeat_n(b'a', 20_000));
    big.extend_from_slice(b"\r\n\r\n");
    assert_eq!(with_room(&|| raw(&server, &big)).status, 431);
    // A client dribbling its head a byte at a time is cut off at the deadline.
    let mut s = server.connect();
    let mut writer = s.try_clone().unwrap();
    let dribble = std::thread::spawn(move || {
        let _ = writer.write_all(b"GET /f.txt HTTP/1.1\r\n");
        for _ in 0..40 {
            if writer.write_all(b"X").is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    let start = Instant::now();
    let mut b = [0u8; 64];
    let ended = loop {
        match s.read(&mut b) {
            Ok(0) | Err(_) => break start.elapsed(),
            Ok(_) => {}
        }
    };
    assert!(
        ended < Duration::from_millis(3000),
        "cut off after {ended:?}"
    );
    dribble.join().unwrap();
}

/// Percentile of sorted durations, in milliseconds.
fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

#[test]
fn soak_of_concurrent_full_and_range_requests() {
    const CONNECTIONS: usize = 50;
    const PER_CONNECTION: usize = 40;
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("models/m");
    std::fs::create_dir_all(&dir).unwrap();
    let files: Vec<(String, Vec<u8>)> = [
        ("model-00001-of-00002.safetensors", 1 << 20),
        ("model-00002-of-00002.safetensors", 300_001),
        ("config.json", 777),
    ]
    .into_iter()
    .enumerate()
    .map(|(i, (name, n))| {
        let bytes = pattern(n, i as u32 * 13);
        std::fs::write(dir.join(name), &bytes).unwrap();
        (format!("/models/m/{name}"), bytes)
    })
    .collect();
    let server = Server::start(root.path(), &[]);
    let files = std::sync::Arc::new(files);
    let start = Instant::now();
    let workers: Vec<_> = (0..CONNECTIONS)
        .map(|c| {
            let files = files.clone();
            let mut s = server.connect();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(s.try_clone().unwrap());
                let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ (c as u64 + 1);
                let mut next = move || {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    rng
                };
                let mut latencies = Vec::with_capacity(PER_CONNECTION);
                for _ in 0..PER_CONNECTION {
                    let (target, bytes) = &files[next() as usize % files.len()];
                    let len = bytes.len() as u64;
                    // Half full files, half ranges as a resumed download asks for them.
                    let range = (next() % 2 == 0).then(|| {
                        let a = next() % len;
                        (a, a + next() % (len - a))
                    });
                    let mut req = format!("GET {target} HTTP/1.1\r\nHost: x\r\n");
                    if let Some((a, b)) = range {
                        req.push_str(&format!("Range: bytes={a}-{b}\r\n"));
                    }
                    req.push_str("\r\n");
                    let t = Instant::now();
                    s.write_all(req.as_bytes()).unwrap();
                    let r = read_response(&mut reader, false).unwrap();
                    latencies.push(t.elapsed());
                    let (status, want) = match range {
                        None => (200, &bytes[..]),
                        Some((a, b)) => (206, &bytes[a as usize..=b as usize]),
                    };
                    assert_eq!(r.status, status, "{target} {range:?}");
                    assert!(r.body == want, "{target} {range:?}: bytes differ");
                }
                latencies
            })
        })
        .collect();
    let mut latencies: Vec<Duration> = workers
        .into_iter()
        .flat_map(|w| w.join().expect("a connection failed"))
        .collect();
    let wall = start.elapsed();
    latencies.sort();
    assert_eq!(latencies.len(), CONNECTIONS * PER_CONNECTION);
    eprintln!(
        "soak: {} requests over {CONNECTIONS} connections in {:.2} s, 0 errors, p50 {:.2} ms, p99 {:.2} ms",
        latencies.len(),
        wall.as_secs_f64(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
    );
}
