//! Fine-tuning: data, loss, optimizers, schedules and the step loop shared by full fine-tuning
//! and LoRA.

pub mod data;
pub mod loss;
pub mod optim;
#[cfg(feature = "native")]
pub mod resume;
pub mod schedule;
pub mod trainer;

pub use trainer::{CheckpointSink, FullConfig, Method, TrainConfig, Trainer, training_device};
