//! Progress of long stages where a person looks: a live bar when stderr is a terminal, and a
//! plain line every few percent (step, the stage's figures, rate, elapsed and time left) when
//! it is not (a log file, `nohup`, CI), where a bar would print nothing.

use std::io::{IsTerminal, Write};
use std::time::Instant;

/// Print a plain line at every this many percent of the stage.
const EVERY_PERCENT: usize = 5;

/// A stage's progress (see the module docs).
pub struct Progress {
    bar: Option<indicatif::ProgressBar>,
    plain: Option<Plain>,
}

struct Plain {
    name: String,
    total: usize,
    start: usize,
    t0: Instant,
    /// The next percentage that prints a line.
    next: usize,
}

impl Plain {
    /// The line for step `pos`, if it crosses the next threshold (always for the last step).
    fn line(&mut self, pos: usize, msg: &str, elapsed_s: f64) -> Option<String> {
        let pct = 100 * pos / self.total.max(1);
        if pct < self.next && pos < self.total {
            return None;
        }
        self.next = (pct / EVERY_PERCENT + 1) * EVERY_PERCENT;
        let done = pos.saturating_sub(self.start);
        let rate = if elapsed_s > 0.0 { done as f64 / elapsed_s } else { 0.0 };
        let left = if rate > 0.0 { (self.total - pos.min(self.total)) as f64 / rate } else { f64::NAN };
        Some(format!(
            "[{}] step {pos}/{} ({pct}%) | {msg} | {rate:.2} steps/s | elapsed {} | left {}",
            self.name,
            self.total,
            clock(elapsed_s),
            clock(left)
        ))
    }
}

/// `1h02m03s` / `4m05s` / `6s` (`?` when unknown).
pub fn clock(s: f64) -> String {
    if !s.is_finite() {
        return "?".into();
    }
    let s = s.round() as u64;
    match (s / 3600, (s / 60) % 60, s % 60) {
        (0, 0, sec) => format!("{sec}s"),
        (0, m, sec) => format!("{m}m{sec:02}s"),
        (h, m, sec) => format!("{h}h{m:02}m{sec:02}s"),
    }
}

impl Progress {
    /// Progress of a stage of `total` steps named `name`, starting at step `at` (a resumed run).
    pub fn new(total: usize, at: usize, name: &str) -> Self {
        if std::io::stderr().is_terminal() {
            let bar = indicatif::ProgressBar::new(total as u64);
            bar.set_style(
                indicatif::ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {elapsed}<{eta} {msg}")
                    .expect("template")
                    .progress_chars("=> "),
            );
            bar.set_prefix(name.to_string());
            bar.set_position(at as u64);
            Self { bar: Some(bar), plain: None }
        } else {
            let next = (100 * at / total.max(1) / EVERY_PERCENT + 1) * EVERY_PERCENT;
            Self { bar: None, plain: Some(Plain { name: name.into(), total, start: at, t0: Instant::now(), next }) }
        }
    }

    /// Step `pos` is done; `msg` carries the stage's figures (loss, ...).
    pub fn update(&mut self, pos: usize, msg: &str) {
        if let Some(b) = &self.bar {
            b.set_position(pos as u64);
            b.set_message(msg.to_string());
        }
        if let Some(p) = &mut self.plain
            && let Some(line) = p.line(pos, msg, p.t0.elapsed().as_secs_f64())
        {
            let _ = writeln!(std::io::stderr(), "{line}");
        }
    }

    /// The stage ended: clear the bar (plain lines stay).
    pub fn finish(self) {
        if let Some(b) = self.bar {
            b.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_lines_every_five_percent_with_rate_and_time_left() {
        let mut p = Plain { name: "align".into(), total: 200, start: 0, t0: Instant::now(), next: EVERY_PERCENT };
        let lines: Vec<(usize, String)> =
            (1..=200).filter_map(|s| p.line(s, "loss 1.0", s as f64 * 0.5).map(|l| (s, l))).collect();
        // One line per 5% (steps 10, 20, ..., 200).
        assert_eq!(lines.len(), 20, "{lines:?}");
        assert_eq!(lines.iter().map(|(s, _)| *s).collect::<Vec<_>>(), (1..=20).map(|i| i * 10).collect::<Vec<_>>());
        // At step 100 of 200 after 50 s: 2 steps/s, 50 s left.
        let mid = &lines[9].1;
        assert_eq!(mid, "[align] step 100/200 (50%) | loss 1.0 | 2.00 steps/s | elapsed 50s | left 50s");
        assert!(lines[19].1.contains("(100%)") && lines[19].1.ends_with("left 0s"));
    }

    #[test]
    fn a_resumed_stage_counts_its_rate_from_where_it_resumed() {
        let mut p = Plain { name: "patcher".into(), total: 10, start: 6, t0: Instant::now(), next: 65 };
        assert!(p.line(6, "", 0.0).is_none());
        // Step 7 is 70%: one step in 4 s since resuming -> 0.25 steps/s, 3 steps left = 12 s.
        let l = p.line(7, "K 16", 4.0).unwrap();
        assert!(l.contains("step 7/10 (70%)") && l.contains("0.25 steps/s") && l.ends_with("left 12s"), "{l}");
    }

    #[test]
    fn clock_formats() {
        assert_eq!(clock(5.4), "5s");
        assert_eq!(clock(245.0), "4m05s");
        assert_eq!(clock(3723.0), "1h02m03s");
        assert_eq!(clock(f64::NAN), "?");
    }
}
