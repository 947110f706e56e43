"""PyTorch + PEFT counterpart of crate/examples/bench_train.rs: one configuration per process.

    python3 scripts/bench_torch.py MODEL full|lora RANK [STEPS] [BATCH] [SEQ]

Same model, batch, AdamW, clipping and LoRA settings (all seven Llama linears, alpha = 2r,
dropout 0); torch threads = the machine's cores. Prints one JSON line.
"""
import json, os, resource, sys, time
os.environ["HF_HUB_OFFLINE"] = "1"
import torch
from transformers import AutoModelForCausalLM

model_dir, method, rank = sys.argv[1], sys.argv[2], int(sys.argv[3])
steps = int(sys.argv[4]) if len(sys.argv) > 4 else 5
batch = int(sys.argv[5]) if len(sys.argv) > 5 else 8
seq = int(sys.argv[6]) if len(sys.argv) > 6 else 128
torch.set_num_threads(os.cpu_count())
model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="eager")
if method == "lora":
    from peft import LoraConfig, get_peft_model
    model = get_peft_model(model, LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, task_type="CAUSAL_LM",
                                             target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]))
else:
    for n, p in model.named_parameters():
        p.requires_grad = not ("embed_tokens" in n or "lm_head" in n)
model.train()
params = [p for p in model.parameters() if p.requires_grad]
opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0)
vocab = model.config.vocab_size
ids = torch.tensor([[(i * 7919 + b * 104729) % vocab for i in range(seq)] for b in range(batch)])

def step():
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    opt.zero_grad()
    return loss.item()

t0 = time.time(); step(); first = time.time() - t0
t1 = time.time()
for _ in range(steps):
    step()
secs = (time.time() - t1) / steps
print(json.dumps({"engine": f"pytorch {torch.__version__}", "device": "cpu", "method": method, "rank": rank if method == "lora" else 0,
                  "trainable_parameters": sum(p.numel() for p in params), "first_step_s": first, "step_s": secs,
                  "tokens_per_s": batch * seq / secs, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
