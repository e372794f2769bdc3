//! Round trip of a tape-rpc call between two processes on one box, beside
//! the same round trip over a Unix socket and over one shared cache line,
//! measured in the same run on the same cores.
//!
//! ```sh
//! cargo bench -p tape-benches --bench rpc                  # 200,000 round trips each
//! cargo bench -p tape-benches --bench rpc -- --calls 50000 --size 64 --json
//! cargo bench -p tape-benches --bench rpc -- --only rpc        # one of floor, unix, journal, rpc
//! ```
//!
//! This process starts a service (on a thread) on a fresh root in /dev/shm
//! and three child processes (this binary again, with `TAPE_RPC_BENCH_ROLE`
//! set), each pinned to the second core while this one is pinned to the
//! first:
//!
//! - **floor**: a cache-line echo. This process stores a counter into one
//!   cache line of a shared mapping; the child polls it and stores it back
//!   into another; this process polls that. One cache-line transfer each
//!   way: twice the one-way floor `journal-bench` reports.
//! - **unix**: a Unix stream socket echo: write the payload, the child
//!   reads it (blocking) and writes it back, read it.
//! - **journal**: the transport under tape-rpc with nothing of it: this
//!   process appends a frame to journal `ping`, the child reads it with a
//!   raw cursor and appends it to journal `pong`, this process reads that.
//! - **rpc**: [`tape_rpc::Requester::call`] to a [`tape_rpc::Responder`]
//!   that echoes the payload.
//!
//! Every poller (the floor child, both ends of the rpc) waits with
//! [`tape_reader::Idle`]: it spins, then yields, then parks, so neither
//! process starves the other if they ever share a core. Correctness first:
//! every echoed payload is compared with what was sent. The three are run
//! in alternating rounds, so that load from elsewhere on the box falls on
//! all three alike; the first round trips of each round are not recorded.

use hdrhistogram::Histogram;
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tape_benches::{fmt_ns, hist_from, temp_dir};
use tape_journal::{AppendOptions, Appender, Cursor, CursorOptions, Start};
use tape_reader::Idle;
use tape_rpc::{Requester, Responder};

const ROLE: &str = "TAPE_RPC_BENCH_ROLE";
const ROUNDS: u64 = 5;
const WARMUP: u64 = 2000;
const ECHO: &str = "bench-echo";

struct Args {
    calls: u64,
    size: usize,
    json: bool,
    /// Run only this one (floor, unix, journal or rpc), e.g. to profile it.
    only: Option<String>,
}

fn args() -> Args {
    let mut a = Args {
        calls: 200_000,
        size: 64,
        json: false,
        only: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(x) = it.next() {
        match x.as_str() {
            "--calls" => a.calls = it.next().and_then(|v| v.parse().ok()).expect("--calls N"),
            "--size" => {
                a.size = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--size BYTES")
            }
            "--json" => a.json = true,
            "--only" => a.only = it.next(),
            // cargo bench passes --bench; criterion-style filters are ignored.
            _ => {}
        }
    }
    assert!(a.size >= 8, "--size must be at least 8");
    a
}

fn main() {
    if let Ok(role) = std::env::var(ROLE) {
        child(&role);
        return;
    }
    let a = args();
    let cores: Vec<usize> = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.id)
        .collect();
    let (mine, theirs) = match cores.len() {
        0 => (None, None),
        1 => (Some(cores[0]), Some(cores[0])),
        _ => (Some(cores[0]), Some(cores[1])),
    };
    if let Some(c) = mine {
        tape_journal::pin_thread(c).expect("pin the requester");
    }
    let root = temp_dir();
    let _service = tape_service::Service::start(root.path()).expect("start a service");

    // The three echoes.
    let line_path = root.path().join("floor.shm");
    let line = SharedLines::create(&line_path);
    let mut floor_kid = spawn("floor", root.path(), &line_path, theirs);
    let sock = root.path().join("bench.sock");
    let listener = UnixListener::bind(&sock).expect("bind the bench socket");
    let mut unix_kid = spawn("unix", root.path(), &sock, theirs);
    let (mut stream, _) = listener.accept().expect("the unix echo connects");
    let jdir = tape_journal::journal_dir(root.path());
    let jopts = AppendOptions {
        page_size: 256 << 20,
        ..AppendOptions::default()
    };
    let mut ping = Appender::create(&jdir, "ping", jopts).expect("journal ping");
    let mut journal_kid = spawn("journal", root.path(), &jdir, theirs);
    let mut pong = open_when_there(&jdir, "pong");
    let mut rpc_kid = spawn("rpc", root.path(), root.path(), theirs);
    let mut req = Requester::builder("bench-client")
        .root(root.path())
        .page_size(256 << 20)
        .create()
        .expect("create the requester");
    let give_up = Instant::now() + Duration::from_secs(60);
    while req.find(ECHO).expect("ask the service").is_none() {
        assert!(Instant::now() < give_up, "the rpc echo never came online");
        std::thread::sleep(Duration::from_millis(5));
    }

    let mut h = [hist_from(10), hist_from(10), hist_from(10), hist_from(10)];
    let per_round = a.calls / ROUNDS;
    let mut payload = vec![0u8; a.size];
    let mut back = vec![0u8; a.size];
    let run = |what: &str| a.only.as_deref().is_none_or(|o| o == what);
    for _ in 0..ROUNDS {
        // floor
        for i in 0..(per_round + WARMUP) * u64::from(run("floor")) {
            let v = line.next_value();
            let t = Instant::now();
            line.ping(v);
            line.wait_pong(v);
            record(&mut h[0], i, t);
        }
        // unix socket
        for i in 0..(per_round + WARMUP) * u64::from(run("unix")) {
            stamp(&mut payload, i);
            let t = Instant::now();
            stream.write_all(&payload).expect("unix write");
            stream.read_exact(&mut back).expect("unix read");
            record(&mut h[1], i, t);
            assert_eq!(payload, back, "the unix echo sent back something else");
        }
        // raw journals
        for i in 0..(per_round + WARMUP) * u64::from(run("journal")) {
            stamp(&mut payload, i);
            let t = Instant::now();
            ping.write(1, &payload).expect("append ping");
            let mut idle = Idle::new();
            loop {
                if let Some(f) = pong.next().expect("read pong") {
                    record(&mut h[3], i, t);
                    assert_eq!(
                        f.payload(),
                        &payload[..],
                        "the journal echo sent back something else"
                    );
                    break;
                }
                idle.idle();
            }
        }
        // tape-rpc
        for i in 0..(per_round + WARMUP) * u64::from(run("rpc")) {
            stamp(&mut payload, i);
            let t = Instant::now();
            let r = req
                .call(ECHO, 1, &payload, Duration::from_secs(10))
                .expect("call the rpc echo");
            record(&mut h[2], i, t);
            assert_eq!(
                r.data(),
                &payload[..],
                "the rpc echo sent back something else"
            );
        }
    }
    line.ping(u64::MAX);
    drop(stream);
    for k in [
        &mut floor_kid,
        &mut unix_kid,
        &mut journal_kid,
        &mut rpc_kid,
    ] {
        let _ = k.kill();
        let _ = k.wait();
    }

    let q = |h: &Histogram<u64>| {
        [
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.99),
            h.value_at_quantile(0.999),
            h.max(),
        ]
    };
    let (f, u, r, j) = (q(&h[0]), q(&h[1]), q(&h[2]), q(&h[3]));
    if a.json {
        let obj = |x: [u64; 4]| {
            format!(
                "{{\"p50_ns\":{},\"p99_ns\":{},\"p999_ns\":{},\"max_ns\":{}}}",
                x[0], x[1], x[2], x[3]
            )
        };
        println!(
            "{{\"calls\":{},\"size\":{},\"floor_rtt\":{},\"unix_rtt\":{},\"journal_rtt\":{},\"rpc_rtt\":{}}}",
            per_round * ROUNDS,
            a.size,
            obj(f),
            obj(u),
            obj(j),
            obj(r)
        );
        return;
    }
    println!(
        "round trip, {} B payload, {} each in {ROUNDS} alternating rounds; this process on core {:?}, the echoes on core {:?}",
        a.size,
        per_round * ROUNDS,
        mine,
        theirs
    );
    println!(
        "{:<28} {:>10} {:>10} {:>10} {:>10}",
        "", "p50", "p99", "p99.9", "max"
    );
    for (name, x) in [
        ("floor (one cache line)", f),
        ("unix socket", u),
        ("raw journals", j),
        ("tape-rpc call", r),
    ] {
        println!(
            "{name:<28} {:>10} {:>10} {:>10} {:>10}",
            fmt_ns(x[0]),
            fmt_ns(x[1]),
            fmt_ns(x[2]),
            fmt_ns(x[3])
        );
    }
    println!(
        "tape-rpc p50 is {:.2}x the floor round trip (2x the one-way floor) and {:.2}x the unix socket's",
        r[0] as f64 / f[0].max(1) as f64,
        r[0] as f64 / u[0].max(1) as f64
    );
}

/// A cursor at the start of journal `name`, once its first page exists.
fn open_when_there(dir: &Path, name: &str) -> Cursor {
    let opts = CursorOptions {
        verify_crc: false,
        populate: true,
    };
    let give_up = Instant::now() + Duration::from_secs(60);
    loop {
        match Cursor::open(dir, name, Start::First, opts) {
            Ok(c) => return c,
            Err(tape_journal::OpenError::NotFound { .. }) if Instant::now() < give_up => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(e) => panic!("open journal {name}: {e}"),
        }
    }
}

fn record(h: &mut Histogram<u64>, i: u64, t: Instant) {
    let ns = t.elapsed().as_nanos() as u64;
    if i >= WARMUP {
        h.saturating_record(ns.max(10));
    }
}

fn stamp(buf: &mut [u8], i: u64) {
    buf[..8].copy_from_slice(&i.to_le_bytes());
}

/// Starts this binary as `role`, pinned to `core`, dying with us.
fn spawn(role: &str, root: &Path, path: &Path, core: Option<usize>) -> Child {
    let mut cmd = Command::new(std::env::current_exe().expect("the bench binary"));
    cmd.env(ROLE, role)
        .env("TAPE_RPC_BENCH_ROOT", root)
        .env("TAPE_RPC_BENCH_PATH", path)
        .env(
            "TAPE_RPC_BENCH_CORE",
            core.map(|c| c.to_string()).unwrap_or_default(),
        );
    // SAFETY: the closure runs in the forked child before exec and calls
    // only prctl, which is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    cmd.spawn().expect("start a bench child")
}

/// The child processes.
fn child(role: &str) {
    let root = PathBuf::from(std::env::var("TAPE_RPC_BENCH_ROOT").expect("root"));
    let path = PathBuf::from(std::env::var("TAPE_RPC_BENCH_PATH").expect("path"));
    if let Ok(c) = std::env::var("TAPE_RPC_BENCH_CORE")
        .unwrap_or_default()
        .parse()
    {
        tape_journal::pin_thread(c).expect("pin the echo");
    }
    match role {
        "floor" => {
            let line = SharedLines::open(&path);
            let mut idle = Idle::new();
            let mut last = 0;
            loop {
                let v = line.ping_value();
                if v == u64::MAX {
                    return;
                }
                if v != last {
                    line.pong(v);
                    last = v;
                    idle.reset();
                } else {
                    idle.idle();
                }
            }
        }
        "unix" => {
            let mut s = UnixStream::connect(&path).expect("connect to the bench");
            let mut buf = [0u8; 1 << 16];
            loop {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if s.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                }
            }
        }
        "journal" => {
            let opts = AppendOptions {
                page_size: 256 << 20,
                ..AppendOptions::default()
            };
            let mut pong = Appender::create(&path, "pong", opts).expect("journal pong");
            let mut ping = open_when_there(&path, "ping");
            let mut idle = Idle::new();
            loop {
                match ping.next().expect("read ping") {
                    Some(f) => {
                        pong.write(f.msg_type(), f.payload()).expect("append pong");
                        idle.reset();
                    }
                    None => idle.idle(),
                }
            }
        }
        "rpc" => {
            let mut r = Responder::builder(ECHO)
                .root(&root)
                .page_size(256 << 20)
                .create()
                .expect("create the rpc echo");
            let stop = std::sync::atomic::AtomicBool::new(false);
            r.run(&stop, |req, out| {
                let _ = out.reply(req.msg_type(), req.data());
            })
            .expect("serve");
        }
        other => panic!("unknown role {other}"),
    }
}

/// Two cache lines in a shared file mapping: `ping` (written by the bench)
/// and `pong` (written by the echo), 128 bytes apart so they never share a
/// line (nor an adjacent-line prefetch pair).
struct SharedLines {
    map: memmap2::MmapMut,
    next: std::cell::Cell<u64>,
}

impl SharedLines {
    fn create(path: &Path) -> SharedLines {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .expect("create the shared line file");
        f.set_len(4096).expect("size the shared line file");
        SharedLines::map(&f)
    }

    fn open(path: &Path) -> SharedLines {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .expect("open the shared line file");
        SharedLines::map(&f)
    }

    fn map(f: &std::fs::File) -> SharedLines {
        // SAFETY: the file is ours (made by this bench in its own folder)
        // and never truncated while mapped; it is accessed only through
        // the atomics below.
        let map = unsafe { memmap2::MmapMut::map_mut(f) }.expect("map the shared line file");
        SharedLines {
            map,
            next: std::cell::Cell::new(0),
        }
    }

    fn word(&self, off: usize) -> &AtomicU64 {
        assert!(off + 8 <= self.map.len() && off % 8 == 0);
        // SAFETY: in bounds and 8-aligned (page-aligned mapping, off a
        // multiple of 8); the mapping lives as long as self, and the other
        // process touches the word only atomically too.
        unsafe { AtomicU64::from_ptr(self.map.as_ptr().add(off) as *mut u64) }
    }

    fn next_value(&self) -> u64 {
        self.next.set(self.next.get() + 1);
        self.next.get()
    }

    fn ping(&self, v: u64) {
        self.word(0).store(v, Ordering::Release);
    }

    fn ping_value(&self) -> u64 {
        self.word(0).load(Ordering::Acquire)
    }

    fn pong(&self, v: u64) {
        self.word(128).store(v, Ordering::Release);
    }

    fn wait_pong(&self, v: u64) {
        let mut idle = Idle::new();
        while self.word(128).load(Ordering::Acquire) != v {
            idle.idle();
        }
    }
}
