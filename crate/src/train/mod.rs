//! Fine-tuning: data, loss, optimizers, schedules, checkpoint sinks and the step loop shared by
//! full fine-tuning and LoRA.

pub mod data;
pub mod loss;
pub mod optim;
pub mod resume;
pub mod schedule;
pub mod sink;
pub mod trainer;

pub use sink::{CheckpointSink, MemorySink};
pub use trainer::{FullConfig, Method, StepShape, TrainConfig, Trainer, training_device};
