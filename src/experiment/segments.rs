//! A run directory's segment log, `segments.json`: one entry per invocation of `patcher run` or
//! `patcher sweep` that did work in the directory (issue 16, item 2: a run longer than one
//! sitting records each segment's commit and wall-clock).
//!
//! An entry is added when the invocation's first stage or sweep cell starts (an invocation that
//! finds everything done, or fails on its inputs, adds none), with its command, commit and start
//! time from the caller's [`Provenance`] (the runner reads no clock of its own). A heartbeat
//! thread rewrites the entry's `seconds` every `every` while the invocation runs, so a killed
//! segment keeps its wall-clock to within that period and stays `running`; the invocation's end
//! writes `done` or `failed: <error>`. The file is rewritten atomically each time.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::io::write_json;
use crate::report::Provenance;

/// The log's file name in a run directory.
pub const SEGMENTS: &str = "segments.json";

/// One invocation that worked in the run directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Segment {
    /// The command, as the caller recorded it.
    pub command: String,
    /// The code's commit.
    pub commit: String,
    /// When the invocation started (ISO 8601, UTC).
    pub started: String,
    /// Wall-clock from its first stage or cell to its end, or to the last heartbeat.
    pub seconds: f64,
    /// `running` (still running, or killed), `done`, or `failed: <error>`.
    pub outcome: String,
}

/// The segments recorded in `dir` (none when the file is absent).
pub fn read(dir: &Path) -> Result<Vec<Segment>> {
    load(&dir.join(SEGMENTS))
}

fn load(path: &Path) -> Result<Vec<Segment>> {
    if path.exists() { super::load_json(path) } else { Ok(vec![]) }
}

/// This invocation's entry in the log, once it has started one.
pub struct SegmentLog {
    path: PathBuf,
    provenance: Provenance,
    every: Duration,
    open: Option<Open>,
}

struct Open {
    index: usize,
    t0: Instant,
    /// Dropping it wakes and ends the heartbeat at once.
    stop: std::sync::mpsc::Sender<()>,
    heartbeat: std::thread::JoinHandle<()>,
}

impl Open {
    /// Stop the heartbeat; returns the entry's index and wall-clock.
    fn close(self) -> (usize, f64) {
        drop(self.stop);
        let _ = self.heartbeat.join();
        (self.index, self.t0.elapsed().as_secs_f64())
    }
}

/// Rewrite entry `index`'s seconds (and outcome, when given).
fn update(path: &Path, index: usize, seconds: f64, outcome: Option<&str>) -> Result<()> {
    let mut all: Vec<Segment> = super::load_json(path)?;
    if let Some(s) = all.get_mut(index) {
        s.seconds = seconds;
        if let Some(o) = outcome {
            s.outcome = o.to_string();
        }
    }
    write_json(path, &all)
}

impl SegmentLog {
    /// A log for an invocation in `dir` described by `provenance`, with a heartbeat every `every`.
    pub fn new(dir: &Path, provenance: Provenance, every: Duration) -> Self {
        Self { path: dir.join(SEGMENTS), provenance, every, open: None }
    }

    /// Add this invocation's entry, unless it has one already, and start its heartbeat.
    pub fn begin(&mut self) -> Result<()> {
        if self.open.is_some() {
            return Ok(());
        }
        let mut all = load(&self.path)?;
        let p = &self.provenance;
        let known = |s: &str| if s.is_empty() { "unknown".to_string() } else { s.to_string() };
        all.push(Segment {
            command: known(&p.commands.join(" && ")),
            commit: known(&p.commit),
            started: known(&p.created),
            seconds: 0.0,
            outcome: "running".into(),
        });
        write_json(&self.path, &all)?;
        let (index, t0) = (all.len() - 1, Instant::now());
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let (path, every) = (self.path.clone(), self.every);
        let heartbeat = std::thread::spawn(move || {
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
                let _ = update(&path, index, t0.elapsed().as_secs_f64(), None);
            }
        });
        self.open = Some(Open { index, t0, stop, heartbeat });
        Ok(())
    }

    /// End the entry (if this invocation started one): its wall-clock and `outcome`.
    pub fn end(&mut self, outcome: &str) -> Result<()> {
        let Some(o) = self.open.take() else { return Ok(()) };
        let (index, seconds) = o.close();
        update(&self.path, index, seconds, Some(outcome))
    }
}

impl Drop for SegmentLog {
    fn drop(&mut self) {
        // An invocation that returned without `end` (a panic) leaves its entry `running`.
        if let Some(o) = self.open.take() {
            o.close();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("patcher-segments-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn prov(cmd: &str, commit: &str) -> Provenance {
        Provenance { commands: vec![cmd.into()], created: "2026-12-07T20:00:00Z".into(), commit: commit.into() }
    }

    /// Two invocations append two entries; the heartbeat records the time of one that is still
    /// running (as a killed one stays); one that found nothing to do adds none.
    #[test]
    fn each_invocation_that_works_appends_its_segment_and_its_heartbeat_keeps_its_time() {
        let dir = tmp("log");
        let mut idle = SegmentLog::new(&dir, prov("patcher run a.toml", "aaa"), Duration::from_millis(30));
        idle.end("done").unwrap();
        assert!(read(&dir).unwrap().is_empty(), "an invocation without work records nothing");

        let mut first = SegmentLog::new(&dir, prov("patcher run a.toml", "aaa"), Duration::from_millis(30));
        first.begin().unwrap();
        first.begin().unwrap(); // once per invocation
        std::thread::sleep(Duration::from_millis(200));
        let running = read(&dir).unwrap();
        assert_eq!(running.len(), 1);
        assert_eq!(running[0].outcome, "running");
        assert!(running[0].seconds >= 0.1, "the heartbeat wrote {} s", running[0].seconds);
        // Killed: the entry stays `running` with the time of its last heartbeat.
        drop(first);
        let killed = read(&dir).unwrap();
        assert_eq!((killed[0].outcome.as_str(), killed[0].commit.as_str()), ("running", "aaa"));

        let mut second = SegmentLog::new(&dir, prov("patcher sweep a.toml", "bbb"), Duration::from_secs(60));
        second.begin().unwrap();
        std::thread::sleep(Duration::from_millis(50));
        second.end("done").unwrap();
        let all = read(&dir).unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0], killed[0], "an earlier segment is kept as it was");
        assert_eq!((all[1].command.as_str(), all[1].commit.as_str()), ("patcher sweep a.toml", "bbb"));
        assert_eq!((all[1].started.as_str(), all[1].outcome.as_str()), ("2026-12-07T20:00:00Z", "done"));
        assert!(all[1].seconds >= 0.04 && all[1].seconds < 30.0, "{}", all[1].seconds);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
