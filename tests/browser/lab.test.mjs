// End-to-end tests of the lab page in headless Chromium (WebGPU on SwiftShader): a sharded
// fixture model streams through the local server with per-file progress, trains with loss going
// down, is evaluated (a point lands on the learning-vs-forgetting scatter), an adapter
// downloads and parses; full fine-tuning matches the native CPU backend step for step; a data
// download cut off midway and bad data give messages on the page and the worker can start
// another run; a full run pauses and
// resumes without changing its numbers, then shows its spectrum, exports merged weights that
// parse, and passes an automated accessibility audit; a paused run's checkpoint resumes on a
// fresh page; generation streams (chat template, seeded sampling) as the native CLI's; a queue
// of runs shares one loaded model; the page fits a phone and a tablet; a destroyed GPU device
// ends a run cleanly and the next run gets a new one; the engine times each hot-path op with
// tunelab's WGSL kernels and with burn's.
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { execFileSync } from "node:child_process";
import { join } from "node:path";
import { tmpdir } from "node:os";
import { Readable } from "node:stream";
import { createGzip, gzipSync } from "node:zlib";
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
  // Hovering a point reads it out: the run, both metrics, the step.
  await page.locator("#scatter").scrollIntoViewIfNeeded();
  const last = await page.$eval("#scatter", (c) => {
    const r = c.getBoundingClientRect();
    const p = c.readoutPoints.at(-1);
    return { x: r.left + p.px, y: r.top + p.py };
  });
  await page.mouse.move(last.x, last.y);
  const readout = page.locator("#scatter + .readout");
  assert.match(await readout.textContent(), /^LoRA r4 .*: math\/answer_loss [\d.e+-]+, forgetting score .* \(step 6\)$/);
  assert.equal(await readout.isVisible(), true);
  // So do the arrow keys, with the chart focused: the first point is the base model's.
  await page.focus("#scatter");
  await page.keyboard.press("ArrowRight");
  assert.match(await readout.textContent(), /^base/);
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
  // The run's adapter was kept (IndexedDB) and downloads after the reload, as PEFT files.
  await again.click("#runs tbody tr:last-child td:nth-child(10) button");
  await again.waitForFunction(() => JSON.parse(document.getElementById("download").dataset.files ?? "{}").adapter);
  const kept = (await json(again, "#download", "files")).adapter;
  assert.equal(JSON.parse(kept["adapter_config.json"]).r, 4);
  assert.ok(kept["adapter_model.safetensors"] > 0, JSON.stringify(kept));
  const [exported] = await Promise.all([again.waitForEvent("download"), again.click("#runs-export")]);
  const runsFile = join(mkdtempSync(join(tmpdir(), "tunelab-runs-")), "tunelab-runs.json");
  await exported.saveAs(runsFile);
  const table = await again.$$eval("#runs tbody tr", (rows) => rows.map((r) => r.textContent));
  // A fresh page (empty storage) imports the file and shows the same table.
  const fresh = await lab.open({ ...settings });
  await fresh.page.setInputFiles("#runs-import", runsFile);
  await fresh.page.waitForFunction(() => document.querySelectorAll("#runs tbody tr").length === 1);
  assert.deepEqual(await fresh.page.$$eval("#runs tbody tr", (rows) => rows.map((r) => r.textContent)), table);
  // An imported run's adapter stayed in the browser that trained it.
  await fresh.page.click("#runs tbody tr:last-child td:nth-child(10) button");
  await fresh.page.waitForFunction(() => /does not hold that run's adapter/.test(document.getElementById("status").textContent));
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
  // The checkpoint (to resume natively): the run's progress, settings and optimizer state.
  await page.click("#export-checkpoint");
  await page.waitForFunction(() => JSON.parse(document.getElementById("download").dataset.files ?? "{}").checkpoint, null, { timeout: 120_000 });
  const checkpoint = (await json(page, "#download", "files")).checkpoint;
  const trainerState = JSON.parse(checkpoint["trainer_state.json"]);
  assert.equal(trainerState.progress.step, 12);
  assert.deepEqual(trainerState.progress.losses.map(([, l]) => l), steps.map((s) => s.loss));
  assert.equal(trainerState.config.max_steps, 12);
  assert.ok(checkpoint["optimizer.safetensors"] > 0 && checkpoint["model.safetensors"] > 0, JSON.stringify(checkpoint));
  await page.screenshot({ path: join(SHOTS, "lab-full.png"), fullPage: true });

  // Automated accessibility audit (axe-core, WCAG 2.1 A/AA rules) of the page in this state.
  await page.addScriptTag({ path: join(ROOT, "node_modules/axe-core/axe.min.js") });
  const audit = await page.evaluate(() => window.axe.run(document, { runOnly: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"] }));
  const problems = audit.violations.map((v) => `${v.id} (${v.impact}): ${v.help} — ${v.nodes.map((n) => n.target.join(" ")).join(", ")}`);
  assert.deepEqual(problems, [], problems.join("\n"));
  process.stdout.write(`# browser: paused at step ${at} and resumed, max |Δloss| vs native ${worst.toExponential(2)}; ${changed} tensors changed in the merged download; axe: ${audit.passes.length} rules pass, 0 violations\n`);
  await page.close();
});

test("a paused run's checkpoint, downloaded and uploaded to a fresh page, resumes to the losses of the run that never stopped", async () => {
  const settings = {
    model: "/tests/fixtures/gpt2/", "data-preset": "url", data: "/tests/fixtures/data/tiny.txt", regime: "cpt",
    "seq-len": "32", method: "full", lr: "1e-3", steps: "8", batch: "4", warmup: "0", schedule: "cosine",
    evaluate: "0", generate: "0",
  };
  const lossesOf = async (page) => (await json(page, "#losses", "json")).steps.map((s) => [s.step, s.loss]);
  const whole = await lab.open({ ...settings, autostart: "1" });
  assert.equal((await settle(whole.page)).state, "done");
  const uninterrupted = await lossesOf(whole.page);
  await whole.page.close();

  const first = await lab.open({ ...settings, autostart: "1" });
  await first.page.waitForFunction(() => /^step [2-6]\//.test(document.getElementById("losses").textContent), null, { timeout: 600_000 });
  await first.page.click("#pause");
  const paused = await settle(first.page, ["paused", "error"]);
  assert.equal(paused.state, "paused", `${paused.status}\n${first.console.join("\n")}`);
  const at = Number(/paused at step (\d+)/.exec(paused.status)[1]);
  await first.page.click("#export-checkpoint");
  await first.page.waitForFunction(() => JSON.parse(document.getElementById("download").dataset.files ?? "{}").checkpoint, null, { timeout: 120_000 });
  const dir = mkdtempSync(join(tmpdir(), "tunelab-checkpoint-"));
  const paths = [];
  for (const link of await first.page.$$("#download a")) {
    const [download] = await Promise.all([first.page.waitForEvent("download"), link.click()]);
    paths.push(join(dir, download.suggestedFilename()));
    await download.saveAs(paths.at(-1));
  }
  assert.ok(paths.some((p) => p.endsWith("trainer_state.json")) && paths.some((p) => p.endsWith("optimizer.safetensors")), paths.join(", "));
  await first.page.close();

  const second = await lab.open(settings);
  await second.page.setInputFiles("#resume-files", paths);
  await second.page.click("#resume-from");
  const { state, status } = await settle(second.page);
  assert.equal(state, "done", `${status}\n${second.console.join("\n")}`);
  const resumed = await lossesOf(second.page);
  assert.deepEqual(resumed.map(([step]) => step), uninterrupted.slice(at).map(([step]) => step));
  const worst = Math.max(...resumed.map(([, l], i) => Math.abs(l - uninterrupted[at + i][1])));
  assert.ok(worst <= 1e-5, `resumed at ${at}: ${JSON.stringify(resumed)} vs ${JSON.stringify(uninterrupted)}`);
  assert.match(await second.page.$eval("#runs tbody tr:last-child", (e) => e.textContent), new RegExp(`resumed at step ${at}: full lr 0\\.001`));
  // A checkpoint without its optimizer state is refused, naming the missing file.
  const broken = await lab.open(settings);
  const state2 = paths.find((p) => p.endsWith("trainer_state.json"));
  await broken.page.setInputFiles("#resume-files", [state2]);
  await broken.page.click("#resume-from");
  const refused = await settle(broken.page);
  assert.equal(refused.state, "error");
  assert.match(refused.status, /optimizer\.safetensors: missing/);
  process.stdout.write(`# resumed from an uploaded checkpoint at step ${at}: max |Δloss| ${worst.toExponential(2)} vs the uninterrupted run\n`);
  await broken.page.close();
  await second.page.close();
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
  const learning = await page.$eval("#runs tbody tr:last-child td:nth-child(7)", (e) => e.textContent);
  assert.ok(Number.isFinite(Number(learning)), `learning column: ${learning}`);
  await page.close();
});

test("a dropped training data download resumes; one that cannot resume, or bad data, gives a message on the page, and the worker can run again", async () => {
  const data = (path) => ({
    model: "/tests/fixtures/gpt2/", "data-preset": "url", data: path, regime: "cpt",
    "seq-len": "32", method: "lora", steps: "2", batch: "2", evaluate: "0", generate: "0", autostart: "1",
  });
  lab.http.drop("/tests/fixtures/data/tiny.txt");
  const resumed = await lab.open(data("/tests/fixtures/data/tiny.txt"));
  const ok = await settle(resumed.page);
  assert.equal(ok.state, "done", ok.status);
  assert.ok(lab.http.requests.some((r) => r.path === "/tests/fixtures/data/tiny.txt" && r.status === 206), "resumed with a Range request");
  await resumed.page.close();
  lab.http.drop("/norange/tests/fixtures/data/tiny.txt");
  const dropped = await lab.open(data("/norange/tests/fixtures/data/tiny.txt"));
  const cut = await settle(dropped.page);
  assert.equal(cut.state, "error", cut.status);
  assert.match(cut.status, /tiny\.txt: download from .* stopped after \d+ of \d+ bytes: .*cannot resume/);
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

// Deterministic English-like text, `mb` megabytes of it in 1 MB chunks: lines of words,
// paragraphs between blank lines.
function* words(mb) {
  const vocab = "the of and to in is was that for on with as by at from his her which an were are this be had not but they have one their all".split(" ");
  let x = 12345;
  for (let chunk = 0; chunk < mb; chunk++) {
    let out = "";
    while (out.length < 1 << 20) {
      x = (x * 1103515245 + 12345) >>> 0;
      out += vocab[x % vocab.length] + ((x >>> 8) % 13 === 0 ? "\n" : (x >>> 12) % 331 === 0 ? "\n\n" : " ");
    }
    yield Buffer.from(out);
  }
}

test("a large gzipped data file streams into the tokenizer as it downloads: the engine's memory grows by the token ids, never by the file", async () => {
  // TUNELAB_BIG_DATA_MB=500 makes this the 500 MB check of the README (minutes on SwiftShader).
  const mb = Number(process.env.TUNELAB_BIG_DATA_MB ?? 24);
  lab.http.routes["/big/train.txt.gz"] = (req, res) => {
    res.writeHead(200, { "content-type": "application/gzip" });
    Readable.from(words(mb)).pipe(createGzip({ level: 1 })).pipe(res);
  };
  const { page, console } = await lab.open({
    model: "/tests/fixtures/gpt2/", "data-preset": "url", data: "/big/train.txt.gz", regime: "cpt",
    "seq-len": "64", method: "lora", rank: "4", steps: "2", batch: "2", evaluate: "0", generate: "0", autostart: "1",
  });
  const { state, status } = await settle(page, ["done", "error"], 60 * 60_000);
  assert.equal(state, "done", `${status}\n${console.join("\n")}`);
  const summary = await json(page, "#data-progress-label", "json");
  const bytes = mb << 20;
  const tokens = summary.examples * 64;
  const growth = summary.heap.after - summary.heap.before;
  // Each example costs its ids (4 bytes a token), an allocator header and its record in the
  // examples vector, which grows by doubling (up to 2x its length, plus the old buffer while it
  // moves): ≤ 16 + 3 × 24 bytes per example beyond the ids. Streaming buffers get a quarter of the
  // file; holding the text whole would add all its `bytes` on top.
  assert.ok(tokens > bytes / 8, JSON.stringify(summary));
  const bound = tokens * 4 + summary.examples * (16 + 3 * 24) + bytes / 4;
  assert.ok(growth < bound, `wasm memory grew ${growth} bytes (bound ${bound}) for ${tokens} tokens of a ${bytes}-byte file`);
  process.stdout.write(`# ${mb} MB of text (gzipped on the wire): ${summary.examples} examples, wasm memory ${(summary.heap.before / 1e6).toFixed(0)} → ${(summary.heap.after / 1e6).toFixed(0)} MB; ${await page.$eval("#data-progress-label", (e) => e.textContent)}\n`);
  // A file picked on this computer streams from disk the same way (gzipped here).
  const picked = join(mkdtempSync(join(tmpdir(), "tunelab-data-")), "tiny.txt.gz");
  writeFileSync(picked, gzipSync(readFileSync(join(ROOT, "tests/fixtures/data/tiny.txt"))));
  await page.selectOption("#data-preset", "file");
  await page.setInputFiles("#data-file", picked);
  await page.click("#start");
  const again = await settle(page);
  assert.equal(again.state, "done", again.status);
  const fromFile = await json(page, "#data-progress-label", "json");
  assert.ok(fromFile.examples > 0 && fromFile.regime === "cpt", JSON.stringify(fromFile));
  assert.match(await page.$eval("#data-progress-label", (e) => e.textContent), /^tiny\.txt\.gz: /);
  await page.close();
});

// `tunelab generate` on the CPU backend: {prompt, completion}.
function nativeGenerate(model, args) {
  const meta = JSON.parse(execFileSync("cargo", ["metadata", "--format-version", "1", "--no-deps"], { cwd: ROOT }));
  const bin = process.env.TUNELAB_BIN ?? join(meta.target_directory, "release/tunelab");
  return JSON.parse(execFileSync(bin, ["--device", "cpu", "--json", "generate", join(ROOT, model), ...args], { encoding: "utf8" }));
}

test("generation streams token by token; a chat model answers through its chat template, greedy and sampled, as the native CLI does", async () => {
  const model = "tests/fixtures/gguf/llama-gqa.gguf";
  const { page, console } = await lab.open({ model: `/${model}`, "max-tokens": "8" });
  await page.click("#load");
  await settle(page, ["ready", "error"]);
  // The GGUF carries a ChatML template: chat is on by default.
  assert.equal(await page.$eval("#chat", (e) => e.checked), true, console.join("\n"));
  await page.fill("#prompt", "What is 2 + 3?");
  const generate = async (n) => {
    await page.click("#generate");
    await page.waitForFunction((k) => document.querySelectorAll("#generations .generation[data-json]").length >= k, n, { timeout: 300_000 });
    return page.$eval(`#generations .generation:nth-child(${n})`, (e) => JSON.parse(e.dataset.json));
  };
  const greedy = await generate(1);
  // The prompt as transformers' apply_chat_template renders it (tests/fixtures/gguf/reference.json).
  assert.equal(greedy.prompt, "<|im_start|>user\nWhat is 2 + 3?<|im_end|>\n<|im_start|>assistant\n");
  assert.ok(greedy.streamed.length >= 2, `streamed in pieces: ${JSON.stringify(greedy.streamed)}`);
  assert.equal(greedy.streamed.join(""), greedy.text);
  const cli = nativeGenerate(model, ["--prompt", "What is 2 + 3?", "--chat", "--max-new-tokens", "8"]);
  assert.deepEqual({ prompt: greedy.prompt, text: greedy.text }, { prompt: cli.prompt, text: cli.completion });
  // Sampling is seeded: the same settings give the same text, here and natively.
  await page.fill("#temperature", "1");
  await page.fill("#top-p", "0.9");
  const sampled = await generate(2);
  assert.equal((await generate(3)).text, sampled.text);
  const cliSampled = nativeGenerate(model, ["--prompt", "What is 2 + 3?", "--chat", "--max-new-tokens", "8", "--temperature", "1", "--top-p", "0.9"]);
  assert.equal(sampled.text, cliSampled.completion);
  // Without chat the prompt is continued as plain text.
  await page.uncheck("#chat");
  const plain = await generate(4);
  assert.equal(plain.prompt, "What is 2 + 3?");
  process.stdout.write(`# generation: greedy ${JSON.stringify(greedy.text)} and sampled ${JSON.stringify(sampled.text)} match the native CLI\n`);
  await page.close();
});

test("a queue (full, LoRA) runs on one loaded model: a trajectory each on the plane, the model fetched once and shared, each run's GPU memory", async () => {
  const before = lab.http.requests.length;
  const { page, console } = await lab.open({
    model: "/tests/fixtures/gpt2/", cache: "0", "data-preset": "url", data: "/tests/fixtures/data/tiny.txt", regime: "cpt",
    "seq-len": "32", steps: "4", batch: "2", warmup: "0", "eval-every": "2", "eval-limit": "2", generate: "0",
    method: "lora", rank: "8", lr: "5e-3", compare: "full lr 1e-3, lora 4", autoqueue: "1",
  });
  await page.waitForFunction(() => ["done", "ended"].includes(document.getElementById("queue-status").dataset.state), null, { timeout: 900_000 });
  const queue = await page.$eval("#queue-status", (e) => ({ state: e.dataset.state, text: e.textContent }));
  const status = await page.$eval("#status", (e) => e.textContent);
  assert.equal(queue.state, "done", `${queue.text}: ${status}\n${console.join("\n")}`);
  assert.match(queue.text, /2 of 2 runs/);
  const scatter = await json(page, "#scatter", "json");
  assert.equal(scatter.runs.length, 2);
  const [full, lora] = scatter.runs;
  assert.match(full.label, /^full lr 0\.001, 4 steps/);
  assert.match(lora.label, /^LoRA r4 lr 0\.005, 4 steps/);
  for (const r of scatter.runs) {
    assert.equal(r.status, "done");
    assert.deepEqual(r.trajectory.map((p) => p[2]), [2, 4], `${r.label}: one point per evaluation`);
  }
  // Both runs trained on the one loaded copy: the model's files were fetched once.
  const configs = lab.http.requests.slice(before).filter((r) => r.path === "/tests/fixtures/gpt2/config.json");
  assert.equal(configs.length, 1);
  // Full fine-tuning holds its own trainable copy and two AdamW moments beside the loaded model;
  // LoRA shares the loaded model and adds only its adapter and that adapter's moments.
  const own = (r) => r.memory.inUse - r.memory.model;
  assert.ok(full.memory.model > 0, JSON.stringify(full.memory));
  assert.ok(own(full) >= 2 * full.memory.model, `full: ${JSON.stringify(full.memory)}`);
  assert.ok(own(lora) < 0.5 * lora.memory.model, `LoRA: ${JSON.stringify(lora.memory)}`);
  assert.match(await page.$eval("#runs tbody tr:last-child td:nth-child(6)", (e) => e.textContent), /MB \(.* MB own\)/);
  // The form is as it was before the queue set each run's method.
  assert.deepEqual(await page.$eval("#method-box", () => ["method", "rank", "lr"].map((id) => document.getElementById(id).value)), ["lora", "8", "5e-3"]);
  const mb = (b) => (b / 1e6).toFixed(2);
  process.stdout.write(`# queue: model ${mb(full.memory.model)} MB; full +${mb(own(full))} MB, LoRA r4 +${mb(own(lora))} MB\n`);
  await page.close();
});

test("the page fits a phone (390×844) and a tablet (768×1024): a run trains, nothing is wider than the screen; screenshots", async () => {
  for (const [name, viewport] of [["phone", { width: 390, height: 844 }], ["tablet", { width: 768, height: 1024 }]]) {
    const { page, console } = await lab.open({
      model: "/tests/fixtures/gpt2/", "data-preset": "url", data: "/tests/fixtures/data/tiny.txt", regime: "cpt",
      "seq-len": "32", method: "lora", steps: "3", batch: "2", evaluate: "0", generate: "0", autostart: "1",
    }, viewport);
    const { state, status } = await settle(page);
    assert.equal(state, "done", `${name}: ${status}\n${console.join("\n")}`);
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `${name}: the page is ${overflow} px wider than the screen`);
    // Every control lies within the screen (the runs table scrolls sideways in its own box).
    const outside = await page.$$eval("button, input, select, textarea", (els) => els
      .filter((e) => !e.closest("#runs"))
      .filter((e) => {
        const r = e.getBoundingClientRect();
        return r.width > 0 && (r.left < -0.5 || r.right > window.innerWidth + 0.5);
      })
      .map((e) => e.id || e.textContent));
    assert.deepEqual(outside, [], `${name}: controls outside the screen`);
    await page.screenshot({ path: join(SHOTS, `lab-${name}.png`), fullPage: true });
    await page.close();
  }
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
    const short = request("generate", { prompt: "The", options: { maxNewTokens: 3 } });
    const failing = request("export", { kind: "adapter" }).then(() => "resolved", (e) => e.message);
    const long = request("generate", { prompt: "Once upon a time", options: { maxNewTokens: 6 } });
    const together = { short: (await short).text, failing: await failing, long: (await long).text };
    // The same requests one at a time.
    const alone = {
      long: (await request("generate", { prompt: "Once upon a time", options: { maxNewTokens: 6 } })).text,
      short: (await request("generate", { prompt: "The", options: { maxNewTokens: 3 } })).text,
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

test("the engine times each hot-path op with tunelab's WGSL kernels and with burn's (the page's `tunelab bench --ops`)", async () => {
  const { page, console } = await lab.open({});
  const results = await page.evaluate(
    () => window.lab.request("benchOps", { preset: "small", batch: 1, seq: 8, reps: 1 }),
  ).catch((e) => assert.fail(`${e.message}\n${console.join("\n")}`));
  const ops = ["matmul", "linear", "lora_linear", "attention", "rope", "rms_norm", "swiglu", "lm_head_loss", "adamw", "lora_adamw"];
  assert.deepEqual(results.map((r) => `${r.kernels} ${r.op}`), ["tunelab", "burn"].flatMap((k) => ops.map((o) => `${k} ${o}`)));
  for (const r of results) {
    assert.ok(r.train_ms > 0 && Number.isFinite(r.train_ms), JSON.stringify(r));
    assert.equal(r.forward_ms === null, r.op.endsWith("adamw"), JSON.stringify(r));
    assert.ok((r.tflops ?? r.gb_per_s) > 0, JSON.stringify(r));
  }
  // small: the up projection [8, 256] · [256, 688], ×3 with both gradients; 4 heads of 64, so
  // attention is 3 × 4 × (1 × 4 × 8² × 64) FLOPs.
  assert.equal(results[0].train_flops, 3 * 2 * 8 * 256 * 688);
  assert.equal(results[3].train_flops, 3 * 4 * 4 * 64 * 64);
  // A shape whose attention scores (8 GiB: past wasm32's usize, too) no adapter binds is refused
  // before anything is allocated.
  const refused = await page.evaluate(
    () => window.lab.request("benchOps", { preset: "small", batch: 128, seq: 2048, reps: 1 }).then(() => null, (e) => e.message),
  );
  assert.match(refused ?? "", /attention-score buffer.*max_storage_buffer_binding_size/);
  const line = (op) => results.filter((r) => r.op === op).map((r) => `${r.kernels} ${r.train_ms.toFixed(1)} ms`).join(", ");
  process.stdout.write(`# ops (SwiftShader, small 1 × 8): ${ops.map((o) => `${o}: ${line(o)}`).join("; ")}\n`);
  await page.close();
});
