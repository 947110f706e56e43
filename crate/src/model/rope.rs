//! Rotary position embeddings with transformers' RoPE scalings (`modeling_rope_utils.py`):
//! default, linear, dynamic NTK, Llama 3 and YaRN.

use burn::module::Module;
use burn::tensor::{Device, Tensor, TensorData};

use crate::hf::RopeScaling;
use crate::kernels::Kernels;

/// Rotary tables (`cos`, `sin`, each `[positions, head_dim]`, already multiplied by the
/// scaling's attention factor), angles duplicated over both halves as in HF.
#[derive(Module, Debug)]
pub struct Rope {
    pub cos: Tensor<2>,
    pub sin: Tensor<2>,
    pub theta: f64,
    /// Dynamic NTK's factor (0 for every other scaling): positions past the table are rotated
    /// with frequencies recomputed for the sequence's length, as transformers does.
    pub dynamic_factor: f64,
}

/// Inverse frequencies (`head_dim / 2` of them) and the factor on cos/sin, for a forward pass
/// whose last position is `seq_len - 1` (only dynamic NTK depends on it).
pub fn inv_freq(
    head_dim: usize,
    theta: f64,
    scaling: &RopeScaling,
    max_positions: usize,
    seq_len: usize,
) -> (Vec<f64>, f64) {
    let dim = head_dim as f64;
    let plain = |base: f64| -> Vec<f64> {
        (0..head_dim / 2)
            .map(|i| 1.0 / base.powf((2 * i) as f64 / dim))
            .collect()
    };
    match *scaling {
        RopeScaling::Default => (plain(theta), 1.0),
        RopeScaling::Linear { factor } => (plain(theta).iter().map(|f| f / factor).collect(), 1.0),
        RopeScaling::Dynamic { factor } => {
            let max = max_positions as f64;
            let len = (seq_len as f64).max(max);
            let base = theta * ((factor * len / max) - (factor - 1.0)).powf(dim / (dim - 2.0));
            (plain(base), 1.0)
        }
        RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings: old,
        } => {
            let (low_wavelen, high_wavelen) = (old / low_freq_factor, old / high_freq_factor);
            let freqs = plain(theta)
                .into_iter()
                .map(|f| {
                    let wavelen = 2.0 * std::f64::consts::PI / f;
                    if wavelen < high_wavelen {
                        f
                    } else if wavelen > low_wavelen {
                        f / factor
                    } else {
                        let smooth = (old / wavelen - low_freq_factor)
                            / (high_freq_factor - low_freq_factor);
                        (1.0 - smooth) * f / factor + smooth * f
                    }
                })
                .collect();
            (freqs, 1.0)
        }
        RopeScaling::Yarn {
            factor,
            original_max_position_embeddings: old,
            beta_fast,
            beta_slow,
            attention_factor,
            truncate,
        } => {
            // The dimension at which a frequency completes `rotations` turns over `old` positions.
            let correction = |rotations: f64| {
                dim * (old / (rotations * 2.0 * std::f64::consts::PI)).ln() / (2.0 * theta.ln())
            };
            let (mut low, mut high) = (correction(beta_fast), correction(beta_slow));
            if truncate {
                (low, high) = (low.floor(), high.ceil());
            }
            let (low, mut high) = (low.max(0.0), high.min(dim - 1.0));
            if low == high {
                high += 0.001; // as transformers, against a zero-width ramp
            }
            let freqs = plain(theta)
                .into_iter()
                .enumerate()
                .map(|(i, extrapolation)| {
                    let ramp = ((i as f64 - low) / (high - low)).clamp(0.0, 1.0);
                    let keep = 1.0 - ramp;
                    extrapolation / factor * (1.0 - keep) + extrapolation * keep
                })
                .collect();
            (freqs, attention_factor)
        }
    }
}

/// `cos` and `sin` rows for `positions` (row-major `[positions.len(), head_dim]`).
fn tables(freqs: &[f64], scale: f64, positions: std::ops::Range<usize>) -> (Vec<f32>, Vec<f32>) {
    // f32 angles and an f32 product with the scale, as HF computes them.
    let freqs: Vec<f32> = freqs.iter().map(|&f| f as f32).collect();
    let scale = scale as f32;
    let n = positions.len() * freqs.len() * 2;
    let (mut cos, mut sin) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for p in positions {
        for _half in 0..2 {
            for f in &freqs {
                let a = p as f32 * f;
                cos.push(a.cos() * scale);
                sin.push(a.sin() * scale);
            }
        }
    }
    (cos, sin)
}

impl Rope {
    /// Tables for the first `max_positions` positions.
    pub fn new(
        head_dim: usize,
        theta: f64,
        scaling: &RopeScaling,
        max_positions: usize,
        device: &Device,
    ) -> Self {
        let (freqs, scale) = inv_freq(head_dim, theta, scaling, max_positions, max_positions);
        let (cos, sin) = tables(&freqs, scale, 0..max_positions);
        let shape = [max_positions, head_dim];
        Rope {
            cos: Tensor::from_data(TensorData::new(cos, shape), device),
            sin: Tensor::from_data(TensorData::new(sin, shape), device),
            theta,
            dynamic_factor: match scaling {
                RopeScaling::Dynamic { factor } => *factor,
                _ => 0.0,
            },
        }
    }

    /// Split a projection's output `x` `[batch, seq, heads, head_dim]`, whose first position is
    /// `start`, into rotated heads `[batch, heads, seq, head_dim]`: in one pass with tunelab's
    /// kernels where they apply ([`crate::kernels::rope`]), else with burn's ops.
    pub fn apply(&self, x: Tensor<4>, start: usize, kernels: Kernels) -> Tensor<4> {
        let [_, t, _, d] = x.dims();
        let (cos, sin) = self.rows(start, t, d, &x.device());
        let fused = (kernels == Kernels::Tunelab)
            .then(|| crate::kernels::rope(x.clone(), cos.clone(), sin.clone()))
            .flatten();
        if let Some(y) = fused {
            return y;
        }
        let x = x.swap_dims(1, 2);
        let (cos, sin) = (cos.unsqueeze::<4>(), sin.unsqueeze::<4>());
        let half = d / 2;
        let x1 = x.clone().slice_dim(3, 0..half);
        let x2 = x.clone().slice_dim(3, half..d);
        let rotated = Tensor::cat(vec![x2.neg(), x1], 3);
        x * cos + rotated * sin
    }

    /// The `cos` and `sin` rows `[t, d]` of positions `start..start + t`.
    fn rows(&self, start: usize, t: usize, d: usize, device: &Device) -> (Tensor<2>, Tensor<2>) {
        let rows = self.cos.dims()[0];
        if start + t > rows && self.dynamic_factor > 0.0 {
            // Past the trained length, dynamic NTK recomputes every frequency for this length.
            let scaling = RopeScaling::Dynamic {
                factor: self.dynamic_factor,
            };
            let (freqs, scale) = inv_freq(d, self.theta, &scaling, rows, start + t);
            let (cos, sin) = tables(&freqs, scale, start..start + t);
            (
                Tensor::from_data(TensorData::new(cos, [t, d]), device),
                Tensor::from_data(TensorData::new(sin, [t, d]), device),
            )
        } else {
            (
                self.cos.clone().slice([start..start + t, 0..d]),
                self.sin.clone().slice([start..start + t, 0..d]),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalings_reduce_to_plain_rope_where_they_should() {
        let plain = inv_freq(8, 10000.0, &RopeScaling::Default, 64, 64).0;
        assert!((plain[0] - 1.0).abs() < 1e-12 && (plain[1] - 0.1).abs() < 1e-12);
        let linear = inv_freq(8, 10000.0, &RopeScaling::Linear { factor: 4.0 }, 64, 64).0;
        assert!((linear[1] - 0.025).abs() < 1e-12);
        // Dynamic NTK is plain RoPE up to max_position_embeddings, a larger base past it.
        let dynamic = RopeScaling::Dynamic { factor: 2.0 };
        assert_eq!(inv_freq(8, 10000.0, &dynamic, 64, 10).0, plain);
        let longer = inv_freq(8, 10000.0, &dynamic, 64, 128).0;
        assert!(longer[1] < plain[1] && longer[0] == 1.0);
        // Llama 3 keeps the highest frequency and divides the lowest by the factor.
        let llama3 = RopeScaling::Llama3 {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 100.0,
        };
        let l3 = inv_freq(8, 10000.0, &llama3, 64, 64).0;
        assert_eq!(l3[0], plain[0]);
        assert!((l3[3] - plain[3] / 8.0).abs() < 1e-15);
    }
}
