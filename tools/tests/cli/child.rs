//! Roles the test binary plays when a test re-executes it as a child
//! process (`TAPE_TEST_ROLE` set): the only way to put a `Reader` in a
//! process of its own, or to let one crash.

use crate::common::{harden, Kid};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tape_reader::{Idle, Reader, ServiceMode, Start};

const ROLE: &str = "TAPE_TEST_ROLE";
const ROOT: &str = "TAPE_TEST_ROOT";
const ARG: &str = "TAPE_TEST_ARG";

/// Re-executes this test binary as `role` on `root`, running only
/// [`role_entry`]. Stdout is piped (the role prints `ROLE ...` lines).
pub fn spawn(role: &str, root: &std::path::Path, arg: &str) -> Kid {
    spawn_with(role, root, arg, Stdio::null())
}

/// [`spawn`] with the child's stdin as given (piped, to talk to it).
pub fn spawn_with(role: &str, root: &std::path::Path, arg: &str, stdin: Stdio) -> Kid {
    let mut cmd = command(role, root, arg);
    cmd.stdin(stdin);
    Kid::spawn(&format!("child role {role}"), &mut cmd)
}

/// The command [`spawn`] runs (hardened, stdout piped), to adjust first.
pub fn command(role: &str, root: &std::path::Path, arg: &str) -> Command {
    let exe = std::env::current_exe().expect("the test binary");
    command_of(&exe, role, root, arg)
}

/// [`command`] with `exe`, a copy of this test binary, as the program.
pub fn command_of(exe: &std::path::Path, role: &str, root: &std::path::Path, arg: &str) -> Command {
    let mut cmd = Command::new(exe);
    cmd.args([
        "child::role_entry",
        "--exact",
        "--nocapture",
        "--test-threads=1",
        "-q",
    ])
    .env(ROLE, role)
    .env(ROOT, root)
    .env(ARG, arg)
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit());
    harden(&mut cmd);
    cmd
}

/// The lines a role printed (`ROLE ` prefix removed).
pub fn role_lines(stdout: &str) -> Vec<&str> {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("ROLE "))
        .collect()
}

pub fn say(msg: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "ROLE {msg}").unwrap();
    out.flush().unwrap();
}

/// Not a test of its own: passes at once unless `TAPE_TEST_ROLE` is set.
#[test]
fn role_entry() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    let root = std::path::PathBuf::from(std::env::var(ROOT).expect("root"));
    let arg = std::env::var(ARG).unwrap_or_default();
    match role.as_str() {
        "count-reader" => count_reader(&root, arg.parse().expect("frame count")),
        "scribble-reader" => scribble_reader(&root),
        "scribble-cursor" => scribble_cursor(&root),
        "rpc-load" => crate::rpc_roles::load(&root, &arg),
        "rpc-gated" => crate::rpc_roles::gated(&root),
        "rpc-impatient" => crate::rpc_roles::impatient(&root),
        "rpc-pair" => crate::rpc_roles::pair(&root),
        "rpc-many" => crate::rpc_roles::many(&root, arg.parse().expect("endpoint count")),
        r if r.starts_with("remote-") => crate::nats::remote_roles::run(r, &root, &arg),
        other => crate::roles::run(other, &root, &arg),
    }
}

/// A registered `Reader` of `md` from its start: checks that frame `i` has
/// seq `i` and payload `i`, prints `ROLE ready` once registered and
/// `ROLE done N` after frame `n`.
fn count_reader(root: &std::path::Path, n: u64) {
    let give_up = Instant::now() + Duration::from_secs(150);
    let mut r = Reader::builder("count-reader")
        .root(root)
        .start(Start::First)
        .service(ServiceMode::Required)
        .create()
        .expect("create the reader");
    r.add_journal(tape_journal::journal_dir(root), "md")
        .expect("add md");
    say("ready");
    let mut idle = Idle::new();
    let mut expect = 1u64;
    while expect <= n {
        match r.next().expect("read") {
            Some(f) => {
                idle.reset();
                assert_eq!(f.seq(), expect, "sequence");
                let p = std::str::from_utf8(f.payload()).expect("utf-8 payload");
                assert_eq!(p, expect.to_string(), "payload of seq {expect}");
                expect += 1;
            }
            None => {
                assert!(Instant::now() < give_up, "reader gave up at seq {expect}");
                idle.idle();
            }
        }
    }
    // Nothing after the last frame for a moment: no frame twice.
    for _ in 0..1000 {
        if let Some(f) = r.next().expect("read") {
            panic!("frame after the last one: seq {}", f.seq());
        }
    }
    say(&format!("done {}", expect - 1));
}

/// Takes the first frame's payload from a `Reader` and writes through it.
fn scribble_reader(root: &std::path::Path) {
    let mut r = Reader::builder("scribbler")
        .root(root)
        .start(Start::First)
        .service(ServiceMode::Never)
        .create()
        .expect("create the reader");
    r.add_journal(tape_journal::journal_dir(root), "md")
        .expect("add md");
    let f = r.next().expect("read").expect("a frame");
    let p = f.payload().as_ptr() as *mut u8;
    say(&format!("writing at {p:p}"));
    // SAFETY: not safe at all, on purpose: a strategy with a bug writes
    // through a frame it borrowed. The mapping is read-only, so the kernel
    // must stop the process here with SIGSEGV.
    unsafe { std::ptr::write_volatile(p, b'X') };
    say("wrote");
}

/// Takes the first frame's payload from a raw `Cursor` and writes through
/// it.
fn scribble_cursor(root: &std::path::Path) {
    let mut c = tape_journal::Cursor::open(
        &tape_journal::journal_dir(root),
        "md",
        Start::First,
        tape_journal::CursorOptions::default(),
    )
    .expect("open a cursor");
    let f = c.next().expect("read").expect("a frame");
    let p = f.payload().as_ptr() as *mut u8;
    say(&format!("writing at {p:p}"));
    // SAFETY: not safe, on purpose (see scribble_reader).
    unsafe { std::ptr::write_volatile(p, b'X') };
    say("wrote");
}
