//! The rules an independent reader of FORMAT.md asked about (issue 21),
//! through the real `tape` binary: damage planted on copies of journals
//! that `tape write` made (one of them killed with SIGKILL), then `tape
//! verify`, `tape tail` and `tape write` asked. Each damage gets a non-zero
//! exit and one line naming the page file and the offset; nothing panics
//! and a refused writer changes no file.

use crate::common::*;
use crate::damage::{copy_journal, files, frame_offsets, seq_at};
use std::os::unix::fs::FileExt;
use std::path::Path;

/// 50,000 frames of about 56 bytes: pages 1 and 2 full, page 3 part.
const N: u64 = 50_000;

fn put(path: &Path, off: u64, bytes: &[u8]) {
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(bytes, off).unwrap();
}

/// A spare page `no` of journal md as a writer makes it: the header of
/// page `from` with its number changed, then zeros.
fn make_spare(root: &Root, from: u64, no: u64) {
    let mut bytes = vec![0u8; 1 << 20];
    let src = std::fs::read(root.page("md", from)).unwrap();
    bytes[..64].copy_from_slice(&src[..64]);
    bytes[24..32].copy_from_slice(&no.to_le_bytes());
    std::fs::write(root.page("md", no), bytes).unwrap();
}

/// The one-line error of a command that must fail, checked to name the
/// file, the offset and `words`.
#[track_caller]
fn fails(o: &std::process::Output, file: &Path, offset: u64, words: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "it passed: {err}");
    assert_eq!(o.status.code(), Some(1), "{err}");
    let name = file.file_name().unwrap().to_str().unwrap();
    assert!(err.contains(name), "does not name {name}: {err}");
    assert!(
        err.contains(&format!("offset {offset}")),
        "does not give offset {offset}: {err}"
    );
    assert!(err.contains(words), "does not say {words:?}: {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
}

/// Offset just past the last frame of a page: its tail, or its end-of-page
/// marker.
fn end_of_frames(page: &[u8]) -> usize {
    let last = *frame_offsets(page).last().expect("a frame");
    let len = u32::from_le_bytes(page[last..][..4].try_into().unwrap()) as usize;
    last + ((len + 7) & !7)
}

fn numbers(out: &[u8]) -> Vec<u64> {
    std::str::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| l.parse().expect("a number"))
        .collect()
}

/// A good journal of N frames, no spare page after page 3.
fn good() -> Root {
    let good = Root::new();
    {
        let _service = Service::start(&good);
        write_journal(&good, "md", &lines(1..=N));
    }
    let _ = std::fs::remove_file(good.page("md", 4));
    good
}

fn copy_of(good: &Root) -> Root {
    let root = Root::new();
    copy_journal(good, &root);
    root
}

/// Item 1: a writer killed with SIGKILL, 300 junk bytes planted in the
/// spare page its preparer made: `tape verify` calls it damage at once;
/// the next `tape write` zeroes it, and keeps writing through that page.
#[test]
fn junk_in_a_spare_page_is_damage_and_the_next_writer_clears_it() {
    let root = Root::new();
    let _service = Service::start(&root);
    let mut w = LiveWriter::start(&root, "md");
    w.send(&lines(1..=1000));
    wait_until("the spare page 2 and frame 1000", || {
        root.page("md", 2).exists() && ls_entry(&root, "md").is_some_and(|e| e["last_seq"] == 1000)
    });
    w.kid.kill9();
    let p2 = root.page("md", 2);
    put(&p2, 5000, &[b'A'; 300]);

    let o = run(&mut root.tape("verify", &["md"]), b"");
    fails(&o, &p2, 5000, "not zero");

    write_journal(&root, "md", &lines(1001..=1010));
    let v = ok(&mut root.tape("verify", &["md"]), b"");
    assert!(String::from_utf8_lossy(&v).contains("seq 1..=1010"));
    // Through page 2 and into page 3: nothing there breaks the journal.
    write_journal(&root, "md", &lines(1011..=40_000));
    let v = ok(&mut root.tape("verify", &["md"]), b"");
    assert!(
        String::from_utf8_lossy(&v).contains("seq 1..=40000"),
        "{v:?}"
    );
    assert!(root.page("md", 3).exists());
    let got = numbers(&ok(&mut root.tape("tail", &["md"]), b""));
    assert_eq!(got, (1..=40_000).collect::<Vec<_>>());
}

/// Item 2: the last page deleted: the end-of-page marker of page 2 points
/// at nothing. verify, tail and write all say so, naming page 2.
#[test]
fn a_deleted_last_page_is_damage() {
    let good = good();
    let root = copy_of(&good);
    let p2 = root.page("md", 2);
    let b2 = std::fs::read(&p2).unwrap();
    let offs = frame_offsets(&b2);
    let last = seq_at(&b2, *offs.last().unwrap());
    let marker = end_of_frames(&b2);
    std::fs::remove_file(root.page("md", 3)).unwrap();
    let words = format!("md.00000003.journal is missing: frames after seq {last} may be lost");

    fails(
        &run(&mut root.tape("verify", &["md"]), b""),
        &p2,
        marker as u64,
        &words,
    );
    let o = run(&mut root.tape("tail", &["md"]), b"");
    fails(&o, &p2, marker as u64, &words);
    assert_eq!(numbers(&o.stdout), (1..=last).collect::<Vec<_>>());
    let before = files(&root);
    let _service = Service::start(&root);
    let o = run(&mut root.tape("write", &["md"]), b"more\n");
    fails(&o, &p2, marker as u64, &words);
    assert!(files(&root) == before, "a refused writer changed files");
}

/// Item 3: `tape tail` checks what it prints: a flipped payload byte, a
/// time that goes back, an end-of-page marker at offset 64 (named in its
/// own page), a frame published in a later page past a hole. `--no-check`
/// skips the checksum and time checks.
#[test]
fn tail_checks_crc_time_marker_and_later_pages() {
    let good = good();
    let b1 = std::fs::read(good.page("md", 1)).unwrap();
    let offs = frame_offsets(&b1);

    // A flipped payload byte in frame 101.
    let root = copy_of(&good);
    let p1 = root.page("md", 1);
    let at = offs[100] as u64;
    put(&p1, at + 48, b"x");
    let o = run(&mut root.tape("tail", &["md"]), b"");
    fails(&o, &p1, at, "checksum");
    assert_eq!(numbers(&o.stdout), (1..=100).collect::<Vec<_>>());
    let o = run(&mut root.tape("tail", &["md", "--no-check"]), b"");
    assert!(o.status.success());
    assert_eq!(o.stdout.split(|&b| b == b'\n').count() as u64, N + 1);

    // Frame 201's time before frame 200's.
    let root = copy_of(&good);
    let p1 = root.page("md", 1);
    let at = offs[200] as u64;
    put(&p1, at + 16, &1i64.to_le_bytes());
    let o = run(&mut root.tape("tail", &["md"]), b"");
    fails(&o, &p1, at, "older than the frame before");
    assert_eq!(numbers(&o.stdout), (1..=200).collect::<Vec<_>>());
    let o = run(&mut root.tape("tail", &["md", "--no-check"]), b"");
    assert!(o.status.success());
    assert_eq!(numbers(&o.stdout), (1..=N).collect::<Vec<_>>());

    // An end-of-page marker where page 2's first frame belongs.
    let root = copy_of(&good);
    let p2 = root.page("md", 2);
    put(&p2, 64, &u32::MAX.to_le_bytes());
    let o = run(&mut root.tape("tail", &["md"]), b"");
    fails(&o, &p2, 64, "first frame belongs");
    assert_eq!(numbers(&o.stdout).len(), offs.len());

    // The frame after the last one, copied further on into a spare page 4.
    let root = copy_of(&good);
    let p3 = root.page("md", 3);
    let b3 = std::fs::read(&p3).unwrap();
    let last_off = *frame_offsets(&b3).last().unwrap();
    let len = u32::from_le_bytes(b3[last_off..][..4].try_into().unwrap()) as usize;
    let tail = end_of_frames(&b3);
    let mut frame = b3[last_off..last_off + len].to_vec();
    frame[8..16].copy_from_slice(&(N + 1).to_le_bytes());
    make_spare(&root, 3, 4);
    put(&root.page("md", 4), 8192, &frame);
    let o = run(&mut root.tape("tail", &["md"]), b"");
    fails(&o, &p3, tail as u64, "hole");
    assert_eq!(numbers(&o.stdout), (1..=N).collect::<Vec<_>>());
    fails(
        &run(&mut root.tape("verify", &["md"]), b""),
        &p3,
        tail as u64,
        "hole",
    );
}

/// Item 4: the first sequence number. Every seq shifted by 10 with page 1
/// present is damage; every page with frames deleted, a spare page left,
/// is damage too: no writer starts again at seq 1 there.
#[test]
fn the_first_sequence_number() {
    let root = Root::new();
    {
        let _service = Service::start(&root);
        write_journal(&root, "md", &lines(1..=1000));
    }
    let p1 = root.page("md", 1);
    let b1 = std::fs::read(&p1).unwrap();
    for off in frame_offsets(&b1) {
        put(&p1, off as u64 + 8, &(seq_at(&b1, off) + 10).to_le_bytes());
    }
    let words = "first frame has sequence 11 where 1 was expected";
    fails(&run(&mut root.tape("verify", &["md"]), b""), &p1, 64, words);
    let before = files(&root);
    {
        let _service = Service::start(&root);
        fails(
            &run(&mut root.tape("write", &["md"]), b"x\n"),
            &p1,
            64,
            words,
        );
    }
    assert!(files(&root) == before, "a refused writer changed files");

    let good = good();
    let root = copy_of(&good);
    make_spare(&root, 3, 5);
    make_spare(&root, 3, 4);
    for no in 1..=4 {
        std::fs::remove_file(root.page("md", no)).unwrap();
    }
    let p5 = root.page("md", 5);
    let words = "the first page on disk is page 5 but no page has a frame";
    fails(&run(&mut root.tape("verify", &["md"]), b""), &p5, 64, words);
    let before = files(&root);
    let _service = Service::start(&root);
    fails(
        &run(&mut root.tape("write", &["md"]), b"x\n"),
        &p5,
        64,
        words,
    );
    assert!(files(&root) == before, "a refused writer changed files");
}

/// Item 6: `tape verify` checks the bytes the format says are zero: a
/// frame's padding and the bytes after an end-of-page marker.
#[test]
fn verify_checks_the_zero_bytes() {
    let good = good();
    let b1 = std::fs::read(good.page("md", 1)).unwrap();
    // Frame 1 is "1": 49 bytes, 7 of padding.
    let root = copy_of(&good);
    let p1 = root.page("md", 1);
    put(&p1, 64 + 50, &[1]);
    fails(
        &run(&mut root.tape("verify", &["md"]), b""),
        &p1,
        64 + 50,
        "padding",
    );

    let root = copy_of(&good);
    let p1 = root.page("md", 1);
    let marker = end_of_frames(&b1) as u64;
    put(&p1, marker + 8, &[1]);
    fails(
        &run(&mut root.tape("verify", &["md"]), b""),
        &p1,
        marker + 8,
        "after the end-of-page marker",
    );
}

/// Item 5: only canonical names are pages. Copies of page 1 under
/// `md.17.journal` and `md.00000000.journal` are named by `tape verify` in
/// a note, ignored by `tape ls`, `tape tail` and `tape write`, and left as
/// they were.
#[test]
fn only_canonical_names_are_pages() {
    let good = good();
    let root = copy_of(&good);
    let foreign = [
        "md.17.journal",
        "md.00000000.journal",
        "md.000000017.journal",
    ];
    for name in foreign {
        std::fs::copy(root.page("md", 1), root.journal_dir().join(name)).unwrap();
    }
    let v = ok(&mut root.tape("verify", &["md"]), b"");
    let v = String::from_utf8_lossy(&v);
    assert!(
        v.contains("3 pages") && v.contains(&format!("seq 1..={N}")),
        "{v}"
    );
    for name in foreign {
        assert!(v.contains(&format!("{name}: not a page of md")), "{v}");
    }
    assert_eq!(
        numbers(&ok(&mut root.tape("tail", &["md"]), b"")),
        (1..=N).collect::<Vec<_>>()
    );
    assert_eq!(ls_entry(&root, "md").unwrap()["pages"], 3);
    let _service = Service::start(&root);
    write_journal(&root, "md", &lines(N + 1..=N + 10));
    assert_eq!(
        numbers(&ok(&mut root.tape("tail", &["md"]), b"")),
        (1..=N + 10).collect::<Vec<_>>()
    );
    let page1 = std::fs::read(good.page("md", 1)).unwrap();
    for name in foreign {
        let b = std::fs::read(root.journal_dir().join(name)).unwrap();
        assert!(b == page1, "{name} was changed");
    }
}
