//! The request/reply roles the tests in `rpc.rs` run as processes of their
//! own (through `child::spawn`). Each prints `ROLE ...` lines.

use crate::child::say;
use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};
use tape_rpc::{CallError, Requester, Responder};

const PAGE: u64 = 1 << 20;
const LONG: Duration = Duration::from_secs(60);

fn requester(root: &Path, name: &str) -> Requester {
    Requester::builder(name)
        .root(root)
        .page_size(PAGE)
        .create()
        .unwrap_or_else(|e| panic!("create requester {name}: {e}"))
}

/// `NAME:N:WINDOW:DEST`: `N` requests to `DEST` with up to `WINDOW` in
/// flight (`send_nowait`, then `wait_reply` of the oldest; every tenth a
/// plain `call`), each with payload `NAME:i`, and every reply checked to be
/// its own. A NO (the responder is restarting) is retried as a new request
/// after a pause. Prints `progress i` every 250 and `done N nos=K` at the
/// end. `N` = `until-stop`: until the file `<root>/stop` exists.
pub fn load(root: &Path, arg: &str) {
    let parts: Vec<&str> = arg.split(':').collect();
    let [name, n, window, dest] = parts[..] else {
        panic!("bad load argument {arg:?}")
    };
    let stop_file = root.join("stop");
    let until_stop = n == "until-stop";
    let mut n: u64 = if until_stop {
        u64::MAX
    } else {
        n.parse().unwrap()
    };
    let window: usize = window.parse().unwrap();
    let mut c = requester(root, name);
    let mut nos = 0u64;
    let mut inflight: VecDeque<(tape_rpc::Pending, u64)> = VecDeque::new();
    let check = |i: u64, data: &[u8], corr: u64, want_corr: Option<u64>| {
        let want = format!("{name}:{i}");
        assert_eq!(
            std::str::from_utf8(data).unwrap(),
            want,
            "reply matched to the wrong request"
        );
        if let Some(w) = want_corr {
            assert_eq!(corr, w, "reply corr");
        }
    };
    let give_up = Instant::now() + Duration::from_secs(240);
    let mut i = 0;
    while i < n {
        let payload = format!("{name}:{i}");
        if i % 10 == 9 {
            loop {
                match c.call(dest, 1, payload.as_bytes(), LONG) {
                    Ok(r) => {
                        check(i, r.data(), r.corr(), None);
                        break;
                    }
                    Err(CallError::No { .. }) => {
                        nos += 1;
                        assert!(Instant::now() < give_up, "{dest} never came back");
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Err(e) => panic!("call {i}: {e}"),
                }
            }
        } else {
            let p = loop {
                match c.send_nowait_within(dest, 1, payload.as_bytes(), LONG) {
                    Ok(p) => break p,
                    Err(CallError::No { .. }) => {
                        nos += 1;
                        assert!(Instant::now() < give_up, "{dest} never came back");
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Err(e) => panic!("send {i}: {e}"),
                }
            };
            inflight.push_back((p, i));
        }
        while inflight.len() > window || (i + 1 == n && !inflight.is_empty()) {
            let (p, j) = inflight.pop_front().unwrap();
            let r = c
                .wait_reply(&p)
                .unwrap_or_else(|e| panic!("reply to request {j}: {e}"));
            check(j, r.data(), r.corr(), Some(p.corr()));
        }
        i += 1;
        if i % 250 == 0 {
            say(&format!("progress {i}"));
            if until_stop && stop_file.exists() {
                // Finish with what is in flight.
                n = i;
                while let Some((p, j)) = inflight.pop_front() {
                    let r = c
                        .wait_reply(&p)
                        .unwrap_or_else(|e| panic!("reply to request {j}: {e}"));
                    check(j, r.data(), r.corr(), Some(p.corr()));
                }
            }
        }
    }
    assert_eq!(c.waiting(), 0);
    say(&format!("done {n} nos={nos}"));
}

/// Serves until the test process is gone: returns when the parent changes.
fn serve_until_orphaned(
    r: &mut Responder,
    mut handler: impl FnMut(&tape_rpc::Request<'_>, &mut tape_rpc::Respond<'_>),
) {
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let parent = std::os::unix::process::parent_id();
    std::thread::spawn(move || {
        while std::os::unix::process::parent_id() == parent {
            std::thread::sleep(Duration::from_millis(100));
        }
        s.store(true, std::sync::atomic::Ordering::Release);
    });
    r.run(&stop, &mut handler).expect("serve");
}

/// Responder `gated`: echoes, but a request of type 2 is held (after
/// printing `holding CORR`) until the file `<root>/release` exists.
pub fn gated(root: &Path) {
    let mut r = Responder::builder("gated")
        .root(root)
        .page_size(PAGE)
        .create()
        .expect("create gated");
    say("ready");
    let release = root.join("release");
    serve_until_orphaned(&mut r, |req, out| {
        if req.msg_type() == 2 {
            say(&format!("holding {}", req.seq()));
            let give_up = Instant::now() + LONG;
            while !release.exists() {
                assert!(Instant::now() < give_up, "never released");
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        out.reply(req.msg_type(), req.data()).expect("reply");
    });
}

/// Requester `impatient`: a call to `gated` that times out, then at once
/// one that must succeed with its own reply.
pub fn impatient(root: &Path) {
    let mut c = requester(root, "impatient");
    match c.call("gated", 2, b"slow", Duration::from_secs(2)) {
        Err(CallError::Timeout { .. }) => say("timeout"),
        Ok(r) => panic!("the held call was answered: {:?}", r.data()),
        Err(e) => panic!("held call: {e}"),
    }
    let r = c
        .call("gated", 1, b"quick", LONG)
        .expect("the call after a timeout");
    say(&format!(
        "ok {} corr {}",
        std::str::from_utf8(r.data()).unwrap(),
        r.corr()
    ));
}

/// Requester `pair` (for a responder `echo` that the test has stopped):
/// sends `short` (deadline 300 ms) and `long` (deadline 60 s), waits until
/// `short` has timed out, prints `sent SHORT LONG` (their corrs), then
/// waits for `long`'s reply and prints `ok DATA`.
pub fn pair(root: &Path) {
    let mut c = requester(root, "pair");
    let short = c
        .send_nowait_within("echo", 1, b"short", Duration::from_millis(300))
        .expect("send short");
    let long = c
        .send_nowait_within("echo", 1, b"long", LONG)
        .expect("send long");
    let give_up = Instant::now() + LONG;
    loop {
        match c.poll_reply(&short) {
            Err(CallError::Timeout { .. }) => break,
            Ok(None) => {}
            other => panic!("short: {other:?}"),
        }
        assert!(Instant::now() < give_up, "short never timed out");
        std::thread::sleep(Duration::from_millis(10));
    }
    say(&format!("sent {} {}", short.corr(), long.corr()));
    let r = c
        .wait_reply(&long)
        .expect("long is answered after the restart");
    say(&format!("ok {}", std::str::from_utf8(r.data()).unwrap()));
}

/// `n` responders `ep-00`, `ep-01`, ... in this process, which print
/// `ready` and then hold them (without serving) until killed.
pub fn many(root: &Path, n: usize) {
    let eps: Vec<Responder> = (0..n)
        .map(|i| {
            Responder::builder(&format!("ep-{i:02}"))
                .root(root)
                .page_size(PAGE)
                .create()
                .expect("create responder")
        })
        .collect();
    say("ready");
    let parent = std::os::unix::process::parent_id();
    while std::os::unix::process::parent_id() == parent {
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(eps);
}
