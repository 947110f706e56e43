// A small canvas chart (lines or scatter, axes with ticks, legend), sized to the canvas' CSS box
// and the device pixel ratio. Lighter than a charting library for the page's three charts.
const COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"];

function ticks(lo, hi, n = 5) {
  const step = 10 ** Math.floor(Math.log10((hi - lo) / n || 1));
  const nice = [1, 2, 5, 10].map((m) => m * step).find((s) => (hi - lo) / s <= n) ?? step * 10;
  const out = [];
  for (let v = Math.ceil(lo / nice) * nice; v <= hi + 1e-12; v += nice) out.push(v);
  return out;
}

const fmt = (v) => (Math.abs(v) >= 1000 || (Math.abs(v) < 0.01 && v !== 0) ? v.toExponential(1) : +v.toPrecision(3));

/** Draw `series` ([{label, points: [[x, y]], scatter}]) on `canvas`. */
export function lineChart(canvas, { series, xLabel, yLabel }) {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth || 400, h = canvas.clientHeight || 260;
  canvas.width = w * dpr;
  canvas.height = h * dpr;
  const g = canvas.getContext("2d");
  g.scale(dpr, dpr);
  g.clearRect(0, 0, w, h);
  g.font = "12px system-ui, sans-serif";
  const pts = series.flatMap((s) => s.points).filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y));
  const m = { l: 56, r: 12, t: 10, b: 36 };
  g.fillStyle = "#555";
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
  g.strokeStyle = "#ddd";
  g.lineWidth = 1;
  for (const t of ticks(x0, x1)) {
    g.beginPath(); g.moveTo(X(t), m.t); g.lineTo(X(t), h - m.b); g.stroke();
    g.fillText(fmt(t), X(t) - 10, h - m.b + 14);
  }
  for (const t of ticks(y0, y1)) {
    g.beginPath(); g.moveTo(m.l, Y(t)); g.lineTo(w - m.r, Y(t)); g.stroke();
    g.fillText(fmt(t), 4, Y(t) + 4);
  }
  g.fillStyle = "#333";
  g.fillText(xLabel, m.l + (w - m.l) / 2 - xLabel.length * 3, h - 6);
  g.save(); g.translate(12, m.t + (h - m.b) / 2); g.rotate(-Math.PI / 2); g.fillText(yLabel, -yLabel.length * 3, 0); g.restore();
  series.forEach((s, i) => {
    const c = COLORS[i % COLORS.length];
    const p = s.points.filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y));
    g.strokeStyle = g.fillStyle = c;
    g.lineWidth = 2;
    if (!s.scatter && p.length > 1) {
      g.beginPath();
      p.forEach(([x, y], k) => (k ? g.lineTo(X(x), Y(y)) : g.moveTo(X(x), Y(y))));
      g.stroke();
    }
    for (const [x, y] of p) {
      if (s.scatter || p.length < 40) { g.beginPath(); g.arc(X(x), Y(y), s.scatter ? 5 : 2.5, 0, 2 * Math.PI); g.fill(); }
    }
    g.fillRect(w - m.r - 170, m.t + 6 + i * 16, 10, 10);
    g.fillText(s.label, w - m.r - 155, m.t + 15 + i * 16);
  });
}
