//! Rotary position embeddings fused with the split into heads (`shaders/rope.wgsl`; on the CPU a
//! Rust loop over the cores): a projection's output `[batch, seq, heads, head_dim]` is rotated
//! and written as `[batch, heads, seq, head_dim]` in one pass, forward, and rotated back into the
//! projection's layout in one pass, backward. burn's composed ops take a transposed copy, two
//! slices, a negation, a concatenation, two products and a sum, each a pass (single-threaded on
//! the CPU), and as many again backward.

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::wgpu::{CubeBackend, CubeTensor, into_contiguous};
use burn::backend::{AutodiffBackend, Backend, Dispatch, backend_extension};
use burn::tensor::{DType, Tensor};

use super::wgsl::{Shader, empty, folded, uniform};

/// Invocations per workgroup of the shader (one element each).
const WG: usize = 256;

/// RoPE with the split into heads as a backend extension: `rope` is differentiable in `x`;
/// `rope_backward` is the raw kernel.
#[backend_extension(Cube, Flex: cfg(feature = "native"), Autodiff, Fusion: cfg(feature = "fusion"))]
pub trait RopeKernels: Backend {
    /// `x` `[B, T, H, D]` rotated by the tables `cos`, `sin` `[T, D]` (half-split pairs, as
    /// transformers' `rotate_half`), as `[B, H, T, D]`.
    #[fusion(meta = |x, _cos, _sin| swapped_spec(x))]
    fn rope(
        x: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
    ) -> FloatTensor<Self>;

    /// The input's gradient `[B, T, H, D]` from the output's `dy` `[B, H, T, D]`.
    #[fusion(meta = |dy, _cos, _sin| swapped_spec(dy))]
    fn rope_backward(
        dy: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
    ) -> FloatTensor<Self>;
}

#[cfg(feature = "fusion")]
fn swapped_spec(
    x: &burn::backend::fusion::custom::TensorSpec,
) -> burn::backend::fusion::custom::TensorSpec {
    let [b, t, h, d] = x.shape.dims::<4>();
    burn::backend::fusion::custom::TensorSpec::new([b, h, t, d].into(), x.dtype)
}

/// `x` `[B, T, H, D]` rotated by `cos`, `sin` `[T, D]` and returned as `[B, H, T, D]`, through the
/// kernel (WGSL on a GPU, Rust on the CPU natively); None where it does not apply (not f32, an
/// odd head size, tables of another shape, the CPU in the browser build) and the caller composes
/// burn's ops.
pub fn rope(x: Tensor<4>, cos: Tensor<2>, sin: Tensor<2>) -> Option<Tensor<4>> {
    let [b, t, h, d] = x.dims();
    let n = b * t * h * d;
    let fits = super::has_kernels(&x.device())
        && [x.dtype(), cos.dtype(), sin.dtype()]
            .iter()
            .all(|&dt| dt == DType::F32)
        && cos.dims() == [t, d]
        && sin.dims() == [t, d]
        && d % 2 == 0
        && n > 0
        && n <= u32::MAX as usize;
    fits.then(|| {
        Tensor::from_dispatch(<Dispatch as RopeKernels>::rope(
            x.into_dispatch(),
            cos.into_dispatch(),
            sin.into_dispatch(),
        ))
    })
}

/// `[B, T, H, D]` ↔ `[B, H, T, D]` with the rotation (`backward`: its transpose) through
/// `shaders/rope.wgsl`.
fn launch(x: CubeTensor, cos: CubeTensor, sin: CubeTensor, backward: bool) -> CubeTensor {
    let [x, cos, sin] = [x, cos, sin].map(into_contiguous);
    let s = x.meta.shape();
    let (d0, d1, d2, d) = (s[0], s[1], s[2], s[3]);
    let y = empty(&x, &[d0, d2, d1, d]);
    // The uniform names the sizes by the forward pass's roles: batch, seq, heads, head_dim.
    let (t, h) = if backward { (d2, d1) } else { (d1, d2) };
    let n = d0 * d1 * d2 * d;
    Shader {
        name: "rope",
        source: include_str!("../../../shaders/rope.wgsl"),
        params: vec![("backward", u32::from(backward).into())],
        workgroup: WG as u32,
    }
    .launch(
        folded(n.div_ceil(WG)),
        &[&x, &cos, &sin, &y],
        uniform(&[d0 as u32, t as u32, h as u32, d as u32]),
    );
    y
}

impl RopeKernels for CubeBackend {
    fn rope(x: CubeTensor, cos: CubeTensor, sin: CubeTensor) -> CubeTensor {
        launch(x, cos, sin, false)
    }

    fn rope_backward(dy: CubeTensor, cos: CubeTensor, sin: CubeTensor) -> CubeTensor {
        launch(dy, cos, sin, true)
    }
}

/// RoPE's backward pass: the rotation's transpose, back into the input's layout.
#[derive(Debug)]
struct RopeBackward;

impl<B: RopeKernels> Backward<B, 1> for RopeBackward {
    /// The tables.
    type State = (FloatTensor<B>, FloatTensor<B>);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x] = ops.parents;
        let dy = grads.consume::<B>(&ops.node);
        let (cos, sin) = ops.state;
        if let Some(node) = node_x {
            grads.register::<B>(node.id, B::rope_backward(dy, cos, sin));
        }
    }
}

impl<B: RopeKernels, C: CheckpointStrategy> RopeKernels for Autodiff<B, C> {
    fn rope(
        x: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        // The tables are constants: no gradient flows to them.
        let (cos, sin) = (Self::inner(cos), Self::inner(sin));
        match RopeBackward
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let y = B::rope(x.into_primitive(), cos.clone(), sin.clone());
                prep.finish((cos, sin), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::rope(x.into_primitive(), cos, sin)),
        }
    }

    fn rope_backward(
        dy: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        Self::from_inner(B::rope_backward(
            Self::inner(dy),
            Self::inner(cos),
            Self::inner(sin),
        ))
    }
}
