// Rotary position embeddings with the split into heads: transformers' rotate_half rotation
// y = x · cos + rotate_half(x) · sin, rotate_half(x) = (−x[D/2..], x[..D/2]), read from a
// projection's output x [B, T, H, D] and written as y [B, H, T, D] (backward = 0); or its
// transpose (backward = 1), dx = dy · cos + rotate_half_back(dy · sin), read from dy [B, H, T, D]
// and written as dx [B, T, H, D]. cos/sin [T, D]. One output element per invocation.
// Template: backward (0 or 1). Grid: folded over ceil(B·T·H·D / 256) workgroups of 256.

@group(0) @binding(0) var<storage, read_write> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> cos_t: array<f32>;
@group(0) @binding(2) var<storage, read_write> sin_t: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

// Sizes in the forward pass's roles.
struct Params { b: u32, t: u32, h: u32, d: u32 }
@group(0) @binding(4) var<uniform> p: Params;

const BACKWARD: bool = {{ backward }}u == 1u;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let i = (wg.y * nw.x + wg.x) * 256u + li;
    if (i >= p.b * p.t * p.h * p.d) {
        return;
    }
    let j = i % p.d;
    let row = i / p.d;
    // The output row's (batch, head, position) and the input row it reads.
    var bi: u32;
    var hi: u32;
    var ti: u32;
    var src: u32;
    if (BACKWARD) {
        // Output [B, T, H, D], input [B, H, T, D].
        hi = row % p.h;
        ti = (row / p.h) % p.t;
        bi = row / (p.h * p.t);
        src = ((bi * p.h + hi) * p.t + ti) * p.d;
    } else {
        // Output [B, H, T, D], input [B, T, H, D].
        ti = row % p.t;
        hi = (row / p.t) % p.h;
        bi = row / (p.t * p.h);
        src = ((bi * p.t + ti) * p.h + hi) * p.d;
    }
    let half = p.d / 2u;
    let lower = j < half;
    var partner = j + half;
    if (!lower) {
        partner = j - half;
    }
    let tab = ti * p.d;
    // Forward: the partner's term is sin[j]-weighted, negative in the lower half; backward: the
    // transpose, sin[partner]-weighted, negative in the upper half.
    var s = sin_t[tab + j];
    var sign = 1.0;
    if (BACKWARD) {
        s = sin_t[tab + partner];
        if (!lower) {
            sign = -1.0;
        }
    } else if (lower) {
        sign = -1.0;
    }
    y[i] = x[src + j] * cos_t[tab + j] + sign * x[src + partner] * s;
}
