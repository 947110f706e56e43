#!/usr/bin/env bash
# Build the browser bundle: the tunelab crate for wasm32 → wasm-opt (if installed) →
# wasm-bindgen (--target web) into www/pkg/. Installs the wasm target and the wasm-bindgen CLI
# matching Cargo.lock when they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."

target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
rustup target list --installed | grep -q wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown

version=$(awk '/^name = "wasm-bindgen"$/ {getline; gsub(/"/, "", $3); print $3; exit}' Cargo.lock)
if ! wasm-bindgen --version 2>/dev/null | grep -q " $version\$"; then
  echo "installing wasm-bindgen-cli $version" >&2
  cargo install wasm-bindgen-cli --version "$version" --force
fi

# The web build uses burn without autotune or fusion (see crate/Cargo.toml): autotune's
# subgroup matmul fails on browsers' WebGPU, and fusion only adds code size.
cargo rustc -p tunelab --lib --profile wasm-release --target wasm32-unknown-unknown \
  --no-default-features --crate-type cdylib
wasm="$target_dir/wasm32-unknown-unknown/wasm-release/tunelab.wasm"
ls -l "$wasm" >&2
if command -v wasm-opt >/dev/null; then
  # Before wasm-bindgen: running it on wasm-bindgen's output broke the module (DESIGN.md).
  wasm-opt -O2 --enable-bulk-memory --enable-nontrapping-float-to-int --enable-sign-ext \
    --enable-mutable-globals "$wasm" -o "$wasm.opt"
  wasm="$wasm.opt"
fi
rm -rf www/pkg
wasm-bindgen --target web --no-typescript --out-dir www/pkg "$wasm" --out-name tunelab
ls -l www/pkg >&2
echo "gzipped: $(gzip -9 -c www/pkg/tunelab_bg.wasm | wc -c) bytes" >&2
