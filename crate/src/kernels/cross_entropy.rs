//! Cross-entropy fused with the LM head, in chunks of rows: each chunk's logits
//! (`hidden · W`, with the matmul [`super::calibrate`] chose) exist only while that chunk is
//! processed (`shaders/cross_entropy_forward.wgsl`: log-sum-exp and NLL per row), so no
//! `[tokens, vocab]` logits or exponentials are kept for backward as burn's composed ops keep them
//! (at a 49k vocabulary the largest activations of a step). When the loss is differentiated, each
//! chunk's gradient is taken in the forward pass while its logits exist
//! (`shaders/cross_entropy_backward.wgsl`: softmax − one-hot) and carried through the head at
//! once: `dh = dlogits · Wᵀ` for the chunk's rows and `dW += hᵀ · dlogits`, the latter only when the
//! head trains. The loss is a sum, so its upstream gradient is one number and the backward pass
//! only scales these by it — no logits recomputed (a third of the head's products, which burn's
//! composed ops do not pay either), and neither the hidden states nor the logits kept.

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::ops::FloatTensorOps;
use burn::backend::tensor::FloatTensor;
use burn::backend::wgpu::{CubeBackend, CubeTensor, into_contiguous};
use burn::backend::{AutodiffBackend, Backend, Dispatch, TensorMetadata, backend_extension};
use burn::tensor::{DType, Int, Slice, Tensor};
use std::ops::Range;

use super::matmul::{MatmulKernels, product};
use super::wgsl::{Shader, empty, folded, uniform};

/// Logits per chunk: rows × vocabulary × 4 bytes stays under this (one row at least).
pub const CHUNK_BYTES: usize = 64 << 20;

/// The chunked loss as a backend extension: `summed_nll` is differentiable; `ce_loss` and
/// `ce_loss_grad` are the raw kernels over a chunk's logits.
#[backend_extension(Cube, Flex: cfg(feature = "native"), Autodiff, Fusion: cfg(feature = "fusion"))]
pub trait CrossEntropyKernels: Backend {
    /// Σ over rows with a target of `−log softmax(h · w)[target]`, `[1]`, `per_chunk` rows of
    /// logits at a time. `targets` `[rows]`: token ids as floats, negative = ignored.
    #[fusion(meta = |h, _w, _targets, _per_chunk| sum_spec(h))]
    fn summed_nll(
        h: FloatTensor<Self>,
        w: FloatTensor<Self>,
        targets: FloatTensor<Self>,
        per_chunk: usize,
    ) -> FloatTensor<Self>;

    /// A chunk's Σ NLL `[1]` from its logits.
    #[fusion(meta = |logits, _targets| sum_spec(logits))]
    fn ce_loss(logits: FloatTensor<Self>, targets: FloatTensor<Self>) -> FloatTensor<Self>;

    /// A chunk's Σ NLL `[1]` and the logits' gradient for it, `softmax − onehot` (zero on
    /// ignored rows); the logits' own buffer may be written over.
    #[fusion(meta = |logits, _targets| (sum_spec(logits), logits.clone()))]
    fn ce_loss_grad(
        logits: FloatTensor<Self>,
        targets: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);
}

#[cfg(feature = "fusion")]
fn sum_spec(
    t: &burn::backend::fusion::custom::TensorSpec,
) -> burn::backend::fusion::custom::TensorSpec {
    burn::backend::fusion::custom::TensorSpec::new([1].into(), t.dtype)
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
    fits.then(|| {
        Tensor::from_dispatch(<Dispatch as CrossEntropyKernels>::summed_nll(
            hidden.into_dispatch(),
            head.into_dispatch(),
            targets.float().into_dispatch(),
            per_chunk,
        ))
    })
}

/// The row ranges of `rows` rows in chunks of `per_chunk`.
fn chunks(rows: usize, per_chunk: usize) -> impl Iterator<Item = Range<usize>> {
    (0..rows)
        .step_by(per_chunk)
        .map(move |start| start..(start + per_chunk).min(rows))
}

/// Rows `range` of `t` (a view where the backend has them).
fn rows_of<B: Backend>(t: &FloatTensor<B>, range: Range<usize>) -> FloatTensor<B> {
    let shape = t.shape();
    let slices: Vec<Slice> = std::iter::once(Slice::from(range))
        .chain(shape.iter().skip(1).map(|&d| Slice::from(0..d)))
        .collect();
    B::float_slice(t.clone(), &slices)
}

/// The loss alone ([`CrossEntropyKernels::summed_nll`] on a backend's own tensors): chunk by
/// chunk, logits, then their Σ NLL.
pub(super) fn summed_nll_forward<B: CrossEntropyKernels + MatmulKernels>(
    h: FloatTensor<B>,
    w: FloatTensor<B>,
    targets: FloatTensor<B>,
    per_chunk: usize,
) -> FloatTensor<B> {
    chunks(h.shape()[0], per_chunk)
        .map(|r| {
            B::ce_loss(
                product::<B>(rows_of::<B>(&h, r.clone()), w.clone()),
                rows_of::<B>(&targets, r),
            )
        })
        .reduce(B::float_add)
        .expect("the wrapper passes rows")
}

impl CrossEntropyKernels for CubeBackend {
    fn summed_nll(
        h: CubeTensor,
        w: CubeTensor,
        targets: CubeTensor,
        per_chunk: usize,
    ) -> CubeTensor {
        summed_nll_forward::<Self>(h, w, targets, per_chunk)
    }

    fn ce_loss(logits: CubeTensor, targets: CubeTensor) -> CubeTensor {
        Self::float_sum(ce_forward(logits, targets).1)
    }

    fn ce_loss_grad(logits: CubeTensor, targets: CubeTensor) -> (CubeTensor, CubeTensor) {
        let (lse, nll) = ce_forward(logits.clone(), targets.clone());
        (Self::float_sum(nll), ce_backward(logits, targets, lse))
    }
}

impl<B: CrossEntropyKernels + MatmulKernels, C: CheckpointStrategy> CrossEntropyKernels
    for Autodiff<B, C>
{
    fn summed_nll(
        h: FloatTensor<Self>,
        w: FloatTensor<Self>,
        targets: FloatTensor<Self>,
        per_chunk: usize,
    ) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct NllBackward;

        impl<B: Backend> Backward<B, 2> for NllBackward {
            /// The gradients of h and w for an upstream gradient of 1, each where its parent
            /// needs it (taken in the forward pass, while each chunk's logits existed).
            type State = [Option<FloatTensor<B>>; 2];

            fn backward(
                self,
                ops: Ops<Self::State, 2>,
                grads: &mut Gradients,
                _checkpointer: &mut Checkpointer,
            ) {
                let grad = grads.consume::<B>(&ops.node);
                let g = B::float_reshape(grad, [1, 1].into());
                for (node, unit) in ops.parents.into_iter().zip(ops.state) {
                    if let (Some(node), Some(unit)) = (node, unit) {
                        grads.register::<B>(node.id, B::float_mul(unit, g.clone()));
                    }
                }
            }
        }

        let (h_tracked, w_tracked) = (h.is_tracked(), w.is_tracked());
        let nodes = [h.node(), w.node()];
        let (h, w, targets) = (
            h.into_primitive(),
            w.into_primitive(),
            targets.into_primitive(),
        );
        match NllBackward.prepare::<C>(nodes).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let (mut loss, mut dh, mut dw) = (None, Vec::new(), None);
                for r in chunks(h.shape()[0], per_chunk) {
                    let hc = rows_of::<B>(&h, r.clone());
                    let logits = product::<B>(hc.clone(), w.clone());
                    let (nll, dlogits) = B::ce_loss_grad(logits, rows_of::<B>(&targets, r));
                    loss = Some(add::<B>(loss, nll));
                    if w_tracked {
                        let part = product::<B>(B::float_transpose(hc), dlogits.clone());
                        dw = Some(add::<B>(dw, part));
                    }
                    if h_tracked {
                        dh.push(product::<B>(dlogits, B::float_transpose(w.clone())));
                    }
                }
                let dh = h_tracked.then(|| match dh.len() {
                    1 => dh.remove(0),
                    _ => B::float_cat(dh, 0),
                });
                prep.finish([dh, dw], loss.expect("the wrapper passes rows"))
            }
            OpsKind::UnTracked(prep) => prep.finish(B::summed_nll(h, w, targets, per_chunk)),
        }
    }

    fn ce_loss(logits: FloatTensor<Self>, targets: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::from_inner(B::ce_loss(Self::inner(logits), Self::inner(targets)))
    }

    fn ce_loss_grad(
        logits: FloatTensor<Self>,
        targets: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let (nll, grad) = B::ce_loss_grad(Self::inner(logits), Self::inner(targets));
        (Self::from_inner(nll), Self::from_inner(grad))
    }
}

/// `acc + t` (`t` where there is no `acc` yet).
fn add<B: Backend>(acc: Option<FloatTensor<B>>, t: FloatTensor<B>) -> FloatTensor<B> {
    match acc {
        Some(acc) => B::float_add(acc, t),
        None => t,
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

fn ce_backward(logits: CubeTensor, targets: CubeTensor, lse: CubeTensor) -> CubeTensor {
    let [logits, targets, lse] = [logits, targets, lse].map(into_contiguous);
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
        &[&logits, &targets, &lse, &out],
        uniform(&[rows as u32, vocab as u32]),
    );
    out
}
