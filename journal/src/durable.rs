//! The durability policy: when a writer's frames reach the disk.
//!
//! A frame is published into a shared mapping of a page file: from then on
//! it is in the kernel's page cache and survives the crash of any process
//! (the writer's included). What it does not survive by itself is the loss
//! of the machine (a power cut, a kernel panic) before the kernel writes the
//! page back, which it does in its own time and order (`vm.dirty_*`, about
//! 30 s on a default Linux). [`SyncPolicy`] says when the writer makes its
//! frames durable on disk, always off the hot path:
//!
//! - [`SyncPolicy::None`]: never (the kernel's own write-back). Safe against
//!   any process crash; a power cut loses what the kernel had not written.
//! - [`SyncPolicy::Page`]: each page is synced (`msync(MS_SYNC)` of the
//!   whole page, then an `fsync` of the journal's folder so that the page
//!   file's name is durable too) when the writer leaves it, by a sync
//!   thread of its own to which the page preparer hands the page at its
//!   next look (within milliseconds; a thread apart, so that a sync waiting
//!   for the device never delays the making of the next page), and the
//!   last page when the writer closes cleanly. A power cut loses at most
//!   the frames of the page being written (up to the page size) plus a
//!   page left and not synced yet.
//! - [`SyncPolicy::Interval`]: a background thread looks every `MS`
//!   milliseconds for frames published since its last look (it follows the
//!   journal's length words like a reader, reading nothing the writer does
//!   not already publish) and syncs the dirty range of the page they are in
//!   (`msync(MS_SYNC)` from the last synced 4 KiB block to the last
//!   published frame; a finished page up to its end marker and the folder
//!   when it moves to the next page). A power cut loses at most the frames
//!   of the last `MS` milliseconds plus the time one sync takes; an idle
//!   writer costs no sync at all.
//!
//! Neither policy adds anything to the append path: the writer's `write`
//! makes no system call and no extra store for them. What they cost it is
//! indirect: a sync write-protects the 4 KiB blocks it wrote back, so the
//! writer's next store into the block it is filling takes one minor page
//! fault (about a microsecond) after each sync, and on a device that needs
//! stable pages during write-back (some RAID and integrity setups) that
//! store waits for the device. On tmpfs or `/dev/shm` a sync does nothing
//! (there is no disk: the data is lost with the machine whatever the
//! policy).
//!
//! A sync that fails (`EIO`, `ENOSPC` on a thin device) is counted and its
//! error kept in [`SyncStats`]; nothing panics and the journal is not
//! touched (readers still read every frame, from the page cache). Linux
//! reports a write-back error once: the frames of a failed sync may not be
//! on disk even after a later sync succeeds, so a caller that cares checks
//! [`SyncStats::failures`].

use crate::format::{align_frame, END_MARKER_ROOM, END_OF_PAGE, PAGE_HEADER_LEN};
use crate::page::PageRef;
use crate::publish::load_len;
use crate::sync::{lock, wait_timeout};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// When a writer makes its frames durable on disk (see the module docs for
/// what each one guarantees and costs). Written on the command line as
/// `none`, `page` or `interval=MS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncPolicy {
    /// Never sync: the kernel writes pages back in its own time. Safe
    /// against any process crash, not against a power cut.
    #[default]
    None,
    /// Sync each page when the writer leaves it, and the last one at a
    /// clean close.
    Page,
    /// Sync the frames published in the last interval, every interval (at
    /// least 1 ms).
    Interval(Duration),
}

/// Why a `--sync` value was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncParseError(String);

impl fmt::Display for SyncParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SyncParseError {}

impl FromStr for SyncPolicy {
    type Err = SyncParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| {
            SyncParseError(format!(
                "bad sync policy {s:?}: {why}; use none, page or interval=MS (MS a whole number of milliseconds, at least 1)"
            ))
        };
        match s {
            "none" => Ok(SyncPolicy::None),
            "page" => Ok(SyncPolicy::Page),
            _ => {
                let Some(ms) = s.strip_prefix("interval=") else {
                    return Err(bad("unknown policy"));
                };
                let ms: u64 = ms
                    .parse()
                    .map_err(|_| bad("the interval is not a whole number of milliseconds"))?;
                if ms == 0 {
                    return Err(bad("the interval must be at least 1 ms"));
                }
                Ok(SyncPolicy::Interval(Duration::from_millis(ms)))
            }
        }
    }
}

impl fmt::Display for SyncPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SyncPolicy::None => f.write_str("none"),
            SyncPolicy::Page => f.write_str("page"),
            SyncPolicy::Interval(d) => write!(f, "interval={}", d.as_millis()),
        }
    }
}

/// What a writer's syncs did, shared with the threads that make them.
/// Clone it (an `Arc`) to keep reading it after the writer is dropped.
#[derive(Debug, Clone, Default)]
pub struct SyncStats(Arc<StatsInner>);

#[derive(Debug, Default)]
struct StatsInner {
    /// Data syncs that succeeded (`msync` calls).
    syncs: AtomicU64,
    /// Folder syncs that succeeded (`fsync` of the journal's folder).
    dir_syncs: AtomicU64,
    /// Syncs of either kind that failed.
    failures: AtomicU64,
    /// The last failure, as a sentence naming the file.
    last_failure: Mutex<Option<String>>,
}

impl SyncStats {
    /// Data syncs made (`msync(MS_SYNC)` of a page range) that succeeded.
    pub fn syncs(&self) -> u64 {
        self.0.syncs.load(Ordering::Relaxed)
    }

    /// Syncs of the journal's folder (after a new page file) that
    /// succeeded.
    pub fn dir_syncs(&self) -> u64 {
        self.0.dir_syncs.load(Ordering::Relaxed)
    }

    /// Syncs that failed: the frames they covered may not be on disk.
    pub fn failures(&self) -> u64 {
        self.0.failures.load(Ordering::Relaxed)
    }

    /// The last failure, e.g. "syncing /r/journal/md.00000002.journal
    /// failed: Input/output error (os error 5)".
    pub fn last_failure(&self) -> Option<String> {
        lock(&self.0.last_failure).clone()
    }

    /// The last failure when syncs failed since the caller last looked
    /// (`seen`: the failures it has reported so far, updated), for a
    /// caller that reports each new failure once. One relaxed load when
    /// nothing failed.
    pub fn new_failure(&self, seen: &mut u64) -> Option<String> {
        let now = self.failures();
        if now == *seen {
            return None;
        }
        *seen = now;
        self.last_failure()
    }

    fn record(&self, what: &Path, r: io::Result<()>, dir: bool) {
        match r {
            Ok(()) if dir => {
                self.0.dir_syncs.fetch_add(1, Ordering::Relaxed);
            }
            Ok(()) => {
                self.0.syncs.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                *lock(&self.0.last_failure) =
                    Some(format!("syncing {} failed: {e}", what.display()));
                self.0.failures.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// How a range is made durable: `msync` in the product, a failing stand-in
/// in tests.
pub(crate) type SyncFn = fn(*const u8, usize) -> io::Result<()>;

/// `msync(MS_SYNC)` of `[addr, addr + len)`, its start rounded down to the
/// 4 KiB block it is in. On Linux that writes back the page-cache pages of
/// the mapped file range and waits for the device (as `fdatasync` of that
/// range would), whichever mapping of the file dirtied them.
pub(crate) fn msync(addr: *const u8, len: usize) -> io::Result<()> {
    let start = addr as usize & !4095;
    let len = len + (addr as usize - start);
    // SAFETY: msync only reads the process's mapping table; callers pass a
    // range inside a mapping they hold (the rounding down stays inside the
    // same mapping, which starts 4 KiB-aligned).
    let rc = unsafe { libc::msync(start as *mut libc::c_void, len, libc::MS_SYNC) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `fsync` of a folder, so that the names of the files made in it are
/// durable.
pub(crate) fn fsync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Makes `[0, len)` of a mapping durable and the journal's folder after it,
/// recording both in `stats`.
pub(crate) fn sync_page_range(
    stats: &SyncStats,
    op: SyncFn,
    base: *const u8,
    len: usize,
    file: &Path,
    dir: &Path,
) {
    stats.record(file, op(base, len), false);
    stats.record(dir, fsync_dir(dir), true);
}

#[derive(Debug, Default)]
struct Stop {
    stop: Mutex<bool>,
    cv: Condvar,
}

/// The thread of [`SyncPolicy::Interval`]: every interval it syncs the
/// frames published since its last look. Dropping it stops the thread
/// after a last look that syncs everything published (a clean close).
#[derive(Debug)]
pub(crate) struct IntervalSyncer {
    stop: Arc<Stop>,
    thread: Option<JoinHandle<()>>,
}

/// Where the interval thread is in the journal.
struct Follow {
    dir: PathBuf,
    name: String,
    geo: crate::format::Geometry,
    page: Option<PageRef>,
    page_no: u64,
    /// Offset of the next frame it has not seen published.
    scan: usize,
    /// Offset up to which the page is synced.
    synced: usize,
    stats: SyncStats,
    op: SyncFn,
}

impl Follow {
    /// Follows the published frames from where it stopped and syncs the
    /// range it passed (a finished page up to its end marker, then the
    /// folder, and on into the next page).
    fn look(&mut self) {
        loop {
            if self.page.is_none() {
                match PageRef::open(&self.dir, &self.name, self.page_no, Some(self.geo), false) {
                    Ok(p) => self.page = Some(p),
                    // Pruned before this thread got there: nothing left to
                    // sync in it; on to the next page.
                    Err(e)
                        if e.is_not_found()
                            && crate::files::page_path(&self.dir, &self.name, self.page_no + 1)
                                .exists() =>
                    {
                        self.page_no += 1;
                        self.scan = PAGE_HEADER_LEN;
                        self.synced = 0;
                        continue;
                    }
                    // Anything else: looked at again next time.
                    Err(_) => return,
                }
            }
            let Some(page) = &self.page else { return };
            let bytes = page.bytes();
            let mut ended = false;
            while self.scan + END_MARKER_ROOM <= bytes.len() {
                let len = load_len(bytes, self.scan);
                if len == 0 {
                    break;
                }
                if len == END_OF_PAGE {
                    ended = true;
                    self.scan += END_MARKER_ROOM;
                    break;
                }
                let next = self.scan + align_frame(len as usize);
                if next > bytes.len() {
                    // Not a frame this writer published: leave it to verify.
                    break;
                }
                self.scan = next;
            }
            if self.scan > self.synced {
                let path = page.path().to_path_buf();
                // SAFETY: `synced < scan <= bytes.len()`: inside the mapping.
                let from = unsafe { bytes.as_ptr().add(self.synced) };
                self.stats
                    .record(&path, (self.op)(from, self.scan - self.synced), false);
                self.synced = self.scan;
            }
            if !ended {
                return;
            }
            // The page after a marker exists before the marker is
            // published: its name is made durable before its frames are.
            let dir = self.dir.clone();
            self.stats.record(&dir, fsync_dir(&dir), true);
            self.page = None;
            self.page_no += 1;
            self.scan = PAGE_HEADER_LEN;
            self.synced = 0;
        }
    }
}

impl IntervalSyncer {
    /// Starts the thread for journal `name` in `dir`, whose writer is at
    /// offset `tail` of page `page_no`, syncing every `every`. What is in
    /// that page before `tail` is synced at the first look.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn spawn(
        dir: PathBuf,
        name: String,
        geo: crate::format::Geometry,
        page_no: u64,
        tail: usize,
        every: Duration,
        stats: SyncStats,
        op: SyncFn,
    ) -> io::Result<IntervalSyncer> {
        let stop = Arc::new(Stop::default());
        let s = Arc::clone(&stop);
        let mut f = Follow {
            dir,
            name,
            geo,
            page: None,
            page_no,
            scan: tail.max(PAGE_HEADER_LEN),
            synced: 0,
            stats,
            op,
        };
        let thread = std::thread::Builder::new()
            .name(format!("tape-sync-{}", f.name))
            .spawn(move || {
                let mut next = Instant::now() + every;
                loop {
                    let stopped = {
                        let mut g = lock(&s.stop);
                        loop {
                            if *g {
                                break true;
                            }
                            let left = next.saturating_duration_since(Instant::now());
                            if left.is_zero() {
                                break false;
                            }
                            g = wait_timeout(&s.cv, g, left).0;
                        }
                    };
                    f.look();
                    if stopped {
                        return;
                    }
                    // A sync slower than the interval: the next look starts
                    // at once rather than piling up.
                    next = (next + every).max(Instant::now());
                }
            })?;
        Ok(IntervalSyncer {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for IntervalSyncer {
    fn drop(&mut self) {
        *lock(&self.stop.stop) = true;
        self.stop.cv.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AppendOptions, Appender};

    fn opts(sync: SyncPolicy) -> AppendOptions {
        AppendOptions {
            page_size: 1 << 20,
            sync,
            ..AppendOptions::default()
        }
    }

    /// Writes 1000-byte frames until the appender made `switches` page
    /// switches, then 10 more frames; returns the frames written.
    fn fill(a: &mut Appender, switches: u64) -> u64 {
        let payload = [7u8; 1000];
        let mut n = 0;
        while a.page_switches() < switches {
            a.write(1, &payload).unwrap();
            n += 1;
        }
        for _ in 0..10 {
            a.write(1, &payload).unwrap();
        }
        n + 10
    }

    fn eio(_: *const u8, _: usize) -> io::Result<()> {
        Err(io::Error::from_raw_os_error(libc::EIO))
    }

    /// Waits (a watchdog, not a timing assertion) until `f` holds.
    fn wait_until(what: &str, f: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    #[test]
    fn no_policy_makes_no_sync() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = Appender::create(dir.path(), "md", opts(SyncPolicy::None)).unwrap();
        fill(&mut a, 2);
        let stats = a.sync_stats().clone();
        drop(a);
        assert_eq!(
            (stats.syncs(), stats.dir_syncs(), stats.failures()),
            (0, 0, 0)
        );
    }

    #[test]
    fn the_page_policy_syncs_each_page_left_and_the_last_at_close() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = Appender::create(dir.path(), "md", opts(SyncPolicy::Page)).unwrap();
        fill(&mut a, 3);
        let stats = a.sync_stats().clone();
        // The pages left are synced by the sync thread, off the hot path.
        wait_until("the three pages left synced", || stats.syncs() == 3);
        drop(a);
        // ... and the page being written at the close.
        assert_eq!(
            (stats.syncs(), stats.dir_syncs(), stats.failures()),
            (4, 4, 0)
        );
    }

    #[test]
    fn the_page_policy_without_a_preparer_syncs_at_the_switch() {
        let dir = tempfile::tempdir().unwrap();
        let o = AppendOptions {
            background: false,
            ..opts(SyncPolicy::Page)
        };
        let mut a = Appender::create(dir.path(), "md", o).unwrap();
        fill(&mut a, 2);
        assert_eq!(a.sync_stats().syncs(), 2);
        let stats = a.sync_stats().clone();
        drop(a);
        assert_eq!(stats.syncs(), 3);
    }

    #[test]
    fn the_interval_policy_syncs_what_was_published_and_nothing_when_idle() {
        let dir = tempfile::tempdir().unwrap();
        let every = Duration::from_millis(5);
        let mut a = Appender::create(dir.path(), "md", opts(SyncPolicy::Interval(every))).unwrap();
        let stats = a.sync_stats().clone();
        a.write(1, b"tick").unwrap();
        wait_until("the first frame synced", || stats.syncs() >= 1);
        // Nothing new: ten intervals pass without a sync.
        let before = stats.syncs();
        std::thread::sleep(every * 10);
        assert_eq!(stats.syncs(), before);
        // Across two page switches: each finished page up to its marker and
        // the folder as the thread follows the writer into the next page.
        fill(&mut a, 2);
        drop(a);
        assert!(stats.syncs() >= before + 3, "{}", stats.syncs());
        assert_eq!((stats.dir_syncs(), stats.failures()), (2, 0));
    }

    #[test]
    fn the_interval_thread_follows_a_journal_reopened_mid_page() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = Appender::create(dir.path(), "md", opts(SyncPolicy::None)).unwrap();
        fill(&mut a, 1);
        drop(a);
        let every = Duration::from_millis(5);
        let mut a = Appender::create(dir.path(), "md", opts(SyncPolicy::Interval(every))).unwrap();
        let stats = a.sync_stats().clone();
        let seq = a.write(1, b"after").unwrap();
        drop(a);
        assert!(stats.syncs() >= 1);
        assert_eq!(stats.failures(), 0);
        assert_eq!(crate::verify(dir.path(), "md").unwrap().last_seq, seq);
    }

    #[test]
    fn a_failing_sync_is_reported_and_corrupts_nothing() {
        for policy in [
            SyncPolicy::Page,
            SyncPolicy::Interval(Duration::from_millis(2)),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let mut a = Appender::create_with(dir.path(), "md", opts(policy), eio).unwrap();
            let stats = a.sync_stats().clone();
            let n = fill(&mut a, 2);
            let next = a.next_seq();
            drop(a);
            assert_eq!(stats.syncs(), 0, "{policy}");
            assert!(stats.failures() >= 3, "{policy}: {}", stats.failures());
            let e = stats.last_failure().unwrap();
            assert!(
                e.contains("md.0000000") && e.contains("Input/output error"),
                "{policy}: {e}"
            );
            // Every frame is there, and the next writer goes on after them.
            let report = crate::verify(dir.path(), "md").unwrap();
            assert_eq!((report.frames, report.last_seq), (n, next - 1), "{policy}");
            let mut a = Appender::create(dir.path(), "md", opts(SyncPolicy::None)).unwrap();
            assert_eq!(a.write(1, b"more").unwrap(), next);
        }
    }

    #[test]
    fn policies_parse_and_print_back() {
        for s in ["none", "page", "interval=1", "interval=250"] {
            let p: SyncPolicy = s.parse().unwrap();
            assert_eq!(p.to_string(), s);
        }
        assert_eq!(
            "interval=20".parse::<SyncPolicy>().unwrap(),
            SyncPolicy::Interval(Duration::from_millis(20))
        );
    }

    #[test]
    fn bad_policies_get_one_line_that_says_what_to_use() {
        for (s, why) in [
            ("interval=0", "at least 1 ms"),
            ("interval=abc", "not a whole number"),
            ("interval=", "not a whole number"),
            ("interval=-5", "not a whole number"),
            ("always", "unknown policy"),
            ("", "unknown policy"),
        ] {
            let e = s.parse::<SyncPolicy>().unwrap_err().to_string();
            assert!(e.contains(why), "{s:?}: {e}");
            assert!(e.contains("none, page or interval=MS"), "{e}");
            assert!(!e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn a_failure_is_counted_and_named() {
        let stats = SyncStats::default();
        stats.record(Path::new("/r/md.1"), Ok(()), false);
        stats.record(Path::new("/r"), Ok(()), true);
        stats.record(
            Path::new("/r/md.2"),
            Err(io::Error::from_raw_os_error(libc::EIO)),
            false,
        );
        assert_eq!(
            (stats.syncs(), stats.dir_syncs(), stats.failures()),
            (1, 1, 1)
        );
        let e = stats.last_failure().unwrap();
        assert!(
            e.contains("/r/md.2") && e.contains("Input/output error"),
            "{e}"
        );
    }
}
