//! The write clock: CLOCK_REALTIME in nanoseconds.
//!
//! Every frame is stamped, so the clock is on the hot path. On this kind
//! of box (`clocksource` tsc, invariant TSC) the vDSO's `clock_gettime`
//! costs about 23 ns, two thirds of an append, because it reads the TSC
//! ordered (`rdtscp`/`lfence`) and walks the kernel's seqlock; a plain
//! `rdtsc` costs about 9 ns. Measured in journal-bench, stamping with the
//! TSC takes 64-byte throughput between processes from about 12 M to over
//! 20 M frames/s.
//!
//! So [`now_ns`] converts the TSC with parameters **shared by every tape
//! process on the machine**: one process, the *keeper* (the service, or
//! whichever process took the lock first), samples `(TSC, CLOCK_REALTIME)`
//! every 10 ms and publishes an anchor and a rate (fitted over about one
//! second) in a small mapped file, `/dev/shm/tape-clock.v1`, under a
//! seqlock. All processes compute the same time from the same TSC reading,
//! so times written by one process and read by another agree exactly; each
//! process sampling its own calibration would not (tens of ns apart). The
//! published time stays within a few tens of ns of CLOCK_REALTIME.
//!
//! When the parameters are more than two seconds old (the keeper died,
//! and another process takes the lock within a second; or it is stopped or
//! hung, and keeps the lock), each thread converts the TSC with the last
//! published rate and an anchor of its own, taken every 10 ms
//! ([`Source::Local`]). Falls back to the vDSO, per call, when no
//! parameters were ever published or they are being updated; and always
//! when the clock source is not the TSC, the CPU lacks an invariant TSC,
//! or `TAPE_CLOCK=vdso` is set. Times from the paths agree to within the
//! keeper's sampling error; a writer never stamps a frame earlier than the
//! one before.

use seqlock::{Params, Values};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

/// Nanoseconds since the Unix epoch (CLOCK_REALTIME): the shared TSC
/// clock where the machine has one, else the vDSO.
#[inline(always)]
pub fn now_ns() -> i64 {
    #[cfg(target_arch = "x86_64")]
    if let Some(t) = shared().and_then(Shared::now) {
        return t;
    }
    vdso_ns()
}

/// CLOCK_REALTIME through the vDSO (no system call with a TSC clock
/// source).
#[inline(always)]
#[allow(clippy::unnecessary_cast)] // time_t is not i64 everywhere
pub fn vdso_ns() -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through a valid pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    ts.tv_sec as i64 * 1_000_000_000 + ts.tv_nsec as i64
}

/// Makes this process the keeper of the shared clock if none is (the
/// service calls it at start-up, so a box with a service always has one).
/// Returns whether the shared TSC clock is in use on this machine.
pub fn keep() -> bool {
    match shared() {
        Some(s) => {
            s.try_keep();
            true
        }
        None => false,
    }
}

/// Whether [`now_ns`] currently reads the TSC (the shared clock, or a
/// thread's own anchor while the keeper is stale; false: the vDSO). See
/// [`source`].
pub fn is_tsc() -> bool {
    shared().and_then(Shared::now).is_some()
}

/// Whether this process is the keeper of the shared clock (its keeper
/// thread publishes the parameters).
pub fn keeps() -> bool {
    shared().is_some_and(|s| s.keeper.load(Ordering::Acquire))
}

/// Path of the shared parameters.
pub const SHARED_PATH: &str = "/dev/shm/tape-clock.v1";

/// Names another file for the shared parameters, read once when the
/// process first reads the clock. Only processes given the same file
/// agree on times, so this is for tests that need a clock no other
/// process on the box keeps; a trading box leaves it unset.
pub const SHARED_PATH_ENV: &str = "TAPE_CLOCK_FILE";

const MAGIC: u64 = u64::from_le_bytes(*b"TAPECLK1");
/// How often the keeper publishes a fresh anchor.
const UPDATE: Duration = Duration::from_millis(10);
/// Anchors the rate is fitted over (about one second).
const BASELINE: usize = 100;
/// Parameters older than this are not used.
const STALE_NS: u64 = 2_000_000_000;
/// How often a process that finds them stale tries to become the keeper.
const TAKE_OVER_EVERY_NS: i64 = 1_000_000_000;

/// The seqlock over the shared parameters: the keeper's [`write`] and every
/// process's [`read`], side by side. The loom model in `tests/loom.rs`
/// checks these two functions (built with `--cfg loom`, where the atomics
/// are loom's).
///
/// [`write`]: Params::write
/// [`read`]: Params::read
pub(crate) mod seqlock {
    use crate::atomics::{fence, AtomicI64, AtomicU64};
    use std::sync::atomic::Ordering;

    /// The shared page: one cache line, read by every tape process.
    ///
    /// Processes that cannot open the file for writing map it read-only,
    /// so [`read`](Self::read) makes only what std allows on read-only
    /// memory: `Relaxed` loads of 8 bytes (the limit on x86-64 and
    /// aarch64), with `Acquire` fences where it needs the ordering.
    #[repr(C, align(64))]
    #[derive(Debug)]
    pub struct Params {
        magic: AtomicU64,
        /// Seqlock: odd while the keeper writes.
        seq: AtomicU64,
        /// TSC reading of the anchor.
        tsc0: AtomicU64,
        /// CLOCK_REALTIME at the anchor.
        ns0: AtomicI64,
        /// Nanoseconds per tick, 32.32 fixed point.
        mult: AtomicU64,
        /// Ticks after the anchor past which the parameters are stale.
        stale: AtomicU64,
    }

    /// One consistent set of the parameters.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
    pub struct Values {
        /// `MAGIC` once a keeper has published.
        pub magic: u64,
        /// TSC reading of the anchor.
        pub tsc0: u64,
        /// CLOCK_REALTIME at the anchor.
        pub ns0: i64,
        /// Nanoseconds per tick, 32.32 fixed point.
        pub mult: u64,
        /// Ticks after the anchor past which the parameters are stale.
        pub stale: u64,
    }

    impl Params {
        /// All zeros, as a new file is (the loom model's start; the real
        /// parameters live in the mapped file).
        #[cfg(loom)]
        pub fn zeroed() -> Self {
            Params {
                magic: AtomicU64::new(0),
                seq: AtomicU64::new(0),
                tsc0: AtomicU64::new(0),
                ns0: AtomicI64::new(0),
                mult: AtomicU64::new(0),
                stale: AtomicU64::new(0),
            }
        }

        /// Reader: one consistent set of values and what `between` returned
        /// (called after the values were loaded, before they are checked:
        /// the clock reads the TSC there), or `None` while the keeper is
        /// writing them (or wrote while they were read): the caller falls
        /// back, it never waits.
        #[inline(always)]
        pub fn read<R>(&self, between: impl FnOnce() -> R) -> Option<(Values, R)> {
            let s1 = self.seq.load(Ordering::Relaxed);
            // (A) With the Relaxed load above, this is an Acquire load of
            // `seq` (the form std allows on read-only memory). Pairs with
            // the Release store of the even `seq` that ends `write`: when
            // `s1` is the value a write ended with, every field that write
            // stored is visible to the loads below (they return it or a
            // later write's value, which (B) catches).
            fence(Ordering::Acquire);
            let v = Values {
                magic: self.magic.load(Ordering::Relaxed),
                tsc0: self.tsc0.load(Ordering::Relaxed),
                ns0: self.ns0.load(Ordering::Relaxed),
                mult: self.mult.load(Ordering::Relaxed),
                stale: self.stale.load(Ordering::Relaxed),
            };
            let r = between();
            // (B) Keeps the field loads above before the second load of
            // `seq` below. Pairs with the Release fence (C) in `write`: if
            // any field load returned a value that a later write stored
            // (after its (C)), that write's odd `seq` store happens before
            // the load below, which then returns it or a later value, not
            // `s1`. So `s1 == s2` means no write overlapped the loads.
            fence(Ordering::Acquire);
            let s2 = self.seq.load(Ordering::Relaxed);
            (s1 == s2 && s1 & 1 == 0).then_some((v, r))
        }

        /// Keeper: publishes `v`. Only one thread on the machine writes at
        /// a time (the keeper, which holds the file's `flock`); never
        /// called on a read-only mapping.
        pub fn write(&self, v: Values) {
            // Relaxed: only this thread stores `seq`, so it reads its own
            // last store.
            let seq = self.seq.load(Ordering::Relaxed);
            // Odd: "being written". Relaxed, but made visible before any
            // field store below by the fence that follows.
            self.seq.store(seq | 1, Ordering::Relaxed);
            // (C) Orders the odd `seq` store before the field stores below
            // (a store-store order a Relaxed or even a Release store of
            // `seq` alone would not give). Pairs with the reader's Acquire
            // fence (B).
            fence(Ordering::Release);
            self.tsc0.store(v.tsc0, Ordering::Relaxed);
            self.ns0.store(v.ns0, Ordering::Relaxed);
            self.mult.store(v.mult, Ordering::Relaxed);
            self.stale.store(v.stale, Ordering::Relaxed);
            self.magic.store(v.magic, Ordering::Relaxed);
            // (D) Even again: Release, so every field store above is
            // visible to a reader whose load of `seq` returns this value
            // and is followed by its Acquire fence (A).
            self.seq.store((seq | 1) + 1, Ordering::Release);
        }
    }
}

struct Shared {
    params: &'static Params,
    file: std::fs::File,
    writable: bool,
    keeper: AtomicBool,
    last_try: AtomicI64,
}

fn shared() -> Option<&'static Shared> {
    static SHARED: OnceLock<Option<Shared>> = OnceLock::new();
    SHARED.get_or_init(open_shared).as_ref()
}

#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn rdtsc() -> u64 {
    // SAFETY: rdtsc has no preconditions on x86-64; it is only used where
    // `tsc_is_invariant` said the TSC is the kernel's clock source.
    unsafe { core::arch::x86_64::_rdtsc() }
}

#[cfg(not(target_arch = "x86_64"))]
fn rdtsc() -> u64 {
    0
}

/// The TSC is usable across cores and processes: the kernel uses it as its
/// clock source and the CPU says it is invariant.
fn tsc_is_invariant() -> bool {
    if !cfg!(target_arch = "x86_64") {
        return false;
    }
    let source =
        std::fs::read_to_string("/sys/devices/system/clocksource/clocksource0/current_clocksource")
            .unwrap_or_default();
    let cpu = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let flags = cpu.lines().find(|l| l.starts_with("flags")).unwrap_or("");
    let has = |f: &str| flags.split_whitespace().any(|x| x == f);
    source.trim() == "tsc" && has("constant_tsc") && has("nonstop_tsc")
}

fn open_shared() -> Option<Shared> {
    if cfg!(loom) {
        // Built for the loom models: Params holds loom's atomics, which
        // cannot live in a mapped file.
        return None;
    }
    if std::env::var("TAPE_CLOCK").is_ok_and(|v| v == "vdso") || !tsc_is_invariant() {
        return None;
    }
    use std::os::unix::fs::OpenOptionsExt;
    let path = std::env::var_os(SHARED_PATH_ENV).unwrap_or_else(|| SHARED_PATH.into());
    let open = |write: bool| {
        std::fs::OpenOptions::new()
            .read(true)
            .write(write)
            .create(write)
            .truncate(false)
            .mode(0o644)
            .custom_flags(libc::O_CLOEXEC)
            .open(&path)
    };
    let (file, writable) = match open(true) {
        Ok(f) => (f, true),
        Err(_) => (open(false).ok()?, false),
    };
    let len = std::mem::size_of::<Params>() as u64;
    if file.metadata().ok()?.len() < len {
        if !writable {
            return None;
        }
        file.set_len(len).ok()?;
    }
    // SAFETY: the file is at least one Params long (checked or set above);
    // the mapping is never unmapped (it lives as long as the process);
    // every field is an atomic, and Params is 64-aligned, which the
    // page-aligned mapping satisfies. Mapped read-only (`writable` false),
    // it is only read through `Params::read`, which makes only the atomic
    // accesses std allows on read-only memory (8-byte Relaxed loads); only
    // the keeper calls `Params::write`, and only a writable `Shared`
    // becomes the keeper (`try_keep`). Other processes access the same
    // words, through their own mappings, atomically too.
    let params: &'static Params = unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            len as usize,
            if writable {
                libc::PROT_READ | libc::PROT_WRITE
            } else {
                libc::PROT_READ
            },
            libc::MAP_SHARED,
            std::os::fd::AsRawFd::as_raw_fd(&file),
            0,
        );
        if p == libc::MAP_FAILED {
            return None;
        }
        &*(p as *const Params)
    };
    let s = Shared {
        params,
        file,
        writable,
        keeper: AtomicBool::new(false),
        last_try: AtomicI64::new(i64::MIN),
    };
    Some(s)
}

impl Shared {
    /// The time from the shared parameters (from this thread's own anchor
    /// while they are stale), or `None` (use the vDSO) when none were ever
    /// published or they are being written.
    #[inline(always)]
    fn now(&'static self) -> Option<i64> {
        self.now_from().0
    }

    /// [`now`](Self::now) and where it came from ([`source`] reads the
    /// clock through this very path).
    #[inline(always)]
    fn now_from(&'static self) -> (Option<i64>, Source) {
        let Some((v, tsc)) = self.params.read(rdtsc) else {
            return (None, Source::Vdso);
        };
        let d = tsc.wrapping_sub(v.tsc0) as i64;
        if v.magic != MAGIC || d.unsigned_abs() > v.stale {
            let t = self.slow_path(tsc, &v);
            return (
                t,
                if t.is_some() {
                    Source::Local
                } else {
                    Source::Vdso
                },
            );
        }
        (Some(convert(tsc, v.tsc0, v.ns0, v.mult)), Source::Shared)
    }

    /// Parameters missing or stale. With a rate once published (the
    /// keeper stopped, or hung, or died and nobody took over yet), the time
    /// comes from this thread's own anchor and that rate ([`local_ns`]);
    /// with none, `None` (the vDSO). At most once a second, it tries to
    /// become the keeper.
    #[cold]
    #[inline(never)]
    fn slow_path(&'static self, tsc: u64, v: &Values) -> Option<i64> {
        let local = (v.magic == MAGIC && v.mult != 0).then(|| local_ns(tsc, v.mult));
        let now = local.unwrap_or_else(vdso_ns);
        let last = self.last_try.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= TAKE_OVER_EVERY_NS {
            self.last_try.store(now, Ordering::Relaxed);
            self.try_keep();
        }
        local
    }

    /// Takes the keeper's lock if it is free and starts the keeper thread.
    fn try_keep(&'static self) {
        if !self.writable || self.keeper.load(Ordering::Acquire) {
            return;
        }
        let fd = std::os::fd::AsRawFd::as_raw_fd(&self.file);
        // SAFETY: flock on an open descriptor this process owns.
        if unsafe { libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return;
        }
        if self.keeper.swap(true, Ordering::AcqRel) {
            return;
        }
        let spawned = std::thread::Builder::new()
            .name("tape-clock".into())
            .spawn(move || self.keep_loop());
        if spawned.is_err() {
            // SAFETY: as above; gives the lock back for another process.
            unsafe { libc::flock(fd, libc::LOCK_UN) };
            self.keeper.store(false, Ordering::Release);
        }
    }

    /// The keeper: a fresh anchor every [`UPDATE`], the rate fitted over
    /// the last [`BASELINE`] anchors.
    fn keep_loop(&self) {
        let mut anchors = std::collections::VecDeque::with_capacity(BASELINE + 1);
        anchors.push_back(anchor());
        std::thread::sleep(UPDATE * 2);
        loop {
            let (tsc, ns) = anchor();
            anchors.push_back((tsc, ns));
            if anchors.len() > BASELINE {
                anchors.pop_front();
            }
            let (tsc_old, ns_old) = anchors[0];
            let ticks = tsc.wrapping_sub(tsc_old);
            let nanos = ns - ns_old;
            if ticks > 0 && nanos > 0 {
                let mult = ((nanos as u128) << 32) / ticks as u128;
                let stale = (STALE_NS as u128 * ticks as u128 / nanos as u128) as u64;
                self.publish(tsc, ns, mult as u64, stale);
            }
            std::thread::sleep(UPDATE);
        }
    }

    fn publish(&self, tsc0: u64, ns0: i64, mult: u64, stale: u64) {
        self.params.write(Values {
            magic: MAGIC,
            tsc0,
            ns0,
            mult,
            stale,
        });
    }
}

/// `ns0` plus the ticks from `tsc0` to `tsc` at `mult` (ns a tick, 32.32
/// fixed point), either side of the anchor.
#[inline(always)]
fn convert(tsc: u64, tsc0: u64, ns0: i64, mult: u64) -> i64 {
    let d = tsc.wrapping_sub(tsc0) as i64;
    let scaled = ((d.unsigned_abs() as u128 * mult as u128) >> 32) as i64;
    if d >= 0 {
        ns0 + scaled
    } else {
        ns0 - scaled
    }
}

/// How long a thread's own anchor ([`local_ns`]) is used before it takes
/// a fresh one: the shared keeper's own period.
const LOCAL_REFRESH_NS: u64 = UPDATE.as_nanos() as u64;

thread_local! {
    /// This thread's own `(TSC, CLOCK_REALTIME)` anchor, for while the
    /// shared parameters are stale; `(0, 0)` before the first.
    static LOCAL: std::cell::Cell<(u64, i64)> = const { std::cell::Cell::new((0, 0)) };
}

/// The time at `tsc` from this thread's own anchor, taken again every
/// [`LOCAL_REFRESH_NS`], and the last rate the keeper published (a TSC's
/// rate does not change; only the anchor goes stale). A keeper stopped by
/// SIGSTOP, or hung, still holds the file's lock, so nobody can take over:
/// without this every stamp would be a stale check and a vDSO read (about
/// 40 ns, journal-bench's throughput falling from 21-33 to 7-8 M frames/s).
/// Its cost: a thread-local load; an anchor (16 vDSO reads) every 10 ms.
/// Times of two threads agree to within their anchors' sampling error
/// (tens of ns), as the vDSO path's do with the shared clock's, not
/// exactly; a writer still never stamps a frame earlier than the one before.
fn local_ns(tsc: u64, mult: u64) -> i64 {
    LOCAL.with(|a| {
        let (tsc0, ns0) = a.get();
        let age = (tsc.wrapping_sub(tsc0) as u128 * mult as u128) >> 32;
        if tsc0 == 0 || age > LOCAL_REFRESH_NS as u128 {
            let fresh = anchor();
            a.set(fresh);
            convert(tsc, fresh.0, fresh.1, mult)
        } else {
            convert(tsc, tsc0, ns0, mult)
        }
    })
}

/// Where [`now_ns`] takes its time from now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The shared TSC clock, its keeper's parameters fresh.
    Shared,
    /// The TSC with the keeper's rate and this thread's own anchor: the
    /// keeper stopped publishing (stopped, hung or just died).
    Local,
    /// The vDSO: no shared clock on this machine, or none published yet.
    Vdso,
}

/// Where [`now_ns`] takes its time from at this moment: it reads the
/// clock once, through the same path (and, when the parameters are stale,
/// may make this process the keeper, as [`now_ns`] does).
pub fn source() -> Source {
    match shared() {
        Some(s) => s.now_from().1,
        None => Source::Vdso,
    }
}

/// One `(TSC, CLOCK_REALTIME)` pair: of several tries, the one with the
/// shortest TSC window around the clock read, its TSC taken mid-window.
fn anchor() -> (u64, i64) {
    let mut best = (u64::MAX, 0u64, 0i64);
    for _ in 0..16 {
        let t1 = rdtsc();
        let ns = vdso_ns();
        let t2 = rdtsc();
        let w = t2.wrapping_sub(t1);
        if w < best.0 {
            best = (w, t1 + w / 2, ns);
        }
    }
    (best.1, best.2)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shared clock (where the machine has one) tells CLOCK_REALTIME
    /// to within a few microseconds (the bound is generous: a shared
    /// machine can stall any thread between the two readings).
    #[test]
    fn agrees_with_clock_realtime() {
        keep();
        // Let a keeper publish (this process or another).
        let end = vdso_ns() + 5_000_000_000;
        while shared().is_some() && !is_tsc() && vdso_ns() < end {
            std::thread::sleep(Duration::from_millis(5));
        }
        let mut worst = 0;
        for _ in 0..20 {
            let mut best = i64::MAX;
            for _ in 0..100 {
                let a = vdso_ns();
                let t = now_ns();
                let b = vdso_ns();
                let err = if t < a {
                    a - t
                } else if t > b {
                    t - b
                } else {
                    0
                };
                best = best.min(err + (b - a));
            }
            worst = worst.max(best);
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(worst < 5_000, "tape clock off CLOCK_REALTIME by {worst} ns");
    }
}
