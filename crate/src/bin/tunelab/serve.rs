//! `tunelab serve`: the web app and the bundled models and data on 127.0.0.1.

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
        _ => "application/octet-stream",
    }
}

/// A static file server for the web app on 127.0.0.1 (never on other interfaces).
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
    println!(
        "serving {} on http://127.0.0.1:{port}/www/ (Ctrl-C to stop)",
        root.display()
    );
    for request in server.incoming_requests() {
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
                .is_ok_and(|p| p.starts_with(&root) && p.is_file());
        let response = if inside {
            match std::fs::read(&path) {
                Ok(bytes) => tiny_http::Response::from_data(bytes).with_header(
                    tiny_http::Header::from_bytes("Content-Type", content_type(&path))
                        .expect("valid header"),
                ),
                Err(_) => tiny_http::Response::from_string("cannot read").with_status_code(500),
            }
        } else {
            tiny_http::Response::from_string("not found").with_status_code(404)
        };
        let _ = request.respond(response);
    }
    Ok(())
}
