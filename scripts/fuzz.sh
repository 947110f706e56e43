#!/usr/bin/env bash
# Coverage-guided fuzzing of tunelab's parsers (cargo-fuzz + libFuzzer on a nightly toolchain,
# kept out of the stable build in its own workspace, fuzz/).
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# Runs every target (or the ones named) for SECONDS each (default 300; FUZZ_SECONDS_<target>
# overrides it for one target; FUZZ_JOBS at a time, default one per core), starting from the
# seed corpora of fuzz/seeds.txt plus what earlier campaigns found (fuzz/corpus/, git-ignored).
# A crash, out-of-memory or hang is minimised (cargo fuzz tmin) into fuzz/regressions/TARGET/,
# which `cargo test` replays on stable (crate/tests/fuzz_regressions.rs); commit it with the
# fix. Prints a Markdown table of executions per target and writes it to fuzz/last-campaign.md.
# Exits non-zero when any target found something.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-300}
shift || true

command -v rustup >/dev/null || { echo "fuzz.sh needs rustup (for a nightly toolchain)" >&2; exit 2; }
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
# Its own target directory: nightly, instrumented builds share nothing with the stable ones.
export CARGO_TARGET_DIR=${TUNELAB_FUZZ_TARGET:-/var/tmp/tunelab-fuzz-target}
# No sanitizer (safe Rust; it would only slow the search down), debug assertions on (integer
# overflow is a finding), optimised.
flags=(-s none -a -O)

cd fuzz
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cargo +nightly fuzz list)
cargo +nightly fuzz build "${flags[@]}"

# Seed corpora, as crate/tests/fuzz_regressions.rs reads fuzz/seeds.txt.
seed() {
  local target=$1 corpus=corpus/$1 which dir suffix
  mkdir -p "$corpus"
  while read -r which dir suffix; do
    [ "$which" = "$target" ] || continue
    while IFS= read -r -d '' f; do
      local name; name=$(sha1sum "$f" | cut -c1-16)
      if [ "$target" = peft ]; then
        { cat "$f"; printf '\0'; cat "$(dirname "$f")/adapter_model.safetensors"; } > "$corpus/seed-$name"
      else
        cp "$f" "$corpus/seed-$name"
      fi
    done < <(find "../$dir" -type f -name "*$suffix" -print0)
  done < <(grep -v '^#' seeds.txt | grep -v '^$')
  if [ -d "regressions/$target" ]; then cp regressions/"$target"/* "$corpus"/ 2>/dev/null || true; fi
}

report=last-campaign.md
{
  echo "Campaign of $(date -u +%Y-%m-%d): ${secs} s per target unless stated, ${FUZZ_JOBS:-$(nproc)} at a time on $(nproc) cores, $(rustc +nightly --version)"
  echo
  echo "| target | seconds | executions | exec/s | corpus | coverage (edges) | crashes | OOMs | timeouts |"
  echo "|---|---|---|---|---|---|---|---|---|"
} > "$report"
# One target's campaign: fuzz, minimise findings into regressions/, write its table row.
campaign() {
  local t=$1
  seed "$t"
  mkdir -p "artifacts/$t"
  rm -f artifacts/"$t"/{crash,leak,oom,timeout,minimized-from}-*
  local log=artifacts/$t/fuzz.log
  # Inputs up to 16 KiB (the interesting parts are headers and lines; larger seeds are cut),
  # 64 KiB for tokenizer.json (real ones are larger) and 2 KiB for data files (each input is
  # tokenized four times: short files keep the search fast); 2 GiB of memory and 10 s per input
  # before a finding is an OOM or a hang.
  local max_len=16384 seconds=$secs budget="FUZZ_SECONDS_$t"
  seconds=${!budget:-$secs}
  case $t in tokenizer) max_len=65536 ;; data) max_len=2048 ;; esac
  cargo +nightly fuzz run "${flags[@]}" "$t" "corpus/$t" -- \
    -max_total_time="$seconds" -max_len="$max_len" -rss_limit_mb=2048 -malloc_limit_mb=2048 \
    -timeout=10 -print_final_stats=1 > "$log" 2>&1 || true
  stat() { grep -m1 "^stat::$1:" "$log" | awk '{print $2}'; }
  local execs rate edges crashes=0 ooms=0 hangs=0
  execs=$(stat number_of_executed_units); execs=${execs:-0}
  rate=$(stat average_exec_per_sec); rate=${rate:-0}
  edges=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | awk '{print $2}')
  for a in artifacts/"$t"/*; do
    [ -f "$a" ] || continue
    case "$(basename "$a")" in
      crash-*|leak-*) crashes=$((crashes + 1)) ;;
      oom-*) ooms=$((ooms + 1)) ;;
      timeout-*) hangs=$((hangs + 1)) ;;
      *) continue ;;
    esac
    mkdir -p "regressions/$t"
    cargo +nightly fuzz tmin "${flags[@]}" "$t" "$a" -- -runs=2000 > "artifacts/$t/tmin.log" 2>&1 || true
    local newest; newest=$(ls -t artifacts/"$t"/minimized-from-* 2>/dev/null | head -1 || true)
    cp "${newest:-$a}" "regressions/$t/$(basename "$a")"
    echo "$t: $(basename "$a") → regressions/$t/$(basename "$a")" >&2
  done
  local corpus; corpus=$(find "corpus/$t" -type f | wc -l)
  echo "| $t | $seconds | $execs | $rate | $corpus | ${edges:-?} | $crashes | $ooms | $hangs |" > "artifacts/$t/row.md"
  echo "$t: $execs executions, $crashes crashes, $ooms OOMs, $hangs timeouts" >&2
}

# FUZZ_JOBS targets at a time (default: one per core).
jobs=${FUZZ_JOBS:-$(nproc)}
for t in "${targets[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n || true; done
  campaign "$t" &
done
wait
found=0
for t in "${targets[@]}"; do
  cat "artifacts/$t/row.md" >> "$report"
  grep -q '| 0 | 0 | 0 |$' "artifacts/$t/row.md" || found=1
done
cat "$report"
exit $found
