// Attention backward, step 2: dq. One invocation per query row recomputes its probabilities
// tile by tile from q, k and the row's softmax maximum and normaliser (no [T, S] matrix is kept
// from the forward pass), then dS = P·(Z·dO·vᵀ − delta) and dq = scale · dS·k (Z: dropout's
// factor, redrawn; delta = dO·O holds with dropout too, O being the dropped output).
//
// After attention_common.wgsl and attention_backward_common.wgsl. dq [B, H, T, D].
// Grid: (ceil(T / BR), B * H). Template: d, br, bc, bc_d4 (= bc * D4).

@group(0) @binding(6) var<storage, read_write> dq: array<f32>;
@group(0) @binding(7) var<uniform> p: Params;

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
    let row = min(i, p.t - 1u);
    let q_base = (bh * p.t + row) * D;
    var qr: array<vec4<f32>, D4>;
    var dor: array<vec4<f32>, D4>;
    var acc: array<vec4<f32>, D4>;
    for (var x = 0u; x < D4; x++) {
        qr[x] = q4(q_base, x) * p.scale;
        dor[x] = dout4(q_base, x);
        acc[x] = vec4<f32>(0.0);
    }
    let mx = stats[3u * (bh * p.t + row)];
    let inv_l = stats[3u * (bh * p.t + row) + 1u];
    let delta = stats[3u * (bh * p.t + row) + 2u];
    let kv_base = (b * p.kv_heads + g) * p.s * D;
    let mask_base = ((b % p.mask_batch) * p.t + row) * p.s;
    let end = key_end(wg.x, BR);
    for (var j0 = 0u; j0 < end; j0 += BC) {
        let n = min(BC, end - j0);
        for (var x = li; x < n * D4; x += BR) {
            let key = kv_base + (j0 + x / D4) * D;
            kt[x] = k4(key, x % D4);
            vt[x] = v4(key, x % D4);
        }
        workgroupBarrier();
        for (var c = 0u; c < n; c++) {
            var s = vec4<f32>(0.0);
            var dp = vec4<f32>(0.0);
            for (var x = 0u; x < D4; x++) {
                s += qr[x] * kt[c * D4 + x];
                dp += dor[x] * vt[c * D4 + x];
            }
            let pr = exp(hsum(s) + mask[mask_base + j0 + c] - mx) * inv_l;
            let ds = pr * (drop_scale(bh, row, j0 + c) * hsum(dp) - delta);
            for (var x = 0u; x < D4; x++) {
                acc[x] += ds * kt[c * D4 + x];
            }
        }
        workgroupBarrier();
    }
    if (i < p.t) {
        for (var d = 0u; d < D; d++) {
            dq[q_base + d] = acc[d / 4u][d % 4u] * p.scale;
        }
    }
}
