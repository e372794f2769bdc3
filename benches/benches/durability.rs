//! What each durability policy (`SyncPolicy`, journal/src/durable.rs)
//! costs the writer, on a disk-backed folder: criterion's append cost of
//! 64-byte frames per policy, then sustained throughput per policy (frames
//! and MB/s, with the syncs the run made).
//!
//! Run with `cargo bench -p tape-benches --bench durability`. Journals are
//! made under `$TAPE_BENCH_DISK`, else `/var/tmp`; the bench refuses a
//! folder on tmpfs or ramfs (`statfs`), where a sync does nothing and the
//! figures would say nothing. Correctness first: each policy's journal
//! reads back whole and its sync count is checked, then it is timed.

use criterion::{black_box, criterion_group, BenchmarkId, Criterion, Throughput};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tape_benches::Sink;
use tape_journal::{AppendOptions, Appender, Cursor, CursorOptions, Start, SyncPolicy};

const NAME: &str = "bench";

/// The disk-backed folder the journals go in.
fn disk_base() -> PathBuf {
    let base = std::env::var_os("TAPE_BENCH_DISK").map_or_else(|| "/var/tmp".into(), PathBuf::from);
    let c = std::ffi::CString::new(base.as_os_str().as_encoded_bytes()).expect("a path");
    // SAFETY: `statfs` is plain old data: all zeros is a valid value.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path and `st` a struct statfs the
    // call writes into, both alive for the call.
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    assert_eq!(
        rc,
        0,
        "statfs {}: {}",
        base.display(),
        std::io::Error::last_os_error()
    );
    const TMPFS: libc::c_long = 0x0102_1994;
    const RAMFS: libc::c_long = 0x8584_58f6;
    let kind = st.f_type as libc::c_long;
    assert!(
        kind != TMPFS && kind != RAMFS,
        "{} is on tmpfs/ramfs, where a sync does nothing: set TAPE_BENCH_DISK to a folder on a disk",
        base.display()
    );
    base
}

fn disk_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("tape-bench-sync-")
        .tempdir_in(disk_base())
        .expect("temporary folder on disk")
}

fn policies() -> [SyncPolicy; 4] {
    [
        SyncPolicy::None,
        SyncPolicy::Page,
        SyncPolicy::Interval(Duration::from_millis(10)),
        SyncPolicy::Interval(Duration::from_millis(1)),
    ]
}

fn options(page_size: u64, sync: SyncPolicy) -> AppendOptions {
    AppendOptions {
        page_size,
        sync,
        ..AppendOptions::default()
    }
}

/// Writes `n` frames of `size` bytes; returns the folder, the syncs made
/// (the close's included) and the pages written.
fn write_journal(
    n: u64,
    size: usize,
    page: u64,
    sync: SyncPolicy,
) -> (tempfile::TempDir, u64, u64) {
    let dir = disk_dir();
    let mut app = Appender::create(dir.path(), NAME, options(page, sync)).unwrap();
    let stats = app.sync_stats().clone();
    let buf = vec![7u8; size];
    for seq in 1..=n {
        assert_eq!(app.write(1, &buf).unwrap(), seq);
    }
    let pages = app.page_switches() + 1;
    drop(app);
    assert_eq!(stats.failures(), 0, "{:?}", stats.last_failure());
    (dir, stats.syncs(), pages)
}

fn check_journal(dir: &Path, n: u64) {
    let opts = CursorOptions {
        verify_crc: true,
        populate: false,
    };
    let mut cur = Cursor::open(dir, NAME, Start::First, opts).unwrap();
    for seq in 1..=n {
        let f = cur.next().unwrap().expect("frame missing");
        assert_eq!(f.seq(), seq);
    }
    assert!(cur.next().unwrap().is_none(), "extra frame");
}

fn check_correctness() {
    for p in policies() {
        let (dir, syncs, pages) = write_journal(100_000, 64, 1 << 20, p);
        check_journal(dir.path(), 100_000);
        match p {
            SyncPolicy::None => assert_eq!(syncs, 0),
            SyncPolicy::Page => assert_eq!(syncs, pages, "one sync per page written"),
            SyncPolicy::Interval(_) => assert!(syncs >= 1),
        }
    }
    eprintln!("correctness: every policy's journal reads back whole; page syncs = pages written");
}

fn append(c: &mut Criterion) {
    let mut g = c.benchmark_group("sync-append");
    g.throughput(Throughput::Elements(1));
    let payload = [1u8; 64];
    for p in policies() {
        let mut sink = Sink::new_in(disk_dir(), options(16 << 20, p));
        g.bench_function(BenchmarkId::new("64B-16MiB-pages", p.to_string()), |b| {
            b.iter_custom(|iters| sink.time_appends(iters, &payload))
        });
        let s = sink.app.sync_stats();
        eprintln!(
            "  {p}: {} syncs, {} folder syncs, {} failures",
            s.syncs(),
            s.dir_syncs(),
            s.failures()
        );
    }
    g.finish();
}

/// Sustained throughput: `n` frames of `size` bytes as fast as they go,
/// per policy, three runs alternating the policies; prints each run and
/// the median.
fn throughput() {
    let runs = 3;
    for (n, size) in [(2_000_000u64, 64usize), (200_000, 1024)] {
        let framed =
            tape_journal::format::align_frame(tape_journal::format::FRAME_HEADER_LEN + size);
        eprintln!(
            "throughput: {n} frames of {size} B ({framed} B in the journal), 16 MiB pages, {}",
            disk_base().display()
        );
        // Each policy with one page made ahead (the default), and the page
        // policy with four: whether the making of pages waits for the
        // syncs (on ext4 both wait for the journal's commits).
        let mut configs: Vec<(String, AppendOptions)> = policies()
            .into_iter()
            .map(|p| (p.to_string(), options(16 << 20, p)))
            .collect();
        configs.insert(
            2,
            (
                "page+4ahead".into(),
                AppendOptions {
                    pages_ahead: 4,
                    ..options(16 << 20, SyncPolicy::Page)
                },
            ),
        );
        // (appends alone, appends + close: everything on disk, syncs)
        let mut results: Vec<Vec<(f64, f64, u64)>> = vec![Vec::new(); configs.len()];
        for _ in 0..runs {
            for (i, (_, o)) in configs.iter().enumerate() {
                let dir = disk_dir();
                let mut app = Appender::create(dir.path(), NAME, *o).unwrap();
                app.wait_pages_ready(Duration::from_secs(10));
                let stats = app.sync_stats().clone();
                let buf = vec![3u8; size];
                let start = Instant::now();
                for _ in 0..n {
                    black_box(app.write(1, &buf).unwrap());
                }
                let appends = start.elapsed().as_secs_f64();
                // With the close: it waits for what is left to sync.
                drop(app);
                let t = start.elapsed().as_secs_f64();
                results[i].push((appends, t, stats.syncs()));
            }
        }
        for (i, (label, _)) in configs.iter().enumerate() {
            let median = |f: fn(&(f64, f64, u64)) -> f64| {
                let mut v: Vec<f64> = results[i].iter().map(f).collect();
                v.sort_by(f64::total_cmp);
                v[v.len() / 2]
            };
            let (appends, total) = (median(|r| r.0), median(|r| r.1));
            let runs: Vec<String> = results[i]
                .iter()
                .map(|r| format!("{:.0}/{:.0}", n as f64 / r.0 / 1e3, n as f64 / r.1 / 1e3))
                .collect();
            let mb = |t: f64| (n * framed as u64) as f64 / t / 1e6;
            eprintln!(
                "  {label:<12} appends {:>5.2} M frames/s {:>5.0} MB/s | with the close {:>5.2} M frames/s {:>5.0} MB/s  ({} syncs; runs, k frames/s appends/with close: {})",
                n as f64 / appends / 1e6,
                mb(appends),
                n as f64 / total / 1e6,
                mb(total),
                results[i][0].2,
                runs.join(" ")
            );
        }
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = append
}

fn main() {
    let test_mode = std::env::args().any(|a| a == "--test");
    check_correctness();
    if test_mode {
        return;
    }
    throughput();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
