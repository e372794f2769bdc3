//! tape over NATS JetStream beside the bare engine, through one local
//! `nats-server -js` (started here on a free port and a temporary store).
//!
//! - **throughput**: N 64-byte frames written as fast as one writer can
//!   on root A while `export()` and `import()` (the library behind `tape
//!   nats export|import`) carry them to root B; frames/s until the replica
//!   holds the last. Beside it, bare async-nats: a publisher with the
//!   `Nats-Expected-Last-Sequence` header and pipelined acks (window
//!   4096, one wildcard reply subscription) and a push consumer on a
//!   second connection, the same N 64-byte messages.
//! - **catch-up**: the import stopped while 1,000,000 frames are exported,
//!   then started: frames/s until the replica holds them all.
//! - **latency**: one 64-byte frame every 100 µs, bare and tape taking
//!   turns of 500 frames in one phase (20 turns each), so that both meet
//!   the same moods of the host; tape: source write time (kept in the
//!   replica) to the replica's cursor seeing it; bare: publish time (in
//!   the payload) to the consumer receiving it. tape `--busy-poll` in a
//!   phase of its own after it.
//!
//! Each phase starts on an empty server (the streams of the phases before
//! it deleted).
//!
//! Every phase checks that every frame arrived once, in order.
//!
//! ```sh
//! cargo bench -p tape-benches --bench nats              # 5 runs, medians
//! NATS_BENCH_RUNS=1 cargo bench -p tape-benches --bench nats
//! ```

use futures_util::StreamExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tape_benches::NatsServer;
use tape_journal::{Cursor, CursorOptions, Start};
use tape_nats::{api, Server};

const SIZE: usize = 64;
const N: u64 = 300_000;
/// The latency phase: 20 turns of 500 frames each for bare and for tape,
/// one frame every 100 µs (2 s in all).
const LAT_SEGMENTS: u64 = 20;
const LAT_PER: u64 = 500;

/// The benchmark's own nats-server, ready once JetStream answers.
fn engine() -> NatsServer {
    let rt = rt();
    NatsServer::start(|url| {
        rt.block_on(async {
            let c = async_nats::connect(url).await.ok()?;
            api::streams(&c, "X").await.ok()
        })
        .is_some()
    })
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

fn shm() -> tempfile::TempDir {
    tempfile::tempdir_in("/dev/shm").unwrap_or_else(|_| tempfile::tempdir().unwrap())
}

fn wait_seq(dir: &std::path::Path, name: &str, n: u64) {
    let t = Instant::now();
    while tape_journal::stats(dir, name).map_or(0, |s| s.last_seq) < n {
        assert!(t.elapsed() < Duration::from_secs(300), "replica stalled");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn check_replica(dir: &std::path::Path, name: &str, n: u64) {
    let mut c = Cursor::open(
        dir,
        name,
        Start::First,
        CursorOptions {
            verify_crc: true,
            populate: false,
        },
    )
    .unwrap();
    let mut k = 0;
    while let Some(f) = c.next().unwrap() {
        k += 1;
        assert_eq!(f.seq(), k, "replica seq");
    }
    assert_eq!(k, n, "frames in the replica (lost)");
}

/// Bare async-nats's two ends: a publisher with the expected-last-seq
/// header and pipelined acks (window 4096, one wildcard reply
/// subscription), and a push consumer on a second connection.
struct Bare {
    rt: tokio::runtime::Runtime,
    pubc: async_nats::Client,
    subc: async_nats::Client,
    subject: async_nats::Subject,
    ack_inbox: String,
    acked: Arc<AtomicU64>,
    sub: Option<async_nats::Subscriber>,
    seq: u64,
}

impl Bare {
    fn new(port: u16) -> Bare {
        let url = format!("nats://127.0.0.1:{port}");
        let rt = rt();
        let stream = format!("BARE{}", tape_journal::clock::now_ns());
        let subject = format!("bare.{stream}");
        let (pubc, subc) = rt.block_on(async {
            let o = || async_nats::ConnectOptions::new().subscription_capacity(1 << 17);
            let p = o().connect(&url).await.unwrap();
            let s = o().connect(&url).await.unwrap();
            api::create_stream(&p, &stream, &subject, "bare", &Default::default())
                .await
                .unwrap();
            (p, s)
        });
        let inbox = subc.new_inbox();
        let sub = rt.block_on(subc.subscribe(inbox.clone())).unwrap();
        rt.block_on(api::push_consumer(
            &subc,
            &stream,
            &inbox,
            None,
            Duration::from_secs(1),
            Duration::from_secs(5),
        ))
        .unwrap();
        let acked = Arc::new(AtomicU64::new(0));
        let ack_inbox = pubc.new_inbox();
        let mut acks = rt
            .block_on(pubc.subscribe(format!("{ack_inbox}.*")))
            .unwrap();
        let a2 = Arc::clone(&acked);
        rt.spawn(async move {
            while let Some(m) = acks.next().await {
                if let Some(s) = m
                    .subject
                    .rsplit('.')
                    .next()
                    .and_then(|s| s.parse::<u64>().ok())
                {
                    a2.fetch_max(s, Ordering::AcqRel);
                }
            }
        });
        Bare {
            rt,
            pubc,
            subc,
            subject: subject.into(),
            ack_inbox,
            acked,
            sub: Some(sub),
            seq: 0,
        }
    }

    /// Publishes the next message, its publish time in its first 8 bytes
    /// (waiting while 4096 are unacknowledged).
    fn publish(&mut self) {
        self.seq += 1;
        let seq = self.seq;
        let mut idle = tape_nats::Poller::new();
        while seq - 1 - self.acked.load(Ordering::Acquire) >= 4096 {
            idle.idle();
        }
        let mut body = vec![0u8; SIZE];
        body[..8].copy_from_slice(&tape_journal::clock::now_ns().to_le_bytes());
        let mut h = async_nats::HeaderMap::new();
        h.insert(
            "Nats-Expected-Last-Sequence",
            (seq - 1).to_string().as_str(),
        );
        let reply = async_nats::Subject::from(format!("{}.{seq}", self.ack_inbox));
        self.rt
            .block_on(self.pubc.publish_with_reply_and_headers(
                self.subject.clone(),
                reply,
                h,
                body.into(),
            ))
            .unwrap();
    }

    /// A thread that receives the next `n` messages, checking each one's
    /// stream sequence; with `paced`, their one-way latencies in ns.
    fn consumer(&mut self, n: u64, paced: bool) -> std::thread::JoinHandle<Vec<u64>> {
        let handle = self.rt.handle().clone();
        let subc = self.subc.clone();
        let mut sub = self.sub.take().expect("one consumer");
        std::thread::spawn(move || {
            let mut lat = Vec::new();
            let probing = paced && std::env::var_os("NATS_BENCH_PROBE").is_some();
            let mut split: (Vec<u64>, Vec<u64>) = (Vec::new(), Vec::new());
            let mut got = 0u64;
            while got < n {
                let m = handle.block_on(sub.next()).unwrap();
                if m.status.is_some() {
                    if let Some(r) = m.reply {
                        handle
                            .block_on(subc.publish(r, bytes::Bytes::new()))
                            .unwrap();
                    }
                    continue;
                }
                let now = tape_journal::clock::now_ns();
                let reply = m.reply.as_deref().unwrap();
                let (sseq, _) = api::delivery_info(reply).unwrap();
                assert_eq!(sseq, got + 1, "bare: lost or out of order");
                got += 1;
                if paced {
                    let t = i64::from_le_bytes(m.payload[..8].try_into().unwrap());
                    lat.push((now - t).max(0) as u64);
                    if probing {
                        let stored: i64 = reply.split('.').nth(7).unwrap().parse().unwrap();
                        split.0.push((stored - t).max(0) as u64);
                        split.1.push((now - stored).max(0) as u64);
                    }
                }
            }
            if probing {
                eprintln!(
                    "  probe: bare publish->stored p50 {:.0} us, stored->consumer p50 {:.0} us",
                    pct(&mut split.0, 0.5) as f64 / 1e3,
                    pct(&mut split.1, 0.5) as f64 / 1e3
                );
            }
            lat
        })
    }
}

/// Bare throughput: frames/s of `n` messages published as fast as the
/// window lets, until the consumer has the last.
fn bare(port: u16, n: u64) -> f64 {
    let mut b = Bare::new(port);
    let start = Instant::now();
    let consumer = b.consumer(n, false);
    for _ in 0..n {
        b.publish();
    }
    consumer.join().unwrap();
    n as f64 / start.elapsed().as_secs_f64()
}

struct Tape {
    a: tempfile::TempDir,
    b: tempfile::TempDir,
    _sa: tape_service::Service,
    _sb: tape_service::Service,
}

fn tape_sides() -> Tape {
    let a = shm();
    let b = shm();
    let _sa = tape_service::Service::start(a.path()).unwrap();
    let _sb = tape_service::Service::start(b.path()).unwrap();
    Tape { a, b, _sa, _sb }
}

fn spawn_export(
    t: &Tape,
    port: u16,
    name: &str,
    busy: bool,
) -> (Arc<AtomicBool>, std::thread::JoinHandle<()>) {
    let stop = Arc::new(AtomicBool::new(false));
    let mut o = tape_nats::ExportOptions::new(
        t.a.path(),
        Server::resolve(
            Some(&format!("nats://127.0.0.1:{port}")),
            Default::default(),
        ),
    );
    o.journals = vec![name.into()];
    o.busy_poll = busy;
    o.log = tape_nats::quiet_log();
    let s = Arc::clone(&stop);
    (
        stop,
        std::thread::spawn(move || tape_nats::export(&o, &s).unwrap()),
    )
}

fn spawn_import(t: &Tape, port: u16, name: &str) -> (Arc<AtomicBool>, std::thread::JoinHandle<()>) {
    let rt = rt();
    let c = rt
        .block_on(async_nats::connect(format!("nats://127.0.0.1:{port}")))
        .unwrap();
    let stream = tape_nats::names::stream_of(name);
    while rt
        .block_on(api::stream_info(&c, &stream))
        .unwrap()
        .is_none()
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let mut o = tape_nats::ImportOptions::new(
        t.b.path(),
        Server::resolve(
            Some(&format!("nats://127.0.0.1:{port}")),
            Default::default(),
        ),
    );
    o.journals = vec![(name.into(), name.into())];
    o.log = tape_nats::quiet_log();
    let s = Arc::clone(&stop);
    (
        stop,
        std::thread::spawn(move || tape_nats::import(&o, &s).unwrap()),
    )
}

fn writer(t: &Tape, name: &str) -> tape_writer::Writer {
    tape_writer::Writer::builder(name)
        .root(t.a.path())
        .page_size(64 << 20)
        .create()
        .unwrap()
}

/// tape's path: a writer on root A, `export()` and `import()` (the library
/// behind `tape nats export|import`) carrying its frames to a replica on
/// root B. The first frame is through when it is made.
struct Live {
    t: Tape,
    name: String,
    w: tape_writer::Writer,
    ex: (Arc<AtomicBool>, std::thread::JoinHandle<()>),
    im: (Arc<AtomicBool>, std::thread::JoinHandle<()>),
}

impl Live {
    fn new(port: u16, busy: bool) -> Live {
        static K: AtomicU64 = AtomicU64::new(0);
        let t = tape_sides();
        let name = format!("md{}", K.fetch_add(1, Ordering::Relaxed));
        let mut w = writer(&t, &name);
        w.write(1, &[0u8; SIZE]).unwrap();
        let ex = spawn_export(&t, port, &name, busy);
        let im = spawn_import(&t, port, &name);
        wait_seq(&tape_journal::journal_dir(t.b.path()), &name, 1);
        Live { t, name, w, ex, im }
    }

    /// A thread that reads the replica's next `n` frames (after the
    /// first) as a strategy reads it: awake for AWAKE after a frame
    /// (yielding its core), asleep on the journal's doorbell after. With
    /// `paced`, each frame's source write time (kept in the replica) to
    /// the moment the reader sees it, in ns.
    fn reader(&self, n: u64, paced: bool) -> std::thread::JoinHandle<Vec<u64>> {
        let bdir = tape_journal::journal_dir(self.t.b.path());
        let name = self.name.clone();
        std::thread::spawn(move || {
            let mut lat = Vec::new();
            let mut c =
                Cursor::open(&bdir, &name, Start::Seq(2), CursorOptions::default()).unwrap();
            let (mut seen, total) = (1u64, n + 1);
            let mut idle = tape_journal::Idle::awake(64, tape_journal::AWAKE);
            while seen < total {
                if let Some(f) = c.next().unwrap() {
                    let now = tape_journal::clock::now_ns();
                    seen += 1;
                    assert_eq!(f.seq(), seen, "tape: lost or out of order");
                    if paced {
                        lat.push((now - f.time_ns()).max(0) as u64);
                    }
                    idle.reset();
                } else if idle.is_parking() {
                    c.wait(Duration::from_millis(100));
                    idle.reset();
                } else {
                    idle.idle();
                }
            }
            lat
        })
    }

    fn write(&mut self) {
        self.w.write(1, &[7u8; SIZE]).unwrap();
    }

    /// Checks every frame of the replica (`n` after the first) and stops
    /// the export and the import.
    fn finish(self, n: u64) {
        check_replica(
            &tape_journal::journal_dir(self.t.b.path()),
            &self.name,
            n + 1,
        );
        for (s, h) in [self.ex, self.im] {
            s.store(true, Ordering::Release);
            h.join().unwrap();
        }
    }
}

/// tape: writes n frames (paced or not) while export and import run;
/// frames/s until the replica's reader has the last, and the latencies
/// when paced.
fn tape_live(port: u16, n: u64, pace: Option<Duration>, busy: bool) -> (f64, Vec<u64>) {
    let mut live = Live::new(port, busy);
    let probe = pace
        .filter(|_| std::env::var_os("NATS_BENCH_PROBE").is_some())
        .map(|_| probe(port, &live.name, n + 1));
    let start = Instant::now();
    let reader = live.reader(n, pace.is_some());
    tape_nats::low_timer_slack();
    let mut next_at = Instant::now();
    for _ in 0..n {
        if let Some(p) = pace {
            wait_until(next_at);
            next_at += p;
        }
        live.write();
    }
    let lat = reader.join().unwrap();
    let secs = start.elapsed().as_secs_f64();
    if let Some(p) = probe {
        let (mut a, mut b) = p.join().unwrap();
        eprintln!(
            "  probe: write->stored p50 {:.0} us, stored->consumer p50 {:.0} us, write->replica reader p50 {:.0} us",
            pct(&mut a, 0.5) as f64 / 1e3,
            pct(&mut b, 0.5) as f64 / 1e3,
            pct(&mut lat.clone(), 0.5) as f64 / 1e3
        );
    }
    live.finish(n);
    (n as f64 / secs, lat)
}

/// One-way latency of bare JetStream and of tape in one phase: one
/// 64-byte message every `pace`, taking turns in segments of `per`
/// (bare's `per`, then tape's `per`, ...), so that both meet the same
/// moods of the host (whose vCPUs change speed every few seconds) and
/// neither runs while the other is measured. Returns (bare, tape), in ns.
fn latency(port: u16, segments: u64, per: u64, pace: Duration) -> (Vec<u64>, Vec<u64>) {
    let mut bare = Bare::new(port);
    let mut live = Live::new(port, false);
    let n = segments * per;
    let consumer = bare.consumer(n, true);
    let reader = live.reader(n, true);
    tape_nats::low_timer_slack();
    let mut next_at = Instant::now();
    for s in 0..2 * segments {
        for _ in 0..per {
            wait_until(next_at);
            next_at += pace;
            if s % 2 == 0 {
                bare.publish();
            } else {
                live.write();
            }
        }
    }
    let (b, t) = (consumer.join().unwrap(), reader.join().unwrap());
    live.finish(n);
    (b, t)
}

/// A side push consumer on the stream (parked like the bare one): for
/// each frame after the first, (server store time - write time, receive
/// time - server store time), in ns.
fn probe(port: u16, name: &str, total: u64) -> std::thread::JoinHandle<(Vec<u64>, Vec<u64>)> {
    let stream = tape_nats::names::stream_of(name);
    std::thread::spawn(move || {
        let rt = rt();
        let c = rt
            .block_on(async_nats::connect(format!("nats://127.0.0.1:{port}")))
            .unwrap();
        let inbox = c.new_inbox();
        let mut sub = rt.block_on(c.subscribe(inbox.clone())).unwrap();
        rt.block_on(api::push_consumer(
            &c,
            &stream,
            &inbox,
            Some(2),
            Duration::from_secs(1),
            Duration::from_secs(5),
        ))
        .unwrap();
        let (mut a, mut b) = (Vec::new(), Vec::new());
        let mut got = 1;
        while got < total {
            let m = rt.block_on(sub.next()).unwrap();
            let now = tape_journal::clock::now_ns();
            if m.status.is_some() {
                if let Some(r) = m.reply {
                    rt.block_on(c.publish(r, bytes::Bytes::new())).unwrap();
                }
                continue;
            }
            let reply = m.reply.as_deref().unwrap();
            let (sseq, _) = api::delivery_info(reply).unwrap();
            let stored: i64 = reply.split('.').nth(7).unwrap().parse().unwrap();
            let (h, _) = tape_nats::wire::decode(&m.payload, sseq).unwrap();
            a.push((stored - h.time_ns).max(0) as u64);
            b.push((now - stored).max(0) as u64);
            got = sseq;
        }
        (a, b)
    })
}

/// Import stopped while `n` frames are exported; then frames/s to catch up.
fn catch_up(port: u16, n: u64) -> f64 {
    static K: AtomicU64 = AtomicU64::new(0);
    let t = tape_sides();
    let name = &format!("cu{}", K.fetch_add(1, Ordering::Relaxed));
    let stream = tape_nats::names::stream_of(name);
    let mut w = writer(&t, name);
    let ex = spawn_export(&t, port, name, false);
    for _ in 0..n {
        w.write(1, &[3u8; SIZE]).unwrap();
    }
    let rt = rt();
    let c = rt
        .block_on(async_nats::connect(format!("nats://127.0.0.1:{port}")))
        .unwrap();
    loop {
        let st = rt.block_on(api::stream_info(&c, &stream)).unwrap();
        if st.is_some_and(|s| s.last_seq == n) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let start = Instant::now();
    let im = spawn_import(&t, port, name);
    let bdir = tape_journal::journal_dir(t.b.path());
    wait_seq(&bdir, name, n);
    let secs = start.elapsed().as_secs_f64();
    check_replica(&bdir, name, n);
    for (s, h) in [ex, im] {
        s.store(true, Ordering::Release);
        h.join().unwrap();
    }
    n as f64 / secs
}

/// Deletes every stream on the benchmark's server, so that no phase pays
/// for the store the phases before it left behind.
fn drop_streams(port: u16) {
    let rt = rt();
    rt.block_on(async {
        let c = async_nats::connect(format!("nats://127.0.0.1:{port}"))
            .await
            .unwrap();
        for st in api::streams(&c, "").await.unwrap() {
            api::request(
                &c,
                format!("$JS.API.STREAM.DELETE.{}", st.name),
                &serde_json::json!({}),
            )
            .await
            .unwrap()
            .unwrap();
        }
    });
}

/// Sleeps until 30 µs before `at` (the pacing threads run with a 1 µs
/// timer slack), then spins: the same pacing for bare and tape, without a
/// core spinning all the time.
fn wait_until(at: Instant) {
    let left = at.saturating_duration_since(Instant::now());
    if left > Duration::from_micros(40) {
        std::thread::sleep(left - Duration::from_micros(30));
    }
    while Instant::now() < at {
        std::hint::spin_loop();
    }
}

fn pct(v: &mut [u64], p: f64) -> u64 {
    v.sort_unstable();
    v[((v.len() as f64 * p) as usize).min(v.len() - 1)]
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let runs: usize = std::env::var("NATS_BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let e = engine();
    let port = e.port;
    let pace = Duration::from_micros(100);
    let (mut bt, mut tt, mut cu) = (Vec::new(), Vec::new(), Vec::new());
    let (mut bp50, mut tp50, mut tbp50) = (Vec::new(), Vec::new(), Vec::new());
    for r in 1..=runs {
        let b = bare(port, N);
        drop_streams(port);
        let (t, _) = tape_live(port, N, None, false);
        drop_streams(port);
        let (mut bl, mut tl) = latency(port, LAT_SEGMENTS, LAT_PER, pace);
        drop_streams(port);
        let (_, mut tbl) = tape_live(port, LAT_SEGMENTS * LAT_PER, Some(pace), true);
        drop_streams(port);
        let c = catch_up(port, 1_000_000);
        drop_streams(port);
        println!(
            "run {r}: throughput bare {:.0}/s tape {:.0}/s ({:.2}x) | one-way p50/p99 bare {:.0}/{:.0} us, tape {:.0}/{:.0} us ({:.2}x), tape --busy-poll {:.0}/{:.0} us ({:.2}x) | catch-up {:.0}/s | lost 0",
            b, t, t / b,
            pct(&mut bl, 0.5) as f64 / 1e3, pct(&mut bl, 0.99) as f64 / 1e3,
            pct(&mut tl, 0.5) as f64 / 1e3, pct(&mut tl, 0.99) as f64 / 1e3,
            pct(&mut tl, 0.5) as f64 / pct(&mut bl, 0.5) as f64,
            pct(&mut tbl, 0.5) as f64 / 1e3, pct(&mut tbl, 0.99) as f64 / 1e3,
            pct(&mut tbl, 0.5) as f64 / pct(&mut bl, 0.5) as f64,
            c
        );
        bt.push(b);
        tt.push(t);
        cu.push(c);
        bp50.push(pct(&mut bl, 0.5) as f64);
        tp50.push(pct(&mut tl, 0.5) as f64);
        tbp50.push(pct(&mut tbl, 0.5) as f64);
    }
    let ratios: Vec<f64> = bp50.iter().zip(&tp50).map(|(b, t)| t / b).collect();
    let (b, t) = (median(bt), median(tt));
    let (bl, tl, tbl) = (median(bp50), median(tp50), median(tbp50));
    println!(
        "median of {runs}: throughput bare {b:.0}/s, tape {t:.0}/s ({:.2}x); one-way p50 bare {:.0} us, tape {:.0} us ({:.2}x; median of the runs' own ratios {:.2}x), tape --busy-poll {:.0} us ({:.2}x); catch-up {:.0} frames/s; lost 0",
        t / b, bl / 1e3, tl / 1e3, tl / bl, median(ratios), tbl / 1e3, tbl / bl, median(cu)
    );
}
