//! The optimizer update as one launch over a flat tensor (`shaders/adamw.wgsl`,
//! `shaders/lion.wgsl`): clip scale, weight decay, moments and update together, where burn's
//! composed ops take about fifteen elementwise launches (each its own pass over the tensor in the
//! browser, which runs without fusion). Many small tensors (LoRA's factors, norm weights) are
//! first copied into one flat buffer ([`gather`], `shaders/gather.wgsl`, several tensors a launch)
//! so that one update covers them all, and [`FlatLayout::split`] gives them back as views of the
//! result. On the CPU (native) the update is the same arithmetic as one pass over the cores,
//! written over the moments' own buffers (`cpu`), each tensor on its own.

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::tensor::FloatTensor;
use burn::backend::wgpu::{CubeBackend, CubeTensor, into_contiguous};
use burn::backend::{AutodiffBackend, Backend, Dispatch, backend_extension};
use burn::tensor::{DType, Tensor};

use super::wgsl::{Shader, empty, folded, grid, uniform};

/// One step's scalars, as the f32 values burn's scalar ops receive (so the kernels and the
/// composed ops compute the same thing).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepScalars {
    /// `1 − lr · weight_decay`.
    pub decay: f32,
    pub beta1: f32,
    pub one_minus_beta1: f32,
    pub beta2: f32,
    pub one_minus_beta2: f32,
    /// AdamW: `sqrt(1 − beta2^t)`.
    pub sqrt_bias2: f32,
    /// AdamW: added to the denominator.
    pub eps: f32,
    /// AdamW: `lr / (1 − beta1^t)`; Lion: `lr`.
    pub step_size: f32,
}

impl StepScalars {
    fn params(&self, n: usize) -> Vec<u64> {
        uniform(&[
            n as u32,
            self.decay.to_bits(),
            self.beta1.to_bits(),
            self.one_minus_beta1.to_bits(),
            self.beta2.to_bits(),
            self.one_minus_beta2.to_bits(),
            self.sqrt_bias2.to_bits(),
            self.eps.to_bits(),
            self.step_size.to_bits(),
        ])
    }
}

/// Segments of a [`FlatLayout`] start at multiples of this many f32s: 256 bytes, the largest
/// storage-buffer offset alignment WebGPU and Vulkan allow, so a slice of the flat buffer can be a
/// view of it on any adapter (burn's slice makes one when the slice also ends a multiple of the
/// alignment before the buffer's end, i.e. for lengths that are multiples of 64).
pub const SEGMENT_ALIGN: usize = 64;

/// The length of a segment holding `n` elements: `n` rounded up to [`SEGMENT_ALIGN`].
fn padded(n: usize) -> usize {
    n.next_multiple_of(SEGMENT_ALIGN)
}

/// Tensors one gather launch copies: with the output, 7 storage buffers, within the 8 every
/// WebGPU adapter offers (one spare, which Metal's runtimes take for buffer lengths).
const SLOTS: usize = 6;

/// Where each of several flat tensors sits in one buffer: in order, each segment padded with
/// zeros to a multiple of [`SEGMENT_ALIGN`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlatLayout {
    lens: Vec<usize>,
    offsets: Vec<usize>,
    total: usize,
}

impl FlatLayout {
    /// The layout of tensors of `lens` elements.
    pub fn new(lens: Vec<usize>) -> Self {
        let mut offsets = Vec::with_capacity(lens.len());
        let mut total = 0;
        for &n in &lens {
            offsets.push(total);
            total += padded(n);
        }
        FlatLayout {
            lens,
            offsets,
            total,
        }
    }

    /// Elements of the flat buffer, padding included.
    pub fn total(&self) -> usize {
        self.total
    }

    /// The tensors' lengths, in order.
    pub fn lens(&self) -> &[usize] {
        &self.lens
    }

    /// The tensors of `flat` (of this layout), in order: views of it where the device's offset
    /// alignment allows (lengths that are multiples of [`SEGMENT_ALIGN`], on WebGPU and Vulkan),
    /// copies otherwise.
    pub fn split(&self, flat: &Tensor<1>) -> Vec<Tensor<1>> {
        self.offsets
            .iter()
            .zip(&self.lens)
            .map(|(&o, &n)| flat.clone().slice_dim(0, o..o + n))
            .collect()
    }

    /// The segments of `range` of the tensors (at most [`SLOTS`]) as the gather shader's table:
    /// offset, length and padded length per slot.
    fn slots(&self, range: std::ops::Range<usize>) -> GatherSlots {
        let mut table = [[0u32; 3]; SLOTS];
        let used = range.len();
        for (slot, i) in table.iter_mut().zip(range) {
            *slot = [
                self.offsets[i] as u32,
                self.lens[i] as u32,
                padded(self.lens[i]) as u32,
            ];
        }
        GatherSlots { table, used }
    }
}

/// One gather launch's table (see `shaders/gather.wgsl`): the first `used` slots copy.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GatherSlots {
    table: [[u32; 3]; SLOTS],
    used: usize,
}

/// `tensors` (flat, one per segment of `layout`, each of its length and at most 2²⁴ elements;
/// distinct tensors) copied into one new flat tensor of `layout`, the padding zero: [`SLOTS`]
/// tensors a launch on a GPU in f32, burn's ops otherwise.
pub fn gather(tensors: &[Tensor<1>], layout: &FlatLayout) -> Tensor<1> {
    // The shader reads each tensor up to the length the layout gives it, unchecked.
    assert!(
        !tensors.is_empty()
            && tensors.len() == layout.lens.len()
            && tensors
                .iter()
                .zip(&layout.lens)
                .all(|(t, &n)| t.dims()[0] == n && n <= 1 << 24),
        "gather: one tensor of the layout's length (≤ 2²⁴) per segment"
    );
    let device = tensors[0].device();
    let on_gpu = super::on_gpu(&device) && tensors.iter().all(|t| t.dtype() == DType::F32);
    if !on_gpu {
        let padded = tensors.iter().zip(&layout.lens).map(|(t, &n)| {
            Tensor::cat(vec![t.clone(), Tensor::zeros([padded(n) - n], &device)], 0)
        });
        return Tensor::cat(padded.collect(), 0);
    }
    let mut out = Tensor::<1>::empty([layout.total], &device).into_dispatch();
    for start in (0..tensors.len()).step_by(SLOTS) {
        let end = (start + SLOTS).min(tensors.len());
        // The operation always takes SLOTS tensors; past `used` they repeat the first and are
        // not bound.
        let t: [_; SLOTS] = std::array::from_fn(|k| {
            tensors[if start + k < end { start + k } else { start }]
                .clone()
                .into_dispatch()
        });
        let [t0, t1, t2, t3, t4, t5] = t;
        out = <Dispatch as GatherKernels>::gather_into(
            out,
            t0,
            t1,
            t2,
            t3,
            t4,
            t5,
            layout.slots(start..end),
        );
    }
    Tensor::from_dispatch(out)
}

/// The updates as a backend extension (no gradients flow through them).
#[backend_extension(Cube, Flex: cfg(feature = "native"), Autodiff, Fusion: cfg(feature = "fusion"))]
pub trait OptimizerKernels: Backend {
    /// AdamW: the new parameter, first and second moments, each `[n]`.
    #[fusion(meta = |param, _grad, m, v, _clip, _s| (param.clone(), m.clone(), v.clone()))]
    fn adamw_step(
        param: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        m: FloatTensor<Self>,
        v: FloatTensor<Self>,
        clip: FloatTensor<Self>,
        scalars: StepScalars,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);

    /// Lion: the new parameter and momentum, each `[n]`.
    #[fusion(meta = |param, _grad, m, _clip, _s| (param.clone(), m.clone()))]
    fn lion_step(
        param: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        m: FloatTensor<Self>,
        clip: FloatTensor<Self>,
        scalars: StepScalars,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);
}

/// The gather as a backend extension (GPU only: on the CPU each tensor is updated on its own,
/// there being no launches to save).
#[backend_extension(Cube, Autodiff, Fusion: cfg(feature = "fusion"))]
pub trait GatherKernels: Backend {
    /// `out` (flat) with the segments `slots` names filled from `t0`…`t5` (the first
    /// `slots.used` of them): the same buffer, written in place (it is the gather's own, fresh
    /// one).
    #[allow(clippy::too_many_arguments)]
    #[fusion(meta = |out, _t0, _t1, _t2, _t3, _t4, _t5, _s| out.clone())]
    fn gather_into(
        out: FloatTensor<Self>,
        t0: FloatTensor<Self>,
        t1: FloatTensor<Self>,
        t2: FloatTensor<Self>,
        t3: FloatTensor<Self>,
        t4: FloatTensor<Self>,
        t5: FloatTensor<Self>,
        slots: GatherSlots,
    ) -> FloatTensor<Self>;
}

/// True where [`adamw_step`] and [`lion_step`] take these flat tensors (parameter, gradient,
/// moments): on a GPU or, natively, the CPU backend; f32, all of one length.
pub fn takes_step(tensors: &[&Tensor<1>]) -> bool {
    let n = tensors[0].dims()[0];
    super::has_kernels(&tensors[0].device())
        && n > 0
        && tensors
            .iter()
            .all(|t| t.dtype() == DType::F32 && t.dims()[0] == n)
}

/// `clip` or, without one, a scale of 1.
fn clip_or_one(clip: Option<Tensor<1>>, like: &Tensor<1>) -> Tensor<1> {
    clip.unwrap_or_else(|| Tensor::<1>::ones([1], &like.device()))
}

/// One AdamW step over flat `param`, `grad` (scaled by `clip` `[1]` when given) and moments
/// `m`, `v`, where [`takes_step`] says the kernel applies: the new `(param, m, v)`. On the CPU
/// the update is written over the inputs' buffers where nothing else holds them (the moments the
/// optimizer hands over), so pass them by value, not as clones.
pub fn adamw_step(
    param: Tensor<1>,
    grad: Tensor<1>,
    [m, v]: [Tensor<1>; 2],
    clip: Option<Tensor<1>>,
    scalars: StepScalars,
) -> (Tensor<1>, Tensor<1>, Tensor<1>) {
    assert!(
        takes_step(&[&param, &grad, &m, &v]),
        "adamw_step: tensors the kernel does not take"
    );
    let clip = clip_or_one(clip, &param);
    let (p, m, v) = <Dispatch as OptimizerKernels>::adamw_step(
        param.into_dispatch(),
        grad.into_dispatch(),
        m.into_dispatch(),
        v.into_dispatch(),
        clip.into_dispatch(),
        scalars,
    );
    (
        Tensor::from_dispatch(p),
        Tensor::from_dispatch(m),
        Tensor::from_dispatch(v),
    )
}

/// One Lion step (see [`adamw_step`]): the new `(param, m)`.
pub fn lion_step(
    param: Tensor<1>,
    grad: Tensor<1>,
    m: Tensor<1>,
    clip: Option<Tensor<1>>,
    scalars: StepScalars,
) -> (Tensor<1>, Tensor<1>) {
    assert!(
        takes_step(&[&param, &grad, &m]),
        "lion_step: tensors the kernel does not take"
    );
    let clip = clip_or_one(clip, &param);
    let (p, m) = <Dispatch as OptimizerKernels>::lion_step(
        param.into_dispatch(),
        grad.into_dispatch(),
        m.into_dispatch(),
        clip.into_dispatch(),
        scalars,
    );
    (Tensor::from_dispatch(p), Tensor::from_dispatch(m))
}

/// An optimizer shader's two versions, named and with their source: `optimizer_common.wgsl`
/// then `$file`, reading the tensors as `vec4<f32>`s (`{name}_vec4`) or as `f32`s.
macro_rules! optimizer_shader {
    ($name:literal, $file:literal) => {
        [
            (
                concat!($name, "_vec4"),
                concat!(
                    "alias E = vec4<f32>;\n",
                    include_str!("../../../shaders/optimizer_common.wgsl"),
                    include_str!(concat!("../../../shaders/", $file))
                ),
            ),
            (
                $name,
                concat!(
                    "alias E = f32;\n",
                    include_str!("../../../shaders/optimizer_common.wgsl"),
                    include_str!(concat!("../../../shaders/", $file))
                ),
            ),
        ]
    };
}

/// Launch one of `sources` (the vec4 version where the length allows, else the scalar one) over
/// `inputs` (parameter first), writing `outputs` new tensors of its length.
fn launch<const O: usize>(
    sources: [(&'static str, &'static str); 2],
    inputs: Vec<CubeTensor>,
    scalars: &StepScalars,
) -> [CubeTensor; O] {
    let inputs: Vec<CubeTensor> = inputs.into_iter().map(into_contiguous).collect();
    let n = inputs[0].meta.shape()[0];
    let outputs: [CubeTensor; O] = std::array::from_fn(|_| empty(&inputs[0], &[n]));
    let bound: Vec<&CubeTensor> = inputs.iter().chain(outputs.iter()).collect();
    let (width, (name, source)) = if n.is_multiple_of(4) {
        (4, sources[0])
    } else {
        (1, sources[1])
    };
    let elems = n / width;
    Shader {
        name,
        source,
        params: vec![],
        workgroup: 256,
    }
    .launch(folded(elems.div_ceil(256)), &bound, scalars.params(elems));
    outputs
}

impl OptimizerKernels for CubeBackend {
    fn adamw_step(
        param: CubeTensor,
        grad: CubeTensor,
        m: CubeTensor,
        v: CubeTensor,
        clip: CubeTensor,
        scalars: StepScalars,
    ) -> (CubeTensor, CubeTensor, CubeTensor) {
        let [p, m, v] = launch(
            optimizer_shader!("adamw", "adamw.wgsl"),
            vec![param, grad, m, v, clip],
            &scalars,
        );
        (p, m, v)
    }

    fn lion_step(
        param: CubeTensor,
        grad: CubeTensor,
        m: CubeTensor,
        clip: CubeTensor,
        scalars: StepScalars,
    ) -> (CubeTensor, CubeTensor) {
        let [p, m] = launch(
            optimizer_shader!("lion", "lion.wgsl"),
            vec![param, grad, m, clip],
            &scalars,
        );
        (p, m)
    }
}

impl GatherKernels for CubeBackend {
    fn gather_into(
        out: CubeTensor,
        t0: CubeTensor,
        t1: CubeTensor,
        t2: CubeTensor,
        t3: CubeTensor,
        t4: CubeTensor,
        t5: CubeTensor,
        slots: GatherSlots,
    ) -> CubeTensor {
        // Each tensor bound once: WebGPU (Dawn) refuses one buffer range bound writable twice.
        let inputs: Vec<CubeTensor> = [t0, t1, t2, t3, t4, t5]
            .into_iter()
            .take(slots.used)
            .map(into_contiguous)
            .collect();
        let table = &slots.table[..slots.used];
        let longest = table.iter().map(|s| s[2] as usize).max().unwrap_or(0);
        let mut bound = vec![&out];
        bound.extend(&inputs);
        let words: Vec<u32> = table.iter().flat_map(|s| [s[0], s[1], s[2], 0]).collect();
        let count = grid(longest.div_ceil(256), slots.used);
        gather_shader(slots.used).launch(count, &bound, uniform(&words));
        out
    }
}

/// The gather shader for `slots` tensors: its input bindings and the switch arms reading them.
fn gather_shader(slots: usize) -> Shader {
    let inputs: String = (0..slots)
        .map(|k| {
            format!(
                "@group(0) @binding({}) var<storage, read_write> in{k}: array<f32>;\n",
                k + 1
            )
        })
        .collect();
    let cases: String = (0..slots)
        .map(|k| format!("case {k}u: {{ x = in{k}[i]; }}\n"))
        .collect();
    Shader {
        name: "gather",
        source: include_str!("../../../shaders/gather.wgsl"),
        params: vec![
            ("slots", (slots as u32).into()),
            ("inputs", inputs.as_str().into()),
            ("cases", cases.as_str().into()),
            ("uniform", (slots as u32 + 1).into()),
        ],
        workgroup: 256,
    }
}

// The optimizer works on tensors without autodiff; on an autodiff device the update passes
// through to the inner backend.
impl<B: OptimizerKernels, C: CheckpointStrategy> OptimizerKernels for Autodiff<B, C> {
    fn adamw_step(
        param: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        m: FloatTensor<Self>,
        v: FloatTensor<Self>,
        clip: FloatTensor<Self>,
        scalars: StepScalars,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let (p, m, v) = B::adamw_step(
            Self::inner(param),
            Self::inner(grad),
            Self::inner(m),
            Self::inner(v),
            Self::inner(clip),
            scalars,
        );
        (
            Self::from_inner(p),
            Self::from_inner(m),
            Self::from_inner(v),
        )
    }

    fn lion_step(
        param: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        m: FloatTensor<Self>,
        clip: FloatTensor<Self>,
        scalars: StepScalars,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let (p, m) = B::lion_step(
            Self::inner(param),
            Self::inner(grad),
            Self::inner(m),
            Self::inner(clip),
            scalars,
        );
        (Self::from_inner(p), Self::from_inner(m))
    }
}

impl<B: GatherKernels, C: CheckpointStrategy> GatherKernels for Autodiff<B, C> {
    fn gather_into(
        out: FloatTensor<Self>,
        t0: FloatTensor<Self>,
        t1: FloatTensor<Self>,
        t2: FloatTensor<Self>,
        t3: FloatTensor<Self>,
        t4: FloatTensor<Self>,
        t5: FloatTensor<Self>,
        slots: GatherSlots,
    ) -> FloatTensor<Self> {
        Self::from_inner(B::gather_into(
            Self::inner(out),
            Self::inner(t0),
            Self::inner(t1),
            Self::inner(t2),
            Self::inner(t3),
            Self::inner(t4),
            Self::inner(t5),
            slots,
        ))
    }
}
