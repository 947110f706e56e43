// Minimal safetensors reader for the browser tests' reference values (F32 and I64 only).
import { readFileSync } from "node:fs";

export function readSafetensors(path) {
  const buf = readFileSync(path);
  const n = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + n).toString("utf8"));
  const out = {};
  for (const [name, t] of Object.entries(header)) {
    if (name === "__metadata__") continue;
    const [b, e] = t.data_offsets;
    const bytes = buf.subarray(8 + n + b, 8 + n + e);
    const copy = new Uint8Array(bytes).buffer;
    if (t.dtype === "F32") out[name] = { shape: t.shape, data: new Float32Array(copy) };
    else if (t.dtype === "I64") out[name] = { shape: t.shape, data: Array.from(new BigInt64Array(copy), Number) };
  }
  return out;
}
