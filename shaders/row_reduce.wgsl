// Shared by the row kernels (prepended to each): one workgroup of WG invocations per row of a
// grid folded over the rows, reducing across the workgroup in workgroup memory. The reductions
// have barriers: call them where every invocation of the workgroup does (uniform control flow).
// Template: wg (invocations per workgroup, a power of two; the kernel's @workgroup_size).

const WG: u32 = {{ wg }}u;
var<workgroup> red: array<f32, WG>;

// The row of workgroup `wg` in a grid of `n` workgroups folded over the rows.
fn row_of(wg: vec3<u32>, n: vec3<u32>) -> u32 {
    return wg.y * n.x + wg.x;
}

// Σ of every invocation's `x`, returned to all of them.
fn workgroup_sum(li: u32, x: f32) -> f32 {
    red[li] = x;
    workgroupBarrier();
    for (var w = WG / 2u; w > 0u; w >>= 1u) {
        if (li < w) {
            red[li] += red[li + w];
        }
        workgroupBarrier();
    }
    let s = red[0];
    // Every invocation has read the result before the next reduction writes.
    workgroupBarrier();
    return s;
}

// The largest of every invocation's `x`, returned to all of them.
fn workgroup_max(li: u32, x: f32) -> f32 {
    red[li] = x;
    workgroupBarrier();
    for (var w = WG / 2u; w > 0u; w >>= 1u) {
        if (li < w) {
            red[li] = max(red[li], red[li + w]);
        }
        workgroupBarrier();
    }
    let m = red[0];
    workgroupBarrier();
    return m;
}
