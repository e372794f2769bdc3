//! Reader::next merging k journals in time order (k = 1, 4, 16, 64), one
//! process, journals pre-written with interleaved write times.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::path::Path;
use std::time::{Duration, Instant};
use tape_benches::temp_dir;
use tape_journal::{AppendOptions, Appender};
use tape_reader::{Reader, ServiceMode, Start};

const FRAMES: u64 = 1 << 20;

fn write(dir: &Path, k: usize) {
    let opts = AppendOptions {
        page_size: 64 << 20,
        ..AppendOptions::default()
    };
    let mut apps: Vec<Appender> = (0..k)
        .map(|i| Appender::create(dir, &format!("j{i}"), opts).unwrap())
        .collect();
    let payload = [7u8; 64];
    for n in 0..FRAMES {
        apps[n as usize % k].write(1, &payload).unwrap();
    }
}

fn reader(dir: &Path, k: usize) -> Reader {
    // A name of its own: a new reader is made while the one it replaces
    // still lives (one live reader of a name per journal).
    static MADE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut r = Reader::builder(&format!("bench-{n}"))
        .service(ServiceMode::Never)
        .start(Start::First)
        .create()
        .unwrap();
    for i in 0..k {
        r.add_journal(dir, &format!("j{i}")).unwrap();
    }
    r
}

fn merge(c: &mut Criterion) {
    let mut g = c.benchmark_group("merge");
    g.throughput(Throughput::Elements(1));
    for k in [1usize, 4, 16, 64] {
        let dir = temp_dir();
        write(dir.path(), k);
        // Correctness first: every frame once, write times never go back.
        let mut r = reader(dir.path(), k);
        let (mut n, mut last) = (0u64, i64::MIN);
        while let Some(f) = r.next().unwrap() {
            assert!(f.time_ns() >= last);
            last = f.time_ns();
            n += 1;
        }
        assert_eq!(n, FRAMES);
        // One reader for as long as it has frames: a new reader starts
        // cold (every journal's first page a miss), which would weigh on the
        // small samples criterion starts with.
        let mut r = reader(dir.path(), k);
        let mut unread = FRAMES;
        g.bench_function(BenchmarkId::new("64B", format!("{k}-journals")), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    if unread == 0 {
                        r = reader(dir.path(), k);
                        unread = FRAMES;
                    }
                    let batch = left.min(unread);
                    let t = Instant::now();
                    for _ in 0..batch {
                        black_box(r.next().unwrap().unwrap().seq());
                    }
                    total += t.elapsed();
                    left -= batch;
                    unread -= batch;
                }
                total
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = merge
}
criterion_main!(benches);
