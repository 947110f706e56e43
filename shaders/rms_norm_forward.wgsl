// RMSNorm forward (Llama's: y = x / sqrt(mean(x²) + eps) · weight, in the order of the composed
// ops in model::layers) over the rows of its input, keeping one float a row, the rms, for the
// backward pass instead of the composed ops' full-size intermediates.
//
// After row_reduce.wgsl and one input file, which declares the uniform `p` and how a row is read:
// `load(i)` the first time (rms_norm_input.wgsl: x; add_rms_norm_input.wgsl: x + delta, also
// stored as the residual stream h), `reload(i)` the second (by the same invocation).
// x/y [rows, H], weight [H], rms [rows]. Grid: folded over rows.

@group(0) @binding(0) var<storage, read_write> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> weight: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<storage, read_write> rms: array<f32>;

struct Params { rows: u32, h: u32, eps: f32, pad0: u32 }

@compute @workgroup_size({{ wg }})
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) n: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let r = row_of(wg, n);
    if (r >= p.rows) {
        return;
    }
    let base = r * p.h;
    var s = 0.0;
    for (var j = li; j < p.h; j += WG) {
        let v = load(base + j);
        s += v * v;
    }
    let rr = sqrt(workgroup_sum(li, s) / f32(p.h) + p.eps);
    for (var j = li; j < p.h; j += WG) {
        y[base + j] = (reload(base + j) / rr) * weight[j];
    }
    if (li == 0u) {
        rms[r] = rr;
    }
}
