//! The optimizer update as one launch per parameter tensor (`shaders/adamw.wgsl`,
//! `shaders/lion.wgsl`): clip scale, weight decay, moments and update together, where burn's
//! composed ops take about fifteen elementwise launches (each its own pass over the tensor in the
//! browser, which runs without fusion).

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::tensor::FloatTensor;
use burn::backend::wgpu::{CubeBackend, CubeTensor, into_contiguous};
use burn::backend::{AutodiffBackend, Backend, Dispatch, backend_extension};
use burn::tensor::{DType, Tensor};

use super::wgsl::{Shader, empty, folded, uniform};

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

/// The updates as a backend extension (no gradients flow through them).
#[backend_extension(Cube, Autodiff, Fusion: cfg(feature = "fusion"))]
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

/// True where the kernels take these flat tensors: on a GPU, f32, all of one length.
fn fits(tensors: &[&Tensor<1>]) -> bool {
    let n = tensors[0].dims()[0];
    super::on_gpu(&tensors[0].device())
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
/// `m`, `v`: the new `(param, m, v)`, or None where the kernel does not apply (not on a GPU, not
/// f32) and the caller uses burn's ops.
pub fn adamw_step(
    param: Tensor<1>,
    grad: Tensor<1>,
    [m, v]: [Tensor<1>; 2],
    clip: Option<Tensor<1>>,
    scalars: StepScalars,
) -> Option<(Tensor<1>, Tensor<1>, Tensor<1>)> {
    if !fits(&[&param, &grad, &m, &v]) {
        return None;
    }
    let clip = clip_or_one(clip, &param);
    let (p, m, v) = <Dispatch as OptimizerKernels>::adamw_step(
        param.into_dispatch(),
        grad.into_dispatch(),
        m.into_dispatch(),
        v.into_dispatch(),
        clip.into_dispatch(),
        scalars,
    );
    Some((
        Tensor::from_dispatch(p),
        Tensor::from_dispatch(m),
        Tensor::from_dispatch(v),
    ))
}

/// One Lion step (see [`adamw_step`]): the new `(param, m)`, or None.
pub fn lion_step(
    param: Tensor<1>,
    grad: Tensor<1>,
    m: Tensor<1>,
    clip: Option<Tensor<1>>,
    scalars: StepScalars,
) -> Option<(Tensor<1>, Tensor<1>)> {
    if !fits(&[&param, &grad, &m]) {
        return None;
    }
    let clip = clip_or_one(clip, &param);
    let (p, m) = <Dispatch as OptimizerKernels>::lion_step(
        param.into_dispatch(),
        grad.into_dispatch(),
        m.into_dispatch(),
        clip.into_dispatch(),
        scalars,
    );
    Some((Tensor::from_dispatch(p), Tensor::from_dispatch(m)))
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
