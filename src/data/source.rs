//! Data specs as users write them on the command line and in experiment files:
//! a file path (JSONL / JSON / CSV / TSV, column conventions detected), or `preset:NAME[:SPLIT]`
//! for a named preset over the shared data directory (split `train` by default for training
//! roles; `eval` or `all` may be asked for).

use std::path::Path;

use crate::data::presets::DataDir;
use crate::data::readers::read_file;
use crate::data::split::Split;
use crate::data::{Conversation, DataError};

/// Load the conversations named by `spec`; `default_split` applies to presets without one.
pub fn load(spec: &str, default_split: Split) -> Result<Vec<Conversation>, DataError> {
    if let Some(rest) = spec.strip_prefix("preset:") {
        let (name, split) = match rest.split_once(':') {
            Some((n, s)) => {
                (n, s.parse::<Split>().map_err(|message| DataError::Preset { preset: n.to_string(), message })?)
            }
            None => (rest, default_split),
        };
        return DataDir::from_env().load(name, split);
    }
    let path = Path::new(spec);
    let conversations = read_file(path)?;
    if conversations.is_empty() {
        return Err(DataError::file(path, "no conversations in this file"));
    }
    Ok(conversations)
}

/// Load several specs and concatenate them.
pub fn load_all(specs: &[String], default_split: Split) -> Result<Vec<Conversation>, DataError> {
    let mut out = Vec::new();
    for s in specs {
        out.extend(load(s, default_split)?);
    }
    Ok(out)
}
