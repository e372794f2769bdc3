//! The raw appender: the single writer of one journal, with no service
//! involved. Publication follows Aeron's term appender: header and payload
//! first, then the length word with a Release store.

use crate::bell::{register_writer, Bell};
use crate::durable::{msync, sync_page_range, IntervalSyncer, SyncFn, SyncPolicy, SyncStats};
use crate::files::{check_name, JournalLock};
use crate::format::{
    align_frame, checksum, valid_page_size, FrameHeader, Geometry, END_MARKER_ROOM, END_OF_PAGE,
    FRAME_HEADER_LEN, PAGE_HEADER_LEN,
};
use crate::hint::{prefetch_write, WARM_BLOCK, WARM_SHIFT};
use crate::locate::{locate_tail, pages, OpenError};
use crate::page::{PageMut, PrepareOptions};
use crate::prepare::Preparer;
use crate::publish::store_len;
use crate::scan::nonzero_end;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

mod claim;
mod errors;
mod options;
mod replica;

pub use claim::Claim;
pub use errors::{ReplicaError, WriteError};
pub use options::{AppendOptions, FrameMeta};

/// A frame's write time: read from the clock at publication, or given (a
/// replicated frame keeps its source's).
#[derive(Debug, Clone, Copy)]
enum Stamp {
    Now,
    Given(i64),
}

/// How far from the end of its page the writer starts warming the next
/// page's first lines: the last eight 4 KiB blocks.
const NEXT_PAGE_WARM: usize = 8 << WARM_SHIFT;

/// The single writer of one journal.
///
/// Holds the journal's writer lock for its whole life: a second appender of
/// the same journal, in any process, is refused with the holder's pid.
#[derive(Debug)]
pub struct Appender {
    dir: PathBuf,
    name: String,
    page: PageMut,
    /// `page.base()`, cached.
    base: *mut u8,
    /// `page`'s size (pages grow: FORMAT.md, "Page sizes").
    page_size: usize,
    /// The journal's version and largest page size.
    geo: Geometry,
    max_payload: usize,
    /// Offset of the next frame in `page`.
    tail: usize,
    next_seq: u64,
    /// Whether the journal has any frame (a replica's first frame may
    /// start at any sequence number).
    has_frames: bool,
    last_time: i64,
    source: u32,
    dest: u32,
    switches: u64,
    /// Where the next page's bytes start, once known (0 before): the
    /// writer warms its first lines before it gets there.
    next_base: usize,
    prepare: PrepareOptions,
    preparer: Option<Preparer>,
    /// The doorbell's `sleepers` word (a static 0 when the journal has no
    /// doorbell), loaded after each frame.
    sleepers: *const AtomicU32,
    /// Fence before that load: the kernel has no membarrier (bell.rs).
    must_fence: bool,
    bell: Option<Bell>,
    /// When frames are made durable (durable.rs); none of it on the
    /// append path.
    sync: SyncPolicy,
    sync_stats: SyncStats,
    sync_op: SyncFn,
    /// The thread of [`SyncPolicy::Interval`].
    syncer: Option<IntervalSyncer>,
    _lock: JournalLock,
}

/// Zeroes page `no` (a page after the tail page, with no frame) from its
/// first frame slot to its last byte that is not zero.
fn clear_spare(dir: &Path, name: &str, no: u64, geo: Geometry) -> Result<(), OpenError> {
    let page = PageMut::open(dir, name, no, Some(geo))?;
    let dirty_end = nonzero_end(page.bytes(), PAGE_HEADER_LEN);
    if dirty_end > PAGE_HEADER_LEN {
        // SAFETY: [64, dirty_end) is inside the mapping; we hold the
        // journal lock, so no other writer; the page's first len word is 0
        // (it is a spare), so readers read none of these bytes.
        unsafe {
            std::ptr::write_bytes(
                page.base().add(PAGE_HEADER_LEN),
                0,
                dirty_end - PAGE_HEADER_LEN,
            )
        };
    }
    Ok(())
}

/// `sleepers` of a journal whose doorbell could not be made: nobody.
static NOBODY: AtomicU32 = AtomicU32::new(0);

// SAFETY: `base` points into `page`'s mapping, which the Appender owns and
// moves with it; nothing else in the process writes through it. `sleepers`
// points into `bell`'s mapping (owned likewise) or at a static.
unsafe impl Send for Appender {}

impl Appender {
    /// Opens journal `name` in `dir` for appending: creates it (and `dir`)
    /// when it does not exist, else finds its tail, recovering after a
    /// crashed writer: bytes past the last published frame are zeroed before
    /// anything new is published, and the sequence continues.
    ///
    /// Refuses a journal with a damaged frame in its last page rather than
    /// writing after it.
    pub fn create(dir: &Path, name: &str, opts: AppendOptions) -> Result<Appender, OpenError> {
        Appender::create_with(dir, name, opts, msync)
    }

    /// [`create`](Self::create) with the call that makes a range durable
    /// chosen (tests make it fail).
    pub(crate) fn create_with(
        dir: &Path,
        name: &str,
        opts: AppendOptions,
        sync_op: SyncFn,
    ) -> Result<Appender, OpenError> {
        check_name(name).map_err(OpenError::BadName)?;
        if !valid_page_size(opts.page_size) {
            return Err(OpenError::BadPageSize(opts.page_size));
        }
        std::fs::create_dir_all(dir).map_err(|source| OpenError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let lock = JournalLock::acquire(dir, name).map_err(OpenError::Locked)?;
        let (page, tail, last, geo, fresh) = match pages(dir, name) {
            Err(OpenError::NotFound { .. }) => {
                // No page file at all: page 1 is made now, under the lock,
                // the first of pages that grow to `opts.page_size`.
                let geo = Geometry::new(opts.page_size);
                let size = geo.first_page_size();
                let page = PageMut::create_or_open(dir, name, 1, geo, size, opts.prepare)?;
                (page, PAGE_HEADER_LEN, None, geo, true)
            }
            Err(e) => return Err(e),
            Ok(p) => {
                // An existing journal keeps its version and largest page
                // size (a version-1 journal goes on with pages of its one
                // size, in version 1).
                let geo = p.geometry;
                let t = locate_tail(dir, name, &p, true)?;
                // The tail's page exists (recovery refuses a marker whose
                // next page is missing); the size is never used.
                let size = geo.first_page_size();
                let page = PageMut::create_or_open(dir, name, t.page_no, geo, size, opts.prepare)?;
                // The pages after the tail page (spares) get frames only
                // from this writer: whatever is in them past the header
                // (checked above to hold no frame published past a hole)
                // becomes zeros too, before the tail gets there.
                for &no in p.numbers.iter().filter(|&&no| no > t.page_no) {
                    clear_spare(dir, name, no, geo)?;
                }
                (page, t.offset, t.last, geo, false)
            }
        };
        let page_size = page.size();
        // Recovery: whatever a crashed writer left past the tail (a frame
        // it had not published) becomes zeros, so no later frame can be
        // read through it. The tail's own len word is already 0, so a reader
        // waiting there sees nothing while this runs.
        // A page this call just created is all zeros: no scan (a 1 GiB
        // page takes a fraction of a second).
        let dirty_end = if last.is_none() && fresh {
            tail
        } else {
            nonzero_end(page.bytes(), tail)
        };
        if dirty_end > tail {
            // SAFETY: [tail, dirty_end) is inside the mapping; we hold the
            // journal lock, so no other writer; readers do not read past an
            // unpublished len word.
            unsafe { std::ptr::write_bytes(page.base().add(tail), 0, dirty_end - tail) };
        }
        let sync_stats = SyncStats::default();
        let io_err = |source| OpenError::Io {
            path: dir.to_path_buf(),
            source,
        };
        let page_sync = (opts.sync == SyncPolicy::Page).then(|| (sync_stats.clone(), sync_op));
        let syncer = match opts.sync {
            SyncPolicy::Interval(every) => Some(
                IntervalSyncer::spawn(
                    dir.to_path_buf(),
                    name.to_string(),
                    geo,
                    page.page_no(),
                    tail,
                    every,
                    sync_stats.clone(),
                    sync_op,
                )
                .map_err(io_err)?,
            ),
            _ => None,
        };
        let preparer = if opts.background {
            let p = Preparer::spawn(
                dir.to_path_buf(),
                name.to_string(),
                geo,
                opts.prepare,
                opts.helper_core,
                u64::from(opts.pages_ahead),
                page_sync,
            )
            .map_err(|source| OpenError::Io {
                path: dir.to_path_buf(),
                source,
            })?;
            p.request(page.page_no() + 1, page_size, 0);
            Some(p)
        } else {
            None
        };
        // The doorbell: readers sleep on it (bell.rs). Without one (a
        // folder that refuses the file) readers poll; writing goes on.
        let must_fence = register_writer();
        let bell = Bell::create(dir, name).ok();
        let sleepers = bell
            .as_ref()
            .map_or(&NOBODY as *const AtomicU32, Bell::sleepers);
        Ok(Appender {
            dir: dir.to_path_buf(),
            name: name.to_string(),
            base: page.base(),
            next_base: 0,
            page,
            page_size: page_size as usize,
            geo,
            max_payload: geo.max_payload(),
            tail,
            next_seq: last.map_or(1, |(s, _)| s + 1),
            has_frames: last.is_some(),
            last_time: last.map_or(i64::MIN, |(_, t)| t),
            source: 0,
            dest: 0,
            switches: 0,
            prepare: opts.prepare,
            preparer,
            sleepers,
            must_fence,
            bell,
            sync: opts.sync,
            sync_stats,
            sync_op,
            syncer,
            _lock: lock,
        })
    }

    /// Sets the source id put in frames written by [`write`](Self::write).
    pub fn set_source(&mut self, source: u32) {
        self.source = source;
    }

    /// Sets the destination id put in frames written by
    /// [`write`](Self::write).
    pub fn set_dest(&mut self, dest: u32) {
        self.dest = dest;
    }

    /// Appends one frame and returns its sequence number.
    #[inline]
    pub fn write(&mut self, msg_type: u32, payload: &[u8]) -> Result<u64, WriteError> {
        let meta = FrameMeta {
            msg_type,
            source: self.source,
            dest: self.dest,
            corr: 0,
        };
        self.write_meta(&meta, payload)
    }

    /// Appends one frame with every header field chosen.
    #[inline]
    pub fn write_meta(&mut self, meta: &FrameMeta, payload: &[u8]) -> Result<u64, WriteError> {
        let off = self.copy_in(payload)?;
        let crc = checksum(payload);
        let seq = self.next_seq;
        self.publish(off, meta, payload.len(), crc, seq, Stamp::Now);
        Ok(seq)
    }

    /// Reserves room for `payload` and copies it in; returns the frame's
    /// offset. Nothing is published.
    #[inline(always)]
    fn copy_in(&mut self, payload: &[u8]) -> Result<usize, WriteError> {
        let off = self.reserve(payload.len())?;
        // SAFETY: reserve() returned an offset with room for a header and
        // payload.len() bytes inside the current page, past the tail, which
        // no reader reads before publication.
        unsafe {
            std::ptr::copy_nonoverlapping(
                payload.as_ptr(),
                self.base.add(off + FRAME_HEADER_LEN),
                payload.len(),
            )
        };
        Ok(off)
    }

    /// After a frame's publication: rings the doorbell if a reader sleeps
    /// (one plain load when nobody does; see bell.rs for why no fence).
    #[inline(always)]
    fn wake_sleepers(&self) {
        if self.must_fence {
            std::sync::atomic::fence(Ordering::SeqCst);
        }
        // SAFETY: `sleepers` points at a live atomic (see the Send impl).
        if unsafe { &*self.sleepers }.load(Ordering::Relaxed) != 0 {
            if let Some(b) = &self.bell {
                b.ring();
            }
        }
    }

    /// Finds room for a frame with `len` payload bytes, switching pages if
    /// the current one is full; returns the frame's offset.
    #[inline(always)]
    fn reserve(&mut self, len: usize) -> Result<usize, WriteError> {
        if len > self.max_payload {
            return Err(WriteError::TooLarge {
                len,
                max: self.max_payload,
            });
        }
        let size = align_frame(FRAME_HEADER_LEN + len);
        if self.tail + size + END_MARKER_ROOM > self.page_size {
            self.switch_page(size)?;
        }
        Ok(self.tail)
    }

    #[inline(always)]
    fn now(&self) -> i64 {
        crate::clock::now_ns().max(self.last_time)
    }

    /// Fills in the header of the frame at `off` and publishes it.
    #[inline(always)]
    fn publish(
        &mut self,
        off: usize,
        meta: &FrameMeta,
        len: usize,
        crc: u32,
        seq: u64,
        time: Stamp,
    ) {
        self.publish_flags(off, meta, len, crc, seq, time, 0)
    }

    /// [`publish`](Self::publish) with the header's `flags` word chosen.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn publish_flags(
        &mut self,
        off: usize,
        meta: &FrameMeta,
        len: usize,
        crc: u32,
        seq: u64,
        time: Stamp,
        flags: u32,
    ) {
        // SAFETY: off is 8-aligned with room for the header in the page
        // (reserve); its len word is still 0 (zero past the tail), so readers
        // do not look at these bytes yet, and the len word itself is only
        // touched atomically (`publish`). The Release store of len
        // (`store_len`) then publishes header and payload together.
        let time = unsafe {
            let h = self.base.add(off) as *mut FrameHeader;
            (&raw mut (*h).msg_type).write(meta.msg_type);
            (&raw mut (*h).seq).write(seq);
            (&raw mut (*h).source).write(meta.source);
            (&raw mut (*h).dest).write(meta.dest);
            (&raw mut (*h).corr).write(meta.corr);
            (&raw mut (*h).crc).write(crc);
            (&raw mut (*h).flags).write(flags);
            // Stamped as late as possible: after the copy, the checksum and
            // the rest of the header, right before publication.
            let t = match time {
                Stamp::Now => self.now(),
                Stamp::Given(t) => t,
            };
            (&raw mut (*h).time_ns).write(t);
            store_len(h.cast::<u8>(), (FRAME_HEADER_LEN + len) as u32);
            t
        };
        let tail = off + align_frame(FRAME_HEADER_LEN + len);
        if (tail ^ off) >> WARM_SHIFT != 0 {
            // Into a new 4 KiB block (after the frame was published): warm
            // the next block, owned and with its address translation, so
            // that the stores there do not wait for a page walk after a
            // frame's time was read. A hint: past the page it does nothing.
            prefetch_write(self.base.wrapping_add((tail | (WARM_BLOCK - 1)) + 1));
            if tail + NEXT_PAGE_WARM >= self.page_size {
                self.warm_next_page();
            }
        }
        self.tail = tail;
        self.next_seq = seq + 1;
        self.has_frames = true;
        self.last_time = time;
        self.wake_sleepers();
    }

    /// Near the end of the page: warms the next page's first lines (owned,
    /// with their address translation) before the writer gets there, so
    /// that the first frame's stores do not go to memory after a page walk
    /// once its time was read. Hints only.
    #[cold]
    #[inline(never)]
    fn warm_next_page(&mut self) {
        if self.next_base == 0 {
            if let Some(p) = &self.preparer {
                self.next_base = p.ready_base(self.page.page_no() + 1);
            }
        }
        if self.next_base != 0 {
            for line in 1..4 {
                prefetch_write((self.next_base + line * 64) as *const u8);
            }
        }
    }

    /// Marks the current page ended and moves to the next one, which the
    /// preparer has normally made ready already, until a page holds a
    /// frame of `frame` bytes (header, payload, padding) at offset 64.
    ///
    /// A page made before that frame was known (a spare, at the growth
    /// rule's size) may be too small for it: it then gets its end-of-page
    /// marker at offset 64 and stays empty, and the page after it is made
    /// large enough (FORMAT.md, "Page sizes"). Only a page smaller than the
    /// journal's largest can be too small, since `reserve` refused a frame
    /// that the largest page does not hold.
    #[cold]
    #[inline(never)]
    fn switch_page(&mut self, frame: usize) -> Result<(), WriteError> {
        loop {
            let next_no = self.page.page_no() + 1;
            let ready = self.preparer.as_ref().and_then(|p| p.take_wait(next_no));
            let next = match ready {
                Some(p) => p,
                None => {
                    let step = self.geo.next_page_size(self.page_size as u64);
                    PageMut::create_or_open(
                        &self.dir,
                        &self.name,
                        next_no,
                        self.geo,
                        self.geo.page_size_for(step, frame),
                        self.prepare,
                    )
                    .map_err(WriteError::NewPage)?
                }
            };
            // The next page exists on disk before the marker tells readers
            // to go there.
            // SAFETY: tail + END_MARKER_ROOM <= page_size always holds, and
            // the tail is 8-aligned; the page is mapped read-write and its
            // len words are only touched atomically (`publish`).
            unsafe { store_len(self.base.add(self.tail), END_OF_PAGE) };
            let old = std::mem::replace(&mut self.page, next);
            self.base = self.page.base();
            self.page_size = self.page.size() as usize;
            self.next_base = 0;
            self.tail = PAGE_HEADER_LEN;
            self.switches += 1;
            let fits = PAGE_HEADER_LEN + frame + END_MARKER_ROOM <= self.page_size;
            match &self.preparer {
                Some(p) => {
                    p.retire(old);
                    p.request(
                        next_no + 1,
                        self.page_size as u64,
                        if fits { 0 } else { frame },
                    );
                }
                None => {
                    // No preparer: the page is synced here, on a switch
                    // that already makes file-system calls.
                    if self.sync == SyncPolicy::Page {
                        self.sync_page(&old, old.size() as usize);
                    }
                    drop(old)
                }
            }
            if fits {
                return Ok(());
            }
        }
    }

    /// Sequence number the next frame gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The durability policy this appender was opened with.
    pub fn sync_policy(&self) -> SyncPolicy {
        self.sync
    }

    /// What its syncs did so far: counts, failures, the last error (a
    /// handle that stays valid after the appender is dropped).
    pub fn sync_stats(&self) -> &SyncStats {
        &self.sync_stats
    }

    /// Syncs `[0, len)` of `page`, then the folder.
    fn sync_page(&self, page: &PageMut, len: usize) {
        let b = page.bytes();
        sync_page_range(
            &self.sync_stats,
            self.sync_op,
            b.as_ptr(),
            len.min(b.len()),
            page.path(),
            &self.dir,
        );
    }

    /// Write time of the last frame (`i64::MIN` for an empty journal).
    pub fn last_time_ns(&self) -> i64 {
        self.last_time
    }

    /// Page switches this appender made.
    pub fn page_switches(&self) -> u64 {
        self.switches
    }

    /// Current page number and tail offset in it.
    pub fn position(&self) -> (u64, usize) {
        (self.page.page_no(), self.tail)
    }

    /// Largest payload a frame can have in this journal.
    pub fn max_payload(&self) -> usize {
        self.max_payload
    }

    /// Size of the page the writer writes now (pages grow from 1 MiB to
    /// [`max_page_size`](Self::max_page_size)).
    pub fn page_size(&self) -> u64 {
        self.page_size as u64
    }

    /// The journal's largest page size.
    pub fn max_page_size(&self) -> u64 {
        self.geo.max_page_size
    }

    /// The journal's format version and largest page size.
    pub fn geometry(&self) -> Geometry {
        self.geo
    }

    /// The journal's folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The journal's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How many pages past the current one are ready (0 without a
    /// background thread).
    pub fn pages_ready(&self) -> usize {
        self.preparer.as_ref().map_or(0, Preparer::ready_count)
    }

    /// Waits until the pages kept ahead ([`AppendOptions::pages_ahead`]) are
    /// all ready, for at most `timeout`; returns how many are (0 at once
    /// without a background thread). Off the hot path: for start-up, before
    /// the first frame of a session.
    pub fn wait_pages_ready(&self, timeout: std::time::Duration) -> usize {
        self.preparer.as_ref().map_or(0, |p| p.wait_ready(timeout))
    }

    /// Whether the preparer has the next page ready (for tests and benches).
    pub fn next_page_ready(&self) -> bool {
        self.preparer
            .as_ref()
            .is_some_and(|p| p.is_ready(self.page.page_no() + 1))
    }
}

impl Drop for Appender {
    /// A clean close makes everything published durable under a sync
    /// policy: the pages the preparer still holds, then the current page up
    /// to the tail (page policy), or a last look of the interval thread.
    fn drop(&mut self) {
        match self.sync {
            SyncPolicy::None => {}
            SyncPolicy::Page => {
                drop(self.preparer.take());
                let len = self.tail + END_MARKER_ROOM;
                self.sync_page(&self.page, len);
            }
            SyncPolicy::Interval(_) => drop(self.syncer.take()),
        }
    }
}
