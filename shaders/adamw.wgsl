// One AdamW step over one parameter tensor (torch.optim.AdamW's arithmetic in f32, in the order
// of train::optim's composed ops, which the CPU backend and --kernels burn run): the clip scale,
// decoupled weight decay, both moments and the update in one pass instead of about fifteen
// elementwise launches. New tensors are written (the old ones may be shared, e.g. by the last
// good state a diverging run falls back to).
//
// After optimizer_common.wgsl. param, grad, m, v and the outputs [n]; clip [1] (the global-norm
// clip scale, 1 without clipping). Grid: folded 1-D over ceil(n / 256), n counted in E
// (vec4s: four elements a thread, each computed as the scalar version would).

@group(0) @binding(0) var<storage, read_write> param: array<E>;
@group(0) @binding(1) var<storage, read_write> grad: array<E>;
@group(0) @binding(2) var<storage, read_write> m: array<E>;
@group(0) @binding(3) var<storage, read_write> v: array<E>;
@group(0) @binding(4) var<storage, read_write> clip: array<f32>;
@group(0) @binding(5) var<storage, read_write> param_out: array<E>;
@group(0) @binding(6) var<storage, read_write> m_out: array<E>;
@group(0) @binding(7) var<storage, read_write> v_out: array<E>;
@group(0) @binding(8) var<uniform> p: Params;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let i = element(wg, groups, li);
    if (i >= p.n) {
        return;
    }
    let g = grad[i] * clip[0];
    let mi = m[i] * p.beta1 + g * p.one_minus_beta1;
    let vi = v[i] * p.beta2 + (g * g) * p.one_minus_beta2;
    let denom = sqrt(vi) / p.sqrt_bias2 + p.eps;
    param_out[i] = param[i] * p.decay - (mi / denom) * p.step_size;
    m_out[i] = mi;
    v_out[i] = vi;
}
