//! Attention without the `[batch, heads, q_len, kv_len]` score matrix: `shaders/attention_*.wgsl`
//! (flash-attention style: online softmax forward, probabilities recomputed in the backward pass
//! from each row's softmax maximum and normaliser), as a burn backend extension with its own
//! backward.
//!
//! Memory per layer: the output and two floats per query row, instead of the scores, the
//! probabilities and the exponentials burn's composed ops keep for backward (each `T × S` per
//! head). Attention dropout is drawn in the kernels from a hash of each probability's index and
//! a seed, so the backward pass redraws the mask instead of keeping it (`T × S` again).

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::wgpu::{CubeBackend, CubeTensor, into_contiguous};
use burn::backend::{AutodiffBackend, Backend, Dispatch, backend_extension};
use burn::tensor::{DType, Tensor};

use super::wgsl::{MAX_GROUPS, Shader, WORKGROUP_BYTES, empty, folded, grid, uniform};

/// The widest head the kernels take (per-invocation rows of `head_dim` floats).
pub const MAX_HEAD_DIM: usize = 256;

/// Whether the fused kernels take `batch × heads` heads `head_dim` wide: rows up to
/// [`MAX_HEAD_DIM`], and one workgroup row per (batch, head) within WebGPU's per-dimension
/// dispatch limit.
pub fn takes_heads(batch: usize, heads: usize, head_dim: usize) -> bool {
    head_dim <= MAX_HEAD_DIM && batch * heads <= MAX_GROUPS as usize
}

/// Attention as the backend extension: `fused_attention` is differentiable; `_forward` (output
/// and softmax statistics) and `_backward` are the raw kernels the autodiff implementation
/// calls.
#[backend_extension(Cube, Flex: cfg(feature = "native"), Autodiff, Fusion: cfg(feature = "fusion"))]
pub trait AttentionKernels: Backend {
    /// `dropout(softmax(q·kᵀ·scale + mask))·v`, `[B, H, T, D]` (see [`AttentionScalars`]).
    #[fusion(dtype = q, shape = q)]
    fn fused_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        mask: FloatTensor<Self>,
        scalars: AttentionScalars,
    ) -> FloatTensor<Self>;

    /// The output and each query row's softmax maximum and normaliser `[B, H, T, 2]`.
    #[fusion(meta = |q, _k, _v, _mask, _s| (q.clone(), stats_spec(q)))]
    fn fused_attention_forward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        mask: FloatTensor<Self>,
        scalars: AttentionScalars,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);

    /// dq, dk, dv from the forward pass's inputs, output, statistics and the output's gradient.
    #[allow(clippy::too_many_arguments)]
    #[fusion(meta = |q, k, v, _mask, _o, _ml, _dout, _s| (q.clone(), k.clone(), v.clone()))]
    fn fused_attention_backward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        mask: FloatTensor<Self>,
        o: FloatTensor<Self>,
        ml: FloatTensor<Self>,
        dout: FloatTensor<Self>,
        scalars: AttentionScalars,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
}

/// The scalars of one attention call.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttentionScalars {
    pub scale: f32,
    /// The mask hides every key after each query's position, so the kernels skip those keys
    /// (see [`fused_attention`]).
    pub causal: bool,
    /// Dropout on the probabilities: the probability of dropping one (0: none) and the seed of
    /// the mask ([`dropout_keeps`]).
    pub dropout: f32,
    pub seed: u32,
}

impl AttentionScalars {
    /// Hashes below this drop their probability: `p · 2³²`.
    fn drop_threshold(&self) -> u32 {
        (self.dropout as f64 * 4_294_967_296.0)
            .round()
            .min(u32::MAX as f64) as u32
    }
}

/// PCG's output permutation (Jarzynski & Olano 2020), as `shaders/attention_common.wgsl`.
fn pcg(v: u32) -> u32 {
    let state = v.wrapping_mul(747_796_405).wrapping_add(2_891_336_453);
    let word = ((state >> ((state >> 28) + 4)) ^ state).wrapping_mul(277_803_737);
    (word >> 22) ^ word
}

/// Whether attention dropout with probability `p` and `seed` keeps the probability of query
/// row `row` of head `bh` (`b · heads + h`) at key `key`, in a `[B, H, T, S]` problem: the mask
/// the kernels draw (a hash of the element's index and the seed, so the backward pass redraws
/// it), computed on the CPU.
pub fn dropout_keeps(seed: u32, p: f32, [bh, row, key]: [usize; 3], [t, s]: [usize; 2]) -> bool {
    let threshold = AttentionScalars {
        scale: 1.0,
        causal: false,
        dropout: p,
        seed,
    }
    .drop_threshold();
    let index = ((bh as u32).wrapping_mul(t as u32).wrapping_add(row as u32))
        .wrapping_mul(s as u32)
        .wrapping_add(key as u32);
    threshold == 0 || pcg(pcg(index) ^ seed) >= threshold
}

#[cfg(feature = "fusion")]
fn stats_spec(
    q: &burn::backend::fusion::custom::TensorSpec,
) -> burn::backend::fusion::custom::TensorSpec {
    let d = q.shape.dims::<4>();
    burn::backend::fusion::custom::TensorSpec::new([d[0], d[1], d[2], 2].into(), q.dtype)
}

/// Scaled dot-product attention through the kernels (WGSL on a GPU, Rust on the CPU), or `None`
/// when they do not apply here (not f32, a head wider than [`MAX_HEAD_DIM`], shapes they do not
/// take; the CPU in the browser build): the caller then uses burn's ops.
///
/// `q` `[B, H, T, D]`, `k`/`v` `[B, KVH, S, D]` (`H` a multiple of `KVH`), `mask` additive
/// `[1 or B, 1, T, S]`. Returns `[B, H, T, D]`.
///
/// `causal`: the mask hides (≤ −1e9) every key after each query's position (query `i` sits at
/// position `S − T + i`), so the kernels skip those keys (about half the work at `T = S`). Exact
/// for every row with an unmasked key at or before its position (its skipped scores underflow
/// to 0); a row whose keys are all masked (a padding position with nothing visible) averages
/// the keys it reads instead of all `S` — an output nothing downstream of such a row uses.
///
/// `dropout`: the probability of dropping each attention probability and the seed of the mask
/// ([`dropout_keeps`]); the kept ones are scaled by `1 / (1 − p)`, as inverted dropout does.
pub fn fused_attention(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    mask: Tensor<4>,
    scale: f64,
    causal: bool,
    dropout: Option<(f64, u32)>,
) -> Option<Tensor<4>> {
    let ([b, h, t, d], [kb, kvh, s, kd], [mb, m1, mt, ms]) = (q.dims(), k.dims(), mask.dims());
    let fits = super::has_kernels(&q.device())
        && q.dtype() == DType::F32
        && takes_heads(b, h, d)
        && kb == b
        && kd == d
        && v.dims() == k.dims()
        && kvh > 0
        && h % kvh == 0
        && (mb == 1 || mb == b)
        && (m1, mt, ms) == (1, t, s)
        && t > 0
        && s > 0
        // In f32, as the kernels take it: a p that rounds to 1 would scale by 1 / 0.
        && dropout.is_none_or(|(p, _)| (0.0..1.0).contains(&(p as f32)));
    if !fits {
        return None;
    }
    let (dropout, seed) = dropout.unwrap_or((0.0, 0));
    let scalars = AttentionScalars {
        scale: scale as f32,
        // The kernels count positions from S − T: more queries than keys is not causal here.
        causal: causal && t <= s,
        dropout: dropout as f32,
        seed,
    };
    Some(Tensor::from_dispatch(
        <Dispatch as AttentionKernels>::fused_attention(
            q.into_dispatch(),
            k.into_dispatch(),
            v.into_dispatch(),
            mask.into_dispatch(),
            scalars,
        ),
    ))
}

impl AttentionKernels for CubeBackend {
    fn fused_attention(
        q: CubeTensor,
        k: CubeTensor,
        v: CubeTensor,
        mask: CubeTensor,
        scalars: AttentionScalars,
    ) -> CubeTensor {
        forward(q, k, v, mask, scalars).0
    }

    fn fused_attention_forward(
        q: CubeTensor,
        k: CubeTensor,
        v: CubeTensor,
        mask: CubeTensor,
        scalars: AttentionScalars,
    ) -> (CubeTensor, CubeTensor) {
        forward(q, k, v, mask, scalars)
    }

    fn fused_attention_backward(
        q: CubeTensor,
        k: CubeTensor,
        v: CubeTensor,
        mask: CubeTensor,
        o: CubeTensor,
        ml: CubeTensor,
        dout: CubeTensor,
        scalars: AttentionScalars,
    ) -> (CubeTensor, CubeTensor, CubeTensor) {
        backward(q, k, v, mask, o, ml, dout, scalars)
    }
}

impl<B: AttentionKernels, C: CheckpointStrategy> AttentionKernels for Autodiff<B, C> {
    fn fused_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        mask: FloatTensor<Self>,
        scalars: AttentionScalars,
    ) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct AttentionBackward;

        type State<B> = (
            [FloatTensor<B>; 6], // q, k, v, mask, output, softmax statistics
            AttentionScalars,
        );

        impl<B: AttentionKernels> Backward<B, 3> for AttentionBackward {
            type State = State<B>;

            fn backward(
                self,
                ops: Ops<Self::State, 3>,
                grads: &mut Gradients,
                _checkpointer: &mut Checkpointer,
            ) {
                let [node_q, node_k, node_v] = ops.parents;
                let dout = grads.consume::<B>(&ops.node);
                let ([q, k, v, mask, o, ml], scalars) = ops.state;
                let (dq, dk, dv) = B::fused_attention_backward(q, k, v, mask, o, ml, dout, scalars);
                for (node, grad) in [(node_q, dq), (node_k, dk), (node_v, dv)] {
                    if let Some(node) = node {
                        grads.register::<B>(node.id, grad);
                    }
                }
            }
        }

        // The mask is built from constants: it takes no gradient.
        let mask = mask.into_primitive();
        let nodes = [q.node(), k.node(), v.node()];
        let (q, k, v) = (q.into_primitive(), k.into_primitive(), v.into_primitive());
        match AttentionBackward
            .prepare::<C>(nodes)
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (o, ml) = B::fused_attention_forward(
                    q.clone(),
                    k.clone(),
                    v.clone(),
                    mask.clone(),
                    scalars,
                );
                prep.finish(([q, k, v, mask, o.clone(), ml], scalars), o)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::fused_attention(q, k, v, mask, scalars)),
        }
    }

    fn fused_attention_forward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        mask: FloatTensor<Self>,
        scalars: AttentionScalars,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let (o, ml) = B::fused_attention_forward(
            Self::inner(q),
            Self::inner(k),
            Self::inner(v),
            Self::inner(mask),
            scalars,
        );
        (Self::from_inner(o), Self::from_inner(ml))
    }

    fn fused_attention_backward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        mask: FloatTensor<Self>,
        o: FloatTensor<Self>,
        ml: FloatTensor<Self>,
        dout: FloatTensor<Self>,
        scalars: AttentionScalars,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let (dq, dk, dv) = B::fused_attention_backward(
            Self::inner(q),
            Self::inner(k),
            Self::inner(v),
            Self::inner(mask),
            Self::inner(o),
            Self::inner(ml),
            Self::inner(dout),
            scalars,
        );
        (
            Self::from_inner(dq),
            Self::from_inner(dk),
            Self::from_inner(dv),
        )
    }
}

/// The shapes one launch needs, read off contiguous tensors.
struct Dims {
    b: usize,
    h: usize,
    t: usize,
    d: usize,
    kvh: usize,
    s: usize,
    mask_batch: usize,
}

impl Dims {
    fn of(q: &CubeTensor, k: &CubeTensor, mask: &CubeTensor) -> Self {
        let (qs, ks) = (q.meta.shape(), k.meta.shape());
        Dims {
            b: qs[0],
            h: qs[1],
            t: qs[2],
            d: qs[3],
            kvh: ks[1],
            s: ks[2],
            mask_batch: mask.meta.shape()[0],
        }
    }

    /// The `Params` uniform of the forward, dq and dk/dv shaders.
    fn params(&self, s: &AttentionScalars) -> Vec<u64> {
        let u = |x: usize| x as u32;
        let inv_keep = 1.0 / (1.0 - s.dropout);
        uniform(&[
            u(self.t),
            u(self.s),
            u(self.h),
            u(self.kvh),
            u(self.mask_batch),
            s.scale.to_bits(),
            s.causal as u32,
            s.seed,
            s.drop_threshold(),
            inv_keep.to_bits(),
        ])
    }

    /// vec4s per row (the kernels pad rows to a multiple of 4).
    fn d4(&self) -> usize {
        self.d.div_ceil(4)
    }

    /// Query rows per workgroup and key rows per workgroup-memory tile (key and value tiles of
    /// `bc × d4` vec4s each).
    fn query_tiles(&self) -> (usize, usize) {
        let bc = (WORKGROUP_BYTES / (2 * 16 * self.d4())).clamp(1, 64);
        (64, bc)
    }
}

fn contiguous(tensors: [CubeTensor; 4]) -> [CubeTensor; 4] {
    tensors.map(into_contiguous)
}

fn forward(
    q: CubeTensor,
    k: CubeTensor,
    v: CubeTensor,
    mask: CubeTensor,
    scalars: AttentionScalars,
) -> (CubeTensor, CubeTensor) {
    let [q, k, v, mask] = contiguous([q, k, v, mask]);
    let dims = Dims::of(&q, &k, &mask);
    let o = empty(&q, &[dims.b, dims.h, dims.t, dims.d]);
    let ml = empty(&q, &[dims.b, dims.h, dims.t, 2]);
    let (br, bc) = dims.query_tiles();
    Shader {
        name: "attention_forward",
        source: concat!(
            include_str!("../../../shaders/attention_common.wgsl"),
            include_str!("../../../shaders/attention_forward.wgsl")
        ),
        params: vec![
            ("d", (dims.d as u32).into()),
            ("br", (br as u32).into()),
            ("bc", (bc as u32).into()),
            ("bc_d4", ((bc * dims.d4()) as u32).into()),
        ],
        workgroup: br as u32,
    }
    .launch(
        grid(dims.t.div_ceil(br), dims.b * dims.h),
        &[&q, &k, &v, &mask, &o, &ml],
        dims.params(&scalars),
    );
    (o, ml)
}

#[allow(clippy::too_many_arguments)]
fn backward(
    q: CubeTensor,
    k: CubeTensor,
    v: CubeTensor,
    mask: CubeTensor,
    o: CubeTensor,
    ml: CubeTensor,
    dout: CubeTensor,
    scalars: AttentionScalars,
) -> (CubeTensor, CubeTensor, CubeTensor) {
    let [q, k, v, mask] = contiguous([q, k, v, mask]);
    let [o, ml, dout] = [o, ml, dout].map(into_contiguous);
    let dims = Dims::of(&q, &k, &mask);
    let d = dims.d as u32;

    // Each row's softmax maximum, reciprocal normaliser and delta = dO·O, side by side.
    let rows = dims.b * dims.h * dims.t;
    let stats = empty(&q, &[dims.b, dims.h, dims.t, 3]);
    Shader {
        name: "attention_backward_stats",
        source: include_str!("../../../shaders/attention_backward_stats.wgsl"),
        params: vec![("d", d.into()), ("wg", 64.into())],
        workgroup: 64,
    }
    .launch(
        folded(rows.div_ceil(64)),
        &[&o, &dout, &ml, &stats],
        uniform(&[rows as u32]),
    );

    let dq = empty(&q, &[dims.b, dims.h, dims.t, dims.d]);
    let (br, bc) = dims.query_tiles();
    Shader {
        name: "attention_backward_q",
        source: concat!(
            include_str!("../../../shaders/attention_common.wgsl"),
            include_str!("../../../shaders/attention_backward_common.wgsl"),
            include_str!("../../../shaders/attention_backward_q.wgsl")
        ),
        params: vec![
            ("d", d.into()),
            ("br", (br as u32).into()),
            ("bc", (bc as u32).into()),
            ("bc_d4", ((bc * dims.d4()) as u32).into()),
        ],
        workgroup: br as u32,
    }
    .launch(
        grid(dims.t.div_ceil(br), dims.b * dims.h),
        &[&q, &k, &v, &mask, &dout, &stats, &dq],
        dims.params(&scalars),
    );

    // Key rows per workgroup; query rows per tile: q and dO tiles of `br × d4` vec4s and three
    // stats per row in workgroup memory.
    let kv_shape = [dims.b, dims.kvh, dims.s, dims.d];
    let (dk, dv) = (empty(&q, &kv_shape), empty(&q, &kv_shape));
    let keys = 64;
    let rows_per_tile = (WORKGROUP_BYTES / (4 * (8 * dims.d4() + 3))).clamp(1, 64) as u32;
    Shader {
        name: "attention_backward_kv",
        source: concat!(
            include_str!("../../../shaders/attention_common.wgsl"),
            include_str!("../../../shaders/attention_backward_common.wgsl"),
            include_str!("../../../shaders/attention_backward_kv.wgsl")
        ),
        params: vec![
            ("d", d.into()),
            ("bc", (keys as u32).into()),
            ("br", rows_per_tile.into()),
            ("br_d4", (rows_per_tile * dims.d4() as u32).into()),
            ("br3", (rows_per_tile * 3).into()),
        ],
        workgroup: keys as u32,
    }
    .launch(
        grid(dims.s.div_ceil(keys), dims.b * dims.kvh),
        &[&q, &k, &v, &mask, &dout, &stats, &dk, &dv],
        dims.params(&scalars),
    );
    (dq, dk, dv)
}
