//! The byte layout of pages and frames, pinned by const assertions.
//!
//! Every offset here is also written down in `journal/FORMAT.md`; the
//! `const _: () = assert!(...)` lines below fail the build if the two drift.
//! All integers are little-endian (the only byte order tape runs on).

use std::mem::{offset_of, size_of};

/// The eight bytes every page file starts with.
pub const MAGIC: [u8; 8] = *b"TAPEJRNL";
/// The format version this crate writes and reads.
pub const VERSION: u32 = 1;
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
/// Page size used when a journal is created without one (128 MiB).
pub const DEFAULT_PAGE_SIZE: u64 = 128 << 20;
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
    /// Size of the page file in bytes: a power of two from
    /// [`MIN_PAGE_SIZE`] to [`MAX_PAGE_SIZE`], the same for every page.
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
    /// Reserved, zero.
    pub reserved: [u8; 16],
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
const _: () = assert!(offset_of!(PageHeader, reserved) == 48);

impl PageHeader {
    /// A header for page `page_no` of a journal with pages of `page_size`.
    pub fn new(page_size: u64, page_no: u64, created_ns: i64) -> Self {
        PageHeader {
            magic: MAGIC,
            version: VERSION,
            header_len: PAGE_HEADER_LEN as u32,
            page_size,
            page_no,
            created_ns,
            frame_header_len: FRAME_HEADER_LEN as u32,
            flags: 0,
            reserved: [0; 16],
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
            reserved: b[48..64].try_into().ok()?,
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
        b[48..64].copy_from_slice(&self.reserved);
        b
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
        let h = PageHeader::new(1 << 20, 7, 123);
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
}
