//! Liveness, both ways, with the library in one process (short timeouts):
//! a subscriber that stops reading is dropped after the stall timeout, one
//! that stops acking after the dead timeout, and a pull whose server goes
//! silent reconnects. Each is noticed with a log line; no test asserts a
//! duration (every wait has a generous watchdog).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tape_bridge::wire::{self, Hello, Kind};
use tape_bridge::{Log, PullHandle, PullOptions, ServeOptions, Server, Token};

const TOKEN: &str = "liveness-token";
const WATCHDOG: Duration = Duration::from_secs(60);

/// A log that keeps its lines.
fn capture() -> (Log, Arc<Mutex<Vec<String>>>) {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let l = Arc::clone(&lines);
    let log: Log = Arc::new(move |s: &str| l.lock().unwrap().push(s.to_string()));
    (log, lines)
}

fn wait_line(lines: &Mutex<Vec<String>>, what: &str, pred: impl Fn(&str) -> bool) -> String {
    let give_up = Instant::now() + WATCHDOG;
    loop {
        if let Some(l) = lines.lock().unwrap().iter().find(|l| pred(l)) {
            return l.clone();
        }
        assert!(
            Instant::now() < give_up,
            "watchdog: no log line {what}: {:?}",
            lines.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn server(
    root: &Path,
    f: impl FnOnce(&mut ServeOptions),
) -> (tape_bridge::ServerHandle, Arc<Mutex<Vec<String>>>) {
    let (log, lines) = capture();
    let mut o = ServeOptions::new(root);
    o.listen = "127.0.0.1:0".into();
    o.token = Token::new(TOKEN);
    o.log = log;
    o.status_socket = false;
    o.register_readers = false;
    f(&mut o);
    (Server::bind(o).unwrap().spawn().unwrap(), lines)
}

/// Handshakes and subscribes to `md` from its start.
fn subscribe(addr: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WATCHDOG)).unwrap();
    let c = tape_bridge::auth::nonce().unwrap();
    s.write_all(
        &Hello {
            version: wire::VERSION,
            nonce: c,
        }
        .encode(Kind::Hello),
    )
    .unwrap();
    let mut buf = [0u8; 56];
    s.read_exact(&mut buf).unwrap();
    let ch = Hello::decode(&buf[8..]).unwrap();
    let proof = Token::new(TOKEN).client_proof(&c, &ch.nonce);
    s.write_all(&wire::encode_mac(Kind::Auth, &proof)).unwrap();
    let mut w = [0u8; 40];
    s.read_exact(&mut w).unwrap();
    let sub = wire::Subscribe {
        account: "probe".into(),
        journals: vec![wire::Want {
            journal: "md".into(),
            from_seq: 0,
        }],
    };
    s.write_all(&sub.encode()).unwrap();
    let mut hdr = [0u8; 8];
    s.read_exact(&mut hdr).unwrap();
    assert_eq!(wire::Header::parse(&hdr).kind, Kind::Subscribed as u32);
    let mut body = vec![0u8; wire::Header::parse(&hdr).len as usize];
    s.read_exact(&mut body).unwrap();
    s
}

fn journal(root: &Path) -> tape_writer::Writer {
    tape_writer::Writer::builder("md")
        .root(root)
        .page_size(1 << 20)
        .create()
        .unwrap()
}

#[test]
fn a_subscriber_that_stops_reading_is_dropped_after_the_stall_timeout() {
    let root = tempfile::tempdir().unwrap();
    let _svc = tape_service::Service::start(root.path()).unwrap();
    let mut w = journal(root.path());
    let (srv, lines) = server(root.path(), |o| {
        o.stall_timeout = Duration::from_secs(1);
        o.dead_after = Duration::from_secs(3600);
    });
    let addr = srv.local_addr().to_string();
    let s = subscribe(&addr);
    // Frames until the server gives up on it; it never reads one.
    let payload = [1u8; 1000];
    let give_up = Instant::now() + WATCHDOG;
    while !lines
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains("stalled subscriber"))
    {
        for _ in 0..100 {
            if w.write(1, &payload).is_err() {
                break;
            }
        }
        assert!(
            Instant::now() < give_up,
            "watchdog: {:?}",
            lines.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let l = wait_line(&lines, "stalled", |l| l.contains("stalled subscriber"));
    assert!(l.starts_with("subscriber probe@127.0.0.1:"), "{l}");
    assert!(
        srv.status().subscribers.is_empty(),
        "dropped from the status"
    );
    drop(s);
}

#[test]
fn a_subscriber_that_stops_acking_is_dropped_after_the_dead_timeout() {
    let root = tempfile::tempdir().unwrap();
    let _svc = tape_service::Service::start(root.path()).unwrap();
    let mut w = journal(root.path());
    w.write(1, b"one").unwrap();
    let (srv, lines) = server(root.path(), |o| {
        o.dead_after = Duration::from_secs(1);
        o.heartbeat = Duration::from_millis(100);
    });
    let mut s = subscribe(&srv.local_addr().to_string());
    assert_eq!(srv.status().subscribers.len(), 1);
    // It reads (batch, heartbeats) but never acks: taken for dead.
    let mut buf = [0u8; 4096];
    while s.read(&mut buf).is_ok_and(|n| n > 0) {}
    let l = wait_line(&lines, "dead", |l| l.contains("dead peer"));
    assert!(l.contains("no ack for 1 s"), "{l}");
}

/// A fake server: handshakes, says `md` exists, then sends nothing, ever.
fn silent_server(l: TcpListener, conns: Arc<Mutex<u32>>) {
    for s in l.incoming() {
        let Ok(mut s) = s else { return };
        *conns.lock().unwrap() += 1;
        std::thread::spawn(move || {
            let mut buf = [0u8; 56];
            if s.read_exact(&mut buf).is_err() {
                return;
            }
            let c = Hello::decode(&buf[8..]).unwrap().nonce;
            let n = tape_bridge::auth::nonce().unwrap();
            s.write_all(
                &Hello {
                    version: wire::VERSION,
                    nonce: n,
                }
                .encode(Kind::Challenge),
            )
            .unwrap();
            let mut auth = [0u8; 40];
            s.read_exact(&mut auth).unwrap();
            let proof = Token::new(TOKEN).server_proof(&c, &n);
            s.write_all(&wire::encode_mac(Kind::Welcome, &proof))
                .unwrap();
            let mut hdr = [0u8; 8];
            s.read_exact(&mut hdr).unwrap();
            let mut body = vec![0u8; wire::Header::parse(&hdr).len as usize];
            s.read_exact(&mut body).unwrap();
            let st = [wire::JournalState {
                page_size: 1 << 20,
                last_seq: 0,
            }];
            s.write_all(&wire::encode_subscribed(&st)).unwrap();
            // Silence; drain whatever the pull sends until it hangs up.
            let mut sink = [0u8; 1024];
            while s.read(&mut sink).is_ok_and(|n| n > 0) {}
        });
    }
}

#[test]
fn a_pull_whose_server_goes_silent_reconnects() {
    let root = tempfile::tempdir().unwrap();
    let _svc = tape_service::Service::start(root.path()).unwrap();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let conns = Arc::new(Mutex::new(0));
    let c = Arc::clone(&conns);
    std::thread::spawn(move || silent_server(l, c));
    let (log, lines) = capture();
    let mut o = PullOptions::new(root.path(), &addr, "acct").journal("md");
    o.token = Token::new(TOKEN);
    o.dead_after = Duration::from_secs(1);
    o.log = log;
    let pull = PullHandle::spawn(o).unwrap();
    let l = wait_line(&lines, "silent server", |l| {
        l.contains("not even a heartbeat")
    });
    assert!(l.contains("nothing from the server for 1 s"), "{l}");
    let give_up = Instant::now() + WATCHDOG;
    while *conns.lock().unwrap() < 2 {
        assert!(
            Instant::now() < give_up,
            "watchdog: the pull did not reconnect"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    pull.stop().unwrap();
}

#[test]
fn a_pull_refuses_a_server_that_does_not_know_the_token() {
    let root = tempfile::tempdir().unwrap();
    let _svc = tape_service::Service::start(root.path()).unwrap();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut buf = [0u8; 56];
        s.read_exact(&mut buf).unwrap();
        let n = tape_bridge::auth::nonce().unwrap();
        s.write_all(
            &Hello {
                version: wire::VERSION,
                nonce: n,
            }
            .encode(Kind::Challenge),
        )
        .unwrap();
        let mut auth = [0u8; 40];
        s.read_exact(&mut auth).unwrap();
        // An impostor accepts any proof and answers with a made-up one.
        s.write_all(&wire::encode_mac(Kind::Welcome, &[7u8; 32]))
            .unwrap();
        let mut sink = [0u8; 1024];
        while s.read(&mut sink).is_ok_and(|n| n > 0) {}
    });
    let mut o = PullOptions::new(root.path(), &addr, "acct").journal("md");
    o.token = Token::new(TOKEN);
    o.log = tape_bridge::quiet_log();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let e = tape_bridge::pull(&o, &stop).unwrap_err();
    assert!(matches!(e, tape_bridge::PullError::Impostor(_)), "{e}");
    assert!(e.to_string().contains("could not prove it knows the token"));
    // Nothing was made locally.
    assert!(
        tape_journal::list_pages(&tape_journal::journal_dir(root.path()), "md")
            .map_or(true, |p| p.is_empty())
    );
}

#[test]
fn heartbeats_keep_an_idle_connection_up() {
    let src = tempfile::tempdir().unwrap();
    let dst = tempfile::tempdir().unwrap();
    let _s1 = tape_service::Service::start(src.path()).unwrap();
    let _s2 = tape_service::Service::start(dst.path()).unwrap();
    let mut w = journal(src.path());
    w.write(1, b"first").unwrap();
    let (srv, server_lines) = server(src.path(), |o| {
        o.heartbeat = Duration::from_millis(100);
        o.dead_after = Duration::from_millis(1500);
    });
    let (log, lines) = capture();
    let mut o = PullOptions::new(dst.path(), &srv.local_addr().to_string(), "idle").journal("md");
    o.token = Token::new(TOKEN);
    o.dead_after = Duration::from_millis(1500);
    o.ack_every = Duration::from_millis(100);
    o.log = log;
    let pull = PullHandle::spawn(o).unwrap();
    let dir = tape_journal::journal_dir(dst.path());
    let last = || tape_journal::stats(&dir, "md").map_or(0, |s| s.last_seq);
    let give_up = Instant::now() + WATCHDOG;
    while last() < 1 {
        assert!(Instant::now() < give_up, "watchdog: first frame");
        std::thread::sleep(Duration::from_millis(5));
    }
    // Idle for twice the dead timeout: only heartbeats and acks flow.
    std::thread::sleep(Duration::from_secs(3));
    w.write(1, b"second").unwrap();
    while last() < 2 {
        assert!(Instant::now() < give_up, "watchdog: second frame");
        std::thread::sleep(Duration::from_millis(5));
    }
    let pulled = lines.lock().unwrap().clone();
    assert_eq!(
        pulled.iter().filter(|l| l.contains("connected to")).count(),
        1,
        "one connection all along: {pulled:?}"
    );
    assert!(!pulled.iter().any(|l| l.contains("lost")), "{pulled:?}");
    let served = server_lines.lock().unwrap().clone();
    assert!(!served.iter().any(|l| l.contains("left")), "{served:?}");
    pull.stop().unwrap();
}
