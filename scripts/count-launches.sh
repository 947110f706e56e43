#!/usr/bin/env bash
# Kernel launches per training step on wgpu, counted by cubecl's own execution log: runs
# `tunelab bench` twice (N1 and N2 timed steps, from a scratch directory holding a cubecl.toml
# that logs every kernel execution) and divides the difference in launches by N2 - N1.
#
#   scripts/count-launches.sh [MODEL] [METHOD] [extra bench flags]     (default: small full)
#
# TUNELAB names the binary (default: the release build). Prints one JSON line.
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:-small}; method=${2:-full}; shift 2 || shift $#
bin=${TUNELAB:-$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release/tunelab}
root=$PWD
scratch=$(mktemp -d); trap 'rm -rf "$scratch"' EXIT
cat > "$scratch/cubecl.toml" <<TOML
[profiling.logger]
level = "minimal"
file = "$scratch/launches.log"
TOML
count() {
  local n=$1; shift
  rm -f "$scratch/launches.log"
  (cd "$scratch" && "$bin" --device gpu --json bench "$(cd "$root" && realpath -e "$model" 2>/dev/null || echo "$model")" \
    --methods "$method" --steps "$n" --window "$n" --warmup 0 "$@" >/dev/null)
  grep -c "Executing" "$scratch/launches.log" || echo 0
}
n1=2; n2=4
c1=$(count $n1 "$@"); c2=$(count $n2 "$@")
python3 -c "import json; print(json.dumps({'model': '$model', 'method': '$method', 'launches_per_step': ($c2 - $c1) / ($n2 - $n1)}))"
