//! Causal language-modelling loss as transformers computes it: logits at position t predict the
//! label at t + 1; labels of -100 are ignored; the mean is over the remaining targets.

use burn::tensor::{Bool, FloatDType, Int, Tensor};

use crate::kernels::{Kernels, chunked_nll};
use crate::model::CausalLm;

/// Label value that takes no part in the loss (PyTorch's `ignore_index`).
pub const IGNORE: i64 = -100;

/// [`summed_cross_entropy`] of `model` on `ids` `[batch, seq]` (`padding` true for real tokens).
/// With [`Kernels::Tunelab`] on a GPU and a head without bias or adapter, the head and the loss
/// run fused in chunks of rows ([`chunked_nll`]): no `[batch, seq, vocab]` logits are kept for
/// the backward pass.
pub fn summed_lm_loss(
    model: &CausalLm,
    ids: Tensor<2, Int>,
    padding: Tensor<2, Bool>,
    labels: Tensor<2, Int>,
) -> Tensor<1> {
    let hidden = model.hidden(ids, Some(padding));
    let targets = shifted_targets(labels);
    if model.kernels() == Kernels::Tunelab
        && let Some(head) = model.head_matrix()
        && let Some(loss) = chunked_head_nll(hidden.clone(), head, targets.clone())
    {
        return loss;
    }
    summed_target_nll(model.project(hidden), targets)
}

/// Σ NLL of `targets` `[batch, seq]` (already shifted; negative = ignored) under the logits
/// `hidden · head` (`hidden` `[batch, seq, H]`, `head` `[H, vocab]`): with
/// [`Kernels::Tunelab`] fused in chunks where the kernels apply, else burn's ops on the logits.
pub fn head_nll(
    hidden: Tensor<3>,
    head: Tensor<2>,
    targets: Tensor<2, Int>,
    kernels: Kernels,
) -> Tensor<1> {
    let fused = (kernels == Kernels::Tunelab)
        .then(|| chunked_head_nll(hidden.clone(), head.clone(), targets.clone()))
        .flatten();
    fused.unwrap_or_else(|| {
        let head = head.cast(FloatDType::F32);
        summed_target_nll(hidden.matmul(head.unsqueeze()), targets)
    })
}

/// [`chunked_nll`] over the rows of `hidden` `[batch, seq, H]`, or None where it does not apply.
fn chunked_head_nll(
    hidden: Tensor<3>,
    head: Tensor<2>,
    targets: Tensor<2, Int>,
) -> Option<Tensor<1>> {
    let [b, t, h] = hidden.dims();
    chunked_nll(hidden.reshape([b * t, h]), head, targets.reshape([b * t]))
}

/// The label each position predicts: position t the label at t + 1, the last position none.
fn shifted_targets(labels: Tensor<2, Int>) -> Tensor<2, Int> {
    let [b, t] = labels.dims();
    let device = labels.device();
    Tensor::cat(
        vec![
            labels.slice_dim(1, 1..t),
            Tensor::<2, Int>::full([b, 1], IGNORE, &device),
        ],
        1,
    )
}

/// Sum of next-token cross-entropies over the non-ignored targets of `labels` `[batch, seq]`,
/// for `logits` `[batch, seq, vocab]`. Divide by the number of targets for the mean.
///
/// Written as `logsumexp(logits) - logits[target]` per position rather than a gathered
/// `log_softmax`: the `[batch, seq, vocab]` logits are the largest tensors of a step, and this
/// form keeps one full-size intermediate (the exponentials, needed by the backward pass) instead
/// of also materialising the log-probabilities. The labels are shifted instead of the logits
/// sliced (position t predicts label t + 1; the last position predicts nothing), so the logits
/// are not copied either.
pub fn summed_cross_entropy(logits: Tensor<3>, labels: Tensor<2, Int>) -> Tensor<1> {
    summed_target_nll(logits, shifted_targets(labels))
}

/// [`summed_cross_entropy`] for targets already shifted ([`shifted_targets`]).
fn summed_target_nll(logits: Tensor<3>, targets: Tensor<2, Int>) -> Tensor<1> {
    let [b, t, _] = logits.dims();
    let valid = targets.clone().not_equal_elem(IGNORE);
    // Ignored labels point at token 0 for the gather and are masked out of the sum.
    let safe = targets.mask_fill(valid.clone().bool_not(), 0);
    // The max shift only keeps exp() in range; it cancels in the gradient.
    let max = logits.clone().detach().max_dim(2);
    let lse = (logits.clone() - max.clone()).exp().sum_dim(2).log() + max;
    let picked = logits.gather(2, safe.reshape([b, t, 1]));
    let nll = (lse - picked).reshape([b, t]);
    nll.zeros_like().mask_where(valid, nll).sum()
}
