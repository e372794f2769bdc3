//! Damaged page files: every entry point returns an error that names the
//! file (and the offset, for a damaged frame), and none panics.

use crate::common::*;
use std::path::{Path, PathBuf};
use tape_journal::{verify, Appender, Cursor, CursorOptions, OpenError, ReadError, Start};

const NAME: &str = "md";
/// Payload size of every frame of the base journal: frames are then 1048
/// bytes, at 64 + k * 1048 in each page.
const PAYLOAD: usize = 1000;
const FRAME: u64 = 1048;

/// A journal of three pages, the third with 20 frames; returns the folder
/// holder and the number of frames.
fn base() -> (tempfile::TempDir, u64) {
    let tmp = tempfile::tempdir().unwrap();
    let mut app = Appender::create(tmp.path(), NAME, foreground()).unwrap();
    let mut n = 0;
    while app.position() < (3, 64 + 20 * FRAME as usize) {
        n = app.write(1, &payload_for(app.next_seq())).unwrap();
    }
    (tmp, n)
}

fn payload_for(seq: u64) -> Vec<u8> {
    let mut v = vec![0u8; PAYLOAD];
    fill_payload(seq, &mut v);
    v
}

/// A copy of the base journal in its own folder.
fn copy(base: &Path) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(base, tmp.path());
    tmp
}

const CHECKED: CursorOptions = CursorOptions {
    verify_crc: true,
    populate: false,
};

/// What a cursor from the first frame does over the whole journal: the
/// frames it read before it stopped, and the error it stopped with.
fn read_all(dir: &Path, opts: CursorOptions) -> Result<(u64, Option<ReadError>), OpenError> {
    let mut cur = Cursor::open(dir, NAME, Start::First, opts)?;
    let mut n = 0;
    loop {
        match cur.next() {
            Ok(Some(f)) => {
                n += 1;
                assert_eq!(f.seq(), n, "a frame out of order");
                if opts.verify_crc {
                    assert!(f.payload() == &payload_for(n)[..], "frame {n} differs");
                }
            }
            Ok(None) => return Ok((n, None)),
            Err(e) => return Ok((n, Some(e))),
        }
    }
}

#[track_caller]
fn names(err: &dyn std::fmt::Display, path: &Path, offset: Option<u64>) {
    let msg = err.to_string();
    assert!(
        msg.contains(&path.display().to_string()),
        "{msg:?} does not name {path:?}"
    );
    if let Some(off) = offset {
        assert!(
            msg.contains(&format!("offset {off}")),
            "{msg:?} does not give offset {off}"
        );
    }
}

/// Expects every entry point to fail naming `path` (and `offset`).
#[track_caller]
fn all_fail(dir: &Path, path: &Path, offset: Option<u64>) {
    match read_all(dir, CHECKED) {
        Err(e) => names(&e, path, offset),
        Ok((_, Some(e))) => names(&e, path, offset),
        Ok((n, None)) => panic!("cursor read {n} frames and no error"),
    }
    names(
        &Appender::create(dir, NAME, foreground()).unwrap_err(),
        path,
        offset,
    );
    names(&verify(dir, NAME).unwrap_err(), path, offset);
}

fn page(dir: &Path, no: u64) -> PathBuf {
    page_file(dir, NAME, no)
}

#[test]
fn wrong_magic_named() {
    let (b, _) = base();
    for no in [1, 2, 3] {
        let t = copy(b.path());
        pwrite(&page(t.path(), no), 0, b"NOTATAPE");
        if no == 2 {
            // A middle page: the writer never looks at it, readers and
            // verify do.
            let e = read_all(t.path(), CHECKED).unwrap().1.expect("error");
            names(&e, &page(t.path(), 2), None);
            assert!(e.to_string().contains("magic"));
            names(
                &verify(t.path(), NAME).unwrap_err(),
                &page(t.path(), 2),
                None,
            );
        } else {
            all_fail(t.path(), &page(t.path(), no), None);
            let e = Cursor::open(t.path(), NAME, Start::End, CHECKED).unwrap_err();
            names(&e, &page(t.path(), no), None);
        }
    }
}

#[test]
fn wrong_version_named() {
    let (b, _) = base();
    for no in [1, 3] {
        let t = copy(b.path());
        pwrite(&page(t.path(), no), 8, &7u32.to_le_bytes());
        all_fail(t.path(), &page(t.path(), no), None);
        let msg = verify(t.path(), NAME).unwrap_err().to_string();
        assert!(msg.contains("version 7"), "{msg}");
    }
}

#[test]
fn truncated_and_extended_named() {
    let (b, _) = base();
    for (no, len) in [
        (1, PAGE / 2),
        (3, PAGE / 2),
        (3, 40),
        (3, 0),
        (3, PAGE + 4096),
        (1, PAGE * 2),
    ] {
        let t = copy(b.path());
        let path = page(t.path(), no);
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len)
            .unwrap();
        all_fail(t.path(), &path, None);
    }
    // A truncated middle page stops readers and verify, naming it.
    let t = copy(b.path());
    let path = page(t.path(), 2);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(PAGE - 8)
        .unwrap();
    let msg = read_all(t.path(), CHECKED)
        .unwrap()
        .1
        .expect("error")
        .to_string();
    assert!(msg.contains("truncated"), "{msg}");
    names(&msg, &path, None);
    names(&verify(t.path(), NAME).unwrap_err(), &path, None);
}

/// Zeros over frames in the middle of page 1 (frames after them, and in
/// the next pages): `verify` names page 1 and the offset of the hole. A reader stops at the hole
/// (it cannot tell it from the live tail) having returned only good frames.
#[test]
fn zeroed_in_middle_named_by_verify() {
    let (b, _) = base();
    let t = copy(b.path());
    let p1 = page(t.path(), 1);
    let hole = 64 + 10 * FRAME;
    pwrite(&p1, hole, &vec![0u8; 3 * FRAME as usize]);
    names(&verify(t.path(), NAME).unwrap_err(), &p1, Some(hole));
    match read_all(t.path(), CHECKED).unwrap() {
        (10, None) => {}
        (10, Some(e)) => names(&e, &p1, None),
        other => panic!("cursor: {other:?}"),
    }
    // The writer appends at the tail of page 3, untouched.
    let mut app = Appender::create(t.path(), NAME, foreground()).unwrap();
    assert_eq!(app.position().0, 3);
    app.write(1, b"after").unwrap();
}

/// A frame whose length runs past the page: named with file and offset.
#[test]
fn frame_length_past_page_named_with_offset() {
    let (b, _) = base();
    for (no, k) in [(3u64, 5u64), (3, 0), (3, 19)] {
        let t = copy(b.path());
        let path = page(t.path(), no);
        let off = 64 + k * FRAME;
        pwrite(&path, off, &(PAGE as u32 - 8).to_le_bytes());
        all_fail(t.path(), &path, Some(off));
        let t = copy(b.path());
        // Too short for a header.
        pwrite(&page(t.path(), no), off, &7u32.to_le_bytes());
        all_fail(t.path(), &page(t.path(), no), Some(off));
    }
    // In a middle page the writer does not look, readers and verify do.
    let t = copy(b.path());
    let path = page(t.path(), 1);
    let off = 64 + 3 * FRAME;
    pwrite(&path, off, &u32::MAX.wrapping_sub(1).to_le_bytes());
    let (n, e) = read_all(t.path(), CursorOptions::default()).unwrap();
    assert_eq!(n, 3);
    names(&e.expect("error"), &path, Some(off));
    names(&verify(t.path(), NAME).unwrap_err(), &path, Some(off));
}

/// Flipped payload bytes: a checking reader, the writer (which checks the
/// last page) and verify name file and offset; a reader that does not
/// check sees a frame whose `checksum_ok()` is false.
#[test]
fn flipped_payload_named_with_offset() {
    let (b, _) = base();
    let t = copy(b.path());
    let path = page(t.path(), 3);
    let off = 64 + 7 * FRAME;
    let mut byte = pread(&path, off + 48 + 500, 1);
    byte[0] ^= 0x10;
    pwrite(&path, off + 48 + 500, &byte);
    all_fail(t.path(), &path, Some(off));
    let mut cur = Cursor::open(t.path(), NAME, Start::First, CursorOptions::default()).unwrap();
    let mut bad = 0;
    while let Some(f) = cur.next().unwrap() {
        if !f.checksum_ok() {
            bad += 1;
        }
    }
    assert_eq!(bad, 1);
}

/// What a cursor from the first frame reads before it has nothing more,
/// and what `check_stall` then says.
fn read_then_stall(dir: &Path) -> (u64, Result<(), ReadError>) {
    let mut cur = Cursor::open(dir, NAME, Start::First, CHECKED).unwrap();
    let mut n = 0;
    while let Some(f) = cur.next().expect("frames before the hole are good") {
        n += 1;
        assert_eq!(f.seq(), n);
    }
    (n, cur.check_stall())
}

/// Zeros over published frames in the last page, with frames after them
/// (a hole, not a cut-off writer): the writer refuses to append and
/// changes nothing, `verify` reports the hole with file and offset, and a
/// reader that stops there learns from `check_stall` that it is damage.
/// Holes of a whole frame run, of one length word, and of the page's first
/// frame (which makes the page look like a spare made ahead).
#[test]
fn hole_in_last_page_is_refused() {
    let (b, written) = base();
    let before_page3 = (written - 20) as usize;
    for (what, k, len) in [
        ("three frames", 5u64, 3 * FRAME as usize),
        ("one length word", 5, 4),
        ("the first frame", 0, FRAME as usize),
        ("the first two frames", 0, 2 * FRAME as usize),
    ] {
        let t = copy(b.path());
        let p3 = page(t.path(), 3);
        let hole = 64 + k * FRAME;
        pwrite(&p3, hole, &vec![0u8; len]);
        let files = snapshot(t.path());

        let e = Appender::create(t.path(), NAME, foreground()).unwrap_err();
        names(&e, &p3, Some(hole));
        assert!(e.to_string().contains("hole"), "{what}: {e}");
        assert!(
            files == snapshot(t.path()),
            "{what}: a refused writer changed the files"
        );

        let e = verify(t.path(), NAME).unwrap_err();
        names(&e, &p3, Some(hole));

        let (n, stall) = read_then_stall(t.path());
        assert_eq!(n as usize, before_page3 + k as usize, "{what}");
        names(
            &stall.expect_err("check_stall must see the hole"),
            &p3,
            Some(hole),
        );
    }
}

/// A hole in a middle page, and an end-of-page marker zeroed: a reader
/// stops where the frames stop, and `check_stall` names that place (the
/// frames after the hole in the same page, or the next page's frames).
#[test]
fn stall_checks_name_the_hole_in_a_middle_page() {
    let (b, _) = base();
    let t = copy(b.path());
    let p1 = page(t.path(), 1);
    let hole = 64 + 10 * FRAME;
    pwrite(&p1, hole, &vec![0u8; 3 * FRAME as usize]);
    let (n, stall) = read_then_stall(t.path());
    assert_eq!(n, 10);
    names(&stall.unwrap_err(), &p1, Some(hole));

    // The marker at the end of page 1: find it by walking the frames.
    let t = copy(b.path());
    let p1 = page(t.path(), 1);
    let bytes = std::fs::read(&p1).unwrap();
    let mut off = 64usize;
    let mut frames = 0;
    loop {
        let len = u32::from_le_bytes(bytes[off..off + 4].try_into().unwrap());
        if len == u32::MAX {
            break;
        }
        assert!(len >= 48, "a frame at {off}");
        off += (len as usize + 7) & !7;
        frames += 1;
    }
    pwrite(&p1, off as u64, &[0u8; 4]);
    let (n, stall) = read_then_stall(t.path());
    assert_eq!(n, frames);
    let e = stall.unwrap_err();
    names(&e, &p1, Some(off as u64));
    assert!(e.to_string().contains("later page"), "{e}");
    names(&verify(t.path(), NAME).unwrap_err(), &p1, Some(off as u64));
}

/// At the live end of a journal (and after a cut-off writer's leftovers)
/// `check_stall` finds nothing, while a writer keeps appending.
#[test]
fn check_stall_is_quiet_at_the_live_end() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut app = Appender::create(dir, NAME, background()).unwrap();
    let mut cur = Cursor::open(dir, NAME, Start::First, CHECKED).unwrap();
    let mut seen = 0;
    for round in 0..300u64 {
        for _ in 0..20 {
            app.write(1, &payload_for(app.next_seq())).unwrap();
        }
        while let Some(f) = cur.next().unwrap() {
            seen += 1;
            assert_eq!(f.seq(), seen);
        }
        cur.check_stall()
            .unwrap_or_else(|e| panic!("round {round}: a live end reported as {e}"));
    }
    assert!(app.page_switches() >= 4, "crossed pages");
    // A cut-off writer's unpublished frame past the tail is not a hole.
    let (no, tail) = app.position();
    drop(app);
    let mut junk = payload_for(seen + 1);
    junk.truncate((PAGE as usize).saturating_sub(tail + 48 + 8));
    if junk.len() >= 8 {
        junk[..8].copy_from_slice(&[0xAB; 8]);
        pwrite(&page(dir, no), tail as u64 + 48, &junk);
    }
    cur.check_stall().unwrap();
    verify(dir, NAME).unwrap();
    Appender::create(dir, NAME, foreground()).expect("leftovers are cleared, not refused");
}
