//! Measuring a model: likelihood of text, multiple choice, generation tasks and code, scored as
//! lm-evaluation-harness scores them.

pub mod code;
pub mod generate;
pub mod gsm8k;
pub mod loglik;
pub mod multiple_choice;
pub mod perplexity;
pub mod suite;
pub mod tasks;
