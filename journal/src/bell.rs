//! The doorbell: how a reader sleeps until a journal's next frame, and how
//! the writer wakes it, with nothing added to the writer's path while
//! nobody sleeps but one plain load.
//!
//! Each journal has a 64-byte file `<name>.bell` beside its pages (made by
//! the writer, mode 0666 so readers of any user can ring it; see
//! `FORMAT.md`, "The doorbell"):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `TAPEBEL1` |
//! | 8 | 4 | `ring`: a futex word, bumped by each wake-up |
//! | 12 | 4 | `sleepers`: non-zero while a reader may be asleep |
//!
//! A reader about to sleep stores 1 in `sleepers`, makes both processes'
//! memory accesses ordered (below), reads `ring`, looks for a frame once
//! more, and only then sleeps in `FUTEX_WAIT` on `ring` with the value it
//! read. The writer, after each frame's Release store of its length word,
//! loads `sleepers`; when it is not 0 it swaps it to 0, bumps `ring` and
//! wakes every sleeper (`FUTEX_WAKE`). A reader woken, or timed out,
//! looks again.
//!
//! **No lost wake-up.** The writer's "store length, load sleepers" and the
//! reader's "store sleepers, load length" are the two sides of Dekker's
//! pattern: each needs a full barrier between its store and its load, or
//! both may read the old value (x86 lets a load pass an earlier store) and
//! the reader sleeps past a published frame. A full fence on every append
//! would cost the writer about 20 ns, so the barrier is asymmetric: every
//! writer process registers for `membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED)`
//! ([`register_writer`]) and the reader, on its way to sleep only, issues
//! that command, which runs a full barrier on every CPU running a
//! registered process. Either the writer's load of `sleepers` comes after
//! that barrier (it sees 1 and rings), or its store of the length came
//! before it (the reader's second look sees the frame). Where the kernel
//! has no such command (before Linux 4.16), the writer fences on every
//! append instead, and the reader fences too.
//!
//! Ringing costs the writer one atomic swap and one system call, only for
//! the first frame after a reader went to sleep: the swap clears the flag,
//! so the frames after it cost nothing until a reader sleeps again.

use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::fence;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Suffix of the doorbell file: `<name>.bell`.
pub const BELL_SUFFIX: &str = ".bell";
const MAGIC: u64 = u64::from_le_bytes(*b"TAPEBEL1");
const LEN: usize = 64;

/// The doorbell file of journal `name` in `dir`.
pub fn bell_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}{BELL_SUFFIX}"))
}

#[repr(C, align(64))]
struct Words {
    magic: AtomicU64,
    ring: AtomicU32,
    sleepers: AtomicU32,
}

const _: () = assert!(std::mem::size_of::<Words>() == LEN);

/// One journal's doorbell, mapped read-write.
pub(crate) struct Bell {
    words: *const Words,
}

// SAFETY: `words` points into a shared mapping that lives as long as the
// Bell (unmapped in Drop) and is only accessed through atomics.
unsafe impl Send for Bell {}
// SAFETY: as above: every access is atomic.
unsafe impl Sync for Bell {}

impl std::fmt::Debug for Bell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bell").finish_non_exhaustive()
    }
}

impl Bell {
    /// The writer's side: opens the journal's doorbell, making it if it is
    /// missing (never truncated: readers may have it mapped).
    pub(crate) fn create(dir: &Path, name: &str) -> std::io::Result<Bell> {
        let path = bell_path(dir, name);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o666)
            .custom_flags(libc::O_CLOEXEC)
            .open(&path)?;
        // Readers of other users ring it too: 0666 whatever the umask.
        // SAFETY: fchmod on a descriptor this function owns.
        unsafe { libc::fchmod(file.as_raw_fd(), 0o666) };
        if file.metadata()?.len() < LEN as u64 {
            file.set_len(LEN as u64)?;
        }
        let bell = Bell::map(&file)?;
        bell.w().magic.store(MAGIC, Ordering::Release);
        Ok(bell)
    }

    /// A reader's side: the journal's doorbell if its writer made one and
    /// this process may write it (else the reader polls).
    pub(crate) fn open(dir: &Path, name: &str) -> Option<Bell> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(bell_path(dir, name))
            .ok()?;
        if file.metadata().ok()?.len() < LEN as u64 {
            return None;
        }
        let bell = Bell::map(&file).ok()?;
        (bell.w().magic.load(Ordering::Acquire) == MAGIC).then_some(bell)
    }

    fn map(file: &std::fs::File) -> std::io::Result<Bell> {
        // SAFETY: a new shared read-write mapping of LEN bytes of a file at
        // least that long; page-aligned, so Words' alignment holds. It is
        // unmapped only in Drop, and only accessed through atomics (other
        // processes access the same words atomically too).
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                LEN,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Bell {
            words: p as *const Words,
        })
    }

    #[inline(always)]
    fn w(&self) -> &Words {
        // SAFETY: mapped for the Bell's whole life (see `map`).
        unsafe { &*self.words }
    }

    /// The word the writer loads after each frame.
    pub(crate) fn sleepers(&self) -> *const AtomicU32 {
        &self.w().sleepers
    }

    /// Writer: wakes the sleepers if any are still flagged.
    #[cold]
    #[inline(never)]
    pub(crate) fn ring(&self) {
        let w = self.w();
        if w.sleepers.swap(0, Ordering::AcqRel) != 0 {
            w.ring.fetch_add(1, Ordering::Release);
            futex_wake(&w.ring);
        }
    }

    /// Reader, on its way to sleep: flags it (before [`barrier`] and the
    /// last look for a frame).
    fn arm(&self) {
        self.w().sleepers.store(1, Ordering::Relaxed);
    }

    /// Reader: the ring value to sleep on (after [`barrier`]).
    fn ring_value(&self) -> (*const AtomicU32, u32) {
        let r = &self.w().ring;
        (r, r.load(Ordering::Acquire))
    }
}

impl Drop for Bell {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`, unmapped once.
        unsafe { libc::munmap(self.words as *mut libc::c_void, LEN) };
    }
}

const MEMBARRIER_CMD_GLOBAL_EXPEDITED: libc::c_long = 1 << 1;
const MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED: libc::c_long = 1 << 2;

/// Registers this process as a writer for the readers' membarrier; returns
/// whether the writer must fence on every append instead (the kernel has
/// no such command). Once per process.
pub(crate) fn register_writer() -> bool {
    static MUST_FENCE: OnceLock<bool> = OnceLock::new();
    *MUST_FENCE.get_or_init(|| {
        // SAFETY: membarrier takes a command and two integer arguments and
        // changes only this process's membarrier registration.
        let r = unsafe {
            libc::syscall(
                libc::SYS_membarrier,
                MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED,
                0,
                0,
            )
        };
        r != 0
    })
}

/// The reader's half of the barrier (see the module doc).
fn barrier() {
    // SAFETY: as in `register_writer`; the command only runs barriers.
    let r = unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_GLOBAL_EXPEDITED, 0, 0) };
    // On success the command also runs a full barrier on the calling
    // thread, before and after (membarrier(2)).
    if r != 0 {
        fence(Ordering::SeqCst);
    }
}

fn futex_wake(word: &AtomicU32) {
    // SAFETY: FUTEX_WAKE on a valid, aligned u32 of a shared mapping
    // (not FUTEX_PRIVATE: sleepers are in other processes).
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE,
            i32::MAX,
            std::ptr::null::<libc::timespec>(),
        );
    }
}

fn timespec(d: Duration) -> libc::timespec {
    libc::timespec {
        tv_sec: d.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: d.subsec_nanos() as libc::c_long,
    }
}

/// `struct futex_waitv` of Linux 5.16.
#[repr(C)]
struct WaitV {
    val: u64,
    uaddr: u64,
    flags: u32,
    reserved: u32,
}
const FUTEX2_SIZE_U32: u32 = 0x02;

/// Sleeps until one of `words` is rung (its value differs from the one
/// given) or `timeout` passes. Spurious returns are allowed.
fn sleep_on(words: &[(*const AtomicU32, u32)], timeout: Duration) {
    if let [(w, v)] = words {
        let ts = timespec(timeout);
        // SAFETY: FUTEX_WAIT on a valid aligned u32 of a live shared
        // mapping, with a relative timeout that outlives the call.
        unsafe {
            libc::syscall(libc::SYS_futex, (**w).as_ptr(), libc::FUTEX_WAIT, *v, &ts);
        }
        return;
    }
    let waits: Vec<WaitV> = words
        .iter()
        .map(|(w, v)| WaitV {
            val: u64::from(*v),
            // SAFETY: only the address is taken.
            uaddr: unsafe { (**w).as_ptr() } as u64,
            flags: FUTEX2_SIZE_U32,
            reserved: 0,
        })
        .collect();
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    let end = Duration::new(now.tv_sec as u64, now.tv_nsec as u32) + timeout;
    let ts = timespec(end);
    // SAFETY: futex_waitv over `waits` (valid for the call; each address
    // a live aligned u32 of a shared mapping), an absolute CLOCK_MONOTONIC
    // timeout.
    let r = unsafe {
        libc::syscall(
            libc::SYS_futex_waitv,
            waits.as_ptr(),
            waits.len() as libc::c_uint,
            0,
            &ts,
            libc::CLOCK_MONOTONIC,
        )
    };
    if r < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOSYS) {
        // Before Linux 5.16: the first journal's bell, and a short bound.
        sleep_on(&words[..1], timeout.min(NO_BELL_POLL));
    }
}

/// How long a reader sleeps at a time on a journal without a doorbell (a
/// writer of an older version, or none yet, or a doorbell this process
/// may not write): the bound on how late it sees a frame there.
pub const NO_BELL_POLL: Duration = Duration::from_millis(1);

/// What [`wait_any`] needs of each journal it waits on.
pub(crate) trait Waitable {
    /// Whether a frame (or an error) is ready to be read now.
    fn ready(&mut self) -> bool;
    /// The journal's doorbell, opened on first use.
    fn bell(&mut self) -> Option<&Bell>;
    /// It goes to sleep, or wakes: its page helper need not look at it
    /// meanwhile.
    fn sleeping(&mut self, asleep: bool);
}

/// Blocks until one of `items` has a frame ready or `timeout` passes;
/// returns whether one is ready.
pub(crate) fn wait_any<W: Waitable>(items: &mut [W], timeout: Duration) -> bool {
    if items.iter_mut().any(|i| i.ready()) {
        return true;
    }
    items.iter_mut().for_each(|i| i.sleeping(true));
    let ready = sleep_until_ready(items, timeout);
    items.iter_mut().for_each(|i| i.sleeping(false));
    ready
}

fn sleep_until_ready<W: Waitable>(items: &mut [W], timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    let mut words = Vec::with_capacity(items.len());
    // Rings in a row with no frame to read after them.
    let mut empty_rings = 0u32;
    loop {
        if items.iter_mut().any(|i| i.ready()) {
            return true;
        }
        let mut all = true;
        for i in items.iter_mut() {
            match i.bell() {
                Some(b) => b.arm(),
                None => all = false,
            }
        }
        barrier();
        words.clear();
        for i in items.iter_mut() {
            if let Some(b) = i.bell() {
                words.push(b.ring_value());
            }
        }
        if items.iter_mut().any(|i| i.ready()) {
            return true;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        if words.is_empty() {
            std::thread::sleep(left.min(NO_BELL_POLL));
            continue;
        }
        sleep_on(&words, if all { left } else { left.min(NO_BELL_POLL) });
        // SAFETY: each word is in the mapping of a Bell that `items` keeps.
        let rung = words
            .iter()
            .any(|(w, v)| unsafe { &**w }.load(Ordering::Acquire) != *v);
        if rung {
            if items.iter_mut().any(|i| i.ready()) {
                return true;
            }
            // Rung with nothing to read. Once, that is the late ring of a
            // frame this reader already took (the writer rang after the
            // reader's second look had found it). Twice in a row, the
            // writer publishes where this reader cannot see it (past a
            // hole: damage): the caller looks.
            empty_rings += 1;
            if empty_rings >= 2 {
                return false;
            }
        }
    }
}
