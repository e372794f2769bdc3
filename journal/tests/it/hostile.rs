//! Hostile page files (proptest): random header fields and lengths, random
//! bytes over and after the frames, garbage spare pages. Every entry point
//! (reader, writer recovery, verify, stats, `check_stall`) returns or fails
//! naming a file of the journal, never panics, and allocates little (the
//! pages are mapped, not read into memory). Recovery never makes a journal
//! worse: a writer that refuses changes nothing; a writer that accepts
//! keeps every frame a reader could read and appends right after them; a
//! journal that verifies is always writable and still verifies after.
//!
//! Allocation is measured by a global allocator that counts the bytes live
//! on the current thread and their peak.

use crate::common::*;
use proptest::prelude::*;
use std::path::Path;
use tape_journal::format::{checksum, FrameHeader, Geometry, PageHeader, FRAME_HEADER_LEN};
use tape_journal::{
    stats, verify, AppendOptions, Appender, Cursor, CursorOptions, OpenError, Start,
};
use tape_testkit::alloc::peak_of;

/// What any one operation on a hostile journal may allocate: names, paths,
/// error messages; never a page.
const SMALL: usize = 64 * 1024;

const NAME: &str = "md";

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn foreground_1m() -> AppendOptions {
    foreground()
}

/// Fails unless `err` names a file in `dir`.
fn names_a_file(err: &dyn std::fmt::Display, dir: &Path) -> Result<(), TestCaseError> {
    let msg = err.to_string();
    prop_assert!(msg.contains(&dir.display().to_string()), "{}", msg);
    Ok(())
}

/// How a reader from the first frame ends: the frames it read (seq,
/// payload checksum) and the error it stopped with, if any.
#[derive(Debug, PartialEq, Eq)]
struct ReadOut {
    frames: Vec<(u64, u32)>,
    error: Option<String>,
}

fn read_all(dir: &Path) -> Result<ReadOut, OpenError> {
    let opts = CursorOptions {
        verify_crc: true,
        populate: false,
    };
    let mut cur = Cursor::open(dir, NAME, Start::First, opts)?;
    let mut frames = Vec::new();
    // Bounded: a 1 MiB page holds at most 21845 frames.
    for _ in 0..100_000 {
        match cur.next() {
            Ok(Some(f)) => frames.push((f.seq(), f.crc())),
            Ok(None) => {
                let error = cur.check_stall().err().map(|e| e.to_string());
                return Ok(ReadOut { frames, error });
            }
            Err(e) => {
                return Ok(ReadOut {
                    frames,
                    error: Some(e.to_string()),
                })
            }
        }
    }
    panic!("a reader that never stops");
}

fn page_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    snapshot(dir)
        .into_iter()
        .filter(|(n, _)| n.ends_with(".journal"))
        .collect()
}

/// A header with each field valid or not.
fn header() -> impl Strategy<Value = (PageHeader, u64)> {
    let size = prop_oneof![
        4 => Just(PAGE),
        1 => Just(2 * PAGE),
        1 => Just(0u64),
        1 => Just(3 << 20),
        1 => Just(1u64 << 31),
        1 => any::<u64>(),
    ];
    let len = prop_oneof![
        4 => Just(None),
        1 => Just(Some(0u64)),
        1 => Just(Some(40u64)),
        1 => Just(Some(64u64)),
        1 => Just(Some(PAGE - 8)),
        1 => Just(Some(PAGE + 8)),
        1 => Just(Some(2 * PAGE)),
    ];
    (
        any::<bool>(),
        prop_oneof![4 => Just(1u32), 1 => any::<u32>()],
        prop_oneof![4 => Just(64u32), 1 => any::<u32>()],
        size,
        prop_oneof![4 => Just(1u64), 1 => any::<u64>()],
        prop_oneof![4 => Just(48u32), 1 => any::<u32>()],
        any::<u32>(),
        len,
    )
        .prop_map(|(magic, version, hl, size, no, fhl, flags, len)| {
            let mut h = PageHeader::new(
                Geometry {
                    version: 1,
                    max_page_size: size,
                },
                size,
                no,
                1,
            );
            if !magic {
                h.magic = *b"TAPEJRNX";
            }
            h.version = version;
            h.header_len = hl;
            h.frame_header_len = fhl;
            h.flags = flags;
            (
                h,
                len.unwrap_or(if size == 2 * PAGE { 2 * PAGE } else { PAGE }),
            )
        })
}

proptest! {
    #![proptest_config(config(96))]

    /// Page 1 with any header and any length, frames behind it: every entry
    /// point answers without a panic, naming the file when it refuses, and
    /// allocates little.
    #[test]
    fn any_header_is_refused_by_name(
        (h, len) in header(),
        sizes in proptest::collection::vec(0usize..200, 0..20),
    ) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let (mut image, _) = model_page(PAGE as usize, &sizes, false);
        image[..64].copy_from_slice(&h.to_bytes());
        let path = page_file(dir, NAME, 1);
        std::fs::write(&path, &image).unwrap();
        std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(len).unwrap();

        let (r, peak) = peak_of(|| read_all(dir));
        prop_assert!(peak <= SMALL, "reader allocated {}", peak);
        if let Err(e) = &r { names_a_file(e, dir)?; }
        let (r, peak) = peak_of(|| verify(dir, NAME));
        prop_assert!(peak <= SMALL, "verify allocated {}", peak);
        if let Err(e) = &r { names_a_file(e, dir)?; }
        let (r, peak) = peak_of(|| stats(dir, NAME));
        prop_assert!(peak <= SMALL, "stats allocated {}", peak);
        if let Err(e) = &r { names_a_file(e, dir)?; }
        let (r, peak) = peak_of(|| Appender::create(dir, NAME, foreground_1m()).map(drop));
        prop_assert!(peak <= SMALL, "recovery allocated {}", peak);
        if let Err(e) = &r { names_a_file(e, dir)?; }
        let valid = h.magic == *b"TAPEJRNL" && h.version == 1 && h.header_len == 64
            && h.frame_header_len == 48 && tape_journal::format::valid_page_size(h.page_size)
            && h.page_no == 1 && len == h.page_size;
        prop_assert_eq!(r.is_ok(), valid, "a header the writer {} wrongly", if valid { "refused" } else { "accepted" });
    }
}

/// Something put into a page image at an 8-aligned offset.
#[derive(Debug, Clone)]
enum Junk {
    /// Random bytes.
    Bytes(usize, Vec<u8>),
    /// Zeros (a hole).
    Zeros(usize, usize),
    /// A whole frame with this seq, its checksum right or not.
    Frame(usize, u64, Vec<u8>, bool),
    /// An end-of-page marker.
    End(usize),
}

fn junk() -> impl Strategy<Value = Junk> {
    let at = 0usize..(PAGE as usize / 8);
    prop_oneof![
        (at.clone(), proptest::collection::vec(any::<u8>(), 1..256))
            .prop_map(|(o, b)| Junk::Bytes(o, b)),
        (at.clone(), 1usize..4096).prop_map(|(o, n)| Junk::Zeros(o, n)),
        (
            at.clone(),
            0u64..300,
            proptest::collection::vec(any::<u8>(), 0..100),
            any::<bool>()
        )
            .prop_map(|(o, s, p, ok)| Junk::Frame(o, s, p, ok)),
        at.prop_map(Junk::End),
    ]
}

fn put(page: &mut [u8], j: &Junk, near: usize) {
    // Half the junk lands within 4 KiB of `near` (where the frames end),
    // the rest anywhere after the header.
    let len = page.len();
    let off = |o: usize| {
        let o = if o % 2 == 0 {
            near.saturating_sub(2048) + o % 4096
        } else {
            64 + o * 8 % (len - 128)
        };
        o.max(64) & !7
    };
    let end = page.len() - 8;
    let mut write = |o: usize, bytes: &[u8]| {
        let n = bytes.len().min(end.saturating_sub(o));
        page[o..o + n].copy_from_slice(&bytes[..n]);
    };
    match j {
        Junk::Bytes(o, b) => write(off(*o), b),
        Junk::Zeros(o, n) => write(off(*o), &vec![0; *n]),
        Junk::Frame(o, seq, p, ok) => {
            let h = FrameHeader {
                len: (FRAME_HEADER_LEN + p.len()) as u32,
                msg_type: 1,
                seq: *seq,
                time_ns: 1000 + *seq as i64,
                source: 0,
                dest: 0,
                corr: 0,
                crc: checksum(p) ^ u32::from(!*ok),
                flags: 0,
            };
            let mut b = h.to_bytes().to_vec();
            b.extend_from_slice(p);
            write(off(*o), &b);
        }
        Junk::End(o) => write(off(*o), &u32::MAX.to_le_bytes()),
    }
}

proptest! {
    #![proptest_config(config(160))]

    /// A journal of one page of good frames (times 1001, 1002, ...) with
    /// junk written over and after them, and sometimes a second page (made
    /// ahead, or with frames) with junk of its own.
    #[test]
    fn recovery_never_makes_a_journal_worse(
        sizes in proptest::collection::vec(0usize..300, 0..200),
        junk1 in proptest::collection::vec(junk(), 0..5),
        second in prop_oneof![Just(None), Just(Some(false)), Just(Some(true))],
        junk2 in proptest::collection::vec(junk(), 0..3),
    ) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let (mut p1, put1) = model_page(PAGE as usize, &sizes, second == Some(true));
        let tail1 = 64 + sizes[..put1].iter().map(|n| (FRAME_HEADER_LEN + n + 7) & !7).sum::<usize>();
        for j in &junk1 {
            put(&mut p1, j, tail1);
        }
        std::fs::write(page_file(dir, NAME, 1), &p1).unwrap();
        if let Some(with_frames) = second {
            let first = put1 + 1;
            let sizes2: Vec<usize> = if with_frames { vec![10, 20, 30] } else { Vec::new() };
            let (mut p2, _) = model_page(PAGE as usize, &sizes2, false);
            let mut h = PageHeader::new(Geometry::new(PAGE), PAGE, 2, 1);
            h.created_ns = 2;
            p2[..64].copy_from_slice(&h.to_bytes());
            // Renumber page 2's frames to follow page 1's.
            let mut off = 64;
            for (i, n) in sizes2.iter().enumerate() {
                let seq = (first + i) as u64;
                p2[off + 8..off + 16].copy_from_slice(&seq.to_le_bytes());
                p2[off + 16..off + 24].copy_from_slice(&(1000 + seq as i64).to_le_bytes());
                let mut pl = vec![0u8; *n];
                fill_payload(seq, &mut pl);
                p2[off + 48..off + 48 + n].copy_from_slice(&pl);
                p2[off + 40..off + 44].copy_from_slice(&checksum(&pl).to_le_bytes());
                off += (48 + n + 7) & !7;
            }
            for j in &junk2 {
                put(&mut p2, j, off);
            }
            std::fs::write(page_file(dir, NAME, 2), &p2).unwrap();
        }

        let before = read_all(dir).expect("page headers are valid");
        let verified = verify(dir, NAME);
        if let Err(e) = &verified { names_a_file(e, dir)?; }
        let files = page_files(dir);
        let (opened, peak) = peak_of(|| Appender::create(dir, NAME, foreground_1m()));
        prop_assert!(peak <= SMALL, "recovery allocated {}", peak);
        match opened {
            Err(e) => {
                names_a_file(&e, dir)?;
                prop_assert!(page_files(dir) == files, "a refusing writer changed the pages");
                prop_assert!(verified.is_err(), "verify passed, the writer refused: {}", e);
            }
            Ok(mut app) => {
                let seq = app.write(7, b"new frame").unwrap();
                drop(app);
                let after = read_all(dir).unwrap();
                // What readers could read is still there, unchanged, and
                // the new frame comes right after it, or (a writer behind
                // damage) readers see exactly what they saw before. A
                // writer may repair, never destroy: when the page after an
                // end-of-page marker is missing (a crash of the machine
                // can lose it), it makes the page and writes there.
                let mut appended = before.frames.clone();
                appended.push((seq, checksum(b"new frame")));
                let appended = ReadOut { frames: appended, error: None };
                if before.error.is_none() {
                    prop_assert_eq!(&after, &appended);
                } else {
                    prop_assert!(after == before || after == appended, "before {:?}\nafter {:?}", before, after);
                }
                if let Ok(v) = &verified {
                    let v2 = verify(dir, NAME);
                    prop_assert!(v2.is_ok(), "verified before, not after: {:?}", v2);
                    prop_assert_eq!(v2.unwrap().last_seq, seq);
                    prop_assert_eq!(seq, v.last_seq + 1);
                }
            }
        }
    }
}
