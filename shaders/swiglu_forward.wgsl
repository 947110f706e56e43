// Llama's gated activation y = silu(gate) · up = gate / (1 + e^-gate) · up, elementwise.
// gate/up/y [n]. Grid: folded over ceil(n / 256) workgroups of 256, one element each.

@group(0) @binding(0) var<storage, read_write> gate: array<f32>;
@group(0) @binding(1) var<storage, read_write> up: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

struct Params { n: u32, pad0: u32, pad1: u32, pad2: u32 }
@group(0) @binding(3) var<uniform> p: Params;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let i = (wg.y * nw.x + wg.x) * 256u + li;
    if (i >= p.n) {
        return;
    }
    let g = gate[i];
    y[i] = g / (1.0 + exp(-g)) * up[i];
}
