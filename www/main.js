// The page: reads the form, hands the work to the worker, shows progress and results.
// Query parameters (?model=…&tokens=…&text=…&autorun=1) pre-fill the form (used by tests).

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
for (const key of ["model", "tokens", "text"]) {
  if (params.has(key)) $(key).value = params.get(key);
}

function setStatus(text, state = "busy") {
  $("status").textContent = text;
  $("status").dataset.state = state;
}

if (!("gpu" in navigator)) {
  setStatus("This browser has no WebGPU (navigator.gpu is missing). Use a recent Chrome, Edge or Firefox with WebGPU enabled.", "error");
  $("run").disabled = true;
}

const worker = new Worker(new URL("./worker.js", import.meta.url), { type: "module" });
worker.onmessage = ({ data }) => {
  if (data.type === "progress") {
    const p = data.event;
    if (p.total) {
      $("progress").max = p.total;
      $("progress").value = p.done;
    }
    setStatus(`${p.task}: ${p.done} / ${p.total ?? "?"} bytes`);
  } else if (data.type === "result") {
    const r = data.result;
    $("result").textContent = JSON.stringify(
      { shape: r.shape, first: r.logits.slice(0, 8), score: r.score, ms: r.ms },
      null, 2);
    $("result").dataset.json = JSON.stringify(r);
    setStatus(`done in ${r.ms.total.toFixed(0)} ms`, "done");
  } else if (data.type === "error") {
    setStatus(`error: ${data.message}`, "error");
  }
};
worker.onerror = (e) => setStatus(`worker failed: ${e.message}`, "error");

$("form").addEventListener("submit", (e) => {
  e.preventDefault();
  const tokens = $("tokens").value.split(",").map((s) => Number(s.trim()));
  if (tokens.some((t) => !Number.isInteger(t) || t < 0)) {
    setStatus("token ids must be non-negative integers separated by commas", "error");
    return;
  }
  setStatus("starting…");
  worker.postMessage({ type: "logits", model: new URL($("model").value, location.href).href, tokens, text: $("text").value });
});

if (params.get("autorun") === "1") $("form").requestSubmit();
