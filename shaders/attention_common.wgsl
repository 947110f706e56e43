// Shared by the attention kernels (prepended to each): the inputs all of them read, the uniform's
// layout, the causal bounds and rows read as vec4s. Rows are D4 vec4s, the last one zero-padded
// when D is not a multiple of 4, so the products sum four lanes at a time in every kernel alike
// (the backward kernels recompute exactly the forward pass's scores).
//
// q [B, H, T, D], k/v [B, KVH, S, D], mask [MB, 1, T, S] additive (MB = 1 or B), all contiguous.
// GQA: query head h reads key/value head h / (heads / kv_heads).

@group(0) @binding(0) var<storage, read_write> q: array<f32>;
@group(0) @binding(1) var<storage, read_write> k: array<f32>;
@group(0) @binding(2) var<storage, read_write> v: array<f32>;
@group(0) @binding(3) var<storage, read_write> mask: array<f32>;

// `causal`: every key after position s - t + i is masked for query i (see key_end).
// Dropout on the probabilities: `seed` picks the mask, a probability is dropped where its hash is
// below `drop_threshold` (p · 2³², 0 without dropout) and the kept ones scaled by `inv_keep`
// (1 / (1 − p)).
struct Params {
    t: u32, s: u32, heads: u32, kv_heads: u32, mask_batch: u32, scale: f32, causal: u32,
    seed: u32, drop_threshold: u32, inv_keep: f32, pad0: u32, pad1: u32,
}

const D: u32 = {{ d }}u;
const D4: u32 = (D + 3u) / 4u;

// The element indices of the x-th vec4 of the row at `base` (clamped into the row) and which of
// them are in it.
fn lane_index(base: u32, x: u32) -> vec4<u32> {
    return base + min(4u * x + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(D - 1u));
}
fn lane_valid(x: u32) -> vec4<bool> {
    return 4u * x + vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(D);
}

fn q4(base: u32, x: u32) -> vec4<f32> {
    let i = lane_index(base, x);
    return select(vec4<f32>(0.0), vec4<f32>(q[i.x], q[i.y], q[i.z], q[i.w]), lane_valid(x));
}
fn k4(base: u32, x: u32) -> vec4<f32> {
    let i = lane_index(base, x);
    return select(vec4<f32>(0.0), vec4<f32>(k[i.x], k[i.y], k[i.z], k[i.w]), lane_valid(x));
}
fn v4(base: u32, x: u32) -> vec4<f32> {
    let i = lane_index(base, x);
    return select(vec4<f32>(0.0), vec4<f32>(v[i.x], v[i.y], v[i.z], v[i.w]), lane_valid(x));
}

fn hsum(a: vec4<f32>) -> f32 {
    return (a.x + a.y) + (a.z + a.w);
}

// Keys a workgroup of query rows [block·BR, (block + 1)·BR) reads: all of them, or with a causal
// mask those up to its last row's position, since the masked scores of later keys underflow to
// exactly 0 beside any unmasked one.
fn key_end(block: u32, br: u32) -> u32 {
    let last = min((block + 1u) * br, p.t) - 1u;
    return select(p.s, min(p.s, p.s - p.t + last + 1u), p.causal != 0u);
}

// The first query row that sees key `key` (0 without a causal mask).
fn first_query(key: u32) -> u32 {
    return select(0u, key - min(key, p.s - p.t), p.causal != 0u);
}

// PCG's output permutation (Jarzynski & Olano, "Hash Functions for GPU Rendering", 2020).
fn pcg(v: u32) -> u32 {
    let state = v * 747796405u + 2891336453u;
    let word = ((state >> ((state >> 28u) + 4u)) ^ state) * 277803737u;
    return (word >> 22u) ^ word;
}

// Dropout's factor for the probability of query row `row` of head `bh` (b · heads + h) at key
// `key`: 0 where dropped, 1 / (1 − p) where kept, 1 without dropout. A hash of the element's
// index and the seed, so the backward kernels redraw the forward pass's mask (kernels::attention's
// `dropout_keeps` is the same function on the CPU).
fn drop_scale(bh: u32, row: u32, key: u32) -> f32 {
    if (p.drop_threshold == 0u) {
        return 1.0;
    }
    let index = (bh * p.t + row) * p.s + key;
    return select(0.0, p.inv_keep, pcg(pcg(index) ^ p.seed) >= p.drop_threshold);
}
