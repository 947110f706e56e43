// Minimal safetensors reader for the browser tests' reference values and downloads (F32, F16
// widened to f32, I64).
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
    else if (t.dtype === "F16") out[name] = { shape: t.shape, data: Float32Array.from(new Uint16Array(copy), f16) };
    else if (t.dtype === "I64") out[name] = { shape: t.shape, data: Array.from(new BigInt64Array(copy), Number) };
  }
  return out;
}

/// IEEE half → number.
function f16(h) {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0) return sign * 2 ** -14 * (frac / 1024);
  if (exp === 31) return frac ? NaN : sign * Infinity;
  return sign * 2 ** (exp - 15) * (1 + frac / 1024);
}
