// What the lab page draws: the status line, download progress, charts, the runs table, the
// spectrum panel and downloads. Pure rendering of the state it is given.
import { chartTable, color, lineChart } from "./chart.js";
import { finalMetrics, learningKeyOf, trajectory } from "./runs.js";

const $ = (id) => document.getElementById(id);

export function setStatus(text, state = "busy") {
  $("status").textContent = text;
  $("status").dataset.state = state;
}

export function buttons(enabled) {
  for (const [id, on] of Object.entries(enabled)) $(id).disabled = !on;
}

/// Show a progress event: model files get a row each, data download and tokenizing one bar.
export function progress(p, files) {
  if (!p.task.startsWith("loading ")) {
    $("data-progress").max = p.total ?? 1;
    $("data-progress").value = p.done;
    $("data-progress-label").textContent = `${p.task}: ${(p.done / 1e6).toFixed(2)} / ${p.total ? (p.total / 1e6).toFixed(2) : "?"} MB`;
    setStatus(p.task);
    return;
  }
  let li = files.get(p.task);
  if (!li) {
    li = document.createElement("li");
    const label = document.createElement("span");
    const bar = document.createElement("progress");
    bar.setAttribute("aria-label", `download of ${p.task}`);
    li.append(label, bar);
    $("files").append(li);
    files.set(p.task, li);
  }
  li.firstChild.textContent = `${p.task}: ${(p.done / 1e6).toFixed(2)} / ${p.total ? (p.total / 1e6).toFixed(2) : "?"} MB `;
  li.lastChild.max = p.total ?? 1;
  li.lastChild.value = p.done;
  const all = [...files.values()].map((l) => l.lastChild);
  $("progress").max = all.reduce((s, b) => s + Number(b.max), 0) || 1;
  $("progress").value = all.reduce((s, b) => s + Number(b.value), 0);
  setStatus(`loading ${p.task}`);
}

export function notice(message) {
  // Kept in a list too: the status line moves on, a notice about caching should not vanish.
  const li = document.createElement("li");
  li.textContent = message;
  $("notices").append(li);
  setStatus(message, $("status").dataset.state);
}

// Draw a chart and fill its screen-reader table (the canvas' id + "-table").
function chart(id, spec) {
  lineChart($(id), spec);
  chartTable($(`${id}-table`), spec);
}

export function drawLoss(losses) {
  chart("loss-chart", {
    xLabel: "step", yLabel: "loss",
    series: [{ label: "training loss", points: losses.map((e) => [e.step, e.loss]) }],
  });
}

const isPerplexity = (key) => key.endsWith("perplexity");

/// The current run's learning metric and forgetting score over steps, each on its own axis
/// (log scale for a perplexity).
export function drawMetrics(evals, key) {
  chart("learning-chart", {
    xLabel: "step", yLabel: key, logY: isPerplexity(key),
    series: [{ label: key, points: evals.filter((e) => key in e.metrics).map((e) => [e.step, e.metrics[key]]) }],
  });
  chart("forgetting-chart", {
    xLabel: "step", yLabel: "forgetting score (acc_norm)",
    series: [{ label: "forgetting score", points: evals.filter((e) => "forgetting/score" in e.metrics).map((e) => [e.step, e.metrics["forgetting/score"]]) }],
  });
}

const cell = (tag, content) => {
  const el = document.createElement(tag);
  if (content instanceof Node) el.append(content);
  else el.textContent = typeof content === "number" ? (Number.isInteger(content) ? content : content.toFixed(4)) : content ?? "-";
  return el;
};

/// The learning–forgetting plane of one (model, target) pair: its base point and each shown
/// run's trajectory (a point per evaluation, labelled by step; the selected run thicker); the
/// runs table lists every run with a toggle, and selecting a row highlights its trajectory.
export function drawScatter({ base, runs, key, selected, pair, onToggle, onSelect, onAdapter }) {
  const series = [];
  if (base) series.push({ label: "base", points: [[base[key], base["forgetting/score"]]], scatter: true, color: "#000" });
  const mine = runs.filter((r) => r.pair === pair);
  mine.forEach((r) => {
    if (r.visible === false) return;
    series.push({ label: r.label, points: trajectory(r, key), scatter: true, highlight: r.id === selected, color: color(runs.indexOf(r)) });
  });
  const spec = { xLabel: key, yLabel: "forgetting score (higher = kept more)", logX: isPerplexity(key), series };
  chart("scatter", spec);
  const rows = [];
  if (base) {
    const tr = document.createElement("tr");
    for (const v of ["", "base", "evaluated", 0, "-", "-", base[key], base["forgetting/score"], base["source/perplexity"], "-"]) tr.append(cell("td", v));
    rows.push(tr);
  }
  for (const r of runs) {
    const m = finalMetrics(r);
    const tr = document.createElement("tr");
    tr.dataset.id = r.id;
    if (r.id === selected) tr.dataset.selected = "";
    const box = document.createElement("input");
    box.type = "checkbox";
    box.checked = r.visible !== false;
    box.setAttribute("aria-label", `show ${r.label} on the plot`);
    box.addEventListener("change", () => onToggle(r.id, box.checked));
    const pick = document.createElement("button");
    pick.type = "button";
    pick.className = "link";
    pick.setAttribute("aria-pressed", String(r.id === selected));
    pick.textContent = r.label;
    pick.title = `${r.model}\n${JSON.stringify(r.spec)}`;
    pick.addEventListener("click", () => onSelect(r.id));
    const time = r.ms ? `${(r.ms / 1000).toFixed(1)} s` : "-";
    let adapter = "-";
    if (r.adapter) {
      adapter = document.createElement("button");
      adapter.type = "button";
      adapter.textContent = `download (${(r.adapter.bytes / 1e6).toFixed(2)} MB)`;
      adapter.setAttribute("aria-label", `download the adapter of ${r.label}`);
      adapter.addEventListener("click", () => onAdapter(r.id));
    }
    for (const v of [box, pick, r.status, r.steps, time, memoryText(r.memory), m[learningKeyOf(r.target)], m["forgetting/score"], m["source/perplexity"], adapter]) tr.append(cell("td", v));
    rows.push(tr);
  }
  $("runs").tBodies[0].replaceChildren(...rows);
  $("scatter").dataset.json = JSON.stringify({ key, pair, base: base ?? null, runs: mine.map((r) => ({ id: r.id, label: r.label, status: r.status, memory: r.memory ?? null, metrics: finalMetrics(r), trajectory: trajectory(r, key) })) });
}

/// A run's GPU memory: its peak in use, and the part that is its own (trainable copy, gradients,
/// optimizer state) beyond the loaded model every run shares.
function memoryText(memory) {
  if (!memory) return "-";
  const mb = (b) => `${(b / 1e6).toFixed(b < 1e7 ? 2 : 0)} MB`;
  return memory.model == null ? mb(memory.inUse) : `${mb(memory.inUse)} (${mb(Math.max(0, memory.inUse - memory.model))} own)`;
}

/// The adapter and its limits.
export function drawGpu(info) {
  const mib = (b) => `${(b / 2 ** 20).toFixed(0)} MiB`;
  $("gpu-info").textContent = info
    ? `${[info.vendor, info.architecture, info.device, info.description].filter(Boolean).join(" ") || "unnamed adapter"}: max buffer ${mib(info.limits.maxBufferSize)}, max storage binding ${mib(info.limits.maxStorageBufferBindingSize)}, workgroup storage ${(info.limits.maxComputeWorkgroupStorageSize / 1024).toFixed(0)} KiB, ${info.limits.maxComputeInvocationsPerWorkgroup} invocations per workgroup; f16 ${info.f16 ? "yes" : "no"}, subgroups ${info.subgroups ? "yes" : "no"}`
    : "no WebGPU adapter";
  $("gpu-info").dataset.json = JSON.stringify(info);
}

/// The cached models with their sizes and a delete button each, and the storage estimate.
export function drawCache({ models, storage }, onDelete) {
  $("cache-list").replaceChildren(...models.map((m) => {
    const li = document.createElement("li");
    const del = document.createElement("button");
    del.type = "button";
    del.textContent = "Delete";
    del.setAttribute("aria-label", `delete cached ${m.model}`);
    del.addEventListener("click", () => onDelete(m.model));
    li.append(`${m.model}: ${m.files} files, ${(m.bytes / 1e6).toFixed(1)} MB `, del);
    return li;
  }));
  if (!models.length) $("cache-list").append(cell("li", "nothing cached"));
  $("storage").textContent = storage ? `browser storage used: ${(storage.usage / 1e6).toFixed(1)} MB of ${(storage.quota / 1e9).toFixed(1)} GB` : "";
  $("cache-list").dataset.json = JSON.stringify(models);
}

// Rank of ΔW per layer, one line per matrix kind, and the same numbers as a table.
export function drawSpectrum(s) {
  const kinds = Object.entries(s.rank_by_kind);
  lineChart($("spectrum-chart"), {
    xLabel: "layer", yLabel: `rank for ${100 * s.threshold}% of energy`,
    series: kinds.map(([kind, points]) => ({ label: kind, points })),
  });
  const layers = [...new Set(kinds.flatMap(([, p]) => p.map(([l]) => l)))].sort((a, b) => a - b);
  const head = document.createElement("tr");
  head.append(...["matrix", ...layers.map((l) => `layer ${l}`)].map((h) => cell("th", h)));
  const rows = kinds.map(([kind, points]) => {
    const tr = document.createElement("tr");
    const rank = new Map(points);
    tr.append(...[kind, ...layers.map((l) => rank.get(l))].map((v) => cell("td", v)));
    return tr;
  });
  $("spectrum-table").tHead.replaceChildren(head);
  $("spectrum-table").tBodies[0].replaceChildren(...rows);
  $("spectrum-table").hidden = false;
  $("spectrum-summary").textContent = `rank for 90% of ΔW's energy: attention ${s.mean_rank_attention.toFixed(1)} (${(100 * s.mean_rank_fraction_attention).toFixed(0)}% of full rank), MLP ${s.mean_rank_mlp.toFixed(1)} (${(100 * s.mean_rank_fraction_mlp).toFixed(0)}%)`;
}

export function offerDownloads(kind, files) {
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
