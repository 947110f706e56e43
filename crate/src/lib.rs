//! tunelab: a fine-tuning lab for small causal language models, native (wgpu or CPU) and in the
//! browser (WebGPU), from one crate.
//!
//! Data flows one way: a source (directory or URL) → [`hf`] parsing → [`model`] building →
//! [`train`] / [`eval`] → results. [`session::Session`] (a loaded model) and [`run::Run`] (a
//! fine-tuning run of it, set up by a [`run::RunSpec`]) are the API every shell uses: the CLI,
//! the web page, the experiment runner and pretraining.

pub mod analysis;
pub mod bench;
pub mod corpus;
pub mod device;
pub mod error;
pub mod eval;
pub mod event;
pub mod experiment;
pub mod export;
pub mod files;
pub mod gguf;
pub mod hf;
pub mod info;
pub mod kernels;
pub mod model;
#[cfg(feature = "native")]
pub mod pretrain;
pub mod rng;
pub mod run;
pub mod session;
pub mod train;
#[cfg(target_arch = "wasm32")]
pub mod web;

pub use error::{Error, Result};
pub use event::Event;
pub use run::{Run, RunSpec};
pub use session::Session;
