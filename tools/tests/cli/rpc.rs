//! Request/reply between processes: `tape call` and `tape online`, the
//! `tape-echo` example responder, and requester and responder roles of
//! their own (rpc_roles.rs), all against a real `tape service`.

use crate::child;
use crate::common::*;
use std::collections::HashMap;
use std::process::{Command, Stdio};

/// `tape-echo <name> --root <root>` with 1 MiB pages, started and online.
fn start_echo(root: &Root, name: &str) -> Kid {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tape-echo"));
    cmd.args([name, "--root", root.arg(), "--page-size", "1048576"])
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
        endpoint_pid(root, name) == Some(pid)
    });
    kid
}

/// Pid of the live endpoint `name`, asked of the service.
fn endpoint_pid(root: &Root, name: &str) -> Option<u32> {
    tape_service::Client::connect(root.path())
        .ok()?
        .find_endpoint(name)
        .ok()?
        .map(|p| p.pid)
}

/// Sends SIGSTOP or SIGCONT to a child.
fn signal(kid: &Kid, sig: libc::c_int) {
    // SAFETY: kill(2) on the pid of a child we have not reaped.
    let rc = unsafe { libc::kill(kid.pid() as libc::pid_t, sig) };
    assert_eq!(rc, 0, "kill({}, {sig})", kid.pid());
}

/// A role process and its `ROLE` lines.
struct Role {
    kid: Kid,
    lines: Lines,
    name: String,
}

impl Role {
    fn spawn(root: &Root, role: &str, arg: &str) -> Role {
        let mut kid = child::spawn(role, root.path(), arg);
        let lines = Lines::of(kid.child.stdout.take().expect("stdout piped"));
        Role {
            kid,
            lines,
            name: format!("{role} {arg}"),
        }
    }

    /// The next `ROLE` line (fails if the role ends first).
    fn next(&self) -> String {
        let d = Deadline::new();
        loop {
            let l = self
                .lines
                .next(&d, &format!("a line from {}", self.name))
                .unwrap_or_else(|| panic!("{} ended without saying more", self.name));
            if let Some(msg) = child::role_lines(&l).first() {
                return msg.to_string();
            }
        }
    }

    /// Reads lines until one starting with `prefix`; returns it.
    fn until(&self, prefix: &str) -> String {
        loop {
            let l = self.next();
            if l.starts_with(prefix) {
                return l;
            }
        }
    }

    fn success(&mut self) {
        let s = self.kid.wait();
        assert!(s.success(), "{} exited with {s}", self.name);
    }
}

/// Every reply (a frame with a corr) in journal `rpc.<name>`, as
/// (requester id, corr).
fn replies(root: &Root, name: &str) -> Vec<(u32, u64)> {
    let mut c = tape_journal::Cursor::open(
        &root.journal_dir(),
        &format!("rpc.{name}"),
        tape_journal::Start::First,
        tape_journal::CursorOptions {
            verify_crc: true,
            populate: false,
        },
    )
    .expect("open the responder's journal");
    let mut v = Vec::new();
    while let Some(f) = c.next().expect("read the responder's journal") {
        if f.corr() != 0 {
            v.push((f.dest(), f.corr()));
        }
    }
    v
}

/// Number of replies per requester in `rpc.<name>` after sequence `seq`.
fn replies_after(root: &Root, name: &str, seq: u64) -> HashMap<u32, usize> {
    let mut c = tape_journal::Cursor::open(
        &root.journal_dir(),
        &format!("rpc.{name}"),
        tape_journal::Start::Seq(seq + 1),
        tape_journal::CursorOptions::default(),
    )
    .expect("open the responder's journal");
    let mut n = HashMap::new();
    while let Some(f) = c.next().expect("read the responder's journal") {
        if f.corr() != 0 {
            *n.entry(f.dest()).or_insert(0) += 1;
        }
    }
    n
}

/// Replies per requester, checking that none was answered twice.
fn replies_once(root: &Root, name: &str) -> HashMap<u32, Vec<u64>> {
    let mut per: HashMap<u32, Vec<u64>> = HashMap::new();
    for (dest, corr) in replies(root, name) {
        per.entry(dest).or_default().push(corr);
    }
    for (dest, corrs) in &per {
        let mut sorted = corrs.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(
            sorted.len(),
            corrs.len(),
            "a request of requester {dest} was answered twice"
        );
    }
    per
}

#[test]
fn call_answers_ok_no_and_timeout_with_their_exit_codes() {
    let root = Root::new();
    let _service = Service::start(&root);
    let echo = start_echo(&root, "echo");

    // OK: the reply on stdout, exit 0.
    let o = run(
        // (A long timeout: the box may be loaded; a reply comes when it comes.)
        &mut root.tape(
            "call",
            &["echo", "hello world", "--type", "7", "--timeout", "60000"],
        ),
        b"",
    );
    assert!(o.status.success(), "{o:?}");
    assert_eq!(o.stdout, b"hello world\n");

    // NO: exit 3, one sentence naming the endpoint, nothing sent.
    let o = run(&mut root.tape("call", &["nobody", "x"]), b"");
    assert_eq!(o.status.code(), Some(3), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("nobody") && err.lines().count() == 1, "{err}");

    // TIMEOUT: a stopped responder cannot answer; exit 4.
    signal(&echo, libc::SIGSTOP);
    let o = run(
        &mut root.tape("call", &["echo", "late", "--timeout", "200"]),
        b"",
    );
    signal(&echo, libc::SIGCONT);
    assert_eq!(o.status.code(), Some(4), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("200 ms"));

    // And OK again, from a new `tape call`.
    let o = run(
        &mut root.tape("call", &["echo", "again", "--timeout", "60000"]),
        b"",
    );
    assert_eq!(o.stdout, b"again\n", "{o:?}");

    // `tape call` leaves no journal behind.
    let left: Vec<_> = tape_journal::list_journals(&root.journal_dir())
        .unwrap()
        .into_iter()
        .filter(|j| j.starts_with("rpc.tape-call-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");

    // The reply journal holds each answered request once (hello world and
    // again; the late one expired or was answered once after SIGCONT).
    let per = replies_once(&root, "echo");
    let total: usize = per.values().map(Vec::len).sum();
    assert!((2..=3).contains(&total), "{per:?}");
}

#[test]
fn a_call_that_times_out_is_followed_at_once_by_one_that_succeeds() {
    let root = Root::new();
    let _service = Service::start(&root);
    let gated = Role::spawn(&root, "rpc-gated", "");
    assert_eq!(gated.next(), "ready");
    let mut impatient = Role::spawn(&root, "rpc-impatient", "");

    // The responder holds the first request past its caller's deadline.
    assert_eq!(gated.next(), "holding 1");
    assert_eq!(impatient.next(), "timeout");
    // The second call is already waiting; release the first: its late
    // reply is written first, then the second's, and the caller must take
    // only its own.
    std::fs::write(root.path().join("release"), b"").unwrap();
    assert_eq!(impatient.next(), "ok quick corr 2");
    impatient.success();

    let per = replies_once(&root, "gated");
    let mine = &per[&tape_rpc::endpoint_id("impatient")];
    assert_eq!(mine, &[1, 2], "the late reply is in the journal, first");
}

#[test]
fn ten_thousand_calls_from_four_processes_each_reply_matched() {
    const PER: u64 = 2500;
    let root = Root::new();
    let _service = Service::start(&root);
    let _echo = start_echo(&root, "echo");
    let mut roles: Vec<Role> = (0..4)
        .map(|i| Role::spawn(&root, "rpc-load", &format!("load-{i}:{PER}:8:echo")))
        .collect();
    for r in &mut roles {
        // Each role checks that every reply is its own request's.
        assert_eq!(r.until("done"), format!("done {PER} nos=0"));
        r.success();
    }
    let per = replies_once(&root, "echo");
    for i in 0..4 {
        let id = tape_rpc::endpoint_id(&format!("load-{i}"));
        assert_eq!(per.get(&id).map(Vec::len), Some(PER as usize), "load-{i}");
    }
    assert_eq!(per.len(), 4);
}

#[test]
fn responder_killed_and_restarted_answers_nothing_twice() {
    let root = Root::new();
    let _service = Service::start(&root);
    let mut echo = start_echo(&root, "echo");
    let mut roles: Vec<Role> = (0..2)
        .map(|i| Role::spawn(&root, "rpc-load", &format!("load-{i}:until-stop:8:echo")))
        .collect();

    // Mid-run (the loads go on until told to stop): SIGKILL with requests
    // in flight, then the same name again, and a while more.
    for r in &roles {
        r.until("progress 1000");
    }
    echo.kill9();
    let before = tape_journal::stats(&root.journal_dir(), "rpc.echo")
        .unwrap()
        .last_seq;
    let mut echo = start_echo(&root, "echo");
    wait_until("the restarted responder to answer 500 more of each", || {
        let after = replies_after(&root, "echo", before);
        (0..2).all(|i| {
            after
                .get(&tape_rpc::endpoint_id(&format!("load-{i}")))
                .is_some_and(|n| *n >= 500)
        })
    });
    std::fs::write(root.path().join("stop"), b"").unwrap();
    let mut answered = HashMap::new();
    for (i, r) in roles.iter_mut().enumerate() {
        // Every request was answered with its own reply: those in flight
        // at the kill by the restarted responder (NOs meanwhile were
        // retried as new requests).
        let done = r.until("done");
        let n: usize = done.split_whitespace().nth(1).unwrap().parse().unwrap();
        answered.insert(tape_rpc::endpoint_id(&format!("load-{i}")), n);
        r.success();
    }

    // Requests published while it is down: `long` is answered after the
    // restart, `short` expired first and is not.
    signal(&echo, libc::SIGSTOP);
    let mut pair = Role::spawn(&root, "rpc-pair", "");
    let sent = pair.until("sent");
    let corrs: Vec<u64> = sent
        .split_whitespace()
        .skip(1)
        .map(|c| c.parse().unwrap())
        .collect();
    let (short, long) = (corrs[0], corrs[1]);
    echo.kill9();
    let _echo = start_echo(&root, "echo");
    assert_eq!(pair.next(), "ok long");
    pair.success();

    // In the journal: each request answered once; every load request
    // answered; `short` never.
    let per = replies_once(&root, "echo");
    for (id, n) in &answered {
        assert_eq!(per[id].len(), *n, "requester {id}");
    }
    let pair_replies = &per[&tape_rpc::endpoint_id("pair")];
    assert_eq!(pair_replies, &[long], "short={short}");
}

#[test]
fn online_pages_over_fifty_endpoints_each_once() {
    let root = Root::new();
    let _service = Service::start(&root);
    let many = Role::spawn(&root, "rpc-many", "50");
    assert_eq!(many.next(), "ready");

    let count = ok(&mut root.tape("online", &["--count"]), b"");
    assert_eq!(String::from_utf8(count).unwrap().trim(), "50");

    let mut seen = Vec::new();
    for page in 0.. {
        let out = ok(
            &mut root.tape(
                "online",
                &["--page", &page.to_string(), "--per-page", "7", "--json"],
            ),
            b"",
        );
        let lines = json_lines(&out);
        if lines.is_empty() {
            assert_eq!(page, 8, "50 endpoints in pages of 7");
            break;
        }
        for l in lines {
            assert_eq!(l["kind"], "responder", "{l}");
            assert_eq!(l["pid"].as_u64(), Some(many.kid.pid() as u64), "{l}");
            assert!(l["since_ns"].as_u64().unwrap() > 0);
            seen.push((
                l["id"].as_u64().unwrap(),
                l["name"].as_str().unwrap().to_string(),
            ));
        }
    }
    // Registration order, each once.
    assert!(seen.windows(2).all(|w| w[0].0 < w[1].0), "{seen:?}");
    let mut names: Vec<String> = seen.into_iter().map(|(_, n)| n).collect();
    names.sort();
    let want: Vec<String> = (0..50).map(|i| format!("ep-{i:02}")).collect();
    assert_eq!(names, want);

    // One by name, as a table and as JSON; a name nobody has: exit 3.
    let one = json_lines(&ok(&mut root.tape("online", &["ep-07", "--json"]), b""));
    assert_eq!(one.len(), 1);
    assert_eq!(one[0]["name"], "ep-07");
    assert_eq!(
        one[0]["endpoint_id"].as_u64(),
        Some(tape_rpc::endpoint_id("ep-07") as u64)
    );
    let table = String::from_utf8(ok(&mut root.tape("online", &["ep-07"]), b"")).unwrap();
    assert!(
        table.contains("responder") && table.contains("ep-07"),
        "{table}"
    );
    let o = run(&mut root.tape("online", &["ep-50"]), b"");
    assert_eq!(o.status.code(), Some(3), "{o:?}");

    // Killed: all gone at once.
    let mut many = many;
    many.kid.kill9();
    let count = ok(&mut root.tape("online", &["--count"]), b"");
    assert_eq!(String::from_utf8(count).unwrap().trim(), "0");
}

#[test]
fn call_and_online_explain_themselves() {
    let call = String::from_utf8(ok(&mut tape(&["call", "--help"]), b"")).unwrap();
    for f in ["--type", "--timeout", "--root", "0 OK", "3 NO", "4 TIMEOUT"] {
        assert!(call.contains(f), "tape call --help mentions {f}:\n{call}");
    }
    let online = String::from_utf8(ok(&mut tape(&["online", "--help"]), b"")).unwrap();
    for f in ["--page", "--per-page", "--count", "--json", "--root"] {
        assert!(
            online.contains(f),
            "tape online --help mentions {f}:\n{online}"
        );
    }
    let o = run(&mut tape(&["call", "echo", "--timeout", "soon"]), b"");
    assert!(!o.status.success());
}

#[test]
fn tape_ping_checks_every_echo_and_exits_as_tape_call_does() {
    let root = Root::new();
    let _service = Service::start(&root);
    let _echo = start_echo(&root, "echo");
    let ping = |args: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tape-ping"));
        cmd.args(args)
            .args(["--root", root.arg()])
            .env_remove("TAPE_ROOT");
        run(&mut cmd, b"")
    };
    let o = ping(&["echo", "--calls", "300", "--warmup", "10", "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).expect("one JSON object");
    assert_eq!(j["calls"], 300);
    assert!(j["p50_ns"].as_u64().unwrap() <= j["p99_ns"].as_u64().unwrap());
    // NO: exit 3 at once.
    let o = ping(&["nobody", "--calls", "1"]);
    assert_eq!(o.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&o.stderr).contains("nobody"));
    // Bad input: one sentence, exit 1.
    let o = ping(&["echo", "--size", "4"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("use at least 8 bytes"));
}
