// The lab page: reads the form, sends requests to the engine worker (protocol.js) and draws what
// comes back (view.js). Query parameters pre-fill any field by id (used by tests and shareable
// links); autostart=1 loads, tokenizes, trains and evaluates; autorun=1 computes logits.
import { engine } from "./protocol.js";
import { checkpointSpec, cliCommand, dataSource, inLabels, ownData, parseQueue, runLabel, runSpec, shareLink, targetName } from "./form.js";
import * as adapters from "./adapters.js";
import * as runs from "./runs.js";
import * as view from "./view.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
for (const [key, value] of params) {
  const el = $(key);
  if (el?.type === "checkbox") el.checked = value === "1" || value === "true";
  // Never a token from a link: it would sit in the address bar and the history.
  else if (el && "value" in el && el.type !== "file" && el.type !== "password") el.value = value;
}
const { setStatus, buttons } = view;

const hasWebGPU = "gpu" in navigator;
if (!hasWebGPU) {
  $("webgpu").hidden = false;
  $("webgpu").textContent = "This browser has no WebGPU (navigator.gpu is missing), so nothing can run here. Use a recent Chrome or Edge (or Firefox / Safari with WebGPU enabled) on a machine with a GPU.";
  for (const b of document.querySelectorAll("button")) b.disabled = true;
  setStatus("WebGPU is not available", "error");
}

// ---- what the page shows (the run itself lives in the engine) ---------------------------------
const state = {
  // The current run's losses and evaluations, as its charts draw them.
  losses: [], evals: [], files: new Map(), mathTest: null, loaded: null,
  // Every run and the base model's scores per (model, target), kept across reloads (runs.js).
  store: runs.load(),
  // The run being trained: its record (runs.js), evaluation request and `over` (resolves true
  // when it finished, false when it failed or was stopped); the selected run's id.
  current: null, selected: null,
  // The queue being worked through (the Compare field): `stopped` once Stop was pressed.
  queue: null,
};
// A run that was training or paused when the page went away cannot go on: its engine is gone.
for (const r of state.store.runs) if (r.status === "training" || r.status === "paused") r.status = "interrupted";
const keep = () => {
  const problem = runs.save(state.store);
  if (problem) view.notice(problem);
};
const abs = (u) => new URL(u, location.href).href;
// The model as typed: the worker (next to this page) resolves a Hub id or a relative URL with
// the engine's own rules.
const modelName = (v) => v.trim();
// How the worker is to load the model in the form: where from, whether to cache, the Hub.
const loadRequest = () => ({
  model: modelName($("model").value),
  cache: $("cache").checked,
  token: $("hf-token").value.trim(),
  endpoint: $("hf-endpoint").value.trim(),
  f16: $("f16").checked,
});
// Milliseconds since the page started: model loaded, data tokenized, run started, first step.
const timing = {};

const client = engine(new URL("./worker.js", import.meta.url), view.notice);
// For tests and the console: the protocol client.
window.lab = { request: client.request };

const idle = { start: true, "start-queue": true, "resume-from": true, pause: false, resume: false, stop: false };
const fail = (e) => {
  // The worker has dropped the model with the lost device: the next start loads it again.
  if (e.device) state.loaded = null;
  const lost = e.device ? " (the GPU device was lost: the next start loads the model again on a new device)" : "";
  setStatus(`error: ${inLabels(e.message)}${lost}`, "error");
  buttons(state.queue ? { pause: false, resume: false, stop: false } : idle);
};

const learningKey = () => runs.learningKeyOf(targetName());
// The (model, target) pair the form names: its base point and runs are the ones plotted.
const pair = () => runs.pairKey(modelName($("model").value), targetName());
const drawMetrics = () => view.drawMetrics(state.evals, learningKey());
const drawScatter = () => view.drawScatter({
  base: state.store.bases[pair()], runs: state.store.runs, key: learningKey(), selected: state.selected, pair: pair(),
  onToggle: (id, on) => {
    state.store.runs.find((r) => r.id === id).visible = on;
    keep();
    drawScatter();
  },
  onSelect: (id) => {
    state.selected = state.selected === id ? null : id;
    drawScatter();
  },
  onAdapter: async (id) => {
    const files = await adapters.get(id).catch(() => null);
    if (files) view.offerDownloads("adapter", files);
    else setStatus("this browser does not hold that run's adapter (it was trained in another browser, or forgotten)", "error");
  },
});
const drawAll = () => {
  view.drawLoss(state.losses);
  drawMetrics();
  drawScatter();
};
const showProgress = (e) => {
  if (e.event === "progress") view.progress(e, state.files);
};

// ---- requests ----------------------------------------------------------------------------------
async function fetchText(url) {
  const r = await fetch(url);
  if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`);
  return r.text();
}

// The forgetting evals (bundled, built from held-out novels) and the target's learning metric.
async function evalRequest(seqLen) {
  const limit = Number($("eval-limit").value);
  const [hellaswag, arc, winogrande, sourceText] = await Promise.all(
    ["forgetting/hellaswag.jsonl", "forgetting/arc.jsonl", "forgetting/winogrande.jsonl", "english/heldout.txt"]
      .map((f) => fetchText(abs(`../data/${f}`))));
  const req = { hellaswag, arc, winogrande, sourceText, limit, sourceChars: 6000 };
  const preset = $("data-preset").value;
  if (preset === "math" && state.mathTest) {
    req.target = { name: "math", metric: "gsm8k", seqLen, maxGenToks: 96 };
    req.targetTest = state.mathTest;
  } else if (preset === "code") {
    req.target = { name: "target", metric: "perplexity", seqLen, testChars: 6000 };
    req.targetTest = await fetchText(abs("../data/code/heldout.txt"));
  } else {
    // The share of the user's data the engine held out when it tokenized it.
    req.heldOut = true;
  }
  return req;
}

async function evaluate(request, step) {
  const onEvent = (e) => {
    if (e.event === "progress") setStatus(`evaluating ${e.task}: ${e.done}/${e.total}`);
  };
  const r = await client.request("evaluate", { request }, onEvent);
  return { step, metrics: r.metrics };
}

async function ensureModel() {
  const model = modelName($("model").value);
  // Switching the base weights' precision loads the model again.
  if (state.loaded?.model !== model || state.loaded?.f16 !== $("f16").checked) {
    state.files.clear();
    $("files").replaceChildren();
    setStatus("loading model…");
    const loaded = await client.request("load", loadRequest(), showProgress);
    state.loaded = loaded;
    // A chat model answers prompts as chat turns, unless the link said otherwise.
    if (!params.has("chat")) $("chat").checked = loaded.chat;
    timing.loaded = performance.now();
    const s = loaded.storage;
    $("storage").textContent = s ? `browser storage used: ${(s.usage / 1e6).toFixed(1)} MB of ${(s.quota / 1e9).toFixed(1)} GB` : "";
    setStatus(`loaded ${loaded.model} in ${(loaded.ms / 1000).toFixed(1)} s (vocabulary ${loaded.vocabSize})`, "ready");
  }
  return model;
}

async function loadData(model, spec) {
  const source = await dataSource(abs);
  const { summary, ms } = await client.request("data", { model, source, spec }, showProgress);
  timing.tokenized = performance.now();
  const held = summary.heldOut ? `, ${summary.heldOut} held out` : "";
  const text = `${summary.examples} training examples (${summary.targetTokens} target tokens, ${summary.regime}${held}), tokenized in ${(ms / 1000).toFixed(1)} s; engine memory ${(summary.heap.after / 1e6).toFixed(0)} MB`;
  setStatus(text, "ready");
  const label = $("data-progress-label");
  label.textContent = `${source.kind === "math" ? "math problems" : source.name}: ${text}`;
  label.dataset.json = JSON.stringify(summary);
  if (summary.test) state.mathTest = summary.test;
  return source.kind === "math" ? "math" : source.name;
}

// Generate from the prompt with the current model, the text appearing token by token.
async function generation(label) {
  const prompt = $("prompt").value;
  const options = {
    maxNewTokens: Number($("max-tokens").value),
    temperature: Number($("temperature").value),
    topP: Number($("top-p").value),
    seed: 0,
    chat: $("chat").checked,
  };
  const out = $("generations");
  const entry = document.createElement("div");
  entry.className = "generation";
  entry.append(`[${label}] ${options.chat ? "user: " : ""}${prompt}${options.chat ? "\nassistant: " : ""}`);
  const text = document.createElement("span");
  entry.append(text);
  out.append(entry);
  const streamed = [];
  const r = await client.request("generate", { prompt, options }, (e) => {
    if (e.event !== "token") return;
    streamed.push(e.text);
    text.textContent += e.text;
  });
  text.textContent = r.text;
  entry.dataset.json = JSON.stringify({ label, ...r, streamed });
}

// A prompt that suits each data preset; the user's own prompt is kept.
const PROMPTS = {
  math: "Question: Anna has 3 apples and buys 4 more. How many apples does she have?\nAnswer:",
  code: "def fibonacci(n):\n",
  url: "The",
  file: "The",
};
const defaultPrompt = () => {
  if ($("prompt").value === "" || Object.values(PROMPTS).includes($("prompt").value)) $("prompt").value = PROMPTS[$("data-preset").value] ?? "";
};

// Events of a training request (start, resume, stop of a paused run, resume from a checkpoint).
function onRunEvent(e) {
  switch (e.event) {
    case "started":
      $("losses").dataset.info = JSON.stringify(e.info);
      setStatus(`training ${e.info.trainableParameters} parameters for ${e.info.totalSteps} steps${e.info.step ? `, continuing from step ${e.info.step}` : ""}`);
      break;
    case "step":
      timing.firstStep ??= performance.now();
      state.losses.push(e);
      $("losses").textContent = `step ${e.step}/${e.total_steps}: loss ${e.loss.toFixed(4)} (${e.tokens_per_s.toFixed(0)} tokens/s)`;
      view.drawLoss(state.losses);
      break;
    case "metrics":
      state.evals.push({ step: e.step, metrics: e.metrics });
      state.current?.run.evals.push({ step: e.step, metrics: e.metrics });
      keep();
      drawMetrics();
      drawScatter();
      break;
    case "progress":
      setStatus(`evaluating ${e.task}: ${e.done}/${e.total}`);
      break;
  }
}

// A training request ended: paused (wait for resume or stop), or finished (evaluate and record).
async function runEnded(r) {
  const { run, request } = state.current;
  // GPU memory: the run's peak in use after a step, the allocator's reserved pages, and what
  // the loaded model alone held (the base every run on it shares).
  const memory = r.memory ? { ...r.memory, model: state.loaded?.memory?.inUse ?? null } : null;
  Object.assign(run, { steps: r.step, ms: r.ms, losses: state.losses.map((e) => e.loss), memory });
  if (r.state === "paused") {
    run.status = "paused";
    keep();
    drawScatter();
    setStatus(`paused at step ${r.step}`, "paused");
    // A paused run's checkpoint can be kept, to resume it later (here or natively).
    buttons({ pause: false, resume: true, stop: true, "export-checkpoint": true });
    return;
  }
  // Taken before Start is enabled again: a new run resets them.
  const steps = state.losses.slice();
  buttons({ ...(state.queue ? {} : idle), pause: false, resume: false, stop: false, "spectrum-btn": true, "export-adapter": run.spec.method === "lora", "export-merged": true, "export-checkpoint": true });
  setStatus(`trained ${r.step} steps in ${(r.ms / 1000).toFixed(1)} s; evaluating…`);
  run.status = r.stopped ? "stopped" : "done";
  if (request && !run.evals.some((e) => e.step === r.step)) run.evals.push(await evaluate(request, r.step));
  if (run.spec.method === "lora") await keepAdapter(run);
  keep();
  drawScatter();
  const metrics = runs.finalMetrics(run);
  if (params.get("generate") !== "0") await generation(run.label);
  $("losses").dataset.json = JSON.stringify({ steps, ms: r.ms, metrics, timing });
  setStatus(`done: ${run.label}, ${r.step} steps in ${(r.ms / 1000).toFixed(1)} s`, "done");
  state.current.settle(!r.stopped);
}

// A finished LoRA run's adapter goes to IndexedDB: the runs table offers it after a reload.
async function keepAdapter(run) {
  try {
    const { files } = await client.request("export", { kind: "adapter" });
    run.adapter = { bytes: await adapters.put(run.id, files) };
  } catch (e) {
    view.notice(`the adapter of ${run.label} is not kept in this browser: ${e.message}`);
  }
}

// A training request: its end handled by `runEnded`, its failure shown.
const training = (type) => client.request(type, {}, onRunEvent).then((r) => (r.state ? runEnded(r) : null)).catch(runFailed);

// A run that failed keeps its record, marked so.
function runFailed(e) {
  if (state.current) {
    state.current.run.status = "failed";
    keep();
    drawScatter();
  }
  fail(e);
  state.current?.settle(false);
}

// Start a run with the form's settings, or continue the one of checkpoint `from` ({files, state,
// name}) on the form's data; resolves true once it finished, false if it failed or was stopped
// (a pause keeps it pending until the run is resumed and ends).
async function startRun(from = null) {
  setStatus("starting…");
  let started = false;
  try {
    const form = runSpec();
    // Defaults filled in by the engine; a bad setting is named before anything loads.
    const spec = from ? checkpointSpec(from.state, form.seq_len) : await client.request("validate", { spec: form });
    state.losses = [];
    state.evals = [];
    view.drawLoss(state.losses);
    drawMetrics();
    const model = await ensureModel();
    const data = await loadData(model, form);
    const evaluating = params.get("evaluate") !== "0";
    const request = evaluating ? await evalRequest(spec.seq_len) : null;
    if (evaluating && !state.store.bases[pair()]) {
      setStatus("evaluating the base model…");
      state.store.bases[pair()] = (await evaluate(request, 0)).metrics;
      keep();
      drawScatter();
    }
    if (params.get("generate") !== "0") await generation("base");
    const label = `${from ? `resumed at step ${from.state.progress?.step ?? 0}: ` : ""}${runLabel(spec, data)}`;
    const run = runs.newRun({ spec, label, model, target: targetName(), data });
    run.pair = pair();
    state.store.runs.push(run);
    state.selected = run.id;
    let settle;
    const over = new Promise((resolve) => (settle = resolve));
    state.current = { run, request, over, settle };
    keep();
    drawScatter();
    buttons({ start: false, "start-queue": false, "resume-from": false, pause: true, resume: false, stop: true, "spectrum-btn": false, "export-adapter": false, "export-merged": false, "export-checkpoint": false });
    const every = Number($("eval-every").value);
    timing.start = performance.now();
    started = true;
    const evaluations = { evalEvery: every, evalRequest: every > 0 ? request : null };
    const r = from
      ? await client.request("resumeFrom", { files: from.files, name: from.name, ...evaluations }, onRunEvent)
      : await client.request("start", { spec: form, ...evaluations }, onRunEvent);
    await runEnded(r);
    return await over;
  } catch (e) {
    if (started) runFailed(e);
    else fail(e);
    return false;
  }
}

// Continue the run of the checkpoint whose files are chosen in "Resume from a checkpoint".
async function resumeFromCheckpoint() {
  let from;
  try {
    const chosen = [...$("resume-files").files];
    if (chosen.length === 0) throw new Error("Resume from a checkpoint: choose the checkpoint's files first");
    const files = Object.fromEntries(await Promise.all(chosen.map(async (f) => [f.name, new Uint8Array(await f.arrayBuffer())])));
    if (!files["trainer_state.json"]) throw new Error("Resume from a checkpoint: trainer_state.json is not among the chosen files");
    let state;
    try {
      state = JSON.parse(new TextDecoder().decode(files["trainer_state.json"]));
    } catch (e) {
      throw new Error(`trainer_state.json: ${e.message}`);
    }
    const folder = chosen[0].webkitRelativePath.split("/")[0];
    from = { files, state, name: folder || "checkpoint" };
  } catch (e) {
    fail(e);
    return false;
  }
  return startRun(from);
}

// Work through the Compare field's runs one after another on the loaded model and data: each
// sets the form's method (and rank, learning rate) and runs as Start does. A failed or stopped
// run ends the queue.
async function runQueue() {
  let items;
  try {
    items = parseQueue($("compare").value);
  } catch (e) {
    fail(e);
    return;
  }
  const form = { method: $("method").value, rank: $("rank").value, lr: $("lr").value };
  state.queue = { stopped: false };
  buttons({ start: false, "start-queue": false, "resume-from": false });
  const note = (text, s) => {
    $("queue-status").textContent = text;
    $("queue-status").dataset.state = s;
  };
  let done = 0;
  for (const item of items) {
    note(`queue: run ${done + 1} of ${items.length}`, "running");
    $("method").value = item.method;
    $("rank").value = item.rank ?? form.rank;
    $("lr").value = item.lr ?? form.lr;
    formChanged();
    if (!(await startRun()) || state.queue.stopped) break;
    done += 1;
  }
  const all = done === items.length;
  note(`queue ${all ? "finished" : "ended"}: ${done} of ${items.length} runs`, all ? "done" : "ended");
  // The form as it was before the queue set each run's method.
  Object.entries(form).forEach(([id, v]) => ($(id).value = v));
  formChanged();
  state.queue = null;
  buttons({ start: true, "start-queue": true, "resume-from": true });
}

// ---- controls ----------------------------------------------------------------------------------
$("model-preset").addEventListener("change", () => {
  if ($("model-preset").value) $("model").value = $("model-preset").value;
  $("model").focus();
});
$("data-preset").addEventListener("change", () => {
  const p = $("data-preset").value;
  if (p === "code") $("seq-len").value = 256;
  if (p === "math") $("seq-len").value = 192;
  state.mathTest = null;
  defaultPrompt();
});
// The plot follows the (model, target) pair the form names; the command box follows the form.
const formChanged = () => {
  drawScatter();
  try {
    $("cli").textContent = cliCommand(runSpec(), $("model").value.trim());
  } catch (e) {
    $("cli").textContent = `(${e.message})`;
  }
};
for (const box of document.querySelectorAll("fieldset")) {
  box.addEventListener("change", formChanged);
  box.addEventListener("input", formChanged);
}
$("runs-export").addEventListener("click", () => {
  const a = document.createElement("a");
  a.href = URL.createObjectURL(new Blob([runs.exportJson(state.store)], { type: "application/json" }));
  a.download = "tunelab-runs.json";
  a.click();
});
$("runs-import").addEventListener("change", async () => {
  const file = $("runs-import").files[0];
  if (!file) return;
  try {
    const added = runs.importJson(state.store, await file.text());
    keep();
    drawScatter();
    setStatus(`imported ${added} runs from ${file.name}`, "done");
  } catch (e) {
    setStatus(`${file.name}: ${e.message}`, "error");
  }
});
$("runs-clear").addEventListener("click", () => {
  if (!confirm("Forget every run and base score kept in this browser?")) return;
  state.store = { runs: [], bases: {} };
  state.selected = null;
  adapters.clear().catch((e) => view.notice(`kept adapters not deleted: ${e.message}`));
  keep();
  drawScatter();
});
$("share").addEventListener("click", () => {
  const link = shareLink();
  $("share-link").textContent = link;
  navigator.clipboard?.writeText(link).catch(() => {});
});
const showCache = (listing) => view.drawCache(listing, (model) => client.request("cacheDelete", { model }).then(showCache).catch(fail));
const refreshGpu = async () => {
  view.drawGpu(await client.request("gpu"));
  showCache(await client.request("cacheList"));
};
$("gpu-box").addEventListener("toggle", () => $("gpu-box").open && refreshGpu().catch(fail));
$("cache-refresh").addEventListener("click", () => refreshGpu().catch(fail));
// Charts are drawn at the canvas' size: redraw when it changes.
let resized = null;
new ResizeObserver(() => {
  clearTimeout(resized);
  resized = setTimeout(drawAll, 100);
}).observe($("scatter"));
$("load").addEventListener("click", () => ensureModel().catch(fail));
$("start").addEventListener("click", () => startRun());
$("start-queue").addEventListener("click", runQueue);
$("resume-from").addEventListener("click", resumeFromCheckpoint);
$("pause").addEventListener("click", () => {
  buttons({ pause: false });
  client.request("pause").catch(fail);
});
$("resume").addEventListener("click", () => {
  setStatus(`resumed at step ${state.losses.at(-1)?.step ?? 0}`);
  buttons({ pause: true, resume: false, stop: true, "export-checkpoint": false });
  training("resume");
});
$("stop").addEventListener("click", () => {
  if (state.queue) state.queue.stopped = true;
  buttons({ pause: false, resume: false, stop: false });
  training("stop");
});
$("eval-base").addEventListener("click", async () => {
  try {
    const model = await ensureModel();
    // The math test set and the held-out share of own data come with the data.
    if (($("data-preset").value === "math" && !state.mathTest) || ownData()) await loadData(model, runSpec());
    setStatus("evaluating the base model…");
    state.store.bases[pair()] = (await evaluate(await evalRequest(Number($("seq-len").value)), 0)).metrics;
    keep();
    drawScatter();
    setStatus("base model evaluated", "done");
  } catch (e) {
    fail(e);
  }
});
$("generate").addEventListener("click", () => generation(state.current ? "after" : "base").catch(fail));
$("spectrum-btn").addEventListener("click", async () => {
  setStatus("analysing the weight change…");
  try {
    view.drawSpectrum(await client.request("spectrum"));
    setStatus("spectrum of the weight change ready", "done");
  } catch (e) {
    fail(e);
  }
});
const exportFiles = (kind) => client.request("export", { kind }).then((r) => view.offerDownloads(r.kind, r.files)).catch(fail);
$("export-adapter").addEventListener("click", () => exportFiles("adapter"));
$("export-merged").addEventListener("click", () => exportFiles("merged"));
$("export-checkpoint").addEventListener("click", () => exportFiles("checkpoint"));

$("form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const tokens = $("tokens").value.split(",").map((s) => Number(s.trim()));
  if (tokens.some((t) => !Number.isInteger(t) || t < 0)) {
    setStatus("token ids must be non-negative integers separated by commas", "error");
    return;
  }
  setStatus("starting…");
  try {
    const r = await client.request("logits", { ...loadRequest(), tokens, text: $("text").value }, showProgress);
    $("result").textContent = JSON.stringify({ shape: r.shape, first: r.logits.slice(0, 8), score: r.score, ms: r.ms }, null, 2);
    $("result").dataset.json = JSON.stringify(r);
    setStatus(`done in ${r.ms.total.toFixed(0)} ms`, "done");
  } catch (err) {
    fail(err);
  }
});

drawAll();
formChanged();
defaultPrompt();
if (hasWebGPU && params.get("autorun") === "1") $("form").requestSubmit();
if (hasWebGPU && params.get("autostart") === "1") startRun();
if (hasWebGPU && params.get("autoqueue") === "1") runQueue();
