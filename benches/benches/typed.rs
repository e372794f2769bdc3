//! Criterion benchmarks of typed messages (tape-typed) beside raw bytes:
//!
//! - `typed-write/64B`: a 64-byte frame (the examples' `Tick`) appended as
//!   raw bytes (`write(1, bytes)`; `claim(64)`, copy, the last 8 bytes
//!   set, commit) and as a zero-copy struct (`write_plain(&tick)`;
//!   `claim_plain::<Tick>()`, the struct assigned and its `level` set in
//!   place, commit);
//! - `typed-read/64B`: a 64-byte frame read, one field taken from the raw
//!   payload bytes, and viewed as `&Tick` (type, length and alignment
//!   checked) with the same field taken;
//! - `serde-write/order` and `serde-read/order`: a typical order message
//!   (`Order`, 36 bytes as bincode) through `write_serde` and `decode`,
//!   beside raw bytes of the same length appended and read, and beside
//!   bincode's own `decode_from_slice` (no type check, no limit, no cap on
//!   preallocation), and with the limit `decode` sets for such a payload
//!   (4 KiB).
//!
//! Run with `cargo bench -p tape-benches --bench typed`. Appends go into a
//! page made and pre-faulted before the clock starts (a fresh journal on
//! `/dev/shm` every [`BATCH`] frames, made untimed), so
//! what is timed is the hot path alone. Each bench first checks that what
//! it times is right: frames read back and compared.

use criterion::{black_box, criterion_group, BenchmarkId, Criterion, Throughput};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::{Duration, Instant};
use tape_benches::temp_dir;
use tape_examples::Tick;
use tape_journal::{AppendOptions, Appender, Cursor, CursorOptions, Start};
use tape_typed::{PlainMessage, SerdeMessage, TypedAppend, TypedFrame};
use zerocopy::IntoBytes;

const NAME: &str = "typed";

/// The 64-byte tick of the examples (`tape_examples::Tick`), as its
/// market-data writer sends it.
fn tick(i: u64) -> Tick {
    tape_examples::tick("CME", i)
}

#[derive(Serialize, Deserialize, Debug, PartialEq, Clone, Copy)]
enum Side {
    Buy,
    Sell,
}

#[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
enum Kind {
    Market,
    Limit { px: i64 },
    Stop { trigger: i64, limit: Option<i64> },
}

/// A typical order: ids, a symbol, a side, a price kind, an optional tag.
#[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
struct Order {
    id: u64,
    account: u32,
    sym: String,
    side: Side,
    kind: Kind,
    qty: u32,
    tag: Option<String>,
    client_ns: i64,
}
impl SerdeMessage for Order {
    const TYPE: u32 = 20;
}

fn order(i: u64) -> Order {
    Order {
        id: 1_000_000 + i,
        account: 7,
        sym: "ESZ6".to_string(),
        side: if i % 2 == 0 { Side::Buy } else { Side::Sell },
        kind: Kind::Limit {
            px: 500_000 + (i % 64) as i64,
        },
        qty: 10,
        tag: Some("twap-7".to_string()),
        client_ns: 1_700_000_000_000_000_000 + i as i64,
    }
}

/// Frames of at most 64 bytes that fit one 64 MiB page with room to spare.
const BATCH: u64 = 500_000;

/// A journal appended to across criterion's calls, in one page made and
/// pre-faulted before the clock started (no background thread, no page
/// switch): replaced, untimed, by a fresh one when its page is nearly full.
#[derive(Default)]
struct InPage {
    journal: Option<(tempfile::TempDir, Appender)>,
    used: u64,
}

impl InPage {
    /// Times `iters` calls of `append`.
    fn time(&mut self, iters: u64, mut append: impl FnMut(&mut Appender, u64)) -> Duration {
        let mut left = iters;
        let mut elapsed = Duration::ZERO;
        while left > 0 {
            if self.journal.is_none() || self.used == BATCH {
                self.journal = None;
                let dir = temp_dir();
                let opts = AppendOptions {
                    page_size: 64 << 20,
                    background: false,
                    ..AppendOptions::default()
                };
                let app = Appender::create(dir.path(), NAME, opts).unwrap();
                self.journal = Some((dir, app));
                self.used = 0;
            }
            let (_, app) = self.journal.as_mut().unwrap();
            let n = left.min(BATCH - self.used);
            let start = Instant::now();
            for i in 0..n {
                append(app, i);
            }
            elapsed += start.elapsed();
            assert_eq!(app.page_switches(), 0);
            self.used += n;
            left -= n;
        }
        elapsed
    }
}

/// Times `iters` calls of `read` on the frames of the journal in `dir`,
/// from its start (over again, untimed, when it runs out).
fn time_reads(
    dir: &Path,
    frames: u64,
    iters: u64,
    mut read: impl FnMut(tape_journal::Frame<'_>),
) -> Duration {
    let opts = CursorOptions {
        verify_crc: false,
        populate: true,
    };
    let mut cur = Cursor::open(dir, NAME, Start::First, opts).unwrap();
    let mut left = iters;
    let mut elapsed = Duration::ZERO;
    while left > 0 {
        let n = left.min(frames);
        let start = Instant::now();
        for _ in 0..n {
            read(cur.next().unwrap().unwrap());
        }
        elapsed += start.elapsed();
        left -= n;
        if left > 0 {
            cur = Cursor::open(dir, NAME, Start::First, opts).unwrap();
        }
    }
    elapsed
}

/// Writes `n` frames with `append` into a fresh journal (64 MiB pages).
fn journal_of(n: u64, mut append: impl FnMut(&mut Appender, u64)) -> tempfile::TempDir {
    let dir = temp_dir();
    let opts = AppendOptions {
        page_size: 64 << 20,
        ..AppendOptions::default()
    };
    let mut app = Appender::create(dir.path(), NAME, opts).unwrap();
    for i in 0..n {
        append(&mut app, i);
    }
    dir
}

/// The frames of `dir`, each given to `check`.
fn check_all(dir: &Path, n: u64, mut check: impl FnMut(u64, tape_journal::Frame<'_>)) {
    let opts = CursorOptions {
        verify_crc: true,
        populate: false,
    };
    let mut cur = Cursor::open(dir, NAME, Start::First, opts).unwrap();
    for i in 0..n {
        check(i, cur.next().unwrap().expect("frame missing"));
    }
    assert!(cur.next().unwrap().is_none(), "extra frame");
}

/// The four ways to append a 64-byte tick, each writing `tick(1)` with
/// `level` set to the frame's index (raw ones at its offset, 56).
fn raw_write(app: &mut Appender, _: u64, t: &Tick) -> u64 {
    app.write(Tick::TYPE, black_box(t.as_bytes())).unwrap()
}

fn write_plain(app: &mut Appender, _: u64, t: &Tick) -> u64 {
    app.write_plain(black_box(t)).unwrap()
}

fn raw_claim(app: &mut Appender, i: u64, t: &Tick) -> u64 {
    let mut c = app.claim(64).unwrap();
    c.copy_from_slice(black_box(t.as_bytes()));
    c[56..].copy_from_slice(&i.to_le_bytes());
    c.commit(Tick::TYPE)
}

fn claim_plain(app: &mut Appender, i: u64, t: &Tick) -> u64 {
    let mut c = app.claim_plain::<Tick>().unwrap();
    *c = *black_box(t);
    c.level = i;
    c.commit()
}

type Append = fn(&mut Appender, u64, &Tick) -> u64;

const APPENDS: [(&str, Append, bool); 4] = [
    ("raw-write", raw_write, false),
    ("write_plain", write_plain, false),
    ("raw-claim", raw_claim, true),
    ("claim_plain", claim_plain, true),
];

/// Frames in the journals the read benches read.
const READ_FRAMES: u64 = 1_000_000;

/// Correctness first: every way of writing gives the same frames, and each
/// way of reading gets the values back.
fn check_correctness() {
    let n = 10_000;
    let t = tick(1);
    for (what, append, sets_level) in APPENDS {
        let dir = journal_of(n, |app, i| {
            append(app, i, &t);
        });
        check_all(dir.path(), n, |i, f| {
            let want = Tick {
                level: if sets_level { i } else { t.level },
                ..t
            };
            assert_eq!(f.payload(), want.as_bytes(), "{what}");
            assert_eq!(*f.view::<Tick>().unwrap(), want, "{what}");
        });
    }
    let dir = journal_of(n, |app, i| {
        app.write_serde(&order(i)).unwrap();
    });
    check_all(dir.path(), n, |i, f| {
        let bytes = bincode::serde::encode_to_vec(order(i), bincode::config::standard()).unwrap();
        assert_eq!(f.payload(), &bytes[..]);
        assert_eq!(f.decode::<Order>().unwrap(), order(i));
    });
    eprintln!(
        "correctness: ticks and orders read back whole ({} bytes an order)",
        order_bytes().len()
    );
}

fn order_bytes() -> Vec<u8> {
    bincode::serde::encode_to_vec(order(1), bincode::config::standard()).unwrap()
}

fn typed_write(c: &mut Criterion) {
    let mut g = c.benchmark_group("typed-write");
    g.throughput(Throughput::Elements(1));
    let t = tick(1);
    for (what, append, _) in APPENDS {
        let mut sink = InPage::default();
        g.bench_function(BenchmarkId::new("64B", what), |b| {
            b.iter_custom(|iters| {
                sink.time(iters, |app, i| {
                    black_box(append(app, i, &t));
                })
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("serde-write");
    g.throughput(Throughput::Elements(1));
    let raw = order_bytes();
    let mut sink = InPage::default();
    g.bench_function(BenchmarkId::new("order", "raw-bytes"), |b| {
        b.iter_custom(|iters| {
            sink.time(iters, |app, _| {
                black_box(app.write(Order::TYPE, black_box(&raw)).unwrap());
            })
        })
    });
    let o = order(1);
    let mut sink = InPage::default();
    g.bench_function(BenchmarkId::new("order", "write_serde"), |b| {
        b.iter_custom(|iters| {
            sink.time(iters, |app, _| {
                black_box(app.write_serde(black_box(&o)).unwrap());
            })
        })
    });
    g.finish();
}

fn typed_read(c: &mut Criterion) {
    let ticks = journal_of(READ_FRAMES, |app, i| {
        app.write_plain(&tick(i)).unwrap();
    });
    let mut g = c.benchmark_group("typed-read");
    g.throughput(Throughput::Elements(1));
    g.bench_function(BenchmarkId::new("64B", "raw-bytes"), |b| {
        b.iter_custom(|iters| {
            time_reads(ticks.path(), READ_FRAMES, iters, |f| {
                let p = f.payload();
                black_box(i64::from_le_bytes(p[8..16].try_into().unwrap())); // px
            })
        })
    });
    g.bench_function(BenchmarkId::new("64B", "view"), |b| {
        b.iter_custom(|iters| {
            time_reads(ticks.path(), READ_FRAMES, iters, |f| {
                black_box(f.view::<Tick>().unwrap().px);
            })
        })
    });
    g.finish();

    let orders = journal_of(READ_FRAMES, |app, i| {
        app.write_serde(&order(i)).unwrap();
    });
    let mut g = c.benchmark_group("serde-read");
    g.throughput(Throughput::Elements(1));
    g.bench_function(BenchmarkId::new("order", "raw-bytes"), |b| {
        b.iter_custom(|iters| {
            time_reads(orders.path(), READ_FRAMES, iters, |f| {
                black_box(f.payload());
            })
        })
    });
    fn bincode_alone<C: bincode::config::Config>(f: tape_journal::Frame<'_>, config: C) {
        let (o, _): (Order, usize) =
            bincode::serde::decode_from_slice(f.payload(), config).unwrap();
        black_box(o);
    }
    let standard = bincode::config::standard();
    g.bench_function(BenchmarkId::new("order", "bincode-alone"), |b| {
        b.iter_custom(|iters| {
            time_reads(orders.path(), READ_FRAMES, iters, |f| {
                bincode_alone(f, standard)
            })
        })
    });
    g.bench_function(BenchmarkId::new("order", "bincode-limit"), |b| {
        let limited = standard.with_limit::<4096>();
        b.iter_custom(|iters| {
            time_reads(orders.path(), READ_FRAMES, iters, |f| {
                bincode_alone(f, limited)
            })
        })
    });
    g.bench_function(BenchmarkId::new("order", "decode"), |b| {
        b.iter_custom(|iters| {
            time_reads(orders.path(), READ_FRAMES, iters, |f| {
                black_box(f.decode::<Order>().unwrap());
            })
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = typed_write, typed_read
}

fn main() {
    // `cargo test --benches` runs bench binaries in test mode: check only.
    let test_mode = std::env::args().any(|a| a == "--test");
    check_correctness();
    if test_mode {
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
