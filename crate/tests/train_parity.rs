//! Training matches PyTorch + PEFT (references from tests/fixtures/make_train_fixtures.py):
//! one-step loss and gradients of every trainable tensor for full fine-tuning and LoRA, and
//! the loss and gradient-norm trajectory over 10 AdamW steps with warm-up, cosine decay and
//! clipping, on the CPU backend and on wgpu.

mod common;

use burn::tensor::Device;
use common::*;
use tunelab::hf::ModelSource;
use tunelab::model::lora::{self, LoraConfig, LoraInit};
use tunelab::model::read_f32;
use tunelab::train::MemorySink;
use tunelab::train::data::{Dataset, Example, collate, targets};
use tunelab::train::loss::IGNORE;
use tunelab::train::optim::OptimizerConfig;
use tunelab::train::schedule::Schedule;
use tunelab::train::{FullConfig, Method, TrainConfig, Trainer};
use tunelab::{Event, Session};

const GRAD_TOL: f32 = 1e-4;
const TRAJ_TOL: f64 = 1e-3;

fn batch_examples() -> Vec<Example> {
    let b = read_reference(&fixtures().join("train/batch.safetensors"));
    let (ids, labels) = (&b["input_ids"], &b["labels"]);
    let t = ids.shape[1];
    (0..ids.shape[0])
        .map(|r| {
            let row = |v: &[i64]| v[r * t..(r + 1) * t].to_vec();
            let (ids, labels) = (row(&ids.i64), row(&labels.i64));
            // The fixture masks a prompt: labels are the ids after its first target.
            let prompt = labels.iter().position(|&l| l != IGNORE).unwrap_or(t);
            let e = Example {
                ids: ids.iter().map(|&i| i as u32).collect(),
                prompt,
                len: t,
            };
            assert!(e.labels().eq(labels.iter().copied()), "row {r}");
            e
        })
        .collect()
}

fn train_config(method: Method, lr: f64) -> TrainConfig {
    TrainConfig {
        optimizer: OptimizerConfig::adamw(0.01),
        schedule: Schedule::Cosine,
        warmup_steps: 2,
        max_steps: Some(10),
        batch_size: 2,
        ..TrainConfig::new(method, lr)
    }
}

fn lora_method() -> Method {
    Method::Lora(LoraConfig {
        rank: 4,
        alpha: 8.0,
        dropout: 0.0,
        rslora: false,
        init: LoraInit::Kaiming,
        targets: vec!["all".into()],
    })
}

fn trainer(model: &str, method: Method, lr: f64, device: &Device, checkpointed: bool) -> Trainer {
    let device = tunelab::train::training_device(device, checkpointed);
    let src = ModelSource::Dir(fixtures().join(model));
    let session = pollster::block_on(Session::load(&src, device.clone(), &mut |_| {})).unwrap();
    let adapter = match method {
        Method::Lora(_) => Some(
            pollster::block_on(lora::read_peft(&ModelSource::Dir(
                fixtures().join(format!("train/{model}-lora-init")),
            )))
            .unwrap(),
        ),
        Method::Full(_) => None,
    };
    Trainer::new(
        session.model,
        device,
        TrainConfig {
            checkpoint_activations: checkpointed,
            ..train_config(method, lr)
        },
        session.config_json,
        session.extra_files,
        model.into(),
        adapter.as_ref(),
    )
    .unwrap()
}

fn reference(model: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(fixtures().join(format!("train/{model}.json"))).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Our gradient in the reference's (HF/PEFT) layout.
fn hf_layout(values: Vec<f32>, dims: &[usize], transposed: bool) -> Vec<f32> {
    if !transposed {
        return values;
    }
    let (r, c) = (dims[0], dims[1]);
    let mut out = vec![0.0; values.len()];
    for i in 0..r {
        for j in 0..c {
            out[j * r + i] = values[i * c + j];
        }
    }
    out
}

fn check_one_step(model: &str, kind: &str, label: &str, device: &Device) {
    let method = if kind == "full" {
        Method::Full(FullConfig::default())
    } else {
        lora_method()
    };
    let mut t = trainer(model, method, 1e-3, device, false);
    let rj = reference(model);
    let want: Vec<String> = serde_json::from_value(rj[kind]["trainable"].clone()).unwrap();
    let grads_ref =
        read_reference(&fixtures().join(format!("train/{model}-{kind}-grads.safetensors")));
    let key = |n: &str| {
        if kind == "lora" {
            format!("base_model.model.{n}")
        } else {
            n.to_string()
        }
    };
    let mut ours: Vec<String> = t.trainable.iter().map(|n| key(n)).collect();
    ours.sort();
    let mut keys: Vec<String> = grads_ref.keys().cloned().collect();
    keys.sort();
    assert_eq!(
        ours, keys,
        "{model} {kind}: trainable tensors differ from PyTorch's"
    );
    if kind == "full" {
        assert_eq!(ours.len(), want.len());
    }
    let examples = batch_examples();
    let refs: Vec<&Example> = examples.iter().collect();
    let batch = collate(&refs, &device.clone().autodiff());
    let (loss, grads) = t.gradients(&[batch]);
    let loss = pollster::block_on(read_f32(loss)).unwrap()[0] as f64;
    let want_loss = rj[kind]["loss"].as_f64().unwrap();
    assert!(
        ((loss - want_loss) / want_loss).abs() < 1e-5,
        "{model} {kind} {label}: loss {loss} vs {want_loss}"
    );
    let mut worst = (0f32, String::new());
    for (name, g) in grads {
        let values = pollster::block_on(read_f32(g.flat)).unwrap();
        let ours = hf_layout(values, &g.dims, g.hf_transposed);
        let r = &grads_ref[&key(&name)];
        let scale = r.f32.iter().fold(0f32, |m, v| m.max(v.abs()));
        let rel = max_abs_diff(&ours, &r.f32) / scale;
        if rel > worst.0 {
            worst = (rel, name.clone());
        }
    }
    eprintln!(
        "{model} {kind} {label}: loss {loss:.6}, worst gradient rel. error {:.2e} ({})",
        worst.0, worst.1
    );
    assert!(
        worst.0 <= GRAD_TOL,
        "{model} {kind} {label}: gradient of {} off by {}",
        worst.1,
        worst.0
    );
}

fn check_trajectory(model: &str, kind: &str, label: &str, device: &Device, checkpointed: bool) {
    let (method, lr) = if kind == "full" {
        (Method::Full(FullConfig::default()), 1e-3)
    } else {
        (lora_method(), 1e-2)
    };
    let mut t = trainer(model, method, lr, device, checkpointed);
    let examples = batch_examples();
    let data = Dataset {
        target_tokens: examples.iter().map(targets).sum(),
        examples,
        skipped_lines: 0,
    };
    let mut steps = Vec::new();
    let mut sink = MemorySink::default();
    pollster::block_on(t.run(&data, None, &mut sink, &mut |e| {
        if let Event::Step {
            loss,
            grad_norm,
            lr,
            ..
        } = e
        {
            steps.push((*loss, *grad_norm, *lr));
        }
    }))
    .unwrap();
    let traj = &reference(model)[kind]["trajectory"];
    let mut worst = 0f64;
    for (i, (loss, norm, lr_used)) in steps.iter().enumerate() {
        let (wl, wn, wlr) = (
            traj["loss"][i].as_f64().unwrap(),
            traj["grad_norm"][i].as_f64().unwrap(),
            traj["lr"][i].as_f64().unwrap(),
        );
        assert!(
            (lr_used - wlr).abs() <= 1e-12 * wlr.max(1.0),
            "step {i}: lr {lr_used} vs {wlr}"
        );
        worst = worst
            .max(((loss - wl) / wl).abs())
            .max(((norm - wn) / wn).abs());
    }
    assert_eq!(steps.len(), 10);
    eprintln!(
        "{model} {kind} {label}{}: 10-step loss/grad-norm trajectory worst rel. error {worst:.2e}",
        if checkpointed {
            " (activations recomputed)"
        } else {
            ""
        }
    );
    assert!(
        worst <= TRAJ_TOL,
        "{model} {kind} {label}: trajectory off by {worst}"
    );
    assert_eq!(sink.checkpoints.last().unwrap().name, "final");
}

#[test]
fn one_step_gradients_match_pytorch_and_peft() {
    for (label, device) in devices() {
        for model in ["llama-gqa", "qwen3", "gpt2"] {
            for kind in ["full", "lora"] {
                check_one_step(model, kind, label, &device);
            }
        }
    }
}

#[test]
fn ten_step_trajectories_match_pytorch() {
    for (label, device) in devices() {
        for model in ["llama-gqa", "qwen3", "gpt2"] {
            for kind in ["full", "lora"] {
                check_trajectory(model, kind, label, &device, false);
            }
        }
    }
}

#[test]
fn recomputed_activations_keep_the_pytorch_trajectory() {
    for (label, device) in devices() {
        for kind in ["full", "lora"] {
            check_trajectory("llama-gqa", kind, label, &device, true);
        }
    }
}
