//! The service killed with SIGKILL and restarted, over and over, while a
//! writer process writes and two reader processes read, and an intruder
//! tries to become the journal's writer through every restart window.
//!
//! Each round: an intruder starts trying to register as writer of the
//! journal (refused: held); the service is killed at a random moment; the
//! intruder keeps trying while none runs (refused: down); a new service
//! starts; the writer and both readers register again on their own; the
//! intruder is refused again by the new service (held) or, if it got there
//! first, by the journal's lock (locked) — it must never get to write. The
//! writer never stops writing. At the end both readers have seen every
//! frame exactly once, in order, content and checksum right, with no
//! intruder frame among them, and `tape verify` passes.

use super::{Rng, Talk};
use crate::child;
use crate::common::*;
use std::process::Stdio;
use std::time::Duration;

fn campaign(restarts: u64) {
    let root = Root::new();
    let mut service = Service::start(&root);
    let dir = root.journal_dir();
    let mut rng = Rng::new("service-kill");
    let mut readers: Vec<(Kid, Talk)> = ["checker-1", "checker-2"]
        .iter()
        .map(|name| {
            let mut kid = child::spawn_with("check-reader", root.path(), name, Stdio::piped());
            let t = Talk::of(&mut kid);
            assert_eq!(t.expect("a reader to start"), "ready");
            (kid, t)
        })
        .collect();
    let mut writer = child::spawn_with(
        "seq-writer",
        root.path(),
        "gen=1,burst=16,pause_us=1000",
        Stdio::piped(),
    );
    let mut wt = Talk::of(&mut writer);
    assert_eq!(wt.expect("the writer to start"), "ready 1");
    let registered = |writer: u32, readers: &[u32]| {
        service_writer(&root, "md") == Some(writer) && {
            let r = service_readers(&root, "md");
            readers.iter().all(|p| r.contains(p))
        }
    };
    let reader_pids: Vec<u32> = readers.iter().map(|(k, _)| k.pid()).collect();
    wait_until("the writer and readers to register", || {
        registered(writer.pid(), &reader_pids)
    });

    let (mut held, mut locked, mut down, mut attempts) = (0u64, 0u64, 0u64, 0u64);
    for round in 0..restarts {
        let before = tape_journal::stats(&dir, "md").map_or(0, |s| s.last_seq);
        let mut intruder = child::spawn_with("intruder", root.path(), "", Stdio::piped());
        let mut it = Talk::of(&mut intruder);
        let mut kinds: Vec<String> = Vec::new();
        let mut attempt = |it: &Talk| -> (u64, String) {
            let m = it.expect("an intruder attempt");
            let rest = m
                .strip_prefix("attempt ")
                .unwrap_or_else(|| panic!("round {round}: the intruder said {m:?}"));
            let (n, kind) = rest.split_once(' ').unwrap();
            assert!(
                matches!(kind, "held" | "locked" | "down"),
                "round {round}: intruder attempt refused for another reason: {kind}"
            );
            kinds.push(kind.to_string());
            (n.parse().unwrap(), kind.to_string())
        };
        assert_eq!(
            attempt(&it).1,
            "held",
            "round {round}: the running service lets it in"
        );

        std::thread::sleep(Duration::from_micros(rng.below(50_000)));
        service.kid.kill9();
        // The window: nobody to register with.
        while attempt(&it).1 != "down" {}
        service = Service::start(&root);
        let (restarted_at, _) = attempt(&it);
        wait_until("the writer and readers to register again", || {
            registered(writer.pid(), &reader_pids)
        });
        // Refused by the new service, or by the journal's lock.
        loop {
            let (n, kind) = attempt(&it);
            if n > restarted_at && kind != "down" {
                break;
            }
        }
        it.tell("stop");
        loop {
            let m = it.expect("the intruder to stop");
            if m.starts_with("stopped ") {
                break;
            }
            let rest = m.strip_prefix("attempt ").expect("an attempt");
            let kind = rest.split_once(' ').unwrap().1;
            assert!(matches!(kind, "held" | "locked" | "down"), "{m}");
            kinds.push(kind.to_string());
        }
        let st = intruder.wait();
        assert!(st.success(), "round {round}: the intruder ended with {st}");
        for k in &kinds {
            match k.as_str() {
                "held" => held += 1,
                "locked" => locked += 1,
                _ => down += 1,
            }
        }
        attempts += kinds.len() as u64;
        wait_until("the writer to write on", || {
            tape_journal::stats(&dir, "md").is_ok_and(|s| s.last_seq > before)
        });
        assert!(writer.exited().is_none(), "round {round}: the writer died");
    }

    wt.tell("stop");
    let last: u64 = loop {
        let m = wt.expect("the writer to stop");
        if let Some(n) = m.strip_prefix("stopped ") {
            break n.parse().unwrap();
        }
        assert!(m.starts_with("at "), "the writer said {m:?}");
    };
    assert!(writer.wait().success(), "the writer failed");
    for (kid, t) in &mut readers {
        t.tell(&format!("end {last}"));
        loop {
            match t.expect("a reader to read every frame").as_str() {
                "first" => continue,
                done => {
                    assert_eq!(done, format!("done {last} {last}"), "a reader");
                    break;
                }
            }
        }
        assert!(kid.wait().success(), "a reader failed");
    }
    let v = String::from_utf8(ok(&mut root.tape("verify", &["md"]), b"")).unwrap();
    assert!(v.contains(&format!("(seq 1..={last})")), "{v}");
    println!(
        "campaign service-kill: runs {restarts}, frames {last}, faults injected {restarts} (service SIGKILL), lost 0; intruder attempts {attempts}: refused held {held}, locked {locked}, no service {down}, allowed 0"
    );
}

#[test]
fn service_killed_20_times_nothing_lost_one_writer() {
    campaign(20);
}

#[test]
#[ignore = "long form: cargo test -p tape-tools --test cli campaign -- --ignored --nocapture"]
fn service_killed_100_times_long() {
    campaign(100);
}
