//! Remote calls through a real nats-server: `tape rpc expose` on root A
//! (or on both roots), a real `tape-echo` responder, and `tape call
//! --server`, `tape online --server` and [`RemoteRequester`] callers (in
//! processes of their own, `remote_roles.rs`).

use crate::bridge::setup::*;
use crate::child;
use crate::common::*;
use crate::nats::engine::*;
use crate::nats::remote_roles::fields;
use serde_json::Value;
use std::collections::HashMap;
use std::process::{Command, Output, Stdio};
use tape_nats::remote::{RemoteError, RemoteRequester};
use tape_nats::{Auth, Server};
use tape_testkit::eventually;

/// `tape-echo NAME` on `side`, started and online.
fn start_echo(side: &Side, name: &str) -> Kid {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tape-echo"));
    cmd.args([name, "--root", side.root.arg(), "--page-size", "1048576"])
        .env_remove("TAPE_ROOT")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    harden(&mut cmd);
    let mut kid = Kid::spawn(&format!("tape-echo {name}"), &mut cmd);
    let pid = kid.pid();
    wait_until(&format!("tape-echo {name} to be online"), || {
        if let Some(s) = kid.exited() {
            panic!("tape-echo {name} exited at start: {s}");
        }
        tape_service::Client::connect(side.root.path())
            .ok()
            .and_then(|mut c| c.find_endpoint(name).ok().flatten())
            .is_some_and(|p| p.pid == pid)
    });
    kid
}

/// Sends signal `sig` to a child.
fn signal(kid: &Kid, sig: libc::c_int) {
    // SAFETY: kill(2) on the pid of a child we have not reaped.
    let rc = unsafe { libc::kill(kid.pid() as libc::pid_t, sig) };
    assert_eq!(rc, 0, "kill({}, {sig})", kid.pid());
}

/// A running `tape rpc expose`, its stderr collected.
struct Expose {
    kid: Kid,
    log: Log,
}

fn expose(side: &Side, url: &str, names: &[&str], extra: &[&str]) -> Expose {
    let mut args = vec!["expose"];
    args.extend_from_slice(names);
    args.extend_from_slice(extra);
    args.extend(["--server", url]);
    let mut kid = Kid::spawn(
        "tape rpc expose",
        side.root
            .tape("rpc", &args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    );
    let log = Log::of(kid.child.stderr.take().unwrap(), "expose");
    Expose { kid, log }
}

/// `tape online --server URL --json <args>`: its exit code and lines.
fn online(url: &str, args: &[&str]) -> (Option<i32>, Vec<Value>) {
    let mut cmd = tape(&["online", "--server", url, "--json"]);
    cmd.args(args);
    let out = run(&mut cmd, b"");
    (out.status.code(), json_lines(&out.stdout))
}

/// Waits until an exposer of `side` lists `name` with `online` as given.
fn wait_exposed(url: &str, side: &Side, name: &str, want: bool) {
    wait_until(
        &format!("{name} exposed with online={want} on {}", side.root.arg()),
        || {
            online(url, &[])
                .1
                .iter()
                .any(|e| e["name"] == name && e["root"] == side.root.arg() && e["online"] == want)
        },
    );
}

/// `tape call <args> --server URL` from `side`, to its end within
/// `deadline` (a call that must not wait for its timeout).
fn call_within(side: &Side, url: &str, args: &[&str], deadline: Deadline) -> Output {
    let mut cmd = side.root.tape("call", args);
    cmd.args(["--server", url])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut kid = Kid::spawn(&format!("tape call {args:?}"), &mut cmd);
    let status = kid.wait_until(&deadline);
    let mut out = Vec::new();
    let mut err = Vec::new();
    use std::io::Read;
    kid.child
        .stdout
        .take()
        .unwrap()
        .read_to_end(&mut out)
        .unwrap();
    kid.child
        .stderr
        .take()
        .unwrap()
        .read_to_end(&mut err)
        .unwrap();
    Output {
        status,
        stdout: out,
        stderr: err,
    }
}

fn stderr_lines(o: &Output) -> Vec<String> {
    String::from_utf8_lossy(&o.stderr)
        .lines()
        .map(str::to_string)
        .collect()
}

fn requester(url: &str) -> RemoteRequester {
    RemoteRequester::connect(&Server::resolve(Some(url), Auth::None)).expect("connect")
}

/// Spawns a `remote-load` caller; returns it and its stdout lines.
fn load(root: &Root, arg: &str) -> (Kid, Lines) {
    let mut kid = child::spawn("remote-load", root.path(), arg);
    let lines = Lines::of(kid.child.stdout.take().unwrap());
    (kid, lines)
}

/// Reads a role's lines until one starts with `prefix` (after `ROLE `).
fn until(lines: &Lines, prefix: &str) -> String {
    let d = Deadline::secs(300);
    loop {
        let l = lines
            .next(&d, &format!("a line {prefix}..."))
            .unwrap_or_else(|| panic!("the role ended before saying {prefix}"));
        if let Some(m) = l.strip_prefix("ROLE ") {
            if m.starts_with(prefix) {
                return m.to_string();
            }
        }
    }
}

/// Reads `progress N` lines until N reaches `n`.
fn progress_to(lines: &Lines, n: u64) -> u64 {
    loop {
        let l = until(lines, "progress ");
        let k: u64 = l["progress ".len()..].parse().unwrap();
        if k >= n {
            return k;
        }
    }
}

/// Hex of `s`.
fn hex(s: &[u8]) -> String {
    s.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn a_call_from_root_b_reaches_a_responder_on_root_a_and_is_journaled_there() {
    let a = Side::new();
    let b = Side::new();
    let engine = Engine::start(a.root.path(), None);
    let url = engine.url();
    let _echo = start_echo(&a, "echo");
    let _x = expose(&a, &url, &["echo"], &[]);
    wait_exposed(&url, &a, "echo", true);

    let out = ok(
        &mut b.root.tape(
            "call",
            &["echo", "hello from b", "--type", "7", "--server", &url],
        ),
        b"",
    );
    assert_eq!(out, b"hello from b\n");
    // On A, like a local call: the request in the exposer's journal (its
    // timeout, then the data), the reply in the responder's.
    let req = tail_json(&a.root, &["rpc.tape-expose"]);
    let req = req.last().expect("the request is journaled");
    assert_eq!(req["type"], 7);
    let payload = req["payload_hex"].as_str().expect("binary payload");
    assert!(payload.ends_with(&hex(b"hello from b")), "{req}");
    let rep = tail_json(&a.root, &["rpc.echo"]);
    let rep = rep.last().expect("the reply is journaled");
    assert_eq!(rep["payload"], "hello from b");
    assert_eq!(rep["corr"], req["seq"]);
    assert_eq!(rep["type"], 7);

    // The Rust API: the reply's type, data and the exposer's host.
    let mut r = requester(&url);
    let got = r
        .call("echo", 9, b"typed", std::time::Duration::from_secs(30))
        .expect("OK");
    assert_eq!((got.msg_type, &got.data[..]), (9, &b"typed"[..]));
    assert_eq!(got.host, tape_nats::hostname());
    assert_eq!(r.stats().late + r.stats().stray, 0);
}

#[test]
fn no_comes_at_once_for_a_name_nobody_exposes_and_for_a_responder_that_is_down() {
    let a = Side::new();
    let b = Side::new();
    let engine = Engine::start(a.root.path(), None);
    let url = engine.url();
    let mut echo = start_echo(&a, "echo");
    let _x = expose(&a, &url, &["echo", "ghost"], &[]);
    wait_exposed(&url, &a, "echo", true);
    wait_exposed(&url, &a, "ghost", false);
    // Each with a 30 s timeout, each back well before it (the watchdog is
    // 10 s): NO, exit 3, one line.
    for name in ["nobody", "ghost"] {
        let o = call_within(
            &b,
            &url,
            &[name, "x", "--timeout", "30000"],
            Deadline::secs(10),
        );
        assert_eq!(o.status.code(), Some(3), "{name}: {:?}", stderr_lines(&o));
        let err = stderr_lines(&o);
        assert_eq!(err.len(), 1, "{err:?}");
        assert!(err[0].contains(name), "{}", err[0]);
    }
    let mut r = requester(&url);
    match r.call("nobody", 1, b"x", std::time::Duration::from_secs(30)) {
        Err(RemoteError::No { host: None, .. }) => {}
        other => panic!("expected NO, got {other:?}"),
    }
    // The responder goes down: NO at once too.
    echo.kill9();
    wait_exposed(&url, &a, "echo", false);
    let o = call_within(
        &b,
        &url,
        &["echo", "x", "--timeout", "30000"],
        Deadline::secs(10),
    );
    assert_eq!(o.status.code(), Some(3), "{:?}", stderr_lines(&o));
    // And back: OK again.
    let _echo = start_echo(&a, "echo");
    wait_exposed(&url, &a, "echo", true);
    let out = ok(
        &mut b.root.tape("call", &["echo", "back", "--server", &url]),
        b"",
    );
    assert_eq!(out, b"back\n");
}

#[test]
fn a_stopped_responder_gives_timeout_and_the_next_call_gets_its_own_reply() {
    let a = Side::new();
    let b = Side::new();
    let engine = Engine::start(a.root.path(), None);
    let url = engine.url();
    let echo = start_echo(&a, "echo");
    let _x = expose(&a, &url, &["echo"], &[]);
    wait_exposed(&url, &a, "echo", true);
    signal(&echo, libc::SIGSTOP);
    wait_until("the responder to be stopped", || {
        std::fs::read_to_string(format!("/proc/{}/stat", echo.pid())).is_ok_and(|s| {
            s.rsplit(')')
                .next()
                .is_some_and(|r| r.trim().starts_with('T'))
        })
    });
    let o = call_within(
        &b,
        &url,
        &["echo", "late", "--timeout", "1500"],
        Deadline::new(),
    );
    assert_eq!(o.status.code(), Some(4), "{:?}", stderr_lines(&o));
    assert!(o.stdout.is_empty());
    signal(&echo, libc::SIGCONT);
    let out = ok(
        &mut b.root.tape(
            "call",
            &["echo", "after", "--server", &url, "--timeout", "30000"],
        ),
        b"",
    );
    assert_eq!(
        out, b"after\n",
        "the late reply is never handed to the next call"
    );
}

#[test]
fn ten_thousand_calls_from_four_processes_each_get_their_own_reply_shared_by_two_exposers() {
    let a = Side::new();
    let b = Side::new();
    let engine = Engine::start(a.root.path(), None);
    let url = engine.url();
    let _ea = start_echo(&a, "echo");
    let _eb = start_echo(&b, "echo");
    let _xa = expose(&a, &url, &["echo"], &[]);
    let _xb = expose(&b, &url, &["echo"], &[]);
    wait_exposed(&url, &a, "echo", true);
    wait_exposed(&url, &b, "echo", true);
    let callers = Root::new();
    let roles: Vec<(Kid, Lines)> = (0..4)
        .map(|k| load(&callers, &format!("{url}|echo|2500|16|60000|p{k}")))
        .collect();
    for (mut kid, lines) in roles {
        let done = fields(&until(&lines, "done "));
        assert_eq!(done["ok"], 2500, "{done:?}");
        assert_eq!(done["no"] + done["timeout"], 0, "{done:?}");
        assert_eq!(done["matched"], 2500, "{done:?}");
        assert_eq!(done["late"] + done["stray"], 0, "{done:?}");
        assert!(kid.wait().success());
    }
    // Both machines took calls (queue group), 10,000 in all.
    let (na, nb) = (a.last_seq("rpc.tape-expose"), b.last_seq("rpc.tape-expose"));
    assert_eq!(na + nb, 10_000, "requests journaled on A and B");
    assert!(na > 0 && nb > 0, "the load is shared: {na} on A, {nb} on B");
}

#[test]
fn the_exposer_killed_and_restarted_under_load_answers_no_request_twice() {
    let a = Side::new();
    let engine = Engine::start(a.root.path(), None);
    let url = engine.url();
    let _echo = start_echo(&a, "echo");
    let mut x = expose(&a, &url, &["echo"], &[]);
    wait_exposed(&url, &a, "echo", true);
    let callers = Root::new();
    let roles: Vec<(Kid, Lines)> = (0..2)
        .map(|k| load(&callers, &format!("{url}|echo|until-stop|8|10000|k{k}")))
        .collect();
    let before: Vec<u64> = roles.iter().map(|(_, l)| progress_to(l, 500)).collect();
    let old_pid = x.kid.pid();
    x.kid.kill9();
    x = expose(&a, &url, &["echo"], &[]);
    x.log.wait_for("the new exposer to take calls", |l| {
        l.contains("online here")
    });
    wait_until("the new exposer to be listed, the old one gone", || {
        let (_, v) = online(&url, &[]);
        v.len() == 1 && v[0]["exposer_pid"] == x.kid.pid() && v[0]["exposer_pid"] != old_pid
    });
    for ((_, l), b) in roles.iter().zip(&before) {
        progress_to(l, b + 500);
    }
    std::fs::write(callers.path().join("stop"), b"").unwrap();
    for (mut kid, lines) in roles {
        let done = fields(&until(&lines, "done "));
        eprintln!("caller: {done:?}");
        assert_eq!(
            done["late"], 0,
            "a request answered twice, or late: {done:?}"
        );
        assert_eq!(done["stray"], 0, "{done:?}");
        assert_eq!(
            done["sent"],
            done["ok"] + done["no"] + done["timeout"],
            "every call ends OK, NO or TIMEOUT: {done:?}"
        );
        assert!(done["ok"] >= 1000, "{done:?}");
        assert!(kid.wait().success());
    }
    // On the responder's box: no request of the exposer answered twice.
    let me = tape_rpc::endpoint_id("tape-expose") as u64;
    let mut per: HashMap<u64, u32> = HashMap::new();
    for f in tail_json(&a.root, &["rpc.echo"]) {
        if f["dest"].as_u64() == Some(me) {
            *per.entry(f["corr"].as_u64().unwrap()).or_default() += 1;
        }
    }
    assert!(per.len() >= 2000, "{} replies", per.len());
    assert!(per.values().all(|&n| n == 1), "a request answered twice");
}

#[test]
fn tape_online_server_finds_pages_and_counts_exposed_names_across_machines() {
    let a = Side::new();
    let b = Side::new();
    let engine = Engine::start(a.root.path(), None);
    let url = engine.url();
    let _ea = start_echo(&a, "echo");
    let _eb = start_echo(&b, "echo");
    let _beta = start_echo(&b, "beta");
    let _xa = expose(&a, &url, &["echo", "alpha"], &[]);
    let mut xb = expose(&b, &url, &["echo", "beta"], &[]);
    wait_until("4 exposed names, 3 online", || {
        let (_, v) = online(&url, &["--count"]);
        v.first()
            .is_some_and(|c| c["count"] == 4 && c["online"] == 3)
    });
    let text = ok(&mut tape(&["online", "--server", &url, "--count"]), b"");
    assert_eq!(text, b"4\n");
    // Pages of 3, sorted by name then machine.
    let (code, p0) = online(&url, &["--per-page", "3", "--page", "0"]);
    assert_eq!(code, Some(0));
    let (_, p1) = online(&url, &["--per-page", "3", "--page", "1"]);
    let names: Vec<&str> = p0
        .iter()
        .chain(&p1)
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alpha", "beta", "echo", "echo"]);
    assert_eq!((p0.len(), p1.len()), (3, 1));
    let on = |e: &Value| (e["root"].as_str().unwrap().to_string(), e["online"] == true);
    assert_eq!(on(&p0[0]), (a.root.arg().to_string(), false));
    assert_eq!(on(&p0[1]), (b.root.arg().to_string(), true));
    // Find: one entry per machine; exit 3 when no machine has it online.
    let (code, echo) = online(&url, &["echo"]);
    assert_eq!(code, Some(0));
    let mut roots: Vec<&str> = echo.iter().map(|e| e["root"].as_str().unwrap()).collect();
    roots.sort();
    let mut want = vec![a.root.arg(), b.root.arg()];
    want.sort();
    assert_eq!(roots, want);
    assert!(echo.iter().all(|e| e["pid"].as_u64().is_some()));
    let (code, alpha) = online(&url, &["alpha"]);
    assert_eq!((code, alpha.len()), (Some(3), 1));
    let (code, nobody) = online(&url, &["nobody"]);
    assert_eq!((code, nobody.len()), (Some(3), 0));
    // A machine's exposer gone: its names are gone.
    xb.kid.kill9();
    wait_until("only A's names", || {
        let (_, v) = online(&url, &["--count"]);
        v.first()
            .is_some_and(|c| c["count"] == 2 && c["online"] == 1)
    });
}

#[test]
fn a_wrong_token_is_one_line_and_changes_nothing() {
    let a = Side::new();
    let b = Side::new();
    let engine = Engine::start(a.root.path(), Some("right-token-2"));
    let url = engine.url();
    let wrong = a.token_file("wrong-token");
    let wrong = wrong.to_str().unwrap();
    let right = a.token_file("right-token-2");
    let right = right.to_str().unwrap();
    let _echo = start_echo(&a, "echo");
    // The exposer: refused, one line, nothing made on the root.
    let out = run(
        &mut a.root.tape(
            "rpc",
            &["expose", "echo", "--server", &url, "--token-file", wrong],
        ),
        b"",
    );
    let err = stderr_lines(&out);
    assert_eq!(out.status.code(), Some(1), "{err:?}");
    assert_eq!(err.len(), 1, "{err:?}");
    assert!(err[0].contains("refused the credentials"), "{}", err[0]);
    let made = std::fs::read_dir(a.root.journal_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .any(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("rpc.tape-expose")
        });
    assert!(!made, "the exposer made its journal");
    // With the right token it serves.
    let _x = expose(&a, &url, &["echo"], &["--token-file", right]);
    _x.log
        .wait_for("the exposer to take calls", |l| l.contains("online here"));
    let answered = |args: &[&str]| {
        let mut cmd = b.root.tape("call", &["echo", "hi", "--server", &url]);
        cmd.args(args);
        run(&mut cmd, b"")
    };
    let o = eventually("a call with the right token", || {
        let o = answered(&["--token-file", right]);
        o.status.success().then_some(o)
    });
    assert_eq!(o.stdout, b"hi\n");
    let seqs = (a.last_seq("rpc.tape-expose"), a.last_seq("rpc.echo"));
    // The callers: refused, one line each, nothing sent.
    let o = answered(&["--token-file", wrong]);
    let err = stderr_lines(&o);
    assert_eq!((o.status.code(), err.len()), (Some(1), 1), "{err:?}");
    assert!(err[0].contains("refused the credentials"), "{}", err[0]);
    let o = answered(&[]);
    assert_eq!(o.status.code(), Some(1), "{:?}", stderr_lines(&o));
    assert_eq!(stderr_lines(&o).len(), 1);
    let o = run(
        &mut tape(&["online", "--server", &url, "--token-file", wrong]),
        b"",
    );
    let err = stderr_lines(&o);
    assert_eq!((o.status.code(), err.len()), (Some(1), 1), "{err:?}");
    assert_eq!(
        seqs,
        (a.last_seq("rpc.tape-expose"), a.last_seq("rpc.echo")),
        "nothing reached the responder"
    );
}

/// Sends one request with raw NATS headers `hdrs` (and a reply subject)
/// to `subject`; returns the reply's header block as text.
fn raw_request(port: u16, subject: &str, hdrs: &[(&str, &str)], body: &[u8]) -> String {
    use std::io::{BufRead, BufReader, Read, Write};
    let mut raw = Raw::connect(port, None).expect("raw connection");
    let mut h = String::from("NATS/1.0\r\n");
    for (k, v) in hdrs {
        h.push_str(&format!("{k}: {v}\r\n"));
    }
    h.push_str("\r\n");
    let mut m = format!(
        "SUB _T.bad 9\r\nHPUB {subject} _T.bad {} {}\r\n",
        h.len(),
        h.len() + body.len()
    )
    .into_bytes();
    m.extend_from_slice(h.as_bytes());
    m.extend_from_slice(body);
    m.extend_from_slice(b"\r\n");
    raw.s.write_all(&m).unwrap();
    raw.s
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let mut r = BufReader::new(raw.s.try_clone().unwrap());
    loop {
        let mut line = String::new();
        assert!(r.read_line(&mut line).unwrap() > 0, "closed before a reply");
        if line.starts_with("PING") {
            raw.s.write_all(b"PONG\r\n").unwrap();
            continue;
        }
        let parts: Vec<&str> = line.split_whitespace().collect();
        if parts.first() != Some(&"HMSG") {
            continue;
        }
        let hlen: usize = parts[parts.len() - 2].parse().unwrap();
        let total: usize = parts[parts.len() - 1].parse().unwrap();
        let mut b = vec![0u8; total + 2];
        r.read_exact(&mut b).unwrap();
        return String::from_utf8_lossy(&b[..hlen]).into_owned();
    }
}

#[test]
fn a_malformed_request_gets_error_and_a_server_restart_is_ridden_out() {
    let a = Side::new();
    let mut engine = Engine::start(a.root.path(), None);
    let url = engine.url();
    let _echo = start_echo(&a, "echo");
    let mut x = expose(&a, &url, &["echo"], &[]);
    wait_exposed(&url, &a, "echo", true);
    let subject = tape_nats::remote::subject_of("echo");
    for hdrs in [
        vec![("Tape-Type", "1"), ("Tape-Timeout-Us", "1000000")],
        vec![
            ("Tape-Id", "1"),
            ("Tape-Type", "x"),
            ("Tape-Timeout-Us", "1"),
        ],
        vec![("Tape-Id", "2"), ("Tape-Type", "1")],
        vec![("Tape-Id", "3"), ("Tape-Timeout-Us", "0")],
    ] {
        let got = raw_request(engine.port, &subject, &hdrs, b"junk");
        assert!(got.contains("Tape-Outcome: ERROR"), "{hdrs:?}: {got}");
        assert!(got.contains("Tape-Error: "), "{got}");
    }
    assert_eq!(a.last_seq("rpc.tape-expose"), 0, "nothing was forwarded");
    assert!(x.kid.exited().is_none(), "the exposer is still up");
    // The server killed: the caller says so in one line; the exposer waits.
    engine.kill9();
    let o = run(&mut tape(&["call", "echo", "x", "--server", &url]), b"");
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stderr_lines(&o).len(), 1, "{:?}", stderr_lines(&o));
    engine.restart();
    engine.wait_ready();
    wait_exposed(&url, &a, "echo", true);
    let out = eventually("a call after the server's restart", || {
        let o = run(&mut tape(&["call", "echo", "again", "--server", &url]), b"");
        o.status.success().then_some(o.stdout)
    });
    assert_eq!(out, b"again\n");
    assert!(x.kid.exited().is_none(), "the exposer rode it out");
    assert!(
        x.log.count(|l| l.contains("panicked")) == 0,
        "{:?}",
        x.log.all()
    );
}
