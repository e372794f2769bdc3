//! The page preparer: a background thread that makes the writer's next
//! page (creates, sizes, maps and pre-faults it) before it is needed, and
//! unmaps the pages the writer is done with, so that a page switch on the
//! hot path is a pointer swap and never a file-system call. Under
//! [`SyncPolicy::Page`](crate::SyncPolicy::Page) it hands each page the
//! writer left to a sync thread of its own, which syncs then unmaps it
//! (durable.rs).
//!
//! Each page it makes has the size the growth rule gives it (FORMAT.md,
//! "Page sizes"): twice the page before, up to the journal's largest. A
//! page already on disk (a spare a writer made before) is taken at its own
//! size.

use crate::durable::{sync_page_range, SyncFn, SyncStats};
use crate::format::Geometry;
use crate::pace::Pace;
use crate::page::{PageMut, PrepareOptions};
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The shortest wait between the thread's looks for work (times the pages
/// kept ahead, up to 16): the writer never wakes it, so that a page switch
/// makes no system call.
const POLL: Duration = Duration::from_micros(500);
/// The longest the thread waits between looks, per page kept ahead: a
/// writer that was idle and bursts must find its next page made.
const MAX_POLL_PER_PAGE: Duration = Duration::from_millis(2);

#[derive(Debug, Default)]
struct State {
    /// The page number the writer will need next; 0 for none yet.
    want: u64,
    /// Size of page `want - 1` (the writer's current page).
    before_want: u64,
    /// A frame (its bytes) page `want` must hold at offset 64, 0 for
    /// none: the writer waits to place one too large for the page it has.
    want_frame: usize,
    /// How many pages from `want` on to keep ready (at least 1).
    ahead: u64,
    /// Pages made ready ahead of time, in page order, all `>= want`.
    ready: VecDeque<PageMut>,
    /// Pages to unmap off the hot path (made for nothing: the writer went
    /// past them).
    retired: Vec<PageMut>,
    /// Pages the writer wrote and left: synced under the page policy, then
    /// unmapped.
    left: Vec<PageMut>,
    /// The page number the last attempt failed to make (the appender then
    /// makes it itself and gets the error); nothing past it is made.
    failed: Option<u64>,
    stop: bool,
}

impl State {
    /// The next page to make and its size: the first of the window `[want, want + ahead)` that is not ready, unless
    /// making it failed.
    fn job(&self, geo: &Geometry) -> Option<(u64, u64)> {
        if self.want == 0 {
            return None;
        }
        let (next, before) = self
            .ready
            .back()
            .map_or((self.want, self.before_want), |p| {
                (p.page_no() + 1, p.size())
            });
        let size = geo.next_page_size(before);
        let size = if next == self.want {
            geo.page_size_for(size, self.want_frame)
        } else {
            size
        };
        (next < self.want + self.ahead && self.failed != Some(next)).then_some((next, size))
    }

    /// Whether page `no` is in the window the thread is making.
    fn in_window(&self, no: u64) -> bool {
        self.want != 0 && (self.want..self.want + self.ahead).contains(&no)
    }
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    /// Signalled when a page is ready or failed.
    done: Condvar,
}

/// Handle to the preparer thread of one appender; dropping it stops the
/// thread (and unmaps what it holds).
#[derive(Debug)]
pub(crate) struct Preparer {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    /// Under the page policy: the thread that syncs the pages the writer
    /// left (a thread of its own, so that a sync waiting for the device
    /// never delays the making of the next page).
    sync_thread: Option<JoinHandle<()>>,
}

impl Preparer {
    /// Starts the thread for journal `name` in `dir`, pinned to `core` if
    /// given, keeping `ahead` pages (at least 1) ready past the writer's.
    /// With `sync`, each retired page is synced (then the folder) before
    /// it is unmapped, those the thread still holds when it stops included.
    pub fn spawn(
        dir: PathBuf,
        name: String,
        geo: Geometry,
        opts: PrepareOptions,
        core: Option<usize>,
        ahead: u64,
        sync: Option<(SyncStats, SyncFn)>,
    ) -> std::io::Result<Preparer> {
        let shared = Arc::new(Shared::default());
        lock(&shared.state).ahead = ahead.max(1);
        let (to_sync, sync_thread) = match sync {
            Some((stats, op)) => {
                let (tx, rx) = std::sync::mpsc::channel::<PageMut>();
                let dir = dir.clone();
                let t = std::thread::Builder::new()
                    .name(format!("tape-sync-{name}"))
                    .spawn(move || {
                        // Ends when the preparer's thread, the sender, is
                        // gone, after the pages it sent: a clean close.
                        for page in rx {
                            let b = page.bytes();
                            sync_page_range(&stats, op, b.as_ptr(), b.len(), page.path(), &dir);
                        }
                    })?;
                (Some(tx), Some(t))
            }
            None => (None, None),
        };
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("tape-prep-{name}"))
            .spawn(move || {
                if let Some(c) = core {
                    // Best effort: an unpinned helper still works.
                    let _ = crate::cpu::pin_thread(c);
                }
                run(&s, &dir, &name, geo, opts, to_sync.as_ref())
            })?;
        Ok(Preparer {
            shared,
            thread: Some(thread),
            sync_thread,
        })
    }

    /// Asks for pages `page_no` onwards (as many as the thread keeps
    /// ahead) to be made ready, page `page_no - 1` having `before` bytes
    /// and page `page_no` having to hold a frame of `frame` bytes (0: any
    /// frame that fits the growth rule's size); the thread sees it within
    /// an eighth of the time since the previous request (at most 2 ms per
    /// page kept ahead) and nothing is woken. Pages before `page_no` it
    /// still holds are unmapped.
    pub fn request(&self, page_no: u64, before: u64, frame: usize) {
        let mut st = lock(&self.shared.state);
        st.want = page_no;
        st.before_want = before;
        st.want_frame = frame;
        while st.ready.front().is_some_and(|p| p.page_no() < page_no) {
            if let Some(stale) = st.ready.pop_front() {
                st.retired.push(stale);
            }
        }
        if st.failed.is_some_and(|f| f < page_no) {
            st.failed = None;
        }
    }

    /// Takes page `page_no`, waiting while the thread is still making it.
    /// `None` when it was not asked for or making it failed: the page is
    /// then not being touched by the thread, and the caller may make it.
    pub fn take_wait(&self, page_no: u64) -> Option<PageMut> {
        let mut st = lock(&self.shared.state);
        loop {
            if st.ready.front().is_some_and(|p| p.page_no() == page_no) {
                // Handed over: the window moves past it, so the thread never
                // makes (and pre-faults) it again while the writer fills it.
                st.want = page_no + 1;
                let page = st.ready.pop_front();
                st.before_want = page.as_ref().map_or(st.before_want, PageMut::size);
                st.want_frame = 0;
                return page;
            }
            if !st.in_window(page_no) || st.failed == Some(page_no) || st.stop {
                return None;
            }
            // The writer waits (the thread fell behind): a system call here
            // costs nothing more.
            self.shared.wake.notify_one();
            st = crate::sync::wait(&self.shared.done, st);
        }
    }

    /// Hands a page the writer is done with to the thread to sync (under
    /// the page policy) and unmap.
    pub fn retire(&self, page: PageMut) {
        let mut st = lock(&self.shared.state);
        st.left.push(page);
    }

    /// Whether page `page_no` is ready (tests and benches use it to
    /// measure a switch with the page ready).
    pub fn is_ready(&self, page_no: u64) -> bool {
        lock(&self.shared.state)
            .ready
            .iter()
            .any(|p| p.page_no() == page_no)
    }

    /// Where page `page_no`'s bytes start if it is ready, else 0; without
    /// waiting (0 too when the thread holds the lock). A hint for
    /// prefetching only.
    pub fn ready_base(&self, page_no: u64) -> usize {
        match self.shared.state.try_lock() {
            Ok(st) => st
                .ready
                .iter()
                .find(|p| p.page_no() == page_no)
                .map_or(0, |p| p.base() as usize),
            Err(_) => 0,
        }
    }

    /// Waits until every page of the window is ready (the writer's
    /// `pages_ahead`), making one failed, or `timeout` passed; returns how
    /// many pages are ready.
    pub fn wait_ready(&self, timeout: std::time::Duration) -> usize {
        let deadline = std::time::Instant::now() + timeout;
        let mut st = lock(&self.shared.state);
        loop {
            let full = st.ready.len() as u64 >= st.ahead;
            if full || st.failed.is_some() || st.stop || st.want == 0 {
                return st.ready.len();
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return st.ready.len();
            }
            // The caller waits on purpose: wake the thread now rather than
            // at its next look.
            self.shared.wake.notify_one();
            st = crate::sync::wait_timeout(&self.shared.done, st, left).0;
        }
    }

    /// How many pages are ready ahead of the writer.
    pub fn ready_count(&self) -> usize {
        lock(&self.shared.state).ready.len()
    }
}

impl Drop for Preparer {
    fn drop(&mut self) {
        lock(&self.shared.state).stop = true;
        self.shared.wake.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        // The preparer's thread is gone, and its sender with it: this one
        // syncs what it was sent, then ends.
        if let Some(t) = self.sync_thread.take() {
            let _ = t.join();
        }
    }
}

use crate::sync::lock;

/// Hands the pages the writer left, in page order, to the sync thread
/// when the policy asks for it; else they are unmapped here.
fn sync_retired(mut left: Vec<PageMut>, to_sync: Option<&Sender<PageMut>>) {
    let Some(tx) = to_sync else { return };
    left.sort_by_key(PageMut::page_no);
    for page in left {
        // The sync thread only ends after this one: a failed send cannot
        // happen, and would only unmap the page unsynced.
        let _ = tx.send(page);
    }
}

fn run(
    shared: &Shared,
    dir: &std::path::Path,
    name: &str,
    geo: Geometry,
    opts: PrepareOptions,
    to_sync: Option<&Sender<PageMut>>,
) {
    // When the writer last asked for a new page: the thread looks as often
    // as the writer turns pages.
    let mut pace = Pace::new(0, Instant::now());
    loop {
        let (job, retired, left) = {
            let mut st = lock(&shared.state);
            loop {
                if st.stop {
                    // A clean close: the pages the writer left are synced
                    // before the appender syncs its last one.
                    let left = std::mem::take(&mut st.left);
                    drop(st);
                    sync_retired(left, to_sync);
                    return;
                }
                let job = st.job(&geo);
                if job.is_some() || !st.retired.is_empty() || !st.left.is_empty() {
                    break (
                        job,
                        std::mem::take(&mut st.retired),
                        std::mem::take(&mut st.left),
                    );
                }
                // Polled, not woken: a page switch on the hot path must not
                // make a futex system call to wake this thread. It looks
                // every eighth of the time since the writer last turned a
                // page (`Pace`: a writer that fills a page in 8 ms is looked
                // at every millisecond, an idle one every 2 ms per page kept
                // ahead), and with more pages kept ahead the writer is
                // further from needing the next one, so it can look less
                // often.
                let ahead = st.ahead.clamp(1, 25) as u32;
                let poll = pace.wait(
                    st.want,
                    Instant::now(),
                    POLL * ahead.min(16),
                    MAX_POLL_PER_PAGE * ahead,
                );
                st = crate::sync::wait_timeout(&shared.wake, st, poll).0;
            }
        };
        drop(retired);
        if let Some((no, size)) = job {
            // A failure (a full disk) is not reported here: the appender
            // makes the page itself when it needs it and gets the error.
            match PageMut::create_or_open(dir, name, no, geo, size, opts) {
                Ok(page) => {
                    let mut st = lock(&shared.state);
                    // The writer may have moved past it meanwhile (it made
                    // the page itself, or a request moved the window).
                    if st.in_window(no) && st.ready.back().is_none_or(|p| p.page_no() < no) {
                        st.ready.push_back(page);
                        st.failed = None;
                    } else {
                        st.retired.push(page);
                    }
                }
                Err(_) => lock(&shared.state).failed = Some(no),
            }
            shared.done.notify_all();
        }
        sync_retired(left, to_sync);
    }
}
