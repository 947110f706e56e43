//! tunelab's own WGSL compute shaders (the top-level `shaders/` folder), run on the wgpu backend
//! natively and in the browser through burn's backend extensions, each with its backward pass
//! wired into burn's autodiff. Natively the CPU backend runs Rust versions of them ([`cpu`])
//! through the same extensions (all but the optimizer's gather, which only saves launches).
//!
//! [`Kernels`] chooses between them and burn's generic kernels (`--kernels`, the page's setting);
//! a shape a kernel does not cover falls back to burn's ops.

mod attention;
#[cfg(feature = "native")]
mod cpu;
mod cross_entropy;
mod matmul;
mod norm;
mod optimizer;
mod rope;
mod swiglu;
mod wgsl;

pub use attention::{dropout_keeps, fused_attention, takes_heads};
pub use cross_entropy::{CHUNK_BYTES, chunked_nll, chunked_nll_rows};
pub use matmul::{MatmulCalibration, calibrate, linear, lora_linear, matmul, use_tiled_matmul};
pub use norm::{add_rms_norm, rms_norm};
pub use optimizer::{
    FlatLayout, SEGMENT_ALIGN, StepScalars, adamw_step, gather, lion_step, takes_step,
};
pub use rope::rope;
pub use swiglu::swiglu;

use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Which kernels run the hot paths on a GPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kernels {
    /// tunelab's WGSL kernels where they apply (GPU only), burn's ops elsewhere.
    #[default]
    Tunelab,
    /// burn/cubecl's generic kernels everywhere.
    Burn,
}

impl FromStr for Kernels {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "tunelab" => Ok(Kernels::Tunelab),
            "burn" => Ok(Kernels::Burn),
            other => Err(format!("unknown kernels `{other}` (tunelab or burn)")),
        }
    }
}

impl std::fmt::Display for Kernels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kernels::Tunelab => "tunelab",
            Kernels::Burn => "burn",
        })
    }
}

/// Get `device` ready for `kernels`: with [`Kernels::Tunelab`] on a GPU, [`calibrate`] the matmul
/// once (a notice says which one runs and the times; burn's, if the probe fails); nothing
/// otherwise.
pub async fn prepare(
    device: &burn::tensor::Device,
    kernels: Kernels,
    on_event: &mut dyn FnMut(&crate::event::Event),
) {
    if kernels != Kernels::Tunelab {
        return;
    }
    // A probe the device cannot run (buffers too small for it, say) is no reason to end the
    // run: burn's matmul runs, and a fault that is real surfaces again at the first step.
    let message = match calibrate(device).await {
        Ok(None) => return,
        Ok(Some(c)) => c.to_string(),
        Err(e) => {
            use_tiled_matmul(device, false);
            format!("matmul: burn's (the calibration probe failed: {e})")
        }
    };
    on_event(&crate::event::Event::Notice { message });
}

/// The stream the fused attention kernel's dropout seeds come from: process-wide, as burn's
/// random stream (which draws every other dropout mask) is, and seeded with it.
static DROPOUT_SEEDS: std::sync::Mutex<crate::rng::SplitMix64> =
    std::sync::Mutex::new(crate::rng::SplitMix64(0));

/// Seed `device`'s random stream and the attention dropout seeds with `seed`: the trainer does at
/// each step, so a resumed run draws the masks the uninterrupted one drew.
pub fn seed(device: &burn::tensor::Device, seed: u64) {
    device.seed(seed);
    *DROPOUT_SEEDS.lock().unwrap_or_else(|e| e.into_inner()) = crate::rng::SplitMix64(seed);
}

/// The next seed of an attention dropout mask (see [`seed`]).
pub fn next_dropout_seed() -> u32 {
    let mut stream = DROPOUT_SEEDS.lock().unwrap_or_else(|e| e.into_inner());
    (stream.next_u64() >> 32) as u32
}

/// Why weights cannot be kept in f16 on `device` (read as stored by the tiled matmul), or None
/// when they can.
pub fn f16_unavailable(device: &burn::tensor::Device) -> Option<&'static str> {
    if !on_gpu(device) {
        Some("needs a GPU (the CPU backend keeps f32)")
    } else if !device.supports_dtype(burn::tensor::DType::F16) {
        Some("needs f16 shaders, which this GPU adapter does not offer (WebGPU's `shader-f16`)")
    } else {
        None
    }
}

/// True when `device` (or the device an autodiff device wraps) runs on the cubecl backend (wgpu),
/// where the WGSL kernels can run.
pub fn on_gpu(device: &burn::tensor::Device) -> bool {
    matches!(
        device.clone().inner().as_dispatch(),
        burn::backend::DispatchDevice::Cube(_)
    )
}

/// True when attention, RMSNorm and the chunked loss kernels run on `device`: a GPU (WGSL) or,
/// natively, the CPU backend (Rust, [`cpu`]).
pub fn has_kernels(device: &burn::tensor::Device) -> bool {
    match device.clone().inner().as_dispatch() {
        burn::backend::DispatchDevice::Cube(_) => true,
        #[cfg(feature = "native")]
        burn::backend::DispatchDevice::Flex(_) => true,
        #[allow(unreachable_patterns)]
        _ => false,
    }
}
