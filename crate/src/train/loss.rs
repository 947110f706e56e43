//! Causal language-modelling loss as transformers computes it: logits at position t predict the
//! label at t + 1; labels of -100 are ignored; the mean is over the remaining targets.

use burn::tensor::activation::log_softmax;
use burn::tensor::{Int, Tensor};

/// Label value that takes no part in the loss (PyTorch's `ignore_index`).
pub const IGNORE: i64 = -100;

/// Sum of next-token cross-entropies over the non-ignored targets of `labels` `[batch, seq]`,
/// for `logits` `[batch, seq, vocab]`. Divide by the number of targets for the mean.
pub fn summed_cross_entropy(logits: Tensor<3>, labels: Tensor<2, Int>) -> Tensor<1> {
    let [b, t, _] = logits.dims();
    let logp = log_softmax(logits.slice_dim(1, 0..t - 1), 2);
    let targets = labels.slice_dim(1, 1..t);
    let valid = targets.clone().not_equal_elem(IGNORE);
    // Ignored labels point at token 0 for the gather and are masked out of the sum.
    let safe = targets.clone().mask_fill(valid.clone().bool_not(), 0);
    let picked = logp
        .gather(2, safe.reshape([b, t - 1, 1]))
        .reshape([b, t - 1]);
    let zero = picked.zeros_like();
    zero.mask_where(valid, picked.neg()).sum()
}
