//! Launching a `shaders/*.wgsl` file on cubecl's wgpu runtime: template parameters, buffers in
//! binding order, scalars as one uniform after them.

use burn::backend::wgpu::{CubeTensor, KernelSource, SourceKernel, SourceTemplate};
use burn::cubecl::prelude::KernelId;
use burn::cubecl::server::{KernelArguments, MetadataBindingInfo};
use burn::cubecl::{CubeCount, CubeDim};
use burn::tensor::{DType, Shape};

/// Workgroup memory every WebGPU adapter offers (`maxComputeWorkgroupStorageSize`'s minimum); the
/// tile sizes are chosen to fit it, so a kernel runs on any adapter.
pub const WORKGROUP_BYTES: usize = 16_384;

/// The most workgroups along one dispatch dimension on WebGPU.
pub const MAX_GROUPS: u32 = 65_535;

/// One shader with its template values (`{{ name }}` in the source).
pub struct Shader {
    /// File name, for the kernel's identity.
    pub name: &'static str,
    pub source: &'static str,
    /// Template values; also part of the compiled kernel's identity.
    pub params: Vec<(&'static str, Value)>,
    /// Invocations per workgroup, as the source's `@workgroup_size` says.
    pub workgroup: u32,
}

/// A template value: a number (sizes, layout flags) or WGSL text (a type, a directive).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Value(String);

impl From<u32> for Value {
    fn from(v: u32) -> Self {
        Value(v.to_string())
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value(v.to_string())
    }
}

struct Source {
    name: &'static str,
    source: &'static str,
    params: Vec<(&'static str, Value)>,
}

impl KernelSource for Source {
    fn source(&self) -> SourceTemplate {
        self.params
            .iter()
            .fold(SourceTemplate::new(self.source), |t, (k, v)| {
                t.register(*k, v.0.clone())
            })
    }

    fn id(&self) -> KernelId {
        KernelId::new::<Self>().info((self.name, self.params.clone()))
    }

    fn lang(&self) -> &'static str {
        "wgsl"
    }
}

/// Scalars as the shader's uniform struct: 32-bit fields, little-endian pairs per word, padded to
/// 16 bytes as uniform buffers require.
pub fn uniform(fields: &[u32]) -> Vec<u64> {
    let mut words: Vec<u64> = fields
        .chunks(2)
        .map(|c| c[0] as u64 | (c.get(1).copied().unwrap_or(0) as u64) << 32)
        .collect();
    words.resize(words.len().div_ceil(2).max(1) * 2, 0);
    words
}

/// An uninitialised contiguous f32 tensor on `like`'s device.
pub fn empty(like: &CubeTensor, dims: &[usize]) -> CubeTensor {
    let shape = Shape::from(dims.to_vec());
    let n: usize = dims.iter().product();
    CubeTensor::new_contiguous(
        like.client.clone(),
        like.device.clone(),
        shape,
        like.client.empty(n * 4),
        DType::F32,
    )
}

/// A dispatch of `x` × `y` workgroups.
pub fn grid(x: usize, y: usize) -> CubeCount {
    CubeCount::Static(x as u32, y as u32, 1)
}

/// `groups` workgroups of a 1-D problem, folded into two dimensions when over the limit (the
/// shader rebuilds the index from `num_workgroups`).
pub fn folded(groups: usize) -> CubeCount {
    let groups = groups as u32;
    CubeCount::Static(
        groups.min(MAX_GROUPS),
        groups.div_ceil(MAX_GROUPS).max(1),
        1,
    )
}

impl Shader {
    /// Launch on `tensors`' device with the tensors bound 0.. in order and `scalars` after them.
    pub fn launch(self, count: CubeCount, tensors: &[&CubeTensor], scalars: Vec<u64>) {
        let client = tensors[0].client.clone();
        let args = tensors
            .iter()
            .fold(KernelArguments::new(), |a, t| {
                a.with_buffer(t.handle.clone().binding())
            })
            .with_info(MetadataBindingInfo::custom(scalars));
        let kernel = SourceKernel::new(
            Source {
                name: self.name,
                source: self.source,
                params: self.params,
            },
            CubeDim::new_1d(self.workgroup),
        );
        client.launch(Box::new(kernel), count, args);
    }
}
