// Runs as first-class objects: each run's settings, status, trajectory of evaluations and timing,
// the base model's scores per (model, target) pair, kept in localStorage across reloads and
// exported / imported as one JSON file. No drawing here (view.js) and no engine calls (main.js).

const KEY = "tunelab.runs.v1";
const FORMAT = "tunelab-runs";

/// The key of a base point: runs are compared against the base model on the same target.
export const pairKey = (model, target) => `${model} | ${target}`;

/// The learning metric of a target: GSM8K answer loss for the math preset, the code test text's
/// perplexity for the code preset, the held-out share's perplexity for the user's own data.
export const learningKeyOf = (target) =>
  target === "math" ? "math/answer_loss" : target === "code" ? "target/perplexity" : "heldout/perplexity";

/// The state that is kept: runs (newest last) and base metrics by pair key.
export function load(storage = globalThis.localStorage) {
  try {
    const saved = JSON.parse(storage?.getItem(KEY) ?? "null");
    if (saved?.format === FORMAT) return { runs: saved.runs ?? [], bases: saved.bases ?? {} };
  } catch {
    // A corrupt entry starts an empty lab rather than breaking the page.
  }
  return { runs: [], bases: {} };
}

/// Keep `runs` and `bases`; a full storage quota is reported, not thrown.
export function save({ runs, bases }, storage = globalThis.localStorage) {
  try {
    storage?.setItem(KEY, JSON.stringify({ format: FORMAT, runs: runs.map(stored), bases }));
    return null;
  } catch (e) {
    return `runs not kept across reloads: ${e.message}`;
  }
}

// What is kept of a run: everything but the live flags.
const stored = ({ visible, ...run }) => ({ ...run, visible: visible !== false });

/// All runs and bases as one JSON document (the export file).
export const exportJson = ({ runs, bases }) => JSON.stringify({ format: FORMAT, version: 1, runs: runs.map(stored), bases }, null, 1);

/// Merge an exported document into `state` (runs by id, newer bases win); returns how many runs
/// were added, or throws naming what is wrong with the file.
export function importJson(state, text) {
  let doc;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    throw new Error(`not a runs file: ${e.message}`);
  }
  if (doc?.format !== FORMAT || !Array.isArray(doc.runs)) throw new Error(`not a runs file (expected "format": "${FORMAT}")`);
  const have = new Set(state.runs.map((r) => r.id));
  const added = doc.runs.filter((r) => r && typeof r.id === "string" && !have.has(r.id) && Array.isArray(r.evals));
  state.runs.push(...added);
  Object.assign(state.bases, doc.bases ?? {});
  return added.length;
}

/// A new run record.
export function newRun({ spec, label, model, target, data }) {
  return {
    id: `${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`,
    label, spec, model, target, data,
    status: "training", started: new Date().toISOString(),
    evals: [], losses: [], steps: 0, ms: 0, visible: true,
  };
}

/// A run's points on the learning–forgetting plane: one per evaluation, in step order, tagged
/// with its step.
export function trajectory(run, key) {
  return run.evals
    .filter((e) => Number.isFinite(e.metrics[key]) && Number.isFinite(e.metrics["forgetting/score"]))
    .sort((a, b) => a.step - b.step)
    .map((e) => [e.metrics[key], e.metrics["forgetting/score"], e.step]);
}

/// The last evaluation's metrics (the run's result), or {}.
export const finalMetrics = (run) => run.evals.reduce((last, e) => (e.step >= (last.step ?? -1) ? e : last), {}).metrics ?? {};
