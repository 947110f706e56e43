//! The learning-vs-forgetting experiment (../PAPER.md): configuration, the runner that trains and
//! evaluates every method at every budget, the results and the report.

pub mod config;
pub mod evaluate;
pub mod plan;
pub mod report;
pub mod results;
#[cfg(feature = "native")]
pub mod runner;

pub use config::ExperimentConfig;
pub use results::Results;
