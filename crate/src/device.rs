//! Choosing where tensors live: a wgpu adapter (Vulkan/Metal/DX12/WebGPU) or burn's CPU
//! backend. Only the shells (CLI, wasm entry) call this; library code just takes a `Device`.

use burn::tensor::Device;

#[cfg(feature = "native")]
use burn::tensor::DeviceKind;
#[cfg(feature = "native")]
use burn::tensor::wgpu::wgpu;

#[cfg(feature = "native")]
use crate::error::Error;
use crate::error::Result;

/// What the user asked for with `--device`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceChoice {
    /// A hardware wgpu adapter if there is one, else the CPU backend.
    Auto,
    /// A wgpu adapter: hardware first, else a software one (e.g. lavapipe).
    Gpu,
    /// burn's pure-Rust CPU backend (`flex`).
    Cpu,
}

impl std::str::FromStr for DeviceChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "gpu" => Ok(Self::Gpu),
            "cpu" => Ok(Self::Cpu),
            _ => Err(format!("unknown device `{s}`; expected auto, gpu or cpu")),
        }
    }
}

/// A wgpu adapter as seen on this machine, with the limits that bound model size.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AdapterInfo {
    pub name: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
    /// True for software rasterizers (lavapipe, SwiftShader, WARP).
    pub software: bool,
    pub max_buffer_size: u64,
    pub max_storage_buffer_binding_size: u64,
    pub max_compute_workgroup_storage_size: u32,
    pub max_compute_invocations_per_workgroup: u32,
    /// f16 in shaders (WebGPU's `shader-f16`): frozen weights can be kept in f16
    /// (`--frozen-f16`).
    pub shader_f16: bool,
    #[serde(skip)]
    #[cfg(feature = "native")]
    kind: Option<DeviceKind>,
}

/// The device chosen, with a one-line description for the user.
pub struct Selected {
    pub device: Device,
    /// e.g. `wgpu: NVIDIA RTX 4090 (Vulkan, DiscreteGpu)` or `cpu (flex)`.
    pub label: String,
    /// Set when `auto` fell back or skipped something the user should know about.
    pub notice: Option<String>,
    /// Adapter details when a wgpu adapter was chosen.
    pub adapter: Option<AdapterInfo>,
    /// The wgpu handles (instance, adapter, device, queue) the runtime uses when a wgpu adapter
    /// was chosen: for sharing the device with other wgpu code, and for fault tests that lose it.
    #[cfg(feature = "native")]
    pub wgpu: Option<burn::tensor::wgpu::WgpuSetup>,
}

/// Every wgpu adapter on the primary APIs (Vulkan, Metal, DX12), in wgpu's order.
#[cfg(feature = "native")]
pub fn adapters() -> Vec<AdapterInfo> {
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
        backends: wgpu::Backends::PRIMARY,
        ..wgpu::InstanceDescriptor::new_without_display_handle()
    });
    let list = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::PRIMARY));
    let mut per_type: std::collections::HashMap<(wgpu::Backend, wgpu::DeviceType), usize> =
        Default::default();
    list.iter()
        .map(|a| {
            let info = a.get_info();
            let limits = a.limits();
            let n = per_type
                .entry((info.backend, info.device_type))
                .or_default();
            let kind = match info.device_type {
                wgpu::DeviceType::DiscreteGpu => Some(DeviceKind::DiscreteGpu(*n)),
                wgpu::DeviceType::IntegratedGpu => Some(DeviceKind::IntegratedGpu(*n)),
                wgpu::DeviceType::VirtualGpu => Some(DeviceKind::VirtualGpu(*n)),
                wgpu::DeviceType::Cpu => Some(DeviceKind::Cpu),
                wgpu::DeviceType::Other => None,
            };
            *n += 1;
            AdapterInfo {
                name: info.name,
                backend: format!("{:?}", info.backend),
                device_type: format!("{:?}", info.device_type),
                driver: format!("{} {}", info.driver, info.driver_info)
                    .trim()
                    .to_string(),
                software: info.device_type == wgpu::DeviceType::Cpu,
                max_buffer_size: limits.max_buffer_size,
                max_storage_buffer_binding_size: limits.max_storage_buffer_binding_size,
                max_compute_workgroup_storage_size: limits.max_compute_workgroup_storage_size,
                max_compute_invocations_per_workgroup: limits.max_compute_invocations_per_workgroup,
                shader_f16: a.features().contains(wgpu::Features::SHADER_F16),
                kind,
            }
        })
        .collect()
}

/// Make the device the user asked for.
#[cfg(feature = "native")]
pub fn select(choice: DeviceChoice) -> Result<Selected> {
    let cpu = |notice: Option<String>| Selected {
        device: Device::flex(),
        label: "cpu (burn flex backend)".into(),
        notice,
        adapter: None,
        wgpu: None,
    };
    if choice == DeviceChoice::Cpu {
        return Ok(cpu(None));
    }
    let all = adapters();
    let hardware = all.iter().find(|a| !a.software && a.kind.is_some());
    let software = all.iter().find(|a| a.software && a.kind.is_some());
    let pick = match (choice, hardware, software) {
        (_, Some(hw), _) => hw,
        (DeviceChoice::Gpu, None, Some(sw)) => sw,
        (DeviceChoice::Auto, None, Some(sw)) => {
            // A software rasterizer runs our kernels far slower than the CPU backend does.
            return Ok(cpu(Some(format!(
                "no hardware GPU adapter; using the CPU backend (software adapter `{}` skipped: set `device` to gpu to use it)",
                sw.name
            ))));
        }
        (DeviceChoice::Auto, None, None) => {
            return Ok(cpu(Some(
                "no wgpu adapter found; using the CPU backend".into(),
            )));
        }
        _ => {
            return Err(Error::Device(
                "no wgpu adapter found (on Linux without a GPU, install mesa-vulkan-drivers for lavapipe)"
                    .into(),
            ));
        }
    };
    let kind = pick.kind.clone().expect("filtered on kind above");
    let (device, setup) = Device::wgpu_options()
        .device_kind(kind)
        .init_with_setup()
        .map_err(|e| Error::Device(format!("cannot start adapter `{}`: {e}", pick.name)))?;
    Ok(Selected {
        device,
        label: format!(
            "wgpu: {} ({}, {})",
            pick.name, pick.backend, pick.device_type
        ),
        notice: None,
        adapter: Some(pick.clone()),
        wgpu: Some(setup),
    })
}
