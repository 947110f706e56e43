#!/usr/bin/env bash
# On a borrowed NVIDIA machine (see scripts/device-pack.sh): unpack the Vulkan loader and the
# carried binaries, then run the GPU benchmark of ../shared/PERF.md's table — tunelab (each
# carried build: .device/tunelab*.gz) beside PyTorch + PEFT on CUDA, same shapes, fp32, TF32 off —
# sampling nvidia-smi's memory while each process runs. Results go to $OUT (JSON lines, the
# table, logs). SHAPES and METHODS override the grid; STEPS the timed steps per configuration;
# KERNELS which of tunelab's kernel choices each build runs (default: its WGSL kernels, then
# burn's generic ones, side by side). Then `bench --ops` (each kernel alone vs burn's) per shape.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/bench-out}; mkdir -p "$OUT"
for f in .device/*.deb; do dpkg -x "$f" /; done; ldconfig
if [ -z "${VK_DRIVER_FILES:-}" ]; then
  for f in /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json /usr/share/vulkan/icd.d/nvidia_icd.json /etc/vulkan/icd.d/nvidia_icd.json; do
    [ -f "$f" ] && export VK_DRIVER_FILES=$f && break
  done
fi
mkdir -p /tmp/tl
for g in .device/tunelab*.gz; do gunzip -c "$g" > "/tmp/tl/$(basename "$g" .gz)"; chmod +x "/tmp/tl/$(basename "$g" .gz)"; done
/tmp/tl/tunelab devices 2>&1 | tee "$OUT/devices.txt"
export PYTHONUNBUFFERED=1
shapes=${SHAPES:-"small:8:128 medium:8:256 smollm2-135m:8:256 medium:16:512"}
methods=${METHODS:-"full lora16"}
steps=${STEPS:-10}
jsonl="$OUT/bench.jsonl"; : > "$jsonl"
smi() { # peak nvidia-smi memory (MiB) while "$@" runs; the JSON line gets it as memory.smi_peak_mib
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 > /tmp/smi.log 2>/dev/null &
  local pid=$!
  "$@" > /tmp/line.json 2>> "$OUT/log.txt"; local rc=$?
  kill $pid 2>/dev/null; wait $pid 2>/dev/null
  local peak; peak=$(sort -n /tmp/smi.log | tail -1)
  python3 - "$peak" < /tmp/line.json >> "$jsonl" <<'PY'
import json, sys
for line in sys.stdin:
    if line.startswith("{"):
        r = json.loads(line); r["memory"]["smi_peak_mib"] = float(sys.argv[1] or "nan"); print(json.dumps(r))
PY
  return $rc
}
for s in $shapes; do
  IFS=: read -r model batch seq <<< "$s"
  for m in $methods; do
    for bin in /tmp/tl/tunelab*; do
      for k in ${KERNELS:-tunelab burn}; do
        echo "== $(basename "$bin") --kernels $k $model $batch×$seq $m" | tee -a "$OUT/log.txt"
        smi timeout 300 "$bin" --device gpu --json bench "$model" --methods "$m" --batch "$batch" --seq "$seq" --steps "$steps" --kernels "$k" \
          || echo "failed: $bin --kernels $k $s $m" | tee -a "$OUT/log.txt"
      done
    done
    echo "== pytorch $model $batch×$seq $m" | tee -a "$OUT/log.txt"
    smi timeout 300 python3 scripts/bench_torch.py "$model" --methods "$m" --batch "$batch" --seq "$seq" --steps "$steps" --device cuda \
      || echo "failed: pytorch $s $m" | tee -a "$OUT/log.txt"
  done
done
python3 scripts/bench_table.py "$jsonl" | tee "$OUT/table.md"
# Each hot-path op alone, tunelab's kernels beside burn's, at every shape of the grid.
for s in $shapes; do
  IFS=: read -r model batch seq <<< "$s"
  echo "== ops $model $batch×$seq" | tee -a "$OUT/ops.txt"
  timeout 300 /tmp/tl/tunelab --device gpu bench "$model" --ops --batch "$batch" --seq "$seq" --steps 20 2>> "$OUT/log.txt" | tee -a "$OUT/ops.txt" \
    || echo "failed: ops $s" | tee -a "$OUT/log.txt"
done
