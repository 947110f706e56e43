// The Web Worker that hosts the wasm engine: all model loading and GPU work happens here.
import init, { loadModel } from "./pkg/tunelab.js";

const ready = init();
const sessions = new Map();

self.onmessage = async ({ data }) => {
  try {
    await ready;
    if (data.type === "train") return await train(data);
    if (data.type !== "logits") throw new Error(`unknown request ${data.type}`);
    const t0 = performance.now();
    let session = sessions.get(data.model);
    if (!session) {
      session = await loadModel(data.model, (event) => {
        if (event.event === "progress") self.postMessage({ type: "progress", event });
      });
      sessions.set(data.model, session);
    }
    const t1 = performance.now();
    const logits = await session.logits(Uint32Array.from(data.tokens));
    const t2 = performance.now();
    const score = data.text ? await session.scoreText(data.text) : null;
    const t3 = performance.now();
    self.postMessage({
      type: "result",
      result: {
        shape: [data.tokens.length, session.vocabSize],
        logits: Array.from(logits),
        score,
        ms: { load: t1 - t0, logits: t2 - t1, score: t3 - t2, total: t3 - t0 },
      },
    });
  } catch (e) {
    self.postMessage({ type: "error", message: String(e?.message ?? e) });
  }
};

async function session(model) {
  let s = sessions.get(model);
  if (!s) {
    s = await loadModel(model, (event) => {
      if (event.event === "progress") self.postMessage({ type: "progress", event });
    });
    sessions.set(model, s);
  }
  return s;
}

// Fine-tune on a text fetched from `data.data`; stream every step, return the checkpoint files.
async function train(data) {
  const t0 = performance.now();
  const s = await session(data.model);
  const response = await fetch(data.data);
  if (!response.ok) throw new Error(`training data ${data.data}: HTTP ${response.status}`);
  const text = await response.text();
  const steps = [];
  const result = await s.train(data.config, text, data.seqLen, (event) => {
    if (event.event === "step") {
      steps.push(event);
      self.postMessage({ type: "step", event });
    }
  });
  const files = {};
  for (const [name, bytes] of Object.entries(result.files)) files[name] = bytes;
  self.postMessage({ type: "trained", result: { summary: result.summary, steps, files, ms: performance.now() - t0 } });
}
