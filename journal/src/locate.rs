//! Finding things in a journal without reading all of it: its tail (where
//! the next frame goes), the page that holds a sequence number or a time,
//! and summary statistics for `tape ls`.

use crate::files::{list_pages, page_path};
use crate::format::{Geometry, PAGE_FLAGS_OFFSET, PAGE_FLAG_FIRST_SEQ_ANY, PAGE_HEADER_LEN};
use crate::page::{PageError, PageRef};
use crate::publish::load_len;
use crate::scan::{hole_damage, published_past_hole, read_header, scan_page, Damage, ScanCheck};
use std::io;
use std::path::{Path, PathBuf};

/// Why a journal could not be opened or examined.
#[derive(Debug)]
pub enum OpenError {
    /// The journal name is not allowed.
    BadName(crate::files::BadName),
    /// The journal has no page file in that folder.
    NotFound {
        /// The folder.
        dir: PathBuf,
        /// The journal name.
        name: String,
    },
    /// Listing the folder failed.
    Io {
        /// The folder or file.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
    /// A page file is not a usable tape page.
    Page(PageError),
    /// A frame is damaged; a writer refuses to append after it.
    Damaged(Damage),
    /// The writer lock is held by another process.
    Locked(crate::files::LockError),
    /// The page size asked for is not allowed.
    BadPageSize(u64),
    /// The page numbers on disk have a hole.
    MissingPage {
        /// The page file that should exist.
        path: PathBuf,
    },
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenError::BadName(e) => e.fmt(f),
            OpenError::NotFound { dir, name } => write!(
                f,
                "journal {name} not found in {}: check the name and --root",
                dir.display()
            ),
            OpenError::Io { path, source } => write!(f, "{}: {source}", path.display()),
            OpenError::Page(e) => e.fmt(f),
            OpenError::Damaged(d) => write!(f, "{d}; run `tape verify` for details"),
            OpenError::Locked(e) => e.fmt(f),
            OpenError::BadPageSize(n) => write!(
                f,
                "page size {n} is not allowed: use a power of two from 1048576 (1 MiB) to 1073741824 (1 GiB)"
            ),
            OpenError::MissingPage { path } => write!(
                f,
                "page file {} is missing from the middle of the journal",
                path.display()
            ),
        }
    }
}

impl std::error::Error for OpenError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            OpenError::Io { source, .. } => Some(source),
            OpenError::Page(e) => Some(e),
            OpenError::Damaged(e) => Some(e),
            OpenError::Locked(e) => Some(e),
            _ => None,
        }
    }
}

impl From<PageError> for OpenError {
    fn from(e: PageError) -> Self {
        OpenError::Page(e)
    }
}

impl From<Damage> for OpenError {
    fn from(e: Damage) -> Self {
        OpenError::Damaged(e)
    }
}

/// The pages of a journal, checked to be contiguous, and its geometry (as
/// the first page on disk says; every page must agree).
#[derive(Debug, Clone)]
pub(crate) struct Pages {
    pub numbers: Vec<u64>,
    pub geometry: Geometry,
}

pub(crate) fn pages(dir: &Path, name: &str) -> Result<Pages, OpenError> {
    crate::files::check_name(name).map_err(OpenError::BadName)?;
    let mut previous: Option<Vec<u64>> = None;
    for _ in 0..RETRIES {
        let numbers = list_pages(dir, name).map_err(|source| OpenError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let Some(&first) = numbers.first() else {
            return Err(OpenError::NotFound {
                dir: dir.to_path_buf(),
                name: name.to_string(),
            });
        };
        let hole = (0..numbers.len()).find(|&i| numbers[i] != first + i as u64);
        if let Some(i) = hole {
            // A listing taken while a prune deletes pages (oldest first) or
            // the writer adds one can show a hole that the next listing no
            // longer has. The same hole in two listings in a row is a page
            // that is missing.
            if previous.as_ref() == Some(&numbers) {
                return Err(OpenError::MissingPage {
                    path: page_path(dir, name, first + i as u64),
                });
            }
            previous = Some(numbers);
            continue;
        }
        match crate::page::read_header(dir, name, first, None) {
            Ok(h) => {
                return Ok(Pages {
                    numbers,
                    geometry: h.geometry(),
                })
            }
            // Pruned since it was listed: list again.
            Err(e) if e.is_not_found() => previous = None,
            Err(e) => return Err(e.into()),
        }
    }
    Err(OpenError::Io {
        path: dir.to_path_buf(),
        source: io::Error::other("the page files keep changing while they are listed: try again"),
    })
}

/// How many times a journal operation starts over when a page it listed
/// was pruned before it could open it.
const RETRIES: usize = 1000;

/// Runs `f` again while it fails because a page it listed was deleted
/// before it opened it (a prune ran meanwhile; see FORMAT.md, "Pruning").
pub(crate) fn retry_pruned<T>(mut f: impl FnMut() -> Result<T, OpenError>) -> Result<T, OpenError> {
    let mut tries = 0;
    loop {
        match f() {
            Err(OpenError::Page(e)) if e.is_not_found() && tries < RETRIES => tries += 1,
            // A listed page's size read after a prune deleted it.
            Err(OpenError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound && tries < RETRIES =>
            {
                tries += 1
            }
            r => return r,
        }
    }
}

/// Where the next frame of a journal goes.
#[derive(Debug, Clone)]
pub(crate) struct Tail {
    /// Page holding the tail.
    pub page_no: u64,
    /// Offset of the tail in that page.
    pub offset: usize,
    /// (seq, time) of the last published frame, if any.
    pub last: Option<(u64, i64)>,
}

/// The rule of the first sequence number (FORMAT.md, "The first sequence
/// number"): no frame has `seq` 0, and the first frame of page 1 has `seq`
/// 1 unless page 1's header has [`PAGE_FLAG_FIRST_SEQ_ANY`]. `first` is the
/// (seq of the) first frame of the journal, in `page`, the first page on
/// disk. Call it after that frame's length word was loaded (Acquire): the
/// writer sets the flag before it publishes the frame.
pub(crate) fn check_first_seq(page: &PageRef, first: u64) -> Result<(), Damage> {
    let at = PAGE_HEADER_LEN;
    if first == 0 {
        return Err(Damage::new(
            page.path(),
            at,
            "sequence 0: sequence numbers start at 1",
        ));
    }
    if page.page_no() == 1 && first != 1 && page_flags(page.bytes()) & PAGE_FLAG_FIRST_SEQ_ANY == 0
    {
        return Err(Damage::new(
            page.path(),
            at,
            format!(
                "the journal's first frame has sequence {first} where 1 was expected (page 1's header does not say that the journal starts later, as a replica's may)"
            ),
        ));
    }
    Ok(())
}

/// The `flags` word of a page header, read from the mapping.
pub(crate) fn page_flags(page: &[u8]) -> u32 {
    u32::from_le_bytes(
        page[PAGE_FLAGS_OFFSET..PAGE_FLAGS_OFFSET + 4]
            .try_into()
            .expect("4 bytes"),
    )
}

/// A journal whose first page on disk is above 1 and that has no frame:
/// pruning never deletes the page with the last frame, so frames were
/// deleted with their pages and the sequence cannot go on.
pub(crate) fn no_frame_damage(dir: &Path, name: &str, first_no: u64) -> Damage {
    Damage::new(
        &page_path(dir, name, first_no),
        PAGE_HEADER_LEN,
        format!(
            "the first page on disk is page {first_no} but no page has a frame: the pages before it, which held the journal's last frames, were deleted, so its next sequence number is unknown"
        ),
    )
}

/// An end-of-page marker at `at` in `page` whose next page file does not
/// exist (the writer makes it before it writes the marker).
pub(crate) fn missing_next_damage(
    dir: &Path,
    name: &str,
    page: &Path,
    page_no: u64,
    at: usize,
    last_seq: Option<u64>,
) -> Damage {
    let next = page_path(dir, name, page_no + 1);
    let lost = match last_seq {
        Some(s) => format!("frames after seq {s} may be lost"),
        None => "frames may be lost".to_string(),
    };
    Damage::new(
        page,
        at,
        format!(
            "an end-of-page marker, but the next page {} is missing: {lost}",
            next.file_name().map_or_else(
                || next.display().to_string(),
                |f| f.to_string_lossy().into_owned()
            )
        ),
    )
}

/// Whether the page's first frame slot is unpublished.
fn page_is_empty(page: &[u8]) -> bool {
    load_len(page, PAGE_HEADER_LEN) == 0
}

/// Whether the page holds no frame and ends at offset 64: a page too small
/// for the frame that came after it (FORMAT.md, "Page sizes").
pub(crate) fn page_is_skipped(page: &[u8]) -> bool {
    load_len(page, PAGE_HEADER_LEN) == crate::format::END_OF_PAGE
}

/// Finds the tail: the highest page with a frame, walked to its end. Pages
/// after it that have no frame are spares a writer made ahead of time.
///
/// `recovery` (a writer about to append) also checks the checksum of every
/// frame in the tail page, and refuses a hole: frames published past the
/// tail, in the tail page or in a later page (see
/// [`published_past_hole`]), which a writer must not write over.
pub(crate) fn locate_tail(
    dir: &Path,
    name: &str,
    pages: &Pages,
    recovery: bool,
) -> Result<Tail, OpenError> {
    let size = Some(pages.geometry);
    for (i, &no) in pages.numbers.iter().enumerate().rev() {
        let page = PageRef::open(dir, name, no, size, false)?;
        if page_is_empty(page.bytes()) && i > 0 {
            continue;
        }
        let check = ScanCheck {
            crc: recovery,
            ..ScanCheck::default()
        };
        let mut scan = scan_page(page.bytes(), page.path(), check)?;
        if scan.last.is_none() && scan.ended {
            // A page skipped as too small: the last frame is further back.
            scan.last = last_frame_before(dir, name, pages, i)?;
        }
        if scan.ended && !page_path(dir, name, no + 1).exists() {
            // The writer makes the next page before it marks this one
            // ended: someone deleted it, and whatever it held.
            return Err(missing_next_damage(
                dir,
                name,
                page.path(),
                no,
                scan.tail,
                scan.last.map(|(s, _)| s),
            )
            .into());
        }
        if recovery && scan.last.is_none() && pages.numbers[0] > 1 {
            return Err(no_frame_damage(dir, name, pages.numbers[0]).into());
        }
        let tail = if scan.ended {
            // The writer makes the next page before it marks this one ended.
            Tail {
                page_no: no + 1,
                offset: PAGE_HEADER_LEN,
                last: scan.last,
            }
        } else {
            Tail {
                page_no: no,
                offset: scan.tail,
                last: scan.last,
            }
        };
        if recovery {
            if i > 0 {
                check_ended(dir, name, pages, no - 1)?;
            }
            check_no_hole(dir, name, pages, &page, &tail)?;
            // The first sequence number (page 1's first frame has seq 1).
            let first_no = pages.numbers[0];
            let first_page;
            let first_page = if no == first_no {
                &page
            } else {
                first_page = PageRef::open(dir, name, first_no, size, false)?;
                &first_page
            };
            // (The journal's first frame may be in a later page than the
            // first when that one was skipped as too small for it.)
            if let Some((seq, _)) = first_frame_from(dir, name, pages, 0)? {
                check_first_seq(first_page, seq)?;
            }
        }
        return Ok(tail);
    }
    unreachable!("pages() returns at least one page")
}

/// (seq, time) of the last frame in the pages before `pages.numbers[i]`,
/// walking back over pages skipped as too small (none of which has a
/// frame); `None` when there is none on disk.
fn last_frame_before(
    dir: &Path,
    name: &str,
    pages: &Pages,
    i: usize,
) -> Result<Option<(u64, i64)>, OpenError> {
    for &no in pages.numbers[..i].iter().rev() {
        let page = PageRef::open(dir, name, no, Some(pages.geometry), false)?;
        if page_is_skipped(page.bytes()) {
            continue;
        }
        return Ok(scan_page(page.bytes(), page.path(), ScanCheck::default())?.last);
    }
    Ok(None)
}

/// Refuses to write in a page when the page before it stops without an
/// end-of-page marker: readers would never get to what is written.
fn check_ended(dir: &Path, name: &str, pages: &Pages, no: u64) -> Result<(), OpenError> {
    let page = PageRef::open(dir, name, no, Some(pages.geometry), false)?;
    let scan = scan_page(page.bytes(), page.path(), ScanCheck::default())?;
    if scan.ended {
        return Ok(());
    }
    Err(Damage::new(
        page.path(),
        scan.tail,
        "frames stop here without an end-of-page marker but the next page has frames",
    )
    .into())
}

/// Refuses a hole at the tail: a frame published past it, in the tail page
/// (at most as many frames on as could fill the gap) or in a later page
/// (any frame: a writer never wrote there).
fn check_no_hole(
    dir: &Path,
    name: &str,
    pages: &Pages,
    tail_page: &PageRef,
    tail: &Tail,
) -> Result<(), OpenError> {
    let next_seq = tail.last.map(|(s, _)| s + 1);
    let min_time = tail.last.map(|(_, t)| t);
    for &no in pages
        .numbers
        .iter()
        .filter(|&&no| no >= tail_page.page_no())
    {
        let later;
        let (page, from) = if no == tail_page.page_no() {
            if no != tail.page_no {
                continue; // ended: its tail is the end-of-page marker
            }
            (tail_page, tail.offset)
        } else {
            later = PageRef::open(dir, name, no, Some(pages.geometry), false)?;
            (&later, PAGE_HEADER_LEN)
        };
        let bounded = no == tail.page_no;
        let found = published_past_hole(page.bytes(), from, next_seq, min_time, bounded);
        if let Some(past) = found {
            let (file, at) = if no == tail.page_no {
                (page.path().to_path_buf(), from)
            } else {
                (page_path(dir, name, tail.page_no), tail.offset)
            };
            return Err(hole_damage(&file, at, past).into());
        }
    }
    Ok(())
}

/// (seq, time) of the first frame of a page, `None` if it has none yet.
pub(crate) fn first_frame(page: &PageRef) -> Option<(u64, i64)> {
    let b = page.bytes();
    let len = load_len(b, PAGE_HEADER_LEN);
    if len == 0 || len == crate::format::END_OF_PAGE {
        return None;
    }
    let h = read_header(b, PAGE_HEADER_LEN);
    Some((h.seq, h.time_ns))
}

/// (seq, time) of the first frame at or after the start of page
/// `pages.numbers[i]`: its own first frame, or for a page skipped as too
/// small the first frame of the next page that is not; `None` when no
/// frame comes.
pub(crate) fn first_frame_from(
    dir: &Path,
    name: &str,
    pages: &Pages,
    i: usize,
) -> Result<Option<(u64, i64)>, PageError> {
    for &no in &pages.numbers[i..] {
        let p = PageRef::open(dir, name, no, Some(pages.geometry), false)?;
        if !page_is_skipped(p.bytes()) {
            return Ok(first_frame(&p));
        }
    }
    Ok(None)
}

/// The last page whose first frame is before `target` by `key`, found by
/// binary search over the page headers' first frames (pages with no frame
/// yet only come last; a page skipped as too small counts as the page
/// after it). Falls back to the first page.
pub(crate) fn page_before(
    dir: &Path,
    name: &str,
    pages: &Pages,
    key: impl Fn((u64, i64)) -> bool,
) -> Result<u64, OpenError> {
    let mut err = None;
    let index: Vec<usize> = (0..pages.numbers.len()).collect();
    let idx = index.partition_point(|&i| match first_frame_from(dir, name, pages, i) {
        Ok(f) => f.is_some_and(&key),
        Err(e) => {
            err.get_or_insert(e);
            false
        }
    });
    if let Some(e) = err {
        return Err(e.into());
    }
    Ok(pages.numbers[idx.saturating_sub(1)])
}

/// What `tape ls` shows of a journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalStats {
    /// Number of page files.
    pub pages: u64,
    /// First page number on disk (1 unless old pages were pruned).
    pub first_page: u64,
    /// Size of the last page in bytes (pages grow, FORMAT.md "Page sizes").
    pub page_size: u64,
    /// The journal's largest page size in bytes.
    pub max_page_size: u64,
    /// The journal's format version (1: every page has one size).
    pub version: u32,
    /// Number of frames (last_seq - first_seq + 1; sequence numbers have no
    /// gap).
    pub frames: u64,
    /// Sequence number of the first frame on disk, 0 when none.
    pub first_seq: u64,
    /// Sequence number of the last frame, 0 when none.
    pub last_seq: u64,
    /// Write time of the last frame, 0 when none.
    pub last_time_ns: i64,
    /// Bytes the page files take on disk.
    pub disk_bytes: u64,
}

/// Summarises a journal from its first page's first frame and its tail.
pub fn stats(dir: &Path, name: &str) -> Result<JournalStats, OpenError> {
    retry_pruned(|| stats_once(dir, name))
}

fn stats_once(dir: &Path, name: &str) -> Result<JournalStats, OpenError> {
    let pages = pages(dir, name)?;
    let first_no = pages.numbers[0];
    let first = first_frame_from(dir, name, &pages, 0)?;
    let tail = locate_tail(dir, name, &pages, false)?;
    let mut disk_bytes = 0;
    let mut page_size = 0;
    for &no in &pages.numbers {
        use std::os::unix::fs::MetadataExt;
        let path = page_path(dir, name, no);
        let meta = std::fs::metadata(&path).map_err(|source| OpenError::Io { path, source })?;
        disk_bytes += meta.blocks() * 512;
        page_size = meta.len();
    }
    let (first_seq, last_seq, last_time_ns) = match (first, tail.last) {
        (Some((f, _)), Some((l, t))) => (f, l, t),
        _ => (0, 0, 0),
    };
    Ok(JournalStats {
        pages: pages.numbers.len() as u64,
        first_page: first_no,
        page_size,
        max_page_size: pages.geometry.max_page_size,
        version: pages.geometry.version,
        frames: if last_seq == 0 {
            0
        } else {
            last_seq - first_seq + 1
        },
        first_seq,
        last_seq,
        last_time_ns,
        disk_bytes,
    })
}

/// A page number and (seq, time) of the page's first frame, if any.
pub type PageStart = (u64, Option<(u64, i64)>);

/// Each page of a journal with (seq, time) of its first frame (`None` for
/// a page with no frame yet), in page order. Reads one frame header a page.
pub fn page_starts(dir: &Path, name: &str) -> Result<Vec<PageStart>, OpenError> {
    retry_pruned(|| page_starts_once(dir, name))
}

fn page_starts_once(dir: &Path, name: &str) -> Result<Vec<PageStart>, OpenError> {
    let pages = pages(dir, name)?;
    let mut out = Vec::with_capacity(pages.numbers.len());
    for &no in &pages.numbers {
        let page = PageRef::open(dir, name, no, Some(pages.geometry), false)?;
        out.push((no, first_frame(&page)));
    }
    Ok(out)
}
