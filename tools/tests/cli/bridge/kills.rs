//! `tape bridge pull` killed with SIGKILL three times and `tape bridge
//! serve` once during a stream: the replica ends up equal to the source,
//! frame by frame: nothing lost, nothing twice, nothing out of order.

use crate::bridge::setup::*;
use crate::common::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Frames in each feed step: the writer stays at most a few steps ahead
/// of the replica, so the kills land while both are busy.
const STEP: u64 = 10_000;

fn kills_during_stream(n: u64) {
    let src = Side::new();
    let dst = Side::new();
    let mut serve = Serve::with_token(&src, &[]);
    let addr = serve.addr.clone();
    let mut w = LiveWriter::start(&src.root, "md");
    let mut stdin = w.stdin.take().unwrap();

    // The feeder keeps the writer going for the whole test, paced by the
    // replica (never more than 3 steps ahead of it).
    let dst_dir = dst.root.journal_dir();
    let failed = Arc::new(AtomicBool::new(false));
    let feeder_failed = Arc::clone(&failed);
    let feeder = std::thread::spawn(move || {
        let d = Deadline::after(std::time::Duration::from_secs(240));
        let mut next = 1;
        while next <= n {
            let behind = next.saturating_sub(3 * STEP);
            while tape_journal::stats(&dst_dir, "md").map_or(0, |s| s.last_seq) < behind {
                if feeder_failed.load(Ordering::Acquire) || d.left().is_zero() {
                    return stdin;
                }
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            let end = (next + STEP - 1).min(n);
            feed(&mut stdin, &lines(next..=end));
            next = end + 1;
        }
        stdin
    });

    let mut pull = Pull::with_token(&dst, &addr, "acct-k", &["md"]);
    let wait_past = |seq: u64, what: &str| {
        let d = Deadline::after(std::time::Duration::from_secs(120));
        while dst.last_seq("md") < seq {
            if d.left().is_zero() {
                failed.store(true, Ordering::Release);
            }
            d.check(what);
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    };
    for (i, frac) in [15u64, 35, 55].iter().enumerate() {
        wait_past(n * frac / 100, "the replica to move on");
        let at = dst.last_seq("md");
        pull.kid.kill9();
        eprintln!(
            "killed pull #{} at replica seq {at} (source {})",
            i + 1,
            src.last_seq("md")
        );
        pull = Pull::with_token(&dst, &addr, "acct-k", &["md"]);
    }
    wait_past(n * 75 / 100, "the replica to move on");
    serve.kid.kill9();
    eprintln!(
        "killed serve at replica seq {} (source {})",
        dst.last_seq("md"),
        src.last_seq("md")
    );
    // Same address: the pull reconnects to it with backoff.
    let serve = Serve::start(
        &src,
        &addr,
        &["--token-file", src.token_file(TOKEN).to_str().unwrap()],
    );
    pull.log
        .wait_for("the pull to see the server go", |l| l.contains("lost"));

    let stdin = feeder.join().expect("feeder");
    w.stdin = Some(stdin);
    w.finish();
    assert_eq!(src.last_seq("md"), n, "the source got every frame");
    dst.wait_seq("md", n);
    assert_same_frames(&src, &dst, "md", "md", n);
    ok(&mut dst.root.tape("verify", &["md"]), b"");
    assert!(pull.kid.exited().is_none(), "the last pull still runs");
    drop(serve);
}

#[test]
fn pull_killed_three_times_and_serve_once_during_a_million_frames() {
    kills_during_stream(1_000_000);
}
