//! Integration tests of the service, its protocol and the leases. Each test
//! runs in its own temporary root; waits are bounded by a watchdog, never
//! asserted as timings.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use tape_service::protocol::{decode_reply, ErrorCode, Reply};
use tape_service::{
    socket_path, Client, ConnectError, ReaderLease, RegisterError, Service, ServiceError,
    WriterLease,
};

const ROLE_ENV: &str = "TAPE_SERVICE_TEST_ROLE";
const ROOT_ENV: &str = "TAPE_SERVICE_TEST_ROOT";

/// Aborts the whole test binary if a test hangs (e.g. a drop that never
/// returns), so a hang is a failure with a message rather than a stuck CI.
fn watchdog(what: &'static str) -> tape_testkit::Watchdog {
    tape_testkit::Watchdog::new(what, Duration::from_secs(90))
}

use tape_testkit::eventually;

fn journal_dir(root: &Path) -> PathBuf {
    root.join("journal")
}

/// A child process running this test binary in a role; killed on drop.
struct RoleChild {
    child: Child,
}

impl RoleChild {
    /// Starts `role` on `root` and waits until it prints READY.
    fn spawn(role: &str, root: &Path) -> RoleChild {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["child_role", "--exact", "--nocapture", "--test-threads=1"])
            .env(ROLE_ENV, role)
            .env(ROOT_ENV, root)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                // libtest prints "test child_role ... " first, on the same line.
                if line.trim_end().ends_with("READY") {
                    let _ = tx.send(());
                }
            }
        });
        let guard = RoleChild { child };
        rx.recv_timeout(Duration::from_secs(30))
            .expect("child role did not become ready");
        guard
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL and reap: once this returns the kernel has closed every
    /// socket of the child.
    fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for RoleChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Entry point of the child processes; a no-op in a normal test run.
#[test]
fn child_role() {
    let Ok(role) = std::env::var(ROLE_ENV) else {
        return;
    };
    let root = PathBuf::from(std::env::var(ROOT_ENV).unwrap());
    let parent = std::os::unix::process::parent_id();
    let _keep: Box<dyn std::any::Any> = match role.as_str() {
        "writer" => Box::new(WriterLease::acquire(&root, &journal_dir(&root), "md").unwrap()),
        "service" => Box::new(Service::start(&root).unwrap()),
        "endpoint" => {
            let mut c = Client::connect(&root).unwrap();
            let j = tape_service::JournalId {
                dir: journal_dir(&root),
                journal: "rpc.ep".into(),
            };
            c.register_endpoint("ep", tape_service::EndpointRole::Responder, &j)
                .unwrap()
                .unwrap();
            Box::new(c)
        }
        // The clock keeper: Service::start must make this process keep
        // the shared clock, as `tape service` does. The process has a
        // clock file of its own (TAPE_CLOCK_FILE), so no other process on
        // the box keeps it; "clock-control" starts no service.
        "clock-service" | "clock-control" => {
            use tape_journal::clock;
            let svc = (role == "clock-service").then(|| Service::start(&root).unwrap());
            let keeps = clock::keeps();
            let shared = clock::keep();
            println!("CLOCK keeps={keeps} shared={shared}");
            std::io::stdout().flush().unwrap();
            drop(svc);
            return;
        }
        other => panic!("unknown role {other}"),
    };
    println!("READY");
    std::io::stdout().flush().unwrap();
    // Live until killed; exit if the test that started us is gone.
    while std::os::unix::process::parent_id() == parent {
        std::thread::sleep(Duration::from_millis(100));
    }
}

// ---------------------------------------------------------------- raw wire

fn raw(root: &Path) -> UnixStream {
    let s = UnixStream::connect(socket_path(root)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s
}

fn send_json(s: &mut UnixStream, json: &str) {
    let mut frame = (json.len() as u32).to_le_bytes().to_vec();
    frame.extend_from_slice(json.as_bytes());
    s.write_all(&frame).unwrap();
}

/// The next reply, or `None` when the service closed the connection.
fn recv(s: &mut UnixStream) -> Option<Reply> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).ok()?;
    let mut body = vec![0u8; u32::from_le_bytes(len) as usize];
    s.read_exact(&mut body).ok()?;
    Some(decode_reply(&body).expect("the service sent a reply we cannot decode"))
}

fn hello(s: &mut UnixStream) {
    send_json(s, r#"{"type":"hello","version":1}"#);
    assert!(matches!(recv(s), Some(Reply::Hello { version: 1, .. })));
}

/// After a protocol violation: an error reply with `code` (when the peer
/// could still be answered) and then the connection closed.
fn expect_error_then_close(s: &mut UnixStream, code: ErrorCode) {
    match recv(s) {
        Some(Reply::Error { code: c, .. }) => assert_eq!(c, code),
        None => {}
        Some(other) => panic!("expected error {code:?}, got {other:?}"),
    }
    assert!(recv(s).is_none(), "connection should be closed");
}

// ------------------------------------------------------------------- tests

#[test]
fn second_writer_is_refused_and_drop_frees_at_once() {
    let _w = watchdog("second_writer");
    let root = tempfile::tempdir().unwrap();
    let _svc = Service::start(root.path()).unwrap();
    let dir = journal_dir(root.path());

    let first = WriterLease::acquire(root.path(), &dir, "md").unwrap();
    assert!(first.is_registered());
    let err = WriterLease::acquire(root.path(), &dir, "md").unwrap_err();
    let me = std::process::id();
    assert!(matches!(err, RegisterError::Held { pid, .. } if pid == me));
    assert_eq!(
        err.to_string(),
        format!("journal md is held by another writer (pid {me})")
    );
    // The same name in another folder is another journal.
    let other_dir = root.path().join("elsewhere");
    let _other = WriterLease::acquire(root.path(), &other_dir, "md").unwrap();
    // A relative spelling of the same folder is the same journal.
    let dotted = dir.join("..").join("journal");
    assert!(matches!(
        WriterLease::acquire(root.path(), &dotted, "md"),
        Err(RegisterError::Held { .. })
    ));

    drop(first);
    // No waiting: the journal is free as soon as the lease is dropped.
    let again = WriterLease::acquire(root.path(), &dir, "md").unwrap();
    assert!(again.is_registered());
}

#[test]
fn killed_child_writer_frees_journal_at_once() {
    let _w = watchdog("killed_child");
    let root = tempfile::tempdir().unwrap();
    let _svc = Service::start(root.path()).unwrap();
    let dir = journal_dir(root.path());

    let child = RoleChild::spawn("writer", root.path());
    let child_pid = child.pid();
    let mut client = Client::connect(root.path()).unwrap();
    let js = client.journals().unwrap();
    assert_eq!(js.len(), 1);
    assert_eq!(js[0].writer.as_ref().unwrap().pid, child_pid);
    match WriterLease::acquire(root.path(), &dir, "md") {
        Err(RegisterError::Held { pid, .. }) => assert_eq!(pid, child_pid),
        other => panic!("expected held by the child, got {other:?}"),
    }

    child.kill9();
    // The child is reaped, so the kernel has closed its socket: the journal
    // must be free now, without any retry.
    let lease = WriterLease::acquire(root.path(), &dir, "md").unwrap();
    assert!(lease.is_registered());
    let js = client.journals().unwrap();
    assert_eq!(js[0].writer.as_ref().unwrap().pid, std::process::id());
}

#[test]
fn find_list_count_over_pages() {
    let _w = watchdog("find_list_count");
    let root = tempfile::tempdir().unwrap();
    let _svc = Service::start(root.path()).unwrap();
    let dir = journal_dir(root.path());

    let readers: Vec<ReaderLease> = (0..50)
        .map(|i| {
            ReaderLease::acquire(
                root.path(),
                &format!("reader-{i:02}"),
                &[(dir.clone(), format!("j{}", i % 3))],
            )
            .unwrap()
        })
        .collect();
    let mut client = Client::connect(root.path()).unwrap();
    assert_eq!(client.count().unwrap(), 50);

    let mut seen = Vec::new();
    for page in 0.. {
        let peers = client.list(page, 7).unwrap();
        if peers.is_empty() {
            break;
        }
        assert!(peers.len() <= 7);
        seen.extend(peers);
    }
    assert_eq!(seen.len(), 50, "every reader exactly once");
    assert!(seen.windows(2).all(|w| w[0].id < w[1].id), "stable order");
    let mut names: Vec<_> = seen.iter().map(|p| p.name.clone()).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 50);

    let p = client.find("reader-17").unwrap().unwrap();
    assert_eq!(p.pid, std::process::id());
    assert_eq!(p.kind, tape_service::PeerKind::Reader);
    assert_eq!(p.journals[0].journal, "j2");
    assert!(p.since_ns > 0);
    assert!(client.find("nobody").unwrap().is_none());

    let js = client.journals().unwrap();
    assert_eq!(js.len(), 3);
    assert_eq!(js.iter().map(|j| j.readers.len()).sum::<usize>(), 50);

    assert!(matches!(
        client.list(0, 0),
        Err(tape_service::QueryError::Refused {
            code: ErrorCode::Invalid,
            ..
        })
    ));
    drop(readers);
    assert_eq!(client.count().unwrap(), 0);
}

#[test]
fn bad_input_closes_only_that_connection() {
    let _w = watchdog("bad_input");
    let root = tempfile::tempdir().unwrap();
    let _svc = Service::start(root.path()).unwrap();
    let dir = journal_dir(root.path());
    let writer = WriterLease::acquire(root.path(), &dir, "md").unwrap();
    let reader =
        ReaderLease::acquire(root.path(), "strategy", &[(dir.clone(), "md".into())]).unwrap();
    let r = root.path();

    let check_others = |case: &str| {
        assert!(writer.is_registered(), "writer lost after {case}");
        assert!(reader.is_registered(), "reader lost after {case}");
        let mut c = Client::connect(r).unwrap_or_else(|e| panic!("service down after {case}: {e}"));
        assert_eq!(c.count().unwrap(), 2, "after {case}");
        let js = c.journals().unwrap();
        assert_eq!(js[0].writer.as_ref().unwrap().name, "md", "after {case}");
        assert_eq!(js[0].readers[0].name, "strategy", "after {case}");
    };

    // Garbage bytes (an HTTP request): the first four bytes read as a huge length.
    let mut s = raw(r);
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    expect_error_then_close(&mut s, ErrorCode::TooLarge);
    check_others("garbage");

    // Binary garbage that frames correctly but is not JSON.
    let mut s = raw(r);
    hello(&mut s);
    s.write_all(&[8, 0, 0, 0, 0xff, 0xfe, 0, 1, 2, 3, 4, 5])
        .unwrap();
    expect_error_then_close(&mut s, ErrorCode::Malformed);
    check_others("binary body");

    // A truncated message: the length promises more than ever comes.
    let mut s = raw(r);
    hello(&mut s);
    s.write_all(&100u32.to_le_bytes()).unwrap();
    s.write_all(br#"{"type":"co"#).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    expect_error_then_close(&mut s, ErrorCode::Truncated);
    check_others("truncated");

    // An oversized length prefix.
    let mut s = raw(r);
    hello(&mut s);
    s.write_all(&(64 * 1024 + 1u32).to_le_bytes()).unwrap();
    expect_error_then_close(&mut s, ErrorCode::TooLarge);
    check_others("oversized");

    // An unknown message type.
    let mut s = raw(r);
    hello(&mut s);
    send_json(&mut s, r#"{"type":"launch","target":"moon"}"#);
    expect_error_then_close(&mut s, ErrorCode::UnknownType);
    check_others("unknown type");

    // A bad protocol version.
    let mut s = raw(r);
    send_json(&mut s, r#"{"type":"hello","version":99}"#);
    expect_error_then_close(&mut s, ErrorCode::Version);
    check_others("bad version");

    // A request before the handshake.
    let mut s = raw(r);
    send_json(&mut s, r#"{"type":"count"}"#);
    expect_error_then_close(&mut s, ErrorCode::HandshakeRequired);
    check_others("no hello");

    // Wrong field types.
    let mut s = raw(r);
    hello(&mut s);
    send_json(&mut s, r#"{"type":"list","page":-1,"per_page":"x"}"#);
    expect_error_then_close(&mut s, ErrorCode::Malformed);
    check_others("bad fields");

    // A value out of range is refused but the connection stays usable.
    let mut s = raw(r);
    hello(&mut s);
    send_json(
        &mut s,
        r#"{"type":"register_writer","dir":"rel","journal":"md"}"#,
    );
    assert!(matches!(
        recv(&mut s),
        Some(Reply::Error {
            code: ErrorCode::Invalid,
            ..
        })
    ));
    send_json(&mut s, r#"{"type":"count"}"#);
    assert!(matches!(recv(&mut s), Some(Reply::Count { count: 2 })));
    // A raw second writer of md is refused with the holder's pid.
    let d = dir.canonicalize().unwrap();
    send_json(
        &mut s,
        &format!(
            r#"{{"type":"register_writer","dir":{},"journal":"md"}}"#,
            serde_json::to_string(d.to_str().unwrap()).unwrap()
        ),
    );
    match recv(&mut s) {
        Some(Reply::Error {
            code: ErrorCode::Held,
            pid,
            ..
        }) => assert_eq!(pid, Some(std::process::id())),
        other => panic!("expected held, got {other:?}"),
    }
    drop(s);
    check_others("invalid value");

    // A peer that connects and says nothing is dropped after the deadline.
    let mut s = raw(r);
    expect_error_then_close(&mut s, ErrorCode::Timeout);
    check_others("silent peer");
}

#[test]
fn leases_register_again_after_service_restart() {
    let _w = watchdog("restart");
    let root = tempfile::tempdir().unwrap();
    let dir = journal_dir(root.path());
    let mut svc = Some(Service::start(root.path()).unwrap());
    let writer = WriterLease::acquire(root.path(), &dir, "md").unwrap();
    let reader =
        ReaderLease::acquire(root.path(), "strategy", &[(dir.clone(), "md".into())]).unwrap();

    for round in 0..2 {
        drop(svc.take()); // stop the service: every connection is closed
        eventually("leases notice the service is gone", || {
            (!writer.is_registered() && !reader.is_registered()).then_some(())
        });
        // Added while the service is away: remembered and sent later.
        reader.add_journal(&dir, &format!("late{round}")).unwrap();
        svc = Some(Service::start(root.path()).unwrap());
        eventually("leases register again on their own", || {
            (writer.is_registered() && reader.is_registered()).then_some(())
        });
        let mut c = Client::connect(root.path()).unwrap();
        let js = eventually("the new service knows both", || {
            let js = c.journals().ok()?;
            let md = js.iter().find(|j| j.journal == "md")?;
            (md.writer.is_some() && md.readers.len() == 1).then_some(js)
        });
        let md = js.iter().find(|j| j.journal == "md").unwrap();
        assert_eq!(md.writer.as_ref().unwrap().pid, std::process::id());
        assert_eq!(md.readers[0].name, "strategy");
        for r in 0..=round {
            let late = format!("late{r}");
            let j = js.iter().find(|j| j.journal == late).expect("late journal");
            assert_eq!(j.readers[0].name, "strategy");
        }
        assert_eq!(c.count().unwrap(), 2);
        // Still exactly one writer.
        assert!(matches!(
            WriterLease::acquire(root.path(), &dir, "md"),
            Err(RegisterError::Held { .. })
        ));
    }

    // A journal added while connected is registered at once.
    reader.add_journal(&dir, "now").unwrap();
    let mut c = Client::connect(root.path()).unwrap();
    assert!(c.journals().unwrap().iter().any(|j| j.journal == "now"));

    // Leases dropped while the service is down (in their backoff) return
    // promptly; the watchdog catches a hang.
    drop(svc);
    eventually("leases notice the service is gone", || {
        (!writer.is_registered()).then_some(())
    });
    drop(writer);
    drop(reader);
}

#[test]
fn second_service_refused_and_stale_socket_taken_over() {
    let _w = watchdog("second_service");
    let root = tempfile::tempdir().unwrap();

    // A service in a child process, then one here on the same root.
    let child = RoleChild::spawn("service", root.path());
    let err = Service::start(root.path()).unwrap_err();
    assert!(
        matches!(err, ServiceError::AlreadyRunning { pid: Some(p), .. } if p == child.pid()),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(text.contains("already running") && text.contains(&format!("pid {}", child.pid())));
    let c = Client::connect(root.path()).unwrap();
    assert_eq!(c.service_pid(), child.pid());
    drop(c);

    // SIGKILL leaves the socket file behind, but the lock dies with it.
    child.kill9();
    assert!(socket_path(root.path()).exists(), "a stale socket is left");
    assert!(matches!(
        Client::connect(root.path()),
        Err(ConnectError::NotRunning { .. })
    ));
    let svc = Service::start(root.path()).unwrap();
    let mut c = Client::connect(root.path()).unwrap();
    assert_eq!(c.service_pid(), std::process::id());
    assert_eq!(c.count().unwrap(), 0);
    let mode = std::fs::metadata(svc.socket_path())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o660);

    // And in-process, a second service on the same root is refused too.
    match Service::start(root.path()) {
        Err(ServiceError::AlreadyRunning { pid, .. }) => {
            assert_eq!(pid, Some(std::process::id()))
        }
        other => panic!("expected already running, got {other:?}"),
    }
    drop(svc);
    assert!(
        !socket_path(root.path()).exists(),
        "drop removes the socket"
    );
}

#[test]
fn no_service_is_a_clear_error() {
    let _w = watchdog("no_service");
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let err = Client::connect(r).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "no tape service is running on {} (socket {}): start one with `tape service --root {}`",
            r.display(),
            socket_path(r).display(),
            r.display()
        )
    );
    let err = WriterLease::acquire(r, &journal_dir(r), "md").unwrap_err();
    assert!(matches!(
        err,
        RegisterError::Connect(ConnectError::NotRunning { .. })
    ));
    let err = WriterLease::acquire(r, &journal_dir(r), "a/b").unwrap_err();
    assert!(matches!(err, RegisterError::Invalid(_)), "{err:?}");
}

#[test]
fn python_client_from_protocol_md() {
    let _w = watchdog("python_client");
    run_protocol_script("protocol_client.py");
}

/// Runs a stdlib-only Python script of tests/ against a fresh service (its
/// socket and journal folder as arguments); it must exit 0 and print OK.
/// Skipped when the box has no python3.
fn run_protocol_script(script: &str) {
    if Command::new("python3").arg("--version").output().is_err() {
        eprintln!("python3 not found: skipping the PROTOCOL.md check {script}");
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let _svc = Service::start(root.path()).unwrap();
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(script);
    let out = Command::new("python3")
        .arg(&path)
        .arg(socket_path(root.path()))
        .arg(journal_dir(root.path()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("OK"), "{stdout}");
}

/// The soft limit on open files of this process, from /proc.
fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

#[test]
fn connection_limit_refuses_with_busy() {
    let _w = watchdog("connection_limit");
    // Both ends of every connection live in this process.
    let needed = 2 * tape_service::MAX_CONNECTIONS as u64 + 200;
    if !matches!(open_files_limit(), Some(n) if n >= needed) {
        eprintln!("fewer than {needed} open files allowed: skipping the connection limit test");
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let _svc = Service::start(root.path()).unwrap();
    let writer = WriterLease::acquire(root.path(), &journal_dir(root.path()), "md").unwrap();

    // The lease holds one connection; fill the rest.
    let mut conns: Vec<UnixStream> = (1..tape_service::MAX_CONNECTIONS)
        .map(|_| {
            let mut s = raw(root.path());
            hello(&mut s);
            s
        })
        .collect();
    let mut extra = raw(root.path());
    expect_error_then_close(&mut extra, ErrorCode::Busy);
    assert!(writer.is_registered());

    // A freed slot is usable again.
    drop(conns.pop());
    let mut c = eventually("a slot frees up", || Client::connect(root.path()).ok());
    assert_eq!(c.count().unwrap(), 1);
}

// ---------------------------------------------------------------- endpoints

#[test]
fn endpoints_register_find_and_watchers_see_up_and_down() {
    use tape_service::{Change, EndpointRole, JournalId, PeerKind};
    let _w = watchdog("endpoints_watch");
    let root = tempfile::tempdir().unwrap();
    let _svc = Service::start(root.path()).unwrap();
    let dir = std::fs::canonicalize(root.path()).unwrap().join("journal");
    let jid = |j: &str| JournalId {
        dir: dir.clone(),
        journal: j.into(),
    };

    // A watcher before anything registers: the list is empty.
    let (now, mut watch) = Client::connect(root.path()).unwrap().watch().unwrap();
    assert!(now.is_empty());

    // A responder over the raw wire, as PROTOCOL.md shows it.
    let mut s = raw(root.path());
    hello(&mut s);
    send_json(
        &mut s,
        &format!(
            r#"{{"type":"register_endpoint","name":"echo","role":"responder","dir":"{}","journal":"rpc.echo"}}"#,
            dir.display()
        ),
    );
    let id = match recv(&mut s) {
        Some(Reply::Registered { id }) => id,
        other => panic!("expected registered, got {other:?}"),
    };
    let (change, peer) = watch.next_event().unwrap();
    assert_eq!(
        (change, peer.id, peer.kind),
        (Change::Up, id, PeerKind::Responder)
    );
    assert_eq!(peer.name, "echo");
    assert_eq!(peer.pid, std::process::id());
    assert_eq!(peer.journals, [jid("rpc.echo")]);

    // The name is taken; the journal is held as by a writer.
    let mut c = Client::connect(root.path()).unwrap();
    assert_eq!(
        c.register_endpoint("echo", EndpointRole::Requester, &jid("other"))
            .unwrap(),
        Err(std::process::id())
    );
    assert!(matches!(
        WriterLease::acquire(root.path(), &journal_dir(root.path()), "rpc.echo"),
        Err(RegisterError::Held { .. })
    ));

    // A requester on a Client; find_endpoint tells endpoints from readers.
    let mut req = Client::connect(root.path()).unwrap();
    let rid = req
        .register_endpoint("client", EndpointRole::Requester, &jid("rpc.client"))
        .unwrap()
        .unwrap();
    let _reader = ReaderLease::acquire(root.path(), "lookalike", &[]).unwrap();
    let mut q = Client::connect(root.path()).unwrap();
    assert_eq!(q.find_endpoint("client").unwrap().unwrap().id, rid);
    assert!(q.find_endpoint("lookalike").unwrap().is_none());
    assert_eq!(q.find("lookalike").unwrap().unwrap().kind, PeerKind::Reader);
    assert_eq!(q.count().unwrap(), 3);
    let md = q.journals().unwrap();
    let echo = md.iter().find(|j| j.journal == "rpc.echo").unwrap();
    assert_eq!(
        echo.writer.as_ref().unwrap().id,
        id,
        "an endpoint writes its journal"
    );
    assert!(echo.readers.is_empty());
    let (change, peer) = watch.next_event().unwrap();
    assert_eq!((change, peer.id), (Change::Up, rid));

    // A second watcher starts from the list of both, in registration order.
    let (now, mut watch2) = Client::connect(root.path()).unwrap().watch().unwrap();
    assert_eq!(now.iter().map(|p| p.id).collect::<Vec<_>>(), [id, rid]);

    // Closing the responder's connection: both watchers see it go, at once
    // and in order; the name and the journal are free again.
    drop(s);
    for w in [&mut watch, &mut watch2] {
        let (change, peer) = w.next_event().unwrap();
        assert_eq!((change, peer.id), (Change::Down, id));
    }
    assert!(q.find_endpoint("echo").unwrap().is_none());
    let mut again = Client::connect(root.path()).unwrap();
    assert!(again
        .register_endpoint("echo", EndpointRole::Responder, &jid("rpc.echo"))
        .unwrap()
        .is_ok());
    let (change, peer) = watch2.next_event().unwrap();
    assert_eq!((change, peer.name.as_str()), (Change::Up, "echo"));

    // The watching connection may still ask questions: replies come in
    // order among the events.
    let mut ws = raw(root.path());
    hello(&mut ws);
    send_json(&mut ws, r#"{"type":"watch"}"#);
    assert!(matches!(recv(&mut ws), Some(Reply::Watching { endpoints }) if endpoints.len() == 2));
    send_json(&mut ws, r#"{"type":"watch"}"#);
    assert!(matches!(
        recv(&mut ws),
        Some(Reply::Error {
            code: ErrorCode::Invalid,
            ..
        })
    ));
    send_json(&mut ws, r#"{"type":"count"}"#);
    assert!(matches!(recv(&mut ws), Some(Reply::Count { count: 3 })));
    drop(req);
    assert!(matches!(
        recv(&mut ws),
        Some(Reply::Event {
            change: Change::Down,
            ..
        })
    ));
}

#[test]
fn killed_endpoint_goes_down_for_watchers() {
    use tape_service::Change;
    let _w = watchdog("killed_endpoint");
    let root = tempfile::tempdir().unwrap();
    let _svc = Service::start(root.path()).unwrap();
    let (_, mut watch) = Client::connect(root.path()).unwrap().watch().unwrap();
    let child = RoleChild::spawn("endpoint", root.path());
    let pid = child.pid();
    let (change, peer) = watch.next_event().unwrap();
    assert_eq!((change, peer.pid), (Change::Up, pid));
    child.kill9();
    let (change, peer) = watch.next_event().unwrap();
    assert_eq!((change, peer.pid), (Change::Down, pid));
}

#[test]
fn python_endpoints_from_protocol_md() {
    let _w = watchdog("python_endpoints");
    run_protocol_script("protocol_endpoints.py");
}

/// `Service::start` in-process keeps the shared clock, as `tape service`
/// does: without it the first writer finds the clock stale and stamps with
/// the vDSO until it has made itself the keeper from inside `write()`.
#[test]
fn in_process_service_keeps_the_clock() {
    let _w = watchdog("service_keeps_clock");
    let run = |role: &str| {
        let root = tempfile::tempdir().unwrap();
        let clock = root.path().join("clock");
        let out = Command::new(std::env::current_exe().unwrap())
            .args(["child_role", "--exact", "--nocapture", "--test-threads=1"])
            .env(ROLE_ENV, role)
            .env(ROOT_ENV, root.path())
            .env(tape_journal::clock::SHARED_PATH_ENV, &clock)
            .env_remove("TAPE_CLOCK")
            .stderr(Stdio::inherit())
            .output()
            .unwrap();
        assert!(out.status.success(), "{role} failed");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let line = text
            .lines()
            .find_map(|l| l.split_once("CLOCK ").map(|(_, r)| r.to_string()))
            .unwrap_or_else(|| panic!("{role} printed no CLOCK line: {text}"));
        (line.contains("keeps=true"), line.contains("shared=true"))
    };
    let (control_keeps, shared) = run("clock-control");
    assert!(
        !control_keeps,
        "a process with no service is not the keeper"
    );
    let (service_keeps, _) = run("clock-service");
    if shared {
        assert!(
            service_keeps,
            "Service::start did not make its process the clock's keeper"
        );
    } else {
        // No invariant TSC (or a vDSO clock source): there is no shared
        // clock to keep, and every process stamps with the vDSO.
        assert!(!service_keeps);
    }
}
