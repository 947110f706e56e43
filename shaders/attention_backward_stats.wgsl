// Attention backward, step 1: per query row, from the forward pass's maximum m and normaliser
// l, and delta = Σ_d dO·O (the softmax backward's row term): stats = (m, 1 / l, delta), packed
// per row so the next two kernels stay within WebGPU's 8 storage buffers per shader.
//
// o/dout [rows, D], ml [rows, 2], stats [rows, 3]. Grid: folded 1-D over ceil(rows / wg).
// Template: d, wg.

@group(0) @binding(0) var<storage, read_write> o: array<f32>;
@group(0) @binding(1) var<storage, read_write> dout: array<f32>;
@group(0) @binding(2) var<storage, read_write> ml: array<f32>;
@group(0) @binding(3) var<storage, read_write> stats: array<f32>;

struct Params { rows: u32, pad0: u32, pad1: u32, pad2: u32 }
@group(0) @binding(4) var<uniform> p: Params;

const D: u32 = {{ d }}u;

@compute @workgroup_size({{ wg }})
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) n: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let r = (wg.y * n.x + wg.x) * {{ wg }}u + li;
    if (r >= p.rows) {
        return;
    }
    var delta = 0.0;
    for (var d = 0u; d < D; d++) {
        delta += dout[r * D + d] * o[r * D + d];
    }
    stats[3u * r] = ml[2u * r];
    stats[3u * r + 1u] = 1.0 / ml[2u * r + 1u];
    stats[3u * r + 2u] = delta;
}
