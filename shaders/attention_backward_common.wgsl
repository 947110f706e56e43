// Shared by the attention backward kernels that recompute probabilities (appended after
// attention_common.wgsl): the output's gradient and the per-row statistics.
//
// dout [B, H, T, D]; stats [B, H, T, 3]: softmax maximum, 1 / normaliser, delta = dO·O.

@group(0) @binding(4) var<storage, read_write> dout: array<f32>;
@group(0) @binding(5) var<storage, read_write> stats: array<f32>;

fn dout4(base: u32, x: u32) -> vec4<f32> {
    let i = lane_index(base, x);
    return select(vec4<f32>(0.0), vec4<f32>(dout[i.x], dout[i.y], dout[i.z], dout[i.w]), lane_valid(x));
}
