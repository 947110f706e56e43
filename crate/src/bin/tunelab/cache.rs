//! `tunelab cache ls|rm`: the models in the Hugging Face cache (shared with transformers).

use tunelab::hf::hub::{self, HubOptions};

use crate::output::print_json;
use crate::{Global, Result};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(clap::Subcommand)]
enum Action {
    /// List cached models: size, revisions, snapshots, unfinished downloads.
    Ls,
    /// Delete a cached model (`org/name`), every revision of it.
    Rm {
        /// The model's Hub id, `org/name`.
        repo: String,
    },
}

pub fn run(a: Args, g: &Global) -> Result {
    let cache = HubOptions::from_env().cache;
    match a.action {
        Action::Ls => {
            let repos = hub::list_cache(&cache)?;
            if g.json {
                print_json(&serde_json::json!({"cache": cache, "models": repos}));
                return Ok(());
            }
            println!("cache: {}", cache.display());
            if repos.is_empty() {
                println!("(no models)");
            }
            for r in &repos {
                let refs: Vec<String> = r
                    .refs
                    .iter()
                    .map(|(name, commit)| format!("{name}={}", &commit[..commit.len().min(8)]))
                    .collect();
                let partial = if r.incomplete_bytes > 0 {
                    format!(", {:.1} MiB unfinished", mib(r.incomplete_bytes))
                } else {
                    String::new()
                };
                println!(
                    "{:<40} {:>9.1} MiB  {} files, {} snapshot(s){partial}  {}",
                    r.repo,
                    mib(r.bytes),
                    r.files,
                    r.snapshots.len(),
                    refs.join(" ")
                );
            }
        }
        Action::Rm { repo } => {
            let freed = hub::remove_cached(&cache, &repo)?;
            if g.json {
                print_json(&serde_json::json!({"removed": repo, "bytes": freed}));
            } else {
                println!("removed {repo} ({:.1} MiB)", mib(freed));
            }
        }
    }
    Ok(())
}

fn mib(bytes: u64) -> f64 {
    tunelab::hf::mib(bytes)
}
