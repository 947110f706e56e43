//! AdamW and LionW, written out so that their arithmetic is PyTorch's (`torch.optim.AdamW`,
//! `lion_pytorch.Lion`), their state is keyed by Hugging Face parameter names (so a checkpoint
//! resumes exactly and per-group learning rates such as LoRA+ are one argument), and frozen
//! parameters never get state.

use std::collections::BTreeMap;

use burn::tensor::{DType, Device, Tensor, TensorData};

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

/// Trainable tensors of at most this many elements are updated as one flat group per learning-rate
/// class and rate on a GPU ([`Optimizer::step`]): copying a tensor this small costs less than a
/// launch.
pub const GROUPED_MAX_ELEMENTS: usize = 1 << 18;

/// One trainable tensor in [`Optimizer::step`]: flat, without autodiff.
pub struct Item {
    /// The Hugging Face parameter name, which keys its state.
    pub name: String,
    pub param: Tensor<1>,
    pub grad: Tensor<1>,
    pub lr: f64,
    /// Its learning-rate class (the trainer: 1 for LoRA+'s `lora_B`, 0 otherwise): small
    /// tensors are updated together by class and rate, so two classes stay apart even at a step
    /// where their rates coincide (0 at the start of a warmup).
    pub class: usize,
}

/// Small tensors updated together (those sharing a learning rate): their moments in one flat
/// buffer of `layout`.
#[derive(Clone)]
struct Group {
    names: Vec<String>,
    layout: kernels::FlatLayout,
    moments: Moments,
}

impl Group {
    /// Each member's moments, as views of the group's.
    fn per_name(&self) -> Vec<(String, Moments)> {
        let ms = self.layout.split(&self.moments.m);
        let vs = self.moments.v.as_ref().map(|v| self.layout.split(v));
        let names = self.names.iter().cloned();
        names
            .zip(ms)
            .enumerate()
            .map(|(k, (name, m))| {
                let v = vs.as_ref().map(|vs| vs[k].clone());
                (name, Moments { m, v })
            })
            .collect()
    }
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
    groups: Vec<Group>,
}

impl Optimizer {
    /// Fresh state; `kernels` runs the update on a GPU.
    pub fn new(config: OptimizerConfig, kernels: Kernels) -> Self {
        Optimizer {
            config,
            steps: 0,
            kernels,
            state: BTreeMap::new(),
            groups: Vec::new(),
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
    /// With [`Kernels::Tunelab`] on a GPU or the native CPU backend one kernel does the whole
    /// update; otherwise burn's elementwise ops do, in the same order and with the same f32
    /// scalars. For a tensor on its own: the state it keeps is apart from the groups
    /// [`Optimizer::step`] keeps, so use one or the other for a name.
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
        let prev = self.state.remove(name);
        let (p, moments) = self.update_flat(prev, param.reshape([n]), grad.reshape([n]), clip, lr);
        self.state.insert(name.to_string(), moments);
        p.reshape(shape)
    }

    /// One step over every trainable tensor (flat, without autodiff) with its gradient and
    /// learning rate: the new values in order, and the global gradient norm before clipping.
    /// With `clip`, gradients are first scaled by min(1, clip / (norm + 1e-6)) (PyTorch's
    /// `clip_grad_norm_`), computed on the device.
    ///
    /// With [`Kernels::Tunelab`] on a GPU, the tensors of at most [`GROUPED_MAX_ELEMENTS`]
    /// elements are updated together, one flat buffer per learning-rate class and rate: a few copy
    /// launches and one update, where one update each costs a launch per tensor (LoRA's hundreds
    /// of factors).
    pub fn step(&mut self, items: Vec<Item>, clip: Option<f64>) -> (Vec<Tensor<1>>, Tensor<1>) {
        self.begin_step();
        let grouped = |it: &Item| {
            self.kernels == Kernels::Tunelab
                && kernels::on_gpu(&it.param.device())
                && it.param.dtype() == DType::F32
                && (1..=GROUPED_MAX_ELEMENTS).contains(&it.param.dims()[0])
        };
        // Members of each group, by class and learning rate (bit for bit), in the items' order.
        let mut members: Vec<Vec<usize>> = Vec::new();
        let mut singles = Vec::new();
        for (i, it) in items.iter().enumerate() {
            let same = |g: &&mut Vec<usize>| {
                let first = &items[g[0]];
                first.class == it.class && first.lr.to_bits() == it.lr.to_bits()
            };
            if !grouped(it) {
                singles.push(i);
            } else if let Some(g) = members.iter_mut().find(same) {
                g.push(i);
            } else {
                members.push(vec![i]);
            }
        }
        self.regroup(&items, &members);
        let flat_grads: Vec<Tensor<1>> = self
            .groups
            .iter()
            .zip(&members)
            .map(|(g, idx)| {
                let grads: Vec<_> = idx.iter().map(|&i| items[i].grad.clone()).collect();
                kernels::gather(&grads, &g.layout)
            })
            .collect();
        let norm = singles
            .iter()
            .map(|&i| &items[i].grad)
            .chain(&flat_grads)
            .map(|g| g.clone().square().sum())
            .reduce(|a, b| a + b)
            .expect("at least one trainable tensor")
            .sqrt();
        let coef = clip.map(|max| {
            norm.clone()
                .add_scalar(1e-6)
                .recip()
                .mul_scalar(max)
                .clamp_max(1.0)
        });
        let mut out: Vec<Option<Tensor<1>>> = vec![None; items.len()];
        for (k, (idx, g)) in members.iter().zip(flat_grads).enumerate() {
            let params: Vec<_> = idx.iter().map(|&i| items[i].param.clone()).collect();
            let flat = kernels::gather(&params, &self.groups[k].layout);
            let prev = Some(self.groups[k].moments.clone());
            // Every member has the group's rate.
            let lr = items[idx[0]].lr;
            let (p, moments) = self.update_flat(prev, flat, g, coef.as_ref(), lr);
            let group = &mut self.groups[k];
            group.moments = moments;
            for (&i, t) in idx.iter().zip(group.layout.split(&p)) {
                out[i] = Some(t);
            }
        }
        for i in singles {
            let it = &items[i];
            let prev = self.state.remove(&it.name);
            let (p, moments) = self.update_flat(
                prev,
                it.param.clone(),
                it.grad.clone(),
                coef.as_ref(),
                it.lr,
            );
            self.state.insert(it.name.clone(), moments);
            out[i] = Some(p);
        }
        let out = out
            .into_iter()
            .map(|t| t.expect("every item updated"))
            .collect();
        (out, norm)
    }

    /// Make `self.groups` the groups of `items` that `members` lists, keeping the moments of
    /// those already there: a group that differs (another membership, after a resume that put
    /// every moment back per name) hands its moments back per name first, and a new group
    /// gathers its members' moments (zero for those without).
    fn regroup(&mut self, items: &[Item], members: &[Vec<usize>]) {
        // By names only: a schedule changes the learning rates at every step, not who shares one
        // (classes keep apart tensors whose rates coincide at a step).
        let wanted: Vec<Vec<String>> = members
            .iter()
            .map(|m| m.iter().map(|&i| items[i].name.clone()).collect())
            .collect();
        if self.groups.iter().map(|g| &g.names).eq(wanted.iter()) {
            return;
        }
        for g in std::mem::take(&mut self.groups) {
            self.state.extend(g.per_name());
        }
        let adam = self.config.kind == OptimizerKind::AdamW;
        for (names, idx) in wanted.into_iter().zip(members) {
            let layout =
                kernels::FlatLayout::new(idx.iter().map(|&i| items[i].param.dims()[0]).collect());
            let device = items[idx[0]].param.device();
            let prev: Vec<Option<Moments>> = names.iter().map(|n| self.state.remove(n)).collect();
            let flat = |pick: &dyn Fn(&Moments) -> Option<Tensor<1>>| {
                if prev.iter().all(Option::is_none) {
                    return Tensor::zeros([layout.total()], &device);
                }
                let parts: Vec<Tensor<1>> = prev
                    .iter()
                    .zip(layout.lens())
                    .map(|(p, &n)| {
                        p.as_ref()
                            .and_then(pick)
                            .unwrap_or_else(|| Tensor::zeros([n], &device))
                    })
                    .collect();
                kernels::gather(&parts, &layout)
            };
            let m = flat(&|p| Some(p.m.clone()));
            let v = adam.then(|| flat(&|p| p.v.clone()));
            self.groups.push(Group {
                names,
                layout,
                moments: Moments { m, v },
            });
        }
    }

    /// One update of flat `p` by gradient `g` from moments `prev` (zero when None): the new
    /// value and moments.
    fn update_flat(
        &self,
        prev: Option<Moments>,
        p: Tensor<1>,
        g: Tensor<1>,
        clip: Option<&Tensor<1>>,
        lr: f64,
    ) -> (Tensor<1>, Moments) {
        let n = p.dims()[0];
        let s = self.scalars(lr);
        let fused = self.kernels == Kernels::Tunelab;
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
        match self.config.kind {
            OptimizerKind::AdamW => {
                let (m0, v0) = match prev {
                    Some(Moments { m, v: Some(v) }) => (m, v),
                    _ => (zeros(), zeros()),
                };
                // The moments go to the kernel by value: on the CPU it overwrites them in place.
                if fused && kernels::takes_step(&[&p, &g, &m0, &v0]) {
                    let (p, m, v) = kernels::adamw_step(p, g, [m0, v0], clip.cloned(), s);
                    (p, Moments { m, v: Some(v) })
                } else {
                    let g = clipped(g);
                    let m = m0.mul_scalar(s.beta1) + g.clone().mul_scalar(s.one_minus_beta1);
                    let v = v0.mul_scalar(s.beta2) + g.square().mul_scalar(s.one_minus_beta2);
                    let denom = v.clone().sqrt().div_scalar(s.sqrt_bias2).add_scalar(s.eps);
                    let p = decayed(p) - (m.clone() / denom).mul_scalar(s.step_size);
                    (p, Moments { m, v: Some(v) })
                }
            }
            OptimizerKind::Lion => {
                let m0 = prev.map(|s| s.m).unwrap_or_else(zeros);
                if fused && kernels::takes_step(&[&p, &g, &m0]) {
                    let (p, m) = kernels::lion_step(p, g, m0, clip.cloned(), s);
                    (p, Moments { m, v: None })
                } else {
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
    }

    /// The state as named flat tensors (`exp_avg.<name>`, `exp_avg_sq.<name>`), for checkpoints.
    pub async fn export(&self) -> Result<Vec<(String, Vec<f32>)>> {
        let mut all = self.state.clone();
        for g in &self.groups {
            all.extend(g.per_name());
        }
        let mut out = Vec::new();
        for (name, s) in &all {
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
        self.groups.clear();
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
        self.state.len() + self.groups.iter().map(|g| g.names.len()).sum::<usize>()
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
