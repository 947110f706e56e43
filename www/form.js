// The lab page's form: the run spec the form sets (only its own fields; every other setting
// takes the engine's `RunSpec` default), the data source, and the page's words for the engine's
// field names (errors name fields in backticks; the page shows its labels there).

const $ = (id) => document.getElementById(id);

/// Engine field → the label of the form control that sets it.
export const LABELS = {
  method: "Method",
  rank: "LoRA rank",
  alpha: "alpha",
  targets: "LoRA targets",
  lora_dropout: "LoRA dropout",
  optimizer: "Optimizer",
  lr: "Learning rate",
  weight_decay: "Weight decay",
  max_steps: "Steps",
  batch_size: "Batch",
  schedule: "Schedule",
  warmup: "Warm-up steps",
  seq_len: "Sequence length",
  regime: "Regime",
  holdout: "Held-out share",
  kernels: "GPU kernels",
};

/// An error message with engine field names (in backticks) replaced by form labels.
export function inLabels(message) {
  return message.replace(/`([a-z_]+)`/g, (whole, field) => LABELS[field] ?? whole);
}

/// A number from a form control, or an error naming its label.
function number(id, field) {
  const raw = $(id).value.trim();
  const v = Number(raw);
  if (raw === "" || !Number.isFinite(v)) throw new Error(`${LABELS[field]}: "${raw}" is not a number`);
  return v;
}

/// The run spec fields the form sets.
export function runSpec() {
  const spec = {
    method: $("method").value,
    optimizer: $("optimizer").value,
    lr: number("lr", "lr"),
    weight_decay: number("wd", "weight_decay"),
    max_steps: number("steps", "max_steps"),
    batch_size: number("batch", "batch_size"),
    schedule: $("schedule").value,
    warmup: number("warmup", "warmup"),
    seq_len: number("seq-len", "seq_len"),
    kernels: $("kernels").value,
    // Every step's loss is drawn live.
    log_every: 1,
  };
  if (spec.method === "lora") {
    spec.rank = number("rank", "rank");
    spec.targets = [$("targets").value];
    spec.lora_dropout = number("dropout", "lora_dropout");
    if ($("alpha").value.trim() !== "") spec.alpha = number("alpha", "alpha");
  }
  if ($("regime").value !== "auto") spec.regime = $("regime").value;
  // Own data has no test set: a held-out share of it is the learning metric.
  if (ownData()) spec.holdout = number("holdout", "holdout");
  return spec;
}

/// The runs a queue names, e.g. `full lr 5e-4, lora 4, lora 16 lr 0.002`: a method each (`full`,
/// or `lora RANK`) with an optional learning rate; every other setting comes from the form.
export function parseQueue(text) {
  const items = text.split(",").map((s) => s.trim()).filter(Boolean);
  if (items.length === 0) throw new Error("Compare: name at least one run, e.g. full, lora 4, lora 16");
  return items.map((item) => {
    const m = /^(?:(full)|lora\s+(\d+))(?:\s+lr\s+(\S+))?$/i.exec(item);
    if (!m) throw new Error(`Compare: "${item}" is not a run (write full or lora RANK, optionally followed by lr RATE)`);
    const rank = m[2] === undefined ? null : Number(m[2]);
    if (rank === 0) throw new Error(`Compare: "${item}": the rank must be at least 1`);
    const lr = m[3] === undefined ? null : Number(m[3]);
    if (lr !== null && !(lr > 0 && Number.isFinite(lr))) throw new Error(`Compare: "${item}": the learning rate must be a positive number`);
    return { method: m[1] ? "full" : "lora", rank, lr };
  });
}

/// True when the data is the user's own (a URL or a file), not a preset with its own test set.
export const ownData = () => ["url", "file"].includes($("data-preset").value);

/// The run spec fields a checkpoint's `trainer_state.json` (`state`) holds, as the page labels
/// runs by them (the data's sequence length, `seqLen`, is the form's).
export function checkpointSpec(state, seqLen) {
  const c = state?.config;
  if (!c?.method) throw new Error("trainer_state.json: no run settings (not a checkpoint written by tunelab)");
  const lora = c.method.method === "lora";
  return {
    method: c.method.method, lr: c.lr, max_steps: c.max_steps, batch_size: c.batch_size, seq_len: seqLen,
    ...(lora ? { rank: c.method.rank, alpha: c.method.alpha } : {}),
  };
}

/// A run's label: what tells it apart from other runs.
export function runLabel(spec, data) {
  const alpha = spec.alpha != null ? ` α ${spec.alpha}` : "";
  const method = spec.method === "lora" ? `LoRA r${spec.rank}${alpha}` : "full";
  return `${method} lr ${spec.lr}, ${spec.max_steps} steps × batch ${spec.batch_size} × ${spec.seq_len}, ${data}`;
}

/// The training data the form names: generated math problems, a URL, or a chosen file.
export async function dataSource(abs) {
  const preset = $("data-preset").value;
  if (preset === "math") return { kind: "math", train: Number($("math-train").value), test: Number($("math-test").value), seed: 0 };
  if (preset === "code") return { kind: "url", url: abs("../data/code/train.txt.gz"), name: "train.txt.gz" };
  if (preset === "url") {
    if (!$("data").value) throw new Error("enter a data URL");
    return { kind: "url", url: abs($("data").value), name: new URL(abs($("data").value)).pathname.split("/").pop() };
  }
  const file = $("data-file").files[0];
  if (!file) throw new Error("choose a data file");
  // The File itself goes to the worker (a handle, not the bytes): the engine reads it from disk
  // as it tokenizes.
  return { kind: "file", name: file.name, file };
}

/// The target a run trains on, as runs are grouped by: `math`, `code`, or the data file's name.
export function targetName() {
  const preset = $("data-preset").value;
  if (preset === "math" || preset === "code") return preset;
  if (preset === "url") return $("data").value.trim().split(/[?#]/)[0].split("/").pop() || "url";
  return $("data-file").files[0]?.name ?? "file";
}

/// The native commands that train what the form describes (`model` as the page names it): the
/// run spec as a file (the same schema the engine reads), then `tunelab train --spec`.
export function cliCommand(spec, model) {
  const quote = (v) => (/^[\w./:@=,+-]+$/.test(String(v)) ? String(v) : `'${String(v).replaceAll("'", "'\\''")}'`);
  const preset = $("data-preset").value;
  const lines = [`cat > run.json <<'EOF'\n${JSON.stringify(spec, null, 2)}\nEOF`];
  let data;
  if (preset === "math") {
    lines.push(`tunelab make-data math --train ${$("math-train").value} --test ${$("math-test").value} --seed 0 --out data/math-page`);
    data = "data/math-page/train.jsonl";
  } else if (preset === "code") data = "data/code/train.txt.gz";
  else if (preset === "url") data = $("data").value.trim() || "DATA";
  else data = $("data-file").files[0]?.name ?? "DATA";
  lines.push(`tunelab train ${quote(model)} --data ${quote(data)} --spec run.json --out runs/page-run`);
  return lines.join("\n");
}

/// A link to this page with every setting of the form (never a token or a file).
export function shareLink() {
  const url = new URL(location.href);
  url.search = "";
  for (const el of document.querySelectorAll("fieldset input, fieldset select")) {
    if (!el.id || el.type === "password" || el.type === "file") continue;
    url.searchParams.set(el.id, el.type === "checkbox" ? (el.checked ? "1" : "0") : el.value);
  }
  return url.href;
}
