//! The rules FORMAT.md settles after an independent reader's questions
//! (issue 21): junk in a page after the tail, an end-of-page marker whose
//! next page is gone, a verified read (checksum and time order), the first
//! sequence number, and the bytes the format says are zero. Each case is
//! planted on a copy of a good journal and every entry point is asked.

use crate::common::*;
use std::path::{Path, PathBuf};
use tape_journal::format::{Geometry, PageHeader, PAGE_FLAGS_OFFSET, PAGE_FLAG_FIRST_SEQ_ANY};
use tape_journal::{verify, Appender, Cursor, CursorOptions, FrameMeta, Start};

const NAME: &str = "md";
const PAYLOAD: usize = 1000;
/// 48 + 1000, a multiple of 8: frames are at 64 + k * FRAME in a page.
const FRAME: u64 = 1048;

const CHECKED: CursorOptions = CursorOptions {
    verify_crc: true,
    populate: false,
};

/// Three pages, the third with 20 frames, no spare.
fn base() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let mut app = Appender::create(tmp.path(), NAME, foreground()).unwrap();
    while app.position() < (3, 64 + 20 * FRAME as usize) {
        app.write(1, &vec![7u8; PAYLOAD]).unwrap();
    }
    tmp
}

fn page(dir: &Path, no: u64) -> PathBuf {
    page_file(dir, NAME, no)
}

/// A spare page `no` as a writer makes it: header, then zeros.
fn make_spare(dir: &Path, no: u64) {
    let mut bytes = vec![0u8; PAGE as usize];
    bytes[..64].copy_from_slice(&PageHeader::new(Geometry::new(PAGE), PAGE, no, 1).to_bytes());
    std::fs::write(page(dir, no), bytes).unwrap();
}

#[track_caller]
fn names(err: &dyn std::fmt::Display, path: &Path, offset: u64, words: &str) {
    let msg = err.to_string();
    assert!(
        msg.contains(&path.display().to_string()),
        "{msg:?} does not name {path:?}"
    );
    assert!(
        msg.contains(&format!("offset {offset}")),
        "{msg:?} does not give offset {offset}"
    );
    assert!(msg.contains(words), "{msg:?} does not say {words:?}");
}

/// Frames a verified cursor reads from the first, and where it stops.
fn read_checked(dir: &Path, opts: CursorOptions) -> (u64, Result<(), String>) {
    let mut cur = match Cursor::open(dir, NAME, Start::First, opts) {
        Ok(c) => c,
        Err(e) => return (0, Err(e.to_string())),
    };
    let mut n = 0;
    loop {
        match cur.next() {
            Ok(Some(_)) => n += 1,
            Ok(None) => return (n, cur.check_stall().map_err(|e| e.to_string())),
            Err(e) => return (n, Err(e.to_string())),
        }
    }
}

/// Item 1: junk planted in a spare page is damage to `verify` at once, and
/// the next writer zeroes it, so the journal never becomes unwritable when
/// its tail gets there.
#[test]
fn junk_in_a_spare_is_damage_and_the_next_writer_clears_it() {
    let t = base();
    make_spare(t.path(), 4);
    let p4 = page(t.path(), 4);
    pwrite(&p4, 5000, &[0x41; 300]);

    let e = verify(t.path(), NAME).unwrap_err();
    names(&e, &p4, 5000, "not zero");
    // A reader reads every frame and stops at the tail, which is no hole.
    let (n, stall) = read_checked(t.path(), CHECKED);
    assert!(stall.is_ok(), "{stall:?}");

    let mut app = Appender::create(t.path(), NAME, foreground()).unwrap();
    assert_eq!(
        pread(&p4, 64, PAGE as usize - 64),
        vec![0u8; PAGE as usize - 64]
    );
    // Write through page 4 and into page 5.
    while app.position().0 < 5 {
        app.write(1, &vec![7u8; PAYLOAD]).unwrap();
    }
    drop(app);
    let r = verify(t.path(), NAME).unwrap();
    assert!(r.last_seq > n && r.notes.is_empty(), "{r:?}");
}

/// Item 2: the page after an end-of-page marker deleted: damage, naming
/// the page with the marker and saying that frames may be lost.
#[test]
fn a_deleted_last_page_is_damage() {
    let t = base();
    let p2 = page(t.path(), 2);
    let bytes = std::fs::read(&p2).unwrap();
    let mut off = 64usize;
    while u32::from_le_bytes(bytes[off..off + 4].try_into().unwrap()) != u32::MAX {
        off += FRAME as usize;
    }
    let last = u64::from_le_bytes(bytes[off - FRAME as usize + 8..][..8].try_into().unwrap());
    std::fs::remove_file(page(t.path(), 3)).unwrap();
    let words = format!("frames after seq {last} may be lost");

    names(
        &verify(t.path(), NAME).unwrap_err(),
        &p2,
        off as u64,
        &words,
    );
    let (n, e) = read_checked(t.path(), CHECKED);
    assert_eq!(n, last);
    names(&e.unwrap_err(), &p2, off as u64, &words);
    names(
        &Appender::create(t.path(), NAME, foreground()).unwrap_err(),
        &p2,
        off as u64,
        &words,
    );
    assert!(!page(t.path(), 3).exists(), "a refused writer made page 3");
    // The end of the journal is the same damage.
    let e = Cursor::open(t.path(), NAME, Start::End, CursorOptions::default()).unwrap_err();
    names(&e, &p2, off as u64, &words);
}

/// Item 3: a verified read checks the checksum and the time order, and
/// names the page with an end-of-page marker at offset 64; `check_stall`
/// finds frames in a page after the tail page.
#[test]
fn a_verified_read_checks_crc_time_and_later_pages() {
    let t = base();
    let p1 = page(t.path(), 1);
    // Frame 5's time before frame 4's (its checksum covers the payload only).
    let at = 64 + 4 * FRAME;
    pwrite(&p1, at + 16, &1i64.to_le_bytes());
    let (n, e) = read_checked(t.path(), CHECKED);
    assert_eq!(n, 4);
    names(&e.unwrap_err(), &p1, at, "older than the frame before");
    names(&verify(t.path(), NAME).unwrap_err(), &p1, at, "older");
    // Unverified, the reader trusts it (the hot path does not check).
    assert!(read_checked(t.path(), CursorOptions::default()).1.is_ok());

    let t = base();
    let p1 = page(t.path(), 1);
    pwrite(&p1, at + 48 + 10, b"X");
    let (n, e) = read_checked(t.path(), CHECKED);
    assert_eq!(n, 4);
    names(&e.unwrap_err(), &p1, at, "checksum");

    // An end-of-page marker where page 2's first frame belongs.
    let t = base();
    let p2 = page(t.path(), 2);
    pwrite(&p2, 64, &u32::MAX.to_le_bytes());
    let (_, e) = read_checked(t.path(), CHECKED);
    names(&e.unwrap_err(), &p2, 64, "first frame belongs");

    // A copy of the next frame further on in a spare after the tail page:
    // frames were published past a hole at the tail.
    let t = base();
    let p3 = page(t.path(), 3);
    let tail = 64 + 20 * FRAME;
    let mut frame = pread(&p3, tail - FRAME, FRAME as usize);
    let next = u64::from_le_bytes(frame[8..16].try_into().unwrap()) + 1;
    frame[8..16].copy_from_slice(&next.to_le_bytes());
    make_spare(t.path(), 4);
    let p4 = page(t.path(), 4);
    pwrite(&p4, 4096, &frame);
    let (n, e) = read_checked(t.path(), CHECKED);
    assert_eq!(n, next - 1);
    names(&e.unwrap_err(), &p3, tail, "hole");
    names(&verify(t.path(), NAME).unwrap_err(), &p3, tail, "hole");
    names(
        &Appender::create(t.path(), NAME, foreground()).unwrap_err(),
        &p3,
        tail,
        "hole",
    );
}

/// Item 4: the first sequence number. Page 1 starts at seq 1 unless its
/// header says otherwise (a replica's writer sets the flag); a journal whose
/// first page on disk is above 1 and that has no frame cannot go on.
#[test]
fn the_first_sequence_number() {
    // Every seq shifted by 10.
    let t = tempfile::tempdir().unwrap();
    let mut app = Appender::create(t.path(), NAME, foreground()).unwrap();
    for _ in 0..5 {
        app.write(1, b"hello").unwrap();
    }
    drop(app);
    let p1 = page(t.path(), 1);
    for k in 0..5u64 {
        pwrite(&p1, 64 + k * 56 + 8, &(k + 11).to_le_bytes());
    }
    let words = "first frame has sequence 11 where 1 was expected";
    names(&verify(t.path(), NAME).unwrap_err(), &p1, 64, words);
    names(
        &Appender::create(t.path(), NAME, foreground()).unwrap_err(),
        &p1,
        64,
        words,
    );

    // A replica that starts at seq 11: page 1 says so, and it goes on.
    let t = tempfile::tempdir().unwrap();
    let mut app = Appender::create(t.path(), NAME, foreground()).unwrap();
    for seq in 11..16 {
        app.write_replica(seq, seq as i64, &FrameMeta::default(), b"hello")
            .unwrap();
    }
    drop(app);
    let flags = u32::from_le_bytes(
        pread(&page(t.path(), 1), PAGE_FLAGS_OFFSET as u64, 4)
            .try_into()
            .unwrap(),
    );
    assert_eq!(flags, PAGE_FLAG_FIRST_SEQ_ANY);
    let r = verify(t.path(), NAME).unwrap();
    assert_eq!((r.first_seq, r.last_seq), (11, 15));
    let mut app = Appender::create(t.path(), NAME, foreground()).unwrap();
    assert_eq!(app.write(1, b"more").unwrap(), 16);
    drop(app);
    // A journal that starts at 1 has no flag.
    let t = base();
    assert_eq!(
        pread(&page(t.path(), 1), PAGE_FLAGS_OFFSET as u64, 4),
        [0; 4]
    );

    // Every page with frames deleted, a spare left: no writer may start
    // again at seq 1 there.
    let t = base();
    make_spare(t.path(), 4);
    for no in 1..=3 {
        std::fs::remove_file(page(t.path(), no)).unwrap();
    }
    let p4 = page(t.path(), 4);
    let words = "no page has a frame";
    names(&verify(t.path(), NAME).unwrap_err(), &p4, 64, words);
    names(
        &Appender::create(t.path(), NAME, foreground()).unwrap_err(),
        &p4,
        64,
        words,
    );
}

/// Item 6: `verify` checks the bytes the format says are zero: a frame's
/// padding, the bytes after an end-of-page marker, a page header's
/// reserved bytes (and a spare past its header, above).
#[test]
fn verify_checks_the_zero_bytes() {
    // Padding: a 5-byte payload makes a 53-byte frame and 3 bytes of it.
    let t = tempfile::tempdir().unwrap();
    let mut app = Appender::create(t.path(), NAME, foreground()).unwrap();
    for _ in 0..3 {
        app.write(1, b"hello").unwrap();
    }
    drop(app);
    verify(t.path(), NAME).unwrap();
    let p1 = page(t.path(), 1);
    pwrite(&p1, 64 + 56 + 54, &[1]);
    names(
        &verify(t.path(), NAME).unwrap_err(),
        &p1,
        64 + 56 + 54,
        "padding",
    );

    // After an end-of-page marker.
    let t = base();
    let p1 = page(t.path(), 1);
    let bytes = std::fs::read(&p1).unwrap();
    let mut off = 64usize;
    while u32::from_le_bytes(bytes[off..off + 4].try_into().unwrap()) != u32::MAX {
        off += FRAME as usize;
    }
    pwrite(&p1, off as u64 + 5, &[9]);
    names(
        &verify(t.path(), NAME).unwrap_err(),
        &p1,
        off as u64 + 5,
        "after the end-of-page marker",
    );

    // A reserved byte of a page header, and an undefined flag.
    let t = base();
    let p2 = page(t.path(), 2);
    // (Bytes 48 to 55 are max_page_size in version 2; 56 to 63 reserved.)
    pwrite(&p2, 58, &[1]);
    names(&verify(t.path(), NAME).unwrap_err(), &p2, 58, "reserved");
    let t = base();
    let p2 = page(t.path(), 2);
    pwrite(&p2, PAGE_FLAGS_OFFSET as u64, &4u32.to_le_bytes());
    names(
        &verify(t.path(), NAME).unwrap_err(),
        &p2,
        PAGE_FLAGS_OFFSET as u64,
        "flags",
    );
}

/// Item 5: a file that looks like a page but is not canonically named is
/// no page; `verify` names it in a note.
#[test]
fn verify_names_files_that_are_not_pages() {
    let t = base();
    std::fs::copy(page(t.path(), 1), t.path().join("md.17.journal")).unwrap();
    std::fs::copy(page(t.path(), 1), t.path().join("md.00000000.journal")).unwrap();
    let r = verify(t.path(), NAME).unwrap();
    assert_eq!(r.pages, 3);
    assert_eq!(r.notes.len(), 2, "{:?}", r.notes);
    assert!(
        r.notes[0].contains("md.00000000.journal: not a page of md"),
        "{:?}",
        r.notes
    );
    assert!(
        r.notes[1].contains("md.17.journal: not a page of md"),
        "{:?}",
        r.notes
    );
}
