//! The wire and the daemon's own life: bad input, a service restart, a
//! second service, no service, the connection limit, the Python client of
//! PROTOCOL.md.

use super::*;

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
pub(crate) fn run_protocol_script(script: &str) {
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
