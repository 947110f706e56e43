// End-to-end tests of the lab page in headless Chromium (WebGPU on SwiftShader): a sharded
// fixture model streams through the local server with per-file progress, trains with loss going
// down, is evaluated (a point lands on the learning-vs-forgetting scatter), an adapter
// downloads and parses; full fine-tuning matches the native CPU backend step for step; bad data
// gives a message on the page and the worker can start another run.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdirSync, mkdtempSync } from "node:fs";
import { execFileSync } from "node:child_process";
import { join, dirname } from "node:path";
import { tmpdir } from "node:os";
import { fileURLToPath } from "node:url";
import { launch } from "./chromium.mjs";
import { serve } from "./server.mjs";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "../..");
const SHOTS = join(ROOT, "target-browser");
let http, browser;

before(async () => {
  assert.ok(existsSync(join(ROOT, "www/pkg/tunelab_bg.wasm")), "build the wasm bundle first: scripts/build-web.sh");
  mkdirSync(SHOTS, { recursive: true });
  http = await serve(ROOT);
  browser = await launch();
});

after(async () => {
  await browser?.close();
  http?.server.close();
});

async function open(query) {
  const page = await browser.newPage({ viewport: { width: 1366, height: 900 } });
  const console = [];
  page.on("console", (m) => console.push(`${m.type()}: ${m.text()}`));
  await page.goto(`${http.base}/www/index.html?${new URLSearchParams(query)}`);
  return { page, console };
}

async function settle(page, states = ["done", "error"]) {
  await page.waitForFunction((s) => s.includes(document.getElementById("status").dataset.state), states, { timeout: 900_000 });
  return {
    state: await page.$eval("#status", (e) => e.dataset.state),
    status: await page.$eval("#status", (e) => e.textContent),
  };
}

const json = async (page, sel, attr) => JSON.parse(await page.$eval(sel, (e, a) => e.dataset[a], attr));

test("lab: stream a sharded model, train LoRA, evaluate, scatter point, download the adapter", async () => {
  const t0 = Date.now();
  const { page, console } = await open({
    model: "/tests/fixtures/llama-gqa/", "data-preset": "math", "math-train": "16", "math-test": "2",
    "seq-len": "96", method: "lora", rank: "4", lr: "0.01", steps: "6", batch: "4", warmup: "0",
    schedule: "constant", "eval-limit": "3", generate: "0", autostart: "1",
  });
  const { state, status } = await settle(page);
  assert.equal(state, "done", `${status}\n${console.join("\n")}`);
  // One progress bar per streamed file: 9 shards + index + config + tokenizer files.
  const files = await page.$$eval("#files li", (l) => l.map((e) => e.textContent));
  assert.ok(files.filter((f) => f.includes("safetensors")).length >= 9, files.join("\n"));
  const run = await json(page, "#losses", "json");
  const losses = run.steps.map((s) => s.loss);
  assert.equal(losses.length, 6);
  assert.ok(losses.at(-1) < losses[0], `loss did not go down: ${losses}`);
  const scatter = await json(page, "#scatter", "json");
  assert.equal(scatter.runs.length, 1);
  for (const m of [scatter.base, scatter.runs[0].metrics]) {
    for (const k of ["forgetting/score", "source/perplexity", "math/exact_match_flexible", "math/answer_loss"]) {
      assert.ok(Number.isFinite(m[k]), `${k} missing: ${JSON.stringify(m)}`);
    }
  }
  assert.equal(await page.locator("#runs tbody tr").count(), 2);
  await page.click("#export-adapter");
  await page.waitForFunction(() => document.querySelectorAll("#download a").length >= 2, null, { timeout: 120_000 });
  const dl = await json(page, "#download", "files");
  const cfg = JSON.parse(dl.adapter["adapter_config.json"]);
  assert.equal(cfg.peft_type, "LORA");
  assert.equal(cfg.r, 4);
  assert.ok(dl.adapter["adapter_model.safetensors"] > 1000);
  // The real download carries the same bytes as a parseable safetensors file.
  const [download] = await Promise.all([page.waitForEvent("download"), page.click("#download a >> text=adapter_model.safetensors")]);
  const path = join(mkdtempSync(join(tmpdir(), "tunelab-dl-")), "adapter_model.safetensors");
  await download.saveAs(path);
  const { readSafetensors } = await import("./safetensors.mjs");
  const tensors = readSafetensors(path);
  assert.ok(Object.keys(tensors).some((k) => k.endsWith("lora_A.weight")), Object.keys(tensors).join(","));
  await page.screenshot({ path: join(SHOTS, "lab.png"), fullPage: true });
  process.stdout.write(`# browser lab: 6 LoRA steps + 2 evaluations in ${((Date.now() - t0) / 1000).toFixed(1)} s (training ${(run.ms / 1000).toFixed(1)} s), loss ${losses[0].toFixed(4)} -> ${losses.at(-1).toFixed(4)}\n`);
  await page.close();
});

function nativeLosses() {
  const meta = JSON.parse(execFileSync("cargo", ["metadata", "--format-version", "1", "--no-deps"], { cwd: ROOT }));
  const bin = process.env.TUNELAB_BIN ?? join(meta.target_directory, "release/tunelab");
  assert.ok(existsSync(bin), `native binary missing (${bin}): run cargo build --release first`);
  const out = mkdtempSync(join(tmpdir(), "tunelab-native-"));
  const stdout = execFileSync(bin, [
    "--device", "cpu", "--json", "train", join(ROOT, "tests/fixtures/gpt2"), "--data", join(ROOT, "tests/fixtures/data/tiny.txt"),
    "--method", "full", "--lr", "1e-3", "--max-steps", "4", "--batch-size", "4", "--seq-len", "32",
    "--schedule", "constant", "--warmup", "0", "--log-every", "1", "--out", out,
  ], { encoding: "utf8" });
  return stdout.split("\n").filter((l) => l.startsWith('{"event":"step"')).map((l) => JSON.parse(l).loss);
}

test("browser training matches the native CPU backend step for step (full fine-tuning, fixed seed)", async () => {
  const native = nativeLosses();
  assert.equal(native.length, 4);
  const { page, console } = await open({
    model: "/tests/fixtures/gpt2/", "data-preset": "url", data: "/tests/fixtures/data/tiny.txt", regime: "cpt",
    "seq-len": "32", method: "full", lr: "1e-3", steps: "4", batch: "4", warmup: "0", schedule: "constant",
    "eval-limit": "2", generate: "0", autostart: "1",
  });
  const { state, status } = await settle(page);
  assert.equal(state, "done", `${status}\n${console.join("\n")}`);
  const browserLosses = (await json(page, "#losses", "json")).steps.map((s) => s.loss);
  const worst = Math.max(...native.map((l, i) => Math.abs(l - browserLosses[i])));
  assert.ok(worst <= 1e-3, `native ${native} vs browser ${browserLosses}`);
  process.stdout.write(`# browser vs native CPU, 4 full fine-tuning steps: max |Δloss| ${worst.toExponential(2)}\n`);
  await page.close();
});

test("bad training data gives a message on the page, and the worker can run again", async () => {
  const { page } = await open({
    model: "/tests/fixtures/gpt2/", "data-preset": "url", data: "/tests/fixtures/data/bad.jsonl", regime: "ift",
    "seq-len": "32", method: "lora", steps: "2", batch: "2", "eval-limit": "1", generate: "0", autostart: "1",
  });
  const { state, status } = await settle(page);
  assert.equal(state, "error");
  assert.match(status, /bad\.jsonl.*line \d+/);
  // Same page, good data but a batch no GPU buffer can hold: the limit is named, with the excess.
  await page.fill("#data", "/tests/fixtures/data/tiny.txt");
  await page.selectOption("#regime", "cpt");
  await page.fill("#batch", "2000000");
  await page.click("#start");
  const tooBig = await settle(page);
  assert.equal(tooBig.state, "error");
  assert.match(tooBig.status, /MiB over this adapter's max_storage_buffer_binding_size/);
  await page.fill("#batch", "2");
  // Same page, good data: the worker survived the failures.
  await page.fill("#data", "/tests/fixtures/data/tiny.txt");
  await page.selectOption("#regime", "cpt");
  await page.click("#start");
  const again = await settle(page);
  assert.equal(again.state, "done", again.status);
  await page.close();
});
