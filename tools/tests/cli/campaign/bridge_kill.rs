//! `tape bridge serve` and `tape bridge pull` killed with SIGKILL at random
//! moments, over and over, while a writer process streams frames into the
//! source journal; afterwards the replica equals the source, frame by
//! frame.
//!
//! Two machines on one box (two roots, each with its own `tape service`,
//! as in the bridge's own tests: [`crate::bridge::setup`]). A `seq-writer`
//! ([`crate::roles`]) writes `md` on the source all along, paced, mixing
//! plain writes (with `dest` and `corr` set), claims committed and claims
//! dropped. Each round kills the serve, the pull, or (one round in five)
//! both at once, and starts the killed ones again at once: the serve on
//! the same address, the pull on the same replica. A quarter of the rounds
//! kill within 30 ms of the last restart, often while the restarted
//! process is still starting (binding, handshake, the replica's recovery,
//! the catch-up); the others kill up to 250 ms after the replica has moved
//! on since the last restart (so the restarted processes are known to
//! stream again before they die).
//!
//! After each kill the replica never holds fewer frames than before nor
//! more than the source. At the end the writer stops, the last pull
//! catches up, and the replica holds frames 1..=N of the source, each
//! equal in every header field (sequence number, write time, type,
//! source, destination, correlation id, flags, CRC32C, length) and
//! payload, with the content its sequence number gives it; nothing lost,
//! nothing twice; `tape verify` passes on both.

use super::{Rng, Talk};
use crate::bridge::setup::{Log, Pull, Serve, Side, TOKEN};
use crate::child;
use crate::common::*;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

/// `tape bridge serve --listen <addr>` on `side`, not waiting for it to
/// listen (a kill may land before it does).
fn spawn_serve(side: &Side, addr: &str, token: &Path) -> Serve {
    let mut cmd = side.root.tape(
        "bridge",
        &[
            "serve",
            "--listen",
            addr,
            "--token-file",
            token.to_str().unwrap(),
        ],
    );
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut kid = Kid::spawn("tape bridge serve", &mut cmd);
    let log = Log::of(kid.child.stderr.take().unwrap(), "serve");
    Serve {
        kid,
        addr: addr.to_string(),
        log,
    }
}

/// SIGKILLs `kid`, which must not have ended by itself before.
fn kill(kid: &mut Kid, what: &str, log: &Log, round: u64) {
    let st = kid.kill9();
    assert_eq!(
        st.signal(),
        Some(libc::SIGKILL),
        "round {round}: {what} ended by itself ({st}): {:#?}",
        log.all()
    );
}

/// Compares replica `md` with source `md` frame by frame; returns the
/// number of frames (both must hold 1..=n).
fn compare(src: &Side, dst: &Side) -> u64 {
    let open = |side: &Side| side.cursor("md").unwrap_or_else(|e| panic!("open md: {e}"));
    let (mut a, mut b) = (open(src), open(dst));
    let mut n = 0u64;
    let mut want = Vec::new();
    loop {
        match (
            a.next().expect("read the source"),
            b.next().expect("read the replica"),
        ) {
            (None, None) => return n,
            (Some(fa), Some(fb)) => {
                n += 1;
                let (ha, hb) = (fa.header(), fb.header());
                assert_eq!(ha.seq, n, "the source at frame {n}");
                let fields = |h: &tape_journal::format::FrameHeader| {
                    (
                        h.seq, h.time_ns, h.msg_type, h.source, h.dest, h.corr, h.flags, h.crc,
                        h.len,
                    )
                };
                assert_eq!(
                    fields(hb),
                    fields(ha),
                    "frame {n}: replica (seq, time_ns, type, source, dest, corr, flags, crc, len) differs from the source"
                );
                assert!(fa.payload() == fb.payload(), "frame {n}: payload differs");
                crate::roles::payload(n, &mut want);
                assert!(fb.payload() == &want[..], "frame {n}: not what was written");
            }
            (Some(fa), None) => panic!("the replica ends before seq {}", fa.seq()),
            (None, Some(fb)) => panic!("the replica has seq {} past the source", fb.seq()),
        }
    }
}

fn campaign(kills: u64, writer: &str) {
    let mut rng = Rng::new("bridge-kill");
    let src = Side::new();
    let dst = Side::new();
    let src_token = src.token_file(TOKEN);
    let mut serve = Serve::with_token(&src, &[]);
    let addr = serve.addr.clone();
    let mut w = child::spawn_with("seq-writer", src.root.path(), writer, Stdio::piped());
    let mut wt = Talk::of(&mut w);
    assert_eq!(wt.expect("the writer to start"), "ready 1");
    let account = "acct-campaign";
    let mut pull = Pull::with_token(&dst, &addr, account, &["md"]);
    // Every log, to count the sessions at the end (when all are drained).
    let (mut serve_logs, mut pull_logs) = (vec![serve.log.clone()], vec![pull.log.clone()]);

    let (mut rounds, mut serve_kills, mut pull_kills, mut both, mut early) = (0u64, 0, 0, 0, 0);
    let mut replica = 0u64;
    let mut mark = 0u64;
    while serve_kills + pull_kills < kills {
        let round = rounds;
        rounds += 1;
        let left = kills - serve_kills - pull_kills;
        let (kill_serve, kill_pull) = match rng.below(5) {
            0 if left >= 2 => (true, true),
            1 | 3 => (false, true),
            _ => (true, false),
        };
        if rng.below(4) == 0 {
            // Within 30 ms of the last restart, often while it starts.
            early += 1;
            std::thread::sleep(Duration::from_micros(rng.below(30_000)));
        } else {
            let d = Deadline::after(Duration::from_secs(120));
            while dst.last_seq("md") <= mark {
                assert!(
                    serve.alive(),
                    "round {round}: serve died: {:#?}",
                    serve.log.all()
                );
                assert!(
                    pull.kid.exited().is_none(),
                    "round {round}: pull died: {:#?}",
                    pull.log.all()
                );
                d.check(&format!(
                    "round {round}: the replica to move on past {mark} (source at {})",
                    src.last_seq("md")
                ));
                std::thread::sleep(Duration::from_millis(2));
            }
            std::thread::sleep(Duration::from_micros(rng.below(250_000)));
        }
        if kill_serve {
            kill(&mut serve.kid, "tape bridge serve", &serve.log, round);
            serve_kills += 1;
        }
        if kill_pull {
            kill(&mut pull.kid, "tape bridge pull", &pull.log, round);
            pull_kills += 1;
        }
        if kill_serve && kill_pull {
            both += 1;
        }
        let (s, r) = (src.last_seq("md"), dst.last_seq("md"));
        assert!(
            r >= replica,
            "round {round}: frames disappeared from the replica ({replica} -> {r})"
        );
        assert!(
            r <= s,
            "round {round}: the replica ({r}) is past the source ({s})"
        );
        replica = r;
        mark = r;
        if kill_serve {
            // Same address: the pull reconnects to it with backoff.
            serve = spawn_serve(&src, &addr, &src_token);
            serve_logs.push(serve.log.clone());
        }
        if kill_pull {
            pull = Pull::with_token(&dst, &addr, account, &["md"]);
            pull_logs.push(pull.log.clone());
        }
        assert!(w.exited().is_none(), "round {round}: the writer died");
    }

    wt.tell("stop");
    let last: u64 = loop {
        let m = wt.expect("the writer to stop");
        if let Some(n) = m.strip_prefix("stopped ") {
            break n.parse().unwrap();
        }
        assert!(m.starts_with("at "), "the writer said {m:?}");
    };
    assert!(w.wait().success(), "the writer failed");
    assert_eq!(
        src.last_seq("md"),
        last,
        "the source holds what was written"
    );
    dst.wait_seq("md", last);
    assert!(serve.alive(), "the last serve still runs");
    assert!(pull.kid.exited().is_none(), "the last pull still runs");
    let n = compare(&src, &dst);
    assert_eq!(n, last, "frames in the replica");
    for side in [&src, &dst] {
        let v = String::from_utf8(ok(&mut side.root.tape("verify", &["md"]), b"")).unwrap();
        assert!(v.contains(&format!("..={last})")), "{v}");
    }
    drop(pull);
    drop(serve);
    let count = |logs: &[Log], pred: &dyn Fn(&str) -> bool| -> usize {
        logs.iter().map(|l| l.count(pred)).sum()
    };
    let subscribed = count(&serve_logs, &|l| {
        l.contains("subscriber acct-campaign@") && l.contains(" connected: ")
    });
    let sessions = count(&pull_logs, &|l| l.contains("connected to"));
    println!(
        "campaign bridge-kill: runs {rounds}, frames {last}, faults injected {} (SIGKILL: serve {serve_kills}, pull {pull_kills}; both at once in {both} runs; {early} runs within 30 ms of the last restart), lost 0; replica equal frame by frame, pull sessions {sessions}, subscribers served {subscribed}",
        serve_kills + pull_kills
    );
}

#[test]
fn bridge_serve_and_pull_killed_20_times_replica_equals_source() {
    campaign(20, "gen=1,meta=1,burst=32,pause_us=1000");
}

#[test]
#[ignore = "long form: cargo test -p tape-tools --test cli campaign -- --ignored --nocapture"]
fn bridge_serve_and_pull_killed_100_times_long() {
    campaign(100, "gen=1,meta=1,burst=64,pause_us=1000");
}
