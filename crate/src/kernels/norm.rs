//! RMSNorm as one launch forward and one backward (`shaders/rms_norm_{forward,backward}.wgsl`)
//! that keeps one float a row (its rms) for the backward pass, where burn's composed ops
//! (square, mean, add, sqrt, divide, multiply) take six launches forward and keep full-size
//! intermediates for their backward.

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::wgpu::{CubeBackend, CubeTensor, into_contiguous};
use burn::backend::{AutodiffBackend, Backend, Dispatch, TensorMetadata, backend_extension};
use burn::tensor::{DType, Shape, Tensor};

use super::wgsl::{Shader, empty, folded, uniform};

/// RMSNorm as a backend extension: `rms_norm` is differentiable (in the input and the weight);
/// `_forward` and `_backward` are the raw kernels.
#[backend_extension(Cube, Autodiff, Fusion: cfg(feature = "fusion"))]
pub trait NormKernels: Backend {
    /// `x / sqrt(mean(x²) + eps) · weight` over the rows of `x` `[rows, H]`.
    #[fusion(dtype = x, shape = x)]
    fn rms_norm(x: FloatTensor<Self>, weight: FloatTensor<Self>, eps: f32) -> FloatTensor<Self>;

    /// The output and each row's rms `[rows]`.
    #[fusion(meta = |x, _weight, _eps| (x.clone(), rows_spec(x)))]
    fn rms_norm_forward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        eps: f32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);

    /// The input's gradient from the input, weight, rms per row and the output's gradient.
    #[fusion(dtype = x, shape = x)]
    fn rms_norm_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
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

/// RMSNorm of `x` `[B, T, H]` over its last dimension through the WGSL kernels, or None where
/// they do not apply (not on a GPU, not f32) and the caller uses burn's ops.
pub fn rms_norm(x: Tensor<3>, weight: Tensor<1>, eps: f64) -> Option<Tensor<3>> {
    let [b, t, h] = x.dims();
    let fits = super::on_gpu(&x.device())
        && x.dtype() == DType::F32
        && weight.dtype() == DType::F32
        && weight.dims() == [h]
        && b * t > 0
        && h > 0;
    if !fits {
        return None;
    }
    let y = <Dispatch as NormKernels>::rms_norm(
        x.reshape([b * t, h]).into_dispatch(),
        weight.into_dispatch(),
        eps as f32,
    );
    Some(Tensor::<2>::from_dispatch(y).reshape([b, t, h]))
}

impl NormKernels for CubeBackend {
    fn rms_norm(x: CubeTensor, weight: CubeTensor, eps: f32) -> CubeTensor {
        forward(x, weight, eps).0
    }

    fn rms_norm_forward(x: CubeTensor, weight: CubeTensor, eps: f32) -> (CubeTensor, CubeTensor) {
        forward(x, weight, eps)
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
}

fn forward(x: CubeTensor, weight: CubeTensor, eps: f32) -> (CubeTensor, CubeTensor) {
    let [x, weight] = [x, weight].map(into_contiguous);
    let (rows, h) = (x.meta.shape()[0], x.meta.shape()[1]);
    let (y, rms) = (empty(&x, &[rows, h]), empty(&x, &[rows]));
    Shader {
        name: "rms_norm_forward",
        source: concat!(
            include_str!("../../../shaders/row_reduce.wgsl"),
            include_str!("../../../shaders/rms_norm_forward.wgsl")
        ),
        params: vec![("wg", 64.into())],
        workgroup: 64,
    }
    .launch(
        folded(rows),
        &[&x, &weight, &y, &rms],
        uniform(&[rows as u32, h as u32, eps.to_bits()]),
    );
    (y, rms)
}

impl<B: NormKernels, C: CheckpointStrategy> NormKernels for Autodiff<B, C> {
    fn rms_norm(x: FloatTensor<Self>, weight: FloatTensor<Self>, eps: f32) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct RmsNormBackward;

        impl<B: NormKernels> Backward<B, 2> for RmsNormBackward {
            /// x, weight, each row's rms.
            type State = [FloatTensor<B>; 3];

            fn backward(
                self,
                ops: Ops<Self::State, 2>,
                grads: &mut Gradients,
                _checkpointer: &mut Checkpointer,
            ) {
                let [node_x, node_w] = ops.parents;
                let dy = grads.consume::<B>(&ops.node);
                let [x, weight, rms] = ops.state;
                if let Some(node) = node_w {
                    // Σ over rows of dy · x / rms (the normalised input), with burn's ops.
                    let rows = rms.shape()[0];
                    let h = weight.shape()[0];
                    let normed = B::float_div(
                        x.clone(),
                        B::float_reshape(rms.clone(), Shape::from([rows, 1])),
                    );
                    let dw = B::float_sum_dim(B::float_mul(dy.clone(), normed), 0);
                    grads.register::<B>(node.id, B::float_reshape(dw, Shape::from([h])));
                }
                if let Some(node) = node_x {
                    grads.register::<B>(node.id, B::rms_norm_backward(x, weight, rms, dy));
                }
            }
        }

        let nodes = [x.node(), weight.node()];
        let (x, weight) = (x.into_primitive(), weight.into_primitive());
        match RmsNormBackward
            .prepare::<C>(nodes)
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (y, rms) = B::rms_norm_forward(x.clone(), weight.clone(), eps);
                prep.finish([x, weight, rms], y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::rms_norm(x, weight, eps)),
        }
    }

    fn rms_norm_forward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        eps: f32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let (y, rms) = B::rms_norm_forward(Self::inner(x), Self::inner(weight), eps);
        (Self::from_inner(y), Self::from_inner(rms))
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
}
