// What the lab page draws: the status line, download progress, charts, the runs table, the
// spectrum panel and downloads. Pure rendering of the state it is given.
import { lineChart } from "./chart.js";

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

export function drawLoss(losses) {
  lineChart($("loss-chart"), {
    xLabel: "step", yLabel: "loss",
    series: [{ label: "training loss", points: losses.map((e) => [e.step, e.loss]) }],
  });
}

export function drawMetrics(evals, key) {
  lineChart($("metric-chart"), {
    xLabel: "step", yLabel: "score",
    series: [
      { label: key, points: evals.filter((e) => key in e.metrics).map((e) => [e.step, e.metrics[key]]) },
      { label: "forgetting score (acc_norm)", points: evals.filter((e) => "forgetting/score" in e.metrics).map((e) => [e.step, e.metrics["forgetting/score"]]) },
    ],
  });
}

export function drawScatter(base, runs, key) {
  const series = [];
  if (base) series.push({ label: "base", points: [[base[key], base["forgetting/score"]]], scatter: true });
  for (const r of runs) series.push({ label: r.label, points: [[r.metrics[key], r.metrics["forgetting/score"]]], scatter: true });
  lineChart($("scatter"), { xLabel: key, yLabel: "forgetting score (higher = kept more)", series });
  $("runs").tBodies[0].replaceChildren(...[["base", base], ...runs.map((r) => [r.label, r.metrics])]
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
  $("scatter").dataset.json = JSON.stringify({ base, runs });
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
