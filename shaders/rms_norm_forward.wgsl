// RMSNorm forward (Llama's: y = x / sqrt(mean(x²) + eps) · weight, in the order of the composed
// ops in model::layers) over the rows of x, keeping one float a row, the rms, for the backward
// pass instead of the composed ops' full-size intermediates.
//
// After row_reduce.wgsl. x/y [rows, H], weight [H], rms [rows]. Grid: folded over rows.

@group(0) @binding(0) var<storage, read_write> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> weight: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<storage, read_write> rms: array<f32>;

struct Params { rows: u32, h: u32, eps: f32, pad0: u32 }
@group(0) @binding(4) var<uniform> p: Params;

@compute @workgroup_size({{ wg }})
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) n: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let r = row_of(wg, n);
    if (r >= p.rows) {
        return;
    }
    let base = r * p.h;
    var s = 0.0;
    for (var j = li; j < p.h; j += WG) {
        s += x[base + j] * x[base + j];
    }
    let rr = sqrt(workgroup_sum(li, s) / f32(p.h) + p.eps);
    for (var j = li; j < p.h; j += WG) {
        y[base + j] = (x[base + j] / rr) * weight[j];
    }
    if (li == 0u) {
        rms[r] = rr;
    }
}
