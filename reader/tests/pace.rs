//! A paced Reader ([`ReaderBuilder::paced`]): recorded journals read at
//! their own pace (or a multiple of it) without copying them. Each frame
//! is handed out no earlier than its recorded offset from the first one
//! divided by the speed; the timing asserts are on the median over the
//! frames (a shared, noisy VM).

use std::path::Path;
use std::time::{Duration, Instant};
use tape_journal::{AppendOptions, Appender, FrameMeta};
use tape_reader::{monotonic_ns, Reader, ServiceMode, Speed, Start};

/// Records `times` (ns) into journal `name` of `dir`, payload = index.
fn record(dir: &Path, name: &str, times: &[i64]) {
    let opts = AppendOptions {
        page_size: 1 << 20,
        ..AppendOptions::default()
    };
    let mut a = Appender::create(dir, name, opts).unwrap();
    for (i, t) in times.iter().enumerate() {
        a.write_replica(
            i as u64 + 1,
            *t,
            &FrameMeta::default(),
            &(i as u64).to_le_bytes(),
        )
        .unwrap();
    }
}

fn paced(dir: &Path, names: &[&str], speed: Speed) -> Reader {
    let mut r = Reader::builder("paced")
        .service(ServiceMode::Never)
        .start(Start::First)
        .paced(speed)
        .create()
        .unwrap();
    for n in names {
        r.add_journal(dir, n).unwrap();
    }
    r
}

/// Reads everything with next() and wait(); returns (arrival, time_ns).
fn read_all(r: &mut Reader, n: usize) -> Vec<(Instant, i64)> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut got = Vec::new();
    while got.len() < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} frames",
            got.len()
        );
        match r.next().unwrap() {
            Some(f) => got.push((Instant::now(), f.time_ns())),
            None => {
                r.wait(Duration::from_millis(100));
            }
        }
    }
    assert!(r.next().unwrap().is_none());
    got
}

fn median_error_ns(got: &[(Instant, i64)], speed: f64) -> f64 {
    let (a0, t0) = got[0];
    let mut errs: Vec<f64> = got[1..]
        .iter()
        .map(|(a, t)| {
            let off = a.duration_since(a0).as_nanos() as f64;
            (off - (t - t0) as f64 / speed).abs()
        })
        .collect();
    errs.sort_by(f64::total_cmp);
    errs[errs.len() / 2]
}

/// Gaps of 10 ms, 50 ms, 0 from an hour ago.
fn gapped(n: usize) -> Vec<i64> {
    let gaps = [10_000_000i64, 50_000_000, 0];
    let mut t = tape_journal::clock::now_ns() - 3_600_000_000_000;
    (0..n)
        .map(|i| {
            if i > 0 {
                t += gaps[(i - 1) % 3];
            }
            t
        })
        .collect()
}

#[test]
fn a_paced_reader_hands_frames_out_at_the_recorded_pace() {
    let dir = tempfile::tempdir().unwrap();
    let times = gapped(31);
    record(dir.path(), "md", &times);
    for (speed, limit) in [(1.0, 1e6), (10.0, 0.2e6)] {
        let mut r = paced(dir.path(), &["md"], Speed::Times(speed));
        let got = read_all(&mut r, times.len());
        let med = median_error_ns(&got, speed);
        eprintln!("speed {speed}: median offset error {:.1} µs", med / 1e3);
        assert!(med <= limit, "speed {speed}: median error {med} ns");
        let seen: Vec<i64> = got.iter().map(|g| g.1).collect();
        assert_eq!(seen, times);
    }
}

#[test]
fn a_paced_merge_of_journals_keeps_time_order_and_pace() {
    let dir = tempfile::tempdir().unwrap();
    let times = gapped(40);
    let (a, b): (Vec<_>, Vec<_>) = times.iter().enumerate().partition(|(i, _)| i % 3 == 0);
    let a: Vec<i64> = a.into_iter().map(|x| *x.1).collect();
    let b: Vec<i64> = b.into_iter().map(|x| *x.1).collect();
    record(dir.path(), "a", &a);
    record(dir.path(), "b", &b);
    let mut r = paced(dir.path(), &["a", "b"], Speed::Times(10.0));
    let got = read_all(&mut r, times.len());
    let seen: Vec<i64> = got.iter().map(|g| g.1).collect();
    assert_eq!(seen, times, "merged in time order");
    let med = median_error_ns(&got, 10.0);
    assert!(med <= 0.2e6, "median error {med} ns");
}

#[test]
fn a_frame_not_due_is_not_handed_out_and_says_when_it_will_be() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = tape_journal::clock::now_ns() - 7_200_000_000_000;
    let hour = 3_600_000_000_000;
    record(dir.path(), "md", &[t0, t0 + hour]);
    let mut r = paced(dir.path(), &["md"], Speed::Times(1.0));
    assert_eq!(r.next_time().unwrap(), Some(t0));
    assert_eq!(r.next().unwrap().map(|f| f.time_ns()), Some(t0));
    // The second frame is an hour away: not handed out, waited for no
    // longer than asked.
    assert!(r.next().unwrap().is_none());
    assert_eq!(r.next_time().unwrap(), Some(t0 + hour));
    let left = r.due_in().unwrap().expect("a frame is waiting");
    assert!(left > Duration::from_secs(3500), "{left:?}");
    let before = monotonic_ns();
    assert!(!r.wait(Duration::from_millis(20)), "not due within 20 ms");
    assert!(monotonic_ns() - before >= 20_000_000, "wait returned early");
    assert!(r.next().unwrap().is_none());
    // Max speed: at once. (One live reader of a name per journal: the
    // one before goes first.)
    drop(r);
    let mut r = paced(dir.path(), &["md"], Speed::Max);
    assert!(r.next().unwrap().is_some());
    assert_eq!(r.due_in().unwrap(), Some(Duration::ZERO));
    assert!(r.next().unwrap().is_some());
    assert_eq!(r.due_in().unwrap(), None);
    // Ten thousand times faster: the hour is 0.36 s.
    drop(r);
    let mut r = paced(dir.path(), &["md"], Speed::Times(10_000.0));
    let start = Instant::now();
    let got = read_all(&mut r, 2);
    let took = got[1].0.duration_since(start);
    assert!(took >= Duration::from_millis(360), "{took:?}");
}
