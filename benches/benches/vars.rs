//! Shared variables: put → watch latency through one local `nats-server
//! -js` (started here on a free port and a temporary store), beside bare
//! async-nats in the same run.
//!
//! One process (this one) makes a change every 2 ms carrying its clock
//! reading (`tape_journal::clock::now_ns`, CLOCK_REALTIME); another process
//! (this binary run again in a role) receives it and subtracts that from
//! its own clock: one-way latency, p50/p99/p99.9/max.
//!
//! - **var**: `Vars::put` (read the key, compare-and-set publish, wait for
//!   the ack) → `Vars::watch` in the other process (what `tape var put`
//!   and `tape var watch` do, without the process start). Also: store →
//!   watch (the server's time stamp of the message to the watcher) and the
//!   put's own round trip.
//! - **js**: bare JetStream: a publish waiting for its ack on a plain
//!   stream → an ephemeral push consumer (no acks, flow control): the same
//!   store path without the key's read and its compare-and-set.
//! - **core**: bare core NATS publish (flushed) → subscribe: no store.
//!
//! Every phase checks that each change arrived once, in order.
//!
//! ```sh
//! cargo bench -p tape-benches --bench vars              # 5 runs, medians
//! VARS_BENCH_RUNS=1 VARS_BENCH_N=500 cargo bench -p tape-benches --bench vars
//! ```

use futures_util::StreamExt;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};
use tape_benches::NatsServer;
use tape_journal::clock::now_ns;
use tape_nats::{api, Auth, Server, Vars, VarsOptions};

const ROLE: &str = "VARS_BENCH_ROLE";
const PACE: Duration = Duration::from_millis(2);

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
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn vars(url: &str) -> Vars {
    let mut o = VarsOptions::new(Server {
        url: url.to_string(),
        auth: Auth::None,
    });
    o.bucket = "bench".into();
    Vars::open(o).expect("open the bucket")
}

/// What one receiver measured, ns.
#[derive(Debug, Clone, Default)]
struct Lat {
    p50: u64,
    p99: u64,
    p999: u64,
    max: u64,
}

impl Lat {
    fn of(v: &mut [u64]) -> Lat {
        v.sort_unstable();
        let at = |p: f64| v[((v.len() as f64 * p) as usize).min(v.len() - 1)];
        Lat {
            p50: at(0.50),
            p99: at(0.99),
            p999: at(0.999),
            max: *v.last().unwrap(),
        }
    }

    fn line(&self) -> String {
        format!("{} {} {} {}", self.p50, self.p99, self.p999, self.max)
    }

    fn parse(s: &str) -> Lat {
        let v: Vec<u64> = s.split(' ').map(|x| x.parse().unwrap()).collect();
        Lat {
            p50: v[0],
            p99: v[1],
            p999: v[2],
            max: v[3],
        }
    }
}

fn say(line: &str) {
    let mut o = std::io::stdout().lock();
    writeln!(o, "{line}").unwrap();
    o.flush().unwrap();
}

/// The payload of change `i`: `{"i":I,"t":NOW_NS}`.
fn stamp(i: u64) -> serde_json::Value {
    serde_json::json!({ "i": i, "t": now_ns() })
}

/// Index and latency of a received payload.
fn received(v: &serde_json::Value) -> (u64, u64) {
    let now = now_ns();
    let i = v["i"].as_u64().expect("i");
    let t = v["t"].as_i64().expect("t");
    (i, (now - t).max(0) as u64)
}

/// The receiving roles: `var`, `js`, `core`, each printing `ready` once it
/// listens, then `lat P50 P99 P999 MAX` (and for `var` a second line,
/// store → watch) after `n` changes.
fn role(role: &str) {
    let url = std::env::var("VARS_BENCH_URL").unwrap();
    let n: u64 = std::env::var("VARS_BENCH_N").unwrap().parse().unwrap();
    tape_nats::low_timer_slack();
    let mut lat = Vec::with_capacity(n as usize);
    let mut store = Vec::with_capacity(n as usize);
    let mut next = 0u64;
    let mut check = |i: u64| {
        assert_eq!(i, next, "change {i} came where {next} was expected");
        next += 1;
    };
    match role {
        "var" => {
            let v = vars(&url);
            let stop = AtomicBool::new(false);
            v.watch("lat", None, &stop, &mut || say("ready"), &mut |ch| {
                let (i, l) = received(&ch.value);
                check(i);
                lat.push(l);
                store.push((now_ns() - ch.time_ns).max(0) as u64);
                Ok((lat.len() as u64) < n)
            })
            .unwrap();
        }
        "js" => {
            let rt = rt();
            rt.block_on(async {
                let c = async_nats::connect(&url).await.unwrap();
                let inbox = c.new_inbox();
                let mut sub = c.subscribe(inbox.clone()).await.unwrap();
                let last = api::stream_info(&c, "BENCHJS")
                    .await
                    .unwrap()
                    .map_or(0, |s| s.last_seq);
                api::push_consumer(
                    &c,
                    "BENCHJS",
                    &inbox,
                    Some(last + 1),
                    Duration::from_secs(1),
                    Duration::from_secs(5),
                )
                .await
                .unwrap();
                say("ready");
                while (lat.len() as u64) < n {
                    let m = sub.next().await.unwrap();
                    if m.status.is_some() {
                        if let Some(r) = m.reply {
                            c.publish(r, bytes::Bytes::new()).await.unwrap();
                        }
                        continue;
                    }
                    let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
                    let (i, l) = received(&v);
                    check(i);
                    lat.push(l);
                }
            });
        }
        "core" => {
            let rt = rt();
            rt.block_on(async {
                let c = async_nats::connect(&url).await.unwrap();
                let mut sub = c.subscribe("bench.core").await.unwrap();
                c.flush().await.unwrap();
                say("ready");
                while (lat.len() as u64) < n {
                    let m = sub.next().await.unwrap();
                    let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
                    let (i, l) = received(&v);
                    check(i);
                    lat.push(l);
                }
            });
        }
        other => panic!("unknown role {other}"),
    }
    say(&format!("lat {}", Lat::of(&mut lat).line()));
    if !store.is_empty() {
        say(&format!("store {}", Lat::of(&mut store).line()));
    }
}

/// Paces `n` sends of `send(i)` every [`PACE`] while the receiver of
/// `phase` listens; returns what the receiver measured (and store → watch
/// for `var`) and the sends' own durations.
fn phase(url: &str, phase: &str, n: u64, mut send: impl FnMut(u64)) -> (Lat, Option<Lat>, Lat) {
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .env(ROLE, phase)
        .env("VARS_BENCH_URL", url)
        .env("VARS_BENCH_N", n.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(out.next().unwrap().unwrap(), "ready", "{phase} receiver");
    let mut took = Vec::with_capacity(n as usize);
    let start = Instant::now();
    for i in 0..n {
        let at = start + PACE * (i as u32 + 1);
        let left = at.saturating_duration_since(Instant::now());
        std::thread::sleep(left);
        let t = Instant::now();
        send(i);
        took.push(t.elapsed().as_nanos() as u64);
    }
    let mut lat = None;
    let mut store = None;
    for l in out.by_ref() {
        let l = l.unwrap();
        if let Some(r) = l.strip_prefix("lat ") {
            lat = Some(Lat::parse(r));
        } else if let Some(r) = l.strip_prefix("store ") {
            store = Some(Lat::parse(r));
        }
    }
    assert!(child.wait().unwrap().success(), "{phase} receiver failed");
    (
        lat.expect("the receiver's figures"),
        store,
        Lat::of(&mut took),
    )
}

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

fn us(ns: u64) -> String {
    format!("{:.1}", ns as f64 / 1000.0)
}

fn main() {
    if let Ok(r) = std::env::var(ROLE) {
        role(&r);
        return;
    }
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let runs: usize = std::env::var("VARS_BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let n: u64 = std::env::var("VARS_BENCH_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000);
    tape_nats::low_timer_slack();
    let e = engine();
    let url = e.url();
    let v = vars(&url);
    let rt = rt();
    let c = rt.block_on(async_nats::connect(&url)).unwrap();
    rt.block_on(api::create_stream(
        &c,
        "BENCHJS",
        "bench.js",
        "bench",
        &Default::default(),
    ))
    .unwrap();
    println!(
        "put -> watch, one change every {} ms, {n} a phase, {runs} runs (one-way, us: p50 p99 p99.9 max)",
        PACE.as_millis()
    );
    let mut rows: Vec<(&str, Vec<Lat>)> = vec![
        ("var: put -> watch", vec![]),
        ("var: store -> watch", vec![]),
        ("var: put's round trip", vec![]),
        ("js: publish -> push consumer", vec![]),
        ("js: publish's round trip", vec![]),
        ("core: publish -> subscribe", vec![]),
    ];
    for run in 0..runs {
        let (l, s, t) = phase(&url, "var", n, |i| {
            v.put("lat", &stamp(i)).unwrap();
        });
        rows[0].1.push(l);
        rows[1].1.push(s.unwrap());
        rows[2].1.push(t);
        let (l, _, t) = phase(&url, "js", n, |i| {
            let p = serde_json::to_vec(&stamp(i)).unwrap();
            let ack = rt.block_on(c.request("bench.js", p.into())).unwrap();
            assert!(!ack.payload.is_empty());
        });
        rows[3].1.push(l);
        rows[4].1.push(t);
        let (l, _, _) = phase(&url, "core", n, |i| {
            let p = serde_json::to_vec(&stamp(i)).unwrap();
            rt.block_on(async {
                c.publish("bench.core", p.into()).await.unwrap();
                c.flush().await.unwrap();
            });
        });
        rows[5].1.push(l);
        println!(
            "run {}: var p50 {} us, js p50 {} us, core p50 {} us",
            run + 1,
            us(rows[0].1[run].p50),
            us(rows[3].1[run].p50),
            us(rows[5].1[run].p50)
        );
    }
    println!("medians of {runs} runs:");
    for (name, ls) in &rows {
        let m = |f: fn(&Lat) -> u64| us(median(ls.iter().map(f).collect()));
        println!(
            "  {name:<30} p50 {:>8}  p99 {:>8}  p99.9 {:>8}  max {:>8}",
            m(|l| l.p50),
            m(|l| l.p99),
            m(|l| l.p999),
            m(|l| l.max)
        );
    }
    let ratio = |a: usize, b: usize| {
        median(rows[a].1.iter().map(|l| l.p50).collect()) as f64
            / median(rows[b].1.iter().map(|l| l.p50).collect()).max(1) as f64
    };
    println!(
        "  put -> watch p50 is {:.2}x bare JetStream's, {:.2}x bare core NATS's",
        ratio(0, 3),
        ratio(0, 5)
    );
}
