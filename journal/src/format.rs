//! The byte layout of pages and frames, pinned by const assertions.
//!
//! Every offset here is also written down in `journal/FORMAT.md`; the
//! `const _: () = assert!(...)` lines below fail the build if the two drift.
//! All integers are little-endian (the only byte order tape runs on).

use std::mem::{offset_of, size_of};

/// The eight bytes every page file starts with.
pub const MAGIC: [u8; 8] = *b"TAPEJRNL";
/// The format version this crate writes (pages that grow; FORMAT.md,
/// "Page sizes"). It also reads and continues journals of [`VERSION_1`].
pub const VERSION: u32 = 2;
/// The first format version: every page of a journal has one size, and the
/// header has no [`PageHeader::max_page_size`]. Read, and continued in
/// that version (with pages of that size), never converted.
pub const VERSION_1: u32 = 1;
/// Size of [`PageHeader`]; the first frame of a page starts here.
pub const PAGE_HEADER_LEN: usize = 64;
/// Size of [`FrameHeader`]; a frame's payload starts this far after it.
pub const FRAME_HEADER_LEN: usize = 48;
/// Frames start on multiples of this many bytes.
pub const FRAME_ALIGN: usize = 8;
/// The `len` word that marks the end of a page: the next frame is in the
/// next page, at [`PAGE_HEADER_LEN`].
pub const END_OF_PAGE: u32 = u32::MAX;
/// Room always left at the end of a page for the end-of-page marker.
pub const END_MARKER_ROOM: usize = 8;
/// Smallest page size a journal may have (1 MiB).
pub const MIN_PAGE_SIZE: u64 = 1 << 20;
/// Largest page size a journal may have (1 GiB): a frame's `len` is a u32.
pub const MAX_PAGE_SIZE: u64 = 1 << 30;
/// Largest page size of a journal created without one (128 MiB).
pub const DEFAULT_PAGE_SIZE: u64 = 128 << 20;
/// Size of a version-2 journal's page 1 (1 MiB, or the journal's largest
/// page size if that is smaller, which it cannot be): each next page is
/// twice the one before, up to the journal's largest.
pub const FIRST_PAGE_SIZE: u64 = MIN_PAGE_SIZE;
/// Offset of [`PageHeader::max_page_size`] in a page file.
pub const MAX_PAGE_SIZE_OFFSET: usize = 48;
/// Bit of [`PageHeader::flags`], meaningful in page 1 only: the journal's
/// first frame carries a sequence number above 1 on purpose (a replica of
/// a journal whose first pages were pruned keeps its source's numbers).
/// Without it, the first frame of page 1 must have `seq` 1.
pub const PAGE_FLAG_FIRST_SEQ_ANY: u32 = 1;
/// Offset of [`PageHeader::flags`] in a page file.
pub const PAGE_FLAGS_OFFSET: usize = 44;

/// The header at offset 0 of every page file.
///
/// Written once, before the file is renamed to its final name, so a page
/// file that can be opened under its final name always has a complete
/// header.
#[repr(C, align(64))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageHeader {
    /// Always [`MAGIC`].
    pub magic: [u8; 8],
    /// Format version, [`VERSION`].
    pub version: u32,
    /// Offset of the first frame, [`PAGE_HEADER_LEN`].
    pub header_len: u32,
    /// Size of this page file in bytes: a power of two from
    /// [`MIN_PAGE_SIZE`] to the journal's largest page size (FORMAT.md,
    /// "Page sizes"); in version 1 the same for every page.
    pub page_size: u64,
    /// Page number, 1 for the first page of a journal; equal to the number
    /// in the file name.
    pub page_no: u64,
    /// CLOCK_REALTIME in nanoseconds when the page file was made.
    pub created_ns: i64,
    /// Size of each frame header, [`FRAME_HEADER_LEN`].
    pub frame_header_len: u32,
    /// Bit 0 ([`PAGE_FLAG_FIRST_SEQ_ANY`]) in page 1; every other bit is
    /// reserved, 0.
    pub flags: u32,
    /// Version 2: the journal's largest page size, a power of two from
    /// [`MIN_PAGE_SIZE`] to [`MAX_PAGE_SIZE`], the same in every page.
    /// Version 1: reserved, 0 (the largest page size is `page_size`).
    pub max_page_size: u64,
    /// Reserved, zero.
    pub reserved: [u8; 8],
}

const _: () = assert!(size_of::<PageHeader>() == PAGE_HEADER_LEN);
const _: () = assert!(offset_of!(PageHeader, magic) == 0);
const _: () = assert!(offset_of!(PageHeader, version) == 8);
const _: () = assert!(offset_of!(PageHeader, header_len) == 12);
const _: () = assert!(offset_of!(PageHeader, page_size) == 16);
const _: () = assert!(offset_of!(PageHeader, page_no) == 24);
const _: () = assert!(offset_of!(PageHeader, created_ns) == 32);
const _: () = assert!(offset_of!(PageHeader, frame_header_len) == 40);
const _: () = assert!(offset_of!(PageHeader, flags) == 44);
const _: () = assert!(offset_of!(PageHeader, flags) == PAGE_FLAGS_OFFSET);
const _: () = assert!(offset_of!(PageHeader, max_page_size) == 48);
const _: () = assert!(offset_of!(PageHeader, max_page_size) == MAX_PAGE_SIZE_OFFSET);
const _: () = assert!(offset_of!(PageHeader, reserved) == 56);

impl PageHeader {
    /// A header for page `page_no` of `page_size` bytes in a journal of
    /// geometry `geo` (its version, and in version 2 its largest page size).
    pub fn new(geo: Geometry, page_size: u64, page_no: u64, created_ns: i64) -> Self {
        PageHeader {
            magic: MAGIC,
            version: geo.version,
            header_len: PAGE_HEADER_LEN as u32,
            page_size,
            page_no,
            created_ns,
            frame_header_len: FRAME_HEADER_LEN as u32,
            flags: 0,
            max_page_size: if geo.version == VERSION_1 {
                0
            } else {
                geo.max_page_size
            },
            reserved: [0; 8],
        }
    }

    /// The geometry of the journal this page belongs to, as its header
    /// says (version 1: the largest page size is the page's own).
    pub fn geometry(&self) -> Geometry {
        Geometry {
            version: self.version,
            max_page_size: if self.version == VERSION_1 {
                self.page_size
            } else {
                self.max_page_size
            },
        }
    }

    /// Parses a header from the first bytes of a page file; `None` when
    /// fewer than [`PAGE_HEADER_LEN`] bytes are given. No field is checked.
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        let b = bytes.get(..PAGE_HEADER_LEN)?;
        Some(PageHeader {
            magic: b[0..8].try_into().ok()?,
            version: u32_at(b, 8),
            header_len: u32_at(b, 12),
            page_size: u64_at(b, 16),
            page_no: u64_at(b, 24),
            created_ns: u64_at(b, 32) as i64,
            frame_header_len: u32_at(b, 40),
            flags: u32_at(b, 44),
            max_page_size: u64_at(b, 48),
            reserved: b[56..64].try_into().ok()?,
        })
    }

    /// The header as the bytes stored at offset 0 of a page file.
    pub fn to_bytes(&self) -> [u8; PAGE_HEADER_LEN] {
        let mut b = [0u8; PAGE_HEADER_LEN];
        b[0..8].copy_from_slice(&self.magic);
        b[8..12].copy_from_slice(&self.version.to_le_bytes());
        b[12..16].copy_from_slice(&self.header_len.to_le_bytes());
        b[16..24].copy_from_slice(&self.page_size.to_le_bytes());
        b[24..32].copy_from_slice(&self.page_no.to_le_bytes());
        b[32..40].copy_from_slice(&self.created_ns.to_le_bytes());
        b[40..44].copy_from_slice(&self.frame_header_len.to_le_bytes());
        b[44..48].copy_from_slice(&self.flags.to_le_bytes());
        b[48..56].copy_from_slice(&self.max_page_size.to_le_bytes());
        b[56..64].copy_from_slice(&self.reserved);
        b
    }
}

/// What every page of one journal shares: the format version and the
/// largest page size. The size of each page follows from them and the page
/// before (FORMAT.md, "Page sizes").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// [`VERSION`] (pages grow) or [`VERSION_1`] (every page has
    /// `max_page_size` bytes).
    pub version: u32,
    /// The largest page size, a valid page size ([`valid_page_size`]).
    pub max_page_size: u64,
}

impl Geometry {
    /// A new journal's: this crate's version, pages growing to `max`.
    pub const fn new(max: u64) -> Self {
        Geometry {
            version: VERSION,
            max_page_size: max,
        }
    }

    /// Size of a journal's page 1.
    pub const fn first_page_size(&self) -> u64 {
        if self.version == VERSION_1 || self.max_page_size < FIRST_PAGE_SIZE {
            self.max_page_size
        } else {
            FIRST_PAGE_SIZE
        }
    }

    /// Size of the page after one of `prev` bytes, made before the frame
    /// that goes there is known: twice `prev`, at most the largest.
    pub const fn next_page_size(&self, prev: u64) -> u64 {
        let twice = prev.saturating_mul(2);
        if twice > self.max_page_size {
            self.max_page_size
        } else {
            twice
        }
    }

    /// Size of a page of at least `size` bytes (a power of two) made for a
    /// frame of `frame` bytes (header, payload and padding): the smallest
    /// power of two from `size` that holds it at offset 64 with the
    /// end-of-page marker's room, at most the largest page size.
    pub const fn page_size_for(&self, size: u64, frame: usize) -> u64 {
        let need = (PAGE_HEADER_LEN + frame + END_MARKER_ROOM) as u64;
        let mut s = size;
        while s < need && s < self.max_page_size {
            s *= 2;
        }
        s
    }

    /// Largest payload one frame can carry in this journal.
    pub const fn max_payload(&self) -> usize {
        max_payload(self.max_page_size)
    }
}

/// The header in front of every frame's payload.
///
/// `len` is the publication word: the writer stores every other field and
/// the payload first, then `len` with Release ordering; a reader loads `len`
/// with Acquire and reads nothing else of a frame whose `len` is 0. Both
/// sides are in one place, the crate's `publish.rs`.
#[repr(C, align(8))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// 0: not (yet) published. [`END_OF_PAGE`]: no more frames in this page.
    /// Otherwise [`FRAME_HEADER_LEN`] + payload length; the next frame
    /// starts at this frame's offset + `len` rounded up to [`FRAME_ALIGN`].
    pub len: u32,
    /// Message type, chosen by the application.
    pub msg_type: u32,
    /// Sequence number: 1, 2, 3, ... per journal, no gap across pages.
    pub seq: u64,
    /// Write time, CLOCK_REALTIME nanoseconds since the Unix epoch; never
    /// decreases within a journal.
    pub time_ns: i64,
    /// Id of the writing process or endpoint, chosen by the application.
    pub source: u32,
    /// Id of the intended receiver, 0 for everyone.
    pub dest: u32,
    /// Correlation id linking a reply to its request, 0 for none.
    pub corr: u64,
    /// CRC32C (Castagnoli) of the payload bytes.
    pub crc: u32,
    /// Reserved, 0.
    pub flags: u32,
}

const _: () = assert!(size_of::<FrameHeader>() == FRAME_HEADER_LEN);
const _: () = assert!(offset_of!(FrameHeader, len) == 0);
const _: () = assert!(offset_of!(FrameHeader, msg_type) == 4);
const _: () = assert!(offset_of!(FrameHeader, seq) == 8);
const _: () = assert!(offset_of!(FrameHeader, time_ns) == 16);
const _: () = assert!(offset_of!(FrameHeader, source) == 24);
const _: () = assert!(offset_of!(FrameHeader, dest) == 28);
const _: () = assert!(offset_of!(FrameHeader, corr) == 32);
const _: () = assert!(offset_of!(FrameHeader, crc) == 40);
const _: () = assert!(offset_of!(FrameHeader, flags) == 44);
const _: () = assert!(PAGE_HEADER_LEN % FRAME_ALIGN == 0);
const _: () = assert!(FRAME_HEADER_LEN % FRAME_ALIGN == 0);

impl FrameHeader {
    /// Parses a frame header from bytes; `None` when too few are given.
    /// No field is checked.
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        let b = bytes.get(..FRAME_HEADER_LEN)?;
        Some(FrameHeader {
            len: u32_at(b, 0),
            msg_type: u32_at(b, 4),
            seq: u64_at(b, 8),
            time_ns: u64_at(b, 16) as i64,
            source: u32_at(b, 24),
            dest: u32_at(b, 28),
            corr: u64_at(b, 32),
            crc: u32_at(b, 40),
            flags: u32_at(b, 44),
        })
    }

    /// The header as the 48 bytes stored in front of a payload.
    pub fn to_bytes(&self) -> [u8; FRAME_HEADER_LEN] {
        let mut b = [0u8; FRAME_HEADER_LEN];
        b[0..4].copy_from_slice(&self.len.to_le_bytes());
        b[4..8].copy_from_slice(&self.msg_type.to_le_bytes());
        b[8..16].copy_from_slice(&self.seq.to_le_bytes());
        b[16..24].copy_from_slice(&self.time_ns.to_le_bytes());
        b[24..28].copy_from_slice(&self.source.to_le_bytes());
        b[28..32].copy_from_slice(&self.dest.to_le_bytes());
        b[32..40].copy_from_slice(&self.corr.to_le_bytes());
        b[40..44].copy_from_slice(&self.crc.to_le_bytes());
        b[44..48].copy_from_slice(&self.flags.to_le_bytes());
        b
    }
}

/// Rounds `n` up to a multiple of [`FRAME_ALIGN`].
#[inline(always)]
pub const fn align_frame(n: usize) -> usize {
    (n + FRAME_ALIGN - 1) & !(FRAME_ALIGN - 1)
}

/// Largest payload one frame can carry in a page of `page_size` bytes.
pub const fn max_payload(page_size: u64) -> usize {
    page_size as usize - PAGE_HEADER_LEN - END_MARKER_ROOM - FRAME_HEADER_LEN
}

/// Whether `page_size` is one a journal may have.
pub const fn valid_page_size(page_size: u64) -> bool {
    page_size.is_power_of_two() && page_size >= MIN_PAGE_SIZE && page_size <= MAX_PAGE_SIZE
}

/// CRC32C of a payload, hardware-accelerated where the CPU has it.
///
/// Payloads up to [`SHORT_CRC_MAX`] bytes (market data: tens of bytes) go
/// through one chain of SSE4.2 `crc32` instructions, 8 bytes each, which is
/// a few cycles a word with no set-up; longer ones through the `crc32c`
/// crate, whose three interleaved chains win once there is enough to
/// interleave. Both compute the same CRC32C (Castagnoli, reflected, initial
/// value and final xor all ones).
#[inline]
pub fn checksum(payload: &[u8]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    if payload.len() <= SHORT_CRC_MAX && std::arch::is_x86_feature_detected!("sse4.2") {
        // SAFETY: the CPU has SSE4.2, checked just above.
        return unsafe { crc32c_short(payload) };
    }
    crc32c::crc32c(payload)
}

/// Longest payload [`checksum`] runs through one chain of instructions.
pub const SHORT_CRC_MAX: usize = 256;

/// CRC32C with one chain of SSE4.2 `crc32` instructions.
///
/// # Safety
///
/// The CPU must have SSE4.2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.2")]
unsafe fn crc32c_short(data: &[u8]) -> u32 {
    use std::arch::x86_64::{_mm_crc32_u16, _mm_crc32_u64, _mm_crc32_u8};
    let mut crc = u64::from(u32::MAX);
    let mut words = data.chunks_exact(8);
    for w in &mut words {
        // SAFETY: `w` is 8 readable bytes; read_unaligned has no alignment
        // requirement.
        let v = unsafe { w.as_ptr().cast::<u64>().read_unaligned() };
        crc = _mm_crc32_u64(crc, u64::from_le(v));
    }
    let mut crc = crc as u32;
    let mut rest = words.remainder();
    if rest.len() >= 4 {
        let mut b = [0u8; 4];
        b.copy_from_slice(&rest[..4]);
        crc = std::arch::x86_64::_mm_crc32_u32(crc, u32::from_le_bytes(b));
        rest = &rest[4..];
    }
    if rest.len() >= 2 {
        crc = _mm_crc32_u16(crc, u16::from_le_bytes([rest[0], rest[1]]));
        rest = &rest[2..];
    }
    if let Some(&b) = rest.first() {
        crc = _mm_crc32_u8(crc, b);
    }
    !crc
}

/// The little-endian u32 at byte `at` of `b` (the byte order of every
/// field in the format). Panics when `b` is too short: check first.
pub fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// The little-endian u64 at byte `at` of `b`. Panics when `b` is too
/// short: check first.
pub fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_header_round_trips() {
        let h = PageHeader::new(Geometry::new(1 << 22), 1 << 20, 7, 123);
        assert_eq!(PageHeader::parse(&h.to_bytes()), Some(h));
        assert_eq!(PageHeader::parse(&[0u8; 10]), None);
    }

    #[test]
    fn limits() {
        assert_eq!(align_frame(49), 56);
        assert_eq!(align_frame(48), 48);
        assert!(valid_page_size(1 << 20));
        assert!(!valid_page_size(3 << 20));
        assert!(!valid_page_size(1 << 19));
        assert_eq!(max_payload(1 << 20), (1 << 20) - 120);
    }

    #[test]
    fn pages_double_from_1_mib_to_the_largest() {
        let g = Geometry::new(16 << 20);
        let mut sizes = vec![g.first_page_size()];
        for _ in 0..6 {
            sizes.push(g.next_page_size(*sizes.last().unwrap()));
        }
        let mib: Vec<u64> = sizes.iter().map(|s| s >> 20).collect();
        assert_eq!(mib, [1, 2, 4, 8, 16, 16, 16]);
        // A journal whose largest page is 1 MiB has only 1 MiB pages.
        let small = Geometry::new(1 << 20);
        assert_eq!(small.first_page_size(), 1 << 20);
        assert_eq!(small.next_page_size(1 << 20), 1 << 20);
        // Version 1: every page has the one size.
        let v1 = Geometry {
            version: VERSION_1,
            max_page_size: 128 << 20,
        };
        assert_eq!(v1.first_page_size(), 128 << 20);
        assert_eq!(v1.next_page_size(128 << 20), 128 << 20);
    }

    #[test]
    fn a_page_made_for_a_large_frame_is_the_smallest_that_holds_it() {
        let g = Geometry::new(64 << 20);
        // Fits the step size: the step size.
        assert_eq!(g.page_size_for(2 << 20, 1000), 2 << 20);
        // Exactly fills a 4 MiB page (64 header, 8 marker room).
        assert_eq!(g.page_size_for(2 << 20, (4 << 20) - 72), 4 << 20);
        assert_eq!(g.page_size_for(2 << 20, (4 << 20) - 64), 8 << 20);
        // Never past the largest.
        assert_eq!(g.page_size_for(2 << 20, 100 << 20), 64 << 20);
        let h = PageHeader::new(g, 8 << 20, 3, 0);
        assert_eq!(PageHeader::parse(&h.to_bytes()).unwrap().geometry(), g);
        let v1 = Geometry {
            version: VERSION_1,
            max_page_size: 1 << 20,
        };
        let h1 = PageHeader::new(v1, 1 << 20, 3, 0);
        assert_eq!(h1.to_bytes()[48..64], [0u8; 16]);
        assert_eq!(PageHeader::parse(&h1.to_bytes()).unwrap().geometry(), v1);
    }
}
