//! Llama-family and Gemma 3 decoders, and text generation.

pub mod config;
pub mod fixed;
pub mod gemma3;
pub mod generate;
pub mod llama;
pub mod soup;

pub use config::{HfConfig, LlamaConfig};
pub use llama::{KvCache, Llama, ParamSpec, Probe, param_specs};
