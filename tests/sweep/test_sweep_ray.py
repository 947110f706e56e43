#!/usr/bin/env python3
"""scripts/sweep_ray.py end to end on a local Ray with 2 workers: a 2-target × 2-method × 2-seed
tiny sweep runs to completion while one run's worker is killed midway (SIGKILL, as a preempted
node); Ray retries it, tunelab resumes it from its checkpoint, and the collected results equal a
single-process run of the same config. Needs Ray (scripts/test.sh installs it) and a release
build of tunelab."""

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "scripts"))
from sweep_ray import find_tunelab  # noqa: E402

CONFIG = """
name = "ray-tiny"
base_model = "{repo}/tests/fixtures/llama-gqa"
seed = 3
seeds = [3, 4]
batch_size = 4
full_lr = 1e-3
spectrum = false

[[targets]]
name = "text"
regime = "cpt"
train = "{repo}/tests/fixtures/data/tiny.txt"
test = "{repo}/tests/fixtures/data/tiny.txt"
metric = "perplexity"
seq_len = 32
# Two steps to the first budget, then many: a long window to kill a run after its checkpoint.
budgets = [256, 24576]
budget_unit = "tokens"

[[targets]]
name = "math"
regime = "ift"
train = "math"
test = "math"
metric = "answer_loss"
seq_len = 128
budgets = [0.25, 0.5]
budget_unit = "epochs"
math_train = 24
math_test = 3
max_gen_toks = 8

[[methods]]
name = "full"
method = "full"

[[methods]]
name = "lora-r2"
method = "lora"
rank = 2

[forgetting]
arc = "{repo}/data/forgetting/arc.jsonl"
perplexity = "{repo}/data/english/heldout.txt"
limit = 4
perplexity_chars = 1500
"""

VICTIM = "text/full/seed-4"


def comparable(r):
    r = dict(r)
    r.pop("timings")
    for key in ("points", "runs"):
        r[key] = [{k: v for k, v in x.items() if not k.endswith("_seconds")} for x in r[key]]
    return r


def processes():
    """(pid, ppid, argv) of every process."""
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
            with open(f"/proc/{pid}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        out.append((int(pid), ppid, [a.decode(errors="replace") for a in argv]))
    return out


class SweepRay(unittest.TestCase):
    def test_sweep_survives_a_killed_worker(self):
        tunelab = find_tunelab(None)
        with tempfile.TemporaryDirectory() as tmp:
            cfg = os.path.join(tmp, "tiny.toml")
            with open(cfg, "w") as f:
                f.write(CONFIG.format(repo=REPO))
            ref, out = os.path.join(tmp, "ref"), os.path.join(tmp, "ray")
            subprocess.run([tunelab, "--device", "cpu", "experiment", cfg, "--out", ref],
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

            killed = {}
            stop = threading.Event()

            def killer():
                # Once the victim has evaluated its first budget (checkpoint written) and is
                # training on, SIGKILL the Ray worker running it.
                run = os.path.join(out, "runs", VICTIM)
                while not stop.is_set():
                    if os.path.exists(os.path.join(run, "points.json")) and not killed:
                        if os.path.exists(os.path.join(run, "run.json")):
                            killed["late"] = True
                            return
                        for pid, ppid, argv in processes():
                            if "--only" in argv and VICTIM in argv and argv[0] == tunelab:
                                os.kill(ppid, signal.SIGKILL)
                                killed["worker"] = ppid
                                return
                    time.sleep(0.002)

            t = threading.Thread(target=killer, daemon=True)
            t.start()
            proc = subprocess.run(
                [sys.executable, os.path.join(REPO, "scripts", "sweep_ray.py"), cfg, "--out", out,
                 "--num-cpus", "2", "--device", "cpu", "--tunelab", tunelab],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=900)
            stop.set()
            t.join()
            log = proc.stdout
            self.assertEqual(proc.returncode, 0, log[-4000:])
            self.assertIn("worker", killed, f"the victim was not caught midway: {killed}\n{log[-4000:]}")
            # The retried run resumed from its checkpoint.
            self.assertIn(f"[{VICTIM}] resuming from", log, log[-4000:])
            with open(os.path.join(out, "sweep_ray.json")) as f:
                summary = json.load(f)
            self.assertEqual((summary["done"], summary["failed"]), (8, []), summary)
            with open(os.path.join(out, "results.json")) as f:
                got = json.load(f)
            with open(os.path.join(ref, "results.json")) as f:
                want = json.load(f)
            self.assertNotIn("missing", got)
            self.assertEqual(comparable(got), comparable(want))


if __name__ == "__main__":
    unittest.main()
