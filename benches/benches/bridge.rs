//! The bridge over loopback, against plain TCP measured in the same run.
//!
//! - **tcp ping-pong**: two threads, one TCP connection with TCP_NODELAY,
//!   64-byte messages, blocking reads; one-way = round trip / 2.
//! - **bridge latency**: a paced writer (one frame every 100 µs, or
//!   `BRIDGE_BENCH_GAP_US`) appends 64-byte frames to a source
//!   journal; `Server` and `pull` (the library behind `tape bridge serve`
//!   and `tape bridge pull`) replicate it into a second root; a `Reader`
//!   of the replica takes each frame's one-way latency as its read time
//!   minus the write time the replica kept from the source. Run with
//!   `Polling::Busy` (the low-latency setting) and the default
//!   `Polling::Backoff`.
//! - **bridge throughput**: 64-byte frames, (a) already in the source when
//!   the pull connects (catch-up), (b) written as fast as one writer can
//!   while the bridge replicates them (live); frames per second until the
//!   replica's reader has read the last one.
//!
//! Correctness first: every run checks that the replica's reader got every
//! sequence number once, in order.
//!
//! ```sh
//! cargo bench -p tape-benches --bench bridge            # everything
//! cargo bench -p tape-benches --bench bridge -- --json  # one JSON object
//! cargo bench -p tape-benches --bench bridge -- --quick # fewer frames
//! ```

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};
use tape_benches::{hist, temp_dir, tight_timer_slack, Pcts};
use tape_bridge::{quiet_log, Polling, PullHandle, PullOptions, ServeOptions, Server, Token};
use tape_reader::{Idle, Reader, ServiceMode, Start};
use tape_writer::Writer;

const SIZE: usize = 64;
const PAGE: u64 = 64 << 20;

fn now_ns() -> i64 {
    tape_journal::clock::now_ns()
}

/// Plain TCP: round trips of 64-byte messages; returns one-way (RTT / 2)
/// percentiles in ns.
fn tcp_ping_pong(rounds: usize, gap: Duration) -> Pcts {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let echo = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        s.set_nodelay(true).unwrap();
        let mut buf = [0u8; SIZE];
        while s.read_exact(&mut buf).is_ok() {
            if s.write_all(&buf).is_err() {
                break;
            }
        }
    });
    tight_timer_slack();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_nodelay(true).unwrap();
    let mut buf = [7u8; SIZE];
    let mut h = hist();
    for i in 0..rounds + 1000 {
        let t = Instant::now();
        s.write_all(&buf).unwrap();
        s.read_exact(&mut buf).unwrap();
        let rtt = t.elapsed().as_nanos() as u64;
        if i >= 1000 {
            h.record((rtt / 2).max(1)).unwrap();
        }
        if !gap.is_zero() {
            std::thread::sleep(gap);
        }
    }
    drop(s);
    echo.join().unwrap();
    Pcts::of(&h)
}

/// A source and a replica root, each with its service, and a server.
struct Setup {
    src: tempfile::TempDir,
    dst: tempfile::TempDir,
    _s1: tape_service::Service,
    _s2: tape_service::Service,
    server: tape_bridge::ServerHandle,
}

impl Setup {
    fn new(polling: Polling) -> Setup {
        let (src, dst) = (temp_dir(), temp_dir());
        let s1 = tape_service::Service::start(src.path()).unwrap();
        let s2 = tape_service::Service::start(dst.path()).unwrap();
        let mut o = ServeOptions::new(src.path());
        o.listen = "127.0.0.1:0".into();
        o.token = Token::new("bench-token");
        o.polling = polling;
        o.log = quiet_log();
        o.status_socket = false;
        o.register_readers = false;
        let server = Server::bind(o).unwrap().spawn().unwrap();
        Setup {
            src,
            dst,
            _s1: s1,
            _s2: s2,
            server,
        }
    }

    fn writer(&self) -> Writer {
        Writer::builder("md")
            .root(self.src.path())
            .page_size(PAGE)
            .create()
            .unwrap()
    }

    fn pull(&self) -> PullHandle {
        let mut o = PullOptions::new(
            self.dst.path(),
            &self.server.local_addr().to_string(),
            "bench",
        )
        .journal("md");
        o.token = Token::new("bench-token");
        o.log = quiet_log();
        PullHandle::spawn(o).unwrap()
    }

    fn replica_reader(&self) -> Reader {
        let mut r = Reader::builder("bench-replica")
            .root(self.dst.path())
            .service(ServiceMode::Never)
            .start(Start::First)
            .create()
            .unwrap();
        r.add_journal(tape_journal::journal_dir(self.dst.path()), "md")
            .unwrap();
        r
    }
}

/// Reads the replica until seq `n`, checking every sequence number; calls
/// `each(time_ns)` per frame. Returns when the last frame was read.
fn read_all(r: &mut Reader, n: u64, each: impl FnMut(i64)) -> Instant {
    read_all_from(r, 1, n, each)
}

/// [`read_all`] for a reader whose next frame is `first`.
fn read_all_from(r: &mut Reader, first: u64, n: u64, mut each: impl FnMut(i64)) -> Instant {
    // A few spins, then yields: the reader shares the two cores with the
    // writer, the server and the pull, and a spin would hold its core from
    // them (2000 spins: the pull's wake-ups waited behind it).
    let mut idle = Idle::with(64, u32::MAX - 64, Duration::ZERO);
    let mut expect = first;
    let give_up = Instant::now() + Duration::from_secs(300);
    while expect <= n {
        match r.next().unwrap() {
            Some(f) => {
                assert_eq!(f.seq(), expect, "replica frames in order, none lost");
                assert_eq!(f.payload().len(), SIZE);
                each(f.time_ns());
                expect += 1;
                idle.reset();
            }
            None => {
                assert!(Instant::now() < give_up, "replica stuck at seq {expect}");
                idle.idle();
                if expect == 1 {
                    r.housekeeping();
                }
            }
        }
    }
    Instant::now()
}

/// Paced frames through the bridge: one-way latency percentiles (ns).
fn bridge_latency(polling: Polling, frames: u64, gap: Duration) -> Pcts {
    let setup = Setup::new(polling);
    let mut w = setup.writer();
    let _pull = setup.pull();
    let mut r = setup.replica_reader();
    let payload = [5u8; SIZE];
    // The path is up (connected, replica made) before anything is timed.
    w.write(1, &payload).unwrap();
    read_all(&mut r, 1, |_| {});
    let writer = std::thread::spawn(move || {
        tight_timer_slack();
        let mut next = Instant::now();
        for _ in 1..frames {
            w.write(1, &payload).unwrap();
            next += gap;
            let now = Instant::now();
            if next > now {
                std::thread::sleep(next - now);
            } else {
                next = now;
            }
        }
        w
    });
    let mut h = hist();
    let warmup = (frames / 20).min(2000);
    let mut i = 1u64;
    read_all_from(&mut r, 2, frames, |t| {
        i += 1;
        if i > warmup {
            h.record((now_ns() - t).max(1) as u64).unwrap();
        }
    });
    drop(writer.join().unwrap());
    Pcts::of(&h)
}

/// Frames per second through the bridge: (catch-up, live).
fn bridge_throughput(frames: u64) -> (f64, f64) {
    let payload = [9u8; SIZE];
    // Catch-up: every frame is in the source when the pull connects.
    let catch_up = {
        let setup = Setup::new(Polling::Busy);
        let mut w = setup.writer();
        let mut r = setup.replica_reader();
        // A first pull makes the replica (and its first page); the timed
        // one reconnects and resumes after frame 1.
        w.write(1, &payload).unwrap();
        let first = setup.pull();
        read_all(&mut r, 1, |_| {});
        first.stop().unwrap();
        for _ in 1..frames {
            w.write(1, &payload).unwrap();
        }
        let t = Instant::now();
        let _pull = setup.pull();
        let end = read_all_from(&mut r, 2, frames, |_| {});
        (frames - 1) as f64 / (end - t).as_secs_f64()
    };
    // Live: one writer as fast as it can while the bridge runs.
    let live = {
        let setup = Setup::new(Polling::Busy);
        let mut w = setup.writer();
        let _pull = setup.pull();
        let mut r = setup.replica_reader();
        // The replica exists once the first frame went through.
        w.write(1, &payload).unwrap();
        read_all(&mut r, 1, |_| {});
        let t = Instant::now();
        let writer = std::thread::spawn(move || {
            for _ in 1..frames {
                w.write(1, &payload).unwrap();
            }
            w
        });
        let end = read_all_from(&mut r, 2, frames, |_| {});
        drop(writer.join().unwrap());
        (frames - 1) as f64 / (end - t).as_secs_f64()
    };
    (catch_up, live)
}

fn main() {
    // `cargo bench` passes `--bench`; anything else it passes is ignored.
    let json = std::env::args().any(|a| a == "--json");
    let quick = std::env::args().any(|a| a == "--quick");
    let (lat_frames, thr_frames) = if quick {
        (10_000, 500_000)
    } else {
        (50_000, 4_000_000)
    };
    let gap = Duration::from_micros(
        std::env::var("BRIDGE_BENCH_GAP_US")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(100),
    );

    let tcp = tcp_ping_pong(lat_frames as usize / 2, gap);
    let busy = bridge_latency(Polling::Busy, lat_frames, gap);
    let backoff = bridge_latency(Polling::Backoff, lat_frames, gap);
    // Frames further apart than the subscriber stays awake (AWAKE): the
    // server is asleep on the doorbell at every frame.
    let quiet_gap = Duration::from_millis(1);
    let backoff_quiet = bridge_latency(Polling::Backoff, (lat_frames / 10).max(1000), quiet_gap);
    let tcp_after = tcp_ping_pong(lat_frames as usize / 2, gap);
    let (catch_up, live) = bridge_throughput(thr_frames);

    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into());
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let tcp_p50 = tcp.p50.min(tcp_after.p50).max(1) as f64;
    let ratio = busy.p50 as f64 / tcp_p50;
    let ratio_backoff = backoff.p50 as f64 / tcp_p50;
    if json {
        let p = |x: &Pcts| {
            format!(
                "{{\"p50_ns\":{},\"p99_ns\":{},\"p999_ns\":{},\"max_ns\":{},\"n\":{}}}",
                x.p50, x.p99, x.p999, x.max, x.n
            )
        };
        println!(
            "{{\"size\":{SIZE},\"loadavg_1m\":\"{load}\",\"cpus\":{cpus},\"tcp_one_way\":{},\"tcp_one_way_after\":{},\"bridge_busy\":{},\"bridge_backoff\":{},\"bridge_backoff_every_ms\":{},\"p50_ratio_busy_to_tcp\":{ratio:.2},\"p50_ratio_backoff_to_tcp\":{ratio_backoff:.2},\"throughput_catch_up_fps\":{catch_up:.0},\"throughput_live_fps\":{live:.0}}}",
            p(&tcp),
            p(&tcp_after),
            p(&busy),
            p(&backoff),
            p(&backoff_quiet)
        );
        return;
    }
    println!(
        "bridge over loopback, {SIZE}-byte frames, paced every {gap:?} for latency; {cpus} CPUs, load average {load} at the end"
    );
    println!(
        "{:<36} {:>9} {:>9} {:>9} {:>10} {:>8}",
        "one-way latency (ns)", "p50", "p99", "p99.9", "max", "samples"
    );
    for (name, x) in [
        ("plain TCP ping-pong (RTT/2)", tcp),
        ("bridge, Polling::Busy", busy),
        ("bridge, Polling::Backoff (default)", backoff),
        ("bridge, Backoff, a frame every 1 ms", backoff_quiet),
        ("plain TCP ping-pong again", tcp_after),
    ] {
        println!(
            "{:<36} {:>9} {:>9} {:>9} {:>10} {:>8}",
            name, x.p50, x.p99, x.p999, x.max, x.n
        );
    }
    println!("p50 bridge / p50 plain TCP (lower of the two runs): busy {ratio:.2}x, default {ratio_backoff:.2}x");
    println!(
        "throughput, {thr_frames} frames already in the source (catch-up): {catch_up:.0} frames/s"
    );
    println!("throughput, one writer at full speed while replicating (live): {live:.0} frames/s");
}
