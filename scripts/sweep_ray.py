#!/usr/bin/env python3
"""Run a tunelab experiment's runs as Ray tasks, one `tunelab experiment CONFIG --only ID` each.

    python3 scripts/sweep_ray.py experiments/default.toml                 # local Ray on this machine
    python3 scripts/sweep_ray.py experiments/paper-sweep.toml --address auto --gpus-per-run 1

The run list comes from `tunelab experiment CONFIG --plan --json` (ids, memory estimate); every
run becomes one Ray task asking for `--cpus-per-run`/`--gpus-per-run` and the plan's memory
estimate. A task whose process fails or whose worker dies (preemption, a lost node) is retried
up to `--max-retries` times; tunelab resumes the run from its last budget's checkpoint, so a
retried run ends with the numbers an uninterrupted one has. Progress lines stream back as
`[run id] ...`. At the end `tunelab experiment --collect` writes results.json/csv, report.md and
the plots.

The output directory (`--out`) must be one path every worker sees: on one machine any folder;
on a cluster a shared filesystem (NFS, Lustre, a cloud filestore) or an object-store mount
(gcsfuse, s3fs/mountpoint with file locking). Workers coordinate through files and locks there
(the base model is evaluated once, a run is never trained twice at once); with an unshared
folder each node would evaluate the base model itself and `--collect` on the driver would find
only the runs that ran on the driver's node (it names the others as missing).
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def find_tunelab(given):
    """The tunelab binary: --tunelab, $TUNELAB, `tunelab` on PATH, or this checkout's release
    build (wherever cargo keeps its target directory)."""
    for cand in [given, os.environ.get("TUNELAB"), shutil.which("tunelab")]:
        if cand:
            return os.path.abspath(cand) if os.path.exists(cand) else cand
    try:
        meta = subprocess.run(["cargo", "metadata", "--format-version", "1", "--no-deps"], cwd=REPO,
                              check=True, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        built = os.path.join(json.loads(meta.stdout)["target_directory"], "release", "tunelab")
        if os.path.exists(built):
            return built
    except (OSError, subprocess.CalledProcessError, ValueError, KeyError):
        pass
    sys.exit("sweep_ray: no tunelab binary (build it with `cargo build --release`, or pass --tunelab)")


def tunelab_cmd(args, *rest):
    cmd = [args.tunelab]
    if args.device:
        cmd += ["--device", args.device]
    return cmd + ["experiment", args.config, "--out", args.out, *rest]


def die_with_parent():
    """Runs in the child before exec: SIGKILL it when its parent (the Ray worker) dies, so a
    killed worker never leaves a run training on in the background (Linux; elsewhere a no-op)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def run_task(cmd, run_id, env):
    """One run in its own process; streams its progress; raises if it fails (Ray retries)."""
    import socket

    start = time.time()
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **env},
        preexec_fn=die_with_parent,
    )
    record = None
    last_shown = -1.0
    for line in proc.stdout:
        try:
            event = json.loads(line)
        except ValueError:
            print(f"[{run_id}] {line.rstrip()}", flush=True)
            continue
        kind = event.get("event")
        if kind == "notice":
            print(f"[{run_id}] {event['message']}", flush=True)
        elif kind == "step":
            # About ten lines per run, not one per step.
            frac = event["step"] / max(1, event["total_steps"])
            if frac - last_shown >= 0.1 or event["step"] == event["total_steps"]:
                last_shown = frac
                print(
                    f"[{run_id}] step {event['step']}/{event['total_steps']} loss {event['loss']:.4f}",
                    flush=True,
                )
        elif kind == "run_done":
            record = event
    code = proc.wait()
    if code != 0 or record is None:
        raise RuntimeError(f"{run_id}: tunelab exited with status {code}")
    return {
        "id": run_id,
        "seconds": time.time() - start,
        "host": socket.gethostname(),
        "pid": os.getpid(),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("config", help="experiment TOML")
    ap.add_argument("--out", help="output directory every worker sees (default: experiment-results/<name>)")
    ap.add_argument("--address", help="Ray cluster to join (`auto`, `ray://host:10001`); default: start a local Ray")
    ap.add_argument("--num-cpus", type=int, help="local Ray only: CPUs it may use (default: all)")
    ap.add_argument("--cpus-per-run", type=float, default=1.0)
    ap.add_argument("--gpus-per-run", type=float, default=0.0)
    ap.add_argument("--no-memory-request", action="store_true",
                    help="do not ask Ray for the plan's memory estimate per run")
    ap.add_argument("--max-retries", type=int, default=3, help="retries of a failed or preempted run")
    ap.add_argument("--device", help="tunelab --device for every run (default: tunelab's choice)")
    ap.add_argument("--tunelab", help="path of the tunelab binary on every worker")
    ap.add_argument("--only", action="append", default=[], metavar="ID",
                    help="run only these ids (repeatable; default: every run not yet done)")
    args = ap.parse_args()
    args.tunelab = find_tunelab(args.tunelab)
    args.config = os.path.abspath(args.config)

    # The plan, made on the driver (the base model loads once here; nothing trains).
    cmd = [args.tunelab] + (["--device", args.device] if args.device else []) + [
        "--json", "experiment", args.config, "--plan"]
    if args.out:
        cmd += ["--out", args.out]
    plan = json.loads(subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout)
    args.out = os.path.abspath(args.out or os.path.join("experiment-results", plan["experiment"]))
    runs = [r for r in plan["runs"] if not r["done"]]
    if args.only:
        unknown = set(args.only) - {r["id"] for r in plan["runs"]}
        if unknown:
            sys.exit(f"sweep_ray: no such runs: {', '.join(sorted(unknown))}")
        runs = [r for r in runs if r["id"] in args.only]
    hours = plan.get("estimated_device_hours")
    print(f"sweep_ray: {plan['run_count']} runs in `{plan['experiment']}`, {plan['done_count']} done, "
          f"{len(runs)} to run" + (f", about {hours:.2f} device-hours" if hours is not None else ""),
          flush=True)

    import ray

    if args.address:
        ray.init(address=args.address)
    else:
        ray.init(num_cpus=args.num_cpus, include_dashboard=False)
    task = ray.remote(run_task)
    pending = {}
    for r in runs:
        opts = {
            "num_cpus": args.cpus_per_run,
            "num_gpus": args.gpus_per_run,
            "max_retries": args.max_retries,
            "retry_exceptions": True,
            "name": f"tunelab {r['id']}",
        }
        if not args.no_memory_request:
            opts["memory"] = r["memory_bytes"]
        ref = task.options(**opts).remote(tunelab_cmd(args, "--json", "--only", r["id"]), r["id"], {})
        pending[ref] = r["id"]

    failed = []
    done = 0
    start = time.time()
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        for ref in ready:
            run_id = pending.pop(ref)
            try:
                info = ray.get(ref)
                done += 1
                print(f"sweep_ray: [{done}/{len(runs)}] {run_id} done in {info['seconds']:.1f} s on {info['host']}",
                      flush=True)
            except Exception as e:  # the task failed after every retry
                failed.append(run_id)
                print(f"sweep_ray: {run_id} failed after {args.max_retries} retries: {e}", flush=True)
    wall = time.time() - start
    ray.shutdown()
    print(f"sweep_ray: {done} runs done, {len(failed)} failed, wall {wall:.1f} s", flush=True)

    # Whatever finished, reported; missing runs are named in report.md and on stderr.
    collect = [args.tunelab, "experiment", "--out", args.out, "--collect"]
    subprocess.run(collect, check=True, stdout=subprocess.DEVNULL)
    print(f"sweep_ray: report {os.path.join(args.out, 'report.md')}", flush=True)
    with open(os.path.join(args.out, "sweep_ray.json"), "w") as f:
        json.dump({"runs": len(runs), "done": done, "failed": failed, "wall_seconds": wall,
                   "address": args.address or "local", "num_cpus": args.num_cpus}, f, indent=1)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
