//! LoRA adapters on the model's linear layers, with PEFT's semantics: targets by Hugging Face
//! module names, presets, Kaiming-uniform or Gaussian init with B = 0, `alpha / r` or rsLoRA
//! `alpha / sqrt(r)` scaling, merge and unmerge, and the PEFT adapter file layout.
//!
//! burn 0.22 ships `apply_lora`, but it is a reparameterization keyed by burn's own parameter
//! paths, with its own init and no PEFT naming, fan-in/fan-out handling or unmerge; the adapter
//! here lives inside our [`Linear`] so names and shapes map one-to-one onto PEFT's files.

use std::collections::{BTreeMap, BTreeSet};

use burn::module::Param;
use burn::tensor::{Device, Distribution, FloatDType, Tensor};

use super::layers::Lora;
use super::{CausalLm, read_f32};
use crate::error::{Error, Result};

/// How lora_A is initialised (lora_B always starts at zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LoraInit {
    /// PEFT's default: Kaiming-uniform with a = √5, i.e. U(−1/√in, 1/√in).
    Kaiming,
    /// PEFT's `init_lora_weights="gaussian"`: N(0, 1/r).
    Gaussian,
}

impl std::str::FromStr for LoraInit {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "kaiming" => Ok(LoraInit::Kaiming),
            "gaussian" => Ok(LoraInit::Gaussian),
            _ => Err(format!(
                "unknown LoRA init `{s}`; expected kaiming or gaussian"
            )),
        }
    }
}

/// LoRA hyper-parameters.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct LoraConfig {
    pub rank: usize,
    pub alpha: f64,
    pub dropout: f64,
    /// Scale by `alpha / sqrt(rank)` instead of `alpha / rank`.
    pub rslora: bool,
    pub init: LoraInit,
    /// Module names (`q_proj`, `attn.c_proj`), presets (`attention`, `mlp`, `all`) or
    /// `re:<regex>` matched against full module paths.
    pub targets: Vec<String>,
}

impl Default for LoraConfig {
    /// The paper's setting: rank 16, alpha 32, dropout 0.05, all block linears.
    fn default() -> Self {
        LoraConfig {
            rank: 16,
            alpha: 32.0,
            dropout: 0.05,
            rslora: false,
            init: LoraInit::Kaiming,
            targets: vec!["all".into()],
        }
    }
}

impl LoraConfig {
    /// The factor applied to `A B`.
    pub fn scaling(&self) -> f64 {
        if self.rslora {
            self.alpha / (self.rank as f64).sqrt()
        } else {
            self.alpha / self.rank as f64
        }
    }
}

/// Whether `path` (e.g. `model.layers.0.mlp.up_proj`) is in the block `kind` ("attention" or
/// "mlp") of either family.
fn in_block(path: &str, kind: &str) -> bool {
    match kind {
        "attention" => path.contains(".self_attn.") || path.contains(".attn."),
        _ => path.contains(".mlp."),
    }
}

/// Resolve target specs to the module paths of the model's linears, in model order.
pub fn resolve_targets(model: &mut CausalLm, specs: &[String]) -> Result<Vec<String>> {
    let mut all = Vec::new();
    model.for_each_linear(&mut |path, _| all.push(path.to_string()));
    let mut chosen = BTreeSet::new();
    for spec in specs {
        let spec = spec.trim();
        let matched: Vec<&String> = match spec {
            "attention" | "mlp" => all.iter().filter(|p| in_block(p, spec)).collect(),
            "all" => all
                .iter()
                .filter(|p| in_block(p, "attention") || in_block(p, "mlp"))
                .collect(),
            _ if spec.starts_with("re:") => {
                let re = regex::Regex::new(&format!("^(?:{})$", &spec[3..]))
                    .map_err(|e| Error::setting("targets", format!("{spec}: bad regex: {e}")))?;
                all.iter().filter(|p| re.is_match(p)).collect()
            }
            _ => all
                .iter()
                .filter(|p| *p == spec || p.ends_with(&format!(".{spec}")))
                .collect(),
        };
        if matched.is_empty() {
            let names: BTreeSet<String> = all
                .iter()
                .map(|p| {
                    let parts: Vec<&str> = p.rsplitn(3, '.').collect();
                    if parts.len() >= 2 {
                        format!("{}.{}", parts[1], parts[0])
                    } else {
                        p.clone()
                    }
                })
                .collect();
            return Err(Error::setting(
                "targets",
                format!(
                    "LoRA target `{spec}` matches no linear layer of this model; its linears are: {} (presets: attention, mlp, all; or re:<regex> on full paths)",
                    names.into_iter().collect::<Vec<_>>().join(", ")
                ),
            ));
        }
        chosen.extend(matched.into_iter().cloned());
    }
    Ok(all.into_iter().filter(|p| chosen.contains(p)).collect())
}

/// Attach fresh adapters to the target linears and freeze every base parameter. Returns the
/// adapted module paths.
pub fn attach(model: &mut CausalLm, cfg: &LoraConfig, device: &Device) -> Result<Vec<String>> {
    if cfg.rank == 0 {
        return Err(Error::setting("rank", "must be at least 1"));
    }
    if !(0.0..1.0).contains(&cfg.dropout) {
        return Err(Error::setting(
            "lora_dropout",
            format!("must be in [0, 1), got {}", cfg.dropout),
        ));
    }
    let targets = resolve_targets(model, &cfg.targets)?;
    freeze_all(model);
    model.for_each_linear(&mut |path, lin| {
        if !targets.iter().any(|t| t == path) {
            return;
        }
        // A rank above min(d_in, d_out) is allowed, as PEFT allows it (the paper's r = 256 on a
        // small model's 192-wide k_proj): the update's rank is still at most that dimension.
        let [d_in, d_out] = lin.dims();
        let a = match cfg.init {
            LoraInit::Kaiming => {
                let bound = 1.0 / (d_in as f64).sqrt();
                Tensor::<2>::random(
                    [d_in, cfg.rank],
                    Distribution::Uniform(-bound, bound),
                    device,
                )
            }
            LoraInit::Gaussian => Tensor::<2>::random(
                [d_in, cfg.rank],
                Distribution::Normal(0.0, 1.0 / cfg.rank as f64),
                device,
            ),
        };
        let b = Tensor::<2>::zeros([cfg.rank, d_out], device);
        lin.lora = Some(Lora {
            a: Param::from_tensor(a),
            b: Param::from_tensor(b),
            scaling: cfg.scaling(),
            dropout: cfg.dropout,
        });
    });
    Ok(targets)
}

/// Freeze every base parameter (LoRA parameters are untouched).
pub fn freeze_all(model: &mut CausalLm) {
    model.for_each_param(&mut |_, mut p| p.set_trainable(false));
}

/// Fold each adapter into its base weight (`W += scaling · A B`) and drop the adapters.
pub fn merge(model: &mut CausalLm) {
    model.for_each_linear(&mut |_, lin| {
        if let Some(l) = lin.lora.take() {
            let delta = l.a.val().matmul(l.b.val()).mul_scalar(l.scaling);
            // In f32 even where the frozen base was kept in f16 for training.
            let base = lin.weight.val().cast(FloatDType::F32);
            lin.weight = Param::from_tensor(base + delta).set_require_grad(false);
        }
    });
}

/// Subtract each adapter from its base weight, e.g. after a merge done in place to speed up
/// inference; the adapters stay attached.
pub fn unmerge(model: &mut CausalLm) {
    model.for_each_linear(&mut |_, lin| {
        if let Some(l) = &lin.lora {
            let delta = l.a.val().matmul(l.b.val()).mul_scalar(l.scaling);
            let base = lin.weight.val().cast(FloatDType::F32);
            lin.weight = Param::from_tensor(base - delta).set_require_grad(false);
        }
    });
}

/// One adapter tensor: shape and values.
pub type PeftTensor = (Vec<usize>, Vec<f32>);

/// A PEFT adapter in memory: `adapter_config.json` fields and tensors in PEFT's layout.
pub struct PeftAdapter {
    pub config: serde_json::Value,
    /// `base_model.model.<path>.lora_A.weight` → (shape, values).
    pub tensors: BTreeMap<String, PeftTensor>,
}

/// Read `adapter_config.json` and `adapter_model.safetensors` from `fetch`.
pub async fn read_peft(fetch: &impl crate::hf::Fetch) -> Result<PeftAdapter> {
    let cfg_name = "adapter_config.json";
    let text = fetch.read_string(cfg_name).await?;
    let config: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| crate::hf::HfError::Json {
            file: fetch.locate(cfg_name),
            message: e.to_string(),
        })?;
    let name = "adapter_model.safetensors";
    let mut tensors = BTreeMap::new();
    fetch
        .open(name)
        .await?
        .stream_tensors(
            &fetch.locate(name),
            &mut |_| Ok(()),
            &mut |t| {
                tensors.insert(t.info.name.clone(), (t.info.shape.clone(), t.values));
                Ok(())
            },
            &mut |_| {},
        )
        .await?;
    Ok(PeftAdapter { config, tensors })
}

/// PEFT's key prefix for causal-LM adapters.
const PEFT_PREFIX: &str = "base_model.model.";

/// Read the adapters of `model` in PEFT's layout (`lora_A` `[r, in]`, `lora_B` `[out, r]`).
pub async fn to_peft(model: &CausalLm, cfg: &LoraConfig, base_model: &str) -> Result<PeftAdapter> {
    let mut model = model.clone();
    let mut found: Vec<(String, Tensor<2>, Tensor<2>, bool)> = Vec::new();
    model.for_each_linear(&mut |path, lin| {
        if let Some(l) = &lin.lora {
            found.push((
                path.to_string(),
                l.a.val().transpose(),
                l.b.val().transpose(),
                lin.conv1d,
            ));
        }
    });
    if found.is_empty() {
        return Err(Error::Input(
            "the model has no LoRA adapters to export".into(),
        ));
    }
    let mut tensors = BTreeMap::new();
    let mut paths = BTreeSet::new();
    let mut conv1d = false;
    for (path, a, b, is_conv) in found {
        conv1d |= is_conv;
        let (sa, sb) = (a.dims().to_vec(), b.dims().to_vec());
        tensors.insert(
            format!("{PEFT_PREFIX}{path}.lora_A.weight"),
            (sa, read_f32(a).await?),
        );
        tensors.insert(
            format!("{PEFT_PREFIX}{path}.lora_B.weight"),
            (sb, read_f32(b).await?),
        );
        paths.insert(path);
    }
    let config = serde_json::json!({
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model,
        "r": cfg.rank,
        "lora_alpha": cfg.alpha,
        "lora_dropout": cfg.dropout,
        "use_rslora": cfg.rslora,
        "bias": "none",
        "fan_in_fan_out": conv1d,
        "init_lora_weights": match cfg.init { LoraInit::Kaiming => serde_json::json!(true), LoraInit::Gaussian => serde_json::json!("gaussian") },
        "target_modules": peft_target_modules(&mut model, &paths),
        "inference_mode": true,
        "modules_to_save": null,
    });
    Ok(PeftAdapter { config, tensors })
}

/// Short names (`q_proj`) when they select exactly the adapted modules under PEFT's suffix
/// matching; otherwise the full module paths.
fn peft_target_modules(model: &mut CausalLm, paths: &BTreeSet<String>) -> Vec<String> {
    let short: BTreeSet<String> = paths
        .iter()
        .map(|p| p.rsplit('.').next().unwrap_or(p).to_string())
        .collect();
    let mut selected = BTreeSet::new();
    model.for_each_linear(&mut |path, _| {
        if short
            .iter()
            .any(|s| path.ends_with(&format!(".{s}")) || path == s)
        {
            selected.insert(path.to_string());
        }
    });
    if &selected == paths {
        short.into_iter().collect()
    } else {
        paths.iter().cloned().collect()
    }
}

/// Attach the adapters of a PEFT adapter to `model` (freezing the base), checking that every
/// tensor lands on a module and every shape fits. Returns the LoRA config read from it.
pub fn from_peft(
    model: &mut CausalLm,
    adapter: &PeftAdapter,
    file: &str,
    device: &Device,
) -> Result<LoraConfig> {
    let field = |name: &str| adapter.config.get(name).filter(|v| !v.is_null());
    let bad = |msg: String| Error::Input(format!("{file}: {msg}"));
    if let Some(t) = field("peft_type").and_then(|v| v.as_str())
        && t != "LORA"
    {
        return Err(bad(format!("peft_type `{t}` is not LORA")));
    }
    let rank = field("r")
        .and_then(|v| v.as_u64())
        .ok_or_else(|| bad("field `r` missing or not an integer".into()))? as usize;
    let alpha = field("lora_alpha").and_then(|v| v.as_f64()).unwrap_or(8.0);
    let cfg = LoraConfig {
        rank,
        alpha,
        dropout: field("lora_dropout")
            .and_then(|v| v.as_f64())
            .unwrap_or(0.0),
        rslora: field("use_rslora")
            .and_then(|v| v.as_bool())
            .unwrap_or(false),
        init: LoraInit::Kaiming,
        targets: Vec::new(),
    };
    // Pair up A and B per module path.
    let mut pairs: BTreeMap<String, [Option<&PeftTensor>; 2]> = BTreeMap::new();
    for (key, t) in &adapter.tensors {
        let rest = key.strip_prefix(PEFT_PREFIX).unwrap_or(key);
        let (path, which) = if let Some(p) = rest.strip_suffix(".lora_A.weight") {
            (p, 0)
        } else if let Some(p) = rest.strip_suffix(".lora_B.weight") {
            (p, 1)
        } else {
            return Err(bad(format!(
                "unexpected tensor `{key}` (not a lora_A/lora_B weight)"
            )));
        };
        // PEFT may keep the adapter name in the key (`lora_A.default.weight` is stripped on save).
        pairs.entry(path.to_string()).or_insert([None, None])[which] = Some(t);
    }
    freeze_all(model);
    let mut unmatched: BTreeSet<String> = pairs.keys().cloned().collect();
    let mut err = None;
    model.for_each_linear(&mut |path, lin| {
        let Some([a, b]) = pairs.get(path) else { return };
        unmatched.remove(path);
        let (Some(a), Some(b)) = (a, b) else {
            err.get_or_insert(bad(format!("module `{path}` has only one of lora_A/lora_B")));
            return;
        };
        let [d_in, d_out] = lin.dims();
        if a.0 != [rank, d_in] || b.0 != [d_out, rank] {
            err.get_or_insert(bad(format!(
                "`{path}`: lora_A {:?} / lora_B {:?} do not fit a {d_in}→{d_out} layer at r={rank} (expected [{rank}, {d_in}] / [{d_out}, {rank}])",
                a.0, b.0
            )));
            return;
        }
        // Stored row-major as `attach` creates them (not as transposed views): the CPU's gemm
        // sums in another order for another layout, and a resumed run must compute what the
        // uninterrupted one did.
        let matrix = |(_, v): &PeftTensor, rows: usize, cols: usize| {
            let data = (0..rows * cols).map(|i| v[(i % rows) * cols + i / rows]).collect::<Vec<f32>>();
            Tensor::<2>::from_data(burn::tensor::TensorData::new(data, [cols, rows]), device)
        };
        let (at, bt) = (matrix(a, rank, d_in), matrix(b, d_out, rank));
        lin.lora = Some(Lora {
            a: Param::from_tensor(at),
            b: Param::from_tensor(bt),
            scaling: cfg.scaling(),
            dropout: cfg.dropout,
        });
    });
    if let Some(e) = err {
        return Err(e);
    }
    if let Some(p) = unmatched.into_iter().next() {
        return Err(bad(format!(
            "adapter tensors for `{p}` match no linear layer of the base model (wrong base model?)"
        )));
    }
    Ok(cfg)
}
