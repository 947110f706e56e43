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
  return spec;
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
  return { kind: "file", name: file.name, bytes: new Uint8Array(await file.arrayBuffer()) };
}
