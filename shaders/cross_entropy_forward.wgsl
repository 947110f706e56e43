// Cross-entropy forward over one chunk of logit rows: per row its log-sum-exp (for the
// gradient kernel, one float a row) and its negative log-likelihood of the target (0 for ignored
// rows, target < 0). One workgroup per row reduces the vocabulary.
//
// After row_reduce.wgsl. logits [rows, V], targets [rows] (token ids as floats, exact below
// 2^24), lse/nll [rows].
// Grid: (min(rows, 65535), ceil(rows / 65535)).

@group(0) @binding(0) var<storage, read_write> logits: array<f32>;
@group(0) @binding(1) var<storage, read_write> targets: array<f32>;
@group(0) @binding(2) var<storage, read_write> lse: array<f32>;
@group(0) @binding(3) var<storage, read_write> nll: array<f32>;

struct Params { rows: u32, vocab: u32, pad0: u32, pad1: u32 }
@group(0) @binding(4) var<uniform> p: Params;

@compute @workgroup_size({{ wg }})
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) n: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let r = row_of(wg, n);
    if (r >= p.rows) {
        return;
    }
    let base = r * p.vocab;
    var m = -3.0e38;
    for (var j = li; j < p.vocab; j += WG) {
        m = max(m, logits[base + j]);
    }
    let mx = workgroup_max(li, m);
    var s = 0.0;
    for (var j = li; j < p.vocab; j += WG) {
        s += exp(logits[base + j] - mx);
    }
    let total = workgroup_sum(li, s);
    if (li == 0u) {
        let l = mx + log(total);
        lse[r] = l;
        let t = i32(targets[r]);
        var loss = 0.0;
        if (t >= 0 && u32(t) < p.vocab) {
            loss = l - logits[base + u32(t)];
        }
        nll[r] = loss;
    }
}
