// Browser measurement (not a test): the lab page in headless Chromium (WebGPU on SwiftShader)
// loads the bundled base model, tokenizes the math preset and trains N LoRA steps; prints load
// time, time to the first training step and steps/s. Usage: node scripts/bench-browser.mjs [steps]
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { launch } from "../tests/browser/chromium.mjs";
import { serve } from "../tests/browser/server.mjs";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");
const steps = process.argv[2] ?? "5";
const http = await serve(ROOT);
const browser = await launch();
const page = await browser.newPage();
const query = new URLSearchParams({ "data-preset": "math", "math-train": "400", "seq-len": "160", method: "lora", rank: "4", lr: "1e-2", steps, batch: "8", evaluate: "0", generate: "0", autostart: "1" });
await page.goto(`${http.base}/www/index.html?${query}`);
await page.waitForFunction(() => ["done", "error"].includes(document.getElementById("status").dataset.state), null, { timeout: 1_800_000 });
const status = await page.$eval("#status", (e) => e.textContent);
const r = JSON.parse((await page.$eval("#losses", (e) => e.dataset.json)) ?? "null");
if (!r) throw new Error(status);
const t = r.timing;
const later = r.steps.slice(1);
const perStep = later.length ? (r.ms - (t.firstStep - t.start)) / later.length : NaN;
console.log(JSON.stringify({
  status, load_ms: t.loaded, tokenize_ms: t.tokenized - t.loaded, first_step_ms_from_start: t.firstStep - t.start,
  page_to_first_step_ms: t.firstStep, steps: r.steps.length, ms_per_later_step: perStep, steps_per_s: 1000 / perStep,
}));
await browser.close();
http.server.close();
