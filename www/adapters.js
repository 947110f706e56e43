// Each LoRA run's PEFT adapter kept in IndexedDB (files by run id), so a finished run's adapter
// can still be downloaded after a reload. The run records themselves stay in localStorage
// (runs.js); an adapter is megabytes, beyond what localStorage holds.

const DB = "tunelab";
const STORE = "adapters";

function open() {
  return new Promise((resolve, reject) => {
    const request = indexedDB.open(DB, 1);
    request.onupgradeneeded = () => request.result.createObjectStore(STORE);
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

// Run `work(store)` in one transaction; resolves with the value of the request it returns, once
// the transaction has committed.
async function transact(mode, work) {
  const db = await open();
  try {
    return await new Promise((resolve, reject) => {
      const tx = db.transaction(STORE, mode);
      const request = work(tx.objectStore(STORE));
      tx.oncomplete = () => resolve(request?.result);
      tx.onerror = () => reject(tx.error);
      tx.onabort = () => reject(tx.error ?? new Error("the transaction was aborted"));
    });
  } finally {
    db.close();
  }
}

/// Keep the adapter files (name → Uint8Array) of run `id`; resolves with their size in bytes.
export async function put(id, files) {
  await transact("readwrite", (store) => store.put(files, id));
  return Object.values(files).reduce((n, bytes) => n + bytes.length, 0);
}

/// The adapter files of run `id`, or null when this browser does not hold them.
export const get = async (id) => (await transact("readonly", (store) => store.get(id))) ?? null;

/// Forget every kept adapter.
export const clear = () => transact("readwrite", (store) => store.clear());
