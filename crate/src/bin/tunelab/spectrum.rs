//! `tunelab spectrum BASE FINETUNED…|--adapter`: the rank of weight changes.

use std::path::PathBuf;

use tunelab::Error;
use tunelab::device::DeviceChoice;
use tunelab::files::write_dir;

use crate::output::{load, print_json};
use crate::{Global, Result};

#[derive(clap::Args)]
pub struct Args {
    /// Base model directory or URL.
    base: String,
    /// One or more fine-tuned checkpoints of the same architecture (several: how the rank
    /// grows with training).
    finetuned: Vec<String>,
    /// A PEFT LoRA adapter instead of fine-tuned checkpoints.
    #[arg(long, conflicts_with = "finetuned")]
    adapter: Option<String>,
    /// Fraction of σ² energy to explain.
    #[arg(long, default_value_t = 0.9)]
    threshold: f64,
    /// Only these modules (e.g. q_proj,down_proj or attn.c_proj).
    #[arg(long, value_delimiter = ',')]
    modules: Vec<String>,
    /// Scale c of the Gaussian baseline W + c·N(0,1).
    #[arg(long, default_value_t = 0.01)]
    noise: f64,
    /// Write SVG and PNG plots into this directory.
    #[arg(long)]
    plot: Option<PathBuf>,
}

pub fn run(a: Args, g: &Global) -> Result {
    let json = g.json;
    use tunelab::analysis::{plot, spectrum};
    let opts = spectrum::SpectrumOptions {
        threshold: a.threshold,
        modules: a.modules.clone(),
        noise_scale: a.noise,
        seed: 0,
    };
    opts.validate()?;
    if a.finetuned.is_empty() && a.adapter.is_none() {
        return Err(Error::Input(
            "give a fine-tuned checkpoint or --adapter DIR".into(),
        ));
    }
    // The SVDs run on the CPU (faer); weights are loaded on the CPU backend.
    let base = load(&a.base, None, DeviceChoice::Cpu, true)?;
    let mut runs: Vec<(String, Vec<spectrum::MatrixSpectrum>)> = Vec::new();
    let start = std::time::Instant::now();
    if let Some(ad) = &a.adapter {
        let with = load(&a.base, Some(ad), DeviceChoice::Cpu, true)?;
        runs.push((
            ad.clone(),
            pollster::block_on(spectrum::adapter_spectra(&with.model, &opts))?,
        ));
    }
    for ft in &a.finetuned {
        let other = load(ft, None, DeviceChoice::Cpu, true)?;
        runs.push((
            ft.clone(),
            pollster::block_on(spectrum::compare_checkpoints(
                &base.model,
                &other.model,
                &opts,
            ))?,
        ));
    }
    let seconds = start.elapsed().as_secs_f64();
    let summaries: Vec<_> = runs
        .iter()
        .map(|(n, s)| (n.clone(), spectrum::summarize(s, a.threshold)))
        .collect();
    if let Some(dir) = &a.plot {
        for (i, (name, s)) in runs.iter().enumerate() {
            let files = plot::spectrum_plots(s, a.threshold, &format!("rank of ΔW: {name}"))?;
            let sub = if runs.len() == 1 {
                dir.clone()
            } else {
                dir.join(format!("checkpoint-{i}"))
            };
            write_dir(&sub, &files)?;
        }
    }
    if json {
        print_json(&serde_json::json!({
            "threshold": a.threshold, "seconds": seconds,
            "runs": runs.iter().zip(&summaries).map(|((n, s), (_, sum))| serde_json::json!({"finetuned": n, "summary": sum, "matrices": s})).collect::<Vec<_>>(),
        }));
        return Ok(());
    }
    for ((name, s), (_, sum)) in runs.iter().zip(&summaries) {
        println!(
            "{name}: rank needed for {:.0}% of ΔW's σ² energy",
            a.threshold * 100.0
        );
        println!("| module | shape | ΔW | W_base | W_ft | c·N(0,1) | W_base + c·N |");
        println!("|---|---|---|---|---|---|---|");
        let opt = |v: Option<usize>| v.map_or("-".to_string(), |r| r.to_string());
        for m in s {
            println!(
                "| {} | {}×{} | {} | {} | {} | {} | {} |",
                m.module,
                m.shape[0],
                m.shape[1],
                m.rank_delta,
                opt(m.rank_base),
                opt(m.rank_ft),
                opt(m.rank_noise),
                opt(m.rank_base_plus_noise)
            );
        }
        println!(
            "mean rank: attention {:.1} ({:.0}% of full), MLP {:.1} ({:.0}% of full); first/last layers {:.1}, middle {}",
            sum.mean_rank_attention,
            100.0 * sum.mean_rank_fraction_attention,
            sum.mean_rank_mlp,
            100.0 * sum.mean_rank_fraction_mlp,
            sum.mean_rank_first_last,
            sum.mean_rank_middle
                .map_or("-".into(), |m| format!("{m:.1}"))
        );
    }
    if runs.len() > 1 {
        println!("growth over checkpoints (mean rank of ΔW):");
        for (name, sum) in &summaries {
            println!(
                "  {name}: attention {:.1}, MLP {:.1}",
                sum.mean_rank_attention, sum.mean_rank_mlp
            );
        }
    }
    eprintln!("analysed in {seconds:.2}s");
    Ok(())
}
