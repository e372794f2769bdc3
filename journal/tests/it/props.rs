//! Randomized tests (proptest): the parsers and recovery never panic on
//! any bytes, and what they accept reads consistently.

use crate::common::*;
use proptest::prelude::*;
use tape_journal::format::{FrameHeader, PageHeader, FRAME_HEADER_LEN, PAGE_HEADER_LEN};
use tape_journal::parse::walk_page;
use tape_journal::{verify, Appender, Cursor, CursorOptions, Start};

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// A mutation of a page image.
#[derive(Debug, Clone)]
enum Mutation {
    /// XOR a byte at (offset modulo length).
    Flip(usize, u8),
    /// Overwrite the `len` word of the k-th frame (modulo the frame count,
    /// or the tail when there is none) with a value.
    Len(usize, u32),
    /// Overwrite an 8-aligned word anywhere.
    Word(usize, u32),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let interesting = prop_oneof![
        Just(0u32),
        Just(u32::MAX),
        Just(47u32),
        Just(48u32),
        0u32..4096,
        any::<u32>(),
    ];
    prop_oneof![
        (any::<usize>(), 1u8..).prop_map(|(o, x)| Mutation::Flip(o, x)),
        (any::<usize>(), interesting.clone()).prop_map(|(k, v)| Mutation::Len(k, v)),
        (any::<usize>(), interesting).prop_map(|(o, v)| Mutation::Word(o, v)),
    ]
}

/// Offsets of the frames of a model page.
fn frame_offsets(sizes: &[usize], put: usize) -> Vec<usize> {
    let mut off = PAGE_HEADER_LEN;
    let mut v = Vec::new();
    for &n in &sizes[..put] {
        v.push(off);
        off += (FRAME_HEADER_LEN + n + 7) & !7;
    }
    v.push(off);
    v
}

fn apply(page: &mut [u8], m: &Mutation, offsets: &[usize]) {
    match *m {
        Mutation::Flip(o, x) => {
            let o = o % page.len();
            page[o] ^= x;
        }
        Mutation::Len(k, v) => {
            let o = offsets[k % offsets.len()];
            page[o..o + 4].copy_from_slice(&v.to_le_bytes());
        }
        Mutation::Word(o, v) => {
            let o = (o % (page.len() / 8)) * 8;
            page[o..o + 4].copy_from_slice(&v.to_le_bytes());
        }
    }
}

proptest! {
    #![proptest_config(config(512))]

    /// Arbitrary bytes: Ok or Damage, never a panic.
    #[test]
    fn walk_page_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = walk_page(&bytes);
    }

    /// Headers parse from any bytes: `None` below their size, else the
    /// stored fields (a page header round-trips).
    #[test]
    fn headers_parse_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
        match PageHeader::parse(&bytes) {
            None => prop_assert!(bytes.len() < PAGE_HEADER_LEN),
            Some(h) => prop_assert_eq!(&h.to_bytes()[..], &bytes[..PAGE_HEADER_LEN]),
        }
        match FrameHeader::parse(&bytes) {
            None => prop_assert!(bytes.len() < FRAME_HEADER_LEN),
            Some(h) => {
                prop_assert_eq!(&h.to_bytes()[..], &bytes[..FRAME_HEADER_LEN]);
            }
        }
    }

    /// Valid pages of 160 bytes to 8 KiB, frames of random sizes until the
    /// page is full (so frames often end in the last 48 bytes), with or
    /// without an end marker: the walk counts every frame.
    #[test]
    fn walk_page_valid_pages(
        words in 20usize..1024,
        sizes in proptest::collection::vec(0usize..300, 0..64),
        end in any::<bool>(),
    ) {
        // No writer ends a page before its first frame (every frame fits
        // a real page; not every one these small pages).
        let end = end && model_page(words * 8, &sizes, false).1 > 0;
        let (page, put) = model_page(words * 8, &sizes, end);
        let s = walk_page(&page).expect("a valid page");
        prop_assert_eq!(s.frames, put as u64);
        prop_assert_eq!(s.ended, end);
        prop_assert_eq!(s.tail, *frame_offsets(&sizes, put).last().unwrap());
    }

    /// Valid pages with up to four mutations: Ok or Damage, never a panic.
    #[test]
    fn walk_page_mutated_pages(
        words in 20usize..1024,
        sizes in proptest::collection::vec(0usize..300, 0..64),
        end in any::<bool>(),
        muts in proptest::collection::vec(mutation(), 1..4),
    ) {
        let (mut page, put) = model_page(words * 8, &sizes, end);
        let offsets = frame_offsets(&sizes, put);
        for m in &muts {
            apply(&mut page, m, &offsets);
        }
        let _ = walk_page(&page);
    }
}

const NAME: &str = "md";

/// Writes the journal the recovery property mutates: 2 pages and a bit,
/// frames of 0..=3000 bytes.
fn journal(dir: &std::path::Path) -> u64 {
    let mut app = Appender::create(dir, NAME, foreground()).unwrap();
    while app.position().0 < 3 {
        app.write(1, &payload(app.next_seq(), 3000)).unwrap();
    }
    app.next_seq() - 1
}

proptest! {
    #![proptest_config(config(24))]

    /// A valid journal with random bytes of its page files overwritten
    /// (pwrite; mostly in the frame area): Appender::create, a checking
    /// Cursor and verify never panic, errors name a file of the journal,
    /// and when verify passes the journal reads consistently: the cursor
    /// reads exactly the frames verify counted, in sequence, with good
    /// checksums, and a new appender continues after them.
    #[test]
    fn recovery_on_mutated_files(
        muts in proptest::collection::vec((1u64..=3, 0u64..(1 << 20), 0usize..64, any::<u32>(), 0u8..4), 1..6)
    ) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let written = journal(dir);
        let (_, tail) = Appender::create(dir, NAME, foreground()).unwrap().position();
        for &(no, off, words, v, kind) in &muts {
            let path = page_file(dir, NAME, no);
            // Half the time near the frames (the first 64 KiB, and around
            // the tail of the last page), else anywhere.
            let off = match kind {
                0 => off % 65536,
                1 if no == 3 => (tail as u64 + off % 4096).saturating_sub(2048),
                _ => off,
            } & !3;
            let bytes: Vec<u8> = (0..words.max(1)).flat_map(|_| v.to_le_bytes()).collect();
            let end = (off as usize + bytes.len()).min(PAGE as usize);
            pwrite(&path, off, &bytes[..end - off as usize]);
        }
        let dir_s = dir.display().to_string();
        let report = verify(dir, NAME);
        if let Err(e) = &report {
            prop_assert!(e.to_string().contains(&dir_s), "{}", e);
        }
        let opts = CursorOptions { verify_crc: true, populate: false };
        let mut read = 0u64;
        let mut read_err = None;
        match Cursor::open(dir, NAME, Start::First, opts) {
            Err(e) => read_err = Some(e.to_string()),
            Ok(mut cur) => {
                let mut prev: Option<u64> = None;
                for _ in 0..=written + 1 {
                    match cur.next() {
                        Ok(Some(f)) => {
                            prop_assert!(f.checksum_ok());
                            if let Some(p) = prev {
                                prop_assert_eq!(f.seq(), p + 1);
                            }
                            prev = Some(f.seq());
                            read += 1;
                        }
                        Ok(None) => break,
                        Err(e) => {
                            read_err = Some(e.to_string());
                            break;
                        }
                    }
                }
            }
        }
        if let Some(e) = &read_err {
            prop_assert!(e.contains(&dir_s), "{}", e);
        }
        let app = Appender::create(dir, NAME, foreground());
        if let Ok(r) = &report {
            prop_assert!(read_err.is_none(), "verify passed, the cursor failed: {:?}", read_err);
            prop_assert_eq!(read, r.frames);
            let app = app.expect("verify passed, the writer refused");
            prop_assert_eq!(app.next_seq(), r.last_seq + 1);
        } else if let Err(e) = &app {
            prop_assert!(e.to_string().contains(&dir_s), "{}", e);
        }
    }
}

/// CRC32C bit by bit, straight from the definition (reflected polynomial
/// 0x82F63B78, initial value and final xor all ones): the reference the
/// fast paths are checked against.
fn crc32c_reference(data: &[u8]) -> u32 {
    let mut crc = u32::MAX;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// The check value of CRC-32C, and every length across the switch from the
/// one-chain path for short payloads to the crate's for long ones.
#[test]
fn checksum_matches_crc32c_definition() {
    use tape_journal::format::{checksum, SHORT_CRC_MAX};
    assert_eq!(checksum(b"123456789"), 0xE306_9283);
    assert_eq!(checksum(b""), 0);
    let data: Vec<u8> = (0..2 * SHORT_CRC_MAX + 64)
        .map(|i| mix(i as u64) as u8)
        .collect();
    for len in 0..data.len() {
        for start in [0, 1, 3] {
            let d = &data[start.min(len)..len];
            assert_eq!(checksum(d), crc32c_reference(d), "len {}", d.len());
        }
    }
}

proptest! {
    #![proptest_config(config(512))]
    #[test]
    fn checksum_matches_reference(bytes in proptest::collection::vec(any::<u8>(), 0..1024)) {
        prop_assert_eq!(tape_journal::format::checksum(&bytes), crc32c_reference(&bytes));
    }
}
