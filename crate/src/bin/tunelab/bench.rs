//! `tunelab bench [MODEL]`: training speed and memory of full fine-tuning and LoRA.

use tunelab::Error;
use tunelab::error::in_words;
use tunelab::event::Event;

use crate::output::{select, step_bar};
use crate::{Global, Result};

#[derive(clap::Args)]
pub struct Args {
    /// A preset shape (small, medium, smollm2-135m) with random weights, a config.json (random
    /// weights), or a model directory / Hugging Face base URL (its weights).
    #[arg(default_value = "small")]
    model: String,
    /// Comma-separated methods: full, lora<rank> (e.g. full,lora16,lora256).
    #[arg(long, value_delimiter = ',', default_value = "full,lora16,lora256")]
    methods: Vec<tunelab::bench::BenchMethod>,
    #[arg(long, default_value_t = 8)]
    batch: usize,
    #[arg(long, default_value_t = 128)]
    seq: usize,
    /// Timed steps (rounded up to whole windows).
    #[arg(long, default_value_t = 20)]
    steps: usize,
    /// Untimed steps after the first.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Steps per timing window (tokens/s is the median window).
    #[arg(long, default_value_t = 5)]
    window: usize,
    /// Recompute memory-bound activations in the backward pass.
    #[arg(long)]
    checkpoint_activations: bool,
    /// Kernels: tunelab (its WGSL kernels on a GPU, its Rust ones on the CPU — all but the
    /// optimizer's — where they apply) or burn (burn's only).
    #[arg(long, default_value = "tunelab")]
    kernels: tunelab::kernels::Kernels,
    /// Keep the frozen weight matrices (LoRA's base, frozen embeddings or head) in f16.
    #[arg(long)]
    frozen_f16: bool,
    /// Dropout on the attention probabilities (drawn inside tunelab's attention kernel).
    #[arg(long, default_value_t = 0.0)]
    attention_dropout: f64,
    /// Instead of training, time each hot-path op alone (the tiled matmul, a linear layer
    /// trained and frozen with LoRA, attention, RMSNorm, LM head + loss, AdamW update) at the
    /// model's shape, forward and forward + backward, with tunelab's
    /// kernels and burn's side by side (--steps timed calls each).
    #[arg(long)]
    ops: bool,
}

pub fn run(a: Args, g: &Global) -> Result {
    let json = g.json;
    use tunelab::bench;
    let selected = select(g.device)?;
    if a.ops {
        return run_ops(&a, &selected, json);
    }
    let device = tunelab::train::training_device(&selected.device, a.checkpoint_activations);
    let opts = bench::BenchOptions {
        batch: a.batch,
        seq: a.seq,
        steps: a.steps,
        warmup: a.warmup,
        window: a.window,
        checkpoint_activations: a.checkpoint_activations,
        kernels: a.kernels,
        frozen_f16: a.frozen_f16,
        attention_dropout: a.attention_dropout,
    };
    if !json {
        eprintln!("device: {}", selected.label);
        println!(
            "{:<8} {:>12} {:>11} {:>9} {:>10} {:>8} {:>10} {:>10} {:>10} {:>10} {:>9}",
            "method",
            "trainable",
            "weights MiB",
            "first s",
            "tok/s",
            "TFLOP/s",
            "dev MiB",
            "optim MiB",
            "activ MiB",
            "grads MiB",
            "RSS MiB"
        );
    }
    let mib = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.0}"));
    for method in &a.methods {
        let bar = step_bar(json);
        let (config, model) = pollster::block_on(bench::model(&a.model, &device, &mut |_| {}))?;
        fits_adapter(&selected, &config, &a, a.kernels)?;
        let r = pollster::block_on(bench::run(
            model,
            &config,
            &a.model,
            &device,
            &selected.label,
            *method,
            &opts,
            &mut |e| {
                if let Event::Progress(p) = e {
                    bar.set_length(p.total.unwrap_or(0));
                    bar.set_position(p.done);
                    bar.set_message(p.task.clone());
                }
            },
        ));
        bar.finish_and_clear();
        let r = r?;
        if json {
            println!("{}", serde_json::to_string(&r).expect("results serialize"));
        } else {
            println!(
                "{:<8} {:>12} {:>11.1} {:>9.2} {:>10.0} {:>8.3} {:>10} {:>10} {:>10} {:>10} {:>9}",
                method.to_string(),
                r.trainable_parameters,
                r.params.weights_mib,
                r.first_step_s,
                r.tokens_per_s,
                r.tflops,
                mib(r.memory.device_reserved_peak_mib),
                mib(r.memory.optimizer_state_mib),
                mib(r.memory.activations_mib),
                mib(r.memory.gradients_mib),
                mib(r.memory.peak_rss_mib)
            );
        }
    }
    Ok(())
}

/// Refuse a shape whose largest buffer the adapter cannot bind under `kernels` (`--ops` runs
/// burn's too, so it is checked with burn's logits and attention scores), before anything is
/// allocated.
fn fits_adapter(
    selected: &tunelab::device::Selected,
    config: &tunelab::hf::ModelConfig,
    a: &Args,
    kernels: tunelab::kernels::Kernels,
) -> Result {
    if let Some(adapter) = &selected.adapter {
        let step = tunelab::train::StepShape {
            batch: a.batch,
            seq: a.seq,
            kernels,
        };
        tunelab::train::trainer::check_buffer_limit(
            config,
            &step,
            adapter.max_storage_buffer_binding_size,
        )
        // The bench names its shape --batch and --seq.
        .map_err(|e| {
            Error::Input(in_words(
                &e.to_string(),
                &[("batch_size", "--batch"), ("seq_len", "--seq")],
            ))
        })?;
    }
    Ok(())
}

/// `--ops`: the per-op table, tunelab's kernels beside burn's where they can run.
fn run_ops(a: &Args, selected: &tunelab::device::Selected, json: bool) -> Result {
    use tunelab::kernels::Kernels;
    let device = &selected.device;
    let kernels: &[Kernels] = if tunelab::kernels::has_kernels(device) {
        &[Kernels::Tunelab, Kernels::Burn]
    } else {
        &[Kernels::Burn]
    };
    let bar = step_bar(json);
    let (config, model) = pollster::block_on(tunelab::bench::model(&a.model, device, &mut |_| {}))?;
    fits_adapter(selected, &config, a, Kernels::Burn)?;
    let results = pollster::block_on(tunelab::bench::ops::run(
        model,
        &config,
        &a.model,
        device,
        &selected.label,
        a.batch,
        a.seq,
        a.steps,
        kernels,
        &mut |e| {
            if let Event::Progress(p) = e {
                bar.set_length(p.total.unwrap_or(0));
                bar.set_position(p.done);
            }
        },
    ));
    bar.finish_and_clear();
    let results = results?;
    if json {
        for r in &results {
            println!("{}", serde_json::to_string(r).expect("results serialize"));
        }
        return Ok(());
    }
    eprintln!("device: {}", selected.label);
    println!(
        "{:<13} {:<8} {:>8} {:>9} {:>11} {:>13} {:>8}  shape",
        "op", "kernels", "first s", "fwd ms", "fwd+bwd ms", "rate", "vs burn"
    );
    for r in &results {
        let rate = match (r.tflops, r.gb_per_s) {
            (Some(t), _) => format!("{t:.3} TFLOP/s"),
            (_, Some(g)) => format!("{g:.1} GB/s"),
            _ => "-".into(),
        };
        let burn = results
            .iter()
            .find(|b| b.op == r.op && b.kernels == Kernels::Burn);
        let speedup = burn.map_or("-".into(), |b| format!("{:.2}x", b.train_ms / r.train_ms));
        println!(
            "{:<13} {:<8} {:>8.2} {:>9} {:>11.2} {:>13} {:>8}  {}",
            r.op,
            r.kernels.to_string(),
            r.first_s,
            r.forward_ms.map_or("-".into(), |m| format!("{m:.2}")),
            r.train_ms,
            rate,
            speedup,
            r.shape
        );
    }
    Ok(())
}
