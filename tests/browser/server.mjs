// A static file server for the browser tests: serves the repository root on 127.0.0.1 with
// the MIME types WebAssembly and ES modules need, and answers `Range` requests (206) as a
// model host does. Tests can make it misbehave like a real network: `drop(path)` cuts the
// first response for a path halfway through its body; paths under `/norange/` serve the same
// files but ignore `Range` (as a server that cannot resume); `routes[path]` answers a path
// itself; `aliases[prefix] = other` serves paths under `prefix` from under `other` (a Hub
// repository's `resolve/main/` URLs from a fixture folder). Every request is logged in
// `requests` ({path, range, status, auth}).
import { createServer } from "node:http";
import { readFile } from "node:fs/promises";
import { extname, join, normalize } from "node:path";

const TYPES = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".mjs": "text/javascript; charset=utf-8",
  ".wasm": "application/wasm",
  ".json": "application/json",
  ".safetensors": "application/octet-stream",
  ".css": "text/css",
};

export function serve(root) {
  const requests = [];
  const dropped = new Set();
  const toDrop = new Set();
  const routes = {};
  const aliases = {};
  const server = createServer(async (req, res) => {
    let path = normalize(decodeURIComponent(new URL(req.url, "http://x").pathname));
    const range = req.headers.range ?? null;
    const auth = req.headers.authorization ?? null;
    const asked = path;
    const log = (status) => requests.push({ path: asked, range, status, auth });
    for (const [prefix, other] of Object.entries(aliases)) {
      if (path.startsWith(prefix)) path = other + path.slice(prefix.length);
    }
    if (path.includes("..")) {
      log(400);
      res.writeHead(400).end();
      return;
    }
    if (routes[path]) {
      log(200);
      routes[path](req, res);
      return;
    }
    const rangeless = path.startsWith("/norange/");
    const file = rangeless ? path.slice("/norange".length) : path;
    let body;
    try {
      body = await readFile(join(root, file));
    } catch {
      log(404);
      res.writeHead(404, { "content-type": "text/plain" }).end("not found");
      return;
    }
    const type = TYPES[extname(file)] ?? "application/octet-stream";
    const m = !rangeless && range && /^bytes=(\d+)-$/.exec(range);
    if (m && Number(m[1]) < body.length) {
      const from = Number(m[1]);
      log(206);
      res.writeHead(206, {
        "content-type": type,
        "content-length": body.length - from,
        "content-range": `bytes ${from}-${body.length - 1}/${body.length}`,
        "accept-ranges": "bytes",
      });
      res.end(body.subarray(from));
      return;
    }
    log(200);
    res.writeHead(200, { "content-type": type, "content-length": body.length, "accept-ranges": "bytes" });
    if (toDrop.has(path) && !dropped.has(path)) {
      // Half the body, then the connection dies, as on a flaky network.
      dropped.add(path);
      // The pause lets a loaded machine's page read the first half before the cut, so the resume
      // continues from a byte past 0 (as the tests check) rather than starting over.
      res.write(body.subarray(0, body.length >> 1), () => setTimeout(() => res.socket?.destroy(), 500));
      return;
    }
    res.end(body);
  });
  const drop = (path) => toDrop.add(path);
  return new Promise((resolve) => {
    server.listen(0, "127.0.0.1", () =>
      resolve({ server, base: `http://127.0.0.1:${server.address().port}`, requests, drop, routes, aliases }));
  });
}
