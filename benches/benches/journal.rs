//! Criterion benchmarks of the raw journal: append and read of 64-byte
//! frames, append of 4 KiB frames, and the cost of page switches.
//!
//! Run with `cargo bench -p tape-benches --bench journal`. Journals are made
//! on `/dev/shm` when it exists (else the default temporary folder), a fresh
//! one per sample, so a run never fills a disk. As rtrb's benches do, every
//! bench first checks that what it times is right (frames read back, counted
//! and compared), then times it.
//!
//! Besides criterion's figures, `switch_latency` prints the distribution of
//! single-append times (an HDR histogram over hundreds of page switches),
//! with the appends that switched pages apart, to show whether a switch is
//! visible on the hot path.

use criterion::{black_box, criterion_group, BenchmarkId, Criterion, Throughput};
use hdrhistogram::Histogram;
use std::path::Path;
use std::time::{Duration, Instant};
use tape_benches::{temp_dir, Sink};
use tape_journal::{AppendOptions, Appender, Cursor, CursorOptions, Start};

const NAME: &str = "bench";

fn options(page_size: u64) -> AppendOptions {
    AppendOptions {
        page_size,
        ..AppendOptions::default()
    }
}

/// Payload of frame `seq`: its bytes are a function of seq, so a reader can
/// check them.
fn payload(seq: u64, buf: &mut [u8]) {
    let b = seq.to_le_bytes();
    for (i, x) in buf.iter_mut().enumerate() {
        *x = b[i & 7] ^ i as u8;
    }
}

/// Writes `n` frames of `size` bytes into a fresh journal and returns it.
fn write_journal(n: u64, size: usize, page_size: u64) -> tempfile::TempDir {
    let dir = temp_dir();
    let mut app = Appender::create(dir.path(), NAME, options(page_size)).unwrap();
    let mut buf = vec![0u8; size];
    for seq in 1..=n {
        payload(seq, &mut buf);
        assert_eq!(app.write(1, &buf).unwrap(), seq);
    }
    dir
}

/// Reads the whole journal back and checks every frame.
fn check_journal(dir: &Path, n: u64, size: usize) {
    let opts = CursorOptions {
        verify_crc: true,
        populate: false,
    };
    let mut cur = Cursor::open(dir, NAME, Start::First, opts).unwrap();
    let mut buf = vec![0u8; size];
    for seq in 1..=n {
        let f = cur.next().unwrap().expect("frame missing");
        payload(seq, &mut buf);
        assert_eq!(f.seq(), seq);
        assert_eq!(f.payload(), &buf[..], "frame {seq}");
    }
    assert!(cur.next().unwrap().is_none(), "extra frame");
}

/// Correctness before timing: what the benches write reads back whole,
/// over page switches (1 MiB pages) and large pages alike.
fn check_correctness() {
    for (n, size, page) in [
        (300_000, 64, 1 << 20),
        (20_000, 4096, 1 << 20),
        (100_000, 64, 64 << 20),
    ] {
        let dir = write_journal(n, size, page);
        check_journal(dir.path(), n, size);
    }
    eprintln!("correctness: frames read back whole and in order");
}

/// Claims on a [`Sink`], beside its appends.
trait Claims {
    fn time_claims(&mut self, iters: u64) -> Duration;
}

impl Claims for Sink {
    /// Times `iters` claims of 64 bytes, each filled and committed.
    fn time_claims(&mut self, iters: u64) -> Duration {
        let start = Instant::now();
        for i in 0..iters {
            let mut claim = self.app.claim(64).unwrap();
            claim[..8].copy_from_slice(&i.to_le_bytes());
            black_box(claim.commit(1));
        }
        let t = start.elapsed();
        self.prune();
        t
    }
}

/// Frames of 64 bytes that fit one 64 MiB page with room to spare.
const HOT_BATCH: u64 = 500_000;

fn append(c: &mut Criterion) {
    let mut g = c.benchmark_group("append");
    g.throughput(Throughput::Elements(1));
    for page_size in [64u64 << 20, 1 << 20] {
        let label = format!("{}MiB-pages", page_size >> 20);
        let mut sink = Sink::new_in(temp_dir(), options(page_size));
        let buf = [0x5Au8; 64];
        g.bench_function(BenchmarkId::new("64B", &label), |b| {
            b.iter_custom(|iters| sink.time_appends(iters, &buf))
        });
    }
    // The hot path alone: appends into a page made and pre-faulted before
    // the clock starts, no switch, no background thread (a fresh journal
    // per batch of at most HOT_BATCH frames, made untimed).
    g.bench_function(BenchmarkId::new("64B", "in-page"), |b| {
        b.iter_custom(|iters| {
            let buf = [0x5Au8; 64];
            let mut left = iters;
            let mut elapsed = Duration::ZERO;
            while left > 0 {
                let n = left.min(HOT_BATCH);
                let dir = temp_dir();
                let opts = AppendOptions {
                    background: false,
                    ..options(64 << 20)
                };
                let mut app = Appender::create(dir.path(), NAME, opts).unwrap();
                let start = Instant::now();
                for _ in 0..n {
                    black_box(app.write(1, black_box(&buf)).unwrap());
                }
                elapsed += start.elapsed();
                assert_eq!(app.page_switches(), 0);
                left -= n;
            }
            elapsed
        })
    });
    let mut sink = Sink::new_in(temp_dir(), options(64 << 20));
    g.bench_function(BenchmarkId::new("64B-claim", "64MiB-pages"), |b| {
        b.iter_custom(|iters| sink.time_claims(iters))
    });
    g.throughput(Throughput::Bytes(4096));
    let mut sink = Sink::new_in(temp_dir(), options(64 << 20));
    let buf = vec![0x5Au8; 4096];
    g.bench_function(BenchmarkId::new("4KiB", "64MiB-pages"), |b| {
        b.iter_custom(|iters| sink.time_appends(iters, &buf))
    });
    g.finish();
}

/// Frames in the journal the read bench reads (224 MB on disk).
const READ_FRAMES: u64 = 2_000_000;

fn read(c: &mut Criterion) {
    let dir = write_journal(READ_FRAMES, 64, 64 << 20);
    check_journal(dir.path(), READ_FRAMES, 64);
    let mut g = c.benchmark_group("read");
    g.throughput(Throughput::Elements(1));
    for (label, verify_crc) in [("64B", false), ("64B-crc", true)] {
        let opts = CursorOptions {
            verify_crc,
            populate: true,
        };
        g.bench_function(BenchmarkId::new(label, "64MiB-pages"), |b| {
            b.iter_custom(|iters| {
                let mut cur = Cursor::open(dir.path(), NAME, Start::First, opts).unwrap();
                let mut left = iters;
                let mut elapsed = Duration::ZERO;
                while left > 0 {
                    let n = left.min(READ_FRAMES);
                    let start = Instant::now();
                    for _ in 0..n {
                        let f = cur.next().unwrap().unwrap();
                        black_box((f.seq(), f.payload()));
                    }
                    elapsed += start.elapsed();
                    left -= n;
                    if left > 0 {
                        // Start over, untimed.
                        cur = Cursor::open(dir.path(), NAME, Start::First, opts).unwrap();
                    }
                }
                elapsed
            })
        });
    }
    g.finish();
}

/// Per-append latency over many page switches, with the switching appends
/// apart: printed, not asserted.
fn switch_latency() {
    // Flat out (the preparer cannot make pages as fast as the writer fills
    // them, so switches wait for it), then paced at 4 M appends/s, a rate
    // the preparer sustains: there a switch is a pointer swap.
    for (page_size, pace_ns) in [
        (1u64 << 20, 0u64),
        (8 << 20, 0),
        (1 << 20, 250),
        (8 << 20, 250),
    ] {
        let dir = temp_dir();
        let mut app = Appender::create(dir.path(), NAME, options(page_size)).unwrap();
        let mut buf = [0u8; 64];
        let mut all = Histogram::<u64>::new(3).unwrap();
        let mut switching = Histogram::<u64>::new(3).unwrap();
        let mut around = Histogram::<u64>::new(3).unwrap();
        let pages = if page_size == 1 << 20 { 200 } else { 30 };
        let mut since_switch = u64::MAX;
        let t0 = Instant::now();
        let mut next = Instant::now();
        while app.page_switches() < pages {
            if pace_ns > 0 {
                while Instant::now() < next {
                    std::hint::spin_loop();
                }
                next += Duration::from_nanos(pace_ns);
            }
            let before = app.page_switches();
            payload(app.next_seq(), &mut buf);
            let start = Instant::now();
            black_box(app.write(1, &buf).unwrap());
            let ns = start.elapsed().as_nanos() as u64;
            all.record(ns.max(1)).unwrap();
            if app.page_switches() != before {
                switching.record(ns.max(1)).unwrap();
                since_switch = 0;
            } else {
                since_switch = since_switch.saturating_add(1);
                if since_switch < 64 {
                    around.record(ns.max(1)).unwrap();
                }
            }
        }
        let wall = t0.elapsed();
        let frames = app.next_seq() - 1;
        drop(app);
        check_journal(dir.path(), frames, 64);
        let q = |h: &Histogram<u64>, p: f64| h.value_at_quantile(p);
        eprintln!(
            "switch latency, {} KiB pages, {}, {frames} appends of 64 B, {pages} switches, {:.1} M appends/s incl. timer:",
            page_size >> 10,
            if pace_ns == 0 { "flat out".to_string() } else { format!("paced every {pace_ns} ns") },
            frames as f64 / wall.as_secs_f64() / 1e6
        );
        eprintln!(
            "  every append       p50 {} ns  p99 {} ns  p99.9 {} ns  p99.99 {} ns  max {} ns",
            q(&all, 0.5),
            q(&all, 0.99),
            q(&all, 0.999),
            q(&all, 0.9999),
            all.max()
        );
        eprintln!(
            "  switching appends  p50 {} ns  p99 {} ns  max {} ns  (n = {})",
            q(&switching, 0.5),
            q(&switching, 0.99),
            switching.max(),
            switching.len()
        );
        eprintln!(
            "  64 appends after   p50 {} ns  p99 {} ns  max {} ns",
            q(&around, 0.5),
            q(&around, 0.99),
            around.max()
        );
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = append, read
}

fn main() {
    // `cargo test --benches` runs bench binaries in test mode: check only.
    let test_mode = std::env::args().any(|a| a == "--test");
    check_correctness();
    if test_mode {
        return;
    }
    switch_latency();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
