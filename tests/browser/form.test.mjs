// The page's form logic that needs no browser: the Compare field's queue of runs.
import { test } from "node:test";
import assert from "node:assert/strict";
import { parseQueue } from "../../www/form.js";

test("a queue names runs as full or lora RANK, each with an optional learning rate", () => {
  assert.deepEqual(parseQueue("full lr 5e-4, lora 4,LoRA 16 lr 0.002 ,"), [
    { method: "full", rank: null, lr: 5e-4 },
    { method: "lora", rank: 4, lr: null },
    { method: "lora", rank: 16, lr: 0.002 },
  ]);
});

test("a queue item that is not a run is named in the error", () => {
  assert.throws(() => parseQueue(" , "), /name at least one run/);
  assert.throws(() => parseQueue("full, lora"), /"lora" is not a run/);
  assert.throws(() => parseQueue("lora 0"), /rank must be at least 1/);
  assert.throws(() => parseQueue("full lr -1"), /"full lr -1".*positive number/);
  assert.throws(() => parseQueue("full lr abc"), /positive number/);
  assert.throws(() => parseQueue("qlora 4"), /"qlora 4" is not a run/);
});
