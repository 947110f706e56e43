//! What an experiment runs: the base model, target domains with their learning metric and
//! budgets, the fine-tuning methods compared, and the forgetting evals. Read from TOML; every
//! field is named in errors.

use crate::error::{Error, Result};
use crate::run::{MethodKind, default_lr};
use crate::train::data::Regime;
use crate::train::schedule::Schedule;

/// The bundled default experiment (paths relative to the repository root).
pub const DEFAULT_TOML: &str = include_str!("../../../experiments/default.toml");

/// A whole experiment.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentConfig {
    #[serde(default = "default_name")]
    pub name: String,
    /// Model directory, `.gguf` file, URL or Hub id.
    pub base_model: String,
    /// Local models tried in order when `base_model` is a local path that does not exist (e.g.
    /// the real model when installed, else the bundled one); the one used is recorded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub base_model_fallbacks: Vec<String>,
    /// Seed of the generated data and, without `seeds`, of every run.
    #[serde(default)]
    pub seed: u64,
    /// Train every method on every target once per seed (data stay those of `seed`): the report
    /// shows mean ± standard error and which findings hold in every seed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub seeds: Vec<u64>,
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    /// Peak learning rate of full fine-tuning.
    pub full_lr: f64,
    /// LoRA methods without their own `lr` use `full_lr` × this (the paper's ~10×).
    #[serde(default = "default_lora_multiplier")]
    pub lora_lr_multiplier: f64,
    #[serde(default = "default_schedule")]
    pub schedule: Schedule,
    /// Warm-up as a fraction of each run's steps.
    #[serde(default = "default_warmup")]
    pub warmup: f64,
    /// The forgetting axis of plots and findings: `score` (mean acc_norm of the multiple-choice
    /// evals, the paper's) or `source_perplexity` (perplexity of held-out source text).
    #[serde(default)]
    pub forgetting_metric: ForgettingMetric,
    /// Also analyse the spectrum of each run's weight change at its last budget.
    #[serde(default = "default_true")]
    pub spectrum: bool,
    pub targets: Vec<Target>,
    #[serde(default)]
    pub methods: Vec<MethodSpec>,
    /// Method grids (method × ranks × module sets × learning rates), expanded into `methods`
    /// when the config is read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grids: Vec<Grid>,
    pub forgetting: Forgetting,
    /// What `--quick` changes (defaults when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quick: Option<Quick>,
}

/// Many methods at once: every combination of `ranks` (LoRA), `modules` (LoRA target presets
/// or module names) and `lrs`, named `<method>[-r<rank>][-<modules>]-lr<lr>`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grid {
    /// `full` or `lora`.
    pub method: MethodKind,
    #[serde(default)]
    pub ranks: Vec<usize>,
    /// Each entry is one module set (`attention`, `mlp`, `all`, or names joined by `+`).
    #[serde(default)]
    pub modules: Vec<String>,
    /// Default: the method's default learning rate only.
    #[serde(default)]
    pub lrs: Vec<f64>,
    #[serde(default)]
    pub dropout: f64,
    #[serde(default)]
    pub weight_decay: f64,
}

impl Grid {
    /// The methods of the grid, in a stable order (rank, modules, lr).
    fn expand(&self) -> Vec<MethodSpec> {
        let lora = self.method == MethodKind::Lora;
        let ranks = if lora { self.ranks.clone() } else { vec![0] };
        let modules: Vec<Option<&String>> = if lora && !self.modules.is_empty() {
            self.modules.iter().map(Some).collect()
        } else {
            vec![None]
        };
        let lrs: Vec<Option<f64>> = if self.lrs.is_empty() {
            vec![None]
        } else {
            self.lrs.iter().copied().map(Some).collect()
        };
        let mut out = Vec::new();
        for &rank in &ranks {
            for m in &modules {
                for &lr in &lrs {
                    let mut name = self.method.to_string();
                    if lora {
                        name.push_str(&format!("-r{rank}"));
                    }
                    if let Some(m) = m {
                        name.push_str(&format!("-{m}"));
                    }
                    if let Some(lr) = lr {
                        name.push_str(&format!("-lr{lr:e}"));
                    }
                    out.push(MethodSpec {
                        name,
                        method: self.method,
                        rank,
                        alpha: None,
                        targets: m.map_or_else(default_targets, |m| {
                            m.split('+').map(str::to_string).collect()
                        }),
                        dropout: self.dropout,
                        lr,
                        weight_decay: self.weight_decay,
                        attention_dropout: 0.0,
                        residual_dropout: 0.0,
                    });
                }
            }
        }
        out
    }
}

/// A target domain: training data, the held-out learning metric and the budgets.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    pub name: String,
    /// `cpt` (loss on every token) or `ift` (loss on answers).
    pub regime: Regime,
    /// Training data file (text or JSONL, `.gz` allowed), or `math` to generate word problems
    /// from the seed.
    pub train: String,
    /// Held-out data for the learning metric: a file, or `math`.
    pub test: String,
    pub metric: LearningMetric,
    pub seq_len: usize,
    /// Evaluate after these amounts of training (the last is the run's length).
    pub budgets: Vec<f64>,
    pub budget_unit: BudgetUnit,
    /// Problems generated for `math` train and test.
    #[serde(default = "default_math_train")]
    pub math_train: usize,
    #[serde(default = "default_math_test")]
    pub math_test: usize,
    /// Score at most this many characters of a perplexity test text.
    #[serde(default)]
    pub test_chars: Option<usize>,
    #[serde(default = "default_gen")]
    pub max_gen_toks: usize,
    /// Skip training-data JSONL lines that are not JSON or lack the field (counted in each
    /// run's record and announced) instead of stopping at the first.
    #[serde(default)]
    pub skip_bad_lines: bool,
    /// Read instruction data and prompt GSM8K through the base model's chat template. Default:
    /// when the model has one; `true` refuses a model without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat: Option<bool>,
    /// HumanEval scored beside the learning metric: pass@k (when `execute`) and the diversity
    /// of the sampled programs (the paper's finding 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub humaneval: Option<CodeEval>,
}

/// HumanEval-layout problems sampled at every evaluation of a target.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodeEval {
    /// The problems (JSONL, `.gz` allowed), e.g. `data/humaneval/HumanEval.jsonl.gz`.
    pub file: String,
    /// Score the first this many problems.
    #[serde(default)]
    pub limit: Option<usize>,
    /// Samples per problem.
    #[serde(default = "default_samples")]
    pub samples: usize,
    #[serde(default = "default_temperature")]
    pub temperature: f64,
    #[serde(default = "default_top_p")]
    pub top_p: f64,
    #[serde(default = "default_code_gen")]
    pub max_gen_toks: usize,
    /// Run the generated programs against the tests with the system python3 (they run with
    /// your rights: only on a machine where that is acceptable). Without it only diversity is
    /// reported.
    #[serde(default)]
    pub execute: bool,
}

/// What `--quick` changes: the same experiment with small budgets and evals, to see it run end
/// to end (e.g. a 135M model on a CPU). Every field has a default, so any config runs quick.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Quick {
    /// Every budget is multiplied by this.
    pub budget_scale: f64,
    /// Items per multiple-choice forgetting eval.
    pub limit: usize,
    /// Characters of each perplexity text (forgetting and targets).
    pub text_chars: usize,
    /// Held-out `math` problems.
    pub math_test: usize,
    /// HumanEval problems and samples per problem.
    pub humaneval_limit: usize,
    pub humaneval_samples: usize,
    /// New tokens per generation (GSM8K answers, HumanEval programs).
    pub max_gen_toks: usize,
}

impl Default for Quick {
    fn default() -> Self {
        Quick {
            budget_scale: 0.1,
            limit: 20,
            text_chars: 8000,
            math_test: 10,
            humaneval_limit: 8,
            humaneval_samples: 4,
            max_gen_toks: 128,
        }
    }
}

/// How a target's learning is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LearningMetric {
    /// GSM8K exact match (flexible extraction; strict and answer loss are reported too).
    Gsm8k,
    /// Mean loss on the held-out worked answers (GSM8K items; exact match is reported too):
    /// lower is better, and it moves long before a small model gets answers exactly right.
    AnswerLoss,
    /// Perplexity of the held-out text (lower is better).
    Perplexity,
}

impl LearningMetric {
    /// The metric key in results and whether a higher value means more learning.
    pub fn key(self, target: &str) -> (String, bool) {
        match self {
            LearningMetric::Gsm8k => (format!("{target}/exact_match_flexible"), true),
            LearningMetric::AnswerLoss => (format!("{target}/answer_loss"), false),
            LearningMetric::Perplexity => (format!("{target}/perplexity"), false),
        }
    }
}

/// What the forgetting axis shows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ForgettingMetric {
    #[default]
    Score,
    SourcePerplexity,
}

/// Unit of the budgets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BudgetUnit {
    /// Training tokens (sequence positions, as the trainer counts them).
    Tokens,
    /// Passes over the training examples.
    Epochs,
}

impl BudgetUnit {
    /// The unit as written in configs (`tokens`, `epochs`).
    pub fn as_str(self) -> &'static str {
        match self {
            BudgetUnit::Tokens => "tokens",
            BudgetUnit::Epochs => "epochs",
        }
    }
}

/// A fine-tuning method to compare.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MethodSpec {
    /// Label in tables and plots (e.g. `full`, `lora-r16`).
    pub name: String,
    /// `full` or `lora`.
    pub method: MethodKind,
    #[serde(default)]
    pub rank: usize,
    /// Default 2 × rank, as the paper.
    #[serde(default)]
    pub alpha: Option<f64>,
    #[serde(default = "default_targets")]
    pub targets: Vec<String>,
    #[serde(default)]
    pub dropout: f64,
    /// Default: `full_lr`, or `full_lr` × `lora_lr_multiplier` for LoRA.
    #[serde(default)]
    pub lr: Option<f64>,
    #[serde(default)]
    pub weight_decay: f64,
    #[serde(default)]
    pub attention_dropout: f64,
    #[serde(default)]
    pub residual_dropout: f64,
}

/// Forgetting evals on the source domain (files in the published JSONL layouts).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Forgetting {
    #[serde(default)]
    pub hellaswag: Option<String>,
    #[serde(default)]
    pub arc: Option<String>,
    #[serde(default)]
    pub winogrande: Option<String>,
    /// Source-domain text whose perplexity is tracked.
    #[serde(default)]
    pub perplexity: Option<String>,
    /// Items per multiple-choice task.
    #[serde(default)]
    pub limit: Option<usize>,
    /// Characters of the perplexity text scored.
    #[serde(default)]
    pub perplexity_chars: Option<usize>,
}

fn default_name() -> String {
    "experiment".into()
}
fn default_batch() -> usize {
    8
}
fn default_lora_multiplier() -> f64 {
    10.0
}
fn default_schedule() -> Schedule {
    Schedule::Cosine
}
fn default_warmup() -> f64 {
    0.1
}
fn default_true() -> bool {
    true
}
fn default_math_train() -> usize {
    2000
}
fn default_math_test() -> usize {
    100
}
fn default_gen() -> usize {
    160
}
fn default_samples() -> usize {
    10
}
fn default_temperature() -> f64 {
    0.2
}
fn default_top_p() -> f64 {
    0.95
}
fn default_code_gen() -> usize {
    256
}
fn default_targets() -> Vec<String> {
    vec!["all".into()]
}

impl ExperimentConfig {
    /// Parse TOML (`file` names the source in errors) and check it.
    pub fn parse(text: &str, file: &str) -> Result<Self> {
        let mut cfg: Self =
            toml::from_str(text).map_err(|e| Error::Input(format!("{file}: {e}")))?;
        for g in std::mem::take(&mut cfg.grids) {
            if g.method == MethodKind::Lora && g.ranks.is_empty() {
                return Err(Error::Input(format!(
                    "{file}: grids: a lora grid needs ranks"
                )));
            }
            cfg.methods.extend(g.expand());
        }
        cfg.validate(file)?;
        Ok(cfg)
    }

    /// Reject settings that cannot run, naming the field.
    pub fn validate(&self, file: &str) -> Result<()> {
        let bad = |m: String| Err(Error::Input(format!("{file}: {m}")));
        if self.targets.is_empty() || self.methods.is_empty() {
            return bad("needs at least one [[targets]] and one [[methods]]".into());
        }
        if !(self.full_lr > 0.0 && self.lora_lr_multiplier > 0.0) {
            return bad("full_lr and lora_lr_multiplier must be positive".into());
        }
        if self.batch_size == 0 {
            return bad("batch_size must be at least 1".into());
        }
        let mut seeds = self.seeds.clone();
        seeds.sort_unstable();
        seeds.dedup();
        if seeds.len() != self.seeds.len() {
            return bad("seeds must not repeat".into());
        }
        if !(0.0..1.0).contains(&self.warmup) {
            return bad(format!(
                "warmup is a fraction of each run's steps, in [0, 1); got {}",
                self.warmup
            ));
        }
        let mut names = std::collections::HashSet::new();
        for t in &self.targets {
            if !names.insert(&t.name) || t.name.contains(['/', '\\']) || t.name.is_empty() {
                return bad(format!(
                    "target name `{}` must be unique and a plain name",
                    t.name
                ));
            }
            if t.budgets.is_empty() || t.budgets.iter().any(|b| b.is_nan() || *b <= 0.0) {
                return bad(format!(
                    "targets.{}.budgets must be positive numbers",
                    t.name
                ));
            }
            if t.budgets.windows(2).any(|w| w[0] >= w[1]) {
                return bad(format!("targets.{}.budgets must increase", t.name));
            }
            if t.seq_len < 2 {
                return bad(format!("targets.{}.seq_len must be at least 2", t.name));
            }
            if let Some(h) = &t.humaneval
                && (h.samples == 0
                    || h.max_gen_toks == 0
                    || h.temperature.is_nan()
                    || h.temperature < 0.0)
            {
                return bad(format!(
                    "targets.{}.humaneval: samples and max_gen_toks must be at least 1 and temperature ≥ 0",
                    t.name
                ));
            }
            if t.metric != LearningMetric::Perplexity
                && t.test != "math"
                && !t.test.contains(".json")
            {
                return bad(format!(
                    "targets.{}.test: the gsm8k metric needs `math` or a GSM8K-layout JSONL file",
                    t.name
                ));
            }
        }
        let mut names = std::collections::HashSet::new();
        for m in &self.methods {
            if !names.insert(&m.name) || m.name.contains(['/', '\\']) || m.name.is_empty() {
                return bad(format!(
                    "method name `{}` must be unique and a plain name",
                    m.name
                ));
            }
            if m.method == MethodKind::Lora && m.rank == 0 {
                return bad(format!("methods.{}: lora needs rank ≥ 1", m.name));
            }
        }
        if let Some(q) = &self.quick
            && (q.budget_scale.is_nan() || q.budget_scale <= 0.0)
        {
            return bad(format!(
                "quick.budget_scale must be positive; got {}",
                q.budget_scale
            ));
        }
        let f = &self.forgetting;
        if f.hellaswag.is_none()
            && f.arc.is_none()
            && f.winogrande.is_none()
            && f.perplexity.is_none()
        {
            return bad(
                "[forgetting] names no eval (hellaswag, arc, winogrande, perplexity)".into(),
            );
        }
        Ok(())
    }

    /// The quick form of this experiment (`--quick`): budgets scaled, evals cut, the first seed
    /// only, as the `quick` table (or its defaults) says. The result records the values used and
    /// no longer has a `quick` table, so quick and full results never share an output directory.
    pub fn quick(&self) -> Self {
        let q = self.quick.clone().unwrap_or_default();
        let mut c = self.clone();
        c.quick = None;
        // The data stay those of `seed`; only the first training seed runs.
        c.seeds.truncate(1);
        for t in &mut c.targets {
            for b in &mut t.budgets {
                *b *= q.budget_scale;
            }
            t.math_test = t.math_test.min(q.math_test);
            t.max_gen_toks = t.max_gen_toks.min(q.max_gen_toks);
            t.test_chars = Some(t.test_chars.map_or(q.text_chars, |n| n.min(q.text_chars)));
            if let Some(h) = &mut t.humaneval {
                h.limit = Some(
                    h.limit
                        .map_or(q.humaneval_limit, |n| n.min(q.humaneval_limit)),
                );
                h.samples = h.samples.min(q.humaneval_samples);
                h.max_gen_toks = h.max_gen_toks.min(q.max_gen_toks);
            }
        }
        let f = &mut c.forgetting;
        f.limit = Some(f.limit.map_or(q.limit, |n| n.min(q.limit)));
        f.perplexity_chars = Some(
            f.perplexity_chars
                .map_or(q.text_chars, |n| n.min(q.text_chars)),
        );
        c
    }

    /// The training seeds: `seeds`, or `seed` alone.
    pub fn run_seeds(&self) -> Vec<u64> {
        if self.seeds.is_empty() {
            vec![self.seed]
        } else {
            self.seeds.clone()
        }
    }

    /// The learning rate of `m`.
    pub fn lr(&self, m: &MethodSpec) -> f64 {
        m.lr.unwrap_or(default_lr(m.method, self.full_lr, self.lora_lr_multiplier))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_default_parses() {
        let cfg = ExperimentConfig::parse(DEFAULT_TOML, "default.toml").unwrap();
        assert!(cfg.methods.iter().any(|m| m.method == MethodKind::Full));
        assert!(cfg.methods.iter().any(|m| m.method == MethodKind::Lora));
        let lora = cfg
            .methods
            .iter()
            .find(|m| m.method == MethodKind::Lora)
            .unwrap();
        assert_eq!(cfg.lr(lora), cfg.full_lr * cfg.lora_lr_multiplier);
    }

    #[test]
    fn quick_scales_budgets_and_cuts_evals() {
        let text = format!("seeds = [5, 6]\n{DEFAULT_TOML}\n[quick]\nbudget_scale = 0.25\n")
            .replacen("seed = 0\n", "", 1);
        let cfg = ExperimentConfig::parse(&text, "x.toml").unwrap();
        let q = cfg.quick();
        assert_eq!(q.quick, None);
        assert_eq!((q.seed, q.run_seeds()), (cfg.seed, vec![5]));
        for (a, b) in cfg.targets.iter().zip(&q.targets) {
            let scaled: Vec<f64> = a.budgets.iter().map(|x| x * 0.25).collect();
            assert_eq!(b.budgets, scaled);
            assert_eq!(b.test_chars, Some(a.test_chars.unwrap_or(8000).min(8000)));
            assert_eq!(b.math_test, a.math_test.min(10));
        }
        assert_eq!(q.forgetting.limit, Some(20));
        assert_eq!(q.forgetting.perplexity_chars, Some(8000));
        // Without a [quick] table its defaults apply.
        let d = ExperimentConfig::parse(DEFAULT_TOML, "x.toml").unwrap();
        assert_eq!(
            d.quick().targets[0].budgets[0],
            d.targets[0].budgets[0] * 0.1
        );
    }

    #[test]
    fn errors_name_the_field() {
        let text = DEFAULT_TOML.replace("budget_unit", "budget_units");
        let e = ExperimentConfig::parse(&text, "x.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("x.toml") && e.contains("budget_units"), "{e}");
        let text = DEFAULT_TOML.replacen("method = \"lora\"", "method = \"lorax\"", 1);
        let e = ExperimentConfig::parse(&text, "x.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("lorax"), "{e}");
    }
}
