//! Typed errors of the library. Binaries wrap them with `anyhow` at the edge.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{file}: field `{field}`: {why}")]
    Config { file: String, field: String, why: String },
    #[error("{file}: tensor `{tensor}`: {why}")]
    Tensor { file: String, tensor: String, why: String },
    #[error("{file}: {why}")]
    Format { file: String, why: String },
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("chat template: {0}")]
    Template(String),
    #[error("training diverged at step {step}: {what} is not finite")]
    NonFinite { step: usize, what: String },
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
    #[error(transparent)]
    Gguf(#[from] crate::io::gguf::GgufError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attach a path to an `std::io::Error`.
pub trait IoContext<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|source| Error::Io { path: path.into(), source })
    }
}
