//! Files in and out: Hugging Face model directories, GGUF import, atomic writes.

use std::path::Path;

/// Write `data` to `path` atomically: write a temporary sibling, fsync it, then rename it over
/// `path`. A reader (or a run killed mid-write) never sees a half-written file under `path`.
pub fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        // A full disk or a failed rename leaves no temporary file behind.
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Write `value` as pretty-printed JSON to `path`, atomically ([`write_atomic`]); an error names
/// the path.
pub fn write_json<T: serde::Serialize + ?Sized>(path: &Path, value: &T) -> crate::error::Result<()> {
    use crate::error::IoContext;
    write_atomic(path, serde_json::to_string_pretty(value).expect("json").as_bytes()).at(path)
}

/// Deserialize an `f64` written as a number, or as `null` for a value that was not measured
/// (serde_json writes a non-finite `f64` as `null`): `null` reads back as `NaN`.
pub fn nan_if_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    use serde::Deserialize;
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

pub mod fetch;
pub mod gguf;
pub mod hf;
pub mod safetensors_header;
