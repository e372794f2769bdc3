//! Retention: `prune` deletes whole old pages by rule, oldest first, never
//! the page with the last frame, never a page a reader or the writer has
//! mapped; readers, `verify`, `stats` and a new writer work on the pruned
//! journal.

use crate::common::*;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tape_journal::{
    prune, stats, verify, Appender, Cursor, CursorOptions, FrameMeta, PruneRule, Start,
};

const NAME: &str = "md";
const PAYLOAD: usize = 1000;

/// A journal whose frames fill `pages` pages and a few frames of one more.
fn journal(dir: &Path, pages: u64) -> u64 {
    let mut app = Appender::create(dir, NAME, foreground()).unwrap();
    while app.position() < (pages + 1, 64 + 3 * 1048) {
        app.write(1, &payload(app.next_seq(), PAYLOAD)).unwrap();
    }
    app.next_seq() - 1
}

fn keep_last(n: u64) -> PruneRule {
    PruneRule {
        keep_last: Some(n),
        ..PruneRule::default()
    }
}

fn on_disk(dir: &Path) -> Vec<u64> {
    tape_journal::list_pages(dir, NAME).unwrap()
}

/// Reads every frame from `start`; checks they are contiguous and returns
/// the first and last sequence numbers.
fn read_range(dir: &Path, start: Start) -> (u64, u64) {
    let mut cur = Cursor::open(dir, NAME, start, CursorOptions::default()).unwrap();
    let first = cur.next().unwrap().expect("a frame").seq();
    let mut last = first;
    while let Some(f) = cur.next().unwrap() {
        assert_eq!(f.seq(), last + 1);
        assert!(f.payload() == &payload(f.seq(), PAYLOAD)[..]);
        last = f.seq();
    }
    (first, last)
}

/// `--keep-last`: the oldest pages go, the journal still reads from its new
/// first page to its end, `verify` and `stats` agree, a reader asking for
/// seq 1 starts at the first frame left, and a new writer continues the
/// sequence. A dry run deletes nothing; keep-last 0 is refused.
#[test]
fn keep_last_deletes_oldest_pages_and_keeps_the_sequence() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let last = journal(dir, 5);
    assert_eq!(on_disk(dir), [1, 2, 3, 4, 5, 6]);

    let dry = prune(dir, NAME, &keep_last(2), true).unwrap();
    assert_eq!(dry.deleted, [1, 2, 3, 4]);
    assert_eq!(on_disk(dir), [1, 2, 3, 4, 5, 6], "a dry run deleted");
    assert_eq!(dry.pages_left, 2);
    assert!(prune(dir, NAME, &keep_last(0), false).is_err());

    let r = prune(dir, NAME, &keep_last(2), false).unwrap();
    assert_eq!((r.deleted.clone(), r.wanted), (vec![1, 2, 3, 4], 4));
    assert!(r.freed_bytes >= 4 * PAGE, "{r:?}");
    assert_eq!((r.in_use, r.pages_left), (None, 2));
    assert_eq!(on_disk(dir), [5, 6]);

    let (first, end) = read_range(dir, Start::First);
    assert_eq!(end, last);
    assert_eq!(read_range(dir, Start::Seq(1)), (first, last));
    assert_eq!(read_range(dir, Start::Seq(first + 1)).0, first + 1);
    let v = verify(dir, NAME).unwrap();
    assert_eq!((v.first_seq, v.last_seq, v.pages), (first, last, 2));
    let s = stats(dir, NAME).unwrap();
    assert_eq!((s.first_page, s.first_seq, s.last_seq), (5, first, last));
    assert_eq!(s.frames, last - first + 1);

    // Nothing more to do; then the writer continues the sequence.
    assert!(prune(dir, NAME, &keep_last(2), false)
        .unwrap()
        .deleted
        .is_empty());
    let mut app = Appender::create(dir, NAME, foreground()).unwrap();
    assert_eq!(app.write(1, &payload(last + 1, PAYLOAD)).unwrap(), last + 1);
    drop(app);
    assert_eq!(read_range(dir, Start::First), (first, last + 1));
}

/// No rule can take the page with the last frame, nor the pages after it:
/// not when spares were made ahead, not when the tail sits at the start of
/// a page after an end-of-page marker (the last frame is then in the page
/// before). The writer reopens after the most eager prune and continues.
#[test]
fn the_page_with_the_last_frame_is_always_kept() {
    let everything = PruneRule {
        keep_last: Some(1),
        older_than: Some(Duration::ZERO),
        max_size: Some(0),
    };
    // Spares made ahead by the background preparer.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut app = Appender::create(dir, NAME, background()).unwrap();
    let deadline = Deadline::secs(60);
    while app.page_switches() < 3 {
        app.write(1, &payload(app.next_seq(), PAYLOAD)).unwrap();
    }
    while !app.next_page_ready() {
        deadline.check("concurrent prune");
        std::thread::sleep(Duration::from_millis(1));
    }
    let (cur, _) = app.position();
    let last = app.next_seq() - 1;
    let r = prune(dir, NAME, &everything, false).unwrap();
    assert_eq!(r.deleted, (1..cur).collect::<Vec<_>>());
    assert_eq!(on_disk(dir), [cur, cur + 1]);
    assert_eq!(read_range(dir, Start::First).1, last);
    assert_eq!(app.write(1, &payload(last + 1, PAYLOAD)).unwrap(), last + 1);
    drop(app);

    // The tail right after an end-of-page marker.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let last = journal(dir, 3);
    let mut app = Appender::create(dir, NAME, foreground()).unwrap();
    let (no, tail) = app.position();
    drop(app);
    // As a writer cut off right after its page switch leaves it: the
    // marker, and the next page made with no frame in it.
    let bytes = std::fs::read(page_file(dir, NAME, no)).unwrap();
    assert_eq!(&bytes[tail..tail + 4], &[0; 4]);
    pwrite(
        &page_file(dir, NAME, no),
        tail as u64,
        &u32::MAX.to_le_bytes(),
    );
    let mut next = bytes.clone();
    next[24..32].copy_from_slice(&(no + 1).to_le_bytes());
    next[64..].fill(0);
    std::fs::write(page_file(dir, NAME, no + 1), &next).unwrap();
    let r = prune(dir, NAME, &everything, false).unwrap();
    assert_eq!(r.deleted, (1..no).collect::<Vec<_>>(), "{r:?}");
    assert_eq!(on_disk(dir), [no, no + 1]);
    app = Appender::create(dir, NAME, foreground()).unwrap();
    assert_eq!(app.position(), (no + 1, 64));
    assert_eq!(app.next_seq(), last + 1, "the sequence survives");
    app.write(1, &payload(last + 1, PAYLOAD)).unwrap();
    drop(app);
    assert_eq!(read_range(dir, Start::First).1, last + 1);
    verify(dir, NAME).unwrap();
}

/// `older_than` judges a page by the first frame of the page after it (no
/// frame of a page is newer); `max_size` deletes oldest pages until the
/// files fit. Times set by hand through `write_replica`: page k's frames
/// are 10 - k hours old.
#[test]
fn older_than_and_max_size() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let hour = 3_600_000_000_000i64;
    let now = tape_journal::clock::now_ns();
    let mut app = Appender::create(dir, NAME, foreground()).unwrap();
    let mut seq = 1;
    while app.position().0 < 7 {
        let page = app.position().0 as i64;
        // A frame that would not fit any more goes to the next page, with
        // that page's time: compute the page it lands on first.
        let fits = app.position().1 + 1048 + 8 <= PAGE as usize;
        let lands = if fits { page } else { page + 1 };
        let time = now - (10 - lands) * hour;
        app.write_replica(seq, time, &FrameMeta::default(), &payload(seq, PAYLOAD))
            .unwrap();
        seq += 1;
    }
    drop(app);
    assert_eq!(on_disk(dir), [1, 2, 3, 4, 5, 6, 7]);
    let older = |h: u64| PruneRule {
        older_than: Some(Duration::from_secs(h * 3600)),
        ..PruneRule::default()
    };
    // Page 1 (its next page starts 8 h ago) and page 2 (next: 7 h ago)
    // are older than 6.5 h; page 3's next page starts 6 h ago.
    let r = prune(
        dir,
        NAME,
        &PruneRule {
            older_than: Some(Duration::from_secs(6 * 3600 + 1800)),
            ..PruneRule::default()
        },
        false,
    )
    .unwrap();
    assert_eq!(r.deleted, [1, 2]);
    assert!(prune(dir, NAME, &older(20), false)
        .unwrap()
        .deleted
        .is_empty());
    // Files are fully allocated: five pages of 1 MiB; keep 2.5 MiB.
    let r = prune(
        dir,
        NAME,
        &PruneRule {
            max_size: Some(PAGE * 5 / 2),
            ..PruneRule::default()
        },
        false,
    )
    .unwrap();
    assert_eq!(r.deleted, [3, 4, 5]);
    assert!(r.bytes_left <= PAGE * 5 / 2, "{r:?}");
    assert_eq!(on_disk(dir), [6, 7]);
    verify(dir, NAME).unwrap();
}

/// A cursor that reads page 2 keeps page 2 and every later page: prune
/// stops there and names this process as the holder. Once the cursor has
/// moved on (and dropped the pages behind it), they go.
#[test]
fn prune_stops_at_a_page_a_reader_has_mapped() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let last = journal(dir, 5);
    let mut cur = Cursor::open(dir, NAME, Start::First, CursorOptions::default()).unwrap();
    let mut seen = 0;
    while cur.page_state().0 < 2 {
        seen = cur.next().unwrap().expect("frames").seq();
    }
    let r = prune(dir, NAME, &keep_last(1), false).unwrap();
    assert_eq!(r.deleted, [1]);
    let busy = r.in_use.expect("page 2 is in use");
    assert_eq!(busy.page_no, 2);
    assert!(busy.pids.contains(&std::process::id()), "{busy:?}");
    assert_eq!(on_disk(dir), [2, 3, 4, 5, 6]);
    // The next page mapped ahead is held too, and kept anyway.
    assert!(cur.prefetch().unwrap());
    while let Some(f) = cur.next().unwrap() {
        assert_eq!(f.seq(), seen + 1);
        seen = f.seq();
        if cur.page_state().0 == 4 {
            break;
        }
    }
    let r = prune(dir, NAME, &keep_last(1), false).unwrap();
    assert_eq!(r.deleted, [2, 3]);
    assert_eq!(r.in_use.map(|u| u.page_no), Some(4));
    while let Some(f) = cur.next().unwrap() {
        assert_eq!(f.seq(), seen + 1);
        seen = f.seq();
    }
    assert_eq!(seen, last);
    drop(cur);
    let r = prune(dir, NAME, &keep_last(1), false).unwrap();
    assert_eq!(r.deleted, [4, 5]);
    assert_eq!(on_disk(dir), [6]);
}

/// A writer appends with its background preparer, one reader follows from
/// the first frame, two pruners delete everything they may (keep-last 1)
/// in a loop, and `stats`, `verify` and freshly opened cursors run
/// meanwhile: the following reader sees every frame exactly once, nobody
/// fails, and pages were really deleted while it ran.
#[test]
fn concurrent_prune_never_takes_a_frame_from_a_reader() {
    const FRAMES: u64 = 40_000;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let deadline = Deadline::secs(120);
    let mut app = Appender::create(&dir, NAME, background()).unwrap();
    app.write(1, &payload(1, PAYLOAD)).unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let deleted = Arc::new(AtomicU64::new(0));
    // Opened before any prune runs, so it must see frame 1 and on.
    let mut cur = Cursor::open(&dir, NAME, Start::First, CursorOptions::default()).unwrap();
    let reader = {
        std::thread::spawn(move || {
            let mut seen = 0u64;
            while seen < FRAMES {
                match cur.next().unwrap() {
                    Some(f) => {
                        assert_eq!(f.seq(), seen + 1, "a frame lost or twice");
                        assert!(f.payload() == &payload(f.seq(), PAYLOAD)[..]);
                        seen += 1;
                    }
                    None => std::thread::yield_now(),
                }
            }
            seen
        })
    };
    let pruners: Vec<_> = (0..2)
        .map(|_| {
            let (dir, done, deleted) = (dir.clone(), done.clone(), deleted.clone());
            std::thread::spawn(move || {
                while !done.load(Ordering::Acquire) {
                    let r = prune(&dir, NAME, &keep_last(1), false).expect("prune");
                    deleted.fetch_add(r.deleted.len() as u64, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(1));
                }
            })
        })
        .collect();
    let lookers = {
        let (dir, done) = (dir.clone(), done.clone());
        std::thread::spawn(move || {
            let mut n = 0;
            while !done.load(Ordering::Acquire) {
                stats(&dir, NAME).expect("stats during prune");
                verify(&dir, NAME).expect("verify during prune");
                let mut c = Cursor::open(&dir, NAME, Start::First, CursorOptions::default())
                    .expect("a cursor opened during prune");
                let first = c.next().unwrap().expect("a frame").seq();
                if let Some(f) = c.next().unwrap() {
                    assert_eq!(f.seq(), first + 1);
                }
                n += 1;
            }
            n
        })
    };
    for seq in 2..=FRAMES {
        app.write(1, &payload(seq, PAYLOAD)).unwrap();
        if seq % 1000 == 0 {
            deadline.check("concurrent prune");
        }
    }
    let seen = reader.join().expect("reader");
    done.store(true, Ordering::Release);
    for p in pruners {
        p.join().expect("pruner");
    }
    let looked = lookers.join().expect("lookers");
    assert_eq!(seen, FRAMES);
    assert!(looked > 0);
    let pages = app.position().0;
    assert!(pages > 20, "{pages} pages");
    assert!(
        deleted.load(Ordering::Relaxed) > 0,
        "the pruners never deleted a page"
    );
    drop(app);
    let v = verify(&dir, NAME).unwrap();
    assert_eq!(v.last_seq, FRAMES);
}
