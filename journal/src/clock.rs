//! The write clock: CLOCK_REALTIME in nanoseconds, read through the vDSO.

/// Nanoseconds since the Unix epoch (CLOCK_REALTIME). A vDSO call: no
/// system call on Linux with a TSC clock source.
#[inline(always)]
#[allow(clippy::unnecessary_cast)] // time_t is not i64 everywhere
pub fn now_ns() -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through a valid pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    ts.tv_sec as i64 * 1_000_000_000 + ts.tv_nsec as i64
}
