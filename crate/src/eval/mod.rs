//! Measuring a model: likelihood of text, and generation.

pub mod generate;
pub mod perplexity;
