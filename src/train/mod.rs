//! Training: optimizers, learning-rate schedules, batch streams, the training step, LoRA,
//! checkpoints, progress reporting and the fine-tuning engine that alignment, attacks and
//! Patcher share.

pub mod batches;
pub mod checkpoint;
pub mod chunked_ce;
pub mod driver;
pub mod engine;
pub mod lora;
pub mod optim;
pub mod progress;
pub mod schedule;
pub mod step;
