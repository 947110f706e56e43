//! An experiment as independent units of work: one run per target × method × seed, with a stable
//! id, so a scheduler (Ray, Slurm, a shell loop) can hand each to its own process with
//! `tunelab experiment CONFIG --only ID` and `--collect` the results afterwards.

use std::path::{Path, PathBuf};

use super::config::ExperimentConfig;
use crate::error::{Error, Result};

/// One training run of an experiment: a method on a target with one seed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct RunKey {
    pub target: String,
    pub method: String,
    /// The training seed when the config lists `seeds` (None: the config's single `seed`).
    pub seed: Option<u64>,
}

impl RunKey {
    /// `target/method`, or `target/method/seed-N` for a config with `seeds`: stable across
    /// invocations and machines, and the run's folder under `runs/`.
    pub fn id(&self) -> String {
        match self.seed {
            Some(s) => format!("{}/{}/seed-{s}", self.target, self.method),
            None => format!("{}/{}", self.target, self.method),
        }
    }

    /// Where the run keeps its state and results.
    pub fn dir(&self, out: &Path) -> PathBuf {
        let mut d = out.join("runs").join(&self.target).join(&self.method);
        if let Some(s) = self.seed {
            d = d.join(format!("seed-{s}"));
        }
        d
    }

    /// The seed the run trains with.
    pub fn train_seed(&self, cfg: &ExperimentConfig) -> u64 {
        self.seed.unwrap_or(cfg.seed)
    }
}

/// Every run of `cfg`, in the order a single process runs them (target, method, seed).
pub fn run_keys(cfg: &ExperimentConfig) -> Vec<RunKey> {
    let seeds: Vec<Option<u64>> = if cfg.seeds.is_empty() {
        vec![None]
    } else {
        cfg.seeds.iter().copied().map(Some).collect()
    };
    let mut out = Vec::new();
    for t in &cfg.targets {
        for m in &cfg.methods {
            for &seed in &seeds {
                out.push(RunKey {
                    target: t.name.clone(),
                    method: m.name.clone(),
                    seed,
                });
            }
        }
    }
    out
}

/// The run of `cfg` whose id is `id`, or an error listing the ids there are.
pub fn find(cfg: &ExperimentConfig, id: &str) -> Result<RunKey> {
    let keys = run_keys(cfg);
    let id = id.trim_matches('/');
    if let Some(k) = keys.iter().find(|k| k.id() == id) {
        return Ok(k.clone());
    }
    let shown: Vec<String> = keys.iter().take(8).map(RunKey::id).collect();
    Err(Error::Input(format!(
        "--only: no run `{id}` in experiment `{}`; its {} runs are {}{} (`--plan` lists them all)",
        cfg.name,
        keys.len(),
        shown.join(", "),
        if keys.len() > shown.len() {
            ", …"
        } else {
            ""
        }
    )))
}

/// Device throughput used for the time estimate, and where it came from.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Throughput {
    /// Counted FLOPs per second, in TFLOP/s.
    pub tflops: f64,
    /// `given` (`--tflops`), `finished runs` (device seconds of the runs already done in the
    /// output directory over their FLOPs) or `calibration` (a few training steps of the model
    /// on this device).
    pub source: String,
}

/// A planned run: what it trains and what it needs.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PlannedRun {
    /// Pass to `--only`.
    pub id: String,
    pub target: String,
    pub method: String,
    /// `full` or `lora`.
    pub kind: String,
    pub rank: Option<usize>,
    /// LoRA's module presets or names (empty for full fine-tuning).
    pub modules: Vec<String>,
    pub lr: f64,
    pub seed: u64,
    /// Optimizer steps, and the step of each budget's evaluation.
    pub steps: usize,
    pub budget_steps: Vec<usize>,
    /// Training tokens (sequence positions) over the whole run.
    pub tokens: u64,
    pub trainable_parameters: u64,
    /// Estimated peak device memory (`memory_formula` in the plan), bytes.
    pub memory_bytes: u64,
    /// Counted matmul FLOPs of the training steps and of the evaluations.
    pub train_flops: f64,
    pub eval_flops: f64,
    /// FLOPs ÷ throughput, when a throughput is known.
    pub estimated_seconds: Option<f64>,
    /// Results are already in the output directory.
    pub done: bool,
}

/// Everything `--plan` prints.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Plan {
    pub experiment: String,
    pub base_model: String,
    pub parameters: u64,
    pub device: String,
    pub run_count: usize,
    pub done_count: usize,
    pub seeds: Vec<u64>,
    /// Whether the base model's evaluation is already in the output directory (otherwise the
    /// first run to start does it, under a lock, for all).
    pub base_evaluated: bool,
    pub runs: Vec<PlannedRun>,
    pub total_flops: f64,
    pub throughput: Option<Throughput>,
    /// Device-hours of the runs not yet done, at `throughput`.
    pub estimated_device_hours: Option<f64>,
    /// How `memory_bytes` is estimated.
    pub memory_formula: String,
    /// How FLOPs are counted.
    pub flops_formula: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experiment::config::DEFAULT_TOML;

    #[test]
    fn ids_are_stable_and_found() {
        let cfg = ExperimentConfig::parse(DEFAULT_TOML, "d.toml").unwrap();
        let keys = run_keys(&cfg);
        assert_eq!(keys.len(), cfg.targets.len() * cfg.methods.len());
        assert_eq!(keys[0].id(), "code/full");
        assert_eq!(find(&cfg, "math/lora-r4").unwrap().method, "lora-r4");
        let e = find(&cfg, "math/lora-r5").unwrap_err().to_string();
        assert!(e.contains("math/lora-r5") && e.contains("code/full"), "{e}");

        let seeded =
            ExperimentConfig::parse(&DEFAULT_TOML.replace("seed = 0", "seeds = [0, 1]"), "s")
                .unwrap();
        let keys = run_keys(&seeded);
        assert_eq!(keys.len(), 2 * cfg.targets.len() * cfg.methods.len());
        assert_eq!(keys[1].id(), "code/full/seed-1");
        assert_eq!(
            keys[1].dir(Path::new("o")),
            Path::new("o/runs/code/full/seed-1")
        );
        assert_eq!(keys[1].train_seed(&seeded), 1);
        assert!(
            ExperimentConfig::parse(&DEFAULT_TOML.replace("seed = 0", "seeds = [1, 1]"), "s")
                .unwrap_err()
                .to_string()
                .contains("seeds must not repeat")
        );
    }

    #[test]
    fn grids_expand_into_named_methods() {
        let text = DEFAULT_TOML.replace(
            "[[methods]]\nname = \"full\"\nmethod = \"full\"",
            "[[grids]]\nmethod = \"full\"\nlrs = [1e-3, 2e-3]\n\n[[grids]]\nmethod = \"lora\"\nranks = [16, 64]\nmodules = [\"attention\", \"mlp\", \"q_proj+v_proj\"]\nlrs = [5e-4]\ndropout = 0.05",
        );
        let cfg = ExperimentConfig::parse(&text, "g.toml").unwrap();
        let names: Vec<&str> = cfg.methods.iter().map(|m| m.name.as_str()).collect();
        // The two explicit LoRA methods of the default, then the grids in order.
        assert_eq!(names.len(), 2 + 2 + 6, "{names:?}");
        assert!(names.contains(&"full-lr1e-3"), "{names:?}");
        assert!(names.contains(&"lora-r64-mlp-lr5e-4"), "{names:?}");
        let m = cfg
            .methods
            .iter()
            .find(|m| m.name == "lora-r16-q_proj+v_proj-lr5e-4")
            .unwrap();
        assert_eq!(m.targets, ["q_proj", "v_proj"]);
        assert_eq!((m.rank, m.dropout, m.lr), (16, 0.05, Some(5e-4)));
        assert!(cfg.grids.is_empty());
        let bad = text.replace("ranks = [16, 64]\n", "");
        let e = ExperimentConfig::parse(&bad, "g.toml").unwrap_err();
        assert!(e.to_string().contains("needs ranks"), "{e}");
    }
}
