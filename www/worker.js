// The Web Worker that hosts the wasm engine: all model loading and GPU work happens here.
import init, { loadModel } from "./pkg/tunelab.js";

const ready = init();
const sessions = new Map();

self.onmessage = async ({ data }) => {
  try {
    await ready;
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
