//! Reading recorded frames at the pace at which they were written: a
//! [`Pacer`] maps each frame's recorded write time onto the monotonic
//! clock, and [`sleep_until`] waits for that moment.
//!
//! The pace is set by the first frame: it falls due at once, and a frame
//! recorded `d` ns after it falls due `d / speed` ns after that moment on
//! `CLOCK_MONOTONIC`. Each frame's moment is computed from that one origin,
//! never from the frame before, so a late wake-up delays one frame and the
//! errors do not add up over a day. Waiting sleeps (`clock_nanosleep` to an
//! absolute time) until a little before the moment and spins only for the
//! last [`SPIN_NS`] plus the thread's timer slack: no hot loop over a long
//! gap, and no wake-up later than the kernel's own latency.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// How long before a frame's moment [`sleep_until`] stops sleeping and
/// spins (on top of the thread's timer slack, by which the kernel may wake
/// it late): about the wake-up latency of a loaded box.
pub const SPIN_NS: u64 = 50_000;

/// How fast recorded frames are handed out.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Speed {
    /// As fast as they can be read: no pacing (`max`).
    #[default]
    Max,
    /// This many times the recorded pace: `1.0` the pace at which they
    /// were written, `10.0` ten times faster, `0.5` half as fast. Positive
    /// and finite ([`Speed::times`] checks it).
    Times(f64),
}

/// A speed that is not a positive finite number or `max`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadSpeed(pub String);

impl fmt::Display for BadSpeed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} is not a speed: give a positive number (1 = the recorded pace, 10 = ten times faster) or max",
            self.0
        )
    }
}

impl std::error::Error for BadSpeed {}

impl Speed {
    /// `x` times the recorded pace; refused unless `x` is positive and
    /// finite.
    pub fn times(x: f64) -> Result<Speed, BadSpeed> {
        if x.is_finite() && x > 0.0 {
            Ok(Speed::Times(x))
        } else {
            Err(BadSpeed(x.to_string()))
        }
    }
}

impl FromStr for Speed {
    type Err = BadSpeed;

    /// `max`, or a positive finite number (`1`, `10`, `0.5`, `2.5e3`).
    fn from_str(s: &str) -> Result<Speed, BadSpeed> {
        if s.eq_ignore_ascii_case("max") {
            return Ok(Speed::Max);
        }
        let x: f64 = s.trim().parse().map_err(|_| BadSpeed(s.to_string()))?;
        Speed::times(x).map_err(|_| BadSpeed(s.to_string()))
    }
}

impl fmt::Display for Speed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Speed::Max => f.write_str("max"),
            Speed::Times(x) => write!(f, "{x}"),
        }
    }
}

/// `CLOCK_MONOTONIC` in ns (the clock [`std::time::Instant`] reads on
/// Linux).
#[inline]
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec to the pointer, which is a
    // live local; CLOCK_MONOTONIC always exists on Linux (a vDSO call).
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The calling thread's timer slack in ns (how late the kernel may end its
/// sleeps; 50 µs unless set with `PR_SET_TIMERSLACK`).
fn timer_slack_ns() -> u64 {
    // SAFETY: PR_GET_TIMERSLACK takes no pointer and only reads the
    // calling thread's setting.
    let r = unsafe { libc::prctl(libc::PR_GET_TIMERSLACK, 0, 0, 0, 0) };
    if r < 0 {
        50_000
    } else {
        r as u64
    }
}

/// Waits until `CLOCK_MONOTONIC` reads `at` ns (see [`monotonic_ns`]):
/// asleep until [`SPIN_NS`] plus the thread's timer slack before it, then
/// spinning on the clock. Returns at once when `at` has passed.
pub fn sleep_until(at: u64) {
    let mut now = monotonic_ns();
    if now >= at {
        return;
    }
    let margin = SPIN_NS + timer_slack_ns();
    if at - now > margin {
        let wake = at - margin;
        let ts = libc::timespec {
            tv_sec: (wake / 1_000_000_000) as libc::time_t,
            tv_nsec: (wake % 1_000_000_000) as libc::c_long,
        };
        // An absolute sleep: a signal that interrupts it (EINTR) is simply
        // slept again, to the same moment.
        loop {
            // SAFETY: clock_nanosleep reads the timespec, a live local, and
            // is given no remainder pointer (null is allowed with
            // TIMER_ABSTIME).
            let r = unsafe {
                libc::clock_nanosleep(
                    libc::CLOCK_MONOTONIC,
                    libc::TIMER_ABSTIME,
                    &ts,
                    std::ptr::null_mut(),
                )
            };
            if r != libc::EINTR {
                break;
            }
        }
        now = monotonic_ns();
    }
    while now < at {
        std::hint::spin_loop();
        now = monotonic_ns();
    }
}

/// Maps recorded write times onto the monotonic clock at a [`Speed`].
///
/// ```
/// use tape_reader::{Pacer, Speed};
/// let mut p = Pacer::new(Speed::Times(10.0));
/// let t0 = 1_800_000_000_000_000_000;
/// let first = p.due_at(t0); // the first frame sets the pace: due now
/// // A frame written 50 ms later falls due 5 ms after the first.
/// assert_eq!(p.due_at(t0 + 50_000_000) - first, 5_000_000);
/// ```
#[derive(Debug, Clone)]
pub struct Pacer {
    /// Monotonic ns per recorded ns (`1 / speed`); 0 for [`Speed::Max`].
    scale: f64,
    /// The first frame's recorded time and the monotonic ns it fell due at.
    origin: Option<(i64, u64)>,
}

impl Pacer {
    /// A pacer at `speed`, its pace set by the first frame asked about.
    pub fn new(speed: Speed) -> Pacer {
        let scale = match speed {
            Speed::Max => 0.0,
            Speed::Times(x) => 1.0 / x,
        };
        Pacer {
            scale,
            origin: None,
        }
    }

    /// The monotonic ns (see [`monotonic_ns`]) at which a frame recorded
    /// at `time_ns` falls due. The first call sets the pace: that frame is
    /// due now. A frame recorded before the first one is due at once.
    #[inline]
    pub fn due_at(&mut self, time_ns: i64) -> u64 {
        let (t0, m0) = *self.origin.get_or_insert_with(|| (time_ns, monotonic_ns()));
        let since = time_ns.saturating_sub(t0).max(0) as f64 * self.scale;
        // `as` saturates: a frame days away at a tiny speed stays far off.
        m0.saturating_add(since as u64)
    }

    /// How long until a frame recorded at `time_ns` falls due (zero when
    /// it is due).
    #[inline]
    pub fn due_in(&mut self, time_ns: i64) -> Duration {
        let at = self.due_at(time_ns);
        Duration::from_nanos(at.saturating_sub(monotonic_ns()))
    }

    /// Whether a frame recorded at `time_ns` is due (reads the clock).
    #[inline]
    pub fn is_due(&mut self, time_ns: i64) -> bool {
        let at = self.due_at(time_ns);
        at <= monotonic_ns()
    }

    /// Sets the pace: a frame recorded at `time_ns` falls due when
    /// `CLOCK_MONOTONIC` reads `mono_ns` (see [`monotonic_ns`]). A moment
    /// a little ahead (a millisecond) has the first frame go through the
    /// same sleep and spin as every other, so that its hand-out is no
    /// later, relative to its moment, than theirs.
    pub fn start_at(&mut self, time_ns: i64, mono_ns: u64) {
        self.origin = Some((time_ns, mono_ns));
    }

    /// Forgets the pace: the next frame asked about sets it again.
    pub fn restart(&mut self) {
        self.origin = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speeds_parse_and_bad_ones_are_refused() {
        assert_eq!("max".parse(), Ok(Speed::Max));
        assert_eq!("MAX".parse(), Ok(Speed::Max));
        assert_eq!("1".parse(), Ok(Speed::Times(1.0)));
        assert_eq!("0.5".parse(), Ok(Speed::Times(0.5)));
        assert_eq!("1e3".parse(), Ok(Speed::Times(1000.0)));
        for bad in ["0", "-1", "nan", "inf", "", "fast", "1x"] {
            let e = bad.parse::<Speed>().expect_err(bad);
            assert!(e.to_string().contains("positive number"), "{e}");
        }
    }

    #[test]
    fn moments_follow_the_first_frame_at_the_speed() {
        let t0 = 1_000_000_000_000;
        let mut p = Pacer::new(Speed::Times(2.0));
        let m0 = p.due_at(t0);
        assert_eq!(p.due_at(t0 + 10_000_000), m0 + 5_000_000);
        assert_eq!(p.due_at(t0), m0);
        assert_eq!(p.due_at(t0 - 1), m0, "an older frame is due at once");
        let mut max = Pacer::new(Speed::Max);
        let m = max.due_at(t0);
        assert_eq!(max.due_at(t0 + 3_600_000_000_000), m);
        p.restart();
        assert!(p.due_at(t0 + 10_000_000) >= m0);
        p.start_at(t0, 5_000);
        assert_eq!(p.due_at(t0 + 2_000), 6_000);
    }

    #[test]
    fn sleep_until_is_never_early() {
        for gap in [0u64, 20_000, 300_000, 2_000_000] {
            let at = monotonic_ns() + gap;
            sleep_until(at);
            assert!(monotonic_ns() >= at, "woke before the moment ({gap} ns)");
        }
    }
}
