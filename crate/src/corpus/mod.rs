//! Bundled data that tunelab builds itself, reproducibly from a seed: target-domain math
//! problems, forgetting evals from held-out text, and tokenizers for pretraining.

pub mod forgetting;
pub mod math;
pub mod tokenizer;
