"""Side-by-side table of `tunelab bench --json` and `scripts/bench_torch.py` lines (read from
the files given, or stdin): one row per shape × method, tunelab and PyTorch tokens/s, their
ratio, TFLOP/s (tunelab's FLOP count for both), memory (nvidia-smi's peak where sampled, else
the allocator's peak where the device reports one, else peak RSS), and LoRA vs full fine-tuning
within each engine.
"""
import json, sys

rows = []
for path in sys.argv[1:] or ["-"]:
    f = sys.stdin if path == "-" else open(path)
    for line in f:
        line = line.strip()
        if line.startswith("{"):
            rows.append(json.loads(line))


def key(r):
    return (r["model"], r["batch"], r["seq"], r["checkpoint_activations"])


def engine(r):
    """The engine and device, tunelab's kernel choice named when it is not its own kernels."""
    k = r.get("kernels", "tunelab")
    return (r["engine"] + ("" if k == "tunelab" else f" ({k} kernels)"), r["device"])


def label(r):
    return "full" if r["method"] == "full" else f"LoRA r{r['rank']}"


def mem(r):
    """nvidia-smi's peak for the process where scripts/bench-device.sh sampled it (the same
    meter for both engines), else the allocator's reserved peak, else peak RSS."""
    m = r["memory"]
    return m.get("smi_peak_mib") or m.get("device_reserved_peak_mib") or m.get("peak_rss_mib")


flops = {(key(r), r["method"], r["rank"]): r["flops_per_step"] for r in rows if r.get("flops_per_step")}
for r in rows:
    if not r.get("flops_per_step"):
        f = flops.get((key(r), r["method"], r["rank"]))
        if f:
            r["flops_per_step"], r["tflops"] = f, f / r["step_s"] / 1e12

engines = []
for r in rows:
    e = engine(r)
    if e not in engines:
        engines.append(e)
tl = [e for e in engines if e[0].startswith("tunelab")]
pt = [e for e in engines if e[0].startswith("pytorch")]

fmt = lambda v, spec: "-" if v is None else format(v, spec)
print("| shape (batch × seq) | method | " + " | ".join(
    f"{e[0]} {e[1]} tok/s | TFLOP/s | MiB" for e in engines) + " |"
    + "".join(f" {e[0]} {e[1]} / pytorch |" for e in tl if pt))
print("|---|---|" + "---|---|---|" * len(engines) + ("---|" * len(tl) if pt else ""))
full = {}
seen = []
for r in rows:
    k = (key(r), r["method"], r["rank"])
    if k not in seen:
        seen.append(k)
for k in seen:
    cells = []
    by = {}
    for e in engines:
        r = next((x for x in rows if (key(x), x["method"], x["rank"]) == k and engine(x) == e), None)
        by[e] = r
        if r is None:
            cells += ["-", "-", "-"]
            continue
        if r["method"] == "full":
            full[(key(r), e)] = r
        base = full.get((key(r), e))
        vs = f" ({r['tokens_per_s'] / base['tokens_per_s']:.2f}× full)" if base is not None and r is not base else ""
        vm = f" ({mem(r) / mem(base):.2f}×)" if base is not None and r is not base and mem(r) and mem(base) else ""
        cells += [f"{r['tokens_per_s']:,.0f}{vs}", fmt(r.get("tflops"), ".2f"), f"{fmt(mem(r), ',.0f')}{vm}"]
    ratio = ""
    for e in tl if pt else []:
        a, b = by.get(e), by.get(pt[0])
        ratio += f" {a['tokens_per_s'] / b['tokens_per_s']:.2f}× |" if a and b else " - |"
    (model, b, s, ck) = k[0]
    r0 = next(x for x in by.values() if x)
    shape = f"{model} ({b} × {s}{', ckpt' if ck else ''})"
    print(f"| {shape} | {label(r0)} | " + " | ".join(cells) + " |" + ratio)
