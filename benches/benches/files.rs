//! `tape file send` and `recv` (the library behind them, `tape_nats::Files`)
//! beside a bare copy through the same local `nats-server -js` (started
//! here on a free port and a temporary store), a 200 MiB random file.
//!
//! - **tape send**: `Files::send` of a new file: 128 KiB chunks, each
//!   with its SHA-256 in a header, 32 in flight, the record last. (The
//!   last run's file is removed first, outside the timing.)
//! - **tape replacing**: the same send over an existing file, whose 200 MiB
//!   of chunks are purged once the new record is in (inside the timing).
//! - **bare send**: the same file read in 128 KiB chunks and published
//!   with async-nats to a plain stream, 32 unacknowledged at most (acks on
//!   one wildcard reply subscription), no header, no digest.
//! - **tape recv**: `Files::recv` into a file: every chunk's digest and
//!   the whole file's SHA-256 checked, written to a temporary name,
//!   synced, renamed.
//! - **bare recv**: a push consumer of the bare stream with the same
//!   window (ack-all, 32 in flight), the chunks written to a file, synced.
//!
//! MB/s = 10^6 bytes per second of wall time of the call (send: until the
//! record is in, for tape; the last chunk acknowledged, for bare; recv:
//! until the file is synced, and renamed for tape). Every run checks the
//! received file's SHA-256 against the source's. The medians of the
//! ratios are taken run by run (tape and bare ran back to back).
//!
//! ```sh
//! cargo bench -p tape-benches --bench files              # 5 runs, medians
//! FILES_BENCH_RUNS=1 cargo bench -p tape-benches --bench files
//! ```

use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};
use tape_benches::NatsServer;
use tape_nats::{api, Auth, Files, FilesOptions, Server};

const SIZE: u64 = 200 << 20;
const CHUNK: usize = 128 << 10;
const WINDOW: u64 = 32;

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

/// What tape's commands run on: one worker for the connection.
fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

fn sha_of(p: &Path) -> Vec<u8> {
    let mut f = std::fs::File::open(p).unwrap();
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            return h.finalize().to_vec();
        }
        h.update(&buf[..n]);
    }
}

fn mbps(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64() / 1e6
}

/// A send of a new file (the last run's is removed first, outside the
/// timing, as the bare stream is purged outside its own).
fn tape_send(files: &Files, src: &Path) -> f64 {
    if files.info("bench.bin").unwrap().is_some() {
        files.remove("bench.bin").unwrap();
    }
    let t = Instant::now();
    let info = files.send(src, "bench.bin", &mut |_, _| {}).unwrap();
    let d = t.elapsed();
    assert_eq!(info.size, SIZE);
    mbps(SIZE, d)
}

fn tape_recv(files: &Files, dst: &Path, want: &[u8]) -> f64 {
    let t = Instant::now();
    let (info, path) = files.recv("bench.bin", dst, &mut |_, _| {}).unwrap();
    let d = t.elapsed();
    assert_eq!(info.size, SIZE);
    assert_eq!(sha_of(&path), want, "tape recv: the file sent");
    std::fs::remove_file(&path).unwrap();
    mbps(SIZE, d)
}

/// A send that replaces the file of that name (its chunks purged once the
/// new record is in, inside the timing).
fn tape_replace(files: &Files, src: &Path) -> f64 {
    let t = Instant::now();
    let info = files.send(src, "bench.bin", &mut |_, _| {}).unwrap();
    let d = t.elapsed();
    assert_eq!(info.size, SIZE);
    mbps(SIZE, d)
}

/// Publishes the file in chunks to stream BARE (emptied first), at most
/// [`WINDOW`] unacknowledged.
fn bare_send(url: &str, src: &Path) -> f64 {
    let rt = rt();
    let c = rt.block_on(async_nats::connect(url)).unwrap();
    rt.block_on(async {
        let cfg = serde_json::json!({
            "name": "BARE", "subjects": ["bare.>"], "storage": "file",
            "retention": "limits", "discard": "new", "num_replicas": 1,
            "max_msgs": -1, "max_bytes": -1, "max_age": 0, "max_msg_size": -1,
        });
        api::request(&c, "$JS.API.STREAM.CREATE.BARE".into(), &cfg)
            .await
            .unwrap()
            .or_else(|e| {
                if e.err_code == 10058 {
                    Ok(serde_json::json!({}))
                } else {
                    Err(e.description)
                }
            })
            .unwrap();
        api::request(
            &c,
            "$JS.API.STREAM.PURGE.BARE".into(),
            &serde_json::json!({}),
        )
        .await
        .unwrap()
        .unwrap();
    });
    let inbox = c.new_inbox();
    let mut acks = rt.block_on(c.subscribe(format!("{inbox}.*"))).unwrap();
    let mut f = std::fs::File::open(src).unwrap();
    let t = Instant::now();
    let (mut sent, mut acked) = (0u64, 0u64);
    let subject = async_nats::Subject::from("bare.file");
    loop {
        while sent - acked >= WINDOW || (sent > 0 && sent * CHUNK as u64 >= SIZE && acked < sent) {
            let m = rt
                .block_on(async {
                    tokio::time::timeout(Duration::from_secs(10), acks.next()).await
                })
                .expect("an ack within 10 s")
                .unwrap();
            assert!(!String::from_utf8_lossy(&m.payload).contains("error"));
            acked += 1;
        }
        if sent * CHUNK as u64 >= SIZE {
            break;
        }
        let mut buf = vec![0u8; CHUNK];
        f.read_exact(&mut buf).unwrap();
        let reply = async_nats::Subject::from(format!("{inbox}.{sent}"));
        rt.block_on(c.publish_with_reply(subject.clone(), reply, buf.into()))
            .unwrap();
        sent += 1;
    }
    mbps(SIZE, t.elapsed())
}

/// Reads stream BARE with a push consumer (ack-all, [`WINDOW`] in
/// flight) into a file, synced.
fn bare_recv(url: &str, dst: &Path, want: &[u8]) -> f64 {
    let rt = rt();
    let c = rt.block_on(async_nats::connect(url)).unwrap();
    let inbox = c.new_inbox();
    let mut sub = rt.block_on(c.subscribe(inbox.clone())).unwrap();
    let t = Instant::now();
    let cfg = serde_json::json!({ "stream_name": "BARE", "config": {
        "deliver_subject": inbox, "deliver_policy": "all", "ack_policy": "all",
        "max_ack_pending": WINDOW, "replay_policy": "instant",
        "idle_heartbeat": 1_000_000_000u64, "mem_storage": true, "num_replicas": 1,
    }});
    rt.block_on(api::request(
        &c,
        "$JS.API.CONSUMER.CREATE.BARE".into(),
        &cfg,
    ))
    .unwrap()
    .unwrap();
    let path = dst.join("bare.bin");
    let mut out = std::fs::File::create(&path).unwrap();
    let n = SIZE / CHUNK as u64;
    let mut got = 0u64;
    while got < n {
        let m = rt
            .block_on(async { tokio::time::timeout(Duration::from_secs(10), sub.next()).await })
            .expect("a chunk within 10 s")
            .unwrap();
        if m.status.is_some() {
            if let Some(r) = m.reply {
                rt.block_on(c.publish(r, bytes::Bytes::new())).unwrap();
            }
            continue;
        }
        out.write_all(&m.payload).unwrap();
        got += 1;
        if got % (WINDOW / 4) == 0 || got == n {
            rt.block_on(c.publish(m.reply.unwrap(), bytes::Bytes::from_static(b"+ACK")))
                .unwrap();
        }
    }
    out.sync_all().unwrap();
    let d = t.elapsed();
    drop(out);
    assert_eq!(sha_of(&path), want, "bare recv: the file sent");
    std::fs::remove_file(&path).unwrap();
    mbps(SIZE, d)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let runs: usize = std::env::var("FILES_BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let e = engine();
    let url = e.url();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.bin");
    {
        let mut r = std::fs::File::open("/dev/urandom").unwrap().take(SIZE);
        let mut w = std::fs::File::create(&src).unwrap();
        std::io::copy(&mut r, &mut w).unwrap();
    }
    let want = sha_of(&src);
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let files = Files::open(FilesOptions::new(Server {
        url: url.clone(),
        auth: Auth::None,
    }))
    .unwrap();
    let (mut ts, mut bs, mut tr, mut br, mut tx) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for r in 1..=runs {
        let b_s = bare_send(&url, &src);
        let t_s = tape_send(&files, &src);
        let b_r = bare_recv(&url, &out, &want);
        let t_r = tape_recv(&files, &out, &want);
        let t_x = tape_replace(&files, &src);
        println!(
            "run {r}: send bare {b_s:.0} MB/s, tape {t_s:.0} MB/s ({:.2}x), tape replacing {t_x:.0} MB/s | recv bare {b_r:.0} MB/s, tape {t_r:.0} MB/s ({:.2}x)",
            t_s / b_s,
            t_r / b_r
        );
        bs.push(b_s);
        ts.push(t_s);
        br.push(b_r);
        tr.push(t_r);
        tx.push(t_x);
    }
    let ratio = |a: &[f64], b: &[f64]| median(a.iter().zip(b).map(|(a, b)| a / b).collect());
    let (rs, rr) = (ratio(&ts, &bs), ratio(&tr, &br));
    let (bs, ts, br, tr, tx) = (median(bs), median(ts), median(br), median(tr), median(tx));
    println!(
        "median of {runs}, {} MiB: send bare {bs:.0} MB/s, tape {ts:.0} MB/s (run by run {rs:.2}x), tape replacing a file {tx:.0} MB/s; recv bare {br:.0} MB/s, tape {tr:.0} MB/s (run by run {rr:.2}x); SHA-256 equal every run",
        SIZE >> 20
    );
}
