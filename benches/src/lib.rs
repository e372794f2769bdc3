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

/// A `nats-server -js` of a benchmark's own: a free loopback port, a
/// temporary store, killed when dropped (the NATS benches: nats, vars,
/// files).
#[derive(Debug)]
pub struct NatsServer {
    child: std::process::Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
    _store: tempfile::TempDir,
}

impl NatsServer {
    /// Starts it and waits (20 s at most) until `ready(url)` says
    /// JetStream answers (the caller's client checks: this crate has none).
    pub fn start(ready: impl Fn(&str) -> bool) -> NatsServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let store = tempfile::tempdir().expect("a store folder");
        let child = std::process::Command::new("nats-server")
            .args(["-js", "-sd"])
            .arg(store.path())
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("nats-server (apt-get install nats-server)");
        let s = NatsServer {
            child,
            port,
            _store: store,
        };
        let t = std::time::Instant::now();
        while !ready(&s.url()) {
            assert!(
                t.elapsed() < std::time::Duration::from_secs(20),
                "nats-server did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        s
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A journal being appended to across criterion samples. Pages the writer
/// has left are deleted between samples (untimed), so a run keeps a few
/// pages on disk however many frames criterion asks for; an appender is
/// made once, so its setup (creating and pre-faulting the first page) is
/// not counted against the first frames of every sample.
#[derive(Debug)]
pub struct Sink {
    /// The journal's folder.
    pub dir: tempfile::TempDir,
    /// Its appender.
    pub app: tape_journal::Appender,
}

impl Sink {
    /// Journal name of every sink.
    pub const NAME: &'static str = "bench";

    /// A sink in `dir` opened with `opts`.
    pub fn new_in(dir: tempfile::TempDir, opts: tape_journal::AppendOptions) -> Sink {
        let app = tape_journal::Appender::create(dir.path(), Self::NAME, opts).expect("appender");
        Sink { dir, app }
    }

    /// Deletes the page files before the one before the writer's current
    /// page (that one may still be being synced or unmapped).
    pub fn prune(&self) {
        let (current, _) = self.app.position();
        for no in tape_journal::list_pages(self.dir.path(), Self::NAME).expect("pages") {
            if no + 1 < current {
                let path = tape_journal::files::page_path(self.dir.path(), Self::NAME, no);
                let _ = std::fs::remove_file(path);
            }
        }
    }

    /// Times `iters` appends of `payload`, then prunes.
    pub fn time_appends(&mut self, iters: u64, payload: &[u8]) -> std::time::Duration {
        let start = std::time::Instant::now();
        for _ in 0..iters {
            std::hint::black_box(
                self.app
                    .write(1, std::hint::black_box(payload))
                    .expect("append"),
            );
        }
        let t = start.elapsed();
        self.prune();
        t
    }
}
