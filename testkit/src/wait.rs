//! Bounded waits.

use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long any single wait may take before the test fails as hung. Long,
/// because the machine is small and shared: it only catches a hang.
pub const WATCHDOG: Duration = Duration::from_secs(60);

/// A deadline: [`check`](Deadline::check) panics once it has passed.
#[derive(Debug, Clone, Copy)]
pub struct Deadline(Instant);

impl Default for Deadline {
    fn default() -> Self {
        Deadline::new()
    }
}

impl Deadline {
    /// [`WATCHDOG`] from now.
    pub fn new() -> Deadline {
        Deadline::after(WATCHDOG)
    }

    /// `d` from now.
    pub fn after(d: Duration) -> Deadline {
        Deadline(Instant::now() + d)
    }

    /// `secs` seconds from now.
    pub fn secs(secs: u64) -> Deadline {
        Deadline::after(Duration::from_secs(secs))
    }

    /// Panics, naming `what`, once the deadline has passed.
    #[track_caller]
    pub fn check(&self, what: &str) {
        assert!(
            Instant::now() < self.0,
            "watchdog: gave up waiting for {what}"
        );
    }

    /// Whether it has passed.
    pub fn passed(&self) -> bool {
        Instant::now() >= self.0
    }

    /// Time left (zero once passed).
    pub fn left(&self) -> Duration {
        self.0.saturating_duration_since(Instant::now())
    }
}

/// Polls `cond` every few ms until it holds; fails as hung after
/// [`WATCHDOG`].
#[track_caller]
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    eventually(what, || cond().then_some(()))
}

/// Polls `f` every few ms until it returns `Some`; fails as hung after
/// [`WATCHDOG`].
#[track_caller]
pub fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let d = Deadline::new();
    loop {
        if let Some(v) = f() {
            return v;
        }
        d.check(what);
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Aborts the whole test binary if it is still alive after a time, so that
/// a hang no assertion can catch (a drop that never returns) is a failure
/// with a message rather than a stuck CI. Disarmed when dropped.
#[derive(Debug)]
pub struct Watchdog(Option<mpsc::Sender<()>>);

impl Watchdog {
    /// Aborts the process, naming `what`, unless dropped within `limit`.
    pub fn new(what: &'static str, limit: Duration) -> Watchdog {
        let (tx, rx) = mpsc::channel::<()>();
        std::thread::spawn(move || {
            if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(limit) {
                eprintln!("watchdog: {what} hung for {limit:?}; aborting");
                std::process::abort();
            }
        });
        Watchdog(Some(tx))
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.0.take();
    }
}
