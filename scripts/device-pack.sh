#!/usr/bin/env bash
# Prepare what a run on a borrowed GPU machine needs and cannot build there: the stripped,
# gzipped release binary and Debian's Vulkan loader, in .device/ (ignored by git through
# .git/info/exclude; pass `.device` in the device tool's `carry`). Then run there:
#   scripts/bench-device.sh        (the table of ../shared/PERF.md, tunelab beside PyTorch)
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.device/' .git/info/exclude 2>/dev/null || echo '/.device/' >> .git/info/exclude
mkdir -p .device
cargo build --release -q --bin tunelab ${FEATURES:+--no-default-features --features "$FEATURES"}
target=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
name=${NAME:-tunelab}
strip -o ".device/$name" "$target/release/tunelab"
gzip -9f ".device/$name"
if ! ls .device/libvulkan1_*.deb >/dev/null 2>&1; then
  (cd .device && apt-get download libvulkan1)
fi
du -sh .device/*
