//! The campaign: `tape nats export`, `tape nats import` and `nats-server`
//! each SIGKILLed at random moments and started again at once (the server
//! on the same store folder) while a writer streams frames; afterwards the
//! replica is compared with the source frame by frame (every header field
//! and payload): 0 lost, 0 duplicated. The short form (20 kills) runs with
//! `cargo test`; the long form (100 kills) with
//! `cargo test -p tape-tools --test cli nats::kills -- --ignored --nocapture`.

use crate::bridge::setup::*;
use crate::common::*;
use crate::nats::engine::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn campaign(kills: usize) {
    let started = Instant::now();
    let mut rng = Rng::new();
    let a = Side::new();
    let b = Side::new();
    let mut engine = Engine::start(a.root.path(), None);
    let url = engine.url();
    let mut w = LiveWriter::start(&a.root, "md");
    let stop = Arc::new(AtomicBool::new(false));
    let feed = feeder(
        a.root.journal_dir(),
        b.root.journal_dir(),
        w.stdin.take().unwrap(),
        500,
        20_000,
        Arc::clone(&stop),
        u64::MAX,
    );
    let mut export = Nats::start(&a, "export", &url, &["md"]);
    wait_stream(engine.port, "TAPE_md", 1);
    let mut import = Nats::start(&b, "import", &url, &["md"]);
    let mut counts = [0usize; 3];
    let mut at = 0u64;
    for k in 0..kills {
        // Each kill after the replica moved on since the last one, at a
        // random moment within the next 0.4 s.
        let d = Deadline::after(Duration::from_secs(60));
        while b.last_seq("md") <= at {
            d.check(&format!("the replica to move past {at} after kill {k}"));
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(rng.below(400)));
        at = b.last_seq("md");
        let victim = rng.below(3) as usize;
        counts[victim] += 1;
        match victim {
            0 => {
                export.kid.kill9();
                export = Nats::start(&a, "export", &url, &["md"]);
            }
            1 => {
                import.kid.kill9();
                import = Nats::start(&b, "import", &url, &["md"]);
            }
            _ => {
                engine.kill9();
                engine.restart();
            }
        }
        eprintln!(
            "kill {}: {} at replica seq {at} (source {})",
            k + 1,
            ["export", "import", "nats-server"][victim],
            a.last_seq("md")
        );
    }
    stop.store(true, Ordering::Relaxed);
    let (stdin, n) = feed.join().expect("feeder");
    w.stdin = Some(stdin);
    w.finish();
    assert_eq!(a.last_seq("md"), n);
    b.wait_seq("md", n);
    assert_same_frames(&a, &b, "md", "md", n);
    ok(&mut a.root.tape("verify", &["md"]), b"");
    ok(&mut b.root.tape("verify", &["md"]), b"");
    assert!(export.kid.exited().is_none() && import.kid.exited().is_none());
    eprintln!(
        "campaign nats_kill: frames {n}, faults injected {kills} (export {}, import {}, nats-server {}), lost 0, duplicated 0, {:.1} s",
        counts[0],
        counts[1],
        counts[2],
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn campaign_export_import_and_server_killed_20_times() {
    campaign(20);
}

#[test]
#[ignore = "long form: cargo test -p tape-tools --test cli nats::kills -- --ignored --nocapture"]
fn campaign_export_import_and_server_killed_100_times() {
    campaign(100);
}
