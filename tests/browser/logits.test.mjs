// End-to-end: the page in headless Chromium (WebGPU on SwiftShader) loads a sharded fixture
// model over HTTP in a Web Worker and computes logits that match Hugging Face transformers.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, existsSync, mkdirSync } from "node:fs";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { launch } from "./chromium.mjs";
import { serve } from "./server.mjs";
import { readSafetensors } from "./safetensors.mjs";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "../..");
let http, browser;

before(async () => {
  assert.ok(existsSync(join(ROOT, "www/pkg/tunelab_bg.wasm")), "build the wasm bundle first: scripts/build-web.sh");
  http = await serve(ROOT);
  browser = await launch();
});

after(async () => {
  await browser?.close();
  http?.server.close();
});

async function runPage(query) {
  const page = await browser.newPage();
  const console = [];
  page.on("console", (m) => console.push(`${m.type()}: ${m.text()}`));
  const t0 = Date.now();
  await page.goto(`${http.base}/www/index.html?${new URLSearchParams({ autorun: "1", ...query })}`);
  await page.waitForFunction(
    () => ["done", "error"].includes(document.getElementById("status").dataset.state),
    null, { timeout: 600_000 });
  const wall = Date.now() - t0;
  const state = await page.$eval("#status", (e) => e.dataset.state);
  const status = await page.$eval("#status", (e) => e.textContent);
  const json = await page.$eval("#result", (e) => e.dataset.json ?? null);
  return { page, state, status, result: json && JSON.parse(json), console, wall };
}

test("sharded llama fixture: WebGPU logits match transformers", async () => {
  const ref = readSafetensors(join(ROOT, "tests/fixtures/llama-gqa/reference.safetensors"));
  const refJson = JSON.parse(readFileSync(join(ROOT, "tests/fixtures/llama-gqa/reference.json"), "utf8"));
  const tokens = ref.seq0_ids.data;
  const { page, state, status, result, console, wall } = await runPage({
    model: "/tests/fixtures/llama-gqa/", tokens: tokens.join(","), text: refJson.text,
  });
  assert.equal(state, "done", `${status}\n${console.join("\n")}`);
  assert.deepEqual(result.shape, ref.seq0_logits.shape);
  let maxErr = 0;
  for (let i = 0; i < result.logits.length; i++) {
    maxErr = Math.max(maxErr, Math.abs(result.logits[i] - ref.seq0_logits.data[i]));
  }
  assert.ok(maxErr <= 1e-4, `max |Δlogit| ${maxErr}`);
  assert.equal(result.score.tokens, refJson.text_tokens);
  assert.ok(Math.abs(result.score.nll - refJson.text_nll) <= 1e-4, `nll ${result.score.nll} vs ${refJson.text_nll}`);
  const out = join(ROOT, "target-browser");
  mkdirSync(out, { recursive: true });
  await page.screenshot({ path: join(out, "logits.png") });
  // Reported in the README's performance section.
  process.stdout.write(`# browser: max |Δlogit| ${maxErr.toExponential(2)}, page-to-result ${wall} ms, load ${result.ms.load.toFixed(0)} ms, logits ${result.ms.logits.toFixed(0)} ms, score ${result.ms.score.toFixed(0)} ms\n`);
  await page.close();
});

test("a model URL that 404s gives a clear message on the page", async () => {
  const { page, state, status } = await runPage({ model: "/tests/fixtures/no-such-model/", tokens: "1,2" });
  assert.equal(state, "error");
  assert.match(status, /config\.json.*404/);
  await page.close();
});
