//! The writer killed with SIGKILL at random moments, over and over, over
//! one journal, a new writer taking over at once each time, while one
//! reader process reads all along and `tape prune` runs now and then.
//!
//! A fifth of the kills land anywhere in a writer's start (registering,
//! recovering the journal, its first frames), the rest up to 15 ms into
//! its writing (appends, claims committed, claims dropped). After each
//! kill: every frame the writer had reported published is still there, and
//! the next writer starts at the next sequence number, at its first try
//! (the dead writer's registration and lock are gone at once). At the end
//! the reader has seen frames 1..=N exactly once, in order, content and
//! checksum right, never a frame of a later writer before an earlier one;
//! nothing after N; and `tape verify` passes.

use super::{Rng, Talk};
use crate::child;
use crate::common::*;
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::time::Duration;

fn campaign(runs: u64) {
    let root = Root::new();
    let _service = Service::start(&root);
    let dir = root.journal_dir();
    let mut rng = Rng::new("writer-kill");
    let mut reader = child::spawn_with("check-reader", root.path(), "checker", Stdio::piped());
    let mut rt = Talk::of(&mut reader);
    assert_eq!(rt.expect("the reader to start"), "ready");

    let mut last = 0u64;
    let (mut early, mut pruned, mut reading) = (0, 0, false);
    for run in 0..runs {
        let mut w = child::spawn("seq-writer", root.path(), &format!("gen={run}"));
        let wt = Talk::of(&mut w);
        if rng.below(5) == 0 {
            early += 1;
            std::thread::sleep(Duration::from_micros(rng.below(30_000)));
        } else {
            let ready = wt.expect("the writer to start");
            assert_eq!(ready, format!("ready {}", last + 1), "run {run}");
            std::thread::sleep(Duration::from_micros(rng.below(15_000)));
        }
        let st = w.kill9();
        assert_eq!(
            st.signal(),
            Some(libc::SIGKILL),
            "run {run}: the writer ended by itself: {st}"
        );
        // What it said before it died: where it started, how far it got.
        let mut published = last;
        let d = Deadline::new();
        while let Some(m) = wt.next(&d, "the dead writer's output to end") {
            if let Some(n) = m.strip_prefix("ready ") {
                assert_eq!(n, (last + 1).to_string(), "run {run}: {m}");
            } else if let Some(n) = m.strip_prefix("at ") {
                published = n.parse().unwrap();
            } else {
                panic!("run {run}: the writer said {m:?}");
            }
        }
        let now = match tape_journal::stats(&dir, "md") {
            Ok(s) => s.last_seq,
            Err(tape_journal::OpenError::NotFound { .. }) => 0,
            Err(e) => panic!("run {run}: {e}"),
        };
        assert!(
            now >= published,
            "run {run}: the writer had published {published}, the journal ends at {now}"
        );
        assert!(
            now >= last,
            "run {run}: frames disappeared ({last} -> {now})"
        );
        last = now;

        if run % 25 == 24 && last > 0 {
            if !reading {
                // Pruning before the reader holds a page would take frames
                // it has not read yet.
                assert_eq!(rt.expect("the reader's first frame"), "first");
                reading = true;
            }
            let out = ok(&mut root.tape("prune", &["md", "--keep-last", "2"]), b"");
            let out = String::from_utf8(out).unwrap();
            if let Some(r) = out.split("deleted pages ").nth(1) {
                let (a, b) = r.split_once("..=").unwrap();
                let b: String = b.chars().take_while(char::is_ascii_digit).collect();
                pruned += b.parse::<u64>().unwrap() - a.parse::<u64>().unwrap() + 1;
            } else if out.contains("deleted page ") {
                pruned += 1;
            }
        }
    }
    assert!(last > 0, "no frame in {runs} runs");
    rt.tell(&format!("end {last}"));
    loop {
        match rt.expect("the reader to read every frame").as_str() {
            "first" => continue,
            done => {
                assert_eq!(done, format!("done {last} {last}"), "the reader");
                break;
            }
        }
    }
    let st = reader.wait();
    assert!(st.success(), "the reader failed: {st}");
    let v = String::from_utf8(ok(&mut root.tape("verify", &["md"]), b"")).unwrap();
    assert!(v.contains(&format!("..={last})")), "{v}");
    println!(
        "campaign writer-kill: runs {runs}, frames {last}, faults injected {runs} (SIGKILL, {early} during start-up), lost 0, pages pruned meanwhile {pruned}"
    );
}

#[test]
fn writer_killed_100_times_reader_sees_every_frame_once() {
    campaign(100);
}

#[test]
#[ignore = "long form: cargo test -p tape-tools --test cli campaign -- --ignored --nocapture"]
fn writer_killed_1000_times_long() {
    campaign(1000);
}
