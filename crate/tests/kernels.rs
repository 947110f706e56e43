//! tunelab's WGSL kernels (`shaders/`) against burn's composed ops on the CPU backend (f32):
//! outputs and gradients at several shapes, odd sizes included (not multiples of any tile), with
//! the GPU memory pool poisoned with NaN first so an element a kernel fails to write shows up.

mod common;

use std::sync::{Mutex, MutexGuard};

use burn::module::Param;
use burn::tensor::{DType, Device, Distribution, FloatDType, Int, Tensor, TensorData, f16};
use common::devices;
use tunelab::hf::RopeScaling;
use tunelab::kernels::{self, Kernels};
use tunelab::model::layers::{AttentionMask, Linear, Lora, RmsNorm, attention, swiglu};
use tunelab::model::rope::Rope;
use tunelab::train::loss::{IGNORE, summed_cross_entropy};
use tunelab::train::optim::{Optimizer, OptimizerConfig};

/// Max |a − b| over max |b|: the error relative to the tensor's scale.
const REL_TOL: f32 = 1e-5;

/// The device's random stream (burn seeds one per backend, not per test) and its matmul choice
/// are process-wide, so each test holds this lock: a seeded run must not have another test's
/// draws or calibration interleaved with it (two runs meant to be identical drifted by 0.19).
fn exclusive() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn gpu() -> Option<Device> {
    devices()
        .into_iter()
        .find(|(name, _)| *name == "wgpu")
        .map(|(_, d)| d)
}

/// Where tunelab's kernels run: the CPU backend (their Rust versions) and the GPU when there is
/// one (WGSL).
fn kernel_devices() -> Vec<Device> {
    std::iter::once(Device::flex()).chain(gpu()).collect()
}

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
}

fn rel_err(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-30);
    got.iter()
        .zip(want)
        .map(|(a, b)| {
            if a.is_nan() {
                f32::INFINITY
            } else {
                (a - b).abs()
            }
        })
        .fold(0.0, f32::max)
        / scale
}

/// Fill and free GPU buffers with NaN so the allocator hands the kernels poisoned memory.
fn poison(device: &Device, floats: usize) {
    for _ in 0..4 {
        let t = Tensor::<1>::full([floats], f32::NAN, device);
        let _ = values(t.sum());
    }
}

/// One attention problem: shapes, an additive mask (causal, some padded keys, optionally
/// per batch), random inputs and the weights of a scalar loss Σ out·w.
struct Case {
    b: usize,
    h: usize,
    kvh: usize,
    t: usize,
    s: usize,
    d: usize,
    mask_per_batch: bool,
}

struct Inputs {
    q: TensorData,
    k: TensorData,
    v: TensorData,
    mask: TensorData,
    w: TensorData,
}

/// Where batch row `r`'s `r` padded keys sit.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Pad {
    /// At the start: the first queries of a row see no key at all, which only the kernels'
    /// general path (every key read) computes as burn's ops do.
    Left,
    /// At the end, as the trainer pads: every query sees a key, so the causal path (later keys
    /// skipped) must match exactly.
    Right,
}

impl Case {
    fn inputs(&self, pad: Pad) -> Inputs {
        let cpu = Device::flex();
        let rand = |dims: [usize; 4]| {
            Tensor::<4>::random(dims, Distribution::Normal(0.0, 1.0), &cpu).into_data()
        };
        let mb = if self.mask_per_batch { self.b } else { 1 };
        // Query i sits at position s - t + i: causal over the keys, and in batch row r, r keys
        // are padding.
        let mut mask = vec![0f32; mb * self.t * self.s];
        for r in 0..mb {
            for i in 0..self.t {
                for j in 0..self.s {
                    let padded = match pad {
                        Pad::Left => j < r,
                        Pad::Right => j >= self.s - r,
                    };
                    if j > self.s - self.t + i || padded {
                        mask[(r * self.t + i) * self.s + j] = -1.0e9;
                    }
                }
            }
        }
        Inputs {
            q: rand([self.b, self.h, self.t, self.d]),
            k: rand([self.b, self.kvh, self.s, self.d]),
            v: rand([self.b, self.kvh, self.s, self.d]),
            mask: TensorData::new(mask, [mb, 1, self.t, self.s]),
            w: Tensor::<3>::random(
                [self.b, self.t, self.h * self.d],
                Distribution::Normal(0.0, 1.0),
                &cpu,
            )
            .into_data(),
        }
    }
}

/// Output and gradients of q, k, v of Σ attention(q, k, v)·w on `device` with `kernels`
/// (`causal`: the kernels may skip the keys after each query).
fn run(case: &Case, x: &Inputs, device: &Device, kernels: Kernels, causal: bool) -> [Vec<f32>; 4] {
    let ad = device.clone().autodiff();
    let t4 = |d: &TensorData| Tensor::<4>::from_data(d.clone(), &ad).require_grad();
    let (q, k, v) = (t4(&x.q), t4(&x.k), t4(&x.v));
    let mask = AttentionMask {
        additive: Tensor::<4>::from_data(x.mask.clone(), &ad),
        causal,
    };
    let scale = 1.0 / (case.d as f64).sqrt();
    let out = attention(q.clone(), k.clone(), v.clone(), mask, scale, 0.0, kernels);
    let loss = (out.clone() * Tensor::<3>::from_data(x.w.clone(), &ad)).sum();
    let grads = loss.backward();
    let g = |t: &Tensor<4>| values(t.grad(&grads).expect("a gradient"));
    [values(out), g(&q), g(&k), g(&v)]
}

const CASES: &[Case] = &[
    // Tiny, one tile.
    Case {
        b: 1,
        h: 2,
        kvh: 2,
        t: 5,
        s: 5,
        d: 16,
        mask_per_batch: false,
    },
    // Odd lengths over several tiles, padding per batch row, GQA 2:1, SmolLM2's head width.
    Case {
        b: 2,
        h: 4,
        kvh: 2,
        t: 77,
        s: 77,
        d: 64,
        mask_per_batch: true,
    },
    // GQA 3:1 at head_dim 128 (the tile of keys shrinks to fit workgroup memory).
    Case {
        b: 1,
        h: 3,
        kvh: 1,
        t: 70,
        s: 70,
        d: 128,
        mask_per_batch: false,
    },
    // One query against a cache of keys (generation), per-batch mask.
    Case {
        b: 2,
        h: 2,
        kvh: 2,
        t: 1,
        s: 9,
        d: 32,
        mask_per_batch: true,
    },
    // A head width that is not a multiple of 4 (rows padded to whole vec4s), GQA 2:1, more keys
    // than queries, per-batch padding.
    Case {
        b: 2,
        h: 2,
        kvh: 1,
        t: 33,
        s: 40,
        d: 10,
        mask_per_batch: true,
    },
    // Fewer queries than keys, a narrow head.
    Case {
        b: 1,
        h: 2,
        kvh: 1,
        t: 13,
        s: 131,
        d: 8,
        mask_per_batch: false,
    },
];

#[test]
fn fused_attention_matches_burn_ops_with_gradients() {
    let _exclusive = exclusive();
    for (case, pad) in CASES.iter().flat_map(|c| [(c, Pad::Left), (c, Pad::Right)]) {
        let x = case.inputs(pad);
        let want = run(case, &x, &Device::flex(), Kernels::Burn, false);
        for device in kernel_devices() {
            let floats = case.b * case.h * case.t.max(case.s) * case.d * 2;
            poison(&device, floats);
            let got = run(case, &x, &device, Kernels::Tunelab, pad == Pad::Right);
            for (name, g, w) in ["output", "dq", "dk", "dv"]
                .iter()
                .zip(&got)
                .zip(&want)
                .map(|((n, g), w)| (n, g, w))
            {
                let e = rel_err(g, w);
                assert!(
                    e <= REL_TOL,
                    "{device:?} b{} h{} kvh{} t{} s{} d{} {pad:?}: {name} relative error {e:e}",
                    case.b,
                    case.h,
                    case.kvh,
                    case.t,
                    case.s,
                    case.d
                );
            }
        }
    }
}

/// Output and gradients of q, k, v of Σ dropout(attention)·w with dropout `p` and `seed`: the
/// fused kernel on `device`, or (`fused` false) burn's ops with the mask [`dropout_keeps`] says
/// the kernel draws.
fn dropout_run(
    case: &Case,
    x: &Inputs,
    device: &Device,
    fused: bool,
    causal: bool,
    p: f64,
    seed: u32,
) -> [Vec<f32>; 4] {
    let Case {
        b, h, kvh, t, s, d, ..
    } = *case;
    let ad = device.clone().autodiff();
    let t4 = |d: &TensorData| Tensor::<4>::from_data(d.clone(), &ad).require_grad();
    let (q, k, v) = (t4(&x.q), t4(&x.k), t4(&x.v));
    let mask = Tensor::<4>::from_data(x.mask.clone(), &ad);
    let scale = 1.0 / (d as f64).sqrt();
    let out = if fused {
        kernels::fused_attention(
            q.clone(),
            k.clone(),
            v.clone(),
            mask,
            scale,
            causal,
            Some((p, seed)),
        )
        .expect("the kernel takes this shape")
    } else {
        let expand = |x: Tensor<4>| {
            x.unsqueeze_dim::<5>(2)
                .expand([b, kvh, h / kvh, s, d])
                .reshape([b, h, s, d])
        };
        let scores = q
            .clone()
            .mul_scalar(scale)
            .matmul(expand(k.clone()).swap_dims(2, 3))
            + mask;
        let mut z = Vec::with_capacity(b * h * t * s);
        for bh in 0..b * h {
            for i in 0..t {
                for j in 0..s {
                    let kept = kernels::dropout_keeps(seed, p as f32, [bh, i, j], [t, s]);
                    z.push(if kept { (1.0 / (1.0 - p)) as f32 } else { 0.0 });
                }
            }
        }
        let z = Tensor::<4>::from_data(TensorData::new(z, [b, h, t, s]), &ad);
        (burn::tensor::activation::softmax(scores, 3) * z).matmul(expand(v.clone()))
    };
    let out = out.swap_dims(1, 2).reshape([b, t, h * d]);
    let loss = (out.clone() * Tensor::<3>::from_data(x.w.clone(), &ad)).sum();
    let grads = loss.backward();
    let g = |t: &Tensor<4>| values(t.grad(&grads).expect("a gradient"));
    [values(out), g(&q), g(&k), g(&v)]
}

#[test]
fn fused_attention_draws_dropout_in_the_kernel_and_redraws_it_backward() {
    let _exclusive = exclusive();
    for device in kernel_devices() {
        dropout_cases(&device);
    }
    // The share dropped is p (the mask is the same function on every device).
    let p = DROP_P;
    let n = 200_000;
    let dropped = (0..n)
        .filter(|&j| {
            !kernels::dropout_keeps(7, p as f32, [j / 1000 % 8, j / 8000, j % 1000], [25, 1000])
        })
        .count();
    let share = dropped as f64 / n as f64;
    assert!((share - p).abs() < 0.01, "dropped {share}");
}

/// The attention dropout probability the dropout tests draw with.
const DROP_P: f64 = 0.3;

/// [`fused_attention_draws_dropout_in_the_kernel_and_redraws_it_backward`] on one device.
fn dropout_cases(device: &Device) {
    let p = DROP_P;
    // GQA with per-batch padding over several tiles, and a narrow head with more keys than
    // queries; the causal path (later keys skipped) and the general one.
    for (case, pad) in [
        (&CASES[1], Pad::Right),
        (&CASES[4], Pad::Left),
        (&CASES[2], Pad::Right),
    ] {
        let x = case.inputs(pad);
        let causal = pad == Pad::Right;
        let seed = 0x9E37_79B9 ^ case.t as u32;
        let want = dropout_run(case, &x, &Device::flex(), false, causal, p, seed);
        poison(device, case.b * case.h * case.t.max(case.s) * case.d * 2);
        let got = dropout_run(case, &x, device, true, causal, p, seed);
        for (name, (g, w)) in ["output", "dq", "dk", "dv"]
            .iter()
            .zip(got.iter().zip(&want))
        {
            let e = rel_err(g, w);
            assert!(
                e <= REL_TOL,
                "t{} d{} {pad:?}: {name} relative error {e:e}",
                case.t,
                case.d
            );
        }
        // The mask did something, and another seed draws another one.
        let without = dropout_run(case, &x, device, true, causal, 0.0, seed);
        assert!(rel_err(&got[0], &without[0]) > 1e-2);
        let other = dropout_run(case, &x, device, true, causal, p, seed + 1);
        assert!(rel_err(&got[0], &other[0]) > 1e-2);
    }
}

#[test]
fn fused_attention_takes_its_shapes_and_falls_back_otherwise() {
    let _exclusive = exclusive();
    let case = &CASES[0];
    let x = case.inputs(Pad::Right);
    let on = |device: &Device| {
        let t4 = |d: &TensorData| Tensor::<4>::from_data(d.clone(), device);
        (t4(&x.q), t4(&x.k), t4(&x.v), t4(&x.mask))
    };
    for device in kernel_devices() {
        takes_its_shapes(case, on(&device));
    }
}

/// [`fused_attention_takes_its_shapes_and_falls_back_otherwise`] on one device's tensors.
fn takes_its_shapes(case: &Case, (q, k, v, m): (Tensor<4>, Tensor<4>, Tensor<4>, Tensor<4>)) {
    assert!(
        kernels::fused_attention(q.clone(), k.clone(), v.clone(), m.clone(), 0.25, true, None)
            .is_some()
    );
    // A mask of the wrong length is not the kernel's shape: burn's ops take it (and report it).
    let short = m.clone().slice_dim(3, 0..case.s - 1);
    assert!(
        kernels::fused_attention(q.clone(), k.clone(), v.clone(), short, 0.25, true, None)
            .is_none()
    );
    // Query heads not a multiple of the key/value heads.
    let k3 = Tensor::cat(vec![k.clone(), k.clone().slice_dim(1, 0..1)], 1);
    let v3 = Tensor::cat(vec![v.clone(), v.slice_dim(1, 0..1)], 1);
    assert!(kernels::fused_attention(q, k3, v3, m, 0.25, true, None).is_none());
}

/// Σ NLL and the gradients of hidden and head (empty where the head is frozen) of `2.5 · Σ NLL`
/// (an upstream gradient other than 1) on `device`: the chunked kernel (`chunk` rows per chunk)
/// or, with None, burn's ops on the logits.
fn lm_loss(
    x: &[TensorData; 3],
    device: &Device,
    chunk: Option<usize>,
    head_trains: bool,
) -> (f32, Vec<f32>, Vec<f32>) {
    let ad = device.clone().autodiff();
    let hidden = Tensor::<2>::from_data(x[0].clone(), &ad).require_grad();
    let head = Tensor::<2>::from_data(x[1].clone(), &ad).set_require_grad(head_trains);
    let targets = Tensor::<1, Int>::from_data(x[2].clone(), &ad);
    let loss = match chunk {
        Some(rows) => kernels::chunked_nll_rows(hidden.clone(), head.clone(), targets, rows)
            .expect("the kernels run on this device"),
        None => {
            // The trainer's reference path: logits, then log-sum-exp minus the target's logit.
            let ([n, _], [_, vocab]) = (hidden.dims(), head.dims());
            let logits = hidden.clone().matmul(head.clone()).reshape([1, n, vocab]);
            let labels = Tensor::cat(
                vec![
                    Tensor::<2, Int>::full([1, 1], IGNORE, &ad),
                    targets.reshape([1, n]),
                ],
                1,
            )
            .slice_dim(1, 0..n);
            summed_cross_entropy(logits, labels)
        }
    };
    let grads = (loss.clone() * 2.5).backward();
    let g = |t: &Tensor<2>| t.grad(&grads).map(values).unwrap_or_default();
    (values(loss)[0], g(&hidden), g(&head))
}

/// Run `f` with burn's matmul and then with the tiled kernel chosen for `device` (what
/// `kernels::calibrate` decides) on a GPU; once on the CPU, whose kernels always take tunelab's
/// matmul. The caller holds [`exclusive`].
fn under_each_matmul(device: &Device, mut f: impl FnMut(&str)) {
    if !kernels::on_gpu(device) {
        return f("the CPU's matmul");
    }
    for (tiled, name) in [(false, "burn's matmul"), (true, "tiled matmul")] {
        kernels::use_tiled_matmul(device, tiled);
        f(name);
    }
}

#[test]
fn chunked_cross_entropy_matches_burn_ops_with_gradients() {
    let _exclusive = exclusive();
    for device in kernel_devices() {
        under_each_matmul(&device, |matmul| {
            chunked_cross_entropy_cases(&device, matmul)
        });
    }
}

/// The chunked loss on `gpu` (or the CPU) against burn's ops on the CPU; `matmul` names the
/// matmul in use.
fn chunked_cross_entropy_cases(gpu: &Device, matmul: &str) {
    let cpu = Device::flex();
    // Rows not a multiple of the chunk, a vocabulary not a multiple of the workgroup, ignored
    // rows among them.
    for (rows, hidden, vocab, chunk) in [(7, 16, 50, 3), (45, 32, 1000, 16), (20, 8, 257, 20)] {
        // The reference shifts labels, so its last position predicts nothing: ignored here too.
        let ids: Vec<i64> = (0..rows)
            .map(|i| {
                if i % 5 == 2 || i == rows - 1 {
                    IGNORE
                } else {
                    (i * 37 % vocab) as i64
                }
            })
            .collect();
        let x = [
            Tensor::<2>::random([rows, hidden], Distribution::Normal(0.0, 1.0), &cpu).into_data(),
            Tensor::<2>::random([hidden, vocab], Distribution::Normal(0.0, 0.5), &cpu).into_data(),
            TensorData::new(ids, [rows]),
        ];
        for head_trains in [true, false] {
            let (want_loss, want_dh, want_dw) = lm_loss(&x, &cpu, None, head_trains);
            poison(gpu, rows * vocab * 2);
            let (loss, dh, dw) = lm_loss(&x, gpu, Some(chunk), head_trains);
            let shape = format!(
                "{matmul}: rows {rows} hidden {hidden} vocab {vocab} chunk {chunk}, head trains: \
                 {head_trains}"
            );
            assert!(
                ((loss - want_loss) / want_loss).abs() <= REL_TOL,
                "{shape}: loss {loss} vs {want_loss}"
            );
            assert_eq!(
                dw.is_empty(),
                !head_trains,
                "{shape}: a head gradient where it trains"
            );
            for (name, got, want) in [("d hidden", &dh, &want_dh), ("d head", &dw, &want_dw)] {
                let e = rel_err(got, want);
                assert!(e <= REL_TOL, "{shape}: {name} relative error {e:e}");
            }
        }
    }
}

/// An optimizer's state as it exports it: named flat tensors.
type Exported = Vec<(String, Vec<f32>)>;

/// Parameter, exported state (moments) after three steps of `config` over a tensor of `n`
/// elements on `device` with `kernels`: weight decay, a clip scale below 1 on the second step.
fn optimizer_steps(
    config: &OptimizerConfig,
    x: &[TensorData; 4],
    device: &Device,
    kernels: Kernels,
) -> (Vec<f32>, Exported) {
    let mut opt = Optimizer::new(config.clone(), kernels);
    let mut p = Tensor::<2>::from_data(x[0].clone(), device);
    for (step, g) in x[1..].iter().enumerate() {
        opt.begin_step();
        let clip = (step == 1).then(|| Tensor::<1>::from_floats([0.37], device));
        let g = Tensor::<2>::from_data(g.clone(), device);
        p = opt.update("w", p, g, clip.as_ref(), 0.01 * (step + 1) as f64);
    }
    let state = pollster::block_on(opt.export()).unwrap();
    (values(p), state)
}

#[test]
fn optimizer_kernels_match_burn_ops() {
    let _exclusive = exclusive();
    let cpu = Device::flex();
    // Several workgroups (and CPU tasks) and a partial one; a length that is a multiple of 4
    // (read as vec4s) and one that is not.
    for (dims, device) in [[37, 229], [36, 229]]
        .into_iter()
        .flat_map(|d| kernel_devices().into_iter().map(move |k| (d, k)))
    {
        let x: [TensorData; 4] = std::array::from_fn(|_| {
            Tensor::<2>::random(dims, Distribution::Normal(0.0, 1.0), &cpu).into_data()
        });
        for config in [OptimizerConfig::adamw(0.1), OptimizerConfig::lion(0.1)] {
            let (want_p, want_state) = optimizer_steps(&config, &x, &cpu, Kernels::Burn);
            poison(&device, dims[0] * dims[1] * 4);
            let (got_p, got_state) = optimizer_steps(&config, &x, &device, Kernels::Tunelab);
            let what = format!("{device:?} {:?} {dims:?}", config.kind);
            let e = rel_err(&got_p, &want_p);
            assert!(e <= REL_TOL, "{what}: parameter relative error {e:e}");
            assert_eq!(got_state.len(), want_state.len());
            for ((name, got), (_, want)) in got_state.iter().zip(&want_state) {
                let e = rel_err(got, want);
                assert!(e <= REL_TOL, "{what}: {name} relative error {e:e}");
            }
        }
    }
}

#[test]
fn gather_packs_tensors_in_aligned_zero_padded_segments() {
    let _exclusive = exclusive();
    let Some(gpu) = gpu() else { return };
    // More tensors than one launch binds (6), lengths at and around the segment size.
    let lens = vec![1, 63, 64, 65, 1000, 7, 128, 3, 200, 64, 5, 129, 2, 31];
    let layout = kernels::FlatLayout::new(lens.clone());
    let data: Vec<Vec<f32>> = lens
        .iter()
        .enumerate()
        .map(|(k, &n)| (0..n).map(|i| (k * 1000 + i) as f32 + 0.5).collect())
        .collect();
    let mut want = Vec::new();
    for d in &data {
        want.extend(d);
        want.resize(want.len().next_multiple_of(kernels::SEGMENT_ALIGN), 0.0);
    }
    assert_eq!(want.len(), layout.total());
    for device in [Device::flex(), gpu] {
        poison(&device, layout.total() * 2);
        let tensors: Vec<Tensor<1>> = data
            .iter()
            .map(|d| Tensor::from_floats(d.as_slice(), &device))
            .collect();
        let flat = kernels::gather(&tensors, &layout);
        assert_eq!(values(flat.clone()), want, "{device:?}");
        for (part, d) in layout.split(&flat).into_iter().zip(&data) {
            assert_eq!(&values(part), d);
        }
    }
}

/// Deterministic values in [-1, 1] for tensor `k` at step `step` (0: its initial value).
fn pattern(k: usize, step: usize, n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| (((k * 7919 + i * 104_729 + step * 15_485_863) % 2001) as f32 - 1000.0) / 997.0)
        .collect()
}

/// Whether tensor `k` has no gradient at `step` (so the groups change, and change back).
fn skipped(step: usize, k: usize) -> bool {
    step == 3 && k == 4
}

/// Four steps of `config` over `sizes`-element tensors (two learning rates, as LoRA+ gives
/// lora_B) with a clip that binds on some steps, through [`Optimizer::step`]; with `resume_at`,
/// the state is exported and imported into a fresh optimizer there. The parameters, the norms
/// and the exported state at the end.
fn multi_tensor_steps(
    config: &OptimizerConfig,
    sizes: &[usize],
    device: &Device,
    kernels: Kernels,
    resume_at: Option<usize>,
) -> (Vec<Vec<f32>>, Vec<f32>, Exported) {
    let seeded = |k: usize, step: usize, n: usize| {
        Tensor::<1>::from_data(TensorData::new(pattern(k, step, n), [n]), device)
    };
    let mut params: Vec<Tensor<1>> = sizes
        .iter()
        .enumerate()
        .map(|(k, &n)| seeded(k, 0, n))
        .collect();
    let mut opt = Optimizer::new(config.clone(), kernels);
    let mut norms = Vec::new();
    for step in 1..=4 {
        if resume_at == Some(step) {
            let state = pollster::block_on(opt.export()).unwrap();
            let mut fresh = Optimizer::new(config.clone(), kernels);
            fresh.import(opt.steps, state, device);
            opt = fresh;
        }
        let items = params
            .iter()
            .enumerate()
            .filter(|(k, _)| !skipped(step, *k))
            .map(|(k, p)| tunelab::train::optim::Item {
                name: format!("t{k}"),
                param: p.clone(),
                grad: seeded(k, step, sizes[k]).mul_scalar(step as f32),
                // Two classes (as LoRA+'s), both at rate 0 on the first step (a warmup's start).
                lr: if k % 3 == 1 { 0.02 } else { 0.01 } * (step - 1) as f64,
                class: (k % 3 == 1) as usize,
            })
            .collect();
        let clip = [Some(50.0), Some(1.0), None, Some(0.5)][step - 1];
        let (new, norm) = opt.step(items, clip);
        let mut new = new.into_iter();
        for (k, p) in params.iter_mut().enumerate() {
            if !skipped(step, k) {
                *p = new.next().expect("one new value per item");
            }
        }
        norms.push(values(norm)[0]);
    }
    let state = pollster::block_on(opt.export()).unwrap();
    (params.into_iter().map(values).collect(), norms, state)
}

#[test]
fn the_multi_tensor_update_matches_one_update_per_tensor() {
    let _exclusive = exclusive();
    // On the CPU every tensor takes its own update (in place): the same results and resume.
    // Small tensors (grouped: more than one gather launch of them, odd lengths) and one over
    // the group limit (its own update).
    let sizes = [
        5,
        64,
        1000,
        3,
        129,
        17,
        4096,
        1,
        250,
        tunelab::train::optim::GROUPED_MAX_ELEMENTS + 3,
    ];
    let configs = [OptimizerConfig::adamw(0.1), OptimizerConfig::lion(0.1)];
    for (config, device) in configs
        .iter()
        .flat_map(|c| kernel_devices().into_iter().map(move |d| (c, d)))
    {
        let (want, want_norms, want_state) =
            multi_tensor_steps(config, &sizes, &Device::flex(), Kernels::Burn, None);
        let mut uninterrupted = None;
        for resume_at in [None, Some(3)] {
            poison(&device, 1 << 20);
            let (got, norms, state) =
                multi_tensor_steps(config, &sizes, &device, Kernels::Tunelab, resume_at);
            let what = format!("{device:?} {:?}, resumed at {resume_at:?}", config.kind);
            // A resume continues as the run that never stopped, up to the order in which
            // burn's GPU sum (the norm) adds its atomics.
            match &uninterrupted {
                None => uninterrupted = Some((got.clone(), state.clone())),
                Some((params, moments)) => {
                    let pairs = params.iter().zip(&got);
                    let moments = moments.iter().map(|m| &m.1).zip(state.iter().map(|m| &m.1));
                    for (a, b) in pairs.chain(moments) {
                        let e = rel_err(b, a);
                        assert!(e <= 1e-6, "{what}: {e:e} from the uninterrupted run");
                    }
                }
            }
            for (k, (g, w)) in got.iter().zip(&want).enumerate() {
                let e = rel_err(g, w);
                assert!(e <= REL_TOL, "{what}: tensor {k} relative error {e:e}");
            }
            // Against the norm in f64: the CPU's sequential f32 sum of 2¹⁸ squares is itself
            // off by ~4e-5.
            for (step, (got, cpu)) in norms.iter().zip(&want_norms).enumerate() {
                let step = step + 1;
                let exact = sizes
                    .iter()
                    .enumerate()
                    .filter(|(k, _)| !skipped(step, *k))
                    .flat_map(|(k, &n)| pattern(k, step, n))
                    .map(|g| (g as f64 * step as f64).powi(2))
                    .sum::<f64>()
                    .sqrt();
                let e = ((*got as f64 - exact) / exact).abs();
                assert!(
                    e <= 1e-5,
                    "{what}: step {step} norm {got} vs {exact} (CPU {cpu}): {e:e}"
                );
            }
            let names: Vec<_> = state.iter().map(|s| s.0.clone()).collect();
            let want_names: Vec<_> = want_state.iter().map(|s| s.0.clone()).collect();
            assert_eq!(names, want_names, "{what}");
            // The reference's moments carry its clip coefficient, and so its norm's error.
            for ((name, g), (_, w)) in state.iter().zip(&want_state) {
                let e = rel_err(g, w);
                assert!(e <= 10.0 * REL_TOL, "{what}: {name} relative error {e:e}");
            }
        }
    }
}

/// Output and gradients of Σ RMSNorm(x)·w on `device` with `kernels`: `[output, d x, d weight]`;
/// with a residual `delta` (the fused add), the norm is over `x + delta`, the loss adds Σ h·w₂
/// for the stream `h`, and `[h, d delta]` follow.
fn rms_norm_run(
    x: &[TensorData],
    residual: bool,
    device: &Device,
    kernels: Kernels,
) -> Vec<Vec<f32>> {
    let ad = device.clone().autodiff();
    let input = Tensor::<3>::from_data(x[0].clone(), &ad).require_grad();
    let norm = RmsNorm {
        weight: Param::from_tensor(Tensor::<1>::from_data(x[1].clone(), &ad)),
        eps: 1e-5,
        path: "norm".into(),
    };
    let w = |i: usize| Tensor::<3>::from_data(x[i].clone(), &ad);
    let delta = residual.then(|| w(3).require_grad());
    let (h, out) = norm.add_forward(input.clone(), delta.clone(), kernels);
    let mut loss = (out.clone() * w(2)).sum();
    if residual {
        loss = loss + (h.clone() * w(4)).sum();
    }
    let grads = loss.backward();
    let dw = norm.weight.val().grad(&grads).expect("a weight gradient");
    let dx = input.grad(&grads).expect("an input gradient");
    let mut got = vec![values(out), values(dx), values(dw)];
    if let Some(delta) = delta {
        got.push(values(h));
        got.push(values(delta.grad(&grads).expect("a residual gradient")));
    }
    got
}

#[test]
fn rms_norm_kernels_match_burn_ops_with_gradients() {
    let _exclusive = exclusive();
    let cpu = Device::flex();
    // A width over the workgroup and not a multiple of it, one under it, one row; rows over the
    // weight gradient's chunk of 128 (three chunks, the last partial) and over its 64 columns.
    for dims in [[2, 3, 576], [1, 5, 7], [3, 1, 64], [2, 150, 70]] {
        let rand = |d: &[usize]| {
            Tensor::<1>::random(
                [d.iter().product::<usize>()],
                Distribution::Normal(0.0, 1.0),
                &cpu,
            )
            .into_data()
            .convert::<f32>()
        };
        let shaped = |t: TensorData| TensorData::new(t.try_to_vec::<f32>().unwrap(), dims);
        let x: Vec<_> = (0..5)
            .map(|i| match i {
                1 => rand(&dims[2..]),
                _ => shaped(rand(&dims)),
            })
            .collect();
        for (residual, device) in [false, true]
            .into_iter()
            .flat_map(|r| kernel_devices().into_iter().map(move |d| (r, d)))
        {
            let want = rms_norm_run(&x, residual, &cpu, Kernels::Burn);
            poison(&device, dims.iter().product::<usize>() * 4);
            let got = rms_norm_run(&x, residual, &device, Kernels::Tunelab);
            let names = ["output", "d input", "d weight", "stream", "d residual"];
            for ((name, g), w) in names.iter().zip(&got).zip(&want) {
                let e = rel_err(g, w);
                assert!(
                    e <= REL_TOL,
                    "{device:?} {dims:?} residual {residual}: {name} relative error {e:e}"
                );
            }
            assert_eq!(got.len(), want.len());
        }
    }
}

/// `silu(gate) · up` and the gradients of both inputs of Σ y · w on `device` with `kernels`.
fn swiglu_run(x: &[TensorData; 3], device: &Device, kernels: Kernels) -> [Vec<f32>; 3] {
    let ad = device.clone().autodiff();
    let t = |d: &TensorData| Tensor::<3>::from_data(d.clone(), &ad);
    let (gate, up) = (t(&x[0]).require_grad(), t(&x[1]).require_grad());
    let y = swiglu(gate.clone(), up.clone(), kernels);
    let grads = (y.clone() * t(&x[2])).sum().backward();
    let g = |v: &Tensor<3>| values(v.grad(&grads).expect("a gradient"));
    [values(y), g(&gate), g(&up)]
}

#[test]
fn swiglu_kernel_matches_burn_ops_with_gradients() {
    let _exclusive = exclusive();
    let cpu = Device::flex();
    // One element, sizes under and over a workgroup of 256 and over a rayon task of 4096, and
    // gates far out on both sides of the sigmoid.
    for (dims, spread) in [
        ([1, 1, 1], 1.0),
        ([2, 7, 13], 1.0),
        ([3, 33, 70], 4.0),
        ([2, 9, 700], 30.0),
    ] {
        let rand = || {
            let n = dims.iter().product::<usize>();
            let t = Tensor::<1>::random([n], Distribution::Normal(0.0, spread), &cpu);
            TensorData::new(values(t), dims.to_vec())
        };
        let x = [rand(), rand(), rand()];
        let want = swiglu_run(&x, &cpu, Kernels::Burn);
        for device in kernel_devices() {
            poison(&device, dims.iter().product::<usize>() * 4);
            let got = swiglu_run(&x, &device, Kernels::Tunelab);
            for ((name, g), w) in ["output", "d gate", "d up"].iter().zip(&got).zip(&want) {
                let e = rel_err(g, w);
                assert!(
                    e <= REL_TOL,
                    "{device:?} {dims:?}: {name} relative error {e:e}"
                );
            }
        }
    }
}

/// Rotated heads of `x` `[b, t, heads, head_dim]` from position `start` (tables for 16 positions,
/// dynamic NTK past them) and the input's gradient of Σ y · w, on `device` with `kernels`.
fn rope_run(x: &[TensorData; 2], start: usize, device: &Device, kernels: Kernels) -> [Vec<f32>; 2] {
    let ad = device.clone().autodiff();
    let d = x[0].shape().dims::<4>()[3];
    let scaling = RopeScaling::Dynamic { factor: 2.0 };
    let rope = Rope::new(d, 10_000.0, &scaling, 16, &ad);
    let input = Tensor::<4>::from_data(x[0].clone(), &ad).require_grad();
    let y = rope.apply(input.clone(), start, kernels);
    let grads = (y.clone() * Tensor::<4>::from_data(x[1].clone(), &ad))
        .sum()
        .backward();
    [
        values(y),
        values(input.grad(&grads).expect("an input gradient")),
    ]
}

#[test]
fn rope_kernel_matches_burn_ops_with_gradients() {
    let _exclusive = exclusive();
    let cpu = Device::flex();
    // [b, t, heads, head_dim] and the first position: one position, odd sequences and head
    // counts, a head size of 2 and of 128, and positions past the tables (dynamic NTK).
    for (dims, start) in [
        ([1, 1, 1, 2], 0),
        ([2, 7, 3, 8], 3),
        ([3, 5, 2, 128], 0),
        ([1, 9, 5, 64], 12),
    ] {
        let rand = |dims: [usize; 4]| {
            let t = Tensor::<1>::random(
                [dims.iter().product::<usize>()],
                Distribution::Normal(0.0, 1.0),
                &cpu,
            );
            TensorData::new(values(t), dims.to_vec())
        };
        let [b, t, h, d] = dims;
        let x = [rand(dims), rand([b, h, t, d])];
        let want = rope_run(&x, start, &cpu, Kernels::Burn);
        for device in kernel_devices() {
            poison(&device, dims.iter().product::<usize>() * 4);
            let got = rope_run(&x, start, &device, Kernels::Tunelab);
            for ((name, g), w) in ["output", "d input"].iter().zip(&got).zip(&want) {
                let e = rel_err(g, w);
                assert!(
                    e <= REL_TOL,
                    "{device:?} {dims:?} from {start}: {name} relative error {e:e}"
                );
            }
        }
    }
}

/// `a · b` and the gradients of Σ (a · b) · w, with `a` `[m, k]` and `b` `[k, n]` given in
/// storage order: transposed (`[k, m]`, `[n, k]`) where `stored_t` says, so the product reads a
/// transposed view as the backward pass does. `b` frozen: it gets no gradient.
fn matmul_run(
    x: &[TensorData; 3],
    stored_t: [bool; 2],
    b_trains: bool,
    device: &Device,
    kernels: Kernels,
) -> Vec<Vec<f32>> {
    let ad = device.clone().autodiff();
    let view = |t: &TensorData, transposed: bool| {
        let t = Tensor::<2>::from_data(t.clone(), &ad);
        if transposed { t.transpose() } else { t }
    };
    let a = view(&x[0], stored_t[0]).require_grad();
    let mut b = view(&x[1], stored_t[1]);
    if b_trains {
        b = b.require_grad();
    }
    let c = match kernels {
        Kernels::Tunelab => kernels::matmul(a.clone(), b.clone()).expect("the tiled matmul"),
        Kernels::Burn => a.clone().matmul(b.clone()),
    };
    let grads = (c.clone() * Tensor::<2>::from_data(x[2].clone(), &ad))
        .sum()
        .backward();
    let mut out = vec![values(c), values(a.grad(&grads).expect("an a gradient"))];
    match b.grad(&grads) {
        Some(db) => out.push(values(db)),
        None => assert!(!b_trains, "b trains but got no gradient"),
    }
    out
}

#[test]
fn tiled_matmul_matches_burn_with_gradients() {
    let _exclusive = exclusive();
    let cpu = Device::flex();
    let rand = |dims: [usize; 2]| {
        Tensor::<2>::random(dims, Distribution::Normal(0.0, 1.0), &cpu)
            .into_data()
            .convert::<f32>()
    };
    // [m, k, n]: one element, sizes under a tile, exact tiles, every size one over a tile or
    // odd, K not a multiple of the 16-deep step, and a wide thin product like LoRA's.
    for [m, k, n] in [
        [1, 1, 1],
        [7, 5, 3],
        [64, 64, 64],
        [65, 129, 17],
        [130, 33, 70],
        [200, 48, 16],
    ] {
        for stored_t in [[false, false], [true, false], [false, true], [true, true]] {
            let shape = |rows, cols, t: bool| if t { [cols, rows] } else { [rows, cols] };
            let x = [
                rand(shape(m, k, stored_t[0])),
                rand(shape(k, n, stored_t[1])),
                rand([m, n]),
            ];
            for (b_trains, device) in [true, false]
                .into_iter()
                .flat_map(|b| kernel_devices().into_iter().map(move |d| (b, d)))
            {
                let want = matmul_run(&x, stored_t, b_trains, &cpu, Kernels::Burn);
                poison(&device, (m * k + k * n + m * n) * 2);
                let got = matmul_run(&x, stored_t, b_trains, &device, Kernels::Tunelab);
                assert_eq!(got.len(), want.len());
                for ((name, g), w) in ["c", "d a", "d b"].iter().zip(&got).zip(&want) {
                    let e = rel_err(g, w);
                    assert!(
                        e <= REL_TOL,
                        "{device:?} [{m}, {k}, {n}] stored transposed {stored_t:?}: {name} relative error {e:e}"
                    );
                }
            }
        }
    }
}

/// A linear layer `[.., in] → [.., out]` with bias and a LoRA adapter (the frozen base with the
/// low-rank path, as LoRA trains) on `device`, the base stored in f16 if `base_f16`: output and
/// the gradients of the input and of both factors of Σ y · w. The adapter's dropout (`p`) draws
/// its masks from seed 7.
fn linear_run(
    x: &[TensorData; 6],
    device: &Device,
    kernels: Kernels,
    base_f16: bool,
    p: f64,
) -> Vec<Vec<f32>> {
    let ad = device.clone().autodiff();
    ad.seed(7);
    let t2 = |d: &TensorData| Tensor::<2>::from_data(d.clone(), &ad);
    let input = Tensor::<3>::from_data(x[0].clone(), &ad).require_grad();
    let mut layer = Linear::from_weight(t2(&x[1]), "up_proj");
    layer.weight = layer.weight.set_require_grad(false);
    if base_f16 {
        layer.weight = layer
            .weight
            .map(|w| w.cast(FloatDType::F16))
            .set_require_grad(false);
        assert_eq!(layer.weight.val().dtype(), DType::F16);
    }
    layer.bias = Some(Param::from_tensor(Tensor::<1>::from_data(
        x[2].clone(),
        &ad,
    )));
    layer.lora = Some(Lora {
        a: Param::from_tensor(t2(&x[3])),
        b: Param::from_tensor(t2(&x[4])),
        scaling: 2.0,
        dropout: p,
    });
    let out = layer.forward(input.clone(), kernels);
    let grads = (out.clone() * Tensor::<3>::from_data(x[5].clone(), &ad))
        .sum()
        .backward();
    let lora = layer.lora.as_ref().unwrap();
    assert!(
        layer.weight.val().grad(&grads).is_none(),
        "the frozen base got a gradient"
    );
    vec![
        values(out),
        values(input.grad(&grads).expect("an input gradient")),
        values(lora.a.val().grad(&grads).expect("a lora_A gradient")),
        values(lora.b.val().grad(&grads).expect("a lora_B gradient")),
    ]
}

/// Random inputs of [`linear_run`] for `[batch, seq, in, out, rank]`: input, base weight, bias,
/// lora_A, lora_B and the loss weights.
fn linear_inputs([b, t, d_in, d_out, r]: [usize; 5]) -> [TensorData; 6] {
    let rand = |dims: &[usize]| {
        let n = dims.iter().product::<usize>();
        let t = Tensor::<1>::random([n], Distribution::Normal(0.0, 1.0), &Device::flex());
        TensorData::new(values(t), dims.to_vec())
    };
    [
        rand(&[b, t, d_in]),
        rand(&[d_in, d_out]),
        rand(&[d_out]),
        rand(&[d_in, r]),
        rand(&[r, d_out]),
        rand(&[b, t, d_out]),
    ]
}

/// The LoRA linear layer on `gpu` (or the CPU) against burn's on the CPU at odd shapes, under
/// either matmul; its base stored in f16 if `base_f16` (the reference then uses the values f16
/// holds).
fn linear_layer_cases(gpu: &Device, base_f16: bool) {
    let cpu = Device::flex();
    // [batch, seq, in, out, rank]: odd sizes, and one over a 64-wide tile in every dimension.
    for [b, t, d_in, d_out, r] in [[2, 7, 13, 9, 3], [3, 33, 70, 65, 16]] {
        let mut x = linear_inputs([b, t, d_in, d_out, r]);
        if base_f16 {
            x[1] = x[1].clone().convert::<f16>().convert::<f32>();
        }
        let want = linear_run(&x, &cpu, Kernels::Burn, false, 0.0);
        // An f16 base always takes the tiled kernel; the LoRA factors take either matmul.
        under_each_matmul(gpu, |matmul| {
            poison(gpu, b * t * (d_in + d_out) * 2);
            let got = linear_run(&x, gpu, Kernels::Tunelab, base_f16, 0.0);
            for ((name, g), w) in ["output", "d input", "d lora_A", "d lora_B"]
                .iter()
                .zip(&got)
                .zip(&want)
            {
                let e = rel_err(g, w);
                assert!(
                    e <= REL_TOL,
                    "{matmul} [{b}, {t}, {d_in}] -> {d_out} rank {r}, f16 base {base_f16}: {name} relative error {e:e}"
                );
            }
        });
    }
}

#[test]
fn linear_layers_match_burn_under_either_matmul() {
    let _exclusive = exclusive();
    for device in kernel_devices() {
        linear_layer_cases(&device, false);
    }
}

#[test]
fn the_fused_lora_linear_takes_the_same_dropout_masks() {
    let _exclusive = exclusive();
    // With dropout the adapter reads another tensor than the base (`xd`), and its input
    // gradient flows back through the mask: the fused layer (tiled matmul; on the CPU, the
    // kernels) against the composed one (burn's matmul; on the CPU, burn's ops) on the same
    // device, the same masks drawn.
    let x = linear_inputs([3, 33, 70, 65, 16]);
    let without = linear_run(&x, &Device::flex(), Kernels::Burn, false, 0.0);
    for device in kernel_devices() {
        let mut runs = Vec::new();
        if kernels::on_gpu(&device) {
            under_each_matmul(&device, |_| {
                runs.push(linear_run(&x, &device, Kernels::Tunelab, false, 0.3));
            });
        } else {
            for k in [Kernels::Burn, Kernels::Tunelab] {
                runs.push(linear_run(&x, &device, k, false, 0.3));
            }
        }
        for ((name, composed), fused) in ["output", "d input", "d lora_A", "d lora_B"]
            .iter()
            .zip(&runs[0])
            .zip(&runs[1])
        {
            let e = rel_err(fused, composed);
            assert!(
                e <= REL_TOL,
                "{device:?} dropout 0.3: {name} relative error {e:e}"
            );
        }
        // The masks did something: the output is not the one without dropout.
        assert!(rel_err(&runs[1][0], &without[0]) > 1e-3);
    }
}

/// The GPU when it has f16 shaders; None (the test skipped, saying why) when it has none.
fn gpu_with_f16() -> Option<Device> {
    let gpu = gpu()?;
    if gpu.supports_dtype(DType::F16) {
        return Some(gpu);
    }
    eprintln!("the wgpu adapter has no f16 shaders: skipped");
    None
}

#[test]
fn a_frozen_f16_base_computes_as_f32_on_its_rounded_values() {
    let _exclusive = exclusive();
    let Some(gpu) = gpu_with_f16() else { return };
    linear_layer_cases(&gpu, true);
}

/// LoRA (rank 8, all block linears) at learning rate 1e-2.
fn lora_rank_8() -> tunelab::train::Method {
    tunelab::train::Method::Lora(tunelab::model::lora::LoraConfig {
        rank: 8,
        dropout: 0.0,
        ..Default::default()
    })
}

/// Per-step losses of `method` on the tied-head Qwen2 fixture over the tiny text on `device`,
/// with the session's weights stored in f16 (`session_f16`) or the run's frozen weights
/// (`frozen_f16`) or neither, with `kernels`; and the stored precision of each base matrix and of
/// each trained matrix after the run.
fn run_losses(
    device: &Device,
    method: tunelab::train::Method,
    [session_f16, frozen_f16]: [bool; 2],
    kernels: Kernels,
    steps: usize,
) -> (Vec<f64>, Vec<DType>, Vec<DType>) {
    use tunelab::hf::ModelSource;
    use tunelab::model::ParamMut;
    use tunelab::train::sink::MemorySink;
    use tunelab::train::{TrainConfig, Trainer};

    let device = tunelab::train::training_device(device, false);
    let mut session = pollster::block_on(tunelab::Session::load(
        &ModelSource::Dir(common::fixtures().join("qwen2-tied")),
        device.clone(),
        &mut |_| {},
    ))
    .unwrap();
    if session_f16 {
        session.store_weights_in_f16().unwrap();
    }
    let train = common::tiny_text(session.tokenizer().unwrap(), 32);
    let config = TrainConfig {
        max_steps: Some(steps),
        batch_size: 2,
        seed: 1,
        frozen_f16,
        kernels,
        ..TrainConfig::new(method, 1e-2)
    };
    let mut trainer = Trainer::new(
        session.model,
        device,
        config,
        session.config_json,
        session.extra_files,
        "qwen2-tied".into(),
        None,
    )
    .unwrap();
    let mut losses = Vec::new();
    pollster::block_on(
        trainer.run(&train, None, &mut MemorySink::default(), &mut |e| {
            if let tunelab::Event::Step { loss, .. } = e {
                losses.push(*loss);
            }
        }),
    )
    .unwrap();
    let dtypes = |trainable: bool, model: &mut tunelab::model::CausalLm| {
        let mut found = Vec::new();
        let mut f = |_: &str, p: ParamMut<'_>| {
            if let ParamMut::Matrix(t, _) = p {
                found.push(t.val().dtype());
            }
        };
        match trainable {
            false => model.for_each_param(&mut f),
            true => model.for_each_trainable(&mut f),
        }
        found
    };
    let base = dtypes(false, &mut trainer.model);
    let factors = dtypes(true, &mut trainer.model);
    (losses, base, factors)
}

#[test]
fn lora_with_a_frozen_f16_base_tracks_the_f32_run() {
    let _exclusive = exclusive();
    let Some(gpu) = gpu_with_f16() else { return };
    let steps = 20;
    let (f32_losses, f32_base, _) =
        run_losses(&gpu, lora_rank_8(), [false, false], Kernels::Tunelab, steps);
    let (f16_losses, f16_base, factors) =
        run_losses(&gpu, lora_rank_8(), [false, true], Kernels::Tunelab, steps);
    assert!(f32_base.iter().all(|t| *t == DType::F32));
    // Every frozen matrix (the tied embeddings, every linear's base) in f16, the factors in f32.
    assert!(f16_base.iter().all(|t| *t == DType::F16), "{f16_base:?}");
    assert!(!factors.is_empty() && factors.iter().all(|t| *t == DType::F32));
    assert_eq!((f32_losses.len(), f16_losses.len()), (steps, steps));
    let worst = f32_losses
        .iter()
        .zip(&f16_losses)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    eprintln!(
        "LoRA over {steps} steps: loss {:.5} → {:.5} (f32 base) vs {:.5} → {:.5} (f16 base), max |Δ| {worst:.2e}",
        f32_losses[0],
        f32_losses[steps - 1],
        f16_losses[0],
        f16_losses[steps - 1]
    );
    // The loss falls in both, and f16's rounding of the base (≤ 2⁻¹¹ relative) moves it by far
    // less than training does.
    assert!(f16_losses[steps - 1] < f16_losses[0] - 0.1);
    assert!(worst < 1e-2, "f16 base drifted from f32 by {worst}");
}

#[test]
fn frozen_f16_is_refused_where_it_cannot_run() {
    let _exclusive = exclusive();
    use tunelab::model::lora::LoraConfig;
    use tunelab::train::{Method, TrainConfig, Trainer};
    let cases = [
        (Some(Device::flex()), Kernels::Tunelab, "needs a GPU"),
        (gpu(), Kernels::Burn, "needs tunelab's kernels"),
    ];
    for (device, kernels, why) in cases {
        let Some(device) = device else { continue };
        let device = device.autodiff();
        let model = tunelab::model::init_random(
            &tunelab::hf::ModelConfig::parse(
                &std::fs::read_to_string(common::fixtures().join("qwen2-tied/config.json"))
                    .unwrap(),
                "config.json",
            )
            .unwrap(),
            &device,
            0.02,
            0,
        )
        .unwrap();
        let config = TrainConfig {
            frozen_f16: true,
            kernels,
            ..TrainConfig::new(Method::Lora(LoraConfig::default()), 1e-3)
        };
        let err = Trainer::new(
            model,
            device,
            config,
            String::new(),
            Vec::new(),
            String::new(),
            None,
        )
        .err()
        .expect("frozen_f16 accepted where it cannot run");
        let msg = err.to_string();
        assert!(msg.contains("frozen_f16") && msg.contains(why), "{msg}");
    }
}

#[test]
fn a_session_in_f16_trains_lora_on_it_and_full_fine_tuning_in_f32() {
    let _exclusive = exclusive();
    let Some(gpu) = gpu_with_f16() else { return };
    let steps = 6;
    let full = || tunelab::train::Method::Full(tunelab::train::FullConfig::default());
    let mut worst = 0f64;
    let cases = [
        ("LoRA", lora_rank_8 as fn() -> _, Kernels::Tunelab),
        ("full", full, Kernels::Tunelab),
        ("LoRA, burn's kernels", lora_rank_8, Kernels::Burn),
    ];
    for (name, method, kernels) in cases {
        let (want, _, _) = run_losses(&gpu, method(), [false, false], kernels, steps);
        let (got, base, trained) = run_losses(&gpu, method(), [true, false], kernels, steps);
        // LoRA keeps the whole base in f16; full fine-tuning trains f32 copies of the block
        // weights and leaves the frozen (tied) embeddings in f16; with burn's kernels the run
        // casts everything back to f32.
        assert!(
            trained.iter().all(|t| *t == DType::F32),
            "{name}: {trained:?}"
        );
        let halves = base.iter().filter(|t| **t == DType::F16).count();
        match name {
            "LoRA" => assert_eq!(halves, base.len(), "{base:?}"),
            "full" => assert_eq!(halves, 1, "only the tied embeddings: {base:?}"),
            _ => assert_eq!(halves, 0, "{name}: {base:?}"),
        }
        for (a, b) in want.iter().zip(&got) {
            worst = worst.max((a - b).abs());
        }
    }
    eprintln!(
        "f16 session vs f32 session over {steps} steps, LoRA and full, either kernels: max |Δloss| {worst:.2e}"
    );
    assert!(worst < 1e-2, "{worst}");
}
