//! The doorbell: a reader blocked in `Cursor::wait` or `wait_any` sleeps
//! and is woken by the writer's next frame; no wake-up is ever lost.

use crate::common::{background, PAGE};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tape_journal::{wait_any, Appender, Cursor, CursorOptions, Start};
use tape_testkit::Watchdog;

/// A wait that outlives this means the wake-up was lost: frames here come
/// within microseconds of the reader going to sleep.
const LOST: Duration = Duration::from_secs(20);

fn opts() -> tape_journal::AppendOptions {
    tape_journal::AppendOptions {
        page_size: PAGE,
        ..background()
    }
}

#[test]
fn wait_times_out_without_a_frame_and_wakes_on_one() {
    let _w = Watchdog::new("bell_wait", Duration::from_secs(120));
    let dir = tempfile::tempdir().unwrap();
    let mut a = Appender::create(dir.path(), "md", opts()).unwrap();
    assert!(tape_journal::bell_path(dir.path(), "md").exists());
    let mut c = Cursor::open(dir.path(), "md", Start::First, CursorOptions::default()).unwrap();
    assert!(!c.wait(Duration::from_millis(20)), "no frame yet");
    a.write(1, b"x").unwrap();
    assert!(c.wait(LOST));
    assert_eq!(c.next().unwrap().unwrap().payload(), b"x");
}

/// The writer publishes each frame at a random moment around the reader
/// going to sleep (after the reader has taken the one before: 0–40 µs of
/// spinning, across the reader's last look, its flag, the barrier and the
/// futex call), 100,000 times. A lost wake-up leaves the reader asleep
/// with a frame published: its wait times out and the test fails.
#[test]
fn no_wake_up_is_lost_around_going_to_sleep() {
    let _w = Watchdog::new("bell_race", Duration::from_secs(600));
    const N: u64 = 100_000;
    let dir = tempfile::tempdir().unwrap();
    let mut a = Appender::create(dir.path(), "race", opts()).unwrap();
    let taken = Arc::new(AtomicU64::new(0));
    let t2 = Arc::clone(&taken);
    let writer = std::thread::spawn(move || {
        let mut rng = 0x9E37_79B9_7F4A_7C15u64;
        for seq in 1..=N {
            while t2.load(Ordering::Acquire) < seq - 1 {
                std::hint::spin_loop();
            }
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let until = std::time::Instant::now() + Duration::from_nanos(rng % 40_000);
            while std::time::Instant::now() < until {
                std::hint::spin_loop();
            }
            a.write(1, &seq.to_le_bytes()).unwrap();
        }
        a
    });
    let mut c = Cursor::open(dir.path(), "race", Start::First, CursorOptions::default()).unwrap();
    for seq in 1..=N {
        assert!(c.wait(LOST), "frame {seq}: the wake-up was lost");
        let f = c.next().unwrap().expect("wait said a frame is there");
        assert_eq!(f.seq(), seq);
        taken.store(seq, Ordering::Release);
    }
    writer.join().unwrap();
}

/// A merge waits on all its journals' doorbells at once and wakes on any.
#[test]
fn wait_any_wakes_on_any_journal() {
    let _w = Watchdog::new("bell_any", Duration::from_secs(120));
    let dir = tempfile::tempdir().unwrap();
    let names = ["a", "b", "c"];
    let mut apps: Vec<Appender> = names
        .iter()
        .map(|n| Appender::create(dir.path(), n, opts()).unwrap())
        .collect();
    let mut cursors: Vec<Cursor> = names
        .iter()
        .map(|n| Cursor::open(dir.path(), n, Start::First, CursorOptions::default()).unwrap())
        .collect();
    for (i, app) in apps.iter_mut().enumerate().rev() {
        let done = std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(Duration::from_millis(5));
                app.write(1, names[i].as_bytes()).unwrap();
            });
            let mut refs: Vec<&mut Cursor> = cursors.iter_mut().collect();
            wait_any(&mut refs, LOST)
        });
        assert!(done, "journal {} did not wake the merge", names[i]);
        assert_eq!(
            cursors[i].next().unwrap().unwrap().payload(),
            names[i].as_bytes()
        );
    }
}
