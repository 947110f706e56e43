//! Causal language-modelling loss as transformers computes it: logits at position t predict the
//! label at t + 1; labels of -100 are ignored; the mean is over the remaining targets.

use burn::tensor::{Int, Tensor};

/// Label value that takes no part in the loss (PyTorch's `ignore_index`).
pub const IGNORE: i64 = -100;

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
    let [b, t, _] = logits.dims();
    let device = labels.device();
    let targets = Tensor::cat(
        vec![
            labels.slice_dim(1, 1..t),
            Tensor::<2, Int>::full([b, 1], IGNORE, &device),
        ],
        1,
    );
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
