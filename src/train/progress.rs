//! Progress of long stages where a person looks: a live bar when stderr is a terminal, and a
//! plain line every few percent (step, the stage's figures, rate, elapsed and time left) when
//! it is not (a log file, `nohup`, CI), where a bar would print nothing. Plain lines are at
//! least [`MIN_INTERVAL_S`] apart, so short stages stay quiet in a log.
//!
//! Training stages hold their [`Progress`]; an evaluation reports through the calling
//! thread's *labelled* stage ([`labelled`], [`begin`], [`advance`], [`end`]), so the loops deep
//! in generation and scoring need no extra parameter and print nothing unless a caller asked.

use std::io::{IsTerminal, Write};
use std::time::Instant;

/// Print a plain line at every this many percent of the stage.
const EVERY_PERCENT: usize = 5;
/// ... but no sooner than this many seconds after the previous line.
pub const MIN_INTERVAL_S: f64 = 10.0;

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
    /// Seconds since the start at the last printed line, and the minimum gap between lines.
    last_s: f64,
    min_gap_s: f64,
}

impl Plain {
    /// The line for step `pos`, if it crosses the next threshold (always for the last step).
    fn line(&mut self, pos: usize, msg: &str, elapsed_s: f64) -> Option<String> {
        let pct = 100 * pos / self.total.max(1);
        if (pct < self.next && pos < self.total) || elapsed_s - self.last_s < self.min_gap_s {
            return None;
        }
        self.next = (pct / EVERY_PERCENT + 1) * EVERY_PERCENT;
        self.last_s = elapsed_s;
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
            let plain = Plain {
                name: name.into(),
                total,
                start: at,
                t0: Instant::now(),
                next,
                last_s: 0.0,
                min_gap_s: MIN_INTERVAL_S,
            };
            Self { bar: None, plain: Some(plain) }
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

/// A labelled stage: its label, and once begun its progress and position.
type Labelled = (String, Option<(Progress, usize)>);

thread_local! {
    /// The calling thread's labelled stage.
    static CURRENT: std::cell::RefCell<Option<Labelled>> = const { std::cell::RefCell::new(None) };
}

/// Run `f` as a stage named `label` whose inner loops report through [`begin`] / [`advance`].
pub fn labelled<T>(label: &str, f: impl FnOnce() -> T) -> T {
    CURRENT.with(|c| *c.borrow_mut() = Some((label.to_string(), None)));
    let out = f();
    end();
    CURRENT.with(|c| *c.borrow_mut() = None);
    out
}

/// [`labelled`] when `label` is given, else just `f()` (no progress).
pub fn maybe_labelled<T>(label: Option<&str>, f: impl FnOnce() -> T) -> T {
    match label {
        Some(l) => labelled(l, f),
        None => f(),
    }
}

/// Start counting `total` units of the labelled stage (nothing outside [`labelled`]).
pub fn begin(total: usize) {
    CURRENT.with(|c| {
        if let Some((label, p)) = c.borrow_mut().as_mut() {
            *p = Some((Progress::new(total, 0, label), 0));
        }
    });
}

/// `n` more units of the labelled stage are done; `what` says which part.
pub fn advance(n: usize, what: &str) {
    CURRENT.with(|c| {
        if let Some((_, Some((p, pos)))) = c.borrow_mut().as_mut() {
            *pos += n;
            p.update(*pos, what);
        }
    });
}

/// The labelled stage's counting is over.
pub fn end() {
    CURRENT.with(|c| {
        if let Some((_, p)) = c.borrow_mut().as_mut()
            && let Some((p, _)) = p.take()
        {
            p.finish();
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_lines_every_five_percent_with_rate_and_time_left() {
        let mut p = Plain {
            name: "align".into(),
            total: 200,
            start: 0,
            t0: Instant::now(),
            next: EVERY_PERCENT,
            last_s: 0.0,
            min_gap_s: 0.0,
        };
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
        let mut p = Plain {
            name: "patcher".into(),
            total: 10,
            start: 6,
            t0: Instant::now(),
            next: 65,
            last_s: 0.0,
            min_gap_s: 0.0,
        };
        assert!(p.line(6, "", 0.0).is_none());
        // Step 7 is 70%: one step in 4 s since resuming -> 0.25 steps/s, 3 steps left = 12 s.
        let l = p.line(7, "K 16", 4.0).unwrap();
        assert!(l.contains("step 7/10 (70%)") && l.contains("0.25 steps/s") && l.ends_with("left 12s"), "{l}");
    }

    #[test]
    fn lines_are_at_least_the_minimum_interval_apart() {
        let mut p = Plain {
            name: "eval".into(),
            total: 100,
            start: 0,
            t0: Instant::now(),
            next: 5,
            last_s: 0.0,
            min_gap_s: 10.0,
        };
        // One step per second: 5% thresholds every 5 s, but lines only every 10 s.
        let printed: Vec<usize> = (1..=100).filter(|&s| p.line(s, "", s as f64).is_some()).collect();
        assert_eq!(printed, (1..=10).map(|i| i * 10).collect::<Vec<_>>());
        // A stage shorter than the interval prints nothing.
        let mut q = Plain {
            name: "eval".into(),
            total: 10,
            start: 0,
            t0: Instant::now(),
            next: 5,
            last_s: 0.0,
            min_gap_s: 10.0,
        };
        assert!((1..=10).all(|s| q.line(s, "", s as f64 * 0.5).is_none()));
    }

    #[test]
    fn labelled_stages_count_only_inside_the_label() {
        // Outside a label, begin/advance/end do nothing (and do not panic).
        begin(10);
        advance(3, "x");
        end();
        let inner = labelled("eval test", || {
            begin(4);
            advance(1, "a");
            advance(2, "b");
            CURRENT.with(|c| c.borrow().as_ref().and_then(|(_, p)| p.as_ref().map(|(_, pos)| *pos)))
        });
        assert_eq!(inner, Some(3));
        assert!(CURRENT.with(|c| c.borrow().is_none()));
    }

    #[test]
    fn clock_formats() {
        assert_eq!(clock(5.4), "5s");
        assert_eq!(clock(245.0), "4m05s");
        assert_eq!(clock(3723.0), "1h02m03s");
        assert_eq!(clock(f64::NAN), "?");
    }
}
