//! Llama's gated MLP activation `silu(gate) · up` as one elementwise pass forward and one
//! backward (`shaders/swiglu_{forward,backward}.wgsl`; on the CPU a Rust loop over the cores),
//! where burn's composed ops take a sigmoid, two products and their backward passes, each a pass
//! over the `[tokens, intermediate]` tensors (the MLP's widest), single-threaded on the CPU. The
//! backward pass keeps only `gate` and `up` (the composed ops also keep the sigmoid and the
//! product) and gives both gradients in one pass. The op is memory-bound for activation
//! checkpointing: with it on, its output is recomputed in the backward pass, not kept.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::retro_forward::RetroForward;
use burn::backend::autodiff::checkpoint::state::BackwardStates;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::{Autodiff, NodeId};
use burn::backend::tensor::FloatTensor;
use burn::backend::wgpu::{CubeBackend, CubeTensor, into_contiguous};
use burn::backend::{AutodiffBackend, Backend, Dispatch, backend_extension};
use burn::tensor::{DType, Tensor};
use std::marker::PhantomData;

use super::wgsl::{Shader, empty, folded, uniform};

/// Invocations per workgroup of the elementwise shaders (one element each).
const WG: usize = 256;

/// SwiGLU as a backend extension: `swiglu` is differentiable in both inputs; `swiglu_backward`
/// is the raw kernel.
#[backend_extension(Cube, Flex: cfg(feature = "native"), Autodiff, Fusion: cfg(feature = "fusion"))]
pub trait SwigluKernels: Backend {
    /// `silu(gate) · up` elementwise, `gate` and `up` flat `[n]`.
    #[fusion(dtype = gate, shape = gate)]
    fn swiglu(gate: FloatTensor<Self>, up: FloatTensor<Self>) -> FloatTensor<Self>;

    /// The gradients of `gate` and `up` from the output's `dy`.
    #[fusion(meta = |gate, _up, _dy| (gate.clone(), gate.clone()))]
    fn swiglu_backward(
        gate: FloatTensor<Self>,
        up: FloatTensor<Self>,
        dy: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);
}

/// `silu(gate) · up` over tensors of one shape through the kernel (WGSL on a GPU, Rust on the
/// CPU natively), or None where it does not apply (not f32, shapes that differ, the CPU in the
/// browser build) and the caller composes burn's ops.
pub fn swiglu<const D: usize>(gate: Tensor<D>, up: Tensor<D>) -> Option<Tensor<D>> {
    let dims = gate.dims();
    let n: usize = dims.iter().product();
    let fits = super::has_kernels(&gate.device())
        && gate.dtype() == DType::F32
        && up.dtype() == DType::F32
        && up.dims() == dims
        && n > 0
        && n <= u32::MAX as usize;
    fits.then(|| {
        let y = <Dispatch as SwigluKernels>::swiglu(
            gate.reshape([n]).into_dispatch(),
            up.reshape([n]).into_dispatch(),
        );
        Tensor::<1>::from_dispatch(y).reshape(dims)
    })
}

impl SwigluKernels for CubeBackend {
    fn swiglu(gate: CubeTensor, up: CubeTensor) -> CubeTensor {
        let [gate, up] = [gate, up].map(into_contiguous);
        let n = gate.meta.shape()[0];
        let y = empty(&gate, &[n]);
        Shader {
            name: "swiglu_forward",
            source: include_str!("../../../shaders/swiglu_forward.wgsl"),
            params: vec![],
            workgroup: WG as u32,
        }
        .launch(
            folded(n.div_ceil(WG)),
            &[&gate, &up, &y],
            uniform(&[n as u32]),
        );
        y
    }

    fn swiglu_backward(
        gate: CubeTensor,
        up: CubeTensor,
        dy: CubeTensor,
    ) -> (CubeTensor, CubeTensor) {
        let [gate, up, dy] = [gate, up, dy].map(into_contiguous);
        let n = gate.meta.shape()[0];
        let (dgate, dup) = (empty(&gate, &[n]), empty(&gate, &[n]));
        Shader {
            name: "swiglu_backward",
            source: include_str!("../../../shaders/swiglu_backward.wgsl"),
            params: vec![],
            workgroup: WG as u32,
        }
        .launch(
            folded(n.div_ceil(WG)),
            &[&gate, &up, &dy, &dgate, &dup],
            uniform(&[n as u32]),
        );
        (dgate, dup)
    }
}

/// SwiGLU's backward pass: both gradients from one pass over `gate`, `up` and the output's.
#[derive(Debug)]
struct SwigluBackward;

impl<B: SwigluKernels> Backward<B, 2> for SwigluBackward {
    /// `gate` and `up`, through the checkpointer.
    type State = (NodeId, NodeId);

    fn backward(
        self,
        ops: Ops<Self::State, 2>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let [node_gate, node_up] = ops.parents;
        let dy = grads.consume::<B>(&ops.node);
        let (gate, up) = ops.state;
        let gate = checkpointer.retrieve_node_output::<FloatTensor<B>>(gate);
        let up = checkpointer.retrieve_node_output::<FloatTensor<B>>(up);
        let (dgate, dup) = B::swiglu_backward(gate, up, dy);
        if let Some(node) = node_gate {
            grads.register::<B>(node.id, dgate);
        }
        if let Some(node) = node_up {
            grads.register::<B>(node.id, dup);
        }
    }
}

/// SwiGLU's output computed again from `gate` and `up` where activation checkpointing did not
/// keep it: it is memory-bound (one elementwise pass), and with `--checkpoint-activations` its
/// `[tokens, intermediate]` output — the down projection's input, the widest activation of a
/// layer — is recomputed in the backward pass instead of held.
#[derive(Debug)]
struct RetroSwiglu<B> {
    gate: NodeId,
    up: NodeId,
    backend: PhantomData<B>,
}

impl<B: SwigluKernels> RetroForward for RetroSwiglu<B> {
    fn forward(&self, states: &mut BackwardStates, out: NodeId) {
        let gate = states.get_state::<FloatTensor<B>>(&self.gate);
        let up = states.get_state::<FloatTensor<B>>(&self.up);
        states.save(out, B::swiglu(gate, up));
    }
}

impl<B: SwigluKernels, C: CheckpointStrategy> SwigluKernels for Autodiff<B, C> {
    fn swiglu(gate: FloatTensor<Self>, up: FloatTensor<Self>) -> FloatTensor<Self> {
        let retro = RetroSwiglu::<B> {
            gate: gate.id(),
            up: up.id(),
            backend: PhantomData,
        };
        match SwigluBackward
            .prepare::<C>([gate.node(), up.node()])
            .memory_bound()
            .retro_forward(retro)
            .parents([&gate, &up])
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let state = (prep.checkpoint(&gate), prep.checkpoint(&up));
                let y = B::swiglu(gate.into_primitive(), up.into_primitive());
                prep.finish(state, y)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(B::swiglu(gate.into_primitive(), up.into_primitive()))
            }
        }
    }

    fn swiglu_backward(
        gate: FloatTensor<Self>,
        up: FloatTensor<Self>,
        dy: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let (dgate, dup) = B::swiglu_backward(Self::inner(gate), Self::inner(up), Self::inner(dy));
        (Self::from_inner(dgate), Self::from_inner(dup))
    }
}
