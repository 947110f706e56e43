#!/usr/bin/env bash
# The training benchmark of the fine-tuning issue: a Llama-shaped model (hidden 256, 4 layers,
# 4 heads, intermediate 688, vocabulary 4096) at batch 8 × 128 tokens; full fine-tuning and
# LoRA r=16 / r=256 on each backend, and the same steps in PyTorch + PEFT on this machine.
# Needs python3 with torch, transformers and peft (only this script does). Prints JSON lines.
set -euo pipefail
cd "$(dirname "$0")/.."
steps=${STEPS:-5}
model=${BENCH_MODEL:-/var/tmp/tunelab-bench-llama}
if [ ! -f "$model/config.json" ]; then
  python3 - "$model" <<'PY'
import sys, shutil, torch
from transformers import LlamaConfig, LlamaForCausalLM
torch.manual_seed(0)
cfg = LlamaConfig(vocab_size=4096, hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                  num_key_value_heads=4, intermediate_size=688, max_position_embeddings=512)
LlamaForCausalLM(cfg).save_pretrained(sys.argv[1])
shutil.copy("tests/fixtures/tokenizer.json", sys.argv[1])
PY
fi
cargo build --release --example bench_train -q
bin=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release/examples/bench_train
for dev in ${DEVICES:-cpu gpu}; do
  for cfg in "full 0" "lora 16" "lora 256"; do
    set -- $cfg
    "$bin" "$model" "$1" "$2" "$dev" "$steps" || echo "{\"device\": \"$dev\", \"method\": \"$1\", \"rank\": $2, \"error\": true}"
  done
done
for cfg in "full 0" "lora 16" "lora 256"; do
  set -- $cfg
  python3 scripts/bench_torch.py "$model" "$1" "$2" "$steps" 2>/dev/null
done
