// The Web Worker that hosts the wasm engine: model loading, tokenizing, training, evaluation and
// export all happen here, so the page never freezes. Requests are queued and run one at a time
// (the engine's session is not re-entrant); pause / resume / stop act between training chunks.
import init, { loadModel } from "./pkg/tunelab.js";

const ready = init();
const CACHE = "tunelab-models-v1";
let session = null;
let sessionModel = null;
let cacheModels = true;
let queue = Promise.resolve();
const run = { active: false, paused: false, stop: false, total: 0, step: 0, evalEvery: 0, evalRequest: null };

const post = (msg) => self.postMessage(msg);
const fail = (during) => (e) => post({ type: "error", during, message: String(e?.message ?? e) });

// Model files are cached with the Cache API, so a second visit loads without the network.
// The engine calls the global fetch, so caching wraps it here. The response goes to the engine
// at once (it streams each shard onto the GPU as it arrives) while a copy is written to the
// cache in the background; a Range request (the engine resuming a dropped download) bypasses it.
const networkFetch = self.fetch.bind(self);
const caching = new Set();
self.fetch = async (input, init) => {
  const url = typeof input === "string" ? input : input.url;
  const ranged = init?.headers && ("Range" in init.headers || "range" in init.headers);
  if (!cacheModels || ranged || !url.startsWith(sessionModel ?? "\u0000") || !("caches" in self)) {
    return networkFetch(input, init);
  }
  const cache = await caches.open(CACHE);
  const hit = await cache.match(url);
  if (hit) return hit;
  const response = await networkFetch(input, init);
  if (response.ok) {
    const put = cache.put(url, response.clone()).catch((e) => {
      const why = e.name === "QuotaExceededError" ? "browser storage quota exceeded" : e.message;
      post({ type: "notice", message: `not cached (${why}): ${url}` });
    });
    caching.add(put);
    put.finally(() => caching.delete(put));
  }
  return response;
};

async function storageUsage() {
  if (!navigator.storage?.estimate) return null;
  const { usage, quota } = await navigator.storage.estimate();
  return { usage, quota };
}

// The adapter's largest storage buffer binding: a model tensor or training buffer above it
// is refused up front with a message naming it (WebGPU's default is 128 MiB).
async function maxBinding() {
  const adapter = await navigator.gpu.requestAdapter();
  const limits = adapter?.limits;
  return limits ? Math.min(limits.maxStorageBufferBindingSize, limits.maxBufferSize) : 134217728;
}

async function load({ model, cache }) {
  const t0 = performance.now();
  sessionModel = model;
  cacheModels = cache !== false;
  session?.free();
  session = null;
  session = await loadModel(model, await maxBinding(), (event) => {
    if (event.event === "progress") post({ type: "progress", event });
  });
  const ms = performance.now() - t0;
  await Promise.allSettled([...caching]);
  post({ type: "loaded", model, vocabSize: session.vocabSize, config: session.config, ms, storage: await storageUsage() });
}

async function need(model) {
  if (!session || sessionModel !== model) await load({ model });
  return session;
}

// A data file, read as it streams in with download progress.
async function fetchBytes(url, what, name) {
  const response = await networkFetch(url);
  if (!response.ok) throw new Error(`${what} ${url}: HTTP ${response.status}`);
  const total = Number(response.headers.get("content-length")) || null;
  const reader = response.body.getReader();
  const parts = [];
  let done = 0;
  for (;;) {
    let chunk;
    try {
      chunk = await reader.read();
    } catch (e) {
      throw new Error(`${what} ${url}: download stopped after ${done} of ${total ?? "?"} bytes (${e.message}); try again`);
    }
    const { done: end, value } = chunk;
    if (end) break;
    parts.push(value);
    done += value.length;
    post({ type: "progress", event: { task: `downloading ${name}`, done, total, unit: "bytes" } });
  }
  if (total && done < total) throw new Error(`${what} ${url}: download stopped after ${done} of ${total} bytes; try again`);
  const bytes = new Uint8Array(done);
  let at = 0;
  for (const p of parts) {
    bytes.set(p, at);
    at += p.length;
  }
  return bytes;
}

async function setData({ model, source, regime, seqLen }) {
  const s = await need(model);
  const t0 = performance.now();
  const progress = (event) => {
    if (event.event === "progress") post({ type: "progress", event });
  };
  let summary;
  if (source.kind === "math") {
    summary = s.setMathData(source.train, source.test, source.seed, regime === "auto" ? "ift" : regime, seqLen, progress);
  } else {
    const bytes = source.kind === "url" ? await fetchBytes(source.url, "training data", source.name) : source.bytes;
    summary = s.setData(bytes, source.name, regime, seqLen, progress);
  }
  post({ type: "data", summary, ms: performance.now() - t0 });
}

async function start({ config, evalEvery, evalRequest }) {
  if (!session) throw new Error("load a model first");
  const info = session.startTraining(config, await maxBinding());
  Object.assign(run, { active: true, paused: false, stop: false, total: info.totalSteps, step: 0, evalEvery: evalEvery ?? 0, evalRequest, t0: performance.now() });
  post({ type: "started", info });
  await loop();
}

// Train in chunks up to the next evaluation point; between chunks pause/stop take effect.
async function loop() {
  const chunk = 1;
  while (run.active && !run.paused && !run.stop && run.step < run.total) {
    let next = Math.min(run.total, run.step + chunk);
    const r = await session.trainUntil(next, (event) => {
      if (event.event === "step") post({ type: "step", event });
    });
    run.step = r.step;
    if (run.evalEvery > 0 && run.step % run.evalEvery === 0 && run.step < run.total && run.evalRequest) {
      await evaluate({ request: run.evalRequest, step: run.step });
    }
  }
  if (run.paused) {
    post({ type: "paused", step: run.step });
    return;
  }
  run.active = false;
  post({ type: "finished", step: run.step, total: run.total, stopped: run.stop, ms: performance.now() - run.t0 });
}

async function evaluate({ request, step }) {
  const t0 = performance.now();
  const metrics = await session.evaluate(request, (event) => {
    if (event.event === "progress") post({ type: "evalProgress", event });
  });
  post({ type: "metrics", metrics, step: step ?? run.step, ms: performance.now() - t0 });
}

async function logits(data) {
  const t0 = performance.now();
  const s = await need(data.model);
  const t1 = performance.now();
  const out = await s.logits(Uint32Array.from(data.tokens));
  const t2 = performance.now();
  const score = data.text ? await s.scoreText(data.text) : null;
  const t3 = performance.now();
  post({
    type: "result",
    result: {
      shape: [data.tokens.length, s.vocabSize], logits: Array.from(out), score,
      ms: { load: t1 - t0, logits: t2 - t1, score: t3 - t2, total: t3 - t0 },
    },
  });
}

const handlers = {
  load,
  logits,
  data: setData,
  start,
  evaluate,
  resume: async () => {
    if (!run.active) throw new Error("no paused run to resume");
    run.paused = false;
    post({ type: "resumed", step: run.step });
    await loop();
  },
  generate: async ({ prompt, maxNewTokens, label }) => {
    post({ type: "generation", label, prompt, text: await session.generate(prompt, maxNewTokens) });
  },
  export: async ({ kind }) => post({ type: "files", kind, files: await session.export(kind) }),
  spectrum: async () => post({ type: "spectrum", summary: await session.spectrum() }),
  reset: async () => {
    session?.resetTraining();
    Object.assign(run, { active: false, paused: false, stop: false, step: 0, total: 0 });
    post({ type: "reset" });
  },
};

self.onmessage = ({ data }) => {
  // Pause and stop act at once (between chunks of the running loop); the rest wait their turn.
  if (data.type === "pause") {
    if (run.active) run.paused = true;
    return;
  }
  if (data.type === "stop") {
    if (run.active) {
      run.stop = true;
      if (run.paused) {
        run.paused = false;
        queue = queue.then(loop).catch(fail("stop"));
      }
    }
    return;
  }
  const handler = handlers[data.type];
  if (!handler) return post({ type: "error", during: data.type, message: `unknown request ${data.type}` });
  queue = queue
    .then(() => ready)
    .then(() => handler(data))
    .catch((e) => {
      // A failed request leaves the worker usable: the run is dropped, the model stays.
      if (data.type === "start" || data.type === "resume") run.active = false;
      fail(data.type)(e);
    });
};
