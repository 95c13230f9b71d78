//! Peak resident memory of this process over one stage of a benchmark (Linux `/proc`).
//!
//! [`PeakWatch::start`] writes `5` to `/proc/self/clear_refs`, which sets the kernel's
//! high-water mark of the resident set (`VmHWM` in `/proc/self/status`) back to the current
//! resident set (Linux 4.0+, `man 5 proc`); [`PeakWatch::read`] reads it. So a stage's peak is
//! the most memory resident at any moment between the two calls, including what the process
//! already held at the start (also reported). Elsewhere (no `/proc`, or a kernel that refuses
//! the write) both are `None` and the benchmark prints `-`: a process-lifetime peak
//! (`getrusage`) would silently include the earlier stages. `scripts/bench_torch.py` measures
//! the same way.
//!
//! Units: MiB (the kernel's `kB` are KiB).

/// Reset this process's resident-set high-water mark; `false` where that is not possible.
fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// A `kB` field of `/proc/self/status` (`VmHWM`, `VmRSS`) in MiB.
fn status_mb(field: &str) -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_status_kb(&status, field).map(|kb| kb as f64 / 1024.0)
}

fn parse_status_kb(status: &str, field: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.split(':').next() == Some(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The current resident set (MiB).
pub fn rss_mb() -> Option<f64> {
    status_mb("VmRSS")
}

/// A stage's memory: what was resident when it began and the peak during it (MiB).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Peak {
    pub start_mb: Option<f64>,
    pub peak_mb: Option<f64>,
}

/// Watches one stage: started at its beginning (resetting the high-water mark), read at its end.
pub struct PeakWatch {
    start_mb: Option<f64>,
}

impl PeakWatch {
    pub fn start() -> Self {
        let start_mb = if reset_peak() { rss_mb() } else { None };
        Self { start_mb }
    }

    /// The peak since [`PeakWatch::start`]; both `None` when the mark could not be reset.
    pub fn read(&self) -> Peak {
        match self.start_mb {
            Some(s) => Peak { start_mb: Some(s), peak_mb: status_mb("VmHWM") },
            None => Peak::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_fields_are_read_in_kib() {
        let status = "Name:\tpatcher\nVmPeak:\t  900 kB\nVmHWM:\t  204800 kB\nVmRSS:\t  1024 kB\n";
        assert_eq!(parse_status_kb(status, "VmHWM"), Some(204_800));
        assert_eq!(parse_status_kb(status, "VmRSS"), Some(1024));
        assert_eq!(parse_status_kb(status, "VmSwap"), None);
    }

    /// On Linux the watch's peak covers a buffer touched after its start; elsewhere it reports
    /// nothing. (Other tests run in this process at the same time, so only bounds that hold
    /// whatever they allocate or free are asserted.)
    #[test]
    fn a_stage_that_touches_memory_raises_its_peak() {
        let watch = PeakWatch::start();
        let buf = vec![1u8; 64 << 20];
        std::hint::black_box(&buf);
        let now = rss_mb();
        let p = watch.read();
        drop(buf);
        match (p.start_mb, p.peak_mb, now) {
            (Some(_), Some(peak), Some(now)) => {
                assert!(now >= 64.0, "64 MiB touched but {now:.1} MiB resident");
                assert!(peak >= now - 1.0, "peak {peak:.1} MiB below the resident {now:.1} MiB");
            }
            (None, None, _) => assert!(!cfg!(target_os = "linux") || !reset_peak(), "Linux but no reading"),
            other => panic!("half a reading: {other:?}"),
        }
    }
}
