// The gradients of y = silu(gate) · up: with s = sigmoid(gate),
// d gate = dy · up · s · (1 + gate · (1 − s)) and d up = dy · gate · s, in one pass.
// gate/up/dy/dgate/dup [n]. Grid: folded over ceil(n / 256) workgroups of 256, one element each.

@group(0) @binding(0) var<storage, read_write> gate: array<f32>;
@group(0) @binding(1) var<storage, read_write> up: array<f32>;
@group(0) @binding(2) var<storage, read_write> dy: array<f32>;
@group(0) @binding(3) var<storage, read_write> dgate: array<f32>;
@group(0) @binding(4) var<storage, read_write> dup: array<f32>;

struct Params { n: u32, pad0: u32, pad1: u32, pad2: u32 }
@group(0) @binding(5) var<uniform> p: Params;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let i = (wg.y * nw.x + wg.x) * 256u + li;
    if (i >= p.n) {
        return;
    }
    let g = gate[i];
    let s = 1.0 / (1.0 + exp(-g));
    let d = dy[i];
    dgate[i] = d * up[i] * s * (1.0 + g * (1.0 - s));
    dup[i] = d * g * s;
}
