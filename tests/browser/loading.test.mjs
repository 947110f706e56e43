// End-to-end model loading in headless Chromium (WebGPU on SwiftShader): a sharded fixture
// model streams over HTTP into the Web Worker, shard by shard onto the GPU, and computes logits
// that match Hugging Face transformers — also when a shard's connection drops midway (resumed
// with a Range request). Bad hosts and bad models give clear messages on the page: a 404, a
// server that cannot resume, a tensor larger than the adapter's buffer limit; a full browser
// storage quota is reported and the model still loads. A GGUF file loads the same way.
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { readSafetensors } from "./safetensors.mjs";
import { useBrowser, settle, ROOT, SHOTS } from "./harness.mjs";

const lab = useBrowser();

async function runPage(query) {
  const t0 = Date.now();
  const { page, console } = await lab.open({ autorun: "1", ...query });
  const { state, status } = await settle(page);
  const wall = Date.now() - t0;
  const json = await page.$eval("#result", (e) => e.dataset.json ?? null);
  return { page, state, status, result: json && JSON.parse(json), console, wall };
}

const SHARD3 = "model-00003-of-00009.safetensors";

test("a GGUF file (mixed quantisations, Q/K permuted) streams into the worker, its dropped connection resumed: WebGPU logits match transformers reading the same file", async () => {
  const file = "/tests/fixtures/gguf/llama-gqa.gguf";
  lab.http.drop(file);
  const ref = readSafetensors(join(ROOT, "tests/fixtures/gguf/reference.safetensors"));
  const { page, state, status, result, console } = await runPage({ model: file, tokens: Array.from(ref.ids.data).join(",") });
  assert.equal(state, "done", `${status}\n${console.join("\n")}`);
  const requests = lab.http.requests.filter((r) => r.path === file);
  assert.deepEqual(requests.map((r) => r.status), [200, 206], JSON.stringify(requests));
  assert.deepEqual(result.shape, ref.logits.shape);
  let maxErr = 0;
  for (let i = 0; i < result.logits.length; i++) maxErr = Math.max(maxErr, Math.abs(result.logits[i] - ref.logits.data[i]));
  assert.ok(maxErr <= 1e-4, `max |Δlogit| ${maxErr}`);
  process.stdout.write(`# browser GGUF: max |Δlogit| ${maxErr.toExponential(2)} vs transformers on the same file\n`);
  await page.close();
});

// SmolLM2-135M-Instruct (scripts/get-smollm2.sh; the test command installs it): its 98 MB GGUF
// dequantised in the worker, 135M f32 parameters on the GPU, logits of a prompt as transformers'
// (tests/fixtures/make_smollm2_reference.py keeps every 389th logit and the argmax).
test("SmolLM2-135M-Instruct's GGUF loads in the browser to transformers' logits", async (t) => {
  const ref = JSON.parse(readFileSync(join(ROOT, "tests/fixtures/smollm2/reference.json"), "utf8"));
  const file = `models/smollm2/${ref.file}`;
  if (!existsSync(join(ROOT, file))) {
    assert.notEqual(process.env.TUNELAB_REQUIRE_SMOLLM2, "1", `${file} is missing (scripts/get-smollm2.sh)`);
    t.skip(`${file} is not installed`);
    return;
  }
  const c = ref.cases[0];
  const { page, state, status, result, console } = await runPage({ model: `/${file}`, tokens: c.ids.join(",") });
  assert.equal(state, "done", `${status}\n${console.join("\n")}`);
  const vocab = result.shape[1];
  let maxErr = 0;
  c.strided.forEach((row, pos) => {
    const got = result.logits.slice(pos * vocab, (pos + 1) * vocab);
    row.forEach((want, k) => { maxErr = Math.max(maxErr, Math.abs(got[k * ref.stride] - want)); });
    const argmax = got.reduce((best, v, i) => (v > got[best] ? i : best), 0);
    assert.equal(argmax, c.top_ids[pos][0], `position ${pos}`);
  });
  assert.ok(maxErr <= 1e-3, `max |Δlogit| ${maxErr}`);
  process.stdout.write(`# browser SmolLM2-135M GGUF: load ${(result.ms.load / 1000).toFixed(1)} s, logits of ${c.ids.length} tokens ${(result.ms.logits / 1000).toFixed(1)} s, GPU memory in use ${(result.memory?.inUse / 2 ** 20).toFixed(0)} MiB, max |Δlogit| ${maxErr.toExponential(2)}\n`);
  await page.close();
});

test("sharded llama fixture, one shard's connection dropped midway and resumed: WebGPU logits match transformers", async () => {
  lab.http.drop(`/tests/fixtures/llama-gqa/${SHARD3}`);
  const ref = readSafetensors(join(ROOT, "tests/fixtures/llama-gqa/reference.safetensors"));
  const refJson = JSON.parse(readFileSync(join(ROOT, "tests/fixtures/llama-gqa/reference.json"), "utf8"));
  const tokens = ref.seq0_ids.data;
  const { page, state, status, result, console, wall } = await runPage({
    model: "/tests/fixtures/llama-gqa/", tokens: tokens.join(","), text: refJson.text,
  });
  assert.equal(state, "done", `${status}\n${console.join("\n")}`);
  const resumed = lab.http.requests.filter((r) => r.path.endsWith(SHARD3));
  assert.deepEqual(resumed.map((r) => r.status), [200, 206], JSON.stringify(resumed));
  assert.match(resumed[1].range, /^bytes=[1-9]\d*-$/);
  assert.deepEqual(result.shape, ref.seq0_logits.shape);
  let maxErr = 0;
  for (let i = 0; i < result.logits.length; i++) {
    maxErr = Math.max(maxErr, Math.abs(result.logits[i] - ref.seq0_logits.data[i]));
  }
  assert.ok(maxErr <= 1e-4, `max |Δlogit| ${maxErr}`);
  assert.equal(result.score.tokens, refJson.text_tokens);
  assert.ok(Math.abs(result.score.nll - refJson.text_nll) <= 1e-4, `nll ${result.score.nll} vs ${refJson.text_nll}`);
  await page.screenshot({ path: join(SHOTS, "logits.png") });
  // Reported in the README's performance section.
  process.stdout.write(`# browser: max |Δlogit| ${maxErr.toExponential(2)}, page-to-result ${wall} ms, load ${result.ms.load.toFixed(0)} ms, logits ${result.ms.logits.toFixed(0)} ms, score ${result.ms.score.toFixed(0)} ms\n`);
  await page.close();
});

test("a Hub id (org/name) resolves against the page's Hub endpoint; the token from the form goes to the Hub and never comes from a link", async () => {
  lab.http.aliases["/org/tiny/resolve/main/"] = "/tests/fixtures/llama-gqa/";
  const ref = readSafetensors(join(ROOT, "tests/fixtures/llama-gqa/reference.safetensors"));
  const { page, console } = await lab.open({
    model: "org/tiny", "hf-endpoint": lab.http.base, "hf-token": "hf_from_a_link",
    tokens: ref.seq0_ids.data.join(","),
  });
  assert.equal(await page.$eval("#hf-token", (e) => e.value), "", "a link must not fill the token");
  await page.fill("#hf-token", "hf_test_token");
  await page.$eval("#form", (f) => f.requestSubmit());
  const { state, status } = await settle(page);
  assert.equal(state, "done", `${status}\n${console.join("\n")}`);
  const result = JSON.parse(await page.$eval("#result", (e) => e.dataset.json));
  let maxErr = 0;
  for (let i = 0; i < result.logits.length; i++) maxErr = Math.max(maxErr, Math.abs(result.logits[i] - ref.seq0_logits.data[i]));
  assert.ok(maxErr <= 1e-4, `max |Δlogit| ${maxErr}`);
  const hub = lab.http.requests.filter((r) => r.path.startsWith("/org/tiny/resolve/main/") && r.status === 200);
  assert.ok(hub.length >= 10, JSON.stringify(hub));
  assert.ok(hub.every((r) => r.auth === "Bearer hf_test_token"), JSON.stringify(hub));
  await page.close();
});

test("a model URL that 404s gives a clear message on the page", async () => {
  const { page, state, status } = await runPage({ model: "/tests/fixtures/no-such-model/", tokens: "1,2" });
  assert.equal(state, "error");
  assert.match(status, /config\.json.*404/);
  await page.close();
});

test("a server that cannot resume a dropped download: the message says how far it got; the worker loads another model", async () => {
  const base = "/norange/tests/fixtures/llama-gqa/";
  lab.http.drop(`${base}${SHARD3}`);
  const { page } = await lab.open({ model: base, cache: "0" });
  await page.click("#load");
  const { state, status } = await settle(page, ["ready", "error"]);
  assert.equal(state, "error", status);
  assert.match(status, new RegExp(`${SHARD3}: download from .* stopped after [1-9]\\d* of 32904 bytes: .*HTTP 200 to a Range request, so it cannot resume`));
  process.stdout.write(`# ${status}\n`);
  await page.fill("#model", "/tests/fixtures/llama-gqa/");
  await page.click("#load");
  const again = await settle(page, ["ready", "error"]);
  assert.equal(again.state, "ready", again.status);
  await page.close();
});

test("a tensor larger than the adapter's buffer limit is refused, named, before its data is read", async () => {
  // A model whose 16 GB embedding no WebGPU adapter binds: only the header is ever sent.
  const config = JSON.parse(readFileSync(join(ROOT, "tests/fixtures/llama-gqa/config.json"), "utf8"));
  Object.assign(config, { vocab_size: 4_000_000, hidden_size: 1024, head_dim: 256 });
  const bytes = config.vocab_size * config.hidden_size * 4;
  const header = Buffer.from(JSON.stringify({
    "model.embed_tokens.weight": { dtype: "F32", shape: [config.vocab_size, config.hidden_size], data_offsets: [0, bytes] },
  }));
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(BigInt(header.length));
  lab.http.routes["/huge/config.json"] = (_, res) => res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(config));
  let sent = 0;
  lab.http.routes["/huge/model.safetensors"] = (_, res) => {
    res.writeHead(200, { "content-type": "application/octet-stream", "content-length": String(8 + header.length + bytes) });
    res.write(Buffer.concat([prefix, header]));
    sent = 8 + header.length;
    // The data never comes: the engine must refuse the tensor from the header alone.
  };
  const { page } = await lab.open({ model: "/huge/", cache: "0" });
  await page.click("#load");
  const { state, status } = await settle(page, ["ready", "error"]);
  assert.equal(state, "error", status);
  assert.match(status, /model\.safetensors: tensor `model\.embed_tokens\.weight` needs a 15625\.0 MiB f32 buffer, [\d.]+ MiB over this GPU's max_storage_buffer_binding_size \([\d.]+ MiB\)/);
  assert.equal(sent, 8 + header.length);
  process.stdout.write(`# ${status}\n`);
  await page.close();
});

test("base weights in f16 on an adapter without shader-f16 are refused, by name, before anything downloads", async (t) => {
  const { page } = await lab.open({ model: "/tests/fixtures/llama-gqa/", cache: "0", f16: "1" });
  const hasF16 = await page.evaluate(async () => (await navigator.gpu.requestAdapter()).features.has("shader-f16"));
  if (hasF16) {
    // A hardware adapter with f16: the model loads (the native tests check the numbers).
    await page.click("#load");
    const { state, status } = await settle(page, ["ready", "error"]);
    assert.equal(state, "ready", status);
    t.diagnostic("this adapter has shader-f16: loaded in f16");
    await page.close();
    return;
  }
  const before = lab.http.requests.length;
  await page.click("#load");
  const { state, status } = await settle(page, ["ready", "error"]);
  assert.equal(state, "error", status);
  assert.match(status, /base weights in f16: needs f16 shaders, which this GPU adapter does not offer \(WebGPU's `shader-f16`\)/);
  assert.equal(lab.http.requests.slice(before).filter((r) => r.path.startsWith("/tests/fixtures/llama-gqa/")).length, 0);
  // Unticked, the same model loads.
  await page.uncheck("#f16");
  await page.click("#load");
  const after = await settle(page, ["ready", "error"]);
  assert.equal(after.state, "ready", after.status);
  process.stdout.write(`# ${status}\n`);
  await page.close();
});

test("browser storage quota exceeded: the page says the files were not cached, and the model loads", async () => {
  const { page } = await lab.open({ model: "/tests/fixtures/llama-gqa/", cache: "1" });
  const cdp = await page.context().newCDPSession(page);
  await cdp.send("Storage.overrideQuotaForOrigin", { origin: lab.http.base, quotaSize: 1024 });
  await page.click("#load");
  const { state, status } = await settle(page, ["ready", "error"]);
  assert.equal(state, "ready", status);
  const notices = await page.$$eval("#notices li", (l) => l.map((e) => e.textContent));
  assert.ok(notices.some((n) => /^not cached \(browser storage quota exceeded\): .*safetensors$/.test(n)), notices.join("\n"));
  assert.match(await page.$eval("#storage", (e) => e.textContent), /browser storage used: [\d.]+ MB of/);
  await page.close();
});
