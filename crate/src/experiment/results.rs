//! What an experiment measured: the base model's scores, one point per method × budget, one
//! record per training run, timings and the paper's findings checked against the numbers.

use std::collections::BTreeMap;

use super::config::{BudgetUnit, ExperimentConfig, ForgettingMetric};

/// Key of the forgetting score: mean length-normalised accuracy over the multiple-choice
/// forgetting evals (higher = more of the source domain kept).
pub const FORGETTING_SCORE: &str = "forgetting/score";
/// Key of the source-domain perplexity.
pub const SOURCE_PERPLEXITY: &str = "source/perplexity";

/// Scores of one model (base, or a method after a budget).
pub type Metrics = BTreeMap<String, f64>;

/// A method evaluated after a budget of training on a target.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Point {
    pub target: String,
    pub method: String,
    /// The run's training seed.
    #[serde(default)]
    pub seed: u64,
    pub budget: f64,
    pub budget_unit: BudgetUnit,
    pub step: usize,
    pub tokens_seen: u64,
    /// The target's learning metric (see `higher_is_better` in the run record).
    pub learning: f64,
    /// The configured forgetting measure ([`FORGETTING_SCORE`] or [`SOURCE_PERPLEXITY`]).
    pub forgetting: f64,
    pub metrics: Metrics,
    /// Mean training loss over the last logged steps before this budget.
    pub train_loss: Option<f64>,
    pub train_seconds: f64,
    pub eval_seconds: f64,
}

/// One training run (a method on a target).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RunRecord {
    pub target: String,
    pub method: String,
    /// The run's training seed.
    #[serde(default)]
    pub seed: u64,
    /// The device it trained on.
    #[serde(default)]
    pub device: String,
    /// `full` or `lora`.
    pub kind: String,
    pub rank: Option<usize>,
    pub lr: f64,
    pub trainable_parameters: u64,
    /// Training-data lines skipped as bad (the target's `skip_bad_lines`).
    #[serde(default)]
    pub skipped_lines: usize,
    pub total_steps: usize,
    /// (step, loss) as read back during training.
    pub losses: Vec<(usize, f64)>,
    pub train_seconds: f64,
    pub eval_seconds: f64,
    /// Rank of the weight change at the last budget (summary of `tunelab spectrum`).
    pub spectrum: Option<serde_json::Value>,
    #[serde(default)]
    pub spectrum_seconds: f64,
}

/// Wall time of the phases, in seconds.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Timings {
    /// Loading the model, generating and tokenizing data (no pretraining).
    pub setup: f64,
    pub base_eval: f64,
    pub train: f64,
    pub eval: f64,
    pub spectrum: f64,
    /// Wall time of this invocation.
    pub total: f64,
    /// Runs restored from an earlier invocation (their times above are from when they ran).
    pub reused_runs: usize,
    /// Collected from runs done by other processes (`--collect`): `total` is the device time
    /// the phases took, not one invocation's wall time.
    #[serde(default)]
    pub collected: bool,
}

/// One of the paper's qualitative findings, checked on this run's numbers.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Finding {
    pub target: String,
    pub claim: String,
    /// None when the run lacks what the check needs (e.g. no LoRA method). With several seeds:
    /// on the means over seeds.
    pub reproduced: Option<bool>,
    pub evidence: String,
    /// With several seeds: the finding checked on each seed's runs alone, in `seeds` order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub per_seed: Vec<Option<bool>>,
}

/// Everything `results.json` holds.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Results {
    pub config: ExperimentConfig,
    pub device: String,
    /// Base-model scores (forgetting evals and every target's learning metric).
    pub base: Metrics,
    pub points: Vec<Point>,
    pub runs: Vec<RunRecord>,
    pub timings: Timings,
    pub findings: Vec<Finding>,
    /// Ids of planned runs without results (a partial `--collect`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<String>,
}

impl Results {
    /// The learning-metric key of `target` and whether higher is better.
    pub fn learning_key(&self, target: &str) -> (String, bool) {
        self.config
            .targets
            .iter()
            .find(|t| t.name == target)
            .map(|t| t.metric.key(target))
            .unwrap_or_default()
    }

    /// The forgetting key of the points (the configured axis) and whether higher is better
    /// (more kept).
    pub fn forgetting_key(&self) -> (&'static str, bool) {
        forgetting_key(&self.config, &self.base)
    }
}

/// The forgetting measure `cfg` asks for, or the one `metrics` has if it lacks that one.
pub fn forgetting_key(cfg: &ExperimentConfig, metrics: &Metrics) -> (&'static str, bool) {
    let score = (FORGETTING_SCORE, true);
    let ppl = (SOURCE_PERPLEXITY, false);
    let (want, other) = match cfg.forgetting_metric {
        ForgettingMetric::Score => (score, ppl),
        ForgettingMetric::SourcePerplexity => (ppl, score),
    };
    if metrics.contains_key(want.0) {
        want
    } else {
        other
    }
}
