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
        // Keeps the clock (its own file, TAPE_CLOCK_FILE) until killed;
        // READY once its first parameters are out.
        "clock-keeper" => {
            use tape_journal::clock;
            if clock::keep() {
                while clock::source() != clock::Source::Shared {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
            Box::new(())
        }
        // Reads the clock for up to 1.5 s (becoming the keeper if it can),
        // then says where its time comes from and how far it is from
        // CLOCK_REALTIME.
        "clock-probe" => {
            use tape_journal::clock;
            let end = clock::vdso_ns() + 1_500_000_000;
            while clock::source() != clock::Source::Shared && clock::vdso_ns() < end {
                clock::now_ns();
                std::thread::sleep(Duration::from_millis(5));
            }
            let mut err = i64::MAX;
            for _ in 0..200 {
                let a = clock::vdso_ns();
                let t = clock::now_ns();
                let b = clock::vdso_ns();
                let off = if t < a {
                    a - t
                } else if t > b {
                    t - b
                } else {
                    0
                };
                err = err.min(off + (b - a));
            }
            println!(
                "CLOCK source={:?} keeps={} err={err}",
                clock::source(),
                clock::keeps()
            );
            std::io::stdout().flush().unwrap();
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

mod clock;
mod endpoints;
mod wire;
mod writers;
