// rms_norm_forward.wgsl's input: x as it is.

@group(0) @binding(4) var<uniform> p: Params;

fn load(i: u32) -> f32 {
    return x[i];
}

fn reload(i: u32) -> f32 {
    return x[i];
}
