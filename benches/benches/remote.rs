//! A remote call's round trip through one local nats-server, beside a bare
//! async-nats request/reply through the same server, in the same run.
//!
//! - **tape**: [`RemoteRequester::call`] (64-byte payload) → nats-server →
//!   an exposer process (`tape_nats::remote::expose`, what `tape rpc
//!   expose` runs) → a local rpc call → a responder process that echoes
//!   → back the same way.
//! - **bare**: async-nats `Client::request` (64 bytes) → nats-server → a
//!   responder process that publishes the payload back to the reply
//!   subject.
//! - **no hop** (where the time goes): `RemoteRequester::call` to a
//!   process that answers on a name's subject at once with the tape reply
//!   headers: the caller's side and the headers, without the exposer's
//!   loop and the local rpc hop.
//!
//! After the last round, the calls of its tape series are split into
//! legs by the shared clock (the caller's readings, the write times of
//! the exposer's request frame and of the responder's reply frame).
//!
//! One call in flight at a time, in rounds (5 by default); within a round
//! the three series take turns of 500 calls (`REMOTE_BENCH_TURN`), so that
//! all three meet the same regimes of the host; the first calls of each
//! series in a round are not recorded; each reply is checked to be the
//! payload sent. Both callers drive a runtime without a
//! worker thread on the calling thread; the bare responder runs a
//! current-thread runtime. The tape responder keeps polling for 200 µs
//! after each request (`REMOTE_BENCH_BUSY_US`), yielding the core between
//! polls, then waits with
//! [`tape_nats::Poller`] (spins, then 20 µs sleeps), as the exposer does:
//! a responder that sleeps between calls adds its wake-up to every call.
//!
//! ```sh
//! cargo bench -p tape-benches --bench remote                     # 5 rounds of 20,000 calls each
//! REMOTE_BENCH_ROUNDS=1 REMOTE_BENCH_CALLS=5000 cargo bench -p tape-benches --bench remote
//! ```

use futures_util::StreamExt;
use hdrhistogram::Histogram;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};
use tape_benches::{fmt_ns, hist_from};
use tape_nats::remote::{expose, ExposeOptions, RemoteRequester};
use tape_nats::{Auth, Server};
use tape_rpc::Responder;

const ROLE: &str = "TAPE_REMOTE_BENCH_ROLE";
const SIZE: usize = 64;
const WARMUP: u64 = 1000;
const NAME: &str = "bench-echo";
const BARE: &str = "bench.bare";
const FAKE: &str = "bench-fake";

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn env_or(k: &str, d: u64) -> u64 {
    std::env::var(k)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(d)
}

fn role(name: &str, root: &std::path::Path, url: &str) -> Kill {
    let exe = std::env::current_exe().unwrap();
    Kill(
        Command::new(exe)
            .env(ROLE, name)
            .env("TAPE_ROOT", root)
            .env("REMOTE_BENCH_URL", url)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    )
}

/// The responder: echoes, waiting with the crate's poller.
fn responder(root: &std::path::Path) {
    tape_nats::low_timer_slack();
    let mut r = Responder::builder(NAME)
        .root(root)
        .page_size(16 << 20)
        .create()
        .expect("responder");
    let mut idle = tape_nats::Poller::new();
    let busy = Duration::from_micros(env_or("REMOTE_BENCH_BUSY_US", 200));
    let mut busy_until = Instant::now();
    loop {
        match r.poll(|req, out| {
            let _ = out.reply(req.msg_type(), req.data());
        }) {
            Ok(true) => {
                idle.reset();
                busy_until = Instant::now() + busy;
            }
            Ok(false) if Instant::now() < busy_until => std::thread::yield_now(),
            Ok(false) => idle.idle(),
            Err(e) => eprintln!("responder: {e}"),
        }
    }
}

/// The exposer, as `tape rpc expose bench-echo` runs it.
fn exposer(root: &std::path::Path, url: &str) {
    let server = Server::resolve(Some(url), Auth::None);
    let mut opts = ExposeOptions::new(root, server, vec![NAME.to_string()]);
    opts.busy = Duration::from_micros(env_or("REMOTE_BENCH_EXPOSER_BUSY_US", 200));
    static STOP: AtomicBool = AtomicBool::new(false);
    expose(&opts, &STOP).expect("expose");
}

/// The bare responder: publishes each request's payload back.
fn bare_responder(url: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let c = async_nats::connect(url).await.unwrap();
        let mut sub = c.subscribe(BARE).await.unwrap();
        while let Some(m) = sub.next().await {
            if let Some(r) = m.reply {
                c.publish(r, m.payload).await.unwrap();
            }
        }
    });
}

/// The exposer's protocol without the local hop: answers each call on
/// `tape.rpc.bench-fake` at once with the tape reply headers.
fn fake_exposer(url: &str) {
    use tape_nats::remote::header;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let c = async_nats::connect(url).await.unwrap();
        let mut sub = c
            .subscribe(tape_nats::remote::subject_of(FAKE))
            .await
            .unwrap();
        while let Some(m) = sub.next().await {
            let (Some(r), Some(h)) = (m.reply, m.headers) else {
                continue;
            };
            let mut out = async_nats::HeaderMap::new();
            out.insert(header::ID, h.get(header::ID).unwrap().as_str());
            out.insert(header::OUTCOME, "OK");
            out.insert(header::TYPE, "1");
            out.insert(header::HOST, "fake");
            c.publish_with_headers(r, out, m.payload).await.unwrap();
        }
    });
}

/// Caller-side clock readings of one call: (i, sent, replied), ns.
type Stamps = Vec<(u64, i64, i64)>;

/// Tape calls numbered `calls` to `name`, recorded into `h` when given
/// (the warm-up is not), their clock readings pushed to `stamps`.
fn tape_calls(
    r: &mut RemoteRequester,
    name: &str,
    round: u64,
    calls: std::ops::Range<u64>,
    mut h: Option<&mut Histogram<u64>>,
    mut stamps: Option<&mut Stamps>,
) {
    let mut payload = [7u8; SIZE];
    payload[8..16].copy_from_slice(&round.to_le_bytes());
    for i in calls {
        payload[..8].copy_from_slice(&i.to_le_bytes());
        let t = Instant::now();
        let t0 = tape_journal::clock::now_ns();
        let rep = r
            .call(name, 1, &payload, Duration::from_secs(5))
            .expect("tape call");
        let took = t.elapsed().as_nanos() as u64;
        if let Some(h) = h.as_deref_mut() {
            h.record(took).unwrap();
        }
        if let Some(s) = stamps.as_deref_mut() {
            s.push((i, t0, tape_journal::clock::now_ns()));
        }
        assert_eq!(rep.data, payload, "tape reply");
    }
}

/// Where a tape call's time goes, from the shared clock: caller → the
/// exposer's request frame (its write time), → the responder's reply
/// frame, → the caller again. Medians over the calls of round `round`.
fn legs(root: &std::path::Path, round: u64, stamps: &Stamps) -> (u64, u64, u64) {
    use tape_journal::{Cursor, CursorOptions, Start};
    let dir = tape_journal::journal_dir(root);
    let open = |j: &str| Cursor::open(&dir, j, Start::First, CursorOptions::default()).unwrap();
    // Request frames: payload = timeout (8 bytes), then the call's data.
    let mut req: std::collections::HashMap<u64, (u64, i64)> = Default::default();
    let mut c = open("rpc.tape-expose");
    while let Some(f) = c.next().unwrap() {
        let p = f.payload();
        if p.len() >= 24 && u64::from_le_bytes(p[16..24].try_into().unwrap()) == round {
            let i = u64::from_le_bytes(p[8..16].try_into().unwrap());
            req.insert(i, (f.seq(), f.time_ns()));
        }
    }
    let mut rep: std::collections::HashMap<u64, i64> = Default::default();
    let mut c = open(&format!("rpc.{NAME}"));
    while let Some(f) = c.next().unwrap() {
        rep.insert(f.corr(), f.time_ns());
    }
    let (mut a, mut b, mut z) = (vec![], vec![], vec![]);
    for &(i, t0, t3) in stamps {
        let Some(&(seq, t1)) = req.get(&i) else {
            continue;
        };
        let Some(&t2) = rep.get(&seq) else { continue };
        a.push((t1 - t0).max(0) as f64);
        b.push((t2 - t1).max(0) as f64);
        z.push((t3 - t2).max(0) as f64);
    }
    (median(a) as u64, median(b) as u64, median(z) as u64)
}

/// Bare request/reply calls numbered `calls`, recorded into `h` when given.
fn bare_calls(
    rt: &tokio::runtime::Runtime,
    c: &async_nats::Client,
    calls: std::ops::Range<u64>,
    mut h: Option<&mut Histogram<u64>>,
) {
    let mut payload = [7u8; SIZE];
    for i in calls {
        payload[..8].copy_from_slice(&i.to_le_bytes());
        let body = bytes::Bytes::copy_from_slice(&payload);
        let t = Instant::now();
        let m = rt.block_on(c.request(BARE, body)).expect("bare request");
        let took = t.elapsed().as_nanos() as u64;
        if let Some(h) = h.as_deref_mut() {
            h.record(took).unwrap();
        }
        assert_eq!(&m.payload[..], &payload[..], "bare reply");
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if let Ok(r) = std::env::var(ROLE) {
        // SAFETY: PR_SET_PDEATHSIG takes one integer argument and only
        // sets this process's own death signal.
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
        let root = std::path::PathBuf::from(std::env::var("TAPE_ROOT").unwrap());
        let url = std::env::var("REMOTE_BENCH_URL").unwrap();
        match r.as_str() {
            "responder" => responder(&root),
            "exposer" => exposer(&root, &url),
            "bare" => bare_responder(&url),
            "fake" => fake_exposer(&url),
            other => panic!("unknown role {other}"),
        }
        return;
    }
    let rounds = env_or("REMOTE_BENCH_ROUNDS", 5);
    let calls = env_or("REMOTE_BENCH_CALLS", 20_000);
    let turn = env_or("REMOTE_BENCH_TURN", 500).max(1);
    let port = free_port();
    let store = tempfile::tempdir().unwrap();
    let _nats = Kill(
        Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(store.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server (apt-get install nats-server)"),
    );
    let url = format!("nats://127.0.0.1:{port}");
    let root = tempfile::tempdir_in("/dev/shm").unwrap_or_else(|_| tempfile::tempdir().unwrap());
    let _service = tape_service::Service::start(root.path()).expect("service");
    let _responder = role("responder", root.path(), &url);
    let server = Server::resolve(Some(&url), Auth::None);
    // Connect (the server may still be starting), then wait for both
    // responders to answer.
    let t = Instant::now();
    let mut r = loop {
        match RemoteRequester::connect(&server) {
            Ok(r) => break r,
            Err(e) => {
                assert!(t.elapsed() < Duration::from_secs(20), "{e}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    };
    let _exposer = role("exposer", root.path(), &url);
    let _bare = role("bare", root.path(), &url);
    let _fake = role("fake", root.path(), &url);
    while r.call(FAKE, 1, b"up", Duration::from_secs(5)).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the fake exposer never answered"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    while r.call(NAME, 1, b"up", Duration::from_secs(5)).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the exposer never answered"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let c = rt.block_on(async_nats::connect(&url)).unwrap();
    while rt.block_on(c.request(BARE, "up".into())).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the bare responder never answered"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (mut b50, mut t50, mut f50) = (vec![], vec![], vec![]);
    let (mut b99, mut t99, mut f99) = (vec![], vec![], vec![]);
    let mut stamps = Stamps::new();
    for k in 1..=rounds {
        // The three series take turns of `turn` calls, so that each meets
        // the same regimes of the host (its vCPUs change speed every few
        // seconds; a series of 20,000 calls is about 3 s).
        let (mut hb, mut hf, mut ht) = (hist_from(1000), hist_from(1000), hist_from(1000));
        bare_calls(&rt, &c, 0..WARMUP, None);
        tape_calls(&mut r, FAKE, k, 0..WARMUP, None, None);
        tape_calls(&mut r, NAME, k, 0..WARMUP, None, None);
        stamps.clear();
        let mut i = WARMUP;
        while i < WARMUP + calls {
            let n = i..(i + turn).min(WARMUP + calls);
            bare_calls(&rt, &c, n.clone(), Some(&mut hb));
            tape_calls(&mut r, FAKE, k, n.clone(), Some(&mut hf), None);
            tape_calls(&mut r, NAME, k, n.clone(), Some(&mut ht), Some(&mut stamps));
            i = n.end;
        }
        let q = |h: &Histogram<u64>, x| h.value_at_quantile(x);
        println!(
            "round {k}: {calls} calls of {SIZE} B; p50/p99/p99.9 bare {}/{}/{}, no hop {}/{}/{}, tape {}/{}/{}; p50 tape/bare {:.2}x",
            fmt_ns(q(&hb, 0.5)),
            fmt_ns(q(&hb, 0.99)),
            fmt_ns(q(&hb, 0.999)),
            fmt_ns(q(&hf, 0.5)),
            fmt_ns(q(&hf, 0.99)),
            fmt_ns(q(&hf, 0.999)),
            fmt_ns(q(&ht, 0.5)),
            fmt_ns(q(&ht, 0.99)),
            fmt_ns(q(&ht, 0.999)),
            q(&ht, 0.5) as f64 / q(&hb, 0.5) as f64,
        );
        b50.push(q(&hb, 0.5) as f64);
        f50.push(q(&hf, 0.5) as f64);
        t50.push(q(&ht, 0.5) as f64);
        b99.push(q(&hb, 0.99) as f64);
        f99.push(q(&hf, 0.99) as f64);
        t99.push(q(&ht, 0.99) as f64);
    }
    let (b, f, t) = (median(b50), median(f50), median(t50));
    println!(
        "median of {rounds}: round trip p50 bare {} | no hop {} ({:.2}x) | tape {} ({:.2}x; goal 1.3x); p99 bare {} | no hop {} | tape {}",
        fmt_ns(b as u64),
        fmt_ns(f as u64),
        f / b,
        fmt_ns(t as u64),
        t / b,
        fmt_ns(median(b99) as u64),
        fmt_ns(median(f99) as u64),
        fmt_ns(median(t99) as u64),
    );
    let (a, b, z) = legs(root.path(), rounds, &stamps);
    println!(
        "where a tape call's time goes (round {rounds}, medians, shared clock): caller -> exposer's request frame {} | local hop to the reply frame {} | reply frame -> caller {}",
        fmt_ns(a),
        fmt_ns(b),
        fmt_ns(z)
    );
    let s = r.stats();
    assert_eq!(s.late + s.stray, 0, "unmatched replies: {s:?}");
}
