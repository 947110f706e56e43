//! The kernels on the CPU backend (burn's flex, native builds): RMSNorm with its residual add, the
//! chunked cross-entropy, attention, SwiGLU, RoPE and the AdamW / Lion updates, as Rust loops over
//! rows or elements (attention: over heads, its products in blocks through gemm) spread over the
//! cores with rayon; and the matmul, as the gemm crate called on strided operands.
//! burn's composed ops run each elementwise step as its own single-threaded pass with a fresh
//! output (the CPU's matmuls are threaded, these passes were not: about a third of a step's time
//! on the bench's `small` preset), and its matmul zero-fills and copies each output before the
//! product writes it. The arithmetic is the WGSL kernels' (`shaders/`), row by row; the autodiff
//! wiring is the one of the GPU kernels (each kernel's module).

use burn::backend::Flex;
use burn::backend::flex::FlexTensor;
use burn::tensor::{Shape, TensorData};
use rayon::prelude::*;

use super::attention::{AttentionKernels, AttentionScalars};
use super::cross_entropy::{CrossEntropyKernels, summed_nll_forward};
use super::matmul::MatmulKernels;
use super::norm::NormKernels;
use super::optimizer::{OptimizerKernels, StepScalars};
use super::rope::RopeKernels;
use super::swiglu::SwigluKernels;

/// Rows a rayon task takes: enough work per task to pay for its scheduling at small widths.
const ROWS_PER_TASK: usize = 16;

/// Elements a rayon task of an elementwise kernel takes.
const ELEMENTS_PER_TASK: usize = 4096;

/// `t` in row-major order (copied only when it is a strided view).
fn contiguous(t: FlexTensor) -> FlexTensor {
    t.to_contiguous()
}

/// The f32 values of a contiguous tensor (the public wrappers only pass f32 tensors).
fn values(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>()
        .expect("the kernels' wrappers pass contiguous f32 tensors")
}

/// `t` (made contiguous) as a buffer a kernel writes its result over: its own where nothing
/// else holds it, a copy otherwise.
fn writable(t: FlexTensor) -> FlexTensor {
    let mut t = contiguous(t);
    t.storage_mut::<f32>();
    t
}

/// The values of a contiguous f32 tensor to write (see [`writable`]).
fn values_mut(t: &mut FlexTensor) -> &mut [f32] {
    let (start, end) = t
        .layout()
        .contiguous_offsets()
        .expect("the kernels' wrappers pass contiguous tensors");
    &mut t.storage_mut::<f32>()[start..end]
}

/// Rows and width of a `[rows, width]` tensor.
fn dims2(t: &FlexTensor) -> (usize, usize) {
    let shape = t.layout().shape();
    (shape[0], shape[1])
}

/// A new f32 tensor of `shape` holding `data`.
fn tensor(data: Vec<f32>, shape: impl Into<Shape>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(data, shape.into()))
}

/// One row of RMSNorm: `y = (h / rms) · w` with `h = x (+ delta)` (stored in `sum` when given);
/// returns the row's rms, `sqrt(mean(h²) + eps)`.
fn norm_row(
    x: &[f32],
    added: Option<(&[f32], &mut [f32])>,
    w: &[f32],
    eps: f32,
    y: &mut [f32],
) -> f32 {
    let input: &[f32] = match added {
        Some((delta, sum)) => {
            for ((s, a), b) in sum.iter_mut().zip(x).zip(delta) {
                *s = a + b;
            }
            sum
        }
        None => x,
    };
    let squares: f32 = input.iter().map(|v| v * v).sum();
    let rms = (squares / input.len() as f32 + eps).sqrt();
    for ((y, v), w) in y.iter_mut().zip(input).zip(w) {
        *y = (v / rms) * w;
    }
    rms
}

/// RMSNorm over the rows of `x` (or of `x + delta`): (input, output, rms per row), the input being
/// `x` itself without `delta`.
fn norm_forward(
    x: FlexTensor,
    delta: Option<FlexTensor>,
    weight: FlexTensor,
    eps: f32,
) -> (FlexTensor, FlexTensor, FlexTensor) {
    let (x, weight) = (contiguous(x), contiguous(weight));
    let delta = delta.map(contiguous);
    let (rows, h) = dims2(&x);
    let (xs, w) = (values(&x), values(&weight));
    let mut y = vec![0f32; rows * h];
    let mut rms = vec![0f32; rows];
    let mut sum = delta.as_ref().map(|_| vec![0f32; rows * h]);
    let block = ROWS_PER_TASK * h;
    let mut sums = sum.as_mut().map(|s| s.chunks_mut(block));
    let tasks: Vec<_> = y
        .chunks_mut(block)
        .zip(rms.chunks_mut(ROWS_PER_TASK))
        .enumerate()
        .map(|(i, (y, r))| (i, y, r, sums.as_mut().and_then(|s| s.next())))
        .collect();
    tasks.into_par_iter().for_each(|(i, y, r, mut sum)| {
        for (k, (y, r)) in y.chunks_mut(h).zip(r.iter_mut()).enumerate() {
            let row = (i * ROWS_PER_TASK + k) * h..(i * ROWS_PER_TASK + k + 1) * h;
            let added = match (&delta, sum.as_deref_mut()) {
                (Some(d), Some(s)) => Some((&values(d)[row.clone()], &mut s[k * h..(k + 1) * h])),
                _ => None,
            };
            *r = norm_row(&xs[row], added, w, eps, y);
        }
    });
    let y = tensor(y, [rows, h]);
    let input = match sum {
        Some(s) => tensor(s, [rows, h]),
        None => x,
    };
    (input, y, tensor(rms, [rows]))
}

impl NormKernels for Flex {
    fn rms_norm(x: FlexTensor, weight: FlexTensor, eps: f32) -> FlexTensor {
        norm_forward(x, None, weight, eps).1
    }

    fn add_rms_norm(
        x: FlexTensor,
        delta: FlexTensor,
        weight: FlexTensor,
        eps: f32,
    ) -> (FlexTensor, FlexTensor) {
        let (h, y, _) = norm_forward(x, Some(delta), weight, eps);
        (h, y)
    }

    fn rms_norm_forward(x: FlexTensor, weight: FlexTensor, eps: f32) -> (FlexTensor, FlexTensor) {
        let (_, y, rms) = norm_forward(x, None, weight, eps);
        (y, rms)
    }

    fn add_rms_norm_forward(
        x: FlexTensor,
        delta: FlexTensor,
        weight: FlexTensor,
        eps: f32,
    ) -> (FlexTensor, FlexTensor, FlexTensor) {
        norm_forward(x, Some(delta), weight, eps)
    }

    fn rms_norm_backward(
        x: FlexTensor,
        weight: FlexTensor,
        rms: FlexTensor,
        dy: FlexTensor,
    ) -> FlexTensor {
        let [x, weight, rms, dy] = [x, weight, rms, dy].map(contiguous);
        let (rows, h) = dims2(&x);
        let (xs, w, rs, dys) = (values(&x), values(&weight), values(&rms), values(&dy));
        let mut dx = vec![0f32; rows * h];
        dx.par_chunks_mut(h)
            .zip(xs.par_chunks(h).zip(dys.par_chunks(h)).zip(rs))
            .with_min_len(ROWS_PER_TASK)
            .for_each(|(dx, ((x, dy), &rr))| {
                let s: f32 = w.iter().zip(dy).zip(x).map(|((w, d), x)| w * d * x).sum();
                let c = s / (h as f32 * rr * rr * rr);
                for (((dx, x), d), w) in dx.iter_mut().zip(x).zip(dy).zip(w) {
                    *dx = (w * d) / rr - x * c;
                }
            });
        tensor(dx, [rows, h])
    }

    fn rms_norm_weight_grad(x: FlexTensor, rms: FlexTensor, dy: FlexTensor) -> FlexTensor {
        let [x, rms, dy] = [x, rms, dy].map(contiguous);
        let (_, h) = dims2(&x);
        let (xs, rs, dys) = (values(&x), values(&rms), values(&dy));
        let block = ROWS_PER_TASK * h;
        // Partial sums per block of rows, added in order: the same bits whatever the threads
        // did (a resumed run must retrace the uninterrupted one).
        let partials: Vec<Vec<f32>> = xs
            .par_chunks(block)
            .zip(dys.par_chunks(block))
            .zip(rs.par_chunks(ROWS_PER_TASK))
            .map(|((x, dy), r)| {
                let mut acc = vec![0f32; h];
                for ((x, dy), &rr) in x.chunks(h).zip(dy.chunks(h)).zip(r) {
                    for ((a, x), d) in acc.iter_mut().zip(x).zip(dy) {
                        *a += d * (x / rr);
                    }
                }
                acc
            })
            .collect();
        let mut dw = vec![0f32; h];
        for p in &partials {
            dw.iter_mut().zip(p).for_each(|(a, b)| *a += b);
        }
        tensor(dw, [h])
    }
}

/// One row's NLL (0 for an ignored row: a negative target) and `Σ e^(l − max)`, the row left
/// overwritten by those exponentials.
fn ce_row(logits: &mut [f32], target: f32) -> (f32, f32) {
    let max = logits.iter().fold(f32::MIN, |m, &l| m.max(l));
    let t = target as i64;
    let picked = (t >= 0 && (t as usize) < logits.len()).then(|| logits[t as usize]);
    let sum = exp_shifted(logits, max);
    (picked.map_or(0.0, |l| max + sum.ln() - l), sum)
}

/// A chunk's `[rows, vocab]` logits (overwritten where nothing else holds them: the chunk's fresh
/// logits; a copy otherwise) and each row's NLL; with `grad`, each row becomes its gradient
/// `softmax − onehot` (zeros for an ignored row).
fn ce_rows(logits: FlexTensor, targets: FlexTensor, grad: bool) -> (FlexTensor, Vec<f32>) {
    let (mut logits, targets) = (writable(logits), contiguous(targets));
    let (_, vocab) = dims2(&logits);
    let nll = values_mut(&mut logits)
        .par_chunks_mut(vocab)
        .zip(values(&targets))
        .map(|(row, &t)| {
            if t < 0.0 {
                // Ignored: no loss, and a zero gradient where one is asked for.
                if grad {
                    row.fill(0.0);
                }
                return 0.0;
            }
            let (nll, sum) = ce_row(row, t);
            if grad {
                let inv = 1.0 / sum;
                row.iter_mut().for_each(|e| *e *= inv);
                if let Some(e) = row.get_mut(t as usize) {
                    *e -= 1.0;
                }
            }
            nll
        })
        .collect();
    (logits, nll)
}

impl CrossEntropyKernels for Flex {
    fn summed_nll(
        h: FlexTensor,
        w: FlexTensor,
        targets: FlexTensor,
        per_chunk: usize,
    ) -> FlexTensor {
        summed_nll_forward::<Self>(h, w, targets, per_chunk)
    }

    fn ce_loss(logits: FlexTensor, targets: FlexTensor) -> FlexTensor {
        tensor(vec![ce_rows(logits, targets, false).1.iter().sum()], [1])
    }

    fn ce_loss_grad(logits: FlexTensor, targets: FlexTensor) -> (FlexTensor, FlexTensor) {
        let (grad, nll) = ce_rows(logits, targets, true);
        (tensor(vec![nll.iter().sum()], [1]), grad)
    }
}

/// `e^x` within a few ulp (Cephes' expf: `2^n · e^r` with `|r| ≤ ln 2 / 2` and a degree-6
/// polynomial), 0 below f32's smallest normal and +∞ above its largest. Branch-free, so loops over
/// slices vectorise: glibc's `expf` is a call per element and was a tenth of a CPU step.
#[inline(always)]
fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 in two parts, the first exact in a few bits, so n · LN2_HI is exact.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding and subtracting 1.5 · 2^23 rounds to the nearest integer without a call.
    const ROUND: f32 = 12_582_912.0;
    let c = x.clamp(-87.0, 88.0);
    let n = (c * LOG2E + ROUND) - ROUND;
    let r = c - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let e = p * r * r + r + 1.0;
    let scaled = e * f32::from_bits(((n as i32 + 127) as u32) << 23);
    // Past the clamp: 0 (and NaN stays NaN), +∞.
    if x < -87.0 {
        0.0
    } else if x > 88.0 {
        f32::INFINITY
    } else if x.is_nan() {
        x
    } else {
        scaled
    }
}

/// `xs[j] ← e^(xs[j] − shift)`, returning their sum (in eight lanes, as [`dot`]).
fn exp_shifted(xs: &mut [f32], shift: f32) -> f32 {
    let mut lanes = [0f32; 8];
    let mut chunks = xs.chunks_exact_mut(8);
    for c in &mut chunks {
        for (l, x) in lanes.iter_mut().zip(c) {
            *x = exp(*x - shift);
            *l += *x;
        }
    }
    let mut tail = 0.0;
    for x in chunks.into_remainder() {
        *x = exp(*x - shift);
        tail += *x;
    }
    lanes.iter().sum::<f32>() + tail
}

/// `Σ a·b` in eight independent lanes (the compiler vectorises them; one running f32 sum would
/// have to stay in order).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            lanes[l] += x[l] * y[l];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// One attention problem's shapes: q `[b, h, t, d]`, k/v `[b, kvh, s, d]`, the mask `[1 or b, 1,
/// t, s]`.
#[derive(Clone, Copy)]
struct Heads {
    h: usize,
    t: usize,
    d: usize,
    kvh: usize,
    s: usize,
    mask_batch: usize,
}

impl Heads {
    fn of(q: &FlexTensor, k: &FlexTensor, mask: &FlexTensor) -> Self {
        let (qs, ks) = (q.layout().shape(), k.layout().shape());
        Heads {
            h: qs[1],
            t: qs[2],
            d: qs[3],
            kvh: ks[1],
            s: ks[2],
            mask_batch: mask.layout().shape()[0],
        }
    }

    /// Keys query row `i` reads: up to its position `s − t + i` when the mask is causal.
    fn keys(&self, i: usize, sc: &AttentionScalars) -> usize {
        if sc.causal {
            (self.s - self.t + i + 1).min(self.s)
        } else {
            self.s
        }
    }

    /// The additive mask's row for query `i` of batch `b`.
    fn mask_row<'m>(&self, mask: &'m [f32], b: usize, i: usize) -> &'m [f32] {
        let mb = if self.mask_batch == 1 { 0 } else { b };
        &mask[(mb * self.t + i) * self.s..(mb * self.t + i + 1) * self.s]
    }

    /// The dropout factor of probability (head `bh`, row `i`, key `j`): 0 where dropped,
    /// `1 / (1 − p)` where kept (1 without dropout), the mask of [`super::dropout_keeps`].
    fn drop_scale(&self, sc: &AttentionScalars, bh: usize, i: usize, j: usize) -> f32 {
        if sc.dropout == 0.0 {
            1.0
        } else if super::dropout_keeps(sc.seed, sc.dropout, [bh, i, j], [self.t, self.s]) {
            1.0 / (1.0 - sc.dropout)
        } else {
            0.0
        }
    }
}

/// Query rows one block of the CPU attention takes: its scores `[rows, keys]` are one gemm
/// product (the micro-kernels' speed instead of one dot per key) and stay in the cache; the
/// causal keys no row of the block reads are skipped.
const ATTENTION_ROWS: usize = 64;

/// The query rows of a head as blocks `(first row, rows, keys)` of [`ATTENTION_ROWS`], each with
/// the keys its last (widest) row reads.
fn attention_blocks(
    n: Heads,
    sc: &AttentionScalars,
) -> impl Iterator<Item = (usize, usize, usize)> + '_ {
    (0..n.t).step_by(ATTENTION_ROWS).map(move |i0| {
        let rows = ATTENTION_ROWS.min(n.t - i0);
        (i0, rows, n.keys(i0 + rows - 1, sc))
    })
}

/// Row `i`'s scores (`scale · q·k`, from the gemm) into its unnormalised probabilities
/// `e^(x + mask − max)` over its `live` keys and zeros past them; `max` is the row's largest
/// masked score when given (the backward pass's, from the forward), else found here. Returns
/// the max and the sum of the exponentials.
fn softmax_row(row: &mut [f32], mask: &[f32], live: usize, max: Option<f32>) -> (f32, f32) {
    for (x, m) in row[..live].iter_mut().zip(mask) {
        *x += m;
    }
    let max = max.unwrap_or_else(|| row[..live].iter().fold(f32::MIN, |a, &x| a.max(x)));
    let l = exp_shifted(&mut row[..live], max);
    row[live..].fill(0.0);
    (max, l)
}

/// The forward pass: the output `[b, h, t, d]` and each query row's softmax maximum and
/// normaliser `[b, h, t, 2]`, one (batch, head) a rayon task, in blocks of query rows:
/// `P = softmax(scale · Q·Kᵀ + mask)`, `O = P·V / l`.
fn attention_forward(
    q: FlexTensor,
    k: FlexTensor,
    v: FlexTensor,
    mask: FlexTensor,
    sc: AttentionScalars,
) -> (FlexTensor, FlexTensor) {
    let [q, k, v, mask] = [q, k, v, mask].map(contiguous);
    let n = Heads::of(&q, &k, &mask);
    let b = q.layout().shape()[0];
    let (qs, ks, vs, ms) = (values(&q), values(&k), values(&v), values(&mask));
    let (t, d, s) = (n.t, n.d, n.s);
    let mut out = vec![0f32; b * n.h * t * d];
    let mut ml = vec![0f32; b * n.h * t * 2];
    out.par_chunks_mut(t * d)
        .zip(ml.par_chunks_mut(t * 2))
        .enumerate()
        .for_each(|(bh, (out, ml))| {
            let (bi, hi) = (bh / n.h, bh % n.h);
            let kv = bi * n.kvh + hi / (n.h / n.kvh);
            let (kh, vh) = (&ks[kv * s * d..][..s * d], &vs[kv * s * d..][..s * d]);
            let mut scores = vec![0f32; ATTENTION_ROWS * s];
            for (i0, rows, keys) in attention_blocks(n, &sc) {
                let p = &mut scores[..rows * keys];
                let q_blk = View::rows(&qs[(bh * t + i0) * d..], rows, d);
                gemm_slice(p, keys, q_blk, View::rows(kh, keys, d).t(), false, sc.scale);
                for (r, row) in p.chunks_exact_mut(keys).enumerate() {
                    let i = i0 + r;
                    let live = n.keys(i, &sc);
                    let (max, l) = softmax_row(row, n.mask_row(ms, bi, i), live, None);
                    if sc.dropout != 0.0 {
                        for (j, x) in row[..live].iter_mut().enumerate() {
                            *x *= n.drop_scale(&sc, bh, i, j);
                        }
                    }
                    ml[2 * i] = max;
                    ml[2 * i + 1] = l;
                }
                let o = &mut out[i0 * d..][..rows * d];
                gemm_slice(
                    o,
                    d,
                    View::rows(p, rows, keys),
                    View::rows(vh, keys, d),
                    false,
                    1.0,
                );
                for (r, o) in o.chunks_exact_mut(d).enumerate() {
                    let l = ml[2 * (i0 + r) + 1];
                    o.iter_mut().for_each(|o| *o /= l);
                }
            }
        });
    (tensor(out, [b, n.h, t, d]), tensor(ml, [b, n.h, t, 2]))
}

impl AttentionKernels for Flex {
    fn fused_attention(
        q: FlexTensor,
        k: FlexTensor,
        v: FlexTensor,
        mask: FlexTensor,
        scalars: AttentionScalars,
    ) -> FlexTensor {
        attention_forward(q, k, v, mask, scalars).0
    }

    fn fused_attention_forward(
        q: FlexTensor,
        k: FlexTensor,
        v: FlexTensor,
        mask: FlexTensor,
        scalars: AttentionScalars,
    ) -> (FlexTensor, FlexTensor) {
        attention_forward(q, k, v, mask, scalars)
    }

    fn fused_attention_backward(
        q: FlexTensor,
        k: FlexTensor,
        v: FlexTensor,
        mask: FlexTensor,
        o: FlexTensor,
        ml: FlexTensor,
        dout: FlexTensor,
        scalars: AttentionScalars,
    ) -> (FlexTensor, FlexTensor, FlexTensor) {
        // One (batch, key/value head) a rayon task, covering the query heads that share it, so
        // dk and dv are summed over them without atomics. Per block of query rows, as forward:
        // P again from the saved max and normaliser, dP = dO·Vᵀ, dS = P ⊙ (dP − Σ dO⊙O) · scale,
        // then dV += Pᵀ·dO, dQ = dS·K, dK += dSᵀ·Q.
        let sc = scalars;
        let [q, k, v, mask, o, ml, dout] = [q, k, v, mask, o, ml, dout].map(contiguous);
        let n = Heads::of(&q, &k, &mask);
        let b = q.layout().shape()[0];
        let (qs, ks, vs, ms) = (values(&q), values(&k), values(&v), values(&mask));
        let (os, mls, dos) = (values(&o), values(&ml), values(&dout));
        let (t, d, s) = (n.t, n.d, n.s);
        let group = n.h / n.kvh;
        let mut dq = vec![0f32; b * n.h * t * d];
        let mut dk = vec![0f32; b * n.kvh * s * d];
        let mut dv = vec![0f32; b * n.kvh * s * d];
        dq.par_chunks_mut(group * t * d)
            .zip(dk.par_chunks_mut(s * d).zip(dv.par_chunks_mut(s * d)))
            .enumerate()
            .for_each(|(kv, (dq, (dk, dv)))| {
                let bi = kv / n.kvh;
                let (kh, vh) = (&ks[kv * s * d..][..s * d], &vs[kv * s * d..][..s * d]);
                let mut probs = vec![0f32; ATTENTION_ROWS * s];
                let mut dprobs = vec![0f32; ATTENTION_ROWS * s];
                for g in 0..group {
                    let bh = bi * n.h + (kv % n.kvh) * group + g;
                    for (i0, rows, keys) in attention_blocks(n, &sc) {
                        let (p, dp) = (&mut probs[..rows * keys], &mut dprobs[..rows * keys]);
                        let q_blk = View::rows(&qs[(bh * t + i0) * d..], rows, d);
                        let do_blk = View::rows(&dos[(bh * t + i0) * d..], rows, d);
                        let (k_blk, v_blk) = (View::rows(kh, keys, d), View::rows(vh, keys, d));
                        gemm_slice(p, keys, q_blk, k_blk.t(), false, sc.scale);
                        gemm_slice(dp, keys, do_blk, v_blk.t(), false, 1.0);
                        let pairs = p.chunks_exact_mut(keys).zip(dp.chunks_exact_mut(keys));
                        for (r, (p, dp)) in pairs.enumerate() {
                            let i = i0 + r;
                            let at = bh * t + i;
                            let delta = dot(&dos[at * d..][..d], &os[at * d..][..d]);
                            let (max, l) = (mls[2 * at], mls[2 * at + 1]);
                            let live = n.keys(i, &sc);
                            softmax_row(p, n.mask_row(ms, bi, i), live, Some(max));
                            // p becomes the dropped-out probability dV needs, dp the scores'
                            // gradient dS.
                            for (j, (p, dp)) in p[..live].iter_mut().zip(&mut *dp).enumerate() {
                                let prob = *p / l;
                                let z = n.drop_scale(&sc, bh, i, j);
                                *dp = prob * (z * *dp - delta) * sc.scale;
                                *p = prob * z;
                            }
                            dp[live..].fill(0.0);
                        }
                        let (p, dp) = (View::rows(p, rows, keys), View::rows(dp, rows, keys));
                        let dq_blk = &mut dq[(g * t + i0) * d..][..rows * d];
                        gemm_slice(&mut dv[..keys * d], d, p.t(), do_blk, true, 1.0);
                        gemm_slice(dq_blk, d, dp, k_blk, false, 1.0);
                        gemm_slice(&mut dk[..keys * d], d, dp.t(), q_blk, true, 1.0);
                    }
                }
            });
        (
            tensor(dq, [b, n.h, t, d]),
            tensor(dk, [b, n.kvh, s, d]),
            tensor(dv, [b, n.kvh, s, d]),
        )
    }
}

/// A matrix in a slice, element `(r, c)` at `r · rs + c · cs`: a row-major block or its
/// transpose, read in place by [`gemm_slice`].
#[derive(Clone, Copy)]
struct View<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

impl<'a> View<'a> {
    /// The row-major `[rows, cols]` matrix at the start of `data`.
    fn rows(data: &'a [f32], rows: usize, cols: usize) -> Self {
        View {
            data,
            rows,
            cols,
            rs: cols,
            cs: 1,
        }
    }

    /// The transpose, in place.
    fn t(self) -> Self {
        View {
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
            ..self
        }
    }

    /// The operand as gemm takes it, after checking that every element lies in the slice.
    fn operand(&self) -> Operand {
        let last = (self.rows.max(1) - 1) * self.rs + (self.cols.max(1) - 1) * self.cs;
        assert!(last < self.data.len(), "a gemm operand past its slice");
        Operand {
            ptr: self.data.as_ptr(),
            rs: self.rs as isize,
            cs: self.cs as isize,
        }
    }
}

/// `dst` (row-major, rows `dst_rs` apart) `← (dst if accumulate) + scale · a · b` on the calling
/// thread (for products inside a rayon task).
fn gemm_slice(dst: &mut [f32], dst_rs: usize, a: View, b: View, accumulate: bool, scale: f32) {
    assert!(
        a.cols == b.rows && a.cols > 0,
        "gemm operands that do not chain"
    );
    let (m, n, k) = (a.rows, b.cols, a.cols);
    assert!(
        m == 0 || n == 0 || (m - 1) * dst_rs + n <= dst.len(),
        "a gemm output past its slice"
    );
    // SAFETY: the operands and the output were checked to lie in their slices; `dst` is borrowed
    // mutably, so nothing else reads it.
    unsafe {
        gemm_raw(
            [m, n, k],
            dst.as_mut_ptr(),
            dst_rs,
            accumulate,
            [a.operand(), b.operand()],
            scale,
            false,
        )
    };
}

/// Products at least this large (m·n·k) run on all cores, as burn's CPU matmul does.
const PARALLEL_PRODUCT: usize = 192 * 192 * 192;

/// A gemm operand: its first element and its row and column strides, in elements.
struct Operand {
    ptr: *const f32,
    rs: isize,
    cs: isize,
}

/// `dst ← (dst if accumulate) + scale · a · b`, `a` `[m, k]`, `b` `[k, n]` (`k > 0`), `dst`
/// row-major with rows `dst_rs` apart; on all cores when `parallel` and the product is large.
///
/// # Safety
/// The operands describe `[m, k]` and `[k, n]` matrices of readable memory; `dst` is valid for
/// writes (and reads when `accumulate`) of its `m` rows of `n`, and no other reference to it is
/// live.
unsafe fn gemm_raw(
    [m, n, k]: [usize; 3],
    dst: *mut f32,
    dst_rs: usize,
    accumulate: bool,
    [a, b]: [Operand; 2],
    scale: f32,
    parallel: bool,
) {
    let parallelism = match parallel && m * n * k >= PARALLEL_PRODUCT {
        true => gemm::Parallelism::Rayon(0),
        false => gemm::Parallelism::None,
    };
    // SAFETY: the caller's contract. gemm computes dst = alpha·dst + beta·a·b, reading dst only
    // when told to.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_rs as isize,
            accumulate,
            a.ptr,
            a.cs,
            a.rs,
            b.ptr,
            b.cs,
            b.rs,
            1.0,
            scale,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// `dst ← (dst if accumulate) + scale · a · b` for f32 `a` `[m, k]` and `b` `[k, n]` of any
/// strides into the row-major `[m, n]` at `dst`, on all cores when large.
///
/// # Safety
/// `dst` is valid for `m · n` writes (and reads when `accumulate`), and no other reference to it
/// is live.
unsafe fn gemm_into(dst: *mut f32, a: &FlexTensor, b: &FlexTensor, accumulate: bool, scale: f32) {
    let operand = |t: &FlexTensor| {
        let (layout, data) = (t.layout(), t.storage::<f32>());
        let (shape, strides) = (layout.shape(), layout.strides());
        let ptr = data[layout.start_offset()..].as_ptr();
        let (rs, cs) = (strides[0], strides[1]);
        ((shape[0], shape[1]), Operand { ptr, rs, cs })
    };
    let ((m, k), a) = operand(a);
    let ((_, n), b) = operand(b);
    if k == 0 {
        if !accumulate {
            // SAFETY: the caller's contract.
            unsafe { std::ptr::write_bytes(dst, 0, m * n) };
        }
        return;
    }
    // SAFETY: the operands' pointers and strides describe their own storage (a layout within its
    // buffer); `dst`, the caller's contract.
    unsafe { gemm_raw([m, n, k], dst, n, accumulate, [a, b], scale, true) };
}

/// `a · b (+ scale · u · v)` for 2-D f32 tensors of any strides (a transposed view is read in
/// place), into an output written once (burn's CPU matmul zero-fills a byte buffer and copies it
/// before the product writes it).
///
/// gemm picks its micro-kernels by the operands' layouts, and they sum in different orders: the
/// same values stored transposed can give other bits. Parameters therefore keep one layout
/// whatever their history (adapters loaded from a checkpoint are stored as freshly initialised
/// ones are, `model::lora`), or a resumed run drifts from its uninterrupted twin.
fn product(
    a: &FlexTensor,
    b: &FlexTensor,
    low_rank: Option<(&FlexTensor, &FlexTensor, f32)>,
) -> FlexTensor {
    let (m, n) = (a.layout().shape()[0], b.layout().shape()[1]);
    let mut c = Vec::<f32>::with_capacity(m * n);
    // SAFETY: `c` has room for m·n floats, the first product writes every one (the second reads
    // and adds to them), and only then is the length set.
    unsafe {
        gemm_into(c.as_mut_ptr(), a, b, false, 1.0);
        if let Some((u, v, scale)) = low_rank {
            gemm_into(c.as_mut_ptr(), u, v, true, scale);
        }
        c.set_len(m * n);
    }
    tensor(c, [m, n])
}

impl MatmulKernels for Flex {
    fn tiled_matmul(a: FlexTensor, b: FlexTensor) -> FlexTensor {
        product(&a, &b, None)
    }

    fn tiled_matmul_low_rank(
        a: FlexTensor,
        b: FlexTensor,
        u: FlexTensor,
        v: FlexTensor,
        scale: f32,
    ) -> FlexTensor {
        product(&a, &b, Some((&u, &v, scale)))
    }

    fn lora_linear(
        x: FlexTensor,
        xd: FlexTensor,
        w: FlexTensor,
        a: FlexTensor,
        b: FlexTensor,
        scale: f32,
    ) -> FlexTensor {
        let h = product(&xd, &a, None);
        product(&x, &w, Some((&h, &b, scale)))
    }
}

/// `f` applied element by element to `inputs` (all of one length): `f(inputs at i)` gives the
/// outputs at `i`, in chunks of [`ELEMENTS_PER_TASK`] spread over the cores.
fn elementwise<const I: usize, const O: usize>(
    inputs: [&[f32]; I],
    f: impl Fn([f32; I]) -> [f32; O] + Sync,
) -> [Vec<f32>; O] {
    let n = inputs[0].len();
    let mut outs: [Vec<f32>; O] = std::array::from_fn(|_| vec![0f32; n]);
    let mut chunks: Vec<[&mut [f32]; O]> = Vec::with_capacity(n.div_ceil(ELEMENTS_PER_TASK));
    let mut rest: [&mut [f32]; O] = outs.each_mut().map(|v| v.as_mut_slice());
    while !rest[0].is_empty() {
        let take = ELEMENTS_PER_TASK.min(rest[0].len());
        let mut heads = Vec::with_capacity(O);
        rest = rest.map(|r| {
            let (head, tail) = r.split_at_mut(take);
            heads.push(head);
            tail
        });
        chunks.push(heads.try_into().unwrap_or_else(|_| unreachable!()));
    }
    chunks
        .into_par_iter()
        .enumerate()
        .for_each(|(c, mut outs)| {
            let len = outs[0].len();
            // Every slice exactly `len` long, so the loop's indexing needs no bounds checks.
            let ins = inputs.map(|x| &x[c * ELEMENTS_PER_TASK..][..len]);
            let mut outs = outs.each_mut().map(|o| &mut o[..len]);
            for i in 0..len {
                let y = f(ins.map(|x| x[i]));
                for (o, y) in outs.iter_mut().zip(y) {
                    o[i] = y;
                }
            }
        });
    outs
}

/// `1 / (1 + e^-x)`, as the WGSL kernels compute it.
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

impl SwigluKernels for Flex {
    fn swiglu(gate: FlexTensor, up: FlexTensor) -> FlexTensor {
        let [gate, up] = [gate, up].map(contiguous);
        let [y] = elementwise([&gate, &up].map(values), |[g, u]| [g * sigmoid(g) * u]);
        tensor(y, gate.layout().shape().clone())
    }

    fn swiglu_backward(
        gate: FlexTensor,
        up: FlexTensor,
        dy: FlexTensor,
    ) -> (FlexTensor, FlexTensor) {
        let [gate, up, dy] = [gate, up, dy].map(contiguous);
        let [dg, du] = elementwise([&gate, &up, &dy].map(values), |[g, u, d]| {
            let s = sigmoid(g);
            [d * u * s * (1.0 + g * (1.0 - s)), d * g * s]
        });
        let shape = gate.layout().shape().clone();
        (tensor(dg, shape.clone()), tensor(du, shape))
    }
}

/// [`RopeKernels`]' pass over `x` `[d0, d1, d2, d]` into `[d0, d2, d1, d]`: the rotation forward
/// (`x` `[B, T, H, D]`), its transpose backward (`x` the gradient `[B, H, T, D]`), one output
/// `[d1, d]` block (a head's positions forward, a position's heads backward) a rayon task.
fn rope_pass(x: FlexTensor, cos: FlexTensor, sin: FlexTensor, backward: bool) -> FlexTensor {
    let [x, cos, sin] = [x, cos, sin].map(contiguous);
    let s = x.layout().shape();
    let (d0, d1, d2, d) = (s[0], s[1], s[2], s[3]);
    let (xs, cs, ss) = (values(&x), values(&cos), values(&sin));
    let half = d / 2;
    let mut y = vec![0f32; d0 * d1 * d2 * d];
    y.par_chunks_mut(d1 * d)
        .enumerate()
        .for_each(|(block, out)| {
            let (b, c) = (block / d2, block % d2);
            for (r, out) in out.chunks_mut(d).enumerate() {
                let src = &xs[((b * d1 + r) * d2 + c) * d..][..d];
                // The table row is the position's: the output's row index forward, its block's back.
                let pos = if backward { c } else { r };
                let (cos, sin) = (&cs[pos * d..][..d], &ss[pos * d..][..d]);
                let (lo, hi) = out.split_at_mut(half);
                for j in 0..half {
                    let (a, z) = (src[j], src[j + half]);
                    if backward {
                        lo[j] = a * cos[j] + z * sin[j + half];
                        hi[j] = z * cos[j + half] - a * sin[j];
                    } else {
                        lo[j] = a * cos[j] - z * sin[j];
                        hi[j] = z * cos[j + half] + a * sin[j + half];
                    }
                }
            }
        });
    tensor(y, [d0, d2, d1, d])
}

impl RopeKernels for Flex {
    fn rope(x: FlexTensor, cos: FlexTensor, sin: FlexTensor) -> FlexTensor {
        rope_pass(x, cos, sin, false)
    }

    fn rope_backward(dy: FlexTensor, cos: FlexTensor, sin: FlexTensor) -> FlexTensor {
        rope_pass(dy, cos, sin, true)
    }
}

/// The optimizer updates in place, where burn's composed ops are about fifteen passes over each
/// tensor (some single-threaded). Over 100 M parameters they are memory-bound, so one pass that
/// reads the gradient once and writes each moment over itself is what pays.
impl OptimizerKernels for Flex {
    fn adamw_step(
        param: FlexTensor,
        grad: FlexTensor,
        m: FlexTensor,
        v: FlexTensor,
        clip: FlexTensor,
        s: StepScalars,
    ) -> (FlexTensor, FlexTensor, FlexTensor) {
        let c = values(&contiguous(clip))[0];
        let grad = contiguous(grad);
        let [mut param, mut m, mut v] = [param, m, v].map(writable);
        let (ps, ms, vs) = (
            values_mut(&mut param),
            values_mut(&mut m),
            values_mut(&mut v),
        );
        let chunks = ps
            .par_chunks_mut(ELEMENTS_PER_TASK)
            .zip(ms.par_chunks_mut(ELEMENTS_PER_TASK));
        chunks
            .zip(vs.par_chunks_mut(ELEMENTS_PER_TASK))
            .zip(values(&grad).par_chunks(ELEMENTS_PER_TASK))
            .for_each(|(((ps, ms), vs), gs)| {
                // `shaders/adamw.wgsl`'s arithmetic, which is burn's composed ops' order.
                for (((p, m), v), &g) in ps.iter_mut().zip(ms).zip(vs).zip(gs) {
                    let g = g * c;
                    *m = *m * s.beta1 + g * s.one_minus_beta1;
                    *v = *v * s.beta2 + (g * g) * s.one_minus_beta2;
                    let denom = v.sqrt() / s.sqrt_bias2 + s.eps;
                    *p = *p * s.decay - (*m / denom) * s.step_size;
                }
            });
        (param, m, v)
    }

    fn lion_step(
        param: FlexTensor,
        grad: FlexTensor,
        m: FlexTensor,
        clip: FlexTensor,
        s: StepScalars,
    ) -> (FlexTensor, FlexTensor) {
        let c = values(&contiguous(clip))[0];
        let grad = contiguous(grad);
        let [mut param, mut m] = [param, m].map(writable);
        let (ps, ms) = (values_mut(&mut param), values_mut(&mut m));
        ps.par_chunks_mut(ELEMENTS_PER_TASK)
            .zip(ms.par_chunks_mut(ELEMENTS_PER_TASK))
            .zip(values(&grad).par_chunks(ELEMENTS_PER_TASK))
            .for_each(|((ps, ms), gs)| {
                for ((p, m), &g) in ps.iter_mut().zip(ms).zip(gs) {
                    let g = g * c;
                    let x = *m * s.beta1 + g * s.one_minus_beta1;
                    // sign(x), 0 at 0 as burn's and WGSL's (f32::signum gives ±1 there).
                    let update = ((x > 0.0) as i32 - (x < 0.0) as i32) as f32;
                    *p = *p * s.decay - update * s.step_size;
                    *m = *m * s.beta2 + g * s.one_minus_beta2;
                }
            });
        (param, m)
    }
}
