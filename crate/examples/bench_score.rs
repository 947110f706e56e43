//! Scoring throughput per device: `cargo run --release --example bench_score -- MODEL [TOKENS]`.
//!
//! Loads MODEL once per device, times the first forward pass (shader compilation and autotune
//! on wgpu) separately from the steady state, and prints tokens/s for each device side by side.

use std::time::Instant;

use tunelab::Session;
use tunelab::device::{self, DeviceChoice};
use tunelab::hf::ModelSource;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let model = args.get(1).ok_or("usage: bench_score MODEL [TOKENS]")?;
    let source = ModelSource::parse(model);
    println!("| device | load s | first call s | steady tokens/s | tokens/call |");
    println!("|---|---|---|---|---|");
    for choice in [DeviceChoice::Cpu, DeviceChoice::Gpu] {
        let selected = match device::select(choice) {
            Ok(s) => s,
            Err(e) => {
                println!("| {choice:?} | unavailable: {e} | | | |");
                continue;
            }
        };
        let t0 = Instant::now();
        let session = pollster::block_on(Session::load(&source, selected.device, &mut |_| {}))?;
        let load = t0.elapsed().as_secs_f64();
        let n: usize = args
            .get(2)
            .and_then(|s| s.parse().ok())
            .unwrap_or(session.config.max_positions().min(512));
        let vocab = session.config.vocab_size() as u32;
        let ids: Vec<u32> = (0..n as u32).map(|i| (i * 7919 + 13) % vocab).collect();
        let t1 = Instant::now();
        pollster::block_on(session.score_ids(&ids))?;
        let first = t1.elapsed().as_secs_f64();
        let reps = 5;
        let t2 = Instant::now();
        for _ in 0..reps {
            pollster::block_on(session.score_ids(&ids))?;
        }
        let steady = (reps * n) as f64 / t2.elapsed().as_secs_f64();
        println!(
            "| {} | {load:.2} | {first:.2} | {steady:.0} | {n} |",
            selected.label
        );
    }
    Ok(())
}
