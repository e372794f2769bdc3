//! Pages that grow (FORMAT.md, "Page sizes"): page 1 is 1 MiB, each next
//! page twice the one before up to the journal's largest; a frame too large
//! for a page made ahead skips that page; readers, recovery, seek, prune and
//! verify follow each page's own size.

use crate::common::*;
use std::path::Path;
use tape_journal::format::{PageHeader, FRAME_HEADER_LEN, PAGE_HEADER_LEN};
use tape_journal::{
    prune, stats, verify, AppendOptions, Appender, Cursor, CursorOptions, PruneRule, Start,
    WriteError,
};

const MIB: u64 = 1 << 20;

/// Appender options with pages growing to `max`, the next page made ahead
/// by the background thread (`background`) or by the writer at the switch.
fn opts(max: u64, background: bool) -> AppendOptions {
    AppendOptions {
        page_size: max,
        background,
        ..if background {
            crate::common::background()
        } else {
            foreground()
        }
    }
}

/// The size of every page file, in page order.
fn sizes(dir: &Path) -> Vec<u64> {
    tape_journal::list_pages(dir, NAME)
        .unwrap()
        .into_iter()
        .map(|no| std::fs::metadata(page_file(dir, NAME, no)).unwrap().len())
        .collect()
}

/// The header of page `no`.
fn header(dir: &Path, no: u64) -> PageHeader {
    PageHeader::parse(&pread(&page_file(dir, NAME, no), 0, 64)).unwrap()
}

/// Every frame of the journal: (seq, payload length, first payload byte).
fn read_all(dir: &Path, start: Start) -> Vec<(u64, usize, u8)> {
    let opts = CursorOptions {
        verify_crc: true,
        ..CursorOptions::default()
    };
    let mut c = Cursor::open(dir, NAME, start, opts).unwrap();
    let mut out = Vec::new();
    while let Some(f) = c.next().unwrap() {
        out.push((
            f.seq(),
            f.payload().len(),
            f.payload().first().copied().unwrap_or(0),
        ));
    }
    out
}

const NAME: &str = "md";

#[test]
fn pages_double_from_1_mib_up_to_the_largest_and_stay_there() {
    for background in [false, true] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let mut app = Appender::create(dir, NAME, opts(8 * MIB, background)).unwrap();
        let payload = vec![5u8; 60 << 10];
        while app.position().0 < 6 {
            app.write(1, &payload).unwrap();
        }
        if background {
            // The thread makes page 7 while the writer fills page 6.
            app.wait_pages_ready(std::time::Duration::from_secs(30));
        }
        drop(app);
        let s = sizes(dir);
        // Pages 1..=6, and with the background thread the spare after.
        assert_eq!(
            &s[..6],
            [MIB, 2 * MIB, 4 * MIB, 8 * MIB, 8 * MIB, 8 * MIB],
            "{s:?}"
        );
        if background {
            assert_eq!(s.len(), 7, "{s:?}");
            assert_eq!(s[6], 8 * MIB);
        }
        for no in 1..=s.len() as u64 {
            let h = header(dir, no);
            assert_eq!((h.version, h.max_page_size), (2, 8 * MIB), "page {no}");
            assert_eq!(h.page_size, s[no as usize - 1], "page {no}");
        }
        // Every page holds as many frames as its own size allows.
        let per = |size: u64| ((size as usize - 72) / (FRAME_HEADER_LEN + (60 << 10))) as u64;
        let starts = tape_journal::page_starts(dir, NAME).unwrap();
        for k in 0..5 {
            let (a, b) = (starts[k].1.unwrap().0, starts[k + 1].1.unwrap().0);
            assert_eq!(b - a, per(s[k]), "frames in page {}", k + 1);
        }
        let frames = read_all(dir, Start::First);
        let r = verify(dir, NAME).unwrap();
        assert_eq!(r.geometry.unwrap().max_page_size, 8 * MIB);
        assert_eq!(r.skipped_pages, 0);
        assert_eq!(r.frames, frames.len() as u64);
    }
}

#[test]
fn a_journal_whose_largest_page_is_1_mib_has_only_1_mib_pages() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut app = Appender::create(dir, NAME, opts(MIB, false)).unwrap();
    while app.position().0 < 4 {
        app.write(1, &[1u8; 1000]).unwrap();
    }
    assert_eq!(app.max_payload(), (MIB as usize) - 120);
    drop(app);
    assert_eq!(sizes(dir), [MIB; 4]);
}

#[test]
fn a_frame_larger_than_the_page_made_ahead_skips_it_and_gets_a_page_that_holds_it() {
    let big = 5 * MIB as usize;
    for background in [false, true] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let mut app = Appender::create(dir, NAME, opts(64 * MIB, background)).unwrap();
        app.write(1, b"small").unwrap();
        if background {
            // Page 2 made ahead at the growth rule's 2 MiB, before the
            // large frame is known.
            app.wait_pages_ready(std::time::Duration::from_secs(30));
        }
        assert_eq!(app.write(1, &vec![7u8; big]).unwrap(), 2);
        assert_eq!(app.write(1, b"after").unwrap(), 3);
        // Larger than the largest page holds: refused, nothing written.
        let too = app.max_payload() + 1;
        assert!(matches!(
            app.write(1, &vec![0u8; too]),
            Err(WriteError::TooLarge { .. })
        ));
        drop(app);
        let s = sizes(dir);
        if background {
            // Page 2 (2 MiB) ends at offset 64, with no frame; page 3 is the
            // smallest power of two from 4 MiB that holds 5 MiB: 8 MiB.
            assert_eq!(&s[..3], [MIB, 2 * MIB, 8 * MIB], "{s:?}");
            let p2 = pread(&page_file(dir, NAME, 2), 64, 4);
            assert_eq!(p2, u32::MAX.to_le_bytes(), "page 2 is skipped");
        } else {
            // The writer made page 2 itself, knowing the frame: 8 MiB at once.
            assert_eq!(&s[..2], [MIB, 8 * MIB], "{s:?}");
        }
        let frames = read_all(dir, Start::First);
        assert_eq!(frames, [(1, 5, b's'), (2, big, 7), (3, 5, b'a')]);
        // Seek lands on the large frame, past the skipped page.
        assert_eq!(read_all(dir, Start::Seq(2))[0].0, 2);
        assert_eq!(read_all(dir, Start::Seq(3))[0].0, 3);
        let r = verify(dir, NAME).unwrap();
        assert_eq!(r.skipped_pages, u64::from(background));
        assert_eq!((r.first_seq, r.last_seq), (1, 3));
        // A new writer goes on after it.
        let mut app = Appender::create(dir, NAME, opts(64 * MIB, background)).unwrap();
        assert_eq!(app.write(1, b"next").unwrap(), 4);
    }
}

#[test]
fn a_skipped_first_page_keeps_the_first_sequence_rule() {
    // The first frame of a new journal is larger than page 1 (1 MiB): page
    // 1 is skipped, and the frame, seq 1, is in page 2.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut app = Appender::create(dir, NAME, opts(16 * MIB, false)).unwrap();
    assert_eq!(app.write(1, &vec![3u8; 3 * MIB as usize]).unwrap(), 1);
    drop(app);
    assert_eq!(sizes(dir), [MIB, 4 * MIB]);
    assert_eq!(read_all(dir, Start::First), [(1, 3 * MIB as usize, 3)]);
    let r = verify(dir, NAME).unwrap();
    assert_eq!((r.skipped_pages, r.first_seq), (1, 1));
    let s = stats(dir, NAME).unwrap();
    assert_eq!((s.first_seq, s.last_seq, s.frames), (1, 1, 1));
    // Recovery finds the first frame past the skipped page too.
    let mut app = Appender::create(dir, NAME, opts(16 * MIB, false)).unwrap();
    assert_eq!(app.write(1, b"x").unwrap(), 2);
}

#[test]
fn recovery_after_a_cut_at_a_skipped_page_continues_from_the_frame_before_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut app = Appender::create(dir, NAME, opts(64 * MIB, true)).unwrap();
    app.write(1, b"one").unwrap();
    app.wait_pages_ready(std::time::Duration::from_secs(30));
    app.write(1, &vec![9u8; 3 * MIB as usize]).unwrap();
    drop(app);
    assert_eq!(&sizes(dir)[..3], [MIB, 2 * MIB, 4 * MIB]);
    // As if the writer was cut off after the skip marker in page 2, before
    // it published the large frame in page 3: that frame's bytes are gone.
    pwrite(
        &page_file(dir, NAME, 3),
        64,
        &vec![0u8; 48 + 3 * MIB as usize],
    );
    assert_eq!(read_all(dir, Start::First), [(1, 3, b'o')]);
    let s = stats(dir, NAME).unwrap();
    assert_eq!((s.last_seq, s.frames), (1, 1));
    verify(dir, NAME).unwrap();
    // Prune keeps page 1, which holds the last frame, though the tail is in
    // page 3.
    let r = prune(
        dir,
        NAME,
        &PruneRule {
            keep_last: Some(1),
            ..PruneRule::default()
        },
        false,
    )
    .unwrap();
    assert!(r.deleted.is_empty(), "{r:?}");
    // The next writer continues at seq 2, in page 3, and readers at the end
    // see it.
    let mut reader = Cursor::open(dir, NAME, Start::End, CursorOptions::default()).unwrap();
    let mut app = Appender::create(dir, NAME, opts(64 * MIB, true)).unwrap();
    assert_eq!(app.position(), (3, PAGE_HEADER_LEN));
    assert_eq!(app.write(1, b"two").unwrap(), 2);
    assert_eq!(reader.next().unwrap().unwrap().seq(), 2);
    drop(app);
    assert_eq!(read_all(dir, Start::First), [(1, 3, b'o'), (2, 3, b't')]);
    verify(dir, NAME).unwrap();
}

#[test]
fn recovery_continues_in_a_grown_page_and_keeps_the_sizes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let payload = vec![4u8; 50 << 10];
    let mut app = Appender::create(dir, NAME, opts(32 * MIB, false)).unwrap();
    while app.position() < (3, 2 << 20) {
        app.write(1, &payload).unwrap();
    }
    let last = app.next_seq() - 1;
    drop(app);
    // A frame cut off mid-write in page 3 (4 MiB): bytes past the tail.
    let app = Appender::create(dir, NAME, opts(32 * MIB, false)).unwrap();
    let (page, off) = app.position();
    drop(app);
    assert_eq!(page, 3);
    pwrite(&page_file(dir, NAME, 3), off as u64 + 4, &[0xAB; 300]);
    // Opened with another largest size asked for: the journal keeps its own.
    let mut app = Appender::create(dir, NAME, opts(MIB, false)).unwrap();
    assert_eq!(app.max_page_size(), 32 * MIB);
    assert_eq!(app.page_size(), 4 * MIB);
    assert_eq!(app.next_seq(), last + 1);
    while app.position().0 < 5 {
        app.write(1, &payload).unwrap();
    }
    drop(app);
    assert_eq!(sizes(dir), [MIB, 2 * MIB, 4 * MIB, 8 * MIB, 16 * MIB]);
    let frames = read_all(dir, Start::First);
    assert!(frames.iter().enumerate().all(|(i, f)| f.0 == i as u64 + 1));
    verify(dir, NAME).unwrap();
}

#[test]
fn seek_by_seq_and_time_and_prune_work_across_page_sizes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let payload = vec![6u8; 30 << 10];
    let mut app = Appender::create(dir, NAME, opts(4 * MIB, false)).unwrap();
    // Page starts (seq, time) to seek to.
    let mut starts = Vec::new();
    let mut page = 0;
    while app.position().0 < 6 {
        let seq = app.write(1, &payload).unwrap();
        if app.position().0 != page {
            page = app.position().0;
            starts.push((page, seq, app.last_time_ns()));
        }
    }
    let last = app.next_seq() - 1;
    drop(app);
    assert_eq!(
        sizes(dir),
        [MIB, 2 * MIB, 4 * MIB, 4 * MIB, 4 * MIB, 4 * MIB]
    );
    for &(_, seq, time) in &starts {
        for s in [seq - 1, seq, seq + 1] {
            if s >= 1 && s <= last {
                assert_eq!(read_all(dir, Start::Seq(s))[0].0, s, "seek to seq {s}");
            }
        }
        let f = read_all(dir, Start::Time(time));
        assert!(f[0].0 <= seq, "seek to time of seq {seq}");
    }
    // max_size counts each page's own size: the 1 MiB and 2 MiB pages go
    // first, then 4 MiB ones, until at most 13 MiB are left.
    let rule = PruneRule {
        max_size: Some(13 * MIB),
        ..PruneRule::default()
    };
    let r = prune(dir, NAME, &rule, false).unwrap();
    assert_eq!(r.deleted, [1, 2, 3], "{r:?}");
    assert_eq!(r.freed_bytes, 7 * MIB, "{r:?}");
    assert_eq!(r.bytes_left, 12 * MIB, "{r:?}");
    assert_eq!(sizes(dir), [4 * MIB; 3]);
    // After pruning, the first page on disk is a 4 MiB page 4; seek and
    // verify go on from there.
    let first = starts.iter().find(|s| s.0 == 4).unwrap().1;
    assert_eq!(read_all(dir, Start::First)[0].0, first);
    assert_eq!(read_all(dir, Start::Seq(first + 3))[0].0, first + 3);
    let v = verify(dir, NAME).unwrap();
    assert_eq!((v.first_seq, v.last_seq), (first, last));
    // keep_last counts pages whatever their size.
    let r = prune(
        dir,
        NAME,
        &PruneRule {
            keep_last: Some(1),
            ..PruneRule::default()
        },
        false,
    )
    .unwrap();
    assert_eq!(r.deleted, [4, 5]);
    let mut app = Appender::create(dir, NAME, opts(4 * MIB, false)).unwrap();
    assert_eq!(app.write(1, b"on").unwrap(), last + 1);
}

#[test]
fn a_page_smaller_than_the_growth_rule_or_a_skip_in_a_largest_page_is_damage() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut app = Appender::create(dir, NAME, opts(4 * MIB, false)).unwrap();
    while app.position().0 < 3 {
        app.write(1, &[1u8; 1000]).unwrap();
    }
    drop(app);
    verify(dir, NAME).unwrap();
    // Page 3 (4 MiB, the largest) given an end-of-page marker at offset 64
    // after its frames were erased: no writer skips a page of the largest
    // size, every frame fits it.
    let p3 = page_file(dir, NAME, 3);
    let len = std::fs::metadata(&p3).unwrap().len() as usize;
    pwrite(&p3, 64, &vec![0u8; len - 64]);
    pwrite(&p3, 64, &u32::MAX.to_le_bytes());
    // The writer makes page 4 before it writes the marker.
    std::fs::copy(page_file(dir, NAME, 3), page_file(dir, NAME, 4)).unwrap();
    pwrite(&page_file(dir, NAME, 4), 24, &4u64.to_le_bytes());
    pwrite(&page_file(dir, NAME, 4), 64, &[0u8; 4]);
    let e = verify(dir, NAME).unwrap_err().to_string();
    assert!(e.contains("offset 64") && e.contains("largest size"), "{e}");
    let c = Cursor::open(dir, NAME, Start::First, CursorOptions::default());
    let mut c = c.unwrap();
    let e = loop {
        match c.next() {
            Ok(Some(_)) => {}
            Ok(None) => panic!("read past a marker at 64 of a largest page"),
            Err(e) => break e.to_string(),
        }
    };
    assert!(
        e.contains(&p3.display().to_string()) && e.contains("offset 64"),
        "{e}"
    );

    // A page 2 of 1 MiB after a 1 MiB page 1: smaller than the rule's 2 MiB.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut app = Appender::create(dir, NAME, opts(4 * MIB, false)).unwrap();
    while app.position().0 < 2 {
        app.write(1, &[1u8; 1000]).unwrap();
    }
    drop(app);
    let p2 = page_file(dir, NAME, 2);
    let f = std::fs::OpenOptions::new().write(true).open(&p2).unwrap();
    f.set_len(MIB).unwrap();
    pwrite(&p2, 16, &MIB.to_le_bytes());
    pwrite(&p2, 64, &vec![0u8; MIB as usize - 64]);
    let e = verify(dir, NAME).unwrap_err().to_string();
    assert!(
        e.contains(&p2.display().to_string()) && e.contains("pages only grow"),
        "{e}"
    );
}
