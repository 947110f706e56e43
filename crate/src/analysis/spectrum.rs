//! Spectra of weight changes: how far from low rank is fine-tuning? For every block weight
//! matrix, singular values of W_base, W_ft and ΔW = W_ft − W_base, and the rank needed to
//! explain a fraction of the variance (σ² energy, tunelab's reading of the paper), next to a
//! Gaussian baseline. For a LoRA adapter, ΔW = scale · B A is analysed through the QR factors
//! of B and Aᵀ, so no dense d × d SVD is needed and the rank is at most r.

use std::collections::BTreeMap;

use faer::Mat;

use crate::error::{Error, Result};
use crate::model::{CausalLm, read_f32};
use crate::rng::SplitMix64;

/// Settings of the analysis.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SpectrumOptions {
    /// Fraction of σ² energy the rank must explain, in (0, 1].
    pub threshold: f64,
    /// Only matrices whose module name ends with one of these (`q_proj`, `c_fc`); all if empty.
    pub modules: Vec<String>,
    /// Scale c of the Gaussian baseline W_base + c·N(0, 1).
    pub noise_scale: f64,
    pub seed: u64,
}

impl Default for SpectrumOptions {
    fn default() -> Self {
        SpectrumOptions {
            threshold: 0.9,
            modules: Vec::new(),
            noise_scale: 0.01,
            seed: 0,
        }
    }
}

impl SpectrumOptions {
    /// Reject a threshold outside (0, 1].
    pub fn validate(&self) -> Result<()> {
        if !(self.threshold > 0.0 && self.threshold <= 1.0) {
            return Err(Error::setting(
                "threshold",
                format!("must be in (0, 1], got {}", self.threshold),
            ));
        }
        Ok(())
    }
}

/// The spectra of one weight matrix.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MatrixSpectrum {
    /// Module path, e.g. `model.layers.3.mlp.up_proj`.
    pub module: String,
    /// Short module name (`up_proj`, `attn.c_proj`).
    pub kind: String,
    pub layer: Option<usize>,
    /// `attention` or `mlp`.
    pub block: String,
    /// `[out, in]` (nn.Linear convention).
    pub shape: [usize; 2],
    pub sv_delta: Vec<f64>,
    pub sv_base: Option<Vec<f64>>,
    pub sv_ft: Option<Vec<f64>>,
    /// Ranks needed for the threshold (σ² energy).
    pub rank_delta: usize,
    pub rank_base: Option<usize>,
    pub rank_ft: Option<usize>,
    /// Gaussian baseline: rank of c·N(0,1) and of W_base + c·N(0,1).
    pub rank_noise: Option<usize>,
    pub rank_base_plus_noise: Option<usize>,
}

/// Smallest k with Σ_{i≤k} σ_i² / Σ σ_i² ≥ threshold (0 for an all-zero matrix).
pub fn rank_for(sv: &[f64], threshold: f64) -> usize {
    let total: f64 = sv.iter().map(|s| s * s).sum();
    if total == 0.0 {
        return 0;
    }
    let mut acc = 0.0;
    for (i, s) in sv.iter().enumerate() {
        acc += s * s;
        if acc / total >= threshold - 1e-12 {
            return i + 1;
        }
    }
    sv.len()
}

/// Cumulative explained variance Σ_{i≤k} σ_i² / Σ σ_i² for k = 1..n.
pub fn explained_variance(sv: &[f64]) -> Vec<f64> {
    let total: f64 = sv.iter().map(|s| s * s).sum::<f64>().max(f64::MIN_POSITIVE);
    let mut acc = 0.0;
    sv.iter()
        .map(|s| {
            acc += s * s;
            acc / total
        })
        .collect()
}

/// Singular values (descending) of a row-major `rows × cols` f32 matrix, accumulated in f64.
pub fn singular_values(rows: usize, cols: usize, data: &[f32]) -> Result<Vec<f64>> {
    let m = Mat::<f64>::from_fn(rows, cols, |i, j| data[i * cols + j] as f64);
    m.singular_values()
        .map_err(|e| Error::Input(format!("SVD did not converge: {e:?}")))
}

/// Singular values of `scale · B A` with `b` `[out, r]` and `a` `[r, in]` (row-major), from
/// the QR factors: B = Q_B R_B, Aᵀ = Q_A R_A ⇒ B A = Q_B (R_B R_Aᵀ) Q_Aᵀ, so the spectrum is
/// that of the r × r matrix scale · R_B R_Aᵀ. Returns r values.
pub fn low_rank_singular_values(
    b: &[f32],
    a: &[f32],
    out: usize,
    r: usize,
    inp: usize,
    scale: f64,
) -> Result<Vec<f64>> {
    let bm = Mat::<f64>::from_fn(out, r, |i, j| b[i * r + j] as f64);
    let at = Mat::<f64>::from_fn(inp, r, |i, j| a[j * inp + i] as f64);
    let rb = bm.qr().thin_R().to_owned();
    let ra = at.qr().thin_R().to_owned();
    let core = (&rb * ra.transpose()) * faer::Scale(scale);
    core.singular_values()
        .map_err(|e| Error::Input(format!("SVD did not converge: {e:?}")))
}

/// `attention` or `mlp` for a module path.
fn block_of(path: &str) -> &'static str {
    if path.contains(".mlp.") {
        "mlp"
    } else {
        "attention"
    }
}

/// Layer index and short name from a module path.
fn describe(path: &str) -> (Option<usize>, String) {
    let parts: Vec<&str> = path.split('.').collect();
    let layer_pos = parts.iter().position(|p| p.parse::<usize>().is_ok());
    let layer = layer_pos.and_then(|i| parts[i].parse().ok());
    let kind = match layer_pos {
        Some(i) if i + 1 < parts.len() => {
            let rest = &parts[i + 1..];
            // GPT-2 has c_proj in both blocks: keep the block in the name.
            if rest.last() == Some(&"c_proj") {
                rest.join(".")
            } else {
                rest.last().unwrap_or(&"").to_string()
            }
        }
        _ => parts.last().unwrap_or(&"").to_string(),
    };
    (layer, kind)
}

/// A block weight matrix read back to the host, in our `[in, out]` layout.
struct HostMatrix {
    path: String,
    rows: usize,
    cols: usize,
    data: Vec<f32>,
}

async fn block_matrices(model: &CausalLm, modules: &[String]) -> Result<Vec<HostMatrix>> {
    let mut m = model.clone();
    let mut pending = Vec::new();
    m.for_each_linear(&mut |path, lin| {
        if path.starts_with("lm_head") {
            return;
        }
        if !modules.is_empty() && !modules.iter().any(|s| path.ends_with(s.as_str())) {
            return;
        }
        pending.push((path.to_string(), lin.weight.val()));
    });
    let mut out = Vec::with_capacity(pending.len());
    for (path, t) in pending {
        let [rows, cols] = t.dims();
        out.push(HostMatrix {
            path,
            rows,
            cols,
            data: read_f32(t.inner()).await?,
        });
    }
    Ok(out)
}

/// Standard normal samples (Box–Muller on SplitMix64; the same on every platform).
fn gaussian(n: usize, rng: &mut SplitMix64) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let u1 = rng.next_f64().max(f64::MIN_POSITIVE);
            let u2 = rng.next_f64();
            ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
        })
        .collect()
}

/// Run `f` over `items` on all cores natively (one thread in the browser).
fn par_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> Result<R> + Sync) -> Result<Vec<R>> {
    #[cfg(not(target_arch = "wasm32"))]
    {
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(items.len().max(1));
        let chunk = items.len().div_ceil(threads.max(1)).max(1);
        let results: Vec<Result<Vec<R>>> = std::thread::scope(|s| {
            let handles: Vec<_> = items
                .chunks(chunk)
                .map(|c| s.spawn(|| c.iter().map(&f).collect::<Result<Vec<R>>>()))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("analysis thread panicked"))
                .collect()
        });
        let mut out = Vec::with_capacity(items.len());
        for r in results {
            out.extend(r?);
        }
        Ok(out)
    }
    #[cfg(target_arch = "wasm32")]
    {
        items.iter().map(f).collect()
    }
}

/// Compare a fine-tuned checkpoint with its base, matrix by matrix.
pub async fn compare_checkpoints(
    base: &CausalLm,
    finetuned: &CausalLm,
    opts: &SpectrumOptions,
) -> Result<Vec<MatrixSpectrum>> {
    opts.validate()?;
    check_same_architecture(base, finetuned)?;
    let b = block_matrices(base, &opts.modules).await?;
    let f = block_matrices(finetuned, &opts.modules).await?;
    if b.is_empty() {
        return Err(Error::setting(
            "modules",
            format!("{:?} selects no weight matrix of this model", opts.modules),
        ));
    }
    let pairs: Vec<(usize, &HostMatrix, &HostMatrix)> = b
        .iter()
        .zip(&f)
        .enumerate()
        .map(|(i, (x, y))| (i, x, y))
        .collect();
    par_map(&pairs, |&(i, base, ft)| {
        // Δ in f64 from the two f32 matrices, as the reference computes it.
        let dm = Mat::<f64>::from_fn(base.rows, base.cols, |r, c| {
            ft.data[r * base.cols + c] as f64 - base.data[r * base.cols + c] as f64
        });
        let sv_delta = dm
            .singular_values()
            .map_err(|e| Error::Input(format!("SVD did not converge: {e:?}")))?;
        let sv_base = singular_values(base.rows, base.cols, &base.data)?;
        let sv_ft = singular_values(ft.rows, ft.cols, &ft.data)?;
        let mut rng = SplitMix64(opts.seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let noise: Vec<f32> = gaussian(base.data.len(), &mut rng)
            .into_iter()
            .map(|g| g * opts.noise_scale as f32)
            .collect();
        let noisy: Vec<f32> = base.data.iter().zip(&noise).map(|(w, n)| w + n).collect();
        let t = opts.threshold;
        let (layer, kind) = describe(&base.path);
        Ok(MatrixSpectrum {
            module: base.path.clone(),
            kind,
            layer,
            block: block_of(&base.path).into(),
            shape: [base.cols, base.rows],
            rank_delta: rank_for(&sv_delta, t),
            rank_base: Some(rank_for(&sv_base, t)),
            rank_ft: Some(rank_for(&sv_ft, t)),
            rank_noise: Some(rank_for(&singular_values(base.rows, base.cols, &noise)?, t)),
            rank_base_plus_noise: Some(rank_for(
                &singular_values(base.rows, base.cols, &noisy)?,
                t,
            )),
            sv_delta,
            sv_base: Some(sv_base),
            sv_ft: Some(sv_ft),
        })
    })
}

/// Spectra of the LoRA adapters attached to `model` (ΔW = scale · B A per adapted module).
pub async fn adapter_spectra(
    model: &CausalLm,
    opts: &SpectrumOptions,
) -> Result<Vec<MatrixSpectrum>> {
    opts.validate()?;
    let mut m = model.clone();
    let mut pending = Vec::new();
    m.for_each_linear(&mut |path, lin| {
        let wanted =
            opts.modules.is_empty() || opts.modules.iter().any(|s| path.ends_with(s.as_str()));
        if let (Some(l), true) = (&lin.lora, wanted) {
            pending.push((path.to_string(), l.a.val(), l.b.val(), l.scaling));
        }
    });
    if pending.is_empty() {
        return Err(Error::Input(
            "the adapter has no LoRA weights on the selected modules".into(),
        ));
    }
    let mut host = Vec::new();
    for (path, a, b, scale) in pending {
        // Ours: a [in, r], b [r, out]; PEFT: A = aᵀ [r, in], B = bᵀ [out, r].
        let [inp, r] = a.dims();
        let out = b.dims()[1];
        let a_peft = read_f32(a.inner().transpose()).await?;
        let b_peft = read_f32(b.inner().transpose()).await?;
        host.push((path, a_peft, b_peft, inp, r, out, scale));
    }
    par_map(&host, |(path, a, b, inp, r, out, scale)| {
        let sv = low_rank_singular_values(b, a, *out, *r, *inp, *scale)?;
        let (layer, kind) = describe(path);
        Ok(MatrixSpectrum {
            module: path.clone(),
            kind,
            layer,
            block: block_of(path).into(),
            shape: [*out, *inp],
            rank_delta: rank_for(&sv, opts.threshold),
            sv_delta: sv,
            sv_base: None,
            sv_ft: None,
            rank_base: None,
            rank_ft: None,
            rank_noise: None,
            rank_base_plus_noise: None,
        })
    })
}

/// Fail with the first tensor whose name or shape differs between the two models.
pub fn check_same_architecture(base: &CausalLm, other: &CausalLm) -> Result<()> {
    let shapes = |m: &CausalLm| {
        let mut m = m.clone();
        let mut v = Vec::new();
        m.for_each_param(&mut |name, p| v.push((name.to_string(), p.hf_shape())));
        v
    };
    let (a, b) = (shapes(base), shapes(other));
    for i in 0..a.len().max(b.len()) {
        match (a.get(i), b.get(i)) {
            (Some(x), Some(y)) if x == y => {}
            (Some(x), Some(y)) => {
                return Err(Error::Input(format!(
                    "the checkpoints differ at tensor `{}` {:?} vs `{}` {:?}: not the same architecture",
                    x.0, x.1, y.0, y.1
                )));
            }
            (Some(x), None) | (None, Some(x)) => {
                return Err(Error::Input(format!(
                    "tensor `{}` exists in only one of the checkpoints: not the same architecture",
                    x.0
                )));
            }
            (None, None) => unreachable!("i < max len"),
        }
    }
    Ok(())
}

/// Grouped summaries, as the paper plots them.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SpectrumSummary {
    pub threshold: f64,
    pub matrices: usize,
    /// kind → rank of ΔW per layer (in layer order).
    pub rank_by_kind: BTreeMap<String, Vec<(usize, usize)>>,
    pub mean_rank_attention: f64,
    pub mean_rank_mlp: f64,
    /// Mean rank / full rank (min(out, in)), attention and MLP.
    pub mean_rank_fraction_attention: f64,
    pub mean_rank_fraction_mlp: f64,
    /// Mean rank in the first and last layers vs the layers between them.
    pub mean_rank_first_last: f64,
    pub mean_rank_middle: Option<f64>,
    /// Mean rank of the Gaussian baseline c·N(0,1), when computed.
    pub mean_rank_noise: Option<f64>,
}

/// Summarise spectra.
pub fn summarize(spectra: &[MatrixSpectrum], threshold: f64) -> SpectrumSummary {
    let mean = |v: Vec<f64>| {
        if v.is_empty() {
            0.0
        } else {
            v.iter().sum::<f64>() / v.len() as f64
        }
    };
    let pick = |block: &str, frac: bool| {
        mean(
            spectra
                .iter()
                .filter(|s| s.block == block)
                .map(|s| {
                    if frac {
                        s.rank_delta as f64 / s.shape[0].min(s.shape[1]) as f64
                    } else {
                        s.rank_delta as f64
                    }
                })
                .collect(),
        )
    };
    let mut by_kind: BTreeMap<String, Vec<(usize, usize)>> = BTreeMap::new();
    for s in spectra {
        by_kind
            .entry(s.kind.clone())
            .or_default()
            .push((s.layer.unwrap_or(0), s.rank_delta));
    }
    let layers: Vec<usize> = spectra.iter().filter_map(|s| s.layer).collect();
    let (first, last) = (layers.iter().min().copied(), layers.iter().max().copied());
    let edge = |s: &&MatrixSpectrum| s.layer == first || s.layer == last;
    let middle: Vec<f64> = spectra
        .iter()
        .filter(|s| !edge(s))
        .map(|s| s.rank_delta as f64)
        .collect();
    let noise: Vec<f64> = spectra
        .iter()
        .filter_map(|s| s.rank_noise.map(|r| r as f64))
        .collect();
    SpectrumSummary {
        threshold,
        matrices: spectra.len(),
        rank_by_kind: by_kind,
        mean_rank_attention: pick("attention", false),
        mean_rank_mlp: pick("mlp", false),
        mean_rank_fraction_attention: pick("attention", true),
        mean_rank_fraction_mlp: pick("mlp", true),
        mean_rank_first_last: mean(
            spectra
                .iter()
                .filter(edge)
                .map(|s| s.rank_delta as f64)
                .collect(),
        ),
        mean_rank_middle: (!middle.is_empty()).then(|| mean(middle)),
        mean_rank_noise: (!noise.is_empty()).then(|| mean(noise)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rank_is_the_smallest_k_reaching_the_energy_fraction() {
        // energies 9, 4, 1 of 14: 9/14 = 0.64, 13/14 = 0.93
        let sv = [3.0, 2.0, 1.0];
        assert_eq!(rank_for(&sv, 0.5), 1);
        assert_eq!(rank_for(&sv, 0.9), 2);
        assert_eq!(rank_for(&sv, 1.0), 3);
        assert_eq!(rank_for(&[0.0, 0.0], 0.9), 0);
    }

    #[test]
    fn low_rank_route_equals_dense_svd() {
        let mut rng = SplitMix64(3);
        let (out, r, inp) = (12, 3, 9);
        let b = gaussian(out * r, &mut rng);
        let a = gaussian(r * inp, &mut rng);
        let mut dense = vec![0f32; out * inp];
        for i in 0..out {
            for j in 0..inp {
                dense[i * inp + j] =
                    2.0 * (0..r).map(|k| b[i * r + k] * a[k * inp + j]).sum::<f32>();
            }
        }
        let full = singular_values(out, inp, &dense).unwrap();
        let low = low_rank_singular_values(&b, &a, out, r, inp, 2.0).unwrap();
        for k in 0..r {
            assert!(
                (full[k] - low[k]).abs() < 1e-4 * full[0],
                "{full:?} {low:?}"
            );
        }
        assert!(full[r] < 1e-5 * full[0]);
    }
}
