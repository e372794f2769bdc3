//! `Reader::wait`: asleep on the journals' doorbells, and on an inotify
//! watch for journals that do not exist yet.

use std::time::Duration;
use tape_journal::{AppendOptions, Appender};
use tape_reader::{Reader, ServiceMode, Start};
use tape_testkit::Watchdog;

fn opts() -> AppendOptions {
    AppendOptions {
        page_size: 1 << 20,
        ..AppendOptions::default()
    }
}

fn reader() -> Reader {
    Reader::builder("wait-test")
        .service(ServiceMode::Never)
        .start(Start::First)
        .create()
        .unwrap()
}

/// A reader started before its journal exists (even before its folder
/// does) sleeps on the folder: it looks for the journal only when a file
/// appears there (a few times: the writer makes its lock, doorbell and
/// first page), never on a timer; and it reads the first frame.
#[test]
fn waits_for_a_journal_that_does_not_exist_yet_without_looking() {
    let _w = Watchdog::new("reader_wait_missing", Duration::from_secs(120));
    let base = tempfile::tempdir().unwrap();
    let dir = base.path().join("journal");
    let mut r = reader();
    r.add_journal(&dir, "late").unwrap();
    let looks_before = r.journal_looks();
    // Two seconds of waiting with nothing there: a poller would look
    // about 200 times (every 10 ms).
    for _ in 0..4 {
        assert!(!r.wait(Duration::from_millis(500)));
    }
    let idle_looks = r.journal_looks() - looks_before;
    assert!(idle_looks <= 2, "{idle_looks} looks while nothing appeared");
    let d2 = dir.clone();
    let writer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        let mut a = Appender::create(&d2, "late", opts()).unwrap();
        a.write(1, b"first").unwrap();
        a
    });
    let mut got = None;
    while got.is_none() {
        assert!(
            r.wait(Duration::from_secs(30)),
            "the first frame did not wake the reader"
        );
        got = r.next().unwrap().map(|f| f.payload().to_vec());
    }
    assert_eq!(got.unwrap(), b"first");
    let looks = r.journal_looks() - looks_before;
    assert!(looks <= 20, "{looks} looks for a journal made once");
    drop(writer.join().unwrap());
}

/// A merge sleeps on all its journals and wakes on any.
#[test]
fn wait_wakes_on_any_journal_of_a_merge() {
    let _w = Watchdog::new("reader_wait_merge", Duration::from_secs(120));
    let dir = tempfile::tempdir().unwrap();
    let mut apps: Vec<Appender> = (0..4)
        .map(|i| Appender::create(dir.path(), &format!("j{i}"), opts()).unwrap())
        .collect();
    let mut r = reader();
    for i in 0..4 {
        r.add_journal(dir.path(), &format!("j{i}")).unwrap();
    }
    assert!(!r.wait(Duration::from_millis(20)));
    for (i, a) in apps.iter_mut().enumerate() {
        a.write(1, format!("from {i}").as_bytes()).unwrap();
        assert!(r.wait(Duration::from_secs(30)));
        let f = r.next().unwrap().unwrap();
        assert_eq!(f.journal, i);
        assert!(r.next().unwrap().is_none());
    }
}

/// CPU time this thread has run, from /proc/thread-self/schedstat (ns).
fn thread_cpu_ns() -> u64 {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").expect("schedstat");
    s.split_whitespace().next().unwrap().parse().unwrap()
}

/// A reader blocked in `wait` on a quiet journal uses under 0.1 % of a
/// core: asleep on the doorbell, not polling (a 20 µs poller would use
/// several per cent here).
#[test]
fn an_idle_blocked_reader_uses_under_a_thousandth_of_a_core() {
    let _w = Watchdog::new("reader_wait_idle_cpu", Duration::from_secs(120));
    let dir = tempfile::tempdir().unwrap();
    let mut a = Appender::create(dir.path(), "quiet", opts()).unwrap();
    a.write(1, b"one").unwrap();
    let mut r = reader();
    r.add_journal(dir.path(), "quiet").unwrap();
    assert!(r.next().unwrap().is_some());
    let span = Duration::from_secs(10);
    let t0 = std::time::Instant::now();
    let cpu0 = thread_cpu_ns();
    while t0.elapsed() < span {
        assert!(
            !r.wait(span.saturating_sub(t0.elapsed())),
            "nothing was written"
        );
    }
    let used = thread_cpu_ns() - cpu0;
    let share = used as f64 / t0.elapsed().as_nanos() as f64;
    assert!(
        share < 0.001,
        "the waiting thread used {:.3} % of a core",
        share * 100.0
    );
    // And it still wakes on the next frame.
    a.write(1, b"two").unwrap();
    assert!(r.wait(Duration::from_secs(30)));
    assert_eq!(r.next().unwrap().unwrap().payload(), b"two");
}
