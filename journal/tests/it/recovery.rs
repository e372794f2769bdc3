//! Page limits, recovery of garbage past the tail, spare pages.

use crate::common::*;
use std::time::Duration;
use tape_journal::format::{checksum, max_payload, FrameHeader, FRAME_HEADER_LEN};
use tape_journal::{
    stats, verify, AppendOptions, Appender, Cursor, CursorOptions, ReplicaError, Start, WriteError,
};

const NAME: &str = "md";

/// A frame of `format::max_payload(page_size)` bytes goes into a fresh page
/// (after a switch) and reads back; one byte more is refused with
/// `TooLarge` and a message that says what to do, and nothing is written.
#[test]
fn largest_frame_fits_one_byte_more_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let max = max_payload(PAGE);
    let mut app = Appender::create(dir, NAME, foreground()).unwrap();
    assert_eq!(app.max_payload(), max);
    assert_eq!(app.write(1, b"small").unwrap(), 1);
    let mut big = vec![0u8; max];
    fill_payload(2, &mut big);
    assert_eq!(app.write(2, &big).unwrap(), 2);
    assert_eq!(app.page_switches(), 1, "the big frame needs a fresh page");
    assert_eq!(app.position(), (2, PAGE as usize - 8), "it fills the page");

    let files = snapshot(dir);
    let pos = app.position();
    match app.write(3, &vec![7u8; max + 1]) {
        Err(WriteError::TooLarge { len, max: m }) => {
            assert_eq!((len, m), (max + 1, max));
            let msg = WriteError::TooLarge { len, max: m }.to_string();
            assert!(msg.contains(&(max + 1).to_string()) && msg.contains(&max.to_string()));
            assert!(msg.contains("page size"), "{msg}");
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    assert!(matches!(
        app.claim(max + 1),
        Err(WriteError::TooLarge { .. })
    ));
    assert_eq!((app.position(), app.next_seq()), (pos, 3));
    assert!(files == snapshot(dir), "a refused frame changed the files");

    assert_eq!(app.write(3, b"after").unwrap(), 3);
    let mut cur = Cursor::open(dir, NAME, Start::First, CursorOptions::default()).unwrap();
    assert_eq!(cur.next().unwrap().unwrap().payload(), b"small");
    let f = cur.next().unwrap().unwrap();
    assert_eq!((f.seq(), f.payload().len()), (2, max));
    assert!(f.payload() == &big[..] && f.checksum_ok());
    assert_eq!(cur.next().unwrap().unwrap().payload(), b"after");
    assert!(cur.next().unwrap().is_none());
    assert_eq!(verify(dir, NAME).unwrap().frames, 3);
}

/// Whenever a frame ends in the last 48 bytes of a page (its end is at most
/// `page_size - 8`, which `reserve` allows), the next frame slot, or the
/// end-of-page marker, is a `len` word with less than a frame header of room
/// after it. A reader waiting there, `verify` and recovery must handle it.
#[test]
fn frame_ending_near_page_end_then_switch() {
    for room_left in [8usize, 16, 24, 32, 40, 48, 56] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let mut app = Appender::create(dir, NAME, foreground()).unwrap();
        // One frame from offset 64 that ends `room_left` bytes before the end.
        let n = PAGE as usize - 64 - room_left - FRAME_HEADER_LEN;
        app.write(1, &vec![1u8; n]).unwrap();
        assert_eq!(app.position(), (1, PAGE as usize - room_left));
        let mut cur = Cursor::open(dir, NAME, Start::First, CursorOptions::default()).unwrap();
        assert_eq!(cur.next().unwrap().unwrap().seq(), 1);
        assert!(cur.next().unwrap().is_none(), "room {room_left}");
        assert_eq!(verify(dir, NAME).unwrap().frames, 1, "room {room_left}");
        drop(app);
        let mut app = Appender::create(dir, NAME, foreground()).unwrap();
        assert_eq!(app.position(), (1, PAGE as usize - room_left));
        app.write(2, b"x").unwrap();
        assert_eq!(app.position().0, 2);
        let f = cur.next().unwrap().unwrap();
        assert_eq!((f.seq(), f.payload()), (2, &b"x"[..]));
        assert_eq!(verify(dir, NAME).unwrap().frames, 2);
        let mut c2 = Cursor::open(dir, NAME, Start::End, CursorOptions::default()).unwrap();
        assert!(c2.next().unwrap().is_none());
    }
}

/// Bytes a cut-off writer left past the tail (an unpublished header and
/// payload, and further on something that looks like a whole valid frame)
/// are never returned by a reader, are zeroed by the next Appender, and
/// frames appended over them afterwards read back right (a short frame
/// first, so the next frame lands on the fake one).
#[test]
fn garbage_past_tail_is_cleared_before_new_frames() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    {
        let mut app = Appender::create(dir, NAME, foreground()).unwrap();
        for seq in 1..=100u64 {
            app.write(seq as u32, &payload(seq, 300)).unwrap();
        }
    }
    let (page, tail) = Appender::create(dir, NAME, foreground())
        .unwrap()
        .position();
    let path = page_file(dir, NAME, page);
    // An unpublished frame: len word 0, header and payload written.
    let mut cut = vec![0u8; 400];
    for (i, b) in cut.iter_mut().enumerate().skip(4) {
        *b = (i as u8) | 0x80;
    }
    pwrite(&path, tail as u64, &cut);
    // A complete, valid-looking frame where the frame after a 1-byte frame
    // would start: right checksum, but a stale sequence number (a frame
    // that continued the sequence there would prove a hole instead, and
    // recovery refuses it: see damage::hole_in_last_page_is_refused).
    let fake_payload = b"garbage frame!!!";
    let fake = FrameHeader {
        len: (FRAME_HEADER_LEN + fake_payload.len()) as u32,
        msg_type: 102,
        seq: 42,
        time_ns: i64::MAX / 2,
        source: 0,
        dest: 0,
        corr: 0,
        crc: checksum(fake_payload),
        flags: 0,
    };
    let short_end = (tail + FRAME_HEADER_LEN + 1 + 7) & !7;
    pwrite(&path, short_end as u64, &fake.to_bytes());
    pwrite(&path, (short_end + FRAME_HEADER_LEN) as u64, fake_payload);
    // And stray bytes further on.
    pwrite(&path, tail as u64 + 10_000, &[0xFF; 64]);

    let opts = CursorOptions {
        verify_crc: true,
        populate: false,
    };
    let mut live = Cursor::open(dir, NAME, Start::End, opts).unwrap();
    assert!(live.next().unwrap().is_none(), "a reader read garbage");
    let report = verify(dir, NAME).expect("garbage past the tail is not damage");
    assert_eq!(report.last_seq, 100);
    assert!(
        report
            .notes
            .iter()
            .any(|n| n.contains(&path.display().to_string())),
        "{:?}",
        report.notes
    );

    let mut app = Appender::create(dir, NAME, foreground()).unwrap();
    assert_eq!((app.position(), app.next_seq()), ((page, tail), 101));
    assert!(
        pread(&path, tail as u64, PAGE as usize - tail)
            .iter()
            .all(|&b| b == 0),
        "recovery left bytes past the tail"
    );
    assert!(live.next().unwrap().is_none());
    assert_eq!(app.write(101, b"s").unwrap(), 101);
    for seq in 102..=300u64 {
        app.write(seq as u32, &payload(seq, 300)).unwrap();
    }
    let f = live.next().unwrap().unwrap();
    assert_eq!((f.seq(), f.payload()), (101, &b"s"[..]));
    for seq in 102..=300u64 {
        let f = live.next().unwrap().expect("frame");
        assert_eq!(f.seq(), seq);
        assert!(f.payload() == &payload(seq, 300)[..], "frame {seq}");
    }
    assert!(live.next().unwrap().is_none());
    let report = verify(dir, NAME).unwrap();
    assert_eq!(report.last_seq, 300);
    assert!(report.notes.is_empty(), "{:?}", report.notes);
}

/// With the background preparer and 1 MiB pages, after several switches
/// the journal holds a pre-made empty next page. A reopened Appender
/// continues in the last page with frames (not the spare), `Cursor::open`
/// at `End` and `stats` ignore the spare, and a reader follows the writer
/// into it.
#[test]
fn spare_page_made_ahead_is_handled() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let deadline = Deadline::secs(60);
    let mut app = Appender::create(dir, NAME, background()).unwrap();
    let mut reader = Cursor::open(dir, NAME, Start::First, CursorOptions::default()).unwrap();
    let mut read = 0u64;
    let p = [5u8; 1000];
    while app.page_switches() < 5 {
        app.write(1, &p).unwrap();
        if app.next_seq() % 100 == 0 {
            // Give the preparer time on a busy machine; the next page is
            // then normally ready when it is needed.
            while !app.next_page_ready() {
                deadline.check("spare page");
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
    while !app.next_page_ready() {
        deadline.check("spare page");
        std::thread::sleep(Duration::from_millis(1));
    }
    let (cur_page, _) = app.position();
    let spare = page_file(dir, NAME, cur_page + 1);
    assert!(spare.exists(), "no spare page");
    assert_eq!(pread(&spare, 64, 8), vec![0u8; 8], "spare page has a frame");
    let last = app.next_seq() - 1;
    while let Some(f) = reader.next().unwrap() {
        read += 1;
        assert_eq!(f.seq(), read);
    }
    assert_eq!(read, last);

    let s = stats(dir, NAME).unwrap();
    assert_eq!(
        (s.pages, s.first_seq, s.last_seq, s.frames),
        (cur_page + 1, 1, last, last)
    );
    let mut at_end = Cursor::open(dir, NAME, Start::End, CursorOptions::default()).unwrap();
    assert!(at_end.next().unwrap().is_none());
    drop(app);

    let mut app = Appender::create(dir, NAME, background()).unwrap();
    assert_eq!(app.position().0, cur_page, "reopened into the spare page");
    assert_eq!(app.next_seq(), last + 1);
    let target = app.page_switches() + 2;
    while app.page_switches() < target {
        app.write(2, &p).unwrap();
    }
    let end = app.next_seq() - 1;
    for cur in [&mut reader, &mut at_end] {
        let mut want = last + 1;
        while let Some(f) = cur.next().unwrap() {
            assert_eq!(f.seq(), want);
            want += 1;
        }
        assert_eq!(want, end + 1);
    }
    drop(app);
    let r = verify(dir, NAME).unwrap();
    assert_eq!(r.last_seq, end);
    assert_eq!(stats(dir, NAME).unwrap().last_seq, end);
}

/// The writer outruns its background preparer on purpose (frames of about
/// 100 KiB, so a page switch every ten frames, while another thread keeps
/// the CPUs busy): when the page it needs is not ready, the appender must
/// not make or touch it at the same time as the preparer does. Every frame
/// must read back as written: a byte the preparer's pre-fault pass wrote
/// back over a fresh frame shows as a checksum mismatch (appended frames)
/// or as a payload that differs with a right checksum (claimed frames,
/// whose checksum is computed from the mapping).
#[test]
fn background_preparer_never_overwrites_frames() {
    preparer_never_overwrites(background());
}

/// The same with four pages kept ready ahead: the window of pages the
/// preparer makes moves with the writer, and a page it made is handed over
/// exactly once.
#[test]
fn preparer_with_pages_ahead_never_overwrites_frames() {
    preparer_never_overwrites(AppendOptions {
        pages_ahead: 4,
        ..background()
    });
}

fn preparer_never_overwrites(opts: AppendOptions) {
    use std::sync::atomic::{AtomicBool, Ordering};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let hog = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut x = 0u64;
            while !stop.load(Ordering::Acquire) {
                x = std::hint::black_box(mix(x));
            }
        })
    };
    const FRAMES: u64 = 1500;
    const BIG: usize = 150_000;
    let mut app = Appender::create(dir, NAME, opts).unwrap();
    let mut buf = vec![0u8; BIG];
    let mut result = Ok(());
    for seq in 1..=FRAMES {
        let n = 50_000 + payload_len(seq, BIG - 50_000);
        fill_payload(seq, &mut buf[..n]);
        let r = if seq % 2 == 0 {
            app.claim(n).map(|mut c| {
                c.copy_from_slice(&buf[..n]);
                c.commit(seq as u32)
            })
        } else {
            app.write(seq as u32, &buf[..n])
        };
        if let Err(e) = r {
            result = Err(format!("append of frame {seq} failed: {e}"));
            break;
        }
    }
    stop.store(true, Ordering::Release);
    hog.join().unwrap();
    drop(app);
    result.unwrap();
    let mut cur = Cursor::open(dir, NAME, Start::First, CursorOptions::default()).unwrap();
    let mut bad = Vec::new();
    for seq in 1..=FRAMES {
        let f = cur.next().unwrap().expect("frame");
        assert_eq!(f.seq(), seq);
        let n = 50_000 + payload_len(seq, BIG - 50_000);
        fill_payload(seq, &mut buf[..n]);
        if !f.checksum_ok() || f.payload() != &buf[..n] {
            let i = (0..n).find(|&i| f.payload()[i] != buf[i]).unwrap_or(0);
            let addr = f.payload().as_ptr() as usize + i;
            bad.push(format!(
                "seq {seq} ({}): byte {i} is {:#04x}, {:#04x} written, {} into a 4 KiB page",
                if seq % 2 == 0 { "claimed" } else { "appended" },
                f.payload()[i],
                buf[i],
                addr % 4096
            ));
        }
    }
    assert!(bad.is_empty(), "{} frames damaged: {bad:#?}", bad.len());
}

/// Pages kept ahead are made before the writer needs them: with three
/// ahead, pages 2 to 4 exist (full size) while the writer is still on page
/// 1; the writer then runs through them and beyond, every frame reads back,
/// and a writer that reopens the journal continues after the last frame,
/// past the spare pages made ahead.
#[test]
fn pages_ahead_are_made_before_they_are_needed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let opts = AppendOptions {
        pages_ahead: 3,
        ..background()
    };
    let mut app = Appender::create(dir, NAME, opts).unwrap();
    assert_eq!(app.wait_pages_ready(std::time::Duration::from_secs(60)), 3);
    for no in 2..=4u64 {
        let path = tape_journal::files::page_path(dir, NAME, no);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), PAGE, "{path:?}");
    }
    assert!(!tape_journal::files::page_path(dir, NAME, 5).exists());
    // 100 KiB frames: about ten a page, so 60 frames cross six pages.
    let mut buf = vec![0u8; 100_000];
    for seq in 1..=60u64 {
        fill_payload(seq, &mut buf);
        assert_eq!(app.write(1, &buf).unwrap(), seq);
    }
    assert!(app.page_switches() >= 5);
    let (last_page, _) = app.position();
    // Let the preparer make pages past the tail, then reopen.
    assert_eq!(app.wait_pages_ready(std::time::Duration::from_secs(60)), 3);
    drop(app);
    assert!(tape_journal::files::page_path(dir, NAME, last_page + 3).exists());
    let mut app = Appender::create(dir, NAME, background()).unwrap();
    assert_eq!(app.next_seq(), 61);
    assert_eq!(app.position().0, last_page);
    fill_payload(61, &mut buf);
    assert_eq!(app.write(1, &buf).unwrap(), 61);
    drop(app);
    let mut cur = Cursor::open(dir, NAME, Start::First, CursorOptions::default()).unwrap();
    for seq in 1..=61u64 {
        let f = cur.next().unwrap().expect("frame");
        assert_eq!(f.seq(), seq);
        fill_payload(seq, &mut buf);
        assert!(f.checksum_ok());
        assert_eq!(f.payload(), &buf[..]);
    }
    assert!(cur.next().unwrap().is_none());
}

#[test]
fn replica_frame_copies_every_header_field() {
    let src_dir = tempfile::tempdir().unwrap();
    let dst_dir = tempfile::tempdir().unwrap();
    let mut src = Appender::create(src_dir.path(), "md", foreground()).unwrap();
    let meta = tape_journal::FrameMeta {
        msg_type: 7,
        source: 11,
        dest: 13,
        corr: 17,
    };
    for i in 0..100u64 {
        src.write_meta(&meta, &payload(i, 300)).unwrap();
    }
    let mut dst = Appender::create(dst_dir.path(), "md", foreground()).unwrap();
    let mut cur = Cursor::open(
        src_dir.path(),
        "md",
        Start::Seq(40),
        CursorOptions::default(),
    )
    .unwrap();
    let first = cur.next().unwrap().unwrap();
    let mut bad = *first.header();
    bad.crc ^= 1;
    assert!(matches!(
        dst.write_replica_frame(&bad, first.payload()),
        Err(ReplicaError::Corrupt { seq: 40 })
    ));
    bad = *first.header();
    bad.len += 1;
    assert!(matches!(
        dst.write_replica_frame(&bad, first.payload()),
        Err(ReplicaError::Corrupt { .. })
    ));
    // A replica may start at any sequence number, then must follow on.
    dst.write_replica_frame(first.header(), first.payload())
        .unwrap();
    let second = cur.next().unwrap().unwrap();
    let mut skip = *second.header();
    skip.seq += 1;
    assert!(matches!(
        dst.write_replica_frame(&skip, second.payload()),
        Err(ReplicaError::OutOfOrder { .. })
    ));
    dst.write_replica_frame(second.header(), second.payload())
        .unwrap();
    while let Some(f) = cur.next().unwrap() {
        dst.write_replica_frame(f.header(), f.payload()).unwrap();
    }
    let mut a = Cursor::open(
        src_dir.path(),
        "md",
        Start::Seq(40),
        CursorOptions::default(),
    )
    .unwrap();
    let mut b = Cursor::open(dst_dir.path(), "md", Start::First, CursorOptions::default()).unwrap();
    let mut n = 0;
    while let Some(fa) = a.next().unwrap() {
        let fb = b.next().unwrap().expect("replica has the frame");
        assert_eq!(fa.raw(), fb.raw(), "frame {} byte-identical", fa.seq());
        n += 1;
    }
    assert!(b.next().unwrap().is_none());
    assert_eq!(n, 61);
    assert_eq!(verify(dst_dir.path(), "md").unwrap().frames, 61);
}
