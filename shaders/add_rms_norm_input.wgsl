// rms_norm_forward.wgsl's input: the residual add h = x + delta, stored, so the decoder's
// residual stream and its next norm take one launch and one pass over memory.
// delta/h [rows, H].

@group(0) @binding(4) var<storage, read_write> delta: array<f32>;
@group(0) @binding(5) var<storage, read_write> h: array<f32>;
@group(0) @binding(6) var<uniform> p: Params;

fn load(i: u32) -> f32 {
    let v = x[i] + delta[i];
    h[i] = v;
    return v;
}

// The invocation that stored h[i] reads it back.
fn reload(i: u32) -> f32 {
    return h[i];
}
