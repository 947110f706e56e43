#!/usr/bin/env bash
# A tunelab experiment as a Slurm job array: one `--only ID` per array index, then `--collect` as
# a job that starts when the whole array has ended (whatever finished is reported; the rest are
# named as missing, and resubmitting the array index reruns only those, resuming from their
# checkpoints). An example to adapt (partition, GPUs, time limit, modules); not run by the tests.
#
#   scripts/sweep_slurm.sh experiments/paper-sweep.toml /shared/results/paper-sweep
#
# OUT must be on a filesystem every node mounts (runs coordinate through files and locks there).
# TUNELAB (default: tunelab on PATH) must exist at the same path on every node.
set -euo pipefail
config=${1:?usage: sweep_slurm.sh CONFIG OUT}
out=${2:?usage: sweep_slurm.sh CONFIG OUT}
tunelab=${TUNELAB:-tunelab}
config=$(realpath "$config")
mkdir -p "$out/slurm"
out=$(realpath "$out")

# The run ids, in plan order; the array index picks one.
"$tunelab" --json experiment "$config" --out "$out" --plan > "$out/slurm/plan.json"
python3 -c 'import json,sys; [print(r["id"]) for r in json.load(open(sys.argv[1]))["runs"]]' \
  "$out/slurm/plan.json" > "$out/slurm/runs.txt"
n=$(wc -l < "$out/slurm/runs.txt")
echo "$n runs; $(python3 -c 'import json,sys; h=json.load(open(sys.argv[1]))["estimated_device_hours"]; print(f"about {h:.1f} device-hours" if h is not None else "no estimate")' "$out/slurm/plan.json")"

array=$(sbatch --parsable \
  --job-name=tunelab-run \
  --array=0-$((n - 1)) \
  --gres=gpu:1 --cpus-per-task=4 --mem=32G --time=04:00:00 \
  --requeue \
  --output="$out/slurm/run-%a.log" \
  --wrap="id=\$(sed -n \"\$((SLURM_ARRAY_TASK_ID + 1))p\" '$out/slurm/runs.txt'); exec '$tunelab' experiment '$config' --out '$out' --only \"\$id\"")

sbatch --parsable \
  --job-name=tunelab-collect \
  --dependency=afterany:"$array" \
  --cpus-per-task=1 --mem=4G --time=00:20:00 \
  --output="$out/slurm/collect.log" \
  --wrap="exec '$tunelab' experiment --out '$out' --collect"
echo "submitted array $array; report: $out/report.md when the collect job has run"
