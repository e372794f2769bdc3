//! The caller roles of the remote-call tests (`remote.rs`), each a process
//! of its own (through `child::spawn`) with a [`RemoteRequester`]. Each
//! prints `ROLE ...` lines.

use crate::child::say;
use std::collections::VecDeque;
use std::path::Path;
use std::time::{Duration, Instant};
use tape_nats::remote::{RemoteError, RemotePending, RemoteRequester};
use tape_nats::{Auth, Server};

/// Runs caller role `role`.
pub fn run(role: &str, root: &Path, arg: &str) {
    match role {
        "remote-load" => load(root, arg),
        other => panic!("unknown role {other}"),
    }
}

/// `URL|DEST|N|WINDOW|TIMEOUT_MS|TAG`: `N` calls to `DEST` (or until the
/// file `<root>/stop` exists, for `N` = `until-stop`), up to `WINDOW` in
/// flight, each with payload `TAG:i`; every reply is checked to carry its
/// own request's payload and id. A NO or a TIMEOUT is counted (after a NO
/// the role pauses 5 ms: the exposer may be restarting) and the role goes
/// on with new requests. Prints `progress OK` every 250 replies and at the
/// end `done ok=A no=B timeout=C matched=D late=E stray=F sent=G`.
pub fn load(root: &Path, arg: &str) {
    let parts: Vec<&str> = arg.split('|').collect();
    let [url, dest, n, window, timeout_ms, tag] = parts[..] else {
        panic!("bad remote-load argument {arg:?}")
    };
    let until_stop = n == "until-stop";
    let n: u64 = if until_stop {
        u64::MAX
    } else {
        n.parse().unwrap()
    };
    let window: usize = window.parse().unwrap();
    let timeout = Duration::from_millis(timeout_ms.parse().unwrap());
    let stop_file = root.join("stop");
    let server = Server::resolve(Some(url), Auth::None);
    let mut r = RemoteRequester::connect(&server).unwrap_or_else(|e| panic!("connect: {e}"));
    let give_up = Instant::now() + Duration::from_secs(400);
    let mut inflight: VecDeque<(RemotePending, u64)> = VecDeque::new();
    let (mut ok, mut no, mut timeouts) = (0u64, 0u64, 0u64);
    let mut i = 0u64;
    let mut stopping = false;
    loop {
        if !stopping && i < n {
            let data = format!("{tag}:{i}");
            let p = r
                .send_nowait(dest, 1, data.as_bytes(), timeout)
                .unwrap_or_else(|e| panic!("send {i}: {e}"));
            inflight.push_back((p, i));
            i += 1;
        }
        let sending = !stopping && i < n;
        while inflight.len() >= window || (!sending && !inflight.is_empty()) {
            let (p, j) = inflight.pop_front().unwrap();
            match r.wait_reply(&p) {
                Ok(rep) => {
                    assert_eq!(
                        String::from_utf8_lossy(&rep.data),
                        format!("{tag}:{j}"),
                        "reply matched to the wrong request"
                    );
                    assert_eq!(rep.id, p.id(), "reply id");
                    ok += 1;
                    if ok % 250 == 0 {
                        say(&format!("progress {ok}"));
                        if until_stop && stop_file.exists() {
                            stopping = true;
                        }
                    }
                }
                Err(RemoteError::No { .. }) => {
                    no += 1;
                    std::thread::sleep(Duration::from_millis(5));
                    if until_stop && stop_file.exists() {
                        stopping = true;
                    }
                }
                Err(RemoteError::Timeout { .. }) => timeouts += 1,
                Err(e) => panic!("call {j}: {e}"),
            }
        }
        if (!sending || stopping) && inflight.is_empty() {
            break;
        }
        assert!(Instant::now() < give_up, "the load never finished");
    }
    assert_eq!(r.waiting(), 0);
    let s = r.stats();
    say(&format!(
        "done ok={ok} no={no} timeout={timeouts} matched={} late={} stray={} sent={}",
        s.matched, s.late, s.stray, s.sent
    ));
}

/// The `key=value` fields of a `done ...` line.
pub fn fields(line: &str) -> std::collections::HashMap<String, u64> {
    line.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.parse().expect("a number")))
        .collect()
}
