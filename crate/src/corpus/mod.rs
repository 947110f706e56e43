//! Bundled target-domain data that tunelab generates itself, reproducibly from a seed.

pub mod math;
