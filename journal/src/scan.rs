//! Walking the frames of a page: the one place that decides whether a frame
//! is valid. Recovery, seeking, `verify` and `ls` all use it.

use crate::format::{
    align_frame, checksum, FrameHeader, END_MARKER_ROOM, END_OF_PAGE, FRAME_HEADER_LEN,
    PAGE_HEADER_LEN,
};
use crate::publish::load_len;
use std::path::{Path, PathBuf};

/// Damage found in a journal: the file, the byte offset in it, and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// The page file.
    pub file: PathBuf,
    /// Byte offset of the damaged frame (or field) in the file.
    pub offset: u64,
    /// What is wrong there.
    pub what: String,
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "journal damaged at {} offset {}: {}",
            self.file.display(),
            self.offset,
            self.what
        )
    }
}

impl std::error::Error for Damage {}

impl Damage {
    pub(crate) fn new(file: &Path, offset: usize, what: impl Into<String>) -> Self {
        Damage {
            file: file.to_path_buf(),
            offset: offset as u64,
            what: what.into(),
        }
    }
}

/// What an end-of-page marker at offset 64 of a page that may not be
/// skipped is (FORMAT.md, "Page sizes").
pub(crate) const EMPTY_LARGEST: &str =
    "an end-of-page marker where the page's first frame belongs (every frame fits a page of the journal's largest size)";

/// Reads the header of a frame whose `len` was already loaded non-zero
/// by [`load_len`] (Acquire), so its bytes are published and no longer
/// change.
#[inline(always)]
pub(crate) fn read_header(page: &[u8], off: usize) -> FrameHeader {
    assert!(off % 8 == 0 && off + FRAME_HEADER_LEN <= page.len());
    // SAFETY: in bounds and 8-aligned (checked above; FrameHeader is
    // align(8)); the frame was published (load_len returned its len
    // non-zero), so the writer no longer writes these bytes. Any bit pattern
    // is a valid FrameHeader.
    unsafe { std::ptr::read(page.as_ptr().add(off) as *const FrameHeader) }
}

/// Checks the `len` of the frame at `off` and returns the offset of the
/// frame after it, or what is wrong.
#[inline(always)]
pub(crate) fn frame_end(len: u32, off: usize, page_size: usize) -> Result<usize, String> {
    let len = len as usize;
    if len < FRAME_HEADER_LEN {
        return Err(format!("frame length {len} is shorter than a frame header"));
    }
    let end = off + align_frame(len);
    if end + END_MARKER_ROOM > page_size {
        return Err(format!(
            "frame length {len} runs past the end of the page ({page_size} bytes)"
        ));
    }
    Ok(end)
}

/// What a walk over one page found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct PageScan {
    /// Published frames in the page.
    pub frames: u64,
    /// (seq, time) of the first frame.
    pub first: Option<(u64, i64)>,
    /// (seq, time) of the last frame.
    pub last: Option<(u64, i64)>,
    /// Offset just past the last frame: where the next frame goes, or where
    /// the end-of-page marker is.
    pub tail: usize,
    /// Whether the page ends with an end-of-page marker.
    pub ended: bool,
    /// Payload bytes in the page.
    pub payload_bytes: u64,
}

/// How strictly [`scan_page`] checks.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ScanCheck {
    /// The sequence number the first frame must have, if known.
    pub expect_seq: Option<u64>,
    /// Frames must not be older than this.
    pub min_time: Option<i64>,
    /// Check every payload's CRC32C.
    pub crc: bool,
    /// Check the bytes FORMAT.md says are zero: each frame's padding, and
    /// every byte after an end-of-page marker (`verify`).
    pub zeros: bool,
}

/// Walks the frames of one page from its first frame to its tail.
pub(crate) fn scan_page(page: &[u8], file: &Path, check: ScanCheck) -> Result<PageScan, Damage> {
    let page_size = page.len();
    let mut s = PageScan {
        tail: PAGE_HEADER_LEN,
        ..PageScan::default()
    };
    let mut expect = check.expect_seq;
    let mut min_time = check.min_time;
    let mut off = PAGE_HEADER_LEN;
    loop {
        let len = load_len(page, off);
        if len == 0 {
            break;
        }
        if len == END_OF_PAGE {
            if off == PAGE_HEADER_LEN && !crate::page::may_be_empty(page) {
                // Every frame fits an empty page of the journal's largest
                // size: no writer ends such a page before its first frame.
                return Err(Damage::new(file, off, EMPTY_LARGEST));
            }
            s.ended = true;
            if check.zeros {
                if let Some(at) = first_nonzero(page, off + 4) {
                    return Err(Damage::new(
                        file,
                        at,
                        format!("a byte that is not zero after the end-of-page marker at offset {off} (everything after it is zero)"),
                    ));
                }
            }
            break;
        }
        let end = frame_end(len, off, page_size).map_err(|w| Damage::new(file, off, w))?;
        let h = read_header(page, off);
        if let Some(want) = expect {
            if h.seq != want {
                return Err(Damage::new(
                    file,
                    off,
                    format!("sequence {} where {want} was expected", h.seq),
                ));
            }
        }
        if let Some(t) = min_time {
            if h.time_ns < t {
                return Err(Damage::new(
                    file,
                    off,
                    format!("time {} is older than the frame before ({t})", h.time_ns),
                ));
            }
        }
        let payload = &page[off + FRAME_HEADER_LEN..off + len as usize];
        if check.crc && checksum(payload) != h.crc {
            return Err(Damage::new(
                file,
                off,
                format!("checksum mismatch in frame seq {}", h.seq),
            ));
        }
        if check.zeros {
            if let Some(at) = first_nonzero(&page[..end], off + len as usize) {
                return Err(Damage::new(
                    file,
                    at,
                    format!(
                        "padding after frame seq {} (at offset {off}) is not zero",
                        h.seq
                    ),
                ));
            }
        }
        if s.first.is_none() {
            s.first = Some((h.seq, h.time_ns));
        }
        s.last = Some((h.seq, h.time_ns));
        s.frames += 1;
        s.payload_bytes += payload.len() as u64;
        expect = Some(h.seq + 1);
        min_time = Some(h.time_ns);
        off = end;
    }
    s.tail = off;
    Ok(s)
}

/// Offset one past the last non-zero byte at or after `from`, or `from`
/// when everything from there on is zero.
pub(crate) fn nonzero_end(page: &[u8], from: usize) -> usize {
    // Word by word from the end: a page is mostly zeros, scanned at memory
    // speed. `from` and the page length are multiples of 8.
    let words = page[from..].chunks_exact(8);
    debug_assert!(words.remainder().is_empty());
    let n = words.len();
    for (i, w) in page[from..].chunks_exact(8).rev().enumerate() {
        if w != [0u8; 8] {
            return from + (n - i) * 8;
        }
    }
    from
}

/// Offset of the first byte that is not zero at or after `from`, `None`
/// when all of them are.
pub(crate) fn first_nonzero(page: &[u8], from: usize) -> Option<usize> {
    let aligned = from.next_multiple_of(8).min(page.len());
    if let Some(i) = page[from..aligned].iter().position(|&b| b != 0) {
        return Some(from + i);
    }
    let words = page[aligned..].chunks_exact(8);
    let rest = aligned + words.len() * 8;
    for (i, w) in words.enumerate() {
        if w != [0u8; 8] {
            let at = aligned + i * 8;
            return Some(at + w.iter().position(|&b| b != 0).expect("a byte is not 0"));
        }
    }
    page[rest..].iter().position(|&b| b != 0).map(|i| rest + i)
}

/// A published frame found past an unpublished slot: proof of a hole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PastHole {
    /// Offset of the frame.
    pub offset: usize,
    /// Its sequence number.
    pub seq: u64,
}

/// Looks past the unpublished slot at `tail` for a frame that was published
/// after it, which proves that the zeros at `tail` are a hole in published
/// frames and not the end of the journal (FORMAT.md, "Holes").
///
/// A candidate is a frame at an 8-aligned offset `x > tail` whose length is
/// in range and fits the page, whose checksum is right, whose time is not
/// older than `min_time`, and whose sequence number follows `next_seq` by at
/// least 1 and at most `(x - tail) / 48` (the frames that could have filled
/// the hole; with `bounded` false, for a page past the tail page where no
/// writer wrote, any sequence number from `next_seq` on). A writer cut off while writing its next frame leaves bytes
/// only in that one unpublished frame at `tail`, and they do not pass these
/// checks unless its payload itself holds a copy of such a frame. With
/// `next_seq` unknown (no frame before the slot) any sequence number
/// counts.
///
/// Sound against a live writer appending meanwhile: before it reports a
/// frame it loads the length word at `tail` again, and finds nothing if
/// that is no longer 0.
///
/// Reads every byte from `tail` to the last non-zero byte of the page:
/// recovery, `verify` and [`Cursor::check_stall`](crate::Cursor::check_stall)
/// call it, never the hot path.
pub(crate) fn published_past_hole(
    page: &[u8],
    tail: usize,
    next_seq: Option<u64>,
    min_time: Option<i64>,
    bounded: bool,
) -> Option<PastHole> {
    let end = nonzero_end(page, tail);
    let mut off = tail + FRAME_ALIGN_USIZE;
    while off + END_MARKER_ROOM <= end.min(page.len()) {
        let len = load_len(page, off);
        if len != 0 && len != END_OF_PAGE && frame_end(len, off, page.len()).is_ok() {
            let h = read_header(page, off);
            let seq_ok = match next_seq {
                Some(want) if bounded => {
                    let most = ((off - tail) / FRAME_HEADER_LEN) as u64;
                    h.seq > want && h.seq - want <= most
                }
                Some(want) => h.seq >= want,
                None => h.seq > 0,
            };
            let time_ok = min_time.is_none_or(|t| h.time_ns >= t);
            let payload = &page[off + FRAME_HEADER_LEN..off + len as usize];
            if seq_ok && time_ok && checksum(payload) == h.crc {
                // The length word at `tail` again: a live writer that
                // published there after the caller looked made the frames
                // found here (this one's length word was loaded by
                // load_len, an Acquire, so that store is visible now).
                return (load_len(page, tail) == 0).then_some(PastHole {
                    offset: off,
                    seq: h.seq,
                });
            }
        }
        off += FRAME_ALIGN_USIZE;
    }
    None
}

const FRAME_ALIGN_USIZE: usize = crate::format::FRAME_ALIGN;

/// The damage a [`PastHole`] proves, at `tail` of `file`.
pub(crate) fn hole_damage(file: &Path, tail: usize, past: PastHole) -> Damage {
    Damage::new(
        file,
        tail,
        format!(
            "a hole of zeros: frames were published after it (seq {} at offset {}), so frames here were lost",
            past.seq, past.offset
        ),
    )
}
