// Attention backward, step 3: dk and dv. One invocation per key row of a key/value head streams
// the query rows of every query head sharing it (GQA) through workgroup memory, recomputing
// P = exp(q·kᵀ·scale + mask − max) / normaliser: dv = Σ P·dO, dk = Σ P·(dO·vᵀ − delta)·q·scale. Each key row's
// sums stay in its own invocation, so no atomics are needed.
//
// q/dout [B, H, T, D], k/v/dk/dv [B, KVH, S, D], mask [MB, 1, T, S], stats [B, H, T, 3] (max, 1 / normaliser, delta).
// Grid: (ceil(S / BC), B * KVH). Template: d, bc (keys per workgroup), br (query rows per
// tile), br_d (= br * d), br3 (= br * 3).

@group(0) @binding(0) var<storage, read_write> q: array<f32>;
@group(0) @binding(1) var<storage, read_write> k: array<f32>;
@group(0) @binding(2) var<storage, read_write> v: array<f32>;
@group(0) @binding(3) var<storage, read_write> mask: array<f32>;
@group(0) @binding(4) var<storage, read_write> stats: array<f32>;
@group(0) @binding(5) var<storage, read_write> dout: array<f32>;
@group(0) @binding(6) var<storage, read_write> dk: array<f32>;
@group(0) @binding(7) var<storage, read_write> dv: array<f32>;

struct Params { t: u32, s: u32, heads: u32, kv_heads: u32, mask_batch: u32, scale: f32, causal: u32, pad0: u32 }
@group(0) @binding(8) var<uniform> p: Params;

const D: u32 = {{ d }}u;
const BR: u32 = {{ br }}u;
const BC: u32 = {{ bc }}u;

var<workgroup> qt: array<f32, {{ br_d }}>;
var<workgroup> dot_: array<f32, {{ br_d }}>;
var<workgroup> st: array<f32, {{ br3 }}>;

@compute @workgroup_size({{ bc }})
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let bg = wg.y;
    let b = bg / p.kv_heads;
    let g = bg % p.kv_heads;
    let rep = p.heads / p.kv_heads;
    let j = wg.x * BC + li;
    let key = min(j, p.s - 1u);
    let kv_row = (bg * p.s + key) * D;
    var kr: array<f32, D>;
    var vr: array<f32, D>;
    var dkr: array<f32, D>;
    var dvr: array<f32, D>;
    for (var d = 0u; d < D; d++) {
        kr[d] = k[kv_row + d];
        vr[d] = v[kv_row + d];
        dkr[d] = 0.0;
        dvr[d] = 0.0;
    }
    let mask_base = (b % p.mask_batch) * p.t * p.s + key;
    // With a causal mask, query rows before the workgroup's first key's position see none of
    // its keys: start at the first that does.
    let first = select(0u, wg.x * BC - min(wg.x * BC, p.s - p.t), p.causal != 0u);
    for (var r = 0u; r < rep; r++) {
        let bh = b * p.heads + g * rep + r;
        for (var i0 = first; i0 < p.t; i0 += BR) {
            let n = min(BR, p.t - i0);
            let q_base = (bh * p.t + i0) * D;
            for (var x = li; x < n * D; x += BC) {
                // Scaled as the forward pass scaled it, so the scores are recomputed exactly.
                qt[x] = q[q_base + x] * p.scale;
                dot_[x] = dout[q_base + x];
            }
            for (var x = li; x < 3u * n; x += BC) {
                st[x] = stats[3u * (bh * p.t + i0) + x];
            }
            workgroupBarrier();
            for (var c = 0u; c < n; c++) {
                var s = 0.0;
                var dp = 0.0;
                for (var d = 0u; d < D; d++) {
                    s += qt[c * D + d] * kr[d];
                    dp += dot_[c * D + d] * vr[d];
                }
                let pr = exp(s + mask[mask_base + (i0 + c) * p.s] - st[3u * c]) * st[3u * c + 1u];
                let ds = pr * (dp - st[3u * c + 2u]);
                for (var d = 0u; d < D; d++) {
                    dvr[d] += pr * dot_[c * D + d];
                    dkr[d] += ds * qt[c * D + d];
                }
            }
            workgroupBarrier();
        }
    }
    if (j < p.s) {
        for (var d = 0u; d < D; d++) {
            dk[kv_row + d] = dkr[d];
            dv[kv_row + d] = dvr[d];
        }
    }
}
