//! Cross-entropy fused with the LM head, in chunks of rows: each chunk's logits
//! (`hidden · W`, with the matmul [`super::calibrate`] chose) exist only while that chunk's loss is taken
//! (`shaders/cross_entropy_forward.wgsl`: log-sum-exp and NLL per row) and again, recomputed,
//! while its gradient is (`shaders/cross_entropy_backward.wgsl`: softmax − one-hot). Between the
//! two passes only one float per row is kept, not the `[tokens, vocab]` logits and exponentials
//! that burn's composed ops keep for backward (at a 49k vocabulary the largest activations of a
//! step). The head's weight gradient is computed only when the head is trained.

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::ops::FloatTensorOps;
use burn::backend::tensor::FloatTensor;
use burn::backend::wgpu::{CubeBackend, CubeTensor, into_contiguous};
use burn::backend::{AutodiffBackend, Backend, Dispatch, backend_extension};
use burn::tensor::{DType, Int, Tensor};

use super::matmul::{MatmulKernels, product};
use super::wgsl::{Shader, empty, folded, uniform};

/// Logits per chunk: rows × vocabulary × 4 bytes stays under this (one row at least).
pub const CHUNK_BYTES: usize = 64 << 20;

/// The chunked loss as a backend extension: `chunk_nll` is differentiable; `ce_forward` and
/// `ce_backward` are the raw kernels over a chunk's logits.
#[backend_extension(Cube, Flex: cfg(feature = "native"), Autodiff, Fusion: cfg(feature = "fusion"))]
pub trait CrossEntropyKernels: Backend {
    /// Σ over rows with a target of `−log softmax(h · w)[target]`, `[1]`. `targets` `[rows]`:
    /// token ids as floats, negative = ignored.
    #[fusion(meta = |h, _w, _targets| sum_spec(h))]
    fn chunk_nll(
        h: FloatTensor<Self>,
        w: FloatTensor<Self>,
        targets: FloatTensor<Self>,
    ) -> FloatTensor<Self>;

    /// Each row's log-sum-exp and NLL `[rows]` from its logits.
    #[fusion(meta = |_logits, targets| (targets.clone(), targets.clone()))]
    fn ce_forward(
        logits: FloatTensor<Self>,
        targets: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);

    /// The logits' gradient `(softmax − onehot) · grad` (zero on ignored rows).
    #[fusion(dtype = logits, shape = logits)]
    fn ce_backward(
        logits: FloatTensor<Self>,
        targets: FloatTensor<Self>,
        lse: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self>;
}

#[cfg(feature = "fusion")]
fn sum_spec(
    h: &burn::backend::fusion::custom::TensorSpec,
) -> burn::backend::fusion::custom::TensorSpec {
    burn::backend::fusion::custom::TensorSpec::new([1].into(), h.dtype)
}

/// `Σ −log softmax(hidden · head)[target]` over the targets that are not ignored, computed in
/// chunks of rows without keeping `[rows, vocab]` logits; or None where the kernels do not apply
/// (`hidden` not f32, `head` neither f32 nor f16 — f32 on the CPU —, shapes that do not fit; the
/// CPU in the browser build), and the caller computes the logits.
///
/// `hidden` `[rows, H]`, `head` `[H, V]`, `targets` `[rows]` (negative = ignored).
pub fn chunked_nll(
    hidden: Tensor<2>,
    head: Tensor<2>,
    targets: Tensor<1, Int>,
) -> Option<Tensor<1>> {
    let vocab = head.dims()[1].max(1);
    chunked_nll_rows(hidden, head, targets, (CHUNK_BYTES / (4 * vocab)).max(1))
}

/// [`chunked_nll`] with `per_chunk` rows per chunk.
pub fn chunked_nll_rows(
    hidden: Tensor<2>,
    head: Tensor<2>,
    targets: Tensor<1, Int>,
    per_chunk: usize,
) -> Option<Tensor<1>> {
    let ([rows, h], [hh, vocab], [tr]) = (hidden.dims(), head.dims(), targets.dims());
    let device = hidden.device();
    let fits = super::has_kernels(&device)
        && hidden.dtype() == DType::F32
        && (head.dtype() == DType::F32 || head.dtype() == DType::F16 && super::on_gpu(&device))
        && h == hh
        && tr == rows
        && rows > 0
        // Token ids travel as f32 (exact below 2^24); element indices as u32.
        && vocab < 1 << 24
        && vocab > 0
        && per_chunk > 0;
    if !fits {
        return None;
    }
    let targets = targets.float();
    let parts: Vec<Tensor<1>> = (0..rows)
        .step_by(per_chunk)
        .map(|start| {
            let end = (start + per_chunk).min(rows);
            Tensor::from_dispatch(<Dispatch as CrossEntropyKernels>::chunk_nll(
                hidden.clone().slice_dim(0, start..end).into_dispatch(),
                head.clone().into_dispatch(),
                targets.clone().slice_dim(0, start..end).into_dispatch(),
            ))
        })
        .collect();
    Some(Tensor::cat(parts, 0).sum())
}

impl CrossEntropyKernels for CubeBackend {
    fn chunk_nll(h: CubeTensor, w: CubeTensor, targets: CubeTensor) -> CubeTensor {
        let logits = product::<Self>(h, w);
        let (_, nll) = ce_forward(logits, targets);
        Self::float_sum(nll)
    }

    fn ce_forward(logits: CubeTensor, targets: CubeTensor) -> (CubeTensor, CubeTensor) {
        ce_forward(logits, targets)
    }

    fn ce_backward(
        logits: CubeTensor,
        targets: CubeTensor,
        lse: CubeTensor,
        grad: CubeTensor,
    ) -> CubeTensor {
        ce_backward(logits, targets, lse, grad)
    }
}

impl<B: CrossEntropyKernels + MatmulKernels, C: CheckpointStrategy> CrossEntropyKernels
    for Autodiff<B, C>
{
    fn chunk_nll(
        h: FloatTensor<Self>,
        w: FloatTensor<Self>,
        targets: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct ChunkBackward;

        impl<B: CrossEntropyKernels + MatmulKernels> Backward<B, 2> for ChunkBackward {
            /// h, w, targets, each row's log-sum-exp.
            type State = [FloatTensor<B>; 4];

            fn backward(
                self,
                ops: Ops<Self::State, 2>,
                grads: &mut Gradients,
                _checkpointer: &mut Checkpointer,
            ) {
                let [node_h, node_w] = ops.parents;
                let grad = grads.consume::<B>(&ops.node);
                let [h, w, targets, lse] = ops.state;
                // The chunk's logits again, only for as long as this gradient takes.
                let logits = product::<B>(h.clone(), w.clone());
                let dlogits = B::ce_backward(logits, targets, lse, grad);
                if let Some(node) = node_w {
                    let dw = product::<B>(B::float_transpose(h), dlogits.clone());
                    grads.register::<B>(node.id, dw);
                }
                if let Some(node) = node_h {
                    let dh = product::<B>(dlogits, B::float_transpose(w));
                    grads.register::<B>(node.id, dh);
                }
            }
        }

        let nodes = [h.node(), w.node()];
        let (h, w, targets) = (
            h.into_primitive(),
            w.into_primitive(),
            targets.into_primitive(),
        );
        match ChunkBackward.prepare::<C>(nodes).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let logits = product::<B>(h.clone(), w.clone());
                let (lse, nll) = B::ce_forward(logits, targets.clone());
                prep.finish([h, w, targets, lse], B::float_sum(nll))
            }
            OpsKind::UnTracked(prep) => prep.finish(B::chunk_nll(h, w, targets)),
        }
    }

    fn ce_forward(
        logits: FloatTensor<Self>,
        targets: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let (lse, nll) = B::ce_forward(Self::inner(logits), Self::inner(targets));
        (Self::from_inner(lse), Self::from_inner(nll))
    }

    fn ce_backward(
        logits: FloatTensor<Self>,
        targets: FloatTensor<Self>,
        lse: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        Self::from_inner(B::ce_backward(
            Self::inner(logits),
            Self::inner(targets),
            Self::inner(lse),
            Self::inner(grad),
        ))
    }
}

fn ce_forward(logits: CubeTensor, targets: CubeTensor) -> (CubeTensor, CubeTensor) {
    let (logits, targets) = (into_contiguous(logits), into_contiguous(targets));
    let (rows, vocab) = (logits.meta.shape()[0], logits.meta.shape()[1]);
    let (lse, nll) = (empty(&logits, &[rows]), empty(&logits, &[rows]));
    Shader {
        name: "cross_entropy_forward",
        source: concat!(
            include_str!("../../../shaders/row_reduce.wgsl"),
            include_str!("../../../shaders/cross_entropy_forward.wgsl")
        ),
        params: vec![("wg", 256.into())],
        workgroup: 256,
    }
    .launch(
        folded(rows),
        &[&logits, &targets, &lse, &nll],
        uniform(&[rows as u32, vocab as u32]),
    );
    (lse, nll)
}

fn ce_backward(
    logits: CubeTensor,
    targets: CubeTensor,
    lse: CubeTensor,
    grad: CubeTensor,
) -> CubeTensor {
    let [logits, targets, lse, grad] = [logits, targets, lse, grad].map(into_contiguous);
    let (rows, vocab) = (logits.meta.shape()[0], logits.meta.shape()[1]);
    let out = empty(&logits, &[rows, vocab]);
    Shader {
        name: "cross_entropy_backward",
        source: include_str!("../../../shaders/cross_entropy_backward.wgsl"),
        params: vec![],
        workgroup: 256,
    }
    .launch(
        folded((rows * vocab).div_ceil(256)),
        &[&logits, &targets, &lse, &grad, &out],
        uniform(&[rows as u32, vocab as u32]),
    );
    out
}
