//! What tape's benchmarks share: journals in RAM, latency histograms and
//! their percentiles, a tight timer slack for the sleeping side of a
//! measurement.

use hdrhistogram::Histogram;
use std::path::{Path, PathBuf};

/// Where benchmarks make their journals: `/dev/shm` (RAM-backed) when the
/// box has it, else the temporary folder.
pub fn temp_base() -> PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

/// A new temporary folder under [`temp_base`], deleted when dropped.
pub fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("tape-bench-")
        .tempdir_in(temp_base())
        .expect("temporary folder")
}

/// A histogram of nanoseconds from `low` to 60 s, 3 significant digits.
pub fn hist_from(low: u64) -> Histogram<u64> {
    Histogram::new_with_bounds(low.max(1), 60_000_000_000, 3).expect("histogram bounds")
}

/// A histogram of nanoseconds from 1 ns to 60 s.
pub fn hist() -> Histogram<u64> {
    hist_from(1)
}

/// The percentiles every latency figure quotes, in ns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pcts {
    /// Median.
    pub p50: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest.
    pub max: u64,
    /// Samples.
    pub n: u64,
}

impl Pcts {
    /// The percentiles of `h`.
    pub fn of(h: &Histogram<u64>) -> Pcts {
        Pcts {
            p50: h.value_at_quantile(0.5),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            n: h.len(),
        }
    }
}

/// `v` ns as text: ns below 10 µs, else µs with one decimal.
pub fn fmt_ns(v: u64) -> String {
    if v >= 10_000 {
        format!("{:.1} µs", v as f64 / 1000.0)
    } else {
        format!("{v} ns")
    }
}

/// Lets this thread's sleeps end within 1 µs of their time (the default
/// slack is 50 µs), for the side of a measurement that paces with sleeps.
pub fn tight_timer_slack() {
    // SAFETY: PR_SET_TIMERSLACK changes only the calling thread's timer
    // slack; the arguments are plain integers.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1000 as libc::c_ulong, 0, 0, 0);
    }
}
