// A small canvas chart (lines, scatter or trajectories, linear or log axes, ticks, legend), sized
// to the canvas' CSS box and the device pixel ratio, with a hover / arrow-key readout of each
// point and the same numbers as a table for screen readers. Lighter than a charting library for the page's few charts.
const COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"];

function ticks(lo, hi, n = 5) {
  const step = 10 ** Math.floor(Math.log10((hi - lo) / n || 1));
  const nice = [1, 2, 5, 10].map((m) => m * step).find((s) => (hi - lo) / s <= n) ?? step * 10;
  const out = [];
  for (let v = Math.ceil(lo / nice) * nice; v <= hi + 1e-12; v += nice) out.push(v);
  return out;
}

// Ticks of a log axis (given in log10 units): powers of ten, or 1-2-5 within one decade.
function logTicks(lo, hi) {
  const out = [];
  for (let e = Math.floor(lo); e <= Math.ceil(hi); e++) {
    for (const m of hi - lo < 1.5 ? [1, 2, 5] : [1]) {
      const v = Math.log10(m) + e;
      if (v >= lo && v <= hi) out.push(v);
    }
  }
  return out.length >= 2 ? out : ticks(lo, hi);
}

const fmt = (v) => (Math.abs(v) >= 1000 || (Math.abs(v) < 0.01 && v !== 0) ? v.toExponential(1) : +v.toPrecision(3));

/** The color of series `i`, as the chart draws it. */
export const color = (i) => COLORS[i % COLORS.length];

/**
 * Draw `series` ([{label, points: [[x, y, tag?]], scatter, highlight, color}]) on `canvas`.
 * `logX`/`logY` draw that axis in log10 (non-positive values are left out); a point's `tag` is
 * written beside it (a trajectory's step).
 */
export function lineChart(canvas, { series, xLabel, yLabel, logX = false, logY = false }) {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth || 400, h = canvas.clientHeight || 260;
  canvas.width = w * dpr;
  canvas.height = h * dpr;
  const g = canvas.getContext("2d");
  g.scale(dpr, dpr);
  g.clearRect(0, 0, w, h);
  g.font = "12px system-ui, sans-serif";
  const tx = (x) => (logX ? (x > 0 ? Math.log10(x) : NaN) : x);
  const ty = (y) => (logY ? (y > 0 ? Math.log10(y) : NaN) : y);
  const shown = series.map((s) => s.points.map(([x, y, tag]) => [tx(x), ty(y), tag]).filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y)));
  const pts = shown.flat();
  const m = { l: 56, r: 12, t: 10, b: 36 };
  g.fillStyle = "#555";
  attachReadout(canvas);
  canvas.readoutPoints = [];
  if (!pts.length) {
    g.fillText("no data yet", w / 2 - 30, h / 2);
    return;
  }
  let [x0, x1] = [Math.min(...pts.map((p) => p[0])), Math.max(...pts.map((p) => p[0]))];
  let [y0, y1] = [Math.min(...pts.map((p) => p[1])), Math.max(...pts.map((p) => p[1]))];
  const pad = (a, b) => ((b - a) || Math.abs(a) || 1) * 0.08;
  [x0, x1] = [x0 - pad(x0, x1), x1 + pad(x0, x1)];
  [y0, y1] = [y0 - pad(y0, y1), y1 + pad(y0, y1)];
  const X = (x) => m.l + ((x - x0) / (x1 - x0)) * (w - m.l - m.r);
  const Y = (y) => h - m.b - ((y - y0) / (y1 - y0)) * (h - m.t - m.b);
  const label = (v, log) => fmt(log ? 10 ** v : v);
  g.strokeStyle = "#ddd";
  g.lineWidth = 1;
  for (const t of logX ? logTicks(x0, x1) : ticks(x0, x1)) {
    g.beginPath(); g.moveTo(X(t), m.t); g.lineTo(X(t), h - m.b); g.stroke();
    g.fillText(label(t, logX), X(t) - 10, h - m.b + 14);
  }
  for (const t of logY ? logTicks(y0, y1) : ticks(y0, y1)) {
    g.beginPath(); g.moveTo(m.l, Y(t)); g.lineTo(w - m.r, Y(t)); g.stroke();
    g.fillText(label(t, logY), 4, Y(t) + 4);
  }
  g.fillStyle = "#333";
  const xl = `${xLabel}${logX ? " (log)" : ""}`, yl = `${yLabel}${logY ? " (log)" : ""}`;
  g.fillText(xl, m.l + (w - m.l) / 2 - xl.length * 3, h - 6);
  g.save(); g.translate(12, m.t + (h - m.b) / 2); g.rotate(-Math.PI / 2); g.fillText(yl, -yl.length * 3, 0); g.restore();
  // What the readout names for each drawn point: its series and its own (not log) values.
  canvas.readoutPoints = series.flatMap((s) => s.points
    .filter(([x, y]) => Number.isFinite(tx(x)) && Number.isFinite(ty(y)))
    .map(([x, y, tag]) => ({
      px: X(tx(x)), py: Y(ty(y)),
      text: `${s.label}: ${xLabel} ${fmt(x)}, ${yLabel} ${fmt(y)}${tag != null ? ` (step ${tag})` : ""}`,
    })));
  series.forEach((s, i) => {
    const c = s.color ?? color(i);
    const p = shown[i];
    g.strokeStyle = g.fillStyle = c;
    g.lineWidth = s.highlight ? 4 : 2;
    // A trajectory (scatter with several points) is joined in order; a single point stands alone.
    if (p.length > 1) {
      g.beginPath();
      p.forEach(([x, y], k) => (k ? g.lineTo(X(x), Y(y)) : g.moveTo(X(x), Y(y))));
      g.stroke();
    }
    for (const [x, y, tag] of p) {
      if (s.scatter || p.length < 40) { g.beginPath(); g.arc(X(x), Y(y), s.scatter ? (s.highlight ? 7 : 5) : 2.5, 0, 2 * Math.PI); g.fill(); }
      if (tag != null) g.fillText(String(tag), X(x) + 7, Y(y) - 6);
    }
    if (i < 12) {
      g.fillRect(w - m.r - 170, m.t + 6 + i * 16, 10, 10);
      g.fillText(s.label.slice(0, 26), w - m.r - 155, m.t + 15 + i * 16);
    }
  });
}

/**
 * A readout of the point nearest the mouse (within 24 px), or, with the chart focused, of the
 * point the arrow keys step to; shown beside the point and announced politely. Attached once per
 * canvas; each drawing replaces `canvas.readoutPoints`.
 */
function attachReadout(canvas) {
  if (canvas.readoutBox) return;
  const box = document.createElement("div");
  box.className = "readout";
  box.hidden = true;
  box.setAttribute("aria-live", "polite");
  canvas.after(box);
  canvas.readoutBox = box;
  canvas.tabIndex = 0;
  canvas.parentElement.style.position = "relative";
  let at = -1;
  const show = (k) => {
    const p = canvas.readoutPoints[k];
    box.hidden = !p;
    if (!p) return;
    at = k;
    box.textContent = p.text;
    box.style.left = `${canvas.offsetLeft + Math.max(0, Math.min(p.px + 10, canvas.clientWidth - 260))}px`;
    box.style.top = `${canvas.offsetTop + Math.max(0, p.py - 34)}px`;
  };
  canvas.addEventListener("mousemove", (e) => {
    const r = canvas.getBoundingClientRect();
    const [x, y] = [e.clientX - r.left, e.clientY - r.top];
    let best = -1;
    let near = 24 ** 2;
    canvas.readoutPoints.forEach((p, k) => {
      const d = (p.px - x) ** 2 + (p.py - y) ** 2;
      if (d < near) [best, near] = [k, d];
    });
    show(best);
  });
  canvas.addEventListener("mouseleave", () => (box.hidden = true));
  canvas.addEventListener("blur", () => (box.hidden = true));
  canvas.addEventListener("keydown", (e) => {
    const n = canvas.readoutPoints.length;
    if (!n) return;
    if (e.key === "ArrowRight" || e.key === "ArrowDown") show((at + 1) % n);
    else if (e.key === "ArrowLeft" || e.key === "ArrowUp") show((at - 1 + n) % n);
    else if (e.key === "Escape") box.hidden = true;
    else return;
    e.preventDefault();
  });
}

/** The chart's numbers as a table (one row per point: series, x, y), for screen readers. */
export function chartTable(table, { series, xLabel, yLabel }) {
  const row = (cells, tag) => {
    const tr = document.createElement("tr");
    for (const c of cells) {
      const td = document.createElement(tag);
      td.textContent = typeof c === "number" ? +c.toPrecision(6) : c;
      tr.append(td);
    }
    return tr;
  };
  table.tHead.replaceChildren(row(["series", xLabel, yLabel], "th"));
  table.tBodies[0].replaceChildren(...series.flatMap((s) => s.points.filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y)).map(([x, y]) => row([s.label, x, y], "td"))));
}
