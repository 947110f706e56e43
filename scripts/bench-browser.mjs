// Browser measurements (not tests), the lab page in headless Chromium (WebGPU on SwiftShader) on
// the bundled base model and the math preset:
//
//   node scripts/bench-browser.mjs [STEPS]
//     one LoRA r4 run (batch 8 × 160): load time, time to the first training step, steps/s.
//   node scripts/bench-browser.mjs queue [STEPS] [RUNS]
//     the page's run queue (default RUNS "full, lora 4, lora 16"; batch 4 × 64, no evaluation) on
//     one loaded model: wall time of the whole queue, each run's training time and GPU memory
//     (the engine's allocator: in use after a step, and the run's own share beyond the loaded
//     model); then the same runs natively with the CLI (`tunelab make-data` + `tunelab train
//     --spec`, each run spec exactly as the page recorded it), one process per run as a user
//     would, on the CPU backend and on the default wgpu adapter (DEVICES=cpu,gpu): wall time and
//     peak RSS. TUNELAB=path/to/tunelab (default: the release build in cargo's target directory).
//   node scripts/bench-browser.mjs ops [PRESET] [BATCH] [SEQ] [REPS]
//     each hot-path op alone (tiled matmul, linear, LoRA linear, attention, RMSNorm, LM head +
//     loss, AdamW) at a benchmark preset's shape (default small, 8 × 128, 5 timed calls),
//     tunelab's WGSL kernels then burn's: the browser's `tunelab bench --ops`, one JSON line per
//     op and kernel set.
//
// KERNELS=burn runs the page with burn's generic kernels instead of tunelab's WGSL ones (the
// page's "GPU kernels" setting; default tunelab). DEVICES=none skips the CLI runs.
import { execFileSync } from "node:child_process";
import { mkdtempSync, writeFileSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { launch } from "../tests/browser/chromium.mjs";
import { serve } from "../tests/browser/server.mjs";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");
const mode = ["queue", "ops"].includes(process.argv[2]) ? process.argv[2] : "one";
const args = process.argv.slice(mode === "one" ? 2 : 3);
const steps = args[0] ?? "5";
const kernels = process.env.KERNELS ?? "tunelab";
const http = await serve(ROOT);
const browser = await launch();
const page = await browser.newPage();

if (mode === "queue") await benchQueue(args[1] ?? "full, lora 4, lora 16");
else if (mode === "ops") await benchOps(args[0] ?? "small", +(args[1] ?? 8), +(args[2] ?? 128), +(args[3] ?? 5));
else await benchOne();
await browser.close();
http.server.close();

async function benchOne() {
  const query = new URLSearchParams({ "data-preset": "math", "math-train": "400", "seq-len": "160", method: "lora", rank: "4", lr: "1e-2", steps, batch: "8", kernels, evaluate: "0", generate: "0", autostart: "1" });
  await page.goto(`${http.base}/www/index.html?${query}`);
  await page.waitForFunction(() => ["done", "error"].includes(document.getElementById("status").dataset.state), null, { timeout: 1_800_000 });
  const status = await page.$eval("#status", (e) => e.textContent);
  const r = JSON.parse((await page.$eval("#losses", (e) => e.dataset.json)) ?? "null");
  if (!r) throw new Error(status);
  const t = r.timing;
  const later = r.steps.slice(1);
  const perStep = later.length ? (r.ms - (t.firstStep - t.start)) / later.length : NaN;
  console.log(JSON.stringify({
    status, kernels, load_ms: t.loaded, tokenize_ms: t.tokenized - t.loaded, first_step_ms_from_start: t.firstStep - t.start,
    page_to_first_step_ms: t.firstStep, steps: r.steps.length, ms_per_later_step: perStep, steps_per_s: 1000 / perStep,
  }));
}

async function benchOps(preset, batch, seq, reps) {
  await page.goto(`${http.base}/www/index.html`);
  await page.waitForFunction(() => window.lab?.request, null, { timeout: 60_000 });
  const results = await page.evaluate(
    (payload) => window.lab.request("benchOps", payload),
    { preset, batch, seq, reps },
  );
  for (const r of results) console.log(JSON.stringify({ where: "chromium (SwiftShader)", ...r }));
}

async function benchQueue(runs) {
  const form = { "data-preset": "math", "math-train": "400", "math-test": "50", "seq-len": "64", batch: "4", steps, lr: "1e-3", rank: "4", kernels };
  const query = new URLSearchParams({ ...form, compare: runs, evaluate: "0", generate: "0", autoqueue: "1" });
  const started = Date.now();
  await page.goto(`${http.base}/www/index.html?${query}`);
  await page.waitForFunction(() => ["done", "ended"].includes(document.getElementById("queue-status")?.dataset.state), null, { timeout: 3_600_000 });
  const wall = (Date.now() - started) / 1000;
  const text = await page.$eval("#queue-status", (e) => e.textContent);
  const status = await page.$eval("#status", (e) => e.textContent);
  if (!/finished/.test(text)) throw new Error(`${text}: ${status}`);
  const stored = await page.evaluate(() => JSON.parse(localStorage.getItem("tunelab.runs.v1")).runs);
  const mb = (b) => (b == null ? null : +(b / 2 ** 20).toFixed(1));
  const browserRuns = stored.map((r) => ({
    label: r.label, steps: r.steps, train_s: +(r.ms / 1000).toFixed(1),
    in_use_mib: mb(r.memory?.inUse), model_mib: mb(r.memory?.model), own_mib: mb(r.memory && r.memory.inUse - r.memory.model),
  }));
  console.log(JSON.stringify({ where: "chromium (SwiftShader)", queue: runs, form, wall_s: wall, runs: browserRuns }));

  // The same runs natively: the page's own run specs, one CLI process each.
  const target = JSON.parse(execFileSync("cargo", ["metadata", "--format-version", "1", "--no-deps"], { cwd: ROOT })).target_directory;
  const tunelab = process.env.TUNELAB ?? join(target, "release/tunelab");
  const dir = mkdtempSync(join(tmpdir(), "tunelab-queue-"));
  try {
    const timed = (argv) => {
      const out = join(dir, "time.txt");
      const t0 = Date.now();
      execFileSync("/usr/bin/time", ["-f", "%M", "-o", out, ...argv], { cwd: ROOT, stdio: ["ignore", "ignore", "inherit"] });
      return { s: (Date.now() - t0) / 1000, rss_mib: +(Number(readFileSync(out, "utf8").trim().split("\n").pop()) / 1024).toFixed(0) };
    };
    const data = join(dir, "math");
    timed([tunelab, "make-data", "math", "--train", form["math-train"], "--test", form["math-test"], "--seed", "0", "--out", data]);
    for (const device of (process.env.DEVICES ?? "cpu,gpu").split(",").filter((d) => d !== "none")) {
      const native = stored.map((r, i) => {
        const spec = join(dir, `run-${i}.json`);
        writeFileSync(spec, JSON.stringify(r.spec));
        const m = timed([tunelab, "--device", device, "train", join(ROOT, "models/tunelab-base"), "--data", join(data, "train.jsonl"), "--spec", spec, "--out", join(dir, `${device}-${i}`)]);
        return { label: r.label, wall_s: +m.s.toFixed(1), peak_rss_mib: m.rss_mib };
      });
      const total = native.reduce((a, r) => a + r.wall_s, 0);
      console.log(JSON.stringify({ where: `tunelab CLI, --device ${device}`, wall_s: +total.toFixed(1), runs: native }));
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
