// RMSNorm backward, dx per row from x, the weight, the row's rms r and dy:
// dx = w·dy / r − x · Σ(w·dy·x) / (H·r³). (The weight's gradient, a sum over rows, is left to
// burn's ops.)
//
// After row_reduce.wgsl. x/dy/dx [rows, H], weight [H], rms [rows]. Grid: folded over rows.

@group(0) @binding(0) var<storage, read_write> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> weight: array<f32>;
@group(0) @binding(2) var<storage, read_write> rms: array<f32>;
@group(0) @binding(3) var<storage, read_write> dy: array<f32>;
@group(0) @binding(4) var<storage, read_write> dx: array<f32>;

struct Params { rows: u32, h: u32, eps: f32, pad0: u32 }
@group(0) @binding(5) var<uniform> p: Params;

@compute @workgroup_size({{ wg }})
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) n: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let r = row_of(wg, n);
    if (r >= p.rows) {
        return;
    }
    let base = r * p.h;
    var s = 0.0;
    for (var j = li; j < p.h; j += WG) {
        s += weight[j] * dy[base + j] * x[base + j];
    }
    let rr = rms[r];
    let c = workgroup_sum(li, s) / (f32(p.h) * rr * rr * rr);
    for (var j = li; j < p.h; j += WG) {
        dx[base + j] = (weight[j] * dy[base + j]) / rr - x[base + j] * c;
    }
}
