// Attention forward, flash-attention style: softmax(q·kᵀ·scale + mask)·v without the
// [batch, heads, q_len, kv_len] score matrix. One invocation per query row keeps its running
// maximum, normaliser and output row; the workgroup streams key/value tiles of BC rows through
// workgroup memory. GQA: query head h reads key/value head h / (heads / kv_heads).
// Also writes each row's softmax maximum and normaliser (the backward kernels recompute the
// probabilities from them; kept apart rather than as one log-sum-exp, which loses the normaliser
// when the maximum is as large as a masked score, -1e9, in a row whose every key is masked).
//
// q [B, H, T, D], k/v [B, KVH, S, D], mask [MB, 1, T, S] additive (MB = 1 or B), all contiguous;
// ml [B, H, T, 2] (maximum, normaliser).
// Grid: (ceil(T / BR), B * H). Template: d, br, bc, bc_d (= bc * d).

@group(0) @binding(0) var<storage, read_write> q: array<f32>;
@group(0) @binding(1) var<storage, read_write> k: array<f32>;
@group(0) @binding(2) var<storage, read_write> v: array<f32>;
@group(0) @binding(3) var<storage, read_write> mask: array<f32>;
@group(0) @binding(4) var<storage, read_write> o: array<f32>;
@group(0) @binding(5) var<storage, read_write> ml: array<f32>;

struct Params { t: u32, s: u32, heads: u32, kv_heads: u32, mask_batch: u32, scale: f32, causal: u32, pad0: u32 }
@group(0) @binding(6) var<uniform> p: Params;

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
    // Rows past the end still take part in the tile loads and barriers; they write nothing.
    let row = min(i, p.t - 1u);
    let q_base = (bh * p.t + row) * D;
    var qr: array<f32, D>;
    var acc: array<f32, D>;
    for (var d = 0u; d < D; d++) {
        qr[d] = q[q_base + d] * p.scale;
        acc[d] = 0.0;
    }
    var m = -3.0e38;
    var l = 0.0;
    let kv_base = (b * p.kv_heads + g) * p.s * D;
    let mask_base = ((b % p.mask_batch) * p.t + row) * p.s;
    var sc: array<f32, BC>;
    let end = key_end(wg.x);
    for (var j0 = 0u; j0 < end; j0 += BC) {
        let n = min(BC, end - j0);
        for (var x = li; x < n * D; x += BR) {
            kt[x] = k[kv_base + j0 * D + x];
            vt[x] = v[kv_base + j0 * D + x];
        }
        workgroupBarrier();
        var mb = m;
        for (var c = 0u; c < n; c++) {
            var dot = 0.0;
            for (var d = 0u; d < D; d++) {
                dot += qr[d] * kt[c * D + d];
            }
            let s = dot + mask[mask_base + j0 + c];
            sc[c] = s;
            mb = max(mb, s);
        }
        // One rescale per tile, not per key.
        let corr = exp(m - mb);
        l *= corr;
        for (var d = 0u; d < D; d++) {
            acc[d] *= corr;
        }
        for (var c = 0u; c < n; c++) {
            let e = exp(sc[c] - mb);
            l += e;
            for (var d = 0u; d < D; d++) {
                acc[d] += e * vt[c * D + d];
            }
        }
        m = mb;
        workgroupBarrier();
    }
    if (i < p.t) {
        let inv = 1.0 / l;
        for (var d = 0u; d < D; d++) {
            o[q_base + d] = acc[d] * inv;
        }
        ml[2u * (bh * p.t + i)] = m;
        ml[2u * (bh * p.t + i) + 1u] = l;
    }
}
