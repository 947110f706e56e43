// End-to-end tests of the lab page in headless Chromium (WebGPU on SwiftShader): a sharded
// fixture model streams through the local server with per-file progress, trains with loss going
// down, is evaluated (a point lands on the learning-vs-forgetting scatter), an adapter
// downloads and parses; full fine-tuning matches the native CPU backend step for step; a data
// download cut off midway and bad data give messages on the page and the worker can start
// another run; a full run pauses and
// resumes without changing its numbers, then shows its spectrum, exports merged weights that
// parse, and passes an automated accessibility audit.
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync } from "node:fs";
import { execFileSync } from "node:child_process";
import { join } from "node:path";
import { tmpdir } from "node:os";
import { useBrowser, settle, json, ROOT, SHOTS } from "./harness.mjs";

const lab = useBrowser();

test("lab: stream a sharded model, train LoRA, evaluate along the way (a trajectory on the plane), download the adapter", async () => {
  const t0 = Date.now();
  const { page, console } = await lab.open({
    model: "/tests/fixtures/llama-gqa/", "data-preset": "math", "math-train": "16", "math-test": "2",
    "seq-len": "96", method: "lora", rank: "4", lr: "0.01", steps: "6", batch: "4", warmup: "0",
    schedule: "constant", "eval-limit": "3", "eval-every": "3", generate: "0", autostart: "1",
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
  // Evaluated at steps 3 and 6: a two-point trajectory tagged by step.
  assert.deepEqual(scatter.runs[0].trajectory.map((p) => p[2]), [3, 6]);
  assert.equal(await page.locator("#runs tbody tr").count(), 2);
  assert.ok((await page.locator("#scatter-table tbody tr").count()) >= 3, "the plot's numbers are in its table");
  // The command box gives the same run natively, from the same spec.
  const cli = await page.$eval("#cli", (e) => e.textContent);
  assert.match(cli, /tunelab make-data math --train 16 --test 2/);
  assert.match(cli, /tunelab train \/tests\/fixtures\/llama-gqa\/ --data data\/math-page\/train.jsonl --spec run.json/);
  assert.equal(JSON.parse(/<<'EOF'\n([\s\S]*?)\nEOF/.exec(cli)[1]).rank, 4);
  // Another target is another pair: no base point and no runs there until evaluated.
  await page.selectOption("#data-preset", "code");
  const code = await json(page, "#scatter", "json");
  assert.equal(code.base, null);
  assert.equal(code.runs.length, 0);
  await page.selectOption("#data-preset", "math");
  assert.ok((await json(page, "#scatter", "json")).base);
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

let native;
function nativeLosses() {
  native ??= runNative();
  return native;
}

function runNative() {
  const meta = JSON.parse(execFileSync("cargo", ["metadata", "--format-version", "1", "--no-deps"], { cwd: ROOT }));
  const bin = process.env.TUNELAB_BIN ?? join(meta.target_directory, "release/tunelab");
  assert.ok(existsSync(bin), `native binary missing (${bin}): run cargo build --release first`);
  const out = mkdtempSync(join(tmpdir(), "tunelab-native-"));
  const stdout = execFileSync(bin, [
    "--device", "cpu", "--json", "train", join(ROOT, "tests/fixtures/gpt2"), "--data", join(ROOT, "tests/fixtures/data/tiny.txt"),
    "--method", "full", "--lr", "1e-3", "--max-steps", "4", "--batch-size", "4", "--seq-len", "32",
    "--schedule", "constant", "--warmup", "0", "--log-every", "1", "--out", out,
    // The page holds out this share of own data (its default): the same examples are left out.
    "--holdout", "0.05",
  ], { encoding: "utf8" });
  return stdout.split("\n").filter((l) => l.startsWith('{"event":"step"')).map((l) => JSON.parse(l).loss);
}

test("runs are kept across a reload, export and import as one file, and the settings travel in a link; the GPU panel names the adapter's limits", async () => {
  const settings = {
    model: "/tests/fixtures/gpt2/", "data-preset": "url", data: "/tests/fixtures/data/tiny.txt", regime: "cpt",
    "seq-len": "32", method: "lora", rank: "4", lr: "0.01", steps: "2", batch: "2", warmup: "0",
  };
  const { page, console } = await lab.open({ ...settings, evaluate: "0", generate: "0", autostart: "1" });
  const { state, status } = await settle(page);
  assert.equal(state, "done", `${status}\n${console.join("\n")}`);
  // A link reproduces the form.
  await page.click("#share");
  const link = await page.$eval("#share-link", (e) => e.textContent);
  const shared = await lab.browser.newPage();
  await shared.goto(link);
  for (const [id, value] of Object.entries(settings)) {
    assert.equal(await shared.$eval(`#${id}`, (e) => e.value), value, `${id} from the link`);
  }
  await shared.close();
  // (Not evaluated: no base row, one run row.) The run survives a reload: the page opened again
  // from the link (no autostart) keeps its localStorage.
  const again = page;
  await again.goto(link);
  await again.waitForFunction(() => document.querySelectorAll("#runs tbody tr").length === 1);
  assert.match(await again.$eval("#runs tbody tr:last-child", (e) => e.textContent), /LoRA r4.*done/);
  const [exported] = await Promise.all([again.waitForEvent("download"), again.click("#runs-export")]);
  const runsFile = join(mkdtempSync(join(tmpdir(), "tunelab-runs-")), "tunelab-runs.json");
  await exported.saveAs(runsFile);
  const table = await again.$$eval("#runs tbody tr", (rows) => rows.map((r) => r.textContent));
  // A fresh page (empty storage) imports the file and shows the same table.
  const fresh = await lab.open({ ...settings });
  await fresh.page.setInputFiles("#runs-import", runsFile);
  await fresh.page.waitForFunction(() => document.querySelectorAll("#runs tbody tr").length === 1);
  assert.deepEqual(await fresh.page.$$eval("#runs tbody tr", (rows) => rows.map((r) => r.textContent)), table);
  // The GPU panel names the adapter's limits.
  await fresh.page.click("#gpu-box summary");
  await fresh.page.waitForFunction(() => document.getElementById("gpu-info").dataset.json);
  const gpu = await json(fresh.page, "#gpu-info", "json");
  assert.ok(gpu.limits.maxStorageBufferBindingSize > 0, JSON.stringify(gpu));
  await fresh.page.close();
  await page.close();
});

test("browser training matches the native CPU backend step for step (full fine-tuning, fixed seed)", async () => {
  const native = nativeLosses();
  assert.equal(native.length, 4);
  const { page, console } = await lab.open({
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

test("pause and resume a full fine-tuning run (same losses as the native backend), then its spectrum panel, merged weights and an accessibility audit", async () => {
  const native = nativeLosses();
  const { page, console } = await lab.open({
    model: "/tests/fixtures/gpt2/", "data-preset": "url", data: "/tests/fixtures/data/tiny.txt", regime: "cpt",
    "seq-len": "32", method: "full", lr: "1e-3", steps: "12", batch: "4", warmup: "0", schedule: "constant",
    evaluate: "0", generate: "0", autostart: "1",
  });
  await page.waitForFunction(() => document.getElementById("losses").textContent.startsWith("step "), null, { timeout: 600_000 });
  await page.click("#pause");
  const paused = await settle(page, ["paused", "error"]);
  assert.equal(paused.state, "paused", `${paused.status}\n${console.join("\n")}`);
  const at = Number(/paused at step (\d+)/.exec(paused.status)[1]);
  assert.ok(at >= 1 && at < 12, paused.status);
  // Nothing trains while paused.
  const shown = await page.$eval("#losses", (e) => e.textContent);
  await page.waitForTimeout(3000);
  assert.equal(await page.$eval("#losses", (e) => e.textContent), shown);
  assert.equal(await page.$eval("#resume", (e) => e.disabled), false);
  await page.click("#resume");
  const { state, status } = await settle(page);
  assert.equal(state, "done", `${status}\n${console.join("\n")}`);
  const steps = (await json(page, "#losses", "json")).steps;
  assert.deepEqual(steps.map((s) => s.step), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
  // At a constant learning rate the first 4 steps are the native 4-step run's.
  const worst = Math.max(...native.map((l, i) => Math.abs(l - steps[i].loss)));
  assert.ok(worst <= 1e-3, `paused at ${at}: native ${native} vs browser ${steps.slice(0, 4).map((s) => s.loss)}`);

  await page.click("#spectrum-btn");
  await page.waitForFunction(() => document.getElementById("status").textContent.startsWith("analysing"));
  const spectrum = await settle(page);
  assert.equal(spectrum.state, "done", `${spectrum.status}\n${console.join("\n")}`);
  const ranks = await page.$$eval("#spectrum-table tbody tr", (rows) => rows.map((r) => [...r.cells].map((c) => c.textContent)));
  assert.ok(ranks.length >= 2 && ranks.every((r) => r.slice(1).every((v) => Number(v) >= 1)), JSON.stringify(ranks));
  assert.match(await page.$eval("#spectrum-summary", (e) => e.textContent), /rank for 90% of ΔW's energy: attention [\d.]+ \(\d+% of full rank\), MLP [\d.]+/);

  await page.click("#export-merged");
  await page.waitForFunction(() => JSON.parse(document.getElementById("download").dataset.files ?? "{}").merged, null, { timeout: 120_000 });
  const merged = (await json(page, "#download", "files")).merged;
  assert.equal(JSON.parse(merged["config.json"]).model_type, "gpt2");
  const [download] = await Promise.all([page.waitForEvent("download"), page.click("#download a >> text=merged/model.safetensors")]);
  const path = join(mkdtempSync(join(tmpdir(), "tunelab-dl-")), "model.safetensors");
  await download.saveAs(path);
  const { readSafetensors } = await import("./safetensors.mjs");
  const got = readSafetensors(path);
  const base = readSafetensors(join(ROOT, "tests/fixtures/gpt2/model.safetensors"));
  assert.equal(Object.keys(base).length, 28);
  let changed = 0;
  for (const [name, t] of Object.entries(base)) {
    assert.deepEqual(got[name]?.shape, t.shape, `${name} in the merged download`);
    const moved = got[name].data.some((v, i) => v !== t.data[i]);
    // Full fine-tuning trains all but the embeddings (the page's default, as the paper's).
    if (/\.(wte|wpe)\./.test(name)) assert.ok(!moved, `${name} is frozen but changed`);
    else if (moved) changed++;
  }
  assert.ok(changed >= 20, `only ${changed} trained tensors differ from the base model's`);
  await page.screenshot({ path: join(SHOTS, "lab-full.png"), fullPage: true });

  // Automated accessibility audit (axe-core, WCAG 2.1 A/AA rules) of the page in this state.
  await page.addScriptTag({ path: join(ROOT, "node_modules/axe-core/axe.min.js") });
  const audit = await page.evaluate(() => window.axe.run(document, { runOnly: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"] }));
  const problems = audit.violations.map((v) => `${v.id} (${v.impact}): ${v.help} — ${v.nodes.map((n) => n.target.join(" ")).join(", ")}`);
  assert.deepEqual(problems, [], problems.join("\n"));
  process.stdout.write(`# browser: paused at step ${at} and resumed, max |Δloss| vs native ${worst.toExponential(2)}; ${changed} tensors changed in the merged download; axe: ${audit.passes.length} rules pass, 0 violations\n`);
  await page.close();
});

test("own data (a URL) has a learning metric: the perplexity of a held-out share, for the base model and the run", async () => {
  const { page, console } = await lab.open({
    model: "/tests/fixtures/gpt2/", "data-preset": "url", data: "/tests/fixtures/data/tiny.txt", regime: "cpt",
    "seq-len": "32", method: "lora", rank: "4", lr: "0.01", steps: "2", batch: "2", warmup: "0", schedule: "constant",
    "eval-limit": "3", holdout: "0.2", generate: "0", autostart: "1",
  });
  const { state, status } = await settle(page);
  assert.equal(state, "done", `${status}\n${console.join("\n")}`);
  const scatter = await json(page, "#scatter", "json");
  assert.equal(scatter.key, "heldout/perplexity");
  for (const m of [scatter.base, scatter.runs[0].metrics]) {
    assert.ok(Number.isFinite(m["heldout/perplexity"]) && m["heldout/perplexity"] > 1, JSON.stringify(m));
    assert.ok(Math.abs(Math.log(m["heldout/perplexity"]) - m["heldout/loss"]) < 1e-6);
  }
  const learning = await page.$eval("#runs tbody tr:last-child td:nth-child(6)", (e) => e.textContent);
  assert.ok(Number.isFinite(Number(learning)), `learning column: ${learning}`);
  await page.close();
});

test("a dropped or bad training data download gives a message on the page, and the worker can run again", async () => {
  lab.http.drop("/tests/fixtures/data/tiny.txt");
  const dropped = await lab.open({
    model: "/tests/fixtures/gpt2/", "data-preset": "url", data: "/tests/fixtures/data/tiny.txt", regime: "cpt",
    "seq-len": "32", method: "lora", steps: "2", batch: "2", evaluate: "0", generate: "0", autostart: "1",
  });
  const cut = await settle(dropped.page);
  assert.equal(cut.state, "error", cut.status);
  assert.match(cut.status, /training data .*tiny\.txt: download stopped after \d+ of \d+ bytes/);
  process.stdout.write(`# ${cut.status}\n`);
  await dropped.page.close();
  const { page } = await lab.open({
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

test("a GPU device destroyed mid-run ends the run with a device error, and the next run loads the model on a fresh device", async () => {
  const { page, console } = await lab.open({
    model: "/tests/fixtures/gpt2/", "data-preset": "url", data: "/tests/fixtures/data/tiny.txt", regime: "cpt",
    "seq-len": "32", method: "lora", steps: "100000", batch: "2", evaluate: "0", generate: "0",
  });
  // Keep every GPUDevice the worker requests, so the test can destroy the one in use.
  const deadline = Date.now() + 30_000;
  while (page.workers().length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  const [worker] = page.workers();
  assert.ok(worker, "the engine worker did not start");
  await worker.evaluate(() => {
    self.devices = [];
    const request = GPUAdapter.prototype.requestDevice;
    GPUAdapter.prototype.requestDevice = async function (...args) {
      const device = await request.apply(this, args);
      self.devices.push(device);
      return device;
    };
  });
  await page.click("#start");
  await page.waitForFunction(() => /^step ([3-9]|\d\d+)\//.test(document.getElementById("losses").textContent), null, { timeout: 600_000 });
  await worker.evaluate(() => self.devices.at(-1).destroy());
  const lost = await settle(page);
  assert.equal(lost.state, "error", `${lost.status}\n${console.join("\n")}`);
  assert.match(lost.status, /the device failed during training step \d+ \(batch 2 × 32 tokens/);
  assert.match(lost.status, /GPU device was lost/);
  assert.equal(await page.$eval("#runs tbody tr:last-child", (e) => e.textContent.includes("failed")), true);
  // The same page and worker: a short run trains on a new device, its loss going down.
  await page.fill("#steps", "4");
  await page.click("#start");
  const again = await settle(page);
  assert.equal(again.state, "done", `${again.status}\n${console.join("\n")}`);
  const losses = (await json(page, "#losses", "json")).steps.map((s) => s.loss);
  assert.equal(losses.length, 4);
  assert.ok(losses.every(Number.isFinite), `${losses}`);
  assert.equal(await worker.evaluate(() => self.devices.length), 2, "a fresh GPUDevice was requested");
  process.stdout.write(`# device lost: ${lost.status}\n`);
  await page.close();
});

test("overlapping requests each resolve with their own reply, an error rejects only its request, and errors name the form's labels", async () => {
  const { page, console } = await lab.open({
    model: "/tests/fixtures/gpt2/", "data-preset": "url", data: "/tests/fixtures/data/tiny.txt", regime: "cpt",
    "seq-len": "32", method: "lora", lr: "-1", steps: "2", batch: "2", evaluate: "0", generate: "0",
  });
  const r = await page.evaluate(async (model) => {
    const { request } = window.lab;
    await request("load", { model });
    // Sent together: the worker answers in order, each reply carrying its request's id.
    const short = request("generate", { prompt: "The", maxNewTokens: 3 });
    const failing = request("export", { kind: "adapter" }).then(() => "resolved", (e) => e.message);
    const long = request("generate", { prompt: "Once upon a time", maxNewTokens: 6 });
    const together = { short: (await short).text, failing: await failing, long: (await long).text };
    // The same requests one at a time.
    const alone = {
      long: (await request("generate", { prompt: "Once upon a time", maxNewTokens: 6 })).text,
      short: (await request("generate", { prompt: "The", maxNewTokens: 3 })).text,
    };
    const invalid = await request("validate", { spec: { lr: -1 } }).then(() => null, (e) => ({ message: e.message, field: e.field }));
    return { together, alone, invalid };
  }, new URL("/tests/fixtures/gpt2/", page.url()).href);
  assert.equal(r.together.short, r.alone.short, `${JSON.stringify(r)}\n${console.join("\n")}`);
  assert.equal(r.together.long, r.alone.long, JSON.stringify(r));
  assert.match(r.together.failing, /no run to export/);
  assert.deepEqual(r.invalid, { message: "`lr`: must be positive, got -1", field: "lr" });
  // On the page the engine's field name reads as the form's label.
  await page.click("#start");
  const { state, status } = await settle(page);
  assert.equal(state, "error");
  assert.equal(status, "error: Learning rate: must be positive, got -1");
  process.stdout.write(`# protocol: 3 overlapping requests answered by id; ${status}\n`);
  await page.close();
});
