//! Start positions over a multi-page journal.

use crate::common::*;
use tape_journal::{Appender, Cursor, CursorOptions, Start};

const NAME: &str = "md";

/// (seq, time, page) of every frame, as a cursor from the first frame
/// reads them.
fn index(dir: &std::path::Path) -> Vec<(u64, i64, u64)> {
    let mut cur = Cursor::open(dir, NAME, Start::First, CursorOptions::default()).unwrap();
    let mut v = Vec::new();
    // The page a frame is in is known once it is read: the cursor turns
    // the page inside `next`.
    while let Some(f) = cur.next().unwrap() {
        let (seq, time) = (f.seq(), f.time_ns());
        v.push((seq, time, cur.page_state().0));
    }
    v
}

fn first_seq(dir: &std::path::Path, start: Start) -> Option<u64> {
    let mut cur = Cursor::open(dir, NAME, start, CursorOptions::default()).unwrap();
    cur.next().unwrap().map(|f| f.seq())
}

/// `First`, `End`, `Seq(n)` and `Time(t)` over a journal of five pages:
/// the first and last frame, the frames on both sides of every page
/// boundary, before the start and beyond the end; a cursor opened at `End`
/// (or beyond it) sees exactly the frames appended afterwards.
#[test]
fn start_positions_over_pages() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut app = Appender::create(dir, NAME, foreground()).unwrap();
    let mut seq = 0;
    while app.position().0 < 5 {
        seq = app.write(1, &payload(app.next_seq(), 2000)).unwrap();
    }
    // A few frames in the last page, so that its first frame has followers.
    for _ in 0..10 {
        seq = app.write(1, &payload(app.next_seq(), 2000)).unwrap();
    }
    let idx = index(dir);
    assert_eq!(idx.len() as u64, seq);
    let last = seq;
    let pages_first: Vec<usize> = (1..idx.len())
        .filter(|&i| idx[i].2 != idx[i - 1].2)
        .collect();
    assert_eq!(pages_first.len(), 4, "five pages");

    assert_eq!(first_seq(dir, Start::First), Some(1));
    assert_eq!(first_seq(dir, Start::End), None);
    assert_eq!(first_seq(dir, Start::Seq(0)), Some(1));
    assert_eq!(first_seq(dir, Start::Seq(1)), Some(1));
    assert_eq!(first_seq(dir, Start::Seq(last)), Some(last));
    assert_eq!(first_seq(dir, Start::Seq(last + 1)), None);
    assert_eq!(first_seq(dir, Start::Seq(u64::MAX)), None);
    for &i in &pages_first {
        for s in [idx[i - 1].0, idx[i].0, idx[i].0 + 1] {
            assert_eq!(first_seq(dir, Start::Seq(s)), Some(s), "seq {s}");
        }
    }

    // Time: the first frame written at or after t.
    let by_time = |t: i64| idx.iter().find(|e| e.1 >= t).map(|e| e.0);
    let mut times = vec![i64::MIN, 0, idx[0].1, idx[last as usize - 1].1, i64::MAX];
    times.push(idx[last as usize - 1].1 + 1);
    for &i in &pages_first {
        times.extend([idx[i - 1].1, idx[i - 1].1 + 1, idx[i].1, idx[i].1 - 1]);
    }
    for t in times {
        assert_eq!(first_seq(dir, Start::Time(t)), by_time(t), "time {t}");
    }

    // Opened at the end (or beyond it): sees only what comes next.
    let mut at_end = Cursor::open(dir, NAME, Start::End, CursorOptions::default()).unwrap();
    let mut at_next =
        Cursor::open(dir, NAME, Start::Seq(last + 1), CursorOptions::default()).unwrap();
    let after = idx[last as usize - 1].1 + 1;
    let mut at_time =
        Cursor::open(dir, NAME, Start::Time(after), CursorOptions::default()).unwrap();
    assert!(at_end.next().unwrap().is_none());
    let new: Vec<u64> = (0..3)
        .map(|i| {
            // Frames after `after`: the write clock may not have moved yet.
            while i == 0 && tape_journal::clock::now_ns() < after {
                std::hint::spin_loop();
            }
            app.write(9, b"new").unwrap()
        })
        .collect();
    assert_eq!(new, vec![last + 1, last + 2, last + 3]);
    for cur in [&mut at_end, &mut at_next, &mut at_time] {
        let got: Vec<u64> = std::iter::from_fn(|| cur.next().unwrap().map(|f| f.seq())).collect();
        assert_eq!(got, new);
    }
}
