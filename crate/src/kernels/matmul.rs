//! A tiled matmul for WebGPU without subgroups (`shaders/matmul.wgsl`: 64 × 64 workgroup
//! tiles, 4 × 4 per invocation, vec4 tiles in workgroup memory; f32 arithmetic, the second
//! operand f32 or f16), as a backend extension with its own backward; and LoRA's linear layer on
//! it, the adapter's product added in the epilogue. The backward pass reads transposed operands
//! in place (the shader takes either layout), and computes a weight's gradient only when the
//! weight trains, keeping the input for it only then: a frozen base weight costs no dW matmul
//! and keeps no activation.
//!
//! Which matmul the model's linears and the chunked loss use is measured, not assumed: the
//! tiled kernel is 3–5× faster than burn's in Chromium's SwiftShader but slower on lavapipe, and
//! GPUs differ again. [`calibrate`] times both once per device and [`product`] / [`linear`] use
//! the faster; a device never calibrated keeps burn's. An f16 weight always takes the tiled
//! kernel (burn's would need an f32 copy of it). On the CPU (native builds) the extension's
//! kernel is the gemm crate called on the operands' strides (`kernels::cpu`), always used: it is
//! burn's CPU matmul without the output's zero-fill and copy, with LoRA's products in one buffer.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::{Autodiff, NodeId};
use burn::backend::ops::FloatTensorOps;
use burn::backend::tensor::FloatTensor;
use burn::backend::wgpu::{CubeBackend, CubeTensor, into_contiguous};
use burn::backend::{Backend, Dispatch, TensorMetadata, backend_extension};
use burn::tensor::{DType, Device, Tensor};
use std::collections::BTreeMap;
use std::sync::Mutex;
use web_time::Instant;

use crate::error::Result;

use super::wgsl::{Shader, empty, grid, uniform};

/// Rows and columns of C one workgroup computes.
const TILE: usize = 64;

/// The matmul as a backend extension, differentiable in both operands; and LoRA's linear layer
/// on it, the adapter's product added in the base product's epilogue.
#[backend_extension(Cube, Flex: cfg(feature = "native"), Autodiff, Fusion: cfg(feature = "fusion"))]
pub trait MatmulKernels: Backend {
    /// `a · b` for `a` `[M, K]` and `b` `[K, N]`.
    #[fusion(meta = |a, b| product_spec(a, b))]
    fn tiled_matmul(a: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self>;

    /// `a · b + scale · (u · v)` for `u` `[M, r]` and `v` `[r, N]`, in one launch.
    #[fusion(meta = |a, b, _u, _v, _scale| product_spec(a, b))]
    fn tiled_matmul_low_rank(
        a: FloatTensor<Self>,
        b: FloatTensor<Self>,
        u: FloatTensor<Self>,
        v: FloatTensor<Self>,
        scale: f32,
    ) -> FloatTensor<Self>;

    /// LoRA's linear layer without bias: `x · w + scale · (xd · a) · b`, `xd` being `x` after the
    /// adapter's dropout (the same tensor without it), `w` frozen.
    #[fusion(meta = |x, _xd, w, _a, _b, _scale| product_spec(x, w))]
    fn lora_linear(
        x: FloatTensor<Self>,
        xd: FloatTensor<Self>,
        w: FloatTensor<Self>,
        a: FloatTensor<Self>,
        b: FloatTensor<Self>,
        scale: f32,
    ) -> FloatTensor<Self>;
}

#[cfg(feature = "fusion")]
fn product_spec(
    a: &burn::backend::fusion::custom::TensorSpec,
    b: &burn::backend::fusion::custom::TensorSpec,
) -> burn::backend::fusion::custom::TensorSpec {
    let ([m, _], [_, n]) = (a.shape.dims::<2>(), b.shape.dims::<2>());
    burn::backend::fusion::custom::TensorSpec::new([m, n].into(), a.dtype)
}

/// `a · b` through the kernel (the WGSL one on a GPU; natively on the CPU, the gemm burn's CPU
/// matmul uses, into an output written once), or None where it does not apply (`a` not f32, `b`
/// neither f32 nor f16 — f32 on the CPU —, shapes that do not chain; the CPU in the browser
/// build) and the caller uses burn's matmul.
pub fn matmul(a: Tensor<2>, b: Tensor<2>) -> Option<Tensor<2>> {
    let ([m, k], [kb, n]) = (a.dims(), b.dims());
    let fits = weight_fits(&a.device(), b.dtype())
        && a.dtype() == DType::F32
        && k == kb
        && m.min(n).min(k) > 0
        && indexable(&[(m, k), (k, n), (m, n)]);
    fits.then(|| {
        Tensor::from_dispatch(<Dispatch as MatmulKernels>::tiled_matmul(
            a.into_dispatch(),
            b.into_dispatch(),
        ))
    })
}

/// `x · w` over the last dimension of `x` `[.., K]` for `w` `[K, N]` (a linear layer without
/// bias), through [`matmul`]; None where it does not apply or the device does not take the
/// kernel for `w` ([`takes_tiled`]).
pub fn linear<const D: usize>(x: Tensor<D>, w: Tensor<2>) -> Option<Tensor<D>> {
    if !takes_tiled(&device_key(&x.device())?, w.dtype()) {
        return None;
    }
    let mut dims = x.dims();
    let k = dims[D - 1];
    let rows = dims[..D - 1].iter().product();
    let y = matmul(x.reshape([rows, k]), w.clone())?;
    dims[D - 1] = w.dims()[1];
    Some(y.reshape(dims))
}

/// LoRA's linear layer `x · w + scale · (xd · a) · b` over the last dimension of `x` `[.., K]`
/// (`xd`: `x` after the adapter's dropout, None without it; `w` `[K, N]` frozen, f32 or f16;
/// `a` `[K, r]`, `b` `[r, N]`) in two launches, the rank-r product and the base product with the
/// adapter's added in its epilogue; the input's gradient in one more without dropout — where the
/// tiled kernel is the matmul in use ([`calibrate`], or an f16 `w`; always on the CPU, natively).
/// None where it does not apply (not f32, a `w` that trains, shapes that do not chain) and the
/// caller composes the products.
pub fn lora_linear<const D: usize>(
    x: Tensor<D>,
    xd: Option<Tensor<D>>,
    w: Tensor<2>,
    a: Tensor<2>,
    b: Tensor<2>,
    scale: f64,
) -> Option<Tensor<D>> {
    if !takes_tiled(&device_key(&x.device())?, w.dtype()) {
        return None;
    }
    let mut dims = x.dims();
    let k = dims[D - 1];
    let rows: usize = dims[..D - 1].iter().product();
    let ([kw, n], [ka, r], [rb, nb]) = (w.dims(), a.dims(), b.dims());
    let fits = weight_fits(&x.device(), w.dtype())
        && [
            Some(x.dtype()),
            xd.as_ref().map(Tensor::dtype),
            Some(a.dtype()),
            Some(b.dtype()),
        ]
        .into_iter()
        .flatten()
        .all(|t| t == DType::F32)
        && !w.is_require_grad()
        && xd.as_ref().is_none_or(|t| t.dims() == dims)
        && (kw, ka, rb, nb) == (k, k, r, n)
        && rows.min(k).min(n).min(r) > 0
        && indexable(&[(rows, k), (k, n), (rows, n), (rows, r), (k, r), (r, n)]);
    if !fits {
        return None;
    }
    // Without dropout the adapter reads the very tensor the base does: one autodiff node, so the
    // backward pass sums the input's two gradients in one launch.
    let x = x.reshape([rows, k]);
    let xd = xd.map_or_else(|| x.clone(), |t| t.reshape([rows, k]));
    let y = Tensor::<2>::from_dispatch(<Dispatch as MatmulKernels>::lora_linear(
        x.into_dispatch(),
        xd.into_dispatch(),
        w.into_dispatch(),
        a.into_dispatch(),
        b.into_dispatch(),
        scale as f32,
    ));
    dims[D - 1] = n;
    Some(y.reshape(dims))
}

/// Per cubecl device (its Debug name): whether the tiled kernel was the faster in [`calibrate`].
static TILED_FASTER: Mutex<BTreeMap<String, bool>> = Mutex::new(BTreeMap::new());

/// Whether products with `weight` (of that dtype) on the device `key` take the kernel: on a GPU
/// where [`calibrate`] found it the faster, and always for an f16 weight (burn's matmul would need
/// an f32 copy of it, kept for the backward pass); on the CPU always (the same gemm as burn's
/// matmul, without its zero-filled and copied output, and LoRA's two products in one buffer).
fn takes_tiled(key: &str, weight: DType) -> bool {
    #[cfg(feature = "native")]
    if key == cpu_key() {
        return weight == DType::F32;
    }
    let faster = TILED_FASTER.lock().unwrap_or_else(|e| e.into_inner());
    weight == DType::F16 || faster.get(key).copied().unwrap_or(false)
}

/// The key of the CPU backend's device (the Debug name its tensors carry, as [`device_key`]).
#[cfg(feature = "native")]
fn cpu_key() -> String {
    format!("{:?}", burn::backend::flex::FlexDevice)
}

/// Whether the kernel runs on `device` with a second operand of dtype `b`: f32 or f16 on a GPU,
/// f32 on the CPU (natively).
fn weight_fits(device: &Device, b: DType) -> bool {
    match b {
        DType::F32 => super::has_kernels(device),
        DType::F16 => super::on_gpu(device),
        _ => false,
    }
}

/// Whether every `[rows, cols]` matrix of `sizes` has its element indices within u32 (the
/// shader's index type; usize is 32 bits on wasm32).
fn indexable(sizes: &[(usize, usize)]) -> bool {
    sizes
        .iter()
        .all(|&(r, c)| r as u64 * c as u64 <= u32::MAX as u64)
}

/// The key of the cubecl device `device` runs on (None off the GPU): the Debug name of the
/// device the backend's tensors carry, so [`product`] finds the same entry.
fn cube_key(device: &Device) -> Option<String> {
    match device.clone().inner().as_dispatch() {
        burn::backend::DispatchDevice::Cube(d) => Some(format!("{d:?}")),
        #[allow(unreachable_patterns)]
        _ => None,
    }
}

/// [`cube_key`], or natively the CPU backend's key; None on a device without the kernel.
fn device_key(device: &Device) -> Option<String> {
    #[cfg(feature = "native")]
    if let burn::backend::DispatchDevice::Flex(d) = device.clone().inner().as_dispatch() {
        return Some(format!("{d:?}"));
    }
    cube_key(device)
}

/// `a · b` on backend `B` with the matmul [`calibrate`] found faster on the tensors' device; an f16
/// `b` (a frozen weight in half precision) always with the tiled kernel, which reads it as stored;
/// on the CPU always with the kernel ([`takes_tiled`]).
pub(super) fn product<B: MatmulKernels>(a: FloatTensor<B>, b: FloatTensor<B>) -> FloatTensor<B> {
    if takes_tiled(&format!("{:?}", a.device()), b.dtype()) {
        B::tiled_matmul(a, b)
    } else {
        B::float_matmul(a, b)
    }
}

/// Use the tiled kernel (`true`) or burn's matmul on `device` from now on, whatever [`calibrate`]
/// measured (no effect off the GPU: on the CPU the kernel always runs, `--kernels burn` choosing
/// burn's matmul there).
pub fn use_tiled_matmul(device: &Device, tiled: bool) {
    if let Some(key) = cube_key(device) {
        let mut faster = TILED_FASTER.lock().unwrap_or_else(|e| e.into_inner());
        faster.insert(key, tiled);
    }
}

/// What [`calibrate`] measured on one device.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct MatmulCalibration {
    /// The tiled kernel's time for the probe product, milliseconds.
    pub tiled_ms: f64,
    /// burn's matmul's time for the same product, milliseconds.
    pub burn_ms: f64,
}

impl MatmulCalibration {
    /// Whether the tiled kernel is the one used.
    pub fn tiled(&self) -> bool {
        self.tiled_ms < self.burn_ms
    }
}

impl std::fmt::Display for MatmulCalibration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "matmul: {} (tiled WGSL {:.2} ms, burn's {:.2} ms for a 512×256 · 256×512 product)",
            if self.tiled() {
                "tunelab's tiled kernel"
            } else {
                "burn's"
            },
            self.tiled_ms,
            self.burn_ms
        )
    }
}

/// Time the tiled kernel against burn's matmul on `device` — a `[512, 256] · [256, 512]`
/// product, repeated until a call takes about 10 ms, the best of two calls after one that
/// compiles — and use the faster there
/// from now on. Measured once per device; later calls return the first result. None off the
/// GPU, where burn's ops always run.
pub async fn calibrate(device: &Device) -> Result<Option<MatmulCalibration>> {
    static DONE: Mutex<BTreeMap<String, MatmulCalibration>> = Mutex::new(BTreeMap::new());
    let Some(key) = cube_key(device) else {
        return Ok(None);
    };
    if let Some(c) = DONE.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        return Ok(Some(*c));
    }
    let device = device.clone().inner();
    // Constant operands: the timing does not depend on the values, and the device's random
    // stream (dropout masks, LoRA's init) is left as it was.
    let a = Tensor::<2>::full([512, 256], 0.5, &device);
    let b = Tensor::<2>::full([256, 512], 0.25, &device);
    // One call: `n` products and the readback of one element of the last (the queue runs them
    // in order), milliseconds per product.
    let call = async |tiled: bool, n: usize| -> Result<f64> {
        let t = Instant::now();
        let mut c = None;
        for _ in 0..n {
            c = Some(match tiled {
                true => matmul(a.clone(), b.clone()).expect("f32 on a GPU"),
                false => a.clone().matmul(b.clone()),
            });
        }
        crate::model::read_f32(c.expect("n > 0").slice([0..1, 0..1])).await?;
        Ok(t.elapsed().as_secs_f64() * 1e3 / n as f64)
    };
    // A compiling call, one to size the rest (enough products per call that a fast device's
    // round trip does not decide), then the best of two.
    let time = async |tiled: bool| -> Result<f64> {
        call(tiled, 1).await?;
        let once = call(tiled, 1).await?;
        let n = (10.0 / once.max(1e-3)).clamp(1.0, 64.0) as usize;
        Ok(call(tiled, n).await?.min(call(tiled, n).await?))
    };
    let c = MatmulCalibration {
        tiled_ms: time(true).await?,
        burn_ms: time(false).await?,
    };
    DONE.lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(key.clone(), c);
    TILED_FASTER
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(key, c.tiled());
    Ok(Some(c))
}

/// A 2-D tensor as the shader reads it: 0 = row-major, 1 = the row-major storage of its transpose
/// (a transposed view, read in place); anything else is made contiguous first.
fn layout(t: CubeTensor) -> (CubeTensor, u32) {
    if t.is_contiguous() {
        return (t, 0);
    }
    let (shape, strides) = (t.meta.shape(), t.meta.strides());
    if strides[0] == 1 && strides[1] == shape[0] {
        return (t, 1);
    }
    (into_contiguous(t), 0)
}

impl MatmulKernels for CubeBackend {
    fn tiled_matmul(a: CubeTensor, b: CubeTensor) -> CubeTensor {
        tiled(a, b, None)
    }

    fn tiled_matmul_low_rank(
        a: CubeTensor,
        b: CubeTensor,
        u: CubeTensor,
        v: CubeTensor,
        scale: f32,
    ) -> CubeTensor {
        tiled(a, b, Some((u, v, scale)))
    }

    fn lora_linear(
        x: CubeTensor,
        xd: CubeTensor,
        w: CubeTensor,
        a: CubeTensor,
        b: CubeTensor,
        scale: f32,
    ) -> CubeTensor {
        let h = tiled(xd, a, None);
        tiled(x, w, Some((h, b, scale)))
    }
}

/// `a · b` (`+ scale · (u · v)` when `low_rank` is given) through `shaders/matmul.wgsl`.
fn tiled(
    a: CubeTensor,
    b: CubeTensor,
    low_rank: Option<(CubeTensor, CubeTensor, f32)>,
) -> CubeTensor {
    let (m, k, n) = (a.meta.shape()[0], a.meta.shape()[1], b.meta.shape()[1]);
    debug_assert!(a.dtype == DType::F32 && matches!(b.dtype, DType::F32 | DType::F16));
    let (enable, b_elem) = match b.dtype {
        DType::F16 => ("enable f16;", "f16"),
        _ => ("", "f32"),
    };
    let ((a, ta), (b, tb)) = (layout(a), layout(b));
    let c = empty(&a, &[m, n]);
    // Without a low-rank term the shader still binds U and V: one-element placeholders.
    let contiguous = |t: CubeTensor| {
        if t.is_contiguous() {
            t
        } else {
            into_contiguous(t)
        }
    };
    let (u, v, r, scale) = match low_rank {
        Some((u, v, scale)) => {
            let r = u.meta.shape()[1];
            (contiguous(u), contiguous(v), r, scale)
        }
        None => (empty(&a, &[1]), empty(&a, &[1]), 0, 0.0),
    };
    Shader {
        name: "matmul",
        source: include_str!("../../../shaders/matmul.wgsl"),
        params: vec![
            ("ta", ta.into()),
            ("tb", tb.into()),
            ("lr", u32::from(r > 0).into()),
            ("enable", enable.into()),
            ("b_elem", b_elem.into()),
        ],
        workgroup: 256,
    }
    .launch(
        grid(n.div_ceil(TILE), m.div_ceil(TILE)),
        &[&a, &b, &c, &u, &v],
        uniform(&[m as u32, n as u32, k as u32, r as u32, scale.to_bits()]),
    );
    c
}

impl<B: MatmulKernels, C: CheckpointStrategy> MatmulKernels for Autodiff<B, C> {
    fn tiled_matmul(a: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct MatmulBackward;

        impl<B: MatmulKernels> Backward<B, 2> for MatmulBackward {
            /// `a` when `b` needs its gradient, `b` when `a` does (through the checkpointer, so
            /// activation checkpointing may recompute them).
            type State = (Option<NodeId>, Option<NodeId>);

            fn backward(
                self,
                ops: Ops<Self::State, 2>,
                grads: &mut Gradients,
                checkpointer: &mut Checkpointer,
            ) {
                let [node_a, node_b] = ops.parents;
                let grad = grads.consume::<B>(&ops.node);
                let (a, b) = ops.state;
                let a = a.map(|id| checkpointer.retrieve_node_output::<FloatTensor<B>>(id));
                let b = b.map(|id| checkpointer.retrieve_node_output::<FloatTensor<B>>(id));
                if let (Some(node), Some(a)) = (node_b, a) {
                    let db = B::tiled_matmul(B::float_transpose(a), grad.clone());
                    grads.register::<B>(node.id, db);
                }
                if let (Some(node), Some(b)) = (node_a, b) {
                    grads.register::<B>(node.id, B::tiled_matmul(grad, B::float_transpose(b)));
                }
            }
        }

        let (a_tracked, b_tracked) = (a.is_tracked(), b.is_tracked());
        match MatmulBackward
            .prepare::<C>([a.node(), b.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let a_state = b_tracked.then(|| prep.checkpoint(&a));
                let b_state = a_tracked.then(|| prep.checkpoint(&b));
                let c = B::tiled_matmul(a.into_primitive(), b.into_primitive());
                prep.finish((a_state, b_state), c)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(B::tiled_matmul(a.into_primitive(), b.into_primitive()))
            }
        }
    }
    fn tiled_matmul_low_rank(
        a: FloatTensor<Self>,
        b: FloatTensor<Self>,
        u: FloatTensor<Self>,
        v: FloatTensor<Self>,
        scale: f32,
    ) -> FloatTensor<Self> {
        // Differentiable as its two products; the fused kernel runs inside `lora_linear`.
        let uv = Self::float_mul_scalar(Self::tiled_matmul(u, v), scale.into());
        Self::float_add(Self::tiled_matmul(a, b), uv)
    }

    fn lora_linear(
        x: FloatTensor<Self>,
        xd: FloatTensor<Self>,
        w: FloatTensor<Self>,
        a: FloatTensor<Self>,
        b: FloatTensor<Self>,
        scale: f32,
    ) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct LoraBackward;

        impl<B: MatmulKernels> Backward<B, 4> for LoraBackward {
            /// xd (through the checkpointer, so activation checkpointing may recompute it), w,
            /// a, b, h = xd · a, the scale (`x` itself is not needed: `w` gets no gradient).
            type State = (
                NodeId,
                FloatTensor<B>,
                FloatTensor<B>,
                FloatTensor<B>,
                FloatTensor<B>,
                f32,
            );

            fn backward(
                self,
                ops: Ops<Self::State, 4>,
                grads: &mut Gradients,
                checkpointer: &mut Checkpointer,
            ) {
                let [node_x, node_xd, node_a, node_b] = ops.parents;
                let g = grads.consume::<B>(&ops.node);
                let (xd, w, a, b, h, scale) = ops.state;
                let xd = checkpointer.retrieve_node_output::<FloatTensor<B>>(xd);
                let t = B::float_transpose;
                if let Some(node) = node_b {
                    let db = B::tiled_matmul(t(h), g.clone());
                    grads.register::<B>(node.id, B::float_mul_scalar(db, scale.into()));
                }
                // The gradient reaching the rank-r activations, scaled: [M, r].
                let dh =
                    || B::float_mul_scalar(B::tiled_matmul(g.clone(), t(b.clone())), scale.into());
                match (node_x, node_xd) {
                    // No dropout: dx = g · wᵀ + dh · aᵀ in one launch, once.
                    (Some(nx), Some(nd)) if nx.id == nd.id => {
                        let dh = dh();
                        if let Some(node) = node_a {
                            grads.register::<B>(node.id, B::tiled_matmul(t(xd), dh.clone()));
                        }
                        let dx = B::tiled_matmul_low_rank(g, t(w), dh, t(a), 1.0);
                        grads.register::<B>(nx.id, dx);
                    }
                    (nx, nd) => {
                        let dh = (node_a.is_some() || nd.is_some()).then(dh);
                        if let (Some(node), Some(dh)) = (node_a, &dh) {
                            grads.register::<B>(node.id, B::tiled_matmul(t(xd), dh.clone()));
                        }
                        if let (Some(node), Some(dh)) = (nd, dh) {
                            grads.register::<B>(node.id, B::tiled_matmul(dh, t(a)));
                        }
                        if let Some(node) = nx {
                            grads.register::<B>(node.id, B::tiled_matmul(g, t(w)));
                        }
                    }
                }
            }
        }

        // `w` is frozen (the caller checks): not a parent.
        let nodes = [x.node(), xd.node(), a.node(), b.node()];
        match LoraBackward.prepare::<C>(nodes).compute_bound().stateful() {
            OpsKind::Tracked(mut prep) => {
                let xd_id = prep.checkpoint(&xd);
                let (xd, w, a, b) = (
                    xd.into_primitive(),
                    w.into_primitive(),
                    a.into_primitive(),
                    b.into_primitive(),
                );
                let h = B::tiled_matmul(xd, a.clone());
                let y = B::tiled_matmul_low_rank(
                    x.into_primitive(),
                    w.clone(),
                    h.clone(),
                    b.clone(),
                    scale,
                );
                prep.finish((xd_id, w, a, b, h, scale), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::lora_linear(
                x.into_primitive(),
                xd.into_primitive(),
                w.into_primitive(),
                a.into_primitive(),
                b.into_primitive(),
                scale,
            )),
        }
    }
}
