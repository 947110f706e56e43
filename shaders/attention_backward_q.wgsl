// Attention backward, step 2: dq. One invocation per query row recomputes its probabilities
// tile by tile from q, k and the row's softmax maximum and normaliser (no [T, S] matrix is kept
// from the forward pass), then dS = P·(dO·vᵀ − delta) and dq = scale · dS·k.
//
// q/dout/dq [B, H, T, D], k/v [B, KVH, S, D], mask [MB, 1, T, S], stats [B, H, T, 3] (max, 1 / normaliser, delta).
// Grid: (ceil(T / BR), B * H). Template: d, br, bc, bc_d.

@group(0) @binding(0) var<storage, read_write> q: array<f32>;
@group(0) @binding(1) var<storage, read_write> k: array<f32>;
@group(0) @binding(2) var<storage, read_write> v: array<f32>;
@group(0) @binding(3) var<storage, read_write> mask: array<f32>;
@group(0) @binding(4) var<storage, read_write> stats: array<f32>;
@group(0) @binding(5) var<storage, read_write> dout: array<f32>;
@group(0) @binding(6) var<storage, read_write> dq: array<f32>;

struct Params { t: u32, s: u32, heads: u32, kv_heads: u32, mask_batch: u32, scale: f32, causal: u32, pad0: u32 }
@group(0) @binding(7) var<uniform> p: Params;

const D: u32 = {{ d }}u;
const BR: u32 = {{ br }}u;
const BC: u32 = {{ bc }}u;

var<workgroup> kt: array<f32, {{ bc_d }}>;
var<workgroup> vt: array<f32, {{ bc_d }}>;

// Keys this workgroup reads: all of them, or with a causal mask (p.causal: every key after
// position s - t + i is masked for query i) those up to its last row's position, since the
// masked scores of later keys underflow to exactly 0 beside any unmasked one.
fn key_end(block: u32) -> u32 {
    let last = min((block + 1u) * BR, p.t) - 1u;
    return select(p.s, min(p.s, p.s - p.t + last + 1u), p.causal != 0u);
}

@compute @workgroup_size({{ br }})
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let bh = wg.y;
    let b = bh / p.heads;
    let g = (bh % p.heads) / (p.heads / p.kv_heads);
    let i = wg.x * BR + li;
    let row = min(i, p.t - 1u);
    let q_base = (bh * p.t + row) * D;
    var qr: array<f32, D>;
    var dor: array<f32, D>;
    var acc: array<f32, D>;
    for (var d = 0u; d < D; d++) {
        qr[d] = q[q_base + d] * p.scale;
        dor[d] = dout[q_base + d];
        acc[d] = 0.0;
    }
    let mx = stats[3u * (bh * p.t + row)];
    let inv_l = stats[3u * (bh * p.t + row) + 1u];
    let delta = stats[3u * (bh * p.t + row) + 2u];
    let kv_base = (b * p.kv_heads + g) * p.s * D;
    let mask_base = ((b % p.mask_batch) * p.t + row) * p.s;
    let end = key_end(wg.x);
    for (var j0 = 0u; j0 < end; j0 += BC) {
        let n = min(BC, end - j0);
        for (var x = li; x < n * D; x += BR) {
            kt[x] = k[kv_base + j0 * D + x];
            vt[x] = v[kv_base + j0 * D + x];
        }
        workgroupBarrier();
        for (var c = 0u; c < n; c++) {
            var s = 0.0;
            var dp = 0.0;
            for (var d = 0u; d < D; d++) {
                s += qr[d] * kt[c * D + d];
                dp += dor[d] * vt[c * D + d];
            }
            let pr = exp(s + mask[mask_base + j0 + c] - mx) * inv_l;
            let ds = pr * (dp - delta);
            for (var d = 0u; d < D; d++) {
                acc[d] += ds * kt[c * D + d];
            }
        }
        workgroupBarrier();
    }
    if (i < p.t) {
        for (var d = 0u; d < D; d++) {
            dq[q_base + d] = acc[d] * p.scale;
        }
    }
}
