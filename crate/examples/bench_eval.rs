//! Evaluation speed per device: `cargo run --release --example bench_eval -- MODEL HELLASWAG.jsonl`
//!
//! Multiple-choice items/s with the choices batched into one forward pass vs one pass per
//! choice, and greedy generation tokens/s with the KV cache vs recomputing the whole sequence.

use std::time::Instant;

use tunelab::Session;
use tunelab::device::{self, DeviceChoice};
use tunelab::eval::generate::{GenerateOptions, generate};
use tunelab::eval::suite::{self, EvalOptions, TaskKind};
use tunelab::hf::ModelSource;
use tunelab::model::{ids_tensor, read_f32};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a: Vec<String> = std::env::args().collect();
    let (model, file) = (a.get(1).ok_or("MODEL")?, a.get(2).ok_or("HELLASWAG.jsonl")?);
    let new_tokens = 64;
    println!(
        "| device | MC items/s batched | MC items/s per choice | speed-up | gen tok/s KV cache | gen tok/s no cache | speed-up |"
    );
    println!("|---|---|---|---|---|---|---|");
    for choice in [DeviceChoice::Cpu, DeviceChoice::Gpu] {
        let Ok(sel) = device::select(choice) else {
            continue;
        };
        let s = pollster::block_on(Session::load(
            &ModelSource::parse(model),
            sel.device.clone(),
            &mut |_| {},
        ))?;
        let mut reader = std::io::BufReader::new(std::fs::File::open(file)?);
        let task = suite::read_task(
            "hellaswag",
            TaskKind::Hellaswag,
            (file, &mut reader),
            None,
            false,
            None,
        )?;
        let mc = |batched: bool| -> Result<f64, tunelab::Error> {
            let opts = EvalOptions {
                batched,
                ..Default::default()
            };
            pollster::block_on(suite::run(
                &s.view(),
                std::slice::from_ref(&task),
                &opts,
                &mut |_| {},
            ))?; // warm-up
            let t = Instant::now();
            let r = pollster::block_on(suite::run(
                &s.view(),
                std::slice::from_ref(&task),
                &opts,
                &mut |_| {},
            ))?;
            Ok(r.metrics[0].items as f64 / t.elapsed().as_secs_f64())
        };
        let (batched, single) = (mc(true)?, mc(false)?);
        let prompt: Vec<u32> = (1..17).collect();
        let vocab = s.config.vocab_size();
        let opts = GenerateOptions {
            max_new_tokens: new_tokens,
            ..Default::default()
        };
        let t = Instant::now();
        pollster::block_on(generate(
            &s.model,
            &prompt,
            vocab,
            s.config.max_positions(),
            &s.device,
            &opts,
            |_| true,
        ))?;
        let cached = new_tokens as f64 / t.elapsed().as_secs_f64();
        // The same greedy decoding without a cache: the whole sequence each step.
        let t = Instant::now();
        let mut ids = prompt.clone();
        for _ in 0..new_tokens {
            let logits = s.model.forward(ids_tensor(&ids, vocab, &s.device)?, None);
            let n = ids.len();
            let last = pollster::block_on(read_f32(logits.slice_dim(1, n - 1..n)))?;
            let next = (0..vocab)
                .max_by(|&x, &y| last[x].total_cmp(&last[y]))
                .unwrap_or(0);
            ids.push(next as u32);
        }
        let uncached = new_tokens as f64 / t.elapsed().as_secs_f64();
        println!(
            "| {} | {batched:.1} | {single:.1} | {:.2}× | {cached:.1} | {uncached:.1} | {:.2}× |",
            sel.label,
            batched / single,
            cached / uncached
        );
    }
    Ok(())
}
