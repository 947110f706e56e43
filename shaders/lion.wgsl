// One Lion step over one parameter tensor (lion_pytorch's arithmetic in f32, in the order of
// train::optim's composed ops): the clip scale, decoupled weight decay, the signed update and the
// momentum in one pass. New tensors are written, as adamw.wgsl.
//
// After optimizer_common.wgsl. param, grad, m and the outputs [n]; clip [1].
// Grid: folded 1-D over ceil(n / 256), n counted in E
// (vec4s: four elements a thread, each computed as the scalar version would).

@group(0) @binding(0) var<storage, read_write> param: array<E>;
@group(0) @binding(1) var<storage, read_write> grad: array<E>;
@group(0) @binding(2) var<storage, read_write> m: array<E>;
@group(0) @binding(3) var<storage, read_write> clip: array<f32>;
@group(0) @binding(4) var<storage, read_write> param_out: array<E>;
@group(0) @binding(5) var<storage, read_write> m_out: array<E>;
@group(0) @binding(6) var<uniform> p: Params;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let i = element(wg, groups, li);
    if (i >= p.n) {
        return;
    }
    let g = grad[i] * clip[0];
    let update = sign(m[i] * p.beta1 + g * p.one_minus_beta1);
    param_out[i] = param[i] * p.decay - update * p.step_size;
    m_out[i] = m[i] * p.beta2 + g * p.one_minus_beta2;
}
