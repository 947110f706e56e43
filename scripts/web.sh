#!/usr/bin/env bash
# Build the browser bundle and serve the lab page on http://127.0.0.1:${PORT:-8080}/www/.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/build-web.sh
exec cargo run --release -- serve --port "${PORT:-8080}" --root .
