// Cross-entropy gradient over one chunk of logit rows, from their log-sum-exp (the forward
// kernel's): dlogits = softmax(logits) − onehot(target) for rows with a target, 0 for ignored rows
// (target < 0); the caller scales it by the summed loss's upstream gradient. One invocation per
// element.
//
// logits/out [rows, V], targets/lse [rows].
// Grid: folded 1-D over ceil(rows · V / 256) workgroups.

@group(0) @binding(0) var<storage, read_write> logits: array<f32>;
@group(0) @binding(1) var<storage, read_write> targets: array<f32>;
@group(0) @binding(2) var<storage, read_write> lse: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

struct Params { rows: u32, vocab: u32, pad0: u32, pad1: u32 }
@group(0) @binding(4) var<uniform> p: Params;

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
    }
    out[i] = d;
}
