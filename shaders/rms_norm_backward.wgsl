// RMSNorm backward, dx per row from x, the weight, the row's rms r and dy:
// dx = w·dy / r − x · Σ(w·dy·x) / (H·r³). (The weight's gradient, a sum over rows, is left to
// burn's ops.) One workgroup per row reduces in workgroup memory.
//
// x/dy/dx [rows, H], weight [H], rms [rows]. Grid: folded over rows.

@group(0) @binding(0) var<storage, read_write> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> weight: array<f32>;
@group(0) @binding(2) var<storage, read_write> rms: array<f32>;
@group(0) @binding(3) var<storage, read_write> dy: array<f32>;
@group(0) @binding(4) var<storage, read_write> dx: array<f32>;

struct Params { rows: u32, h: u32, eps: f32, pad0: u32 }
@group(0) @binding(5) var<uniform> p: Params;

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
        s += weight[j] * dy[base + j] * x[base + j];
    }
    red[li] = s;
    workgroupBarrier();
    for (var w = WG / 2u; w > 0u; w >>= 1u) {
        if (li < w) {
            red[li] += red[li + w];
        }
        workgroupBarrier();
    }
    let rr = rms[r];
    let c = red[0] / (f32(p.h) * rr * rr * rr);
    for (var j = li; j < p.h; j += WG) {
        dx[base + j] = (weight[j] * dy[base + j]) / rr - x[base + j] * c;
    }
}
