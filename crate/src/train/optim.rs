//! AdamW and LionW, written out so that their arithmetic is PyTorch's (`torch.optim.AdamW`,
//! `lion_pytorch.Lion`), their state is keyed by Hugging Face parameter names (so a checkpoint
//! resumes exactly and per-group learning rates such as LoRA+ are one argument), and frozen
//! parameters never get state.

use std::collections::BTreeMap;

use burn::tensor::{Device, Tensor, TensorData};

use crate::error::Result;
use crate::kernels::{self, Kernels, StepScalars};
use crate::model::read_f32;

/// Which update rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    AdamW,
    Lion,
}

impl std::str::FromStr for OptimizerKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "adamw" => Ok(Self::AdamW),
            "lion" | "lionw" => Ok(Self::Lion),
            _ => Err(format!("unknown optimizer `{s}`; expected adamw or lion")),
        }
    }
}

/// Optimizer hyper-parameters.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct OptimizerConfig {
    pub kind: OptimizerKind,
    pub beta1: f64,
    pub beta2: f64,
    /// AdamW only.
    pub eps: f64,
    /// Decoupled weight decay (multiplied by the learning rate, as PyTorch).
    pub weight_decay: f64,
}

impl OptimizerConfig {
    /// PyTorch's AdamW defaults (betas 0.9/0.999, eps 1e-8) with the given decay.
    pub fn adamw(weight_decay: f64) -> Self {
        OptimizerConfig {
            kind: OptimizerKind::AdamW,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay,
        }
    }

    /// LionW with the paper's betas (0.9, 0.95).
    pub fn lion(weight_decay: f64) -> Self {
        OptimizerConfig {
            kind: OptimizerKind::Lion,
            beta1: 0.9,
            beta2: 0.95,
            eps: 0.0,
            weight_decay,
        }
    }
}

/// Moments of one parameter, flattened.
#[derive(Clone)]
struct Moments {
    m: Tensor<1>,
    v: Option<Tensor<1>>,
}

/// Optimizer state for a set of named parameters.
#[derive(Clone)]
pub struct Optimizer {
    pub config: OptimizerConfig,
    /// Optimizer steps taken (PyTorch's `step` in the state dict).
    pub steps: u64,
    /// Which kernels run the update on a GPU.
    pub kernels: Kernels,
    state: BTreeMap<String, Moments>,
}

impl Optimizer {
    /// Fresh state; `kernels` runs the update on a GPU.
    pub fn new(config: OptimizerConfig, kernels: Kernels) -> Self {
        Optimizer {
            config,
            steps: 0,
            kernels,
            state: BTreeMap::new(),
        }
    }

    /// Start a new step: call once before the `update`s of that step.
    pub fn begin_step(&mut self) {
        self.steps += 1;
    }

    /// This step's scalars at learning rate `lr`, as f32 (what burn's scalar ops receive).
    fn scalars(&self, lr: f64) -> StepScalars {
        let c = &self.config;
        let t = self.steps as i32;
        let f = |x: f64| x as f32;
        let (sqrt_bias2, eps, step_size) = match c.kind {
            OptimizerKind::AdamW => (
                (1.0 - c.beta2.powi(t)).sqrt(),
                c.eps,
                lr / (1.0 - c.beta1.powi(t)),
            ),
            OptimizerKind::Lion => (1.0, 0.0, lr),
        };
        StepScalars {
            decay: f(1.0 - lr * c.weight_decay),
            beta1: f(c.beta1),
            one_minus_beta1: f(1.0 - c.beta1),
            beta2: f(c.beta2),
            one_minus_beta2: f(1.0 - c.beta2),
            sqrt_bias2: f(sqrt_bias2),
            eps: f(eps),
            step_size: f(step_size),
        }
    }

    /// The updated value of parameter `name` given its gradient (both without autodiff), the
    /// gradient first scaled by `clip` `[1]` (the global-norm clip scale) when given.
    ///
    /// With [`Kernels::Tunelab`] on a GPU one kernel does the whole update; otherwise burn's
    /// elementwise ops do, in the same order and with the same f32 scalars.
    pub fn update<const D: usize>(
        &mut self,
        name: &str,
        param: Tensor<D>,
        grad: Tensor<D>,
        clip: Option<&Tensor<1>>,
        lr: f64,
    ) -> Tensor<D> {
        let shape = param.dims();
        let n: usize = shape.iter().product();
        let g = grad.reshape([n]);
        let p = param.reshape([n]);
        let s = self.scalars(lr);
        let fused = self.kernels == Kernels::Tunelab;
        let prev = self.state.get(name).cloned();
        let zeros = || Tensor::<1>::zeros([n], &g.device());
        let clipped = |g: Tensor<1>| match clip {
            Some(c) => g * c.clone(),
            None => g,
        };
        let decayed = |p: Tensor<1>| {
            if self.config.weight_decay != 0.0 {
                p.mul_scalar(s.decay)
            } else {
                p
            }
        };
        let (p, moments) = match self.config.kind {
            OptimizerKind::AdamW => {
                let (m0, v0) = match prev {
                    Some(Moments { m, v: Some(v) }) => (m, v),
                    _ => (zeros(), zeros()),
                };
                let kernel = fused
                    .then(|| {
                        kernels::adamw_step(
                            p.clone(),
                            g.clone(),
                            [m0.clone(), v0.clone()],
                            clip.cloned(),
                            s,
                        )
                    })
                    .flatten();
                match kernel {
                    Some((p, m, v)) => (p, Moments { m, v: Some(v) }),
                    None => {
                        let g = clipped(g);
                        let m = m0.mul_scalar(s.beta1) + g.clone().mul_scalar(s.one_minus_beta1);
                        let v = v0.mul_scalar(s.beta2) + g.square().mul_scalar(s.one_minus_beta2);
                        let denom = v.clone().sqrt().div_scalar(s.sqrt_bias2).add_scalar(s.eps);
                        let p = decayed(p) - (m.clone() / denom).mul_scalar(s.step_size);
                        (p, Moments { m, v: Some(v) })
                    }
                }
            }
            OptimizerKind::Lion => {
                let m0 = prev.map(|s| s.m).unwrap_or_else(zeros);
                let kernel = fused
                    .then(|| kernels::lion_step(p.clone(), g.clone(), m0.clone(), clip.cloned(), s))
                    .flatten();
                match kernel {
                    Some((p, m)) => (p, Moments { m, v: None }),
                    None => {
                        let g = clipped(g);
                        let update = (m0.clone().mul_scalar(s.beta1)
                            + g.clone().mul_scalar(s.one_minus_beta1))
                        .sign();
                        let p = decayed(p) - update.mul_scalar(s.step_size);
                        let m = m0.mul_scalar(s.beta2) + g.mul_scalar(s.one_minus_beta2);
                        (p, Moments { m, v: None })
                    }
                }
            }
        };
        self.state.insert(name.to_string(), moments);
        p.reshape(shape)
    }

    /// The state as named flat tensors (`exp_avg.<name>`, `exp_avg_sq.<name>`), for checkpoints.
    pub async fn export(&self) -> Result<Vec<(String, Vec<f32>)>> {
        let mut out = Vec::new();
        for (name, s) in &self.state {
            out.push((format!("exp_avg.{name}"), read_f32(s.m.clone()).await?));
            if let Some(v) = &s.v {
                out.push((format!("exp_avg_sq.{name}"), read_f32(v.clone()).await?));
            }
        }
        Ok(out)
    }

    /// Restore state written by [`Optimizer::export`].
    pub fn import(&mut self, steps: u64, tensors: Vec<(String, Vec<f32>)>, device: &Device) {
        self.steps = steps;
        self.state.clear();
        let mut vs = BTreeMap::new();
        for (key, values) in tensors {
            let n = values.len();
            let t = Tensor::<1>::from_data(TensorData::new(values, [n]), device);
            if let Some(name) = key.strip_prefix("exp_avg_sq.") {
                vs.insert(name.to_string(), t);
            } else if let Some(name) = key.strip_prefix("exp_avg.") {
                self.state
                    .insert(name.to_string(), Moments { m: t, v: None });
            }
        }
        for (name, v) in vs {
            if let Some(s) = self.state.get_mut(&name) {
                s.v = Some(v);
            }
        }
    }

    /// Number of parameters with state (the trainable ones that received gradients).
    pub fn tracked(&self) -> usize {
        self.state.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(cfg: OptimizerConfig, grads: &[[f32; 3]], lr: f64) -> Vec<f32> {
        let device = Device::flex();
        let mut opt = Optimizer::new(cfg, Kernels::default());
        let mut p = Tensor::<1>::from_floats([1.0, -2.0, 3.0], &device);
        for g in grads {
            opt.begin_step();
            p = opt.update("w", p, Tensor::<1>::from_floats(*g, &device), None, lr);
        }
        pollster::block_on(read_f32(p)).unwrap()
    }

    #[test]
    fn lion_matches_the_reference_update() {
        // lion-pytorch with betas (0.9, 0.99), weight decay 0.1, lr 0.1 (values as in burn's
        // own Lion test, computed by hand).
        let mut cfg = OptimizerConfig::lion(0.1);
        cfg.beta2 = 0.99;
        let p = run(cfg, &[[0.5, -0.25, 0.0], [-0.1, 0.5, -2.0]], 0.1);
        for (a, b) in p.iter().zip([0.9811, -1.9612, 3.0403]) {
            assert!((a - b).abs() < 1e-5, "{p:?}");
        }
    }

    #[test]
    fn adamw_matches_torch() {
        // torch.optim.AdamW([p], lr=0.1, weight_decay=0.01), two steps with these gradients.
        let p = run(
            OptimizerConfig::adamw(0.01),
            &[[0.5, -0.25, 0.0], [-0.1, 0.5, -2.0]],
            0.1,
        );
        let expected = [0.846_998_45, -1.932_712_4, 3.068_416_8];
        for (a, b) in p.iter().zip(expected) {
            assert!((a - b).abs() < 1e-5, "{p:?}");
        }
    }
}
