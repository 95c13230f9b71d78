//! Training: optimizers, learning-rate schedules, batches, the training step and checkpoints.

pub mod optim;
pub mod schedule;
pub mod step;
