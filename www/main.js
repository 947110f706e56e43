// The page: reads the form, hands the work to the worker, shows progress and results.
// Query parameters (?model=…&tokens=…&text=…&autorun=1) pre-fill the form (used by tests).

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
for (const key of ["model", "tokens", "text", "data", "steps", "lr", "rank"]) {
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
  } else if (data.type === "step") {
    const e = data.event;
    $("losses").textContent = `step ${e.step}/${e.total_steps}: loss ${e.loss.toFixed(4)} (${e.tokens_per_s.toFixed(0)} tokens/s)`;
  } else if (data.type === "trained") {
    const r = data.result;
    $("losses").dataset.json = JSON.stringify({ summary: r.summary, steps: r.steps, files: Object.keys(r.files), ms: r.ms,
      adapter_config: r.files["adapter_config.json"] ? new TextDecoder().decode(r.files["adapter_config.json"]) : null });
    $("download").replaceChildren(...Object.entries(r.files).map(([name, bytes]) => {
      const a = document.createElement("a");
      a.href = URL.createObjectURL(new Blob([bytes]));
      a.download = name;
      a.textContent = `download ${name}`;
      a.style.marginRight = "1em";
      return a;
    }));
    setStatus(`trained ${r.summary.steps} steps in ${(r.ms / 1000).toFixed(1)} s, final loss ${r.summary.final_loss.toFixed(4)}`, "done");
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

$("train-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const steps = Number($("steps").value), rank = Number($("rank").value), lr = Number($("lr").value);
  if (!(steps >= 1 && rank >= 1 && lr > 0)) {
    setStatus("steps and rank must be at least 1 and the learning rate positive", "error");
    return;
  }
  setStatus("training…");
  const config = {
    method: { method: "lora", rank, alpha: 2 * rank, dropout: 0, rslora: false, init: "kaiming", targets: ["all"] },
    optimizer: { kind: "adamw", beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0 },
    lr, lora_plus_ratio: null, schedule: "constant", warmup_steps: 0, epochs: 1, max_steps: steps,
    max_tokens: null, batch_size: 4, grad_accum: 1, seed: 0, clip: 1.0, attention_dropout: 0,
    residual_dropout: 0, log_every: 1, eval_every: null, save_every: null,
  };
  worker.postMessage({ type: "train", model: new URL($("model").value, location.href).href,
    data: new URL($("data").value, location.href).href, config, seqLen: 32 });
});

if (params.get("autorun") === "1") $("form").requestSubmit();
if (params.get("autotrain") === "1") $("train-form").requestSubmit();
