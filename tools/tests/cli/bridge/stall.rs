//! A subscriber that stops reading (its socket never drained) while a
//! second subscriber and the writer go on: the writer writes everything,
//! the second subscriber gets everything, and the server's memory stays
//! bounded: the journal is the buffer, not the server's heap.

use crate::bridge::setup::*;
use crate::common::*;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const N: u64 = 400_000;
/// Payload bytes per frame: N frames are ~60 MB of journal.
const WIDTH: usize = 100;
/// The bound on the server's anonymous memory (heap and stacks).
const RSS_ANON_LIMIT_KIB: u64 = 48 * 1024;

#[test]
fn stalled_subscriber_slows_nobody_and_holds_no_memory() {
    let src = Side::new();
    let dst = Side::new();
    // A long stall timeout: the stalled subscriber stays connected (and
    // stalled) for the whole test rather than being dropped.
    let serve = Serve::with_token(&src, &["--stall-timeout", "600"]);
    write_journal(&src.root, "md", &wide_lines(1..=1, WIDTH));

    // The stalled subscriber: subscribes, then never reads; it keeps
    // acking (as a live process would), so it is not taken for dead.
    let mut stalled = RawClient::connect(&serve.addr);
    stalled.subscribe("stalled", &["md"]);
    let stop = Arc::new(AtomicBool::new(false));
    let acker = {
        let stop = Arc::clone(&stop);
        let mut s = stalled.s.try_clone().unwrap();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Acquire) {
                let _ = s.write_all(&tape_bridge::wire::encode_ack(&[0]));
                std::thread::sleep(Duration::from_millis(300));
            }
        })
    };

    // The server's anonymous memory, sampled all along.
    let max_rss = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (stop, max_rss, pid) = (Arc::clone(&stop), Arc::clone(&max_rss), serve.pid());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Acquire) {
                if let Some(kib) = rss_anon_kib(pid) {
                    max_rss.fetch_max(kib, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };

    let pull = Pull::with_token(&dst, &serve.addr, "acct-live", &["md"]);
    pull.log
        .wait_for("the pull to connect", |l| l.contains("connected to"));
    let t0 = Instant::now();
    let mut w = LiveWriter::start(&src.root, "md");
    w.send(&wide_lines(2..=N, WIDTH));
    w.finish();
    let writer_time = t0.elapsed();
    dst.wait_seq("md", N);
    let replica_time = t0.elapsed();
    eprintln!(
        "writer wrote {N} frames in {writer_time:?}; the live replica had them all after {replica_time:?}"
    );

    // The stalled one is still connected, still stalled far behind.
    let st = crate::bridge::replicate::status_json(&src);
    let subs = st["subscribers"].as_array().unwrap();
    let get = |acct: &str| {
        subs.iter()
            .find(|s| s["account"] == acct)
            .unwrap_or_else(|| panic!("{acct} in {st}"))
            .clone()
    };
    let stalled_sent = get("stalled")["journals"][0]["seq_sent"].as_u64().unwrap();
    assert!(
        stalled_sent < N / 2,
        "the stalled subscriber got {stalled_sent} frames sent"
    );
    assert_eq!(
        get("stalled")["journals"][0]["lag"].as_u64(),
        Some(N - stalled_sent)
    );
    assert_same_frames(&src, &dst, "md", "md", N);

    stop.store(true, Ordering::Release);
    sampler.join().unwrap();
    acker.join().unwrap();
    let max = max_rss.load(Ordering::Relaxed);
    eprintln!("server RssAnon peaked at {max} KiB while {N} frames of {WIDTH} bytes went by");
    assert!(max > 0, "RssAnon was sampled");
    assert!(
        max < RSS_ANON_LIMIT_KIB,
        "the server's anonymous memory grew to {max} KiB"
    );
    drop(stalled);
    let mut serve = serve;
    assert!(serve.alive());
}
