//! The data module's typed error. Every variant names the file it is about and, for a bad row,
//! the 1-based line (JSONL line, CSV record line, or the line where a JSON array element
//! starts), so a user can open the file at the right place.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A malformed row: bad JSON, missing field, wrong type, empty prompt.
    #[error("{}:{line}: {message}", .path.display())]
    Row { path: PathBuf, line: usize, message: String },
    /// A problem with the file as a whole (unparseable JSON document, unknown layout).
    #[error("{}: {message}", .path.display())]
    File { path: PathBuf, message: String },
    /// A preset's file or the shared data directory is absent.
    #[error(
        "{}: not found; preset `{preset}` needs the shared datasets (/work/shared/data, found as \
         `../shared/data` from the working directory; set PATCHER_DATA_DIR to use another place)",
        .path.display()
    )]
    MissingData { preset: String, path: PathBuf },
    #[error("unknown preset `{name}`; known presets: {known}")]
    UnknownPreset { name: String, known: String },
    /// A request a preset cannot serve (e.g. a training split of an evaluation-only set).
    #[error("preset `{preset}`: {message}")]
    Preset { preset: String, message: String },
    #[error("synthetic world: {0}")]
    Synth(String),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
}

impl DataError {
    pub fn row(path: &Path, line: usize, message: impl Into<String>) -> Self {
        DataError::Row { path: path.to_path_buf(), line, message: message.into() }
    }

    pub fn file(path: &Path, message: impl Into<String>) -> Self {
        DataError::File { path: path.to_path_buf(), message: message.into() }
    }

    pub fn io(path: &Path, source: std::io::Error) -> Self {
        DataError::Io { path: path.to_path_buf(), source }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_file_and_line() {
        let e = DataError::row(Path::new("d/x.csv"), 7, "field `prompt`: empty");
        assert_eq!(e.to_string(), "d/x.csv:7: field `prompt`: empty");
        let e = DataError::MissingData { preset: "alpaca".into(), path: "../shared/data".into() };
        assert!(e.to_string().contains("../shared/data: not found; preset `alpaca`"), "{e}");
    }
}
