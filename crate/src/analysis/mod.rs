//! Analyses of what fine-tuning changed in the weights.

pub mod plot;
pub mod spectrum;
