// Attention forward, flash-attention style: dropout(softmax(q·kᵀ·scale + mask))·v without the
// [batch, heads, q_len, kv_len] score matrix. One invocation per query row keeps its running
// maximum, normaliser and output row; the workgroup streams key/value tiles of BC rows through
// workgroup memory. Also writes each row's softmax maximum and normaliser (the backward kernels
// recompute the probabilities from them; kept apart rather than as one log-sum-exp, which loses
// the normaliser when the maximum is as large as a masked score, -1e9, in a row whose every key
// is masked).
//
// After attention_common.wgsl. o [B, H, T, D], ml [B, H, T, 2] (maximum, normaliser).
// Grid: (ceil(T / BR), B * H). Template: d, br, bc, bc_d4 (= bc * D4).

@group(0) @binding(4) var<storage, read_write> o: array<f32>;
@group(0) @binding(5) var<storage, read_write> ml: array<f32>;
@group(0) @binding(6) var<uniform> p: Params;

const BR: u32 = {{ br }}u;
const BC: u32 = {{ bc }}u;

var<workgroup> kt: array<vec4<f32>, {{ bc_d4 }}>;
var<workgroup> vt: array<vec4<f32>, {{ bc_d4 }}>;

@compute @workgroup_size({{ br }})
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let bh = wg.y;
    let b = bh / p.heads;
    let g = (bh % p.heads) / (p.heads / p.kv_heads);
    let i = wg.x * BR + li;
    // Rows past the end still take part in the tile loads and barriers; they write nothing.
    let row = min(i, p.t - 1u);
    let q_base = (bh * p.t + row) * D;
    var qr: array<vec4<f32>, D4>;
    var acc: array<vec4<f32>, D4>;
    for (var x = 0u; x < D4; x++) {
        qr[x] = q4(q_base, x) * p.scale;
        acc[x] = vec4<f32>(0.0);
    }
    var m = -3.0e38;
    var l = 0.0;
    let kv_base = (b * p.kv_heads + g) * p.s * D;
    let mask_base = ((b % p.mask_batch) * p.t + row) * p.s;
    var sc: array<f32, BC>;
    let end = key_end(wg.x, BR);
    for (var j0 = 0u; j0 < end; j0 += BC) {
        let n = min(BC, end - j0);
        for (var x = li; x < n * D4; x += BR) {
            let key = kv_base + (j0 + x / D4) * D;
            kt[x] = k4(key, x % D4);
            vt[x] = v4(key, x % D4);
        }
        workgroupBarrier();
        var mb = m;
        for (var c = 0u; c < n; c++) {
            var dot = vec4<f32>(0.0);
            for (var x = 0u; x < D4; x++) {
                dot += qr[x] * kt[c * D4 + x];
            }
            let s = hsum(dot) + mask[mask_base + j0 + c];
            sc[c] = s;
            mb = max(mb, s);
        }
        // One rescale per tile, not per key.
        let corr = exp(m - mb);
        l *= corr;
        for (var x = 0u; x < D4; x++) {
            acc[x] *= corr;
        }
        for (var c = 0u; c < n; c++) {
            let e = exp(sc[c] - mb);
            // The normaliser sums every probability; the output only the kept ones.
            l += e;
            let ez = e * drop_scale(bh, row, j0 + c);
            for (var x = 0u; x < D4; x++) {
                acc[x] += ez * vt[c * D4 + x];
            }
        }
        m = mb;
        workgroupBarrier();
    }
    if (i < p.t) {
        let inv = 1.0 / l;
        for (var d = 0u; d < D; d++) {
            o[q_base + d] = acc[d / 4u][d % 4u] * inv;
        }
        ml[2u * (bh * p.t + i)] = m;
        ml[2u * (bh * p.t + i) + 1u] = l;
    }
}
