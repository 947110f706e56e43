// Shared by the optimizer kernels (prepended to each, after `alias E = vec4<f32>;` when the
// tensors' length is a multiple of 4, else `alias E = f32;`): the step's scalars, as f32 values
// the way train::optim's composed ops receive them, and the element index of a folded 1-D grid.

struct Params {
    // Elements of type E.
    n: u32,
    // 1 − lr · weight decay (decoupled decay, PyTorch's order: before the update).
    decay: f32,
    beta1: f32,
    one_minus_beta1: f32,
    beta2: f32,
    one_minus_beta2: f32,
    // AdamW: sqrt(1 − beta2^t), eps, lr / (1 − beta1^t). Lion: step_size = lr.
    sqrt_bias2: f32,
    eps: f32,
    step_size: f32,
    pad0: u32,
    pad1: u32,
    pad2: u32,
}

const WG: u32 = 256u;

fn element(wg: vec3<u32>, groups: vec3<u32>, li: u32) -> u32 {
    return (wg.y * groups.x + wg.x) * WG + li;
}
