"""PyTorch (+ PEFT) counterpart of `tunelab bench`: same arguments, same JSON line per
configuration, so `scripts/bench.sh` can put the two side by side.

    python3 scripts/bench_torch.py MODEL [--methods full,lora16] [--batch 8] [--seq 128]
        [--steps 20] [--warmup 2] [--window 5] [--device cpu|cuda] [--checkpoint-activations]

MODEL is a preset of tunelab's (small, medium, smollm2-135m: crate/presets/NAME.json, random
weights), a config.json (random weights) or a model directory. Same training step as tunelab's:
AdamW (lr 1e-4, no decay), global-norm clipping at 1, every position a target, full fine-tuning
with embeddings and LM head frozen, LoRA on the seven Llama linears with alpha = 2r, dropout 0.
fp32 with TF32 off; attention "eager" unless --attn says otherwise. `flops_per_step` and
`tflops` are left null: the FLOP count is tunelab's (`bench::train_flops`), joined in by
scripts/bench_table.py for the same shape.
"""
import argparse, json, os, resource, time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import torch
from transformers import AutoConfig, AutoModelForCausalLM

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MIB = 1024.0 * 1024.0


def parse_method(s):
    s = s.strip()
    if s == "full":
        return ("full", 0)
    for p in ("lora", "r"):
        if s.startswith(p):
            r = s[len(p):].lstrip(":-=")
            if r.isdigit() and int(r) > 0:
                return ("lora", int(r))
    raise SystemExit(f"unknown method `{s}`: expected full or lora<rank> (e.g. lora16)")


def build_model(spec, device):
    torch.manual_seed(0)
    preset = os.path.join(ROOT, "crate", "presets", f"{spec}.json")
    if os.path.isfile(preset) or spec.endswith("config.json"):
        path = preset if os.path.isfile(preset) else spec
        with open(path) as f:
            cfg = AutoConfig.for_model(**json.load(f))
        cfg.initializer_range = 0.02
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32, attn_implementation=ARGS.attn)
    else:
        model = AutoModelForCausalLM.from_pretrained(spec, dtype=torch.float32, attn_implementation=ARGS.attn)
    return model.to(device)


def rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run(kind, rank, device):
    cuda = device.type == "cuda"
    mem = (lambda: torch.cuda.memory_allocated() / MIB) if cuda else (lambda: None)
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    model = build_model(ARGS.model, device)
    parameters = sum(p.numel() for p in model.parameters())
    if kind == "lora":
        from peft import LoraConfig, get_peft_model
        model = get_peft_model(model, LoraConfig(
            r=rank, lora_alpha=2 * rank, lora_dropout=0.0, task_type="CAUSAL_LM",
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]))
    else:
        for n, p in model.named_parameters():
            p.requires_grad = not ("embed_tokens" in n or "lm_head" in n)
    if ARGS.checkpoint_activations:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if kind == "lora":
            model.enable_input_require_grads()
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    trainable = sum(p.numel() for p in params)
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0)
    vocab = model.config.vocab_size
    ids = torch.tensor([[(i * 7919 + b * 104729) % vocab for i in range(ARGS.seq)]
                        for b in range(ARGS.batch)], device=device)
    before = mem()

    def step():
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    t0 = time.perf_counter()
    loss_first = step().item()
    first = time.perf_counter() - t0
    after_first = mem()
    for _ in range(ARGS.warmup):
        loss = step()
    if ARGS.warmup:
        loss.item()
    windows = -(-ARGS.steps // ARGS.window)
    tokens = ARGS.batch * ARGS.seq * ARGS.window
    per_window = []
    for _ in range(windows):
        t = time.perf_counter()
        for _ in range(ARGS.window):
            loss = step()
        loss_last = loss.item()
        per_window.append(tokens / (time.perf_counter() - t))
    # The instrumented step: a forward pass with its graph held, then the gradients held.
    base = mem()
    out = model(input_ids=ids, labels=ids).loss
    with_graph = mem()
    out.backward()
    del out
    with_grads = mem()
    opt.zero_grad(set_to_none=True)
    diff = lambda a, b: None if a is None or b is None else a - b
    tps = sorted(per_window)[len(per_window) // 2]  # the same median as tunelab's
    return {
        "engine": f"pytorch {torch.__version__}", "device": device_label(device), "model": ARGS.model,
        "method": kind, "rank": rank, "batch": ARGS.batch, "seq": ARGS.seq,
        "checkpoint_activations": ARGS.checkpoint_activations,
        "parameters": parameters, "trainable_parameters": trainable,
        "first_step_s": first, "tokens_per_s": tps, "step_s": ARGS.batch * ARGS.seq / tps,
        "window_tokens_per_s": per_window, "flops_per_step": None, "tflops": None,
        "loss_first": loss_first, "loss_last": loss_last,
        "params": {"weights_mib": (parameters + (trainable if kind == "lora" else 0)) * 4 / MIB,
                   "trainable_mib": trainable * 4 / MIB, "optimizer_state_mib": trainable * 8 / MIB},
        "memory": {
            "device_reserved_peak_mib": torch.cuda.max_memory_reserved() / MIB if cuda else None,
            "device_in_use_peak_mib": torch.cuda.max_memory_allocated() / MIB if cuda else None,
            "before_mib": before, "optimizer_state_mib": diff(after_first, before),
            "activations_mib": diff(with_graph, base), "gradients_mib": diff(with_grads, base),
            "peak_rss_mib": rss_mib(),
        },
    }


def device_label(device):
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return f"cpu ({torch.get_num_threads()} threads)"


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model", nargs="?", default="small")
    ap.add_argument("--methods", default="full,lora16,lora256")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--window", type=int, default=5)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--attn", default="eager", help="transformers attn_implementation (eager, sdpa)")
    ap.add_argument("--checkpoint-activations", action="store_true")
    ARGS = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_num_threads(os.cpu_count())
    dev = torch.device(ARGS.device)
    for m in ARGS.methods.split(","):
        kind, rank = parse_method(m)
        print(json.dumps(run(kind, rank, dev)), flush=True)
