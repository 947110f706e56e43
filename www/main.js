// The lab page: reads the forms, sends requests to the worker (which owns the engine), draws
// progress, charts and results. Query parameters pre-fill any field by id (used by tests and
// shareable links); autostart=1 loads, tokenizes, trains and evaluates; autorun=1 computes logits.
import { lineChart } from "./chart.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
for (const [key, value] of params) {
  const el = $(key);
  if (el?.type === "checkbox") el.checked = value === "1" || value === "true";
  else if (el && "value" in el && el.type !== "file") el.value = value;
}

function setStatus(text, state = "busy") {
  $("status").textContent = text;
  $("status").dataset.state = state;
}

const hasWebGPU = "gpu" in navigator;
if (!hasWebGPU) {
  $("webgpu").hidden = false;
  $("webgpu").textContent = "This browser has no WebGPU (navigator.gpu is missing), so nothing can run here. Use a recent Chrome or Edge (or Firefox / Safari with WebGPU enabled) on a machine with a GPU.";
  for (const b of document.querySelectorAll("button")) b.disabled = true;
  setStatus("WebGPU is not available", "error");
}

// ---- state shown on the page --------------------------------------------------------------
const state = {
  losses: [], evals: [], runs: [], files: new Map(), base: null, mathTest: null, loaded: null,
  running: false, pending: null,
};
const abs = (u) => new URL(u, location.href).href;
// Milliseconds since the page started: model loaded, data tokenized, run started, first step.
const timing = {};

// ---- the worker ------------------------------------------------------------------------------
const worker = new Worker(new URL("./worker.js", import.meta.url), { type: "module" });
const send = (msg, transfer) => worker.postMessage(msg, transfer ?? []);
// Requests that resolve on a given reply type (the worker answers in order).
const waiting = new Map();
const request = (msg, reply) => new Promise((resolve, reject) => {
  waiting.set(reply, { resolve, reject });
  send(msg);
});

function fileRow(task) {
  let li = state.files.get(task);
  if (!li) {
    li = document.createElement("li");
    const label = document.createElement("span");
    const bar = document.createElement("progress");
    bar.setAttribute("aria-label", `download of ${task}`);
    li.append(label, bar);
    $("files").append(li);
    state.files.set(task, li);
  }
  return li;
}

worker.onmessage = ({ data }) => {
  const w = waiting.get(data.type);
  switch (data.type) {
    case "progress": {
      const p = data.event;
      if (!p.task.startsWith("loading ")) {
        // Data download and tokenizing: one bar in the data box.
        $("data-progress").max = p.total ?? 1;
        $("data-progress").value = p.done;
        $("data-progress-label").textContent = `${p.task}: ${(p.done / 1e6).toFixed(2)} / ${p.total ? (p.total / 1e6).toFixed(2) : "?"} MB`;
        setStatus(p.task);
        break;
      }
      const li = fileRow(p.task);
      li.firstChild.textContent = `${p.task}: ${(p.done / 1e6).toFixed(2)} / ${p.total ? (p.total / 1e6).toFixed(2) : "?"} MB `;
      li.lastChild.max = p.total ?? 1;
      li.lastChild.value = p.done;
      const all = [...state.files.values()].map((l) => l.lastChild);
      $("progress").max = all.reduce((s, b) => s + Number(b.max), 0) || 1;
      $("progress").value = all.reduce((s, b) => s + Number(b.value), 0);
      setStatus(`loading ${p.task}`);
      break;
    }
    case "loaded": {
      state.loaded = data;
      timing.loaded = performance.now();
      const s = data.storage;
      $("storage").textContent = s ? `browser storage used: ${(s.usage / 1e6).toFixed(1)} MB of ${(s.quota / 1e9).toFixed(1)} GB` : "";
      setStatus(`loaded ${data.model} in ${(data.ms / 1000).toFixed(1)} s (vocabulary ${data.vocabSize})`, "ready");
      break;
    }
    case "notice": {
      // Kept in a list too: the status line moves on, a notice about caching should not vanish.
      const li = document.createElement("li");
      li.textContent = data.message;
      $("notices").append(li);
      setStatus(data.message, $("status").dataset.state);
      break;
    }
    case "data":
      timing.tokenized = performance.now();
      setStatus(`${data.summary.examples} training examples (${data.summary.targetTokens} target tokens, ${data.summary.regime}), tokenized in ${(data.ms / 1000).toFixed(1)} s`, "ready");
      if (data.summary.test) state.mathTest = data.summary.test;
      break;
    case "started":
      $("losses").dataset.info = JSON.stringify(data.info);
      setStatus(`training ${data.info.trainableParameters} parameters for ${data.info.totalSteps} steps`);
      break;
    case "step": {
      const e = data.event;
      timing.firstStep ??= performance.now();
      state.losses.push(e);
      $("losses").textContent = `step ${e.step}/${e.total_steps}: loss ${e.loss.toFixed(4)} (${e.tokens_per_s.toFixed(0)} tokens/s)`;
      drawLoss();
      break;
    }
    case "evalProgress":
      setStatus(`evaluating ${data.event.task}: ${data.event.done}/${data.event.total}`);
      break;
    case "metrics":
      state.evals.push({ step: data.step, metrics: data.metrics });
      drawMetrics();
      break;
    case "paused":
      setStatus(`paused at step ${data.step}`, "paused");
      buttons({ pause: false, resume: true, stop: true });
      break;
    case "resumed":
      setStatus(`resumed at step ${data.step}`);
      buttons({ pause: true, resume: false, stop: true });
      break;
    case "generation": {
      $("generations").textContent += `[${data.label}] ${data.prompt}${data.text}\n\n`;
      break;
    }
    case "files":
      offerDownloads(data.kind, data.files);
      break;
    case "spectrum": {
      const s = data.summary;
      drawSpectrum(s);
      $("spectrum-summary").textContent = `rank for 90% of ΔW's energy: attention ${s.mean_rank_attention.toFixed(1)} (${(100 * s.mean_rank_fraction_attention).toFixed(0)}% of full rank), MLP ${s.mean_rank_mlp.toFixed(1)} (${(100 * s.mean_rank_fraction_mlp).toFixed(0)}%)`;
      setStatus("spectrum of the weight change ready", "done");
      break;
    }
    case "result": {
      const r = data.result;
      $("result").textContent = JSON.stringify({ shape: r.shape, first: r.logits.slice(0, 8), score: r.score, ms: r.ms }, null, 2);
      $("result").dataset.json = JSON.stringify(r);
      setStatus(`done in ${r.ms.total.toFixed(0)} ms`, "done");
      break;
    }
    case "error":
      setStatus(`error (${data.during}): ${data.message}`, "error");
      state.running = false;
      buttons({ start: true, pause: false, resume: false, stop: false });
      for (const [, p] of waiting) p.reject(new Error(data.message));
      waiting.clear();
      return;
  }
  if (w) {
    waiting.delete(data.type);
    w.resolve(data);
  }
};
worker.onerror = (e) => setStatus(`worker failed: ${e.message}`, "error");

function buttons(enabled) {
  for (const [id, on] of Object.entries(enabled)) $(id).disabled = !on;
}

// ---- charts ----------------------------------------------------------------------------------
function drawLoss() {
  lineChart($("loss-chart"), {
    xLabel: "step", yLabel: "loss",
    series: [{ label: "training loss", points: state.losses.map((e) => [e.step, e.loss]) }],
  });
}

function learningKey() {
  return $("data-preset").value === "math" ? "math/answer_loss" : "target/perplexity";
}

function drawMetrics() {
  const key = learningKey();
  lineChart($("metric-chart"), {
    xLabel: "step", yLabel: "score",
    series: [
      { label: key, points: state.evals.filter((e) => key in e.metrics).map((e) => [e.step, e.metrics[key]]) },
      { label: "forgetting score (acc_norm)", points: state.evals.filter((e) => "forgetting/score" in e.metrics).map((e) => [e.step, e.metrics["forgetting/score"]]) },
    ],
  });
}

function drawScatter() {
  const key = learningKey();
  const series = [];
  if (state.base) series.push({ label: "base", points: [[state.base[key], state.base["forgetting/score"]]], scatter: true });
  for (const r of state.runs) series.push({ label: r.label, points: [[r.metrics[key], r.metrics["forgetting/score"]]], scatter: true });
  lineChart($("scatter"), { xLabel: key, yLabel: "forgetting score (higher = kept more)", series });
  $("runs").tBodies[0].replaceChildren(...[["base", state.base], ...state.runs.map((r) => [r.label, r.metrics])]
    .filter(([, m]) => m)
    .map(([label, m]) => {
      const tr = document.createElement("tr");
      for (const v of [label, m[key], m["forgetting/score"], m["source/perplexity"]]) {
        const td = document.createElement("td");
        td.textContent = typeof v === "number" ? v.toFixed(4) : v ?? "-";
        tr.append(td);
      }
      return tr;
    }));
  $("scatter").dataset.json = JSON.stringify({ base: state.base, runs: state.runs });
}

// Rank of ΔW per layer, one line per matrix kind, and the same numbers as a table.
function drawSpectrum(s) {
  const kinds = Object.entries(s.rank_by_kind);
  lineChart($("spectrum-chart"), {
    xLabel: "layer", yLabel: `rank for ${100 * s.threshold}% of energy`,
    series: kinds.map(([kind, points]) => ({ label: kind, points })),
  });
  const layers = [...new Set(kinds.flatMap(([, p]) => p.map(([l]) => l)))].sort((a, b) => a - b);
  const head = document.createElement("tr");
  for (const h of ["matrix", ...layers.map((l) => `layer ${l}`)]) {
    const th = document.createElement("th");
    th.textContent = h;
    head.append(th);
  }
  const rows = kinds.map(([kind, points]) => {
    const tr = document.createElement("tr");
    const rank = new Map(points);
    for (const v of [kind, ...layers.map((l) => rank.get(l) ?? "-")]) {
      const td = document.createElement("td");
      td.textContent = v;
      tr.append(td);
    }
    return tr;
  });
  $("spectrum-table").tHead.replaceChildren(head);
  $("spectrum-table").tBodies[0].replaceChildren(...rows);
  $("spectrum-table").hidden = false;
}

function offerDownloads(kind, files) {
  const links = Object.entries(files).map(([name, bytes]) => {
    const a = document.createElement("a");
    a.href = URL.createObjectURL(new Blob([bytes]));
    a.download = name;
    a.textContent = `${kind}/${name}`;
    a.style.marginRight = "1em";
    return a;
  });
  $("download").append(...links);
  $("download").dataset.files = JSON.stringify({
    ...JSON.parse($("download").dataset.files ?? "{}"),
    [kind]: Object.fromEntries(Object.entries(files).map(([n, b]) => [n, n.endsWith(".json") ? new TextDecoder().decode(b) : b.length])),
  });
}

// ---- requests ----------------------------------------------------------------------------------
async function fetchText(url) {
  const r = await fetch(url);
  if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`);
  return r.text();
}

// The forgetting evals (bundled, built from held-out novels) and the target's learning metric.
async function evalRequest() {
  const limit = Number($("eval-limit").value);
  const [hellaswag, arc, winogrande, sourceText] = await Promise.all(
    ["forgetting/hellaswag.jsonl", "forgetting/arc.jsonl", "forgetting/winogrande.jsonl", "english/heldout.txt"]
      .map((f) => fetchText(abs(`../data/${f}`))));
  const req = { hellaswag, arc, winogrande, sourceText, limit, sourceChars: 6000 };
  const preset = $("data-preset").value;
  if (preset === "math" && state.mathTest) {
    req.target = { name: "math", metric: "gsm8k", seqLen: Number($("seq-len").value), maxGenToks: 96 };
    req.targetTest = state.mathTest;
  } else if (preset === "code") {
    req.target = { name: "target", metric: "perplexity", seqLen: Number($("seq-len").value), testChars: 6000 };
    req.targetTest = await fetchText(abs("../data/code/heldout.txt"));
  }
  return req;
}

function trainConfig() {
  const rank = Number($("rank").value), lr = Number($("lr").value), steps = Number($("steps").value);
  const alpha = $("alpha").value === "" ? 2 * rank : Number($("alpha").value);
  const problems = [];
  if (!(lr > 0)) problems.push("learning rate must be a positive number");
  if (!(steps >= 1)) problems.push("steps must be at least 1");
  if ($("method").value === "lora" && !(rank >= 1)) problems.push("LoRA rank must be at least 1");
  if (problems.length) throw new Error(problems.join("; "));
  const method = $("method").value === "lora"
    ? { method: "lora", rank, alpha, dropout: Number($("dropout").value), rslora: false, init: "kaiming", targets: [$("targets").value] }
    : { method: "full", train_embeddings: false, freeze: [] };
  const wd = Number($("wd").value);
  return {
    method,
    optimizer: $("optimizer").value === "lion"
      ? { kind: "lion", beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: wd }
      : { kind: "adamw", beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: wd },
    lr, lora_plus_ratio: null, schedule: $("schedule").value, warmup_steps: Number($("warmup").value),
    epochs: 1e9, max_steps: steps, max_tokens: null, batch_size: Number($("batch").value), grad_accum: 1,
    seed: 0, clip: 1.0, attention_dropout: 0, residual_dropout: 0, log_every: 1, eval_every: null, save_every: null,
  };
}

function runLabel(cfg) {
  return cfg.method.method === "lora" ? `LoRA r${cfg.method.rank} lr ${cfg.lr}` : `full lr ${cfg.lr}`;
}

async function ensureModel() {
  const model = abs($("model").value);
  if (state.loaded?.model !== model) {
    state.files.clear();
    $("files").replaceChildren();
    setStatus("loading model…");
    await request({ type: "load", model, cache: $("cache").checked }, "loaded");
  }
  return model;
}

async function loadData(model) {
  const preset = $("data-preset").value;
  const seqLen = Number($("seq-len").value);
  let source;
  if (preset === "math") source = { kind: "math", train: Number($("math-train").value), test: Number($("math-test").value), seed: 0 };
  else if (preset === "code") source = { kind: "url", url: abs("../data/code/train.txt.gz"), name: "train.txt.gz" };
  else if (preset === "url") {
    if (!$("data").value) throw new Error("enter a data URL");
    source = { kind: "url", url: abs($("data").value), name: new URL(abs($("data").value)).pathname.split("/").pop() };
  } else {
    const file = $("data-file").files[0];
    if (!file) throw new Error("choose a data file");
    source = { kind: "file", name: file.name, bytes: new Uint8Array(await file.arrayBuffer()) };
  }
  await request({ type: "data", model, source, regime: $("regime").value, seqLen }, "data");
}

async function startRun() {
  setStatus("starting…");
  try {
    const cfg = trainConfig();
    state.losses = [];
    state.evals = [];
    drawLoss();
    drawMetrics();
    const model = await ensureModel();
    await loadData(model);
    const evaluate = params.get("evaluate") !== "0";
    const req = evaluate ? await evalRequest() : null;
    if (evaluate && !state.base) {
      setStatus("evaluating the base model…");
      state.base = (await request({ type: "evaluate", request: req, step: 0 }, "metrics")).metrics;
      drawScatter();
    }
    if (params.get("generate") !== "0") {
      await request({ type: "generate", prompt: $("prompt").value.replaceAll("\\n", "\n"), maxNewTokens: 48, label: "base" }, "generation");
    }
    state.running = true;
    buttons({ start: false, pause: true, resume: false, stop: true, "spectrum-btn": false, "export-adapter": false, "export-merged": false });
    const every = Number($("eval-every").value);
    send({ type: "start", config: cfg, evalEvery: every, evalRequest: every > 0 ? req : null });
    timing.start = performance.now();
    const done = await new Promise((resolve, reject) => waiting.set("finished", { resolve, reject }));
    state.running = false;
    buttons({ start: true, pause: false, resume: false, stop: false, "spectrum-btn": true, "export-adapter": cfg.method.method === "lora", "export-merged": true });
    setStatus(`trained ${done.step} steps in ${(done.ms / 1000).toFixed(1)} s; evaluating…`);
    const metrics = evaluate ? (await request({ type: "evaluate", request: req, step: done.step }, "metrics")).metrics : {};
    state.runs.push({ label: runLabel(cfg), metrics, steps: done.step, ms: done.ms, losses: state.losses.map((e) => e.loss) });
    drawScatter();
    if (params.get("generate") !== "0") {
      await request({ type: "generate", prompt: $("prompt").value.replaceAll("\\n", "\n"), maxNewTokens: 48, label: runLabel(cfg) }, "generation");
    }
    $("losses").dataset.json = JSON.stringify({ steps: state.losses, ms: done.ms, metrics, timing });
    setStatus(`done: ${runLabel(cfg)}, ${done.step} steps in ${(done.ms / 1000).toFixed(1)} s`, "done");
  } catch (e) {
    setStatus(`error: ${e.message}`, "error");
    buttons({ start: true, pause: false, resume: false, stop: false });
  }
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
});
$("load").addEventListener("click", () => ensureModel().catch((e) => setStatus(`error: ${e.message}`, "error")));
$("start").addEventListener("click", startRun);
$("pause").addEventListener("click", () => { send({ type: "pause" }); buttons({ pause: false }); });
$("resume").addEventListener("click", () => send({ type: "resume" }));
$("stop").addEventListener("click", () => { send({ type: "stop" }); buttons({ pause: false, resume: false, stop: false }); });
$("eval-base").addEventListener("click", async () => {
  try {
    const model = await ensureModel();
    if ($("data-preset").value === "math" && !state.mathTest) await loadData(model);
    setStatus("evaluating the base model…");
    state.base = (await request({ type: "evaluate", request: await evalRequest(), step: 0 }, "metrics")).metrics;
    drawScatter();
    setStatus("base model evaluated", "done");
  } catch (e) {
    setStatus(`error: ${e.message}`, "error");
  }
});
$("generate").addEventListener("click", () => send({ type: "generate", prompt: $("prompt").value.replaceAll("\\n", "\n"), maxNewTokens: 48, label: state.runs.length ? "after" : "base" }));
$("spectrum-btn").addEventListener("click", () => { setStatus("analysing the weight change…"); send({ type: "spectrum" }); });
$("export-adapter").addEventListener("click", () => send({ type: "export", kind: "adapter" }));
$("export-merged").addEventListener("click", () => send({ type: "export", kind: "merged" }));

$("form").addEventListener("submit", (e) => {
  e.preventDefault();
  const tokens = $("tokens").value.split(",").map((s) => Number(s.trim()));
  if (tokens.some((t) => !Number.isInteger(t) || t < 0)) {
    setStatus("token ids must be non-negative integers separated by commas", "error");
    return;
  }
  setStatus("starting…");
  send({ type: "logits", model: abs($("model").value), tokens, text: $("text").value });
});

drawLoss();
drawMetrics();
drawScatter();
if (hasWebGPU && params.get("autorun") === "1") $("form").requestSubmit();
if (hasWebGPU && params.get("autostart") === "1") startRun();
