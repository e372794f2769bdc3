//! The page exchange between a [`Cursor`](crate::Cursor) and a helper
//! thread: the helper maps the cursor's next page ahead of time (with its
//! page tables populated) and unmaps the pages the cursor left, so the
//! reading thread never makes a system call, takes a lock or a page fault
//! at a page switch. [`PageHelper`] is that thread, serving any number of
//! cursors.
use crate::format::Geometry;
use crate::pace::Pace;
use crate::page::PageRef;
use crate::Cursor;
use std::path::PathBuf;
use std::ptr::null_mut;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant};

/// Retired pages the cursor can hand back before the helper has unmapped
/// the earlier ones; a cursor that finds every slot full unmaps the page
/// itself.
const RETIRED_SLOTS: usize = 4;

/// What the helper alone touches: when the cursor last changed page, to
/// pace its looks, and the number of the page it left in `ready`.
#[derive(Debug)]
struct HelperState {
    pace: Pace,
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
pub(crate) struct PageExchange {
    dir: PathBuf,
    name: String,
    /// The journal's version and largest page size.
    geo: Geometry,
    populate: bool,
    /// Number of the page the cursor reads now.
    current: AtomicU64,
    /// That page's size (pages grow); stored before `current`.
    current_size: AtomicU64,
    /// Roughly where the cursor is in that page (updated every eighth).
    pos: AtomicUsize,
    /// The next page, mapped, or empty.
    ready: Slot<PageRef>,
    /// The number of the page the helper is mapping (and populating) now,
    /// 0 when it maps none: a cursor that gets there first waits for it
    /// ([`PageExchange::wait_for`]) rather than map the page a second time.
    mapping: AtomicU64,
    /// Where `ready`'s bytes start, for the cursor's prefetch hints only
    /// (0 for none; it may be stale, which a prefetch tolerates).
    ready_base: AtomicUsize,
    /// Pages the cursor left, to unmap.
    retired: [Slot<PageRef>; RETIRED_SLOTS],
    helper: Mutex<HelperState>,
    /// The cursor sleeps in `Cursor::wait`: it does not move, so the helper
    /// need not look at it until it wakes (and unparks the helper).
    asleep: AtomicBool,
    /// The helper looks at this cursor only every [`SLEEPING_LOOK`] since
    /// it found it asleep; the cursor unparks it when it moves on.
    napping: AtomicBool,
    /// The helper thread serving this exchange, to unpark then.
    helper_thread: OnceLock<Thread>,
}

/// A slot through which one thread hands a boxed value to another, lock
/// free: an `AtomicPtr` that is null (empty) or owns a `Box<T>`. The
/// exchange's `ready` and `retired` slots are these; the loom model in
/// `tests/loom.rs` checks this code (built with `--cfg loom`).
///
/// `T: Send` because the value changes threads (an `AtomicPtr` is Send
/// and Sync whatever it points to, so without the bound the compiler would
/// not notice a page that stops being Send).
#[derive(Debug)]
pub struct Slot<T: Send>(crate::atomics::AtomicPtr<T>);

impl<T: Send> Slot<T> {
    /// An empty slot.
    pub fn new() -> Self {
        Slot(crate::atomics::AtomicPtr::new(null_mut()))
    }

    /// Takes the value out of the slot, if any.
    pub fn take(&self) -> Option<Box<T>> {
        // Acquire: pairs with the Release of the `put` that stored this
        // pointer, so everything its thread wrote to the value before (the
        // mapping, the box's contents) is visible to this one. A swap, so
        // each pointer goes to exactly one taker.
        let p = self.0.swap(null_mut(), Ordering::Acquire);
        // SAFETY: a non-null pointer in a slot always comes from
        // Box::into_raw in `put`, and the swap took it out of the slot, so
        // no other `take` gets it: this is the only owner. It may come from
        // another thread: `T: Send`.
        (!p.is_null()).then(|| unsafe { Box::from_raw(p) })
    }

    /// Puts `value` in the slot if it is empty; gives it back if not.
    pub fn put(&self, value: Box<T>) -> Result<(), Box<T>> {
        let p = Box::into_raw(value);
        // Release on success: pairs with the Acquire of the `take` that
        // gets it (see there). Relaxed on failure: nothing was published,
        // and the value read (not null) is not used.
        match self
            .0
            .compare_exchange(null_mut(), p, Ordering::Release, Ordering::Relaxed)
        {
            Ok(_) => Ok(()),
            // SAFETY: `p` came from Box::into_raw above and the slot did
            // not take it: still ours alone.
            Err(_) => Err(unsafe { Box::from_raw(p) }),
        }
    }

    /// Puts `value` in the first empty one of `slots`; gives it back when
    /// every slot is full.
    pub fn put_any(slots: &[Slot<T>], mut value: Box<T>) -> Result<(), Box<T>> {
        for slot in slots {
            match slot.put(value) {
                Ok(()) => return Ok(()),
                Err(v) => value = v,
            }
        }
        Err(value)
    }
}

impl<T: Send> Default for Slot<T> {
    fn default() -> Self {
        Slot::new()
    }
}

impl<T: Send> Drop for Slot<T> {
    fn drop(&mut self) {
        drop(self.take());
    }
}

impl PageExchange {
    pub(crate) fn new(
        dir: PathBuf,
        name: String,
        geo: Geometry,
        populate: bool,
        current: u64,
        current_size: u64,
    ) -> Self {
        PageExchange {
            dir,
            name,
            geo,
            populate,
            current: AtomicU64::new(current),
            current_size: AtomicU64::new(current_size),
            pos: AtomicUsize::new(0),
            ready: Slot::new(),
            mapping: AtomicU64::new(0),
            ready_base: AtomicUsize::new(0),
            retired: Default::default(),
            asleep: AtomicBool::new(false),
            napping: AtomicBool::new(false),
            helper_thread: OnceLock::new(),
            helper: Mutex::new(HelperState {
                pace: Pace::new(current, Instant::now()),
                offered: 0,
            }),
        }
    }

    fn helper_state(&self) -> MutexGuard<'_, HelperState> {
        // Plain numbers: a panic elsewhere while it was held breaks nothing.
        crate::sync::lock(&self.helper)
    }

    /// Cursor side: page `page_no` if the helper has it ready, in the box
    /// the cursor then hands its old page back in ([`Self::give_back`]).
    pub(crate) fn take_ready(&self, page_no: u64) -> Option<Box<PageRef>> {
        let page = self.ready.take()?;
        if page.page_no() == page_no {
            self.ready_base.store(0, Ordering::Relaxed);
            Some(page)
        } else {
            // Mapped for a page the cursor went past without it.
            self.give_back(page);
            None
        }
    }

    /// Cursor side: the cursor is at the end of its page and the helper has
    /// not offered the next one, `page_no`. If the helper is mapping it
    /// right now, waits for it and takes it: populating a 128 MiB page's
    /// tables takes milliseconds (25 ms on this 2-vCPU VM), and a cursor that
    /// mapped the page itself meanwhile did that work twice, on the core
    /// it may share with the helper (the helper's copy then unmapped
    /// unused). It yields while it waits, so a helper on its core runs.
    /// `None` when the helper is not mapping that page, or has not
    /// offered it within [`MAPPING_WAIT`] (the cursor then maps it).
    #[cold]
    pub(crate) fn wait_for(&self, page_no: u64) -> Option<Box<PageRef>> {
        if self.mapping.load(Ordering::Acquire) != page_no {
            return None;
        }
        let until = Instant::now() + MAPPING_WAIT;
        loop {
            std::thread::yield_now();
            if let Some(p) = self.take_ready(page_no) {
                return Some(p);
            }
            // The helper offers the page before it clears `mapping`: a
            // last look after seeing it cleared finds the page there.
            if self.mapping.load(Ordering::Acquire) != page_no || Instant::now() > until {
                return self.take_ready(page_no);
            }
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
    pub(crate) fn moved_to(&self, page_no: u64, size: u64) {
        self.pos.store(0, Ordering::Relaxed);
        self.current_size.store(size, Ordering::Relaxed);
        self.current.store(page_no, Ordering::Release);
    }

    /// Cursor side: puts `page` in a free retired slot for the helper to
    /// unmap, or unmaps it here when every slot is full (the helper is far
    /// behind).
    pub(crate) fn give_back(&self, page: Box<PageRef>) {
        // Every slot full: unmapped here, on the cursor's thread.
        drop(Slot::put_any(&self.retired, page));
    }

    /// Cursor side: it goes to sleep in `Cursor::wait` (`true`) or wakes
    /// (`false`). Waking does not unpark the helper (a system call, and a
    /// thread competing for the core, on every wake-up): the cursor's next
    /// [`progress`](Self::progress) does, once it reads on.
    pub(crate) fn set_asleep(&self, asleep: bool) {
        self.asleep.store(asleep, Ordering::Release);
    }

    /// Cursor side: it reads at offset `off` of its page now.
    #[inline]
    pub(crate) fn progress(&self, off: usize) {
        self.pos.store(off, Ordering::Relaxed);
        if self.napping.load(Ordering::Relaxed) {
            self.wake_helper();
        }
    }

    #[cold]
    fn wake_helper(&self) {
        if self.napping.swap(false, Ordering::Relaxed) {
            if let Some(t) = self.helper_thread.get() {
                t.unpark();
            }
        }
    }

    /// Helper side: unmaps retired pages and, once the cursor is half way
    /// through its page, maps the next page if its file exists (mapping it
    /// earlier would double the memory mapped, and populating page tables
    /// slows the reading thread while it runs). Returns whether it did any
    /// work. Errors are left for the cursor to meet when it gets there.
    ///
    /// Also returns how long this cursor can wait for the
    /// next look: an eighth of the time since it last changed page, between
    /// [`MIN_LOOK`] and [`MAX_LOOK`]. A cursor that turns a page every
    /// 10 ms is looked at every millisecond; an idle one 50 times a second.
    fn serve_paced(&self, now: Instant) -> (bool, Duration) {
        let mut worked = false;
        for slot in &self.retired {
            worked |= slot.take().is_some();
        }
        if self.asleep.load(Ordering::Acquire) {
            self.napping.store(true, Ordering::Relaxed);
            return (worked, SLEEPING_LOOK);
        }
        let current = self.current.load(Ordering::Acquire);
        let want = current + 1;
        let mut st = self.helper_state();
        let wait = st.pace.wait(current, now, MIN_LOOK, MAX_LOOK);
        if st.offered == want {
            // Offered already (and maybe taken, the cursor about to say so).
            return (worked, wait);
        }
        // Anything still offered was for a page the cursor went past.
        worked |= self.ready.take().is_some();
        // The size of page `current` (stored before `current`, loaded
        // after it: Acquire above). A hint like `pos`.
        let size = self.current_size.load(Ordering::Relaxed);
        let half_way = self.pos.load(Ordering::Relaxed) as u64 >= size / 2;
        if !half_way {
            return (worked, wait);
        }
        // Cleared on every way out (an error, an unwinding panic), after
        // the page is offered.
        let _mapping = Mapping::start(&self.mapping, want);
        if let Ok(page) = PageRef::open(&self.dir, &self.name, want, Some(self.geo), self.populate)
        {
            let base = page.bytes().as_ptr() as usize;
            // The slot was emptied above and only a look (which holds the
            // helper's mutex) puts in it, so the put finds it empty; were
            // it full, the page would be unmapped here.
            if self.ready.put(Box::new(page)).is_ok() {
                self.ready_base.store(base, Ordering::Relaxed);
                st.offered = want;
            }
            worked = true;
        }
        (worked, wait)
    }
}

/// Marks the page a helper maps, in [`PageExchange`]'s `mapping`, while
/// it lives.
struct Mapping<'a>(&'a AtomicU64);

impl<'a> Mapping<'a> {
    fn start(word: &'a AtomicU64, page_no: u64) -> Self {
        word.store(page_no, Ordering::Release);
        Mapping(word)
    }
}

impl Drop for Mapping<'_> {
    fn drop(&mut self) {
        // Release: the page put in `ready` before is visible to a cursor
        // that sees the word cleared (Acquire in `wait_for`).
        self.0.store(0, Ordering::Release);
    }
}

/// The longest a cursor waits for the helper to finish mapping the page
/// it needs before it maps the page itself: far longer than populating a
/// 1 GiB page takes, so reached only by a helper that is stuck (on a
/// disk-backed root, reading from a device that stopped answering).
pub(crate) const MAPPING_WAIT: Duration = Duration::from_secs(2);

/// How long a helper waits between looks while its cursors sleep (a
/// waking cursor unparks it at once).
pub const SLEEPING_LOOK: Duration = Duration::from_secs(1);

/// Shortest wait between a helper's looks at a cursor.
pub const MIN_LOOK: Duration = Duration::from_millis(1);
/// Longest wait between a helper's looks at a cursor: a cursor that was
/// idle and bursts at up to 16 MiB / 2 / 20 ms = 400 MB/s still finds its
/// next 16 MiB page mapped; past that it maps the first one itself.
pub const MAX_LOOK: Duration = Duration::from_millis(20);

#[derive(Debug, Default)]
struct HelperShared {
    exchanges: Mutex<Vec<Arc<PageExchange>>>,
    /// A stop flag: Release/Acquire (crate docs, "Stop flags").
    stop: AtomicBool,
    /// The helper thread, once spawned.
    thread: OnceLock<Thread>,
}

impl HelperShared {
    fn list(&self) -> MutexGuard<'_, Vec<Arc<PageExchange>>> {
        crate::sync::lock(&self.exchanges)
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
        let t = self.0.thread.get();
        if let Some(t) = t {
            let _ = ex.helper_thread.set(t.clone());
        }
        self.0.list().push(ex);
        // After the push: a helper parked on an empty list (for
        // SLEEPING_LOOK) looks at the new cursor now.
        if let Some(t) = t {
            t.unpark();
        }
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
                    let _ = crate::cpu::pin_thread(c);
                }
                while !s.stop.load(Ordering::Acquire) {
                    let list = {
                        let mut l = s.list();
                        // A cursor that was dropped left only our handle.
                        l.retain(|ex| Arc::strong_count(ex) > 1);
                        l.clone()
                    };
                    let now = Instant::now();
                    let (worked, wait) = list.iter().fold((false, SLEEPING_LOOK), |(w, d), ex| {
                        let (worked, wait) = ex.serve_paced(now);
                        (w | worked, d.min(wait))
                    });
                    if !worked {
                        std::thread::park_timeout(wait);
                    }
                }
            })?;
        let _ = shared.thread.set(thread.thread().clone());
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AppendOptions, Appender};

    /// A journal with one frame, and an exchange for a cursor on it.
    fn journal(dir: &std::path::Path) -> (Appender, PageExchange) {
        let mut app = Appender::create(dir, "w", AppendOptions::default()).unwrap();
        app.write(1, b"x").unwrap();
        let geo = Geometry::new(AppendOptions::default().page_size);
        let ex = PageExchange::new(dir.into(), "w".into(), geo, false, 1, 1 << 20);
        (app, ex)
    }

    #[test]
    fn a_cursor_waits_for_the_page_the_helper_is_mapping_and_takes_it() {
        let dir = tempfile::tempdir().unwrap();
        let (_app, ex) = journal(dir.path());
        let ex = Arc::new(ex);
        // Not being mapped: no wait at all.
        assert!(ex.wait_for(1).is_none());
        // The helper is mapping page 1 (standing for a next page) and
        // offers it 50 ms later: the cursor gets that very mapping.
        let mapping = Mapping::start(&ex.mapping, 1);
        let t0 = Instant::now();
        let helper = {
            let ex = Arc::clone(&ex);
            let dir = dir.path().to_path_buf();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(50));
                let page = PageRef::open(&dir, "w", 1, None, false).unwrap();
                let base = page.bytes().as_ptr() as usize;
                ex.ready.put(Box::new(page)).unwrap();
                base
            })
        };
        let got = ex.wait_for(1).expect("the helper's page");
        let base = helper.join().unwrap();
        drop(mapping);
        assert!(t0.elapsed() >= Duration::from_millis(50));
        assert_eq!(got.page_no(), 1);
        assert_eq!(got.bytes().as_ptr() as usize, base, "not mapped again");
    }

    #[test]
    fn a_helper_that_fails_to_map_the_page_leaves_it_to_the_cursor() {
        let dir = tempfile::tempdir().unwrap();
        let (_app, ex) = journal(dir.path());
        let ex = Arc::new(ex);
        ex.mapping.store(2, Ordering::Release);
        let helper = {
            let ex = Arc::clone(&ex);
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                // The page file is not there: nothing offered, the mark
                // cleared on the way out (as `Mapping`'s drop does).
                drop(Mapping(&ex.mapping));
                ex.mapping.load(Ordering::Acquire)
            })
        };
        let t0 = Instant::now();
        assert!(ex.wait_for(2).is_none());
        assert_eq!(helper.join().unwrap(), 0);
        assert!(
            t0.elapsed() < MAPPING_WAIT,
            "gave up at once, not at the limit"
        );
    }
}
