// C = A · B in f32, tiled through workgroup memory for WebGPU without subgroups: a 256-invocation
// workgroup computes a 64 × 64 tile of C, each invocation a 4 × 4 block held in four vec4
// registers, over K in steps of 16 staged in two 4 KiB tiles of vec4s (A's along M, B's along N,
// so the inner loop reads one vec4 of each per k and does 16 FMAs).
//
// A is M × K, stored row-major (TA = 0: a[m·K + k]) or as its transpose (TA = 1: a[k·M + m]);
// B is K × N, stored row-major (TB = 0: b[k·N + n]) or as its transpose (TB = 1: b[n·K + k]).
// The transposed layouts are how the backward pass reads its operands without copying them. Each
// invocation stages one vec4 of each tile, walking the stored rows so neighbouring invocations
// read neighbouring addresses. Out-of-range elements stage as 0; C is written only in range.
//
// With LR = 1 (LoRA's linear) the epilogue adds a low-rank term before C is written:
// C = A · B + scale · (U · V), U `[M, R]` and V `[R, N]` row-major, so the base product and the
// adapter's come out of one launch with one write of C.
//
// B may be stored in f16 (B_ELEM = f16, with ENABLE = `enable f16;`: a frozen weight kept in half
// precision); it is widened to f32 as it is staged, so the products and sums stay f32.
//
// Grid: (ceil(N / 64), ceil(M / 64)).

{{ enable }}

@group(0) @binding(0) var<storage, read_write> a: array<f32>;
@group(0) @binding(1) var<storage, read_write> b: array<{{ b_elem }}>;
@group(0) @binding(2) var<storage, read_write> c: array<f32>;
// U and V (one-element placeholders when LR = 0).
@group(0) @binding(3) var<storage, read_write> u: array<f32>;
@group(0) @binding(4) var<storage, read_write> v: array<f32>;

struct Params { m: u32, n: u32, k: u32, r: u32, scale: f32, pad0: u32, pad1: u32, pad2: u32 }
@group(0) @binding(5) var<uniform> p: Params;

const TA: u32 = {{ ta }}u;
const TB: u32 = {{ tb }}u;
const LR: u32 = {{ lr }}u;
const BK: u32 = 16u;
// vec4s along a tile's 64 rows (A) or columns (B).
const Q: u32 = 16u;

var<workgroup> As: array<vec4<f32>, 256>;
var<workgroup> Bs: array<vec4<f32>, 256>;

fn load_a(m: u32, k: u32) -> f32 {
    if (m >= p.m || k >= p.k) {
        return 0.0;
    }
    if (TA == 0u) {
        return a[m * p.k + k];
    }
    return a[k * p.m + m];
}

fn load_b(k: u32, n: u32) -> f32 {
    if (k >= p.k || n >= p.n) {
        return 0.0;
    }
    if (TB == 0u) {
        return f32(b[k * p.n + n]);
    }
    return f32(b[n * p.k + k]);
}

fn load_u(m: u32, r: u32) -> f32 {
    if (m >= p.m) {
        return 0.0;
    }
    return u[m * p.r + r];
}

fn load_v(r: u32, n: u32) -> f32 {
    if (n >= p.n) {
        return 0.0;
    }
    return v[r * p.n + n];
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let m0 = wg.y * 64u;
    let n0 = wg.x * 64u;
    let tx = li % Q;
    let ty = li / Q;
    // Which vec4 of each tile this invocation stages: along the stored rows' fast dimension.
    var a_k = li % BK;
    var a_q = li / BK;
    if (TA == 1u) {
        a_q = li % Q;
        a_k = li / Q;
    }
    var b_q = li % Q;
    var b_k = li / Q;
    if (TB == 1u) {
        b_k = li % BK;
        b_q = li / BK;
    }
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    for (var k0 = 0u; k0 < p.k; k0 += BK) {
        let am = m0 + a_q * 4u;
        let ak = k0 + a_k;
        As[a_k * Q + a_q] = vec4<f32>(load_a(am, ak), load_a(am + 1u, ak), load_a(am + 2u, ak), load_a(am + 3u, ak));
        let bn = n0 + b_q * 4u;
        let bk = k0 + b_k;
        Bs[b_k * Q + b_q] = vec4<f32>(load_b(bk, bn), load_b(bk, bn + 1u), load_b(bk, bn + 2u), load_b(bk, bn + 3u));
        workgroupBarrier();
        for (var kk = 0u; kk < BK; kk++) {
            let av = As[kk * Q + ty];
            let bv = Bs[kk * Q + tx];
            acc0 += av.x * bv;
            acc1 += av.y * bv;
            acc2 += av.z * bv;
            acc3 += av.w * bv;
        }
        workgroupBarrier();
    }
    let row = m0 + ty * 4u;
    let col = n0 + tx * 4u;
    if (LR == 1u) {
        // Row r of V for this invocation's 4 columns, times each of its 4 rows' U[·, r].
        for (var r = 0u; r < p.r; r++) {
            let vv = vec4<f32>(load_v(r, col), load_v(r, col + 1u), load_v(r, col + 2u), load_v(r, col + 3u));
            acc0 += (p.scale * load_u(row, r)) * vv;
            acc1 += (p.scale * load_u(row + 1u, r)) * vv;
            acc2 += (p.scale * load_u(row + 2u, r)) * vv;
            acc3 += (p.scale * load_u(row + 3u, r)) * vv;
        }
    }
    let accs = array<vec4<f32>, 4>(acc0, acc1, acc2, acc3);
    for (var i = 0u; i < 4u; i++) {
        let r = row + i;
        if (r >= p.m) {
            break;
        }
        let v = accs[i];
        for (var j = 0u; j < 4u; j++) {
            if (col + j < p.n) {
                c[r * p.n + col + j] = v[j];
            }
        }
    }
}
