//! Data specs as users write them on the command line and in experiment files:
//! a file path (JSONL / JSON / CSV / TSV, column conventions detected), or `preset:NAME[:SPLIT]`
//! for a named preset over the shared data directory (split `train` by default for training
//! roles; `eval` or `all` may be asked for). Either may end in `*N` to repeat its rows N times,
//! which weights a small set up inside a role's mixture (`preset:benign-lookalike*4`): the
//! alignment samples a role's rows uniformly.

use std::path::Path;

use crate::data::presets::DataDir;
use crate::data::readers::read_file;
use crate::data::split::Split;
use crate::data::{Conversation, DataError};

/// Most times a spec may repeat its rows.
pub const MAX_REPEAT: usize = 100;

/// Load the conversations named by `spec`; `default_split` applies to presets without one.
pub fn load(spec: &str, default_split: Split) -> Result<Vec<Conversation>, DataError> {
    let (spec, repeat) = split_repeat(spec)?;
    let rows = load_once(spec, default_split)?;
    let n = rows.len();
    Ok(rows.into_iter().cycle().take(n * repeat).collect())
}

/// `SPEC*N` → (`SPEC`, N); a spec without a numeric `*N` suffix repeats once.
fn split_repeat(spec: &str) -> Result<(&str, usize), DataError> {
    let Some((base, count)) = spec.rsplit_once('*') else { return Ok((spec, 1)) };
    if count.is_empty() || !count.bytes().all(|b| b.is_ascii_digit()) {
        return Ok((spec, 1));
    }
    match count.parse::<usize>() {
        Ok(n) if (1..=MAX_REPEAT).contains(&n) && !base.is_empty() => Ok((base, n)),
        _ => Err(DataError::file(
            Path::new(spec),
            format!("repeat count `*{count}`: expected a whole number from 1 to {MAX_REPEAT} after a data spec"),
        )),
    }
}

fn load_once(spec: &str, default_split: Split) -> Result<Vec<Conversation>, DataError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeat_suffix() {
        assert_eq!(split_repeat("preset:benign-lookalike*4").unwrap(), ("preset:benign-lookalike", 4));
        assert_eq!(split_repeat("preset:benign-alpaca:eval").unwrap(), ("preset:benign-alpaca:eval", 1));
        assert_eq!(split_repeat("dir/a*b.jsonl").unwrap(), ("dir/a*b.jsonl", 1));
        for bad in ["x.jsonl*0", "x.jsonl*101", "*3"] {
            let err = split_repeat(bad).unwrap_err().to_string();
            assert!(err.starts_with(bad) && err.contains("repeat count"), "{err}");
        }
        // Rows come back N times in order, on a real file.
        let dir = std::env::temp_dir().join(format!("patcher-source-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("two.jsonl");
        std::fs::write(&f, "{\"prompt\":\"a\",\"response\":\"1\"}\n{\"prompt\":\"b\",\"response\":\"2\"}\n").unwrap();
        let rows = load(&format!("{}*3", f.display()), Split::Train).unwrap();
        let prompts: Vec<&str> = rows.iter().map(|c| c.prompt()).collect();
        assert_eq!(prompts, ["a", "b", "a", "b", "a", "b"]);
        assert_eq!(load(&f.display().to_string(), Split::Train).unwrap().len(), 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
