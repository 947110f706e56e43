// The Web Worker that hosts the wasm engine: model loading, tokenizing, training, evaluation and
// export all happen here, so the page never freezes.
//
// Protocol (www/protocol.js is the page's side): every request is {id, type, ...}; everything the
// worker sends about it carries the same id — events {id, type: "event", event} while it runs,
// then exactly one {id, type: "reply", result} or {id, type: "error", message, field, device}
// (device: the GPU device was lost, and the model with it; the next load gets a new one). Messages
// with no id (notices) concern no request. Requests run one at a time in arrival order (the
// engine's session is not re-entrant); "pause" and "stop" act at once, between training chunks.
// The run's step and total come from the engine (the Rust `Run` owns them); the worker keeps only
// whether a pause or stop was asked for.
import init, { benchOps, gpuLost, loadModel, resolveModelUrl, validateRunSpec } from "./pkg/tunelab.js";

const ready = init();
const CACHE = "tunelab-models-v1";
let session = null;
let sessionModel = null;
// The URL the session's files come from (a Hub id resolved): the prefix the cache applies to.
let sessionUrl = null;
let cacheModels = true;
let queue = Promise.resolve();
// Loop control of the current run: the chunked training loop reads these between chunks.
// `memory`: the most device memory in use after a step of the run (the model, the run's trainable
// copy, gradients and optimizer state; activations are freed by then) and the allocator's
// reserved pages, in bytes.
const control = { active: false, pause: false, stop: false, evalEvery: 0, evalRequest: null, t0: 0, memory: null };

const post = (msg) => self.postMessage(msg);

// Model files are cached with the Cache API, so a second visit loads without the network.
// The engine calls the global fetch, so caching wraps it here. The response goes to the engine
// at once (it streams each shard onto the GPU as it arrives) while a copy is written to the
// cache in the background; a Range request (the engine resuming a dropped download) bypasses it.
const networkFetch = self.fetch.bind(self);
const caching = new Set();
self.fetch = async (input, init) => {
  const url = typeof input === "string" ? input : input.url;
  const ranged = new Headers(init?.headers).has("range");
  if (!cacheModels || ranged || !url.startsWith(sessionUrl ?? "\u0000") || !("caches" in self)) {
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

// `model`: a URL (relative to the page), or a Hub id `org/name[@revision]` (optionally
// `/file.gguf`). `token` is sent to the Hub only and kept in this worker's memory, never stored.
async function load({ model, cache, token, endpoint, f16 }, emit) {
  const t0 = performance.now();
  sessionModel = model;
  sessionUrl = new URL(resolveModelUrl(model, endpoint ?? ""), self.location.href).href;
  cacheModels = cache !== false;
  // A new model ends any run of the old one.
  Object.assign(control, { active: false, pause: false, stop: false });
  session?.free();
  session = null;
  session = await loadModel(sessionUrl, await maxBinding(), (event) => {
    if (event.event === "progress") emit(event);
  }, token || undefined, endpoint || undefined, f16 === true);
  const ms = performance.now() - t0;
  await Promise.allSettled([...caching]);
  return {
    model, f16: f16 === true, vocabSize: session.vocabSize, config: session.config, chat: session.hasChatTemplate,
    ms, memory: session.memory(), storage: await storageUsage(),
  };
}

// The session of `model`, loading it first (with the request's cache/token/endpoint) if needed:
// also when the GPU device it lived on was lost meanwhile (the engine then starts a fresh one).
async function need(model, emit, how = {}) {
  if (!session || sessionModel !== model || gpuLost()) await load({ ...how, model }, emit);
  return session;
}

// The GPU device was lost (destroyed, reset, or a readback failed): the session's model and run
// went with it. The next request that needs a model loads it again on a fresh device.
function dropSession() {
  Object.assign(control, { active: false, pause: false, stop: false });
  try {
    session?.free();
  } catch {
    // Freeing handles of a lost device may fail; the session is unusable either way.
  }
  session = null;
  sessionModel = null;
}

// Tokenize training data as `spec` says (seq_len, regime); the spec is the page's partial one.
async function setData({ model, source, spec }, emit) {
  const s = await need(model, emit);
  const t0 = performance.now();
  const progress = (event) => {
    if (event.event === "progress") emit(event);
  };
  // A URL or a file is tokenized as its bytes arrive: the file is never whole in memory.
  let summary;
  if (source.kind === "math") {
    summary = s.setMathData(source.train, source.test, source.seed, spec, progress);
  } else if (source.kind === "url") {
    summary = await s.setDataUrl(new URL(source.url, self.location.href).href, source.name, spec, progress);
  } else {
    summary = await s.setDataFile(source.file, source.name, spec, progress);
  }
  return { summary, ms: performance.now() - t0 };
}

// Make the run `open(maxBinding)` returns the info of (directly or as a promise), then train it
// (see `loop`).
async function begin({ evalEvery, evalRequest }, emit, open) {
  if (!session) throw new Error("load a model first");
  // Active before any await, so a pause or stop sent meanwhile is not lost.
  Object.assign(control, { active: true, pause: false, stop: false, evalEvery: evalEvery ?? 0, evalRequest, t0: performance.now(), memory: null });
  const info = await open(await maxBinding());
  emit({ event: "started", info: { ...info, memory: session.memory() } });
  return loop(emit);
}

// Start a run of `spec`; resolves when the run pauses or finishes.
const start = (request, emit) => begin(request, emit, (max) => session.startTraining(request.spec, max));
// Continue the run of a checkpoint (`files`: name → bytes, as the checkpoint export gives them)
// on the data set with "data".
const resumeFrom = (request, emit) => begin(request, emit, (max) => session.resumeTraining(request.files, request.name, max));

// Train in chunks of one step, so pause, stop and evaluations act at step granularity; periodic
// evaluations run between chunks. Resolves {state: "paused" | "finished", step, total, stopped, ms,
// memory}.
async function loop(emit) {
  let r = session.progress();
  while (!r.done && !control.pause && !control.stop) {
    r = await session.trainSteps(1, (event) => {
      if (event.event === "step") emit(event);
    });
    const m = session.memory();
    if (m) control.memory = { inUse: Math.max(m.inUse, control.memory?.inUse ?? 0), reserved: Math.max(m.reserved, control.memory?.reserved ?? 0) };
    if (!r.done && control.evalEvery > 0 && r.step % control.evalEvery === 0 && control.evalRequest) {
      const metrics = await evaluate({ request: control.evalRequest }, emit);
      emit({ event: "metrics", step: r.step, ...metrics });
    }
  }
  const ms = performance.now() - control.t0;
  const memory = control.memory;
  if (control.pause && !control.stop && !r.done) return { state: "paused", step: r.step, total: r.totalSteps, ms, memory };
  control.active = false;
  return { state: "finished", step: r.step, total: r.totalSteps, stopped: control.stop, ms, memory };
}

async function evaluate({ request }, emit) {
  const t0 = performance.now();
  const metrics = await session.evaluate(request, (event) => {
    if (event.event === "progress") emit(event);
  });
  return { metrics, ms: performance.now() - t0 };
}

async function logits(data, emit) {
  const t0 = performance.now();
  const s = await need(data.model, emit, data);
  const t1 = performance.now();
  const out = await s.logits(Uint32Array.from(data.tokens));
  const t2 = performance.now();
  const score = data.text ? await s.scoreText(data.text) : null;
  const t3 = performance.now();
  return {
    shape: [data.tokens.length, s.vocabSize], logits: Array.from(out), score,
    ms: { load: t1 - t0, logits: t2 - t1, score: t3 - t2, total: t3 - t0 }, memory: s.memory(),
  };
}

// The adapter the engine runs on: what it is and the limits that decide which models fit.
async function gpuInfo() {
  const adapter = await navigator.gpu?.requestAdapter();
  if (!adapter) return null;
  const info = adapter.info ?? {};
  const l = adapter.limits;
  return {
    vendor: info.vendor || "", architecture: info.architecture || "", device: info.device || "", description: info.description || "",
    limits: {
      maxBufferSize: l.maxBufferSize, maxStorageBufferBindingSize: l.maxStorageBufferBindingSize,
      maxComputeWorkgroupStorageSize: l.maxComputeWorkgroupStorageSize,
      maxComputeInvocationsPerWorkgroup: l.maxComputeInvocationsPerWorkgroup,
    },
    f16: adapter.features.has("shader-f16"), subgroups: adapter.features.has("subgroups"),
  };
}

// What the model cache holds, by model (the URL up to its last `/`): files, bytes.
async function cacheList() {
  const models = {};
  if ("caches" in self) {
    const cache = await caches.open(CACHE);
    for (const request of await cache.keys()) {
      const base = request.url.slice(0, request.url.lastIndexOf("/") + 1);
      const response = await cache.match(request);
      const bytes = Number(response?.headers.get("content-length")) || (await response.blob()).size;
      models[base] ??= { model: base, files: 0, bytes: 0 };
      models[base].files += 1;
      models[base].bytes += bytes;
    }
  }
  return { models: Object.values(models), storage: await storageUsage() };
}

// Delete every cached file of the model whose URLs start with `model`.
async function cacheDelete({ model }) {
  const cache = await caches.open(CACHE);
  let files = 0;
  for (const request of await cache.keys()) {
    if (request.url.startsWith(model) && (await cache.delete(request))) files += 1;
  }
  return { files, ...(await cacheList()) };
}

const handlers = {
  load,
  gpu: gpuInfo,
  cacheList,
  cacheDelete,
  logits,
  data: setData,
  start,
  resumeFrom,
  evaluate,
  // The spec with every default filled in, or an error naming the field.
  validate: async ({ spec }) => validateRunSpec(spec),
  // The pause flag was cleared when the request arrived; an ended run has nothing to resume.
  resume: async (_, emit) => (control.active ? loop(emit) : {}),
  // Tokens stream as {event: "token", text}; the reply is {text, prompt}.
  generate: async ({ prompt, options }, emit) => {
    if (!session) throw new Error("load a model first");
    return session.generate(prompt, options, (event) => {
      if (event.event === "token") emit(event);
    });
  },
  export: async ({ kind }) => {
    if (!session) throw new Error("load a model first");
    return { kind, files: await session.export(kind) };
  },
  spectrum: async () => {
    if (!session) throw new Error("load a model first");
    return session.spectrum();
  },
  // Stopping a paused run: its loop ends at once, as finished (stopped) — unless the run
  // ended meanwhile.
  stop: async (_, emit) => (control.active ? loop(emit) : {}),
  // Each hot-path op timed alone with tunelab's kernels and burn's (scripts/bench-browser.mjs ops).
  benchOps: async ({ preset, batch, seq, reps }, emit) => benchOps(preset, batch, seq, reps, await maxBinding(), emit),
  reset: async () => {
    session?.resetTraining();
    Object.assign(control, { active: false, pause: false, stop: false });
    return {};
  },
};

self.onmessage = ({ data }) => {
  const { id, type } = data;
  // Flags act when the message arrives: pause and stop between chunks of the running loop
  // (whose request then resolves as paused or finished). Resuming, or stopping a paused run,
  // also needs the loop run again, in turn.
  const paused = control.active && control.pause;
  if (type === "pause" || type === "stop") {
    if (control.active) control[type] = true;
    if (!(type === "stop" && paused)) return post({ id, type: "reply", result: {} });
  }
  if (type === "resume" && control.active) control.pause = false;
  const handler = handlers[type];
  if (!handler) return post({ id, type: "error", message: `unknown request ${type}` });
  const emit = (event) => post({ id, type: "event", event });
  queue = queue
    .then(() => ready)
    .then(() => handler(data, emit))
    .then((result) => post({ id, type: "reply", result }))
    .catch(async (e) => {
      // A failed training request ends the run's loop; the model and the engine's run stay,
      // unless the device they lived on was lost.
      if (type === "start" || type === "resume" || type === "resumeFrom") control.active = false;
      const device = Boolean(e?.device) || (await ready.then(() => gpuLost(), () => false));
      if (device) dropSession();
      post({ id, type: "error", message: String(e?.message ?? e), field: e?.field ?? null, device });
    });
};
