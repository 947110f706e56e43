// The page's side of the worker protocol (see worker.js): each request gets an id; the worker's
// events and its one reply or error carry that id, so overlapping requests (a "Generate" click
// during a run) each resolve with their own answer and an error rejects only its own request.

/// A client for the engine worker at `url`; `onNotice` receives messages that concern no request.
export function engine(url, onNotice) {
  const worker = new Worker(url, { type: "module" });
  const pending = new Map();
  let next = 1;
  worker.onmessage = ({ data }) => {
    const p = pending.get(data.id);
    if (!p) {
      if (data.type === "notice") onNotice(data.message);
      return;
    }
    if (data.type === "event") {
      p.onEvent(data.event);
      return;
    }
    pending.delete(data.id);
    if (data.type === "reply") p.resolve(data.result);
    else p.reject(Object.assign(new Error(data.message), { field: data.field ?? null, device: data.device ?? false }));
  };
  const failAll = (message) => {
    for (const p of pending.values()) p.reject(new Error(message));
    pending.clear();
  };
  worker.onerror = (e) => failAll(`worker failed: ${e.message}`);
  return {
    /// Send request `type` with `payload`; resolves with its reply, calling `onEvent` with each
    /// event (progress, step, …) the worker sends about it.
    request(type, payload = {}, onEvent = () => {}) {
      const id = next++;
      return new Promise((resolve, reject) => {
        pending.set(id, { resolve, reject, onEvent });
        worker.postMessage({ id, type, ...payload });
      });
    },
    /// Requests still waiting for their reply.
    get pending() {
      return pending.size;
    },
  };
}
