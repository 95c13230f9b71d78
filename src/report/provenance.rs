//! Where a run's results came from: the commands that reproduce it, when it was made and the
//! code's commit. The caller of the experiment runner supplies these ([`Provenance::now`] for a
//! run made now), so the runner itself reads no clock and runs no `git`.

/// The commands, time and commit recorded in `results.json`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Provenance {
    /// The exact commands that reproduce the run.
    pub commands: Vec<String>,
    /// When the run was made (ISO 8601, UTC), or `unknown`.
    pub created: String,
    /// Git commit of the code (`git rev-parse --short HEAD` in the working directory), or
    /// `unknown`.
    pub commit: String,
}

impl Provenance {
    /// `commands`, with the current time (from `date -u`) and commit (from `git`).
    pub fn now(commands: Vec<String>) -> Self {
        Self { commands, created: now_iso(), commit: git_commit() }
    }
}

fn now_iso() -> String {
    let out = std::process::Command::new("date").arg("-u").arg("+%Y-%m-%dT%H:%M:%SZ").output();
    out.ok().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).unwrap_or_else(|| "unknown".into())
}

fn git_commit() -> String {
    let out = std::process::Command::new("git").args(["rev-parse", "--short", "HEAD"]).output();
    match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_string(),
        _ => "unknown".into(),
    }
}
