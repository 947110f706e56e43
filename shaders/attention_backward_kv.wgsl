// Attention backward, step 3: dk and dv. One invocation per key row of a key/value head streams
// the query rows of every query head sharing it (GQA) through workgroup memory, recomputing
// P = exp(q·kᵀ·scale + mask − max) / normaliser and dropout's factor Z:
// dv = Σ P·Z·dO, dk = Σ P·(Z·dO·vᵀ − delta)·q·scale.
// Each key row's sums stay in its own invocation, so no atomics are needed.
//
// After attention_common.wgsl and attention_backward_common.wgsl. dk/dv [B, KVH, S, D].
// Grid: (ceil(S / BC), B * KVH). Template: d, bc (keys per workgroup), br (query rows per
// tile), br_d4 (= br * D4), br3 (= br * 3).

@group(0) @binding(6) var<storage, read_write> dk: array<f32>;
@group(0) @binding(7) var<storage, read_write> dv: array<f32>;
@group(0) @binding(8) var<uniform> p: Params;

const BR: u32 = {{ br }}u;
const BC: u32 = {{ bc }}u;

var<workgroup> qt: array<vec4<f32>, {{ br_d4 }}>;
var<workgroup> dot_: array<vec4<f32>, {{ br_d4 }}>;
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
    var kr: array<vec4<f32>, D4>;
    var vr: array<vec4<f32>, D4>;
    var dkr: array<vec4<f32>, D4>;
    var dvr: array<vec4<f32>, D4>;
    for (var x = 0u; x < D4; x++) {
        kr[x] = k4(kv_row, x);
        vr[x] = v4(kv_row, x);
        dkr[x] = vec4<f32>(0.0);
        dvr[x] = vec4<f32>(0.0);
    }
    let mask_base = (b % p.mask_batch) * p.t * p.s + key;
    // Query rows before the first that sees the block's first key see none of its keys.
    let first = first_query(wg.x * BC);
    for (var r = 0u; r < rep; r++) {
        let bh = b * p.heads + g * rep + r;
        for (var i0 = first; i0 < p.t; i0 += BR) {
            let n = min(BR, p.t - i0);
            for (var x = li; x < n * D4; x += BC) {
                let row = (bh * p.t + i0 + x / D4) * D;
                // Scaled as the forward pass scaled it, so the scores are recomputed exactly.
                qt[x] = q4(row, x % D4) * p.scale;
                dot_[x] = dout4(row, x % D4);
            }
            for (var x = li; x < 3u * n; x += BC) {
                st[x] = stats[3u * (bh * p.t + i0) + x];
            }
            workgroupBarrier();
            for (var c = 0u; c < n; c++) {
                var s = vec4<f32>(0.0);
                var dp = vec4<f32>(0.0);
                for (var x = 0u; x < D4; x++) {
                    s += qt[c * D4 + x] * kr[x];
                    dp += dot_[c * D4 + x] * vr[x];
                }
                let pr = exp(hsum(s) + mask[mask_base + (i0 + c) * p.s] - st[3u * c]) * st[3u * c + 1u];
                let z = drop_scale(bh, i0 + c, key);
                let ds = pr * (z * hsum(dp) - st[3u * c + 2u]);
                let pz = pr * z;
                for (var x = 0u; x < D4; x++) {
                    dvr[x] += pz * dot_[c * D4 + x];
                    dkr[x] += ds * qt[c * D4 + x];
                }
            }
            workgroupBarrier();
        }
    }
    if (j < p.s) {
        for (var d = 0u; d < D; d++) {
            dk[kv_row + d] = dkr[d / 4u][d % 4u];
            dv[kv_row + d] = dvr[d / 4u][d % 4u];
        }
    }
}
