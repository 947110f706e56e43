#!/usr/bin/env bash
# The training benchmark, tunelab beside PyTorch (+ PEFT) on the same shapes, one process per
# configuration (so peak RSS and the allocator's high-water mark are that configuration's):
#
#   scripts/bench.sh [MODEL] [extra `tunelab bench` / bench_torch.py flags]
#
# MODEL: a preset (small, medium, smollm2-135m), a config.json or a model directory (default
# small). Environment: METHODS (default full,lora16,lora256), DEVICES (tunelab devices, default
# "cpu gpu"), TORCH_DEVICE (cpu or cuda, default: cuda if available), TUNELAB (binary, default
# the release build), OUT (JSON lines, default bench-results.jsonl). Needs python3 with torch,
# transformers and peft for the PyTorch side (skipped with TORCH_DEVICE=none). Prints the
# markdown table of scripts/bench_table.py.
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:-small}
shift || true
methods=${METHODS:-full,lora16,lora256}
out=${OUT:-bench-results.jsonl}
if [ -z "${TUNELAB:-}" ]; then
  cargo build --release -q --bin tunelab
  TUNELAB=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release/tunelab
fi
: > "$out"
for m in ${methods//,/ }; do
  for dev in ${DEVICES:-cpu gpu}; do
    "$TUNELAB" --device "$dev" --json bench "$model" --methods "$m" "$@" >> "$out" \
      || echo "tunelab --device $dev $m failed" >&2
  done
  if [ "${TORCH_DEVICE:-}" != none ]; then
    python3 scripts/bench_torch.py "$model" --methods "$m" ${TORCH_DEVICE:+--device $TORCH_DEVICE} "$@" >> "$out" \
      || echo "bench_torch.py $m failed" >&2
  fi
done
python3 scripts/bench_table.py "$out"
