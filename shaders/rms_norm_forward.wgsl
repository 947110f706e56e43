// RMSNorm forward (Llama's: y = x / sqrt(mean(x²) + eps) · weight, in the order of the composed
// ops in model::layers) over the rows of x, keeping one float a row, the rms, for the backward
// pass instead of the composed ops' full-size intermediates. One workgroup per row reduces in
// workgroup memory.
//
// x/y [rows, H], weight [H], rms [rows]. Grid: folded over rows.

@group(0) @binding(0) var<storage, read_write> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> weight: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<storage, read_write> rms: array<f32>;

struct Params { rows: u32, h: u32, eps: f32, pad0: u32 }
@group(0) @binding(4) var<uniform> p: Params;

const WG: u32 = 64u;
var<workgroup> red: array<f32, WG>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) n: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let r = wg.y * n.x + wg.x;
    if (r >= p.rows) {
        return;
    }
    let base = r * p.h;
    var s = 0.0;
    for (var j = li; j < p.h; j += WG) {
        s += x[base + j] * x[base + j];
    }
    red[li] = s;
    workgroupBarrier();
    for (var w = WG / 2u; w > 0u; w >>= 1u) {
        if (li < w) {
            red[li] += red[li + w];
        }
        workgroupBarrier();
    }
    let rr = sqrt(red[0] / f32(p.h) + p.eps);
    for (var j = li; j < p.h; j += WG) {
        y[base + j] = (x[base + j] / rr) * weight[j];
    }
    if (li == 0u) {
        rms[r] = rr;
    }
}
