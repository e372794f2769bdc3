//! The page exchange between a [`Cursor`](crate::Cursor) and a helper
//! thread: the helper maps the cursor's next page ahead of time (with its
//! page tables populated) and unmaps the pages the cursor left, so the
//! reading thread never makes a system call or takes a page fault at a page
//! switch.

use crate::page::PageRef;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

#[derive(Debug, Default)]
struct Slot {
    ready: Option<PageRef>,
    retired: Vec<PageRef>,
}

/// Shared between one cursor and the helper thread that serves it.
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
    slot: Mutex<Slot>,
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
            slot: Mutex::new(Slot::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Slot> {
        // Every field of Slot is valid on its own: a panic elsewhere while
        // it was held breaks nothing.
        self.slot.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Cursor side: page `page_no` if the helper has it ready.
    pub(crate) fn take_ready(&self, page_no: u64) -> Option<PageRef> {
        self.lock().ready.take().filter(|p| p.page_no() == page_no)
    }

    /// Cursor side: the cursor now reads page `page_no` and left `old`.
    pub(crate) fn retire(&self, page_no: u64, old: PageRef) {
        let mut slot = self.lock();
        slot.retired.push(old);
        self.pos.store(0, Ordering::Relaxed);
        self.current.store(page_no, Ordering::Release);
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
        let want = self.current.load(Ordering::Acquire) + 1;
        let (retired, have) = {
            let mut slot = self.lock();
            let have = slot.ready.as_ref().is_some_and(|p| p.page_no() == want);
            (std::mem::take(&mut slot.retired), have)
        };
        let mut worked = !retired.is_empty();
        drop(retired);
        let half_way = self.pos.load(Ordering::Relaxed) as u64 >= self.page_size / 2;
        if !have && half_way {
            if let Ok(page) = PageRef::open(
                &self.dir,
                &self.name,
                want,
                Some(self.page_size),
                self.populate,
            ) {
                let mut slot = self.lock();
                if self.current.load(Ordering::Acquire) + 1 == want {
                    slot.ready = Some(page);
                }
                worked = true;
            }
        }
        worked
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
