//! Training throughput and peak memory of one configuration:
//! `cargo run --release --example bench_train -- MODEL full|lora RANK cpu|gpu [STEPS] [BATCH] [SEQ]`
//!
//! Run one configuration per process (peak RSS only grows); `scripts/bench.sh` runs the grid and
//! the PyTorch/PEFT counterpart. Prints one JSON line.

use std::time::Instant;

use tunelab::Session;
use tunelab::device::{self, DeviceChoice};
use tunelab::hf::ModelSource;
use tunelab::model::lora::{LoraConfig, LoraInit};
use tunelab::model::read_f32;
use tunelab::train::data::{Example, collate};
use tunelab::train::{FullConfig, Method, TrainConfig, Trainer};

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a: Vec<String> = std::env::args().collect();
    if a.len() < 5 {
        return Err("usage: bench_train MODEL full|lora RANK cpu|gpu [STEPS] [BATCH] [SEQ]".into());
    }
    let rank: usize = a[3].parse()?;
    let choice = if a[4] == "gpu" {
        DeviceChoice::Gpu
    } else {
        DeviceChoice::Cpu
    };
    let steps: usize = a.get(5).map(|s| s.parse()).transpose()?.unwrap_or(5);
    let batch: usize = a.get(6).map(|s| s.parse()).transpose()?.unwrap_or(8);
    let seq: usize = a.get(7).map(|s| s.parse()).transpose()?.unwrap_or(128);
    let selected = device::select(choice)?;
    let device = selected.device.clone().autodiff();
    let session = pollster::block_on(Session::load(
        &ModelSource::parse(&a[1]),
        device.clone(),
        &mut |_| {},
    ))?;
    let method = match a[2].as_str() {
        "full" => Method::Full(FullConfig::default()),
        _ => Method::Lora(LoraConfig {
            rank,
            alpha: 2.0 * rank as f64,
            dropout: 0.0,
            rslora: false,
            init: LoraInit::Kaiming,
            targets: vec!["all".into()],
        }),
    };
    let vocab = session.config.vocab_size() as u32;
    let config = TrainConfig {
        batch_size: batch,
        ..TrainConfig::new(method, 1e-4)
    };
    let mut t = Trainer::new(
        session.model,
        device.clone(),
        config,
        String::new(),
        vec![],
        String::new(),
        None,
    )?;
    let examples: Vec<Example> = (0..batch)
        .map(|b| {
            let ids: Vec<u32> = (0..seq as u32)
                .map(|i| (i * 7919 + b as u32 * 104_729) % vocab)
                .collect();
            Example {
                labels: ids.iter().map(|&i| i as i64).collect(),
                mask: vec![true; seq],
                ids,
            }
        })
        .collect();
    let refs: Vec<&Example> = examples.iter().collect();
    let batch_t = collate(&refs, &device);
    // First step: shader compilation / autotune on wgpu.
    let t0 = Instant::now();
    let (loss, _) = t.step(std::slice::from_ref(&batch_t), 1e-4);
    pollster::block_on(read_f32(loss))?;
    let first = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let mut last = None;
    for _ in 0..steps {
        last = Some(t.step(std::slice::from_ref(&batch_t), 1e-4).0);
    }
    pollster::block_on(read_f32(last.expect("steps > 0")))?;
    let secs = t1.elapsed().as_secs_f64() / steps as f64;
    println!(
        "{}",
        serde_json::json!({
            "engine": "tunelab", "device": selected.label, "method": a[2], "rank": if a[2] == "full" { 0 } else { rank },
            "trainable_parameters": t.trainable_parameters, "first_step_s": first,
            "step_s": secs, "tokens_per_s": (batch * seq) as f64 / secs, "peak_rss_mib": peak_rss_mib(),
        })
    );
    Ok(())
}
