//! The page exchange between a [`Cursor`](crate::Cursor) and a helper
//! thread: the helper maps the cursor's next page ahead of time (with its
//! page tables populated) and unmaps the pages the cursor left, so the
//! reading thread never makes a system call, takes a lock or a page fault
//! at a page switch. [`PageHelper`] is that thread, serving any number of
//! cursors.
use crate::page::PageRef;
use crate::Cursor;
use std::path::PathBuf;
use std::ptr::null_mut;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Retired pages the cursor can hand back before the helper has unmapped
/// the earlier ones; a cursor that finds every slot full unmaps the page
/// itself.
const RETIRED_SLOTS: usize = 4;

/// What the helper alone touches: when the cursor last changed page, to
/// pace its looks, and the number of the page it left in `ready`.
#[derive(Debug)]
struct HelperState {
    page: u64,
    since: Instant,
    offered: u64,
}

/// Shared between one cursor and the helper thread that serves it.
///
/// Hand-over is lock-free: the helper publishes the mapped next page in
/// `ready` (a boxed [`PageRef`]) and the cursor takes it with one atomic
/// swap; the cursor hands the page it left back in the same box through a
/// `retired` slot. The helper's own bookkeeping sits behind a mutex only it
/// takes.
#[derive(Debug)]
pub struct PageExchange {
    dir: PathBuf,
    name: String,
    page_size: u64,
    populate: bool,
    /// Number of the page the cursor reads now.
    current: AtomicU64,
    /// Roughly where the cursor is in that page (updated every eighth).
    pos: AtomicUsize,
    /// The next page, mapped, or null.
    ready: AtomicPtr<PageRef>,
    /// Where `ready`'s bytes start, for the cursor's prefetch hints only
    /// (0 for none; it may be stale, which a prefetch tolerates).
    ready_base: AtomicUsize,
    /// Pages the cursor left, to unmap.
    retired: [AtomicPtr<PageRef>; RETIRED_SLOTS],
    helper: Mutex<HelperState>,
}

// The slots move pages between threads: `AtomicPtr` is Send and Sync
// whatever it points to, so the compiler would not notice a page that stops
// being Send.
const _: fn() = || {
    fn send<T: Send>() {}
    send::<PageRef>();
};

/// Takes the boxed page out of `slot`, if any.
fn take(slot: &AtomicPtr<PageRef>) -> Option<Box<PageRef>> {
    let p = slot.swap(null_mut(), Ordering::Acquire);
    // SAFETY: a non-null pointer in a slot always comes from Box::into_raw
    // (serve_paced, give_back) and the swap gives it to exactly one taker,
    // which may be on another thread: PageRef is Send (asserted above).
    (!p.is_null()).then(|| unsafe { Box::from_raw(p) })
}

impl PageExchange {
    pub(crate) fn new(
        dir: PathBuf,
        name: String,
        page_size: u64,
        populate: bool,
        current: u64,
    ) -> Self {
        PageExchange {
            dir,
            name,
            page_size,
            populate,
            current: AtomicU64::new(current),
            pos: AtomicUsize::new(0),
            ready: AtomicPtr::new(null_mut()),
            ready_base: AtomicUsize::new(0),
            retired: Default::default(),
            helper: Mutex::new(HelperState {
                page: current,
                since: Instant::now(),
                offered: 0,
            }),
        }
    }

    fn helper_state(&self) -> MutexGuard<'_, HelperState> {
        // Plain numbers: a panic elsewhere while it was held breaks nothing.
        self.helper.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Cursor side: page `page_no` if the helper has it ready, in the box
    /// the cursor then hands its old page back in ([`Self::give_back`]).
    pub(crate) fn take_ready(&self, page_no: u64) -> Option<Box<PageRef>> {
        let page = take(&self.ready)?;
        if page.page_no() == page_no {
            self.ready_base.store(0, Ordering::Relaxed);
            Some(page)
        } else {
            // Mapped for a page the cursor went past without it.
            self.give_back(page);
            None
        }
    }

    /// Cursor side: where the ready page's bytes start, 0 for none. Only a
    /// hint for prefetching: the page may be unmapped by the time it is used.
    #[inline]
    pub(crate) fn ready_hint(&self) -> usize {
        self.ready_base.load(Ordering::Relaxed)
    }

    /// Cursor side: the cursor now reads page `page_no`, at its start.
    /// Two plain stores, made at the switch itself: the helper maps the page
    /// after it from the first look past half way.
    #[inline]
    pub(crate) fn moved_to(&self, page_no: u64) {
        self.pos.store(0, Ordering::Relaxed);
        self.current.store(page_no, Ordering::Release);
    }

    /// Cursor side: puts `page` in a free retired slot for the helper to
    /// unmap, or unmaps it here when every slot is full (the helper is far
    /// behind).
    pub(crate) fn give_back(&self, page: Box<PageRef>) {
        let page = Box::into_raw(page);
        let kept = self.retired.iter().any(|slot| {
            slot.compare_exchange(null_mut(), page, Ordering::Release, Ordering::Relaxed)
                .is_ok()
        });
        if !kept {
            // SAFETY: `page` came from Box::into_raw above and no slot took
            // it.
            drop(unsafe { Box::from_raw(page) });
        }
    }

    /// Cursor side: it reads at offset `off` of its page now.
    #[inline]
    pub(crate) fn progress(&self, off: usize) {
        self.pos.store(off, Ordering::Relaxed);
    }

    /// Helper side: unmaps retired pages and, once the cursor is half way
    /// through its page, maps the next page if its file exists (mapping it
    /// earlier would double the memory mapped, and populating page tables
    /// slows the reading thread while it runs). Returns whether it did any
    /// work. Errors are left for the cursor to meet when it gets there.
    pub fn serve(&self) -> bool {
        self.serve_paced(Instant::now()).0
    }

    /// [`serve`](Self::serve), and how long this cursor can wait for the
    /// next look: an eighth of the time since it last changed page, between
    /// [`MIN_LOOK`] and [`MAX_LOOK`]. A cursor that turns a page every
    /// 10 ms is looked at every millisecond; an idle one 50 times a second.
    fn serve_paced(&self, now: Instant) -> (bool, Duration) {
        let mut worked = false;
        for slot in &self.retired {
            worked |= take(slot).is_some();
        }
        let current = self.current.load(Ordering::Acquire);
        let want = current + 1;
        let mut st = self.helper_state();
        if st.page != current {
            st.page = current;
            st.since = now;
        }
        let wait = (now.saturating_duration_since(st.since) / 8).clamp(MIN_LOOK, MAX_LOOK);
        if st.offered == want {
            // Offered already (and maybe taken, the cursor about to say so).
            return (worked, wait);
        }
        // Anything still offered was for a page the cursor went past.
        worked |= take(&self.ready).is_some();
        let half_way = self.pos.load(Ordering::Relaxed) as u64 >= self.page_size / 2;
        if !half_way {
            return (worked, wait);
        }
        if let Ok(page) = PageRef::open(
            &self.dir,
            &self.name,
            want,
            Some(self.page_size),
            self.populate,
        ) {
            let base = page.bytes().as_ptr() as usize;
            let page = Box::into_raw(Box::new(page));
            match self.ready.compare_exchange(
                null_mut(),
                page,
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    self.ready_base.store(base, Ordering::Relaxed);
                    st.offered = want;
                }
                // SAFETY: `page` came from Box::into_raw above and the slot
                // did not take it.
                Err(_) => drop(unsafe { Box::from_raw(page) }),
            }
            worked = true;
        }
        (worked, wait)
    }
}

impl Drop for PageExchange {
    fn drop(&mut self) {
        drop(take(&self.ready));
        for slot in &self.retired {
            drop(take(slot));
        }
    }
}

/// Shortest wait between a helper's looks at a cursor.
pub const MIN_LOOK: Duration = Duration::from_millis(1);
/// Longest wait between a helper's looks at a cursor: a cursor that was
/// idle and bursts at up to 16 MiB / 2 / 20 ms = 400 MB/s still finds its
/// next 16 MiB page mapped; past that it maps the first one itself.
pub const MAX_LOOK: Duration = Duration::from_millis(20);

#[derive(Debug, Default)]
struct HelperShared {
    exchanges: Mutex<Vec<Arc<PageExchange>>>,
    stop: AtomicBool,
}

impl HelperShared {
    fn list(&self) -> MutexGuard<'_, Vec<Arc<PageExchange>>> {
        self.exchanges.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A thread that serves the page exchanges of any number of cursors (a
/// reader's, an endpoint's): it maps each cursor's next page before the
/// cursor gets there and unmaps the pages it left. It looks at each cursor
/// as often as that cursor turns pages ([`MIN_LOOK`] to [`MAX_LOOK`]), and
/// is never woken by the reading thread. Dropping it stops the thread.
#[derive(Debug)]
pub struct PageHelper {
    shared: Arc<HelperShared>,
    thread: Option<JoinHandle<()>>,
}

/// Gives cursors to a [`PageHelper`] from any thread.
#[derive(Debug, Clone)]
pub struct PageHelperHandle(Arc<HelperShared>);

impl PageHelperHandle {
    /// The helper serves `cursor`'s pages from now on, until the cursor is
    /// dropped.
    pub fn add(&self, cursor: &mut Cursor) {
        let ex = cursor.exchange(true);
        self.0.list().push(ex);
    }
}

impl PageHelper {
    /// Starts the thread, named `name`, pinned to `core` if given (best
    /// effort: an unpinned helper still works).
    pub fn spawn(name: &str, core: Option<usize>) -> std::io::Result<PageHelper> {
        let shared = Arc::new(HelperShared::default());
        let s = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                if let Some(c) = core {
                    let _ = pin_thread(c);
                }
                while !s.stop.load(Ordering::Acquire) {
                    let list = {
                        let mut l = s.list();
                        // A cursor that was dropped left only our handle.
                        l.retain(|ex| Arc::strong_count(ex) > 1);
                        l.clone()
                    };
                    let now = Instant::now();
                    let (worked, wait) = list.iter().fold((false, MAX_LOOK), |(w, d), ex| {
                        let (worked, wait) = ex.serve_paced(now);
                        (w | worked, d.min(wait))
                    });
                    if !worked {
                        std::thread::park_timeout(wait);
                    }
                }
            })?;
        Ok(PageHelper {
            shared,
            thread: Some(thread),
        })
    }

    /// A handle to give it cursors.
    pub fn handle(&self) -> PageHelperHandle {
        PageHelperHandle(Arc::clone(&self.shared))
    }

    /// The helper serves `cursor`'s pages from now on, until the cursor is
    /// dropped.
    pub fn add(&self, cursor: &mut Cursor) {
        self.handle().add(cursor)
    }
}

impl Drop for PageHelper {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

/// Pins the calling thread to CPU `core`.
pub fn pin_thread(core: usize) -> std::io::Result<()> {
    // SAFETY: cpu_set_t is plain data; zeroed is the empty set, CPU_SET
    // writes inside it (core is checked against the set's size).
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if core >= 8 * std::mem::size_of::<libc::cpu_set_t>() {
            return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
        }
        libc::CPU_SET(core, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}
