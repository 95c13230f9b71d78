//! Command-line overrides of an experiment file: `patcher run FILE --set align.train.seed=1`.
//!
//! Each `KEY=VALUE` replaces (or adds) one setting of the TOML document before the typed parse,
//! so an override is checked exactly like a setting written in the file (an unknown key or a
//! value of the wrong type is an error that names it). KEY is a dotted path through tables,
//! created where missing; a number indexes an array of tables, from 0
//! (`defenses.2.patcher.outer_lr=1e-4` sets the third defense's outer learning rate).
//! VALUE is a TOML value (`3`, `5e-5`, `true`, `"adamw"`, `[0, 1]`, `{ kind = "cosine" }`); a
//! value that does not parse as one is taken as a bare string (`base.path=models/x`).
//!
//! One file and a few overrides replace a file per variant (an alignment seed, a learning rate);
//! the run directory's `config.json` records the resolved config and its provenance the flags.

use toml::{Table, Value};

use crate::error::{Error, Result};

/// `text` (the TOML file named `source`) with every `KEY=VALUE` of `sets` applied in order.
pub fn apply(text: &str, source: &str, sets: &[String]) -> Result<Table> {
    let mut doc: Table = toml::from_str(text).map_err(|e| Error::Format { file: source.into(), why: e.to_string() })?;
    for set in sets {
        let bad = |why: String| Error::Config { file: source.into(), field: format!("--set {set}"), why };
        let (key, value) = set.split_once('=').ok_or_else(|| bad("expected KEY=VALUE".into()))?;
        let path: Vec<&str> = key.trim().split('.').map(str::trim).collect();
        if path.iter().any(|p| p.is_empty()) {
            return Err(bad(format!("`{}` is not a dotted key such as align.train.seed", key.trim())));
        }
        set_path(&mut doc, &path, parse_value(value.trim())).map_err(bad)?;
    }
    Ok(doc)
}

/// `text` (the TOML named `source`) with `sets` applied, parsed into `T` and checked by
/// `validate`. A parse or validation error is a format error of `source` followed by the flags,
/// so it names the command line that caused it.
pub fn parse<T: serde::de::DeserializeOwned>(
    text: &str,
    source: &str,
    sets: &[String],
    validate: impl FnOnce(&T) -> Result<()>,
) -> Result<T> {
    let doc = apply(text, source, sets)?;
    let file = format!("{source}{}", flags(sets));
    let parsed: T = Value::Table(doc)
        .try_into()
        .map_err(|e: toml::de::Error| Error::Format { file: file.clone(), why: e.to_string() })?;
    validate(&parsed).map_err(|e| Error::Format { file, why: e.to_string() })?;
    Ok(parsed)
}

/// The flags that make `sets` on a command line (` --set KEY=VALUE` each, single-quoted where
/// the shell would split or expand it), for messages and a run's recorded command.
pub fn flags(sets: &[String]) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "._-=/:,+".contains(c);
    sets.iter()
        .map(|s| {
            if s.chars().all(plain) { format!(" --set {s}") } else { format!(" --set '{}'", s.replace('\'', "'\\''")) }
        })
        .collect()
}

/// A TOML value, or the text itself as a string when it is not one.
fn parse_value(text: &str) -> Value {
    match toml::from_str::<Table>(&format!("v = {text}")) {
        Ok(mut t) if t.len() == 1 => t.remove("v").unwrap_or_else(|| Value::String(text.into())),
        _ => Value::String(text.into()),
    }
}

/// Put `value` at `path` under `table`, creating missing tables; the error says which part of
/// the path is not a table (or an index past an array's end).
fn set_path(table: &mut Table, path: &[&str], value: Value) -> std::result::Result<(), String> {
    let (last, parents) = path.split_last().expect("a non-empty path");
    let mut here = table;
    for (i, part) in parents.iter().enumerate() {
        let next = path[i + 1];
        let slot = here.entry(part.to_string()).or_insert_with(|| Value::Table(Table::new()));
        here = match slot {
            Value::Table(t) => t,
            Value::Array(items) => {
                let len = items.len();
                let n: usize = next.parse().map_err(|_| {
                    format!("`{}` is an array: index it with a number, not `{next}`", path[..=i].join("."))
                })?;
                let item = items.get_mut(n).ok_or_else(|| {
                    format!("`{}` has {len} entries, so index {n} is past its end", path[..=i].join("."))
                })?;
                if i + 1 == parents.len() {
                    return Err(format!(
                        "cannot replace a whole entry of `{}`; set one of its keys",
                        path[..=i].join(".")
                    ));
                }
                // The index consumed the next part; continue from the entry.
                return match item {
                    Value::Table(t) => set_path(t, &path[i + 2..], value),
                    _ => Err(format!("`{}` is not a table", path[..=i + 1].join("."))),
                };
            }
            other => {
                return Err(format!(
                    "`{}` is not a table but a setting of type {}",
                    path[..=i].join("."),
                    other.type_str()
                ));
            }
        };
    }
    here.insert(last.to_string(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "name = \"x\"\nseed = 0\n\n[align.train]\nsteps = 80\n\n[[defenses]]\nname = \"sft\"\nkind = \"sft\"\n\n[[defenses]]\nname = \"p\"\nkind = \"patcher\"\n";

    fn sets(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn values_land_at_their_paths_with_their_toml_types() {
        let doc = apply(
            FILE,
            "f.toml",
            &sets(&[
                "align.train.seed=2",
                "align.train.lr = 5e-5",
                "align.train.schedule={ kind = \"cosine\", warmup_steps = 10 }",
                "base.path=models/smollm2-135m-instruct",
                "attack_seeds=[0, 1, 2]",
                "defenses.1.patcher.outer_steps=3",
                "name=\"y\"",
                "seed=7",
            ]),
        )
        .unwrap();
        let train = doc["align"]["train"].as_table().unwrap();
        assert_eq!(train["seed"].as_integer(), Some(2));
        assert_eq!(train["steps"].as_integer(), Some(80), "untouched keys stay");
        assert!((train["lr"].as_float().unwrap() - 5e-5).abs() < 1e-18);
        assert_eq!(train["schedule"]["kind"].as_str(), Some("cosine"));
        assert_eq!(doc["base"]["path"].as_str(), Some("models/smollm2-135m-instruct"), "a bare string");
        assert_eq!(doc["attack_seeds"].as_array().unwrap().len(), 3);
        let d = doc["defenses"].as_array().unwrap();
        assert_eq!(d[1]["patcher"]["outer_steps"].as_integer(), Some(3));
        assert!(d[0].get("patcher").is_none(), "only the indexed entry changes");
        assert_eq!(doc["name"].as_str(), Some("y"));
        assert_eq!(doc["seed"].as_integer(), Some(7));
    }

    #[test]
    fn flags_quote_what_the_shell_would_split() {
        assert_eq!(flags(&sets(&["align.train.seed=1"])), " --set align.train.seed=1");
        assert_eq!(flags(&sets(&["name=\"a b\"", "x=it's"])), " --set 'name=\"a b\"' --set 'x=it'\\''s'");
    }

    #[test]
    fn bad_overrides_name_the_flag_and_the_key() {
        for (set, says) in [
            ("align.train.seed", "expected KEY=VALUE"),
            ("align..seed=1", "not a dotted key"),
            ("seed.x=1", "`seed` is not a table but a setting of type integer"),
            ("defenses.2.name=\"z\"", "has 2 entries, so index 2 is past its end"),
            ("defenses.first.name=\"z\"", "index it with a number, not `first`"),
            ("defenses.0=1", "cannot replace a whole entry"),
        ] {
            let e = apply(FILE, "f.toml", &sets(&[set])).unwrap_err().to_string();
            assert!(e.contains("f.toml") && e.contains(&format!("--set {set}")) && e.contains(says), "{set}: {e}");
        }
    }
}
