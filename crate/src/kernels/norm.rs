//! RMSNorm as one launch forward and one backward (`shaders/rms_norm_{forward,backward}.wgsl`)
//! that keeps one float a row (its rms) for the backward pass, where burn's composed ops
//! (square, mean, add, sqrt, divide, multiply) take six launches forward and keep full-size
//! intermediates for their backward. The decoder's residual add runs in the same launch as the
//! norm that follows it (`add_rms_norm`), and the weight's gradient takes one launch (two past
//! 128 rows) instead of burn's divide, multiply and sum.

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::ops::FloatTensorOps;
use burn::backend::tensor::FloatTensor;
use burn::backend::wgpu::{CubeBackend, CubeTensor, into_contiguous};
use burn::backend::{AutodiffBackend, Backend, Dispatch, backend_extension};
use burn::tensor::{DType, Shape, Tensor};

use super::wgsl::{MAX_GROUPS, Shader, empty, folded, grid, uniform};

/// RMSNorm as a backend extension: `rms_norm` and `add_rms_norm` are differentiable (in every
/// tensor input); the others are the raw kernels.
#[backend_extension(Cube, Flex: cfg(feature = "native"), Autodiff, Fusion: cfg(feature = "fusion"))]
pub trait NormKernels: Backend {
    /// `x / sqrt(mean(x²) + eps) · weight` over the rows of `x` `[rows, H]`.
    #[fusion(dtype = x, shape = x)]
    fn rms_norm(x: FloatTensor<Self>, weight: FloatTensor<Self>, eps: f32) -> FloatTensor<Self>;

    /// The residual add `h = x + delta` and its RMSNorm, in one launch: `(h, rms_norm(h))`.
    #[fusion(meta = |x, _delta, _weight, _eps| (x.clone(), x.clone()))]
    fn add_rms_norm(
        x: FloatTensor<Self>,
        delta: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        eps: f32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);

    /// The output and each row's rms `[rows]`.
    #[fusion(meta = |x, _weight, _eps| (x.clone(), rows_spec(x)))]
    fn rms_norm_forward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        eps: f32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);

    /// `h = x + delta`, its RMSNorm and each row's rms.
    #[fusion(meta = |x, _delta, _weight, _eps| (x.clone(), x.clone(), rows_spec(x)))]
    fn add_rms_norm_forward(
        x: FloatTensor<Self>,
        delta: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        eps: f32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);

    /// The input's gradient from the input, weight, rms per row and the output's gradient.
    #[fusion(dtype = x, shape = x)]
    fn rms_norm_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        rms: FloatTensor<Self>,
        dy: FloatTensor<Self>,
    ) -> FloatTensor<Self>;

    /// The weight's gradient `[H]`, Σ over rows of `dy · x / rms`.
    #[fusion(meta = |x, _rms, _dy| cols_spec(x))]
    fn rms_norm_weight_grad(
        x: FloatTensor<Self>,
        rms: FloatTensor<Self>,
        dy: FloatTensor<Self>,
    ) -> FloatTensor<Self>;
}

#[cfg(feature = "fusion")]
fn rows_spec(
    x: &burn::backend::fusion::custom::TensorSpec,
) -> burn::backend::fusion::custom::TensorSpec {
    let [rows, _] = x.shape.dims::<2>();
    burn::backend::fusion::custom::TensorSpec::new([rows].into(), x.dtype)
}

#[cfg(feature = "fusion")]
fn cols_spec(
    x: &burn::backend::fusion::custom::TensorSpec,
) -> burn::backend::fusion::custom::TensorSpec {
    let [_, h] = x.shape.dims::<2>();
    burn::backend::fusion::custom::TensorSpec::new([h].into(), x.dtype)
}

/// True when the kernels take `x` `[B, T, H]` with `weight`: on a GPU or natively on the CPU,
/// f32, a weight of H.
fn fits(x: &Tensor<3>, weight: &Tensor<1>) -> bool {
    let [b, t, h] = x.dims();
    super::has_kernels(&x.device())
        && x.dtype() == DType::F32
        && weight.dtype() == DType::F32
        && weight.dims() == [h]
        && b * t > 0
        && h > 0
}

/// RMSNorm of `x` `[B, T, H]` over its last dimension through the kernels (WGSL on a GPU, Rust
/// on the CPU), or None where they do not apply (not f32; the CPU in the browser build) and the
/// caller uses burn's ops.
pub fn rms_norm(x: Tensor<3>, weight: Tensor<1>, eps: f64) -> Option<Tensor<3>> {
    if !fits(&x, &weight) {
        return None;
    }
    let [b, t, h] = x.dims();
    let y = <Dispatch as NormKernels>::rms_norm(
        x.reshape([b * t, h]).into_dispatch(),
        weight.into_dispatch(),
        eps as f32,
    );
    Some(Tensor::<2>::from_dispatch(y).reshape([b, t, h]))
}

/// The residual add `h = x + delta` and RMSNorm of `h` (both `[B, T, H]`) in one launch:
/// `(h, rms_norm(h))`; or None where the kernels do not apply (as [`rms_norm`]; `delta` of
/// another shape or type) and the caller uses burn's ops.
pub fn add_rms_norm(
    x: Tensor<3>,
    delta: Tensor<3>,
    weight: Tensor<1>,
    eps: f64,
) -> Option<(Tensor<3>, Tensor<3>)> {
    if !fits(&x, &weight) || delta.dims() != x.dims() || delta.dtype() != DType::F32 {
        return None;
    }
    let [b, t, h] = x.dims();
    let (sum, y) = <Dispatch as NormKernels>::add_rms_norm(
        x.reshape([b * t, h]).into_dispatch(),
        delta.reshape([b * t, h]).into_dispatch(),
        weight.into_dispatch(),
        eps as f32,
    );
    let back = |t2| Tensor::<2>::from_dispatch(t2).reshape([b, t, h]);
    Some((back(sum), back(y)))
}

impl NormKernels for CubeBackend {
    fn rms_norm(x: CubeTensor, weight: CubeTensor, eps: f32) -> CubeTensor {
        forward(x, None, weight, eps).1
    }

    fn add_rms_norm(
        x: CubeTensor,
        delta: CubeTensor,
        weight: CubeTensor,
        eps: f32,
    ) -> (CubeTensor, CubeTensor) {
        let (h, y, _) = forward(x, Some(delta), weight, eps);
        (h, y)
    }

    fn rms_norm_forward(x: CubeTensor, weight: CubeTensor, eps: f32) -> (CubeTensor, CubeTensor) {
        let (_, y, rms) = forward(x, None, weight, eps);
        (y, rms)
    }

    fn add_rms_norm_forward(
        x: CubeTensor,
        delta: CubeTensor,
        weight: CubeTensor,
        eps: f32,
    ) -> (CubeTensor, CubeTensor, CubeTensor) {
        forward(x, Some(delta), weight, eps)
    }

    fn rms_norm_backward(
        x: CubeTensor,
        weight: CubeTensor,
        rms: CubeTensor,
        dy: CubeTensor,
    ) -> CubeTensor {
        let [x, weight, rms, dy] = [x, weight, rms, dy].map(into_contiguous);
        let (rows, h) = (x.meta.shape()[0], x.meta.shape()[1]);
        let dx = empty(&x, &[rows, h]);
        Shader {
            name: "rms_norm_backward",
            source: concat!(
                include_str!("../../../shaders/row_reduce.wgsl"),
                include_str!("../../../shaders/rms_norm_backward.wgsl")
            ),
            params: vec![("wg", 64.into())],
            workgroup: 64,
        }
        .launch(
            folded(rows),
            &[&x, &weight, &rms, &dy, &dx],
            uniform(&[rows as u32, h as u32, 0]),
        );
        dx
    }

    fn rms_norm_weight_grad(x: CubeTensor, rms: CubeTensor, dy: CubeTensor) -> CubeTensor {
        let [x, rms, dy] = [x, rms, dy].map(into_contiguous);
        let (rows, h) = (x.meta.shape()[0], x.meta.shape()[1]);
        let (chunks, chunk_rows) = weight_grad_chunks(rows);
        let partial = empty(&x, &[chunks, h]);
        Shader {
            name: "rms_norm_weight_grad",
            source: include_str!("../../../shaders/rms_norm_weight_grad.wgsl"),
            params: vec![],
            workgroup: 256,
        }
        .launch(
            grid(h.div_ceil(64), chunks),
            &[&x, &rms, &dy, &partial],
            uniform(&[rows as u32, h as u32, chunk_rows as u32]),
        );
        let dw = match chunks {
            1 => partial,
            _ => Self::float_sum_dim(partial, 0),
        };
        Self::float_reshape(dw, Shape::from([h]))
    }
}

/// Rows a chunk of the weight gradient's first stage sums, and the chunks: 128 rows each (enough
/// workgroups on a large GPU at a few thousand rows, few partial sums to add), more each where
/// the chunks would pass WebGPU's limit on a dispatch dimension.
fn weight_grad_chunks(rows: usize) -> (usize, usize) {
    let chunk_rows = rows.div_ceil(MAX_GROUPS as usize).max(128);
    (rows.div_ceil(chunk_rows), chunk_rows)
}

/// The forward kernel over `x`, or over `x + delta` (then stored as the first output; without
/// `delta` the first output is `x`): (input, output, rms per row).
fn forward(
    x: CubeTensor,
    delta: Option<CubeTensor>,
    weight: CubeTensor,
    eps: f32,
) -> (CubeTensor, CubeTensor, CubeTensor) {
    let [x, weight] = [x, weight].map(into_contiguous);
    let (rows, h) = (x.meta.shape()[0], x.meta.shape()[1]);
    let (y, rms) = (empty(&x, &[rows, h]), empty(&x, &[rows]));
    // With delta, its input file binds delta and the sum after the four shared bindings.
    let added = delta.map(|d| (into_contiguous(d), empty(&x, &[rows, h])));
    let (name, source) = match added {
        None => (
            "rms_norm_forward",
            concat!(
                include_str!("../../../shaders/row_reduce.wgsl"),
                include_str!("../../../shaders/rms_norm_forward.wgsl"),
                include_str!("../../../shaders/rms_norm_input.wgsl")
            ),
        ),
        Some(_) => (
            "add_rms_norm_forward",
            concat!(
                include_str!("../../../shaders/row_reduce.wgsl"),
                include_str!("../../../shaders/rms_norm_forward.wgsl"),
                include_str!("../../../shaders/add_rms_norm_input.wgsl")
            ),
        ),
    };
    let mut bindings = vec![&x, &weight, &y, &rms];
    if let Some((delta, sum)) = &added {
        bindings.extend([delta, sum]);
    }
    Shader {
        name,
        source,
        params: vec![("wg", 64.into())],
        workgroup: 64,
    }
    .launch(
        folded(rows),
        &bindings,
        uniform(&[rows as u32, h as u32, eps.to_bits()]),
    );
    let input = added.map_or(x, |(_, sum)| sum);
    (input, y, rms)
}

/// RMSNorm's backward pass: the input's gradient (one launch) and the weight's (one or two),
/// each only where it is wanted.
#[derive(Debug)]
struct RmsNormBackward;

impl<B: NormKernels> Backward<B, 2> for RmsNormBackward {
    /// The input, the weight, each row's rms.
    type State = [FloatTensor<B>; 3];

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_w] = ops.parents;
        let dy = grads.consume::<B>(&ops.node);
        let [x, weight, rms] = ops.state;
        if let Some(node) = node_w {
            let dw = B::rms_norm_weight_grad(x.clone(), rms.clone(), dy.clone());
            grads.register::<B>(node.id, dw);
        }
        if let Some(node) = node_x {
            grads.register::<B>(node.id, B::rms_norm_backward(x, weight, rms, dy));
        }
    }
}

/// The residual add's backward pass: its gradient, unchanged, to both summands.
#[derive(Debug)]
struct ResidualAddBackward;

impl<B: Backend> Backward<B, 2> for ResidualAddBackward {
    type State = ();

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = grads.consume::<B>(&ops.node);
        let [a, b] = ops.parents;
        if let Some(node) = a {
            grads.register::<B>(node.id, grad.clone());
        }
        if let Some(node) = b {
            grads.register::<B>(node.id, grad);
        }
    }
}

/// The norm's autodiff node over `x` and `weight`, `y` and `rms` being what the kernel computed
/// from them (`rms` kept for the backward pass where either input trains).
fn rms_norm_node<B: NormKernels, C: CheckpointStrategy>(
    x: FloatTensor<Autodiff<B, C>>,
    weight: FloatTensor<Autodiff<B, C>>,
    y: FloatTensor<B>,
    rms: FloatTensor<B>,
) -> FloatTensor<Autodiff<B, C>> {
    let nodes = [x.node(), weight.node()];
    match RmsNormBackward
        .prepare::<C>(nodes)
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            prep.finish([x.into_primitive(), weight.into_primitive(), rms], y)
        }
        OpsKind::UnTracked(prep) => prep.finish(y),
    }
}

impl<B: NormKernels, C: CheckpointStrategy> NormKernels for Autodiff<B, C> {
    fn rms_norm(x: FloatTensor<Self>, weight: FloatTensor<Self>, eps: f32) -> FloatTensor<Self> {
        let (y, rms) = B::rms_norm_forward(x.primitive().clone(), weight.primitive().clone(), eps);
        rms_norm_node::<B, C>(x, weight, y, rms)
    }

    fn add_rms_norm(
        x: FloatTensor<Self>,
        delta: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        eps: f32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let (sum, y, rms) = B::add_rms_norm_forward(
            x.primitive().clone(),
            delta.primitive().clone(),
            weight.primitive().clone(),
            eps,
        );
        // Two nodes from one launch: the add (h), then the norm over h.
        let h = ResidualAddBackward
            .prepare::<C>([x.node(), delta.node()])
            .compute_bound()
            .stateless(sum);
        let y = rms_norm_node::<B, C>(h.clone(), weight, y, rms);
        (h, y)
    }

    fn rms_norm_forward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        eps: f32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let (y, rms) = B::rms_norm_forward(Self::inner(x), Self::inner(weight), eps);
        (Self::from_inner(y), Self::from_inner(rms))
    }

    fn add_rms_norm_forward(
        x: FloatTensor<Self>,
        delta: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        eps: f32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let (h, y, rms) =
            B::add_rms_norm_forward(Self::inner(x), Self::inner(delta), Self::inner(weight), eps);
        (
            Self::from_inner(h),
            Self::from_inner(y),
            Self::from_inner(rms),
        )
    }

    fn rms_norm_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        rms: FloatTensor<Self>,
        dy: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        Self::from_inner(B::rms_norm_backward(
            Self::inner(x),
            Self::inner(weight),
            Self::inner(rms),
            Self::inner(dy),
        ))
    }

    fn rms_norm_weight_grad(
        x: FloatTensor<Self>,
        rms: FloatTensor<Self>,
        dy: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        Self::from_inner(B::rms_norm_weight_grad(
            Self::inner(x),
            Self::inner(rms),
            Self::inner(dy),
        ))
    }
}
