// Cross-entropy backward over one chunk of logit rows, recomputed from the forward pass's
// log-sum-exp: dlogits = (softmax(logits) − onehot(target)) · g for rows with a target, 0 for
// ignored rows (target < 0). One invocation per element.
//
// logits/out [rows, V], targets/lse [rows], grad [1] (the upstream gradient of the summed loss).
// Grid: folded 1-D over ceil(rows · V / 256) workgroups.

@group(0) @binding(0) var<storage, read_write> logits: array<f32>;
@group(0) @binding(1) var<storage, read_write> targets: array<f32>;
@group(0) @binding(2) var<storage, read_write> lse: array<f32>;
@group(0) @binding(3) var<storage, read_write> grad: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

struct Params { rows: u32, vocab: u32, pad0: u32, pad1: u32 }
@group(0) @binding(5) var<uniform> p: Params;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) n: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let i = (wg.y * n.x + wg.x) * 256u + li;
    if (i >= p.rows * p.vocab) {
        return;
    }
    let r = i / p.vocab;
    let t = i32(targets[r]);
    var d = 0.0;
    if (t >= 0) {
        d = exp(logits[i] - lse[r]);
        if (u32(t) == i % p.vocab) {
            d -= 1.0;
        }
        d *= grad[0];
    }
    out[i] = d;
}
