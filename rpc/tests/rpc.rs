//! Request/reply through the library, with the service, responders and
//! requesters on threads of this process (the tests with separate
//! processes are in tools/tests/cli/rpc_*.rs). Each test has its own root;
//! waits are bounded by a watchdog, never asserted as timings.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use tape_journal::{Cursor, CursorOptions, Start};
use tape_rpc::{CallError, Events, PeerKind, Requester, Responder, ServeError};
use tape_service::Service;

const PAGE: u64 = 1 << 20;
const LONG: Duration = Duration::from_secs(60);

struct Root {
    dir: tempfile::TempDir,
    _service: Service,
}

impl Root {
    fn new() -> Root {
        let dir = tempfile::Builder::new()
            .prefix("tape-rpc-")
            .tempdir()
            .unwrap();
        let service = Service::start(dir.path()).unwrap();
        Root {
            dir,
            _service: service,
        }
    }

    fn path(&self) -> &std::path::Path {
        self.dir.path()
    }

    fn responder(&self, name: &str) -> Responder {
        Responder::builder(name)
            .root(self.path())
            .page_size(PAGE)
            .create()
            .unwrap()
    }

    fn requester(&self, name: &str) -> Requester {
        Requester::builder(name)
            .root(self.path())
            .page_size(PAGE)
            .create()
            .unwrap()
    }
}

use tape_testkit::wait_until;

/// An echo responder on a thread: replies with the request's type and data.
/// Requests of type 2 wait until the test sends on the returned channel.
struct Echo {
    stop: Arc<AtomicBool>,
    release: mpsc::Sender<()>,
    thread: Option<JoinHandle<Responder>>,
}

impl Echo {
    fn start(mut r: Responder) -> Echo {
        let stop = Arc::new(AtomicBool::new(false));
        let (release, gate) = mpsc::channel::<()>();
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            r.run(&s, |req, out| {
                if req.msg_type() == 2 {
                    let _ = gate.recv_timeout(LONG);
                }
                out.reply(req.msg_type(), req.data()).unwrap();
            })
            .unwrap();
            r
        });
        Echo {
            stop,
            release,
            thread: Some(thread),
        }
    }

    fn stop(mut self) -> Responder {
        self.stop.store(true, Ordering::Release);
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        let _ = self.release.send(());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Every reply in responder `name`'s journal as (dest, corr).
fn replies(root: &Root, name: &str) -> Vec<(u32, u64)> {
    let dir = tape_journal::journal_dir(root.path());
    let mut c = Cursor::open(
        &dir,
        &format!("rpc.{name}"),
        Start::First,
        CursorOptions::default(),
    )
    .unwrap();
    let mut v = Vec::new();
    while let Some(f) = c.next().unwrap() {
        if f.corr() != 0 {
            v.push((f.dest(), f.corr()));
        }
    }
    v
}

#[test]
fn ok_no_and_a_timeout_followed_at_once_by_a_success() {
    let root = Root::new();
    let echo = Echo::start(root.responder("echo"));
    let mut c = root.requester("client");

    let r = c.call("echo", 1, b"hello", LONG).unwrap();
    assert_eq!((r.msg_type(), r.data()), (1, &b"hello"[..]));

    // NO: nobody of that name; nor is a requester a responder.
    let _other = root.requester("other-client");
    for name in ["nobody", "other-client"] {
        match c.call(name, 1, b"x", LONG) {
            Err(CallError::No { dest }) => assert_eq!(dest, name),
            other => panic!("expected NO for {name}, got {other:?}"),
        }
    }

    // TIMEOUT: the echo holds type 2 until released, so this cannot be
    // answered in time whatever the load.
    match c.call("echo", 2, b"slow", Duration::from_millis(50)) {
        Err(CallError::Timeout { dest, .. }) => assert_eq!(dest, "echo"),
        other => panic!("expected TIMEOUT, got {other:?}"),
    }
    // At once a call that succeeds: the late reply to the slow request
    // comes first in the journal and must not be taken for this one.
    echo.release.send(()).unwrap();
    let r = c.call("echo", 1, b"quick", LONG).unwrap();
    assert_eq!(r.data(), b"quick");
    let r = c.call("echo", 3, b"and again", LONG).unwrap();
    assert_eq!((r.msg_type(), r.data()), (3, &b"and again"[..]));

    let stats = echo.stop().stats();
    assert_eq!(stats.answered, 4);
    assert_eq!(replies(&root, "echo").len(), 4);
}

#[test]
fn many_in_flight_replies_taken_in_any_order() {
    let root = Root::new();
    let _echo = Echo::start(root.responder("echo"));
    let mut c = root.requester("client");
    let sent: Vec<_> = (0..200u32)
        .map(|i| {
            let p = c
                .send_nowait("echo", 1, format!("req {i}").as_bytes())
                .unwrap();
            (i, p)
        })
        .collect();
    assert_eq!(c.waiting(), 200);
    // A call in the middle: its reply is found among the others, which
    // are kept for later.
    assert_eq!(
        c.call("echo", 1, b"middle", LONG).unwrap().data(),
        b"middle"
    );
    for (i, p) in sent.iter().rev() {
        let r = c.wait_reply(p).unwrap();
        assert_eq!(r.data(), format!("req {i}").as_bytes());
        assert_eq!(r.corr(), p.corr());
    }
    assert_eq!(c.waiting(), 0);
    // A reply is taken once.
    assert!(matches!(
        c.poll_reply(&sent[0].1),
        Err(CallError::NotWaiting { .. })
    ));
}

#[test]
fn restart_answers_what_is_left_once_and_drops_the_expired() {
    let root = Root::new();
    let mut c = root.requester("client");
    let echo = Echo::start(root.responder("echo"));
    for i in 0..10u32 {
        assert_eq!(
            c.call("echo", 1, &i.to_le_bytes(), LONG).unwrap().data(),
            i.to_le_bytes()
        );
    }
    // Stop serving without leaving: requests now wait in the journal.
    let first = echo.stop();
    let keep = c.send_nowait_within("echo", 1, b"keep", LONG).unwrap();
    let expire = c
        .send_nowait_within("echo", 1, b"expire", Duration::from_millis(1))
        .unwrap();
    wait_until("the short request to expire", || {
        matches!(c.poll_reply(&expire), Err(CallError::Timeout { .. }))
    });
    drop(first);

    // The same name again: it reads its journal, answers `keep` only.
    let again = root.responder("echo");
    let echo = Echo::start(again);
    let r = c.wait_reply(&keep).unwrap();
    assert_eq!(r.data(), b"keep");
    assert_eq!(c.call("echo", 1, b"after", LONG).unwrap().data(), b"after");
    let stats = echo.stop().stats();
    assert_eq!(
        (stats.answered, stats.expired, stats.duplicate),
        (2, 1, 0),
        "{stats:?}"
    );

    // Each request answered once: 10 + keep + after, no expire.
    let all = replies(&root, "echo");
    let mut corrs: Vec<u64> = all.iter().map(|r| r.1).collect();
    corrs.sort_unstable();
    corrs.dedup();
    assert_eq!(corrs.len(), all.len(), "a request answered twice: {all:?}");
    assert_eq!(all.len(), 12);
    assert!(!corrs.contains(&expire.corr()));
    assert!(all.iter().all(|(dest, _)| *dest == c.id()));
}

/// Serves `r` on this thread until `c` has the reply to `p`.
fn serve_until_reply(r: &mut Responder, c: &mut Requester, p: &tape_rpc::Pending) -> Vec<u8> {
    let mut got = None;
    wait_until("a reply", || {
        r.poll(|req, out| {
            out.reply(req.msg_type(), req.data()).unwrap();
        })
        .unwrap();
        if let Some(reply) = c.poll_reply(p).unwrap() {
            got = Some(reply.data().to_vec());
        }
        got.is_some()
    });
    got.unwrap()
}

#[test]
fn a_requester_that_comes_later_is_served_and_one_that_leaves_is_closed() {
    let root = Root::new();
    let mut r = root.responder("echo");
    for round in 0..3 {
        let mut c = root.requester(&format!("late-{round}"));
        let p = c.send_nowait("echo", 1, b"hi").unwrap();
        assert_eq!(serve_until_reply(&mut r, &mut c, &p), b"hi");
    }
    // The requesters that left are closed once their journals are read.
    // (Closing is housekeeping, done every few thousand empty polls.)
    wait_until(
        "the journals of the requesters that left to be closed",
        || {
            for _ in 0..1000 {
                r.poll(|_, _| {}).unwrap();
            }
            r.stats().requesters == 0
        },
    );
    // The same requester name again: its journal continues, nothing of
    // the earlier run is answered again.
    let mut c = root.requester("late-0");
    let p = c.send_nowait("echo", 1, b"back").unwrap();
    assert_eq!(serve_until_reply(&mut r, &mut c, &p), b"back");
    let stats = r.stats();
    assert_eq!(
        (stats.answered, stats.duplicate, stats.requesters),
        (4, 0, 1),
        "{stats:?}"
    );
}

#[test]
fn events_are_read_apart_from_replies_and_presence_lists_endpoints() {
    let root = Root::new();
    let mut r = root.responder("ticker");
    let mut c = root.requester("client");
    let mut ev = Events::open(
        &tape_journal::journal_dir(root.path()),
        "ticker",
        Start::First,
    )
    .unwrap();
    r.publish(10, b"tick 1").unwrap();
    let p = c.send_nowait("ticker", 1, b"q").unwrap();
    wait_until("the request to be answered", || {
        r.poll(|_, out| {
            out.reply(5, b"a").unwrap();
        })
        .unwrap()
    });
    r.publish(10, b"tick 2").unwrap();
    let mut got = Vec::new();
    while let Some(f) = ev.next().unwrap() {
        got.push(f.payload().to_vec());
    }
    assert_eq!(got, [b"tick 1".to_vec(), b"tick 2".to_vec()]);
    assert_eq!(c.wait_reply(&p).unwrap().msg_type(), 5);

    let me = c.find("client").unwrap().unwrap();
    assert_eq!(me.kind, PeerKind::Requester);
    assert_eq!(me.pid, std::process::id());
    assert!(me.since_ns > 0);
    assert_eq!(c.find("ticker").unwrap().unwrap().kind, PeerKind::Responder);
    assert_eq!(c.count().unwrap(), 2);
    let all = c.list(0, 10).unwrap();
    assert_eq!(all.len(), 2);
}

#[test]
fn bad_names_and_a_second_responder_of_a_name_are_refused() {
    let root = Root::new();
    let _r = root.responder("echo");
    for bad in ["", ".x", "a/b", &"x".repeat(61)] {
        assert!(
            Responder::builder(bad).root(root.path()).create().is_err(),
            "{bad:?}"
        );
    }
    // Same name in this process: the journal lock refuses it first.
    let e = Responder::builder("echo")
        .root(root.path())
        .create()
        .unwrap_err();
    assert!(e.to_string().contains("rpc.echo"), "{e}");
    // A requester may not take a responder's name either.
    assert!(Requester::builder("echo")
        .root(root.path())
        .create()
        .is_err());
}

#[test]
fn malformed_requests_are_stepped_over_and_the_others_served() {
    let root = Root::new();
    let mut r = root.responder("echo");
    let mut good = root.requester("good");
    {
        let mut bad = root.requester("bad");
        // A request with no deadline in it: malformed, stepped over.
        bad.send_nowait("echo", 1, b"").unwrap();
    }
    // A frame written by hand into bad's journal with a payload shorter
    // than the deadline.
    {
        let mut a = tape_journal::Appender::create(
            &tape_journal::journal_dir(root.path()),
            "rpc.bad",
            tape_journal::AppendOptions {
                page_size: PAGE,
                ..Default::default()
            },
        )
        .unwrap();
        let meta = tape_journal::FrameMeta {
            msg_type: 1,
            source: tape_rpc::endpoint_id("bad"),
            dest: r.id(),
            corr: 2,
        };
        a.write_meta(&meta, b"xy").unwrap();
    }
    let p = good.send_nowait("echo", 1, b"fine").unwrap();
    let mut served = 0;
    wait_until("the good request to be answered", || {
        match r.poll(|req, out| {
            out.reply(1, req.data()).unwrap();
        }) {
            Ok(_) | Err(ServeError::Requester { .. }) => {}
            Err(e) => panic!("{e}"),
        }
        served = r.stats().answered;
        good.poll_reply(&p).unwrap().is_some()
    });
    // bad's first request (deadline present, empty data) is answered; the
    // hand-made one is malformed.
    assert!(served >= 1);
    wait_until("the malformed frame to be stepped over", || {
        let _ = r.poll(|_, _| {});
        r.stats().malformed == 1
    });
}

#[test]
fn calls_across_many_pages_on_both_sides() {
    // 1 MiB pages hold about 1,000 of these frames: 5,000 calls switch
    // pages several times in the request and the reply journal.
    let root = Root::new();
    let echo = Echo::start(root.responder("echo"));
    let mut c = root.requester("client");
    let mut data = [0u8; 1000];
    for i in 0..5_000u64 {
        data[..8].copy_from_slice(&i.to_le_bytes());
        let r = c.call("echo", 1, &data, LONG).unwrap();
        assert_eq!(r.data(), &data[..], "call {i}");
    }
    let stats = echo.stop().stats();
    assert_eq!(stats.answered, 5_000);
    let pages = |j: &str| {
        tape_journal::stats(&tape_journal::journal_dir(root.path()), j)
            .unwrap()
            .pages
    };
    assert!(pages("rpc.echo") >= 4 && pages("rpc.client") >= 4);
}

#[test]
fn calls_go_on_while_the_service_restarts_and_endpoints_register_again() {
    let dir = tempfile::Builder::new()
        .prefix("tape-rpc-")
        .tempdir()
        .unwrap();
    let service = Service::start(dir.path()).unwrap();
    let echo = Responder::builder("echo")
        .root(dir.path())
        .page_size(PAGE)
        .create()
        .unwrap();
    let echo = Echo::start(echo);
    let mut c = Requester::builder("client")
        .root(dir.path())
        .page_size(PAGE)
        .create()
        .unwrap();
    assert_eq!(
        c.call("echo", 1, b"before", LONG).unwrap().data(),
        b"before"
    );

    // No service: the journals carry on; the requester still knows echo.
    drop(service);
    wait_until("the requester to notice the service is gone", || {
        !c.is_registered()
    });
    assert_eq!(
        c.call("echo", 1, b"during", LONG).unwrap().data(),
        b"during"
    );

    // A new service: both register again, and new names are found.
    let _service = Service::start(dir.path()).unwrap();
    wait_until("the requester to register again", || c.is_registered());
    let mut q = tape_service::Client::connect(dir.path()).unwrap();
    wait_until("both endpoints to be listed again", || {
        q.find_endpoint("echo").unwrap().is_some() && q.find_endpoint("client").unwrap().is_some()
    });
    assert_eq!(c.call("echo", 1, b"after", LONG).unwrap().data(), b"after");
    let echo2 = Echo::start(
        Responder::builder("echo2")
            .root(dir.path())
            .page_size(PAGE)
            .create()
            .unwrap(),
    );
    assert_eq!(c.call("echo2", 1, b"new", LONG).unwrap().data(), b"new");
    drop(echo2);
    assert_eq!(echo.stop().stats().answered, 3);
}
