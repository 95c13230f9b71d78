//! patcher: make open-weight Llama-family models resistant to malicious fine-tuning, attack
//! them, and measure it. See `README.md` and `docs/` for the design.
//!
//! Modules follow the pipeline: [`model`] (the decoder and generation), [`io`] (Hugging Face
//! directories, GGUF import), [`tokenizer`] (tokenizers + chat templates), [`train`]
//! (optimizers, schedules, training state, checkpoints, the fine-tuning engine), [`bench`].

pub mod align;
pub mod attack;
pub mod bench;
pub mod data;
pub mod defense;
pub mod determinism;
pub mod error;
pub mod eval;
pub mod experiment;
pub mod fuzz;
pub mod io;
pub mod model;
pub mod report;
pub mod rng;
pub mod testing;
pub mod tiny;
pub mod tokenizer;
pub mod train;

pub use error::{Error, Result};

/// The compute device: `cpu` (burn's flex backend). GPU backends are cargo features.
pub fn device_from_name(name: &str) -> Result<burn::prelude::Device> {
    match name {
        "cpu" | "flex" => Ok(burn::prelude::Device::flex()),
        #[cfg(feature = "vulkan")]
        "vulkan" | "gpu" => Ok(burn::prelude::Device::vulkan(burn::tensor::DeviceKind::DiscreteGpu(0))),
        other => Err(Error::Invalid(format!(
            "unknown device `{other}`: this build supports `cpu`{} (GPU backends need a cargo feature: --features vulkan)",
            if cfg!(feature = "vulkan") { " and `vulkan`" } else { "" }
        ))),
    }
}
