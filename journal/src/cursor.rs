//! The raw cursor: reads one journal's frames in order, straight from
//! read-only mappings, following page switches. No service involved: it
//! reads journal files directly (live, replay or analysis alike).

use crate::bell::Bell;
use crate::exchange::PageExchange;
use crate::format::{FrameHeader, Geometry, END_OF_PAGE, FRAME_HEADER_LEN, PAGE_HEADER_LEN};
use crate::hint::{prefetch_read, WARM_SHIFT};
use crate::locate::{first_frame, locate_tail, missing_next_damage, page_before, pages, OpenError};
use crate::page::{PageError, PageRef};
use crate::publish::load_len;
use crate::scan::{frame_end, hole_damage, published_past_hole, Damage};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Where a cursor starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// The first frame on disk.
    First,
    /// After the last frame published when the cursor opens.
    End,
    /// The frame with this sequence number (or the first after it).
    Seq(u64),
    /// The first frame written at or after this time (ns since the epoch).
    Time(i64),
}

/// How a cursor reads.
#[derive(Debug, Clone, Copy, Default)]
pub struct CursorOptions {
    /// Check every payload's CRC32C and that write times never go back,
    /// failing with damage on a mismatch (a verified read, as `tape tail`
    /// and the bridge do). The sequence numbers are checked either way.
    pub verify_crc: bool,
    /// Pre-fault each page's mapping (MAP_POPULATE) so that reads take no
    /// page fault; costs a few milliseconds per page when it is mapped.
    pub populate: bool,
}

/// Why a cursor could not read on.
#[derive(Debug)]
pub enum ReadError {
    /// A frame is damaged; the cursor stays before it.
    Damaged(Damage),
    /// The next page could not be opened.
    Page(PageError),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Damaged(d) => write!(f, "{d}; run `tape verify` for details"),
            ReadError::Page(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for ReadError {}

/// One published frame, borrowed from the journal's mapping.
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    header: &'a FrameHeader,
    raw: &'a [u8],
}

impl<'a> Frame<'a> {
    /// Sequence number.
    #[inline(always)]
    pub fn seq(&self) -> u64 {
        self.header.seq
    }
    /// Write time, ns since the epoch.
    #[inline(always)]
    pub fn time_ns(&self) -> i64 {
        self.header.time_ns
    }
    /// Message type.
    #[inline(always)]
    pub fn msg_type(&self) -> u32 {
        self.header.msg_type
    }
    /// Source id.
    #[inline(always)]
    pub fn source(&self) -> u32 {
        self.header.source
    }
    /// Destination id.
    #[inline(always)]
    pub fn dest(&self) -> u32 {
        self.header.dest
    }
    /// Correlation id.
    #[inline(always)]
    pub fn corr(&self) -> u64 {
        self.header.corr
    }
    /// CRC32C of the payload, as the writer stored it.
    #[inline(always)]
    pub fn crc(&self) -> u32 {
        self.header.crc
    }
    /// The payload.
    #[inline(always)]
    pub fn payload(&self) -> &'a [u8] {
        &self.raw[FRAME_HEADER_LEN..]
    }
    /// Header and payload as they are stored (`header().len` bytes).
    #[inline(always)]
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }
    /// The whole header.
    #[inline(always)]
    pub fn header(&self) -> &'a FrameHeader {
        self.header
    }
    /// Whether the payload matches its checksum.
    pub fn checksum_ok(&self) -> bool {
        crate::format::checksum(self.payload()) == self.header.crc
    }
}

/// Reads one journal in order.
#[derive(Debug)]
pub struct Cursor {
    dir: PathBuf,
    name: String,
    /// The journal's version and largest page size, which every page it
    /// opens must have.
    geo: Geometry,
    page: PageRef,
    off: usize,
    /// Sequence number the next frame must have, once known.
    expect_seq: Option<u64>,
    /// Write time of the frame before (`i64::MIN` while unknown).
    last_time: i64,
    /// The next page, mapped ahead of time: taken from the helper while the
    /// cursor waited, or mapped by [`Cursor::prefetch`].
    ahead: Option<Box<PageRef>>,
    /// The page the cursor left, to hand back to the helper while it waits.
    left: Option<Box<PageRef>>,
    /// Whether an empty poll has exchange work to do (see
    /// [`Cursor::chores`]).
    chores: bool,
    /// Page switches where this thread had to map the next page itself.
    mapped_here: u64,
    opts: CursorOptions,
    /// The helper that maps pages ahead and unmaps old ones, if any.
    exchange: Option<Arc<PageExchange>>,
    /// log2 of an eighth of the page size: the cursor reports its progress
    /// to the exchange each time it crosses such a boundary.
    progress_shift: u32,
    /// The journal's doorbell, opened by the first [`Cursor::wait`].
    bell: Option<Bell>,
}

impl Cursor {
    /// Opens journal `name` in `dir` at `start`. Fails with
    /// [`OpenError::NotFound`] when it has no page yet.
    ///
    /// [`Start::First`] is the first frame of the first page on disk, which
    /// is not seq 1 once old pages were pruned; [`Start::Seq`] before it
    /// starts there too. Opening while pages are pruned is safe: a page
    /// deleted between listing and opening makes the cursor list again.
    pub fn open(
        dir: &Path,
        name: &str,
        start: Start,
        opts: CursorOptions,
    ) -> Result<Cursor, OpenError> {
        crate::locate::retry_pruned(|| Self::open_once(dir, name, start, opts))
    }

    fn open_once(
        dir: &Path,
        name: &str,
        start: Start,
        opts: CursorOptions,
    ) -> Result<Cursor, OpenError> {
        let pages = pages(dir, name)?;
        let size = Some(pages.geometry);
        let open = |no| PageRef::open(dir, name, no, size, opts.populate);
        let cursor = |page_no, off, expect_seq, last_time| -> Result<Cursor, OpenError> {
            let page = open(page_no)?;
            Ok(Cursor {
                dir: dir.to_path_buf(),
                name: name.to_string(),
                geo: pages.geometry,
                progress_shift: progress_shift(&page),
                page,
                off,
                expect_seq,
                last_time,
                ahead: None,
                left: None,
                chores: false,
                mapped_here: 0,
                opts,
                exchange: None,
                bell: None,
            })
        };
        match start {
            Start::First => cursor(pages.numbers[0], PAGE_HEADER_LEN, None, i64::MIN),
            Start::End => {
                let t = locate_tail(dir, name, &pages, false)?;
                let time = t.last.map_or(i64::MIN, |(_, t)| t);
                cursor(t.page_no, t.offset, t.last.map(|(s, _)| s + 1), time)
            }
            Start::Seq(seq) => {
                let no = page_before(dir, name, &pages, |(s, _)| s <= seq)?;
                let mut c = cursor(no, PAGE_HEADER_LEN, None, i64::MIN)?;
                c.skip_while(|h| h.seq < seq)?;
                Ok(c)
            }
            Start::Time(t) => {
                let no = page_before(dir, name, &pages, |(_, ft)| ft < t)?;
                let mut c = cursor(no, PAGE_HEADER_LEN, None, i64::MIN)?;
                c.skip_while(|h| h.time_ns < t)?;
                Ok(c)
            }
        }
    }

    fn skip_while(&mut self, mut pred: impl FnMut(&FrameHeader) -> bool) -> Result<(), OpenError> {
        loop {
            match self.peek() {
                Ok(Some(f)) if pred(f.header()) => {}
                Ok(_) => return Ok(()),
                Err(ReadError::Damaged(d)) => return Err(OpenError::Damaged(d)),
                Err(ReadError::Page(p)) => return Err(OpenError::Page(p)),
            }
            self.next().map_err(|e| match e {
                ReadError::Damaged(d) => OpenError::Damaged(d),
                ReadError::Page(p) => OpenError::Page(p),
            })?;
        }
    }

    /// The next unread frame, or `None` when the reader is at the end of
    /// what the writer has published. Never blocks, never makes a system
    /// call except when it crosses into a page it has not mapped yet.
    #[inline]
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<Frame<'_>>, ReadError> {
        self.fetch(true)
    }

    /// The sequence number the next frame must have, once the cursor
    /// knows it: it has read a frame, or opened at the end of a journal
    /// with frames. `None` before that (a journal with no frame yet, or a
    /// cursor at the first frame of its page that has not read it).
    pub fn expected_seq(&self) -> Option<u64> {
        self.expect_seq
    }

    /// The next unread frame without moving past it.
    #[inline]
    pub fn peek(&mut self) -> Result<Option<Frame<'_>>, ReadError> {
        self.fetch(false)
    }

    /// Blocks until the next frame is published or `timeout` passes, and
    /// returns whether a frame (or an error) is there for [`next`](Self::next).
    /// It returns `false` early when the writer rang twice with no frame to
    /// read here: something is published past a hole, so this is the
    /// moment for [`check_stall`](Self::check_stall). (One ring with
    /// nothing to read is the late ring of a frame already taken: it waits
    /// on.)
    /// Sleeps on the journal's doorbell (`FORMAT.md`, "The doorbell"): no
    /// CPU while it waits, woken within microseconds of the frame's
    /// publication. A journal without a doorbell (its writer could not make
    /// one, or this process may not write it) is looked at every
    /// [`NO_BELL_POLL`](crate::NO_BELL_POLL).
    pub fn wait(&mut self, timeout: Duration) -> bool {
        crate::bell::wait_any(&mut [self], timeout)
    }

    #[inline(always)]
    fn fetch(&mut self, consume: bool) -> Result<Option<Frame<'_>>, ReadError> {
        let len = loop {
            let len = load_len(self.page.bytes(), self.off);
            if len != END_OF_PAGE {
                break len;
            }
            self.turn_page()?;
        };
        if len == 0 {
            if self.chores {
                self.chores();
            }
            return Ok(None);
        }
        let off = self.off;
        let page = self.page.bytes();
        let end = match frame_end(len, off, page.len()) {
            Ok(end) => end,
            Err(what) => return Err(self.damage(off, what)),
        };
        // SAFETY: frame_end checked that off + len lies inside the page and
        // off is 8-aligned (FrameHeader's alignment). load_len's Acquire
        // ordering of the non-zero len above makes the header and payload
        // visible, and a published frame never changes again.
        let header = unsafe { &*(page.as_ptr().add(off) as *const FrameHeader) };
        let raw = &page[off..off + len as usize];
        if let Some(want) = self.expect_seq {
            if header.seq != want {
                let what = format!("sequence {} where {want} was expected", header.seq);
                return Err(self.damage(off, what));
            }
        }
        let frame = Frame { header, raw };
        if self.opts.verify_crc {
            self.verified(&frame, off)?;
        }
        if consume {
            if (end ^ off) >> WARM_SHIFT != 0 && self.crossed(off, end) {
                self.chores = true;
            }
            self.off = end;
            self.expect_seq = Some(header.seq + 1);
            self.last_time = header.time_ns;
        }
        Ok(Some(frame))
    }

    /// The cursor moved from `off` into a new 4 KiB block at `end`. In the
    /// second half of the page it warms the address translation of the
    /// next page through its header line, so that the first reads there,
    /// which count in a frame's latency, do not wait for a page walk. (Not
    /// through a frame's line: a line the reader holds must be taken back
    /// by the writer when it stores the frame, after the frame's time was
    /// read. For the same reason it does not warm the next block of this
    /// page: its spinning poll there pays the walk before the frame comes.)
    /// Every eighth of the page it tells the helper where it is (the helper
    /// maps the next page once the cursor is half way). Returns whether an
    /// empty poll should take the next page from the helper.
    #[inline(never)]
    fn crossed(&self, off: usize, end: usize) -> bool {
        let len = self.page.bytes().len();
        let Some(ex) = &self.exchange else {
            return false;
        };
        if (end ^ off) >> self.progress_shift != 0 {
            ex.progress(end);
        }
        if end >= len / 2 {
            match &self.ahead {
                Some(next) => prefetch_read(next.bytes().as_ptr()),
                // Taken at the next empty poll, if the helper has it.
                None => return true,
            }
        }
        false
    }

    /// Exchange work done when a poll finds nothing, so that it costs no
    /// frame any latency: hands the page left back to the helper and, in
    /// the second half of the page, takes the next page from it. Each of
    /// these touches a cache line the helper's core wrote (a few hundred ns
    /// here), which at the page switch itself would delay the frame after.
    #[cold]
    #[inline(never)]
    fn chores(&mut self) {
        self.chores = false;
        let Some(ex) = &self.exchange else { return };
        if let Some(left) = self.left.take() {
            ex.give_back(left);
        }
        if self.ahead.is_none() && self.off >= self.page.bytes().len() / 2 && ex.ready_hint() != 0 {
            self.ahead = ex.take_ready(self.page.page_no() + 1);
            if let Some(next) = &self.ahead {
                prefetch_read(next.bytes().as_ptr());
            }
        }
    }

    /// The checks of a verified read: the payload's CRC32C, and a write
    /// time no older than the frame before's.
    #[inline(never)]
    fn verified(&self, frame: &Frame<'_>, off: usize) -> Result<(), ReadError> {
        let h = frame.header();
        if h.time_ns < self.last_time {
            let what = format!(
                "time {} is older than the frame before ({})",
                h.time_ns, self.last_time
            );
            return Err(self.damage(off, what));
        }
        if !frame.checksum_ok() {
            let what = format!("checksum mismatch in frame seq {}", h.seq);
            return Err(self.damage(off, what));
        }
        Ok(())
    }

    #[cold]
    fn damage(&self, off: usize, what: String) -> ReadError {
        ReadError::Damaged(Damage::new(self.page.path(), off, what))
    }

    #[cold]
    #[inline(never)]
    fn turn_page(&mut self) -> Result<(), ReadError> {
        if self.off == PAGE_HEADER_LEN && !crate::page::may_be_empty(self.page.bytes()) {
            // Every frame fits an empty page of the journal's largest size:
            // no writer ends one before its first frame. The damage is
            // here, not in the next page. (A smaller page may end there:
            // it was too small for the frame after it.)
            return Err(self.damage(self.off, crate::scan::EMPTY_LARGEST.into()));
        }
        let next_no = self.page.page_no() + 1;
        // The next page mapped ahead (taken from the helper while the
        // cursor waited, or now), else mapped here.
        let ready = match self.ahead.take() {
            Some(p) if p.page_no() == next_no => Some(p),
            _ => self
                .exchange
                .as_ref()
                .and_then(|ex| ex.take_ready(next_no).or_else(|| ex.wait_for(next_no))),
        };
        let mut next = match ready {
            Some(p) => p,
            None => {
                let page = PageRef::open(
                    &self.dir,
                    &self.name,
                    next_no,
                    Some(self.geo),
                    self.opts.populate,
                )
                .map_err(|e| {
                    if e.is_not_found() {
                        // The writer makes the next page before the marker.
                        ReadError::Damaged(missing_next_damage(
                            &self.dir,
                            &self.name,
                            self.page.path(),
                            self.page.page_no(),
                            self.off,
                            self.expect_seq.map(|s| s - 1),
                        ))
                    } else {
                        ReadError::Page(e)
                    }
                })?;
                self.mapped_here += 1;
                Box::new(page)
            }
        };
        // Swapped in place: the box carries the old page back to the
        // helper, at the next empty poll. No lock, no allocation.
        std::mem::swap(&mut self.page, &mut next);
        self.off = PAGE_HEADER_LEN;
        self.progress_shift = progress_shift(&self.page);
        match &self.exchange {
            Some(ex) => {
                ex.moved_to(next_no, self.page.size());
                if let Some(older) = self.left.replace(next) {
                    // Never idle since the last switch: hand it back now.
                    ex.give_back(older);
                }
                self.chores = true;
            }
            // No helper: the old page is unmapped here.
            None => drop(next),
        }
        Ok(())
    }

    /// Off the hot path: when the cursor has no frame to return, tells
    /// whether it waits at damage rather than at the live end of the
    /// journal, and returns that damage with its file and offset:
    ///
    /// - frames published further on in the same page, past a hole of
    ///   zeros (the rule of FORMAT.md, "Holes");
    /// - a next page whose first frame is published while this page has no
    ///   end-of-page marker where the cursor waits.
    ///
    /// `Ok(())` when the cursor has a frame to return or waits at the live
    /// end. Reads the rest of the current page and opens the next page
    /// file, so call it when a journal has been quiet for a while (e.g.
    /// every few seconds of idleness, or at the end of a replay), never per
    /// poll. Sound against a live writer: whatever it finds, it loads the
    /// length word where the cursor waits again before it reports.
    pub fn check_stall(&mut self) -> Result<(), ReadError> {
        let off = self.off;
        let page = self.page.bytes();
        if load_len(page, off) != 0 {
            return Ok(());
        }
        let min_time = (self.last_time != i64::MIN).then_some(self.last_time);
        if let Some(past) = published_past_hole(page, off, self.expect_seq, min_time, true) {
            return Err(ReadError::Damaged(hole_damage(self.page.path(), off, past)));
        }
        // The pages after this one, where the writer has not written yet.
        let mut next_no = self.page.page_no() + 1;
        loop {
            let next = match PageRef::open(&self.dir, &self.name, next_no, Some(self.geo), false) {
                Ok(p) => p,
                Err(e) if e.is_not_found() => return Ok(()),
                Err(e) => return Err(ReadError::Page(e)),
            };
            let b = next.bytes();
            // The writer stores the end-of-page marker here before it
            // publishes anything in a later page: seeing a frame there
            // (Acquire) and still no marker here is damage.
            if load_len(b, PAGE_HEADER_LEN) != 0 {
                if load_len(self.page.bytes(), off) != 0 {
                    return Ok(());
                }
                return Err(self.damage(
                    off,
                    format!(
                        "frames stop here without an end-of-page marker but a later page ({}) has frames",
                        next.path().display()
                    ),
                ));
            }
            // A frame further on in a later page (FORMAT.md, "Holes": any
            // sequence number from the next one on counts there).
            let past = published_past_hole(b, PAGE_HEADER_LEN, self.expect_seq, min_time, false);
            if let Some(past) = past {
                if load_len(self.page.bytes(), off) != 0 {
                    return Ok(());
                }
                return Err(ReadError::Damaged(hole_damage(self.page.path(), off, past)));
            }
            next_no += 1;
        }
    }

    /// Creates the exchange through which a helper thread maps this
    /// cursor's next pages ahead (pre-faulted when `populate`) and unmaps
    /// the ones it left; the [`PageHelper`](crate::PageHelper) thread
    /// serves it.
    pub(crate) fn exchange(&mut self, populate: bool) -> Arc<PageExchange> {
        let ex = Arc::new(PageExchange::new(
            self.dir.clone(),
            self.name.clone(),
            self.geo,
            populate,
            self.page.page_no(),
            self.page.size(),
        ));
        ex.progress(self.off);
        self.exchange = Some(ex.clone());
        ex
    }

    /// Maps the next page ahead of time if its file exists, so that the
    /// page switch costs no system call. Returns whether it is mapped.
    pub fn prefetch(&mut self) -> Result<bool, PageError> {
        let next_no = self.page.page_no() + 1;
        if self.ahead.as_ref().is_some_and(|p| p.page_no() == next_no) {
            return Ok(true);
        }
        match PageRef::open(
            &self.dir,
            &self.name,
            next_no,
            Some(self.geo),
            self.opts.populate,
        ) {
            Ok(p) => {
                self.ahead = Some(Box::new(p));
                Ok(true)
            }
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Number of the page the next frame would be read from, and whether
    /// the page after it is mapped ahead already.
    pub fn page_state(&self) -> (u64, bool) {
        (self.page.page_no(), self.ahead.is_some())
    }

    /// How many page switches found the next page not mapped ahead (by the
    /// helper, or [`prefetch`](Self::prefetch)), so that the reading thread
    /// opened and mapped it itself, a system call or several on its path.
    pub fn pages_mapped_here(&self) -> u64 {
        self.mapped_here
    }

    /// Sequence number the next frame will have, once known.
    pub fn next_seq(&self) -> Option<u64> {
        self.expect_seq
    }

    /// The journal's folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The journal's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Size of the page the cursor reads now (each page's own, from its
    /// header: pages grow, FORMAT.md "Page sizes").
    pub fn page_size(&self) -> u64 {
        self.page.size()
    }

    /// The journal's largest page size.
    pub fn max_page_size(&self) -> u64 {
        self.geo.max_page_size
    }

    /// (seq, time) of the first frame in the cursor's current page.
    pub fn page_first_frame(&self) -> Option<(u64, i64)> {
        first_frame(&self.page)
    }
}

/// log2 of an eighth of `page`'s size (see [`Cursor::crossed`]).
fn progress_shift(page: &PageRef) -> u32 {
    page.size().trailing_zeros() - 3
}

impl crate::bell::Waitable for &mut Cursor {
    fn ready(&mut self) -> bool {
        // An error is "ready" too: the caller's next() returns it.
        self.peek().map_or(true, |f| f.is_some())
    }

    fn sleeping(&mut self, asleep: bool) {
        if let Some(ex) = &self.exchange {
            ex.set_asleep(asleep);
        }
    }

    fn bell(&mut self) -> Option<&Bell> {
        if self.bell.is_none() {
            self.bell = Bell::open(&self.dir, &self.name);
        }
        self.bell.as_ref()
    }
}

/// Blocks until one of `cursors` has its next frame published or `timeout`
/// passes; returns whether one has (see [`Cursor::wait`]). For a merge over
/// many journals: one sleep on all their doorbells at once (`futex_waitv`).
pub fn wait_any(cursors: &mut [&mut Cursor], timeout: Duration) -> bool {
    crate::bell::wait_any(cursors, timeout)
}
