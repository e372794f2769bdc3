//! Helpers: a temporary root per test, child processes killed on drop, a
//! running `tape service`, watchdogs.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{ChildStdin, Command, Output, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

pub use tape_testkit::{
    harden, tape, wait_until, Deadline, Kid, Root, RunningService as Service, WATCHDOG,
};

/// The `tape` binary under test.
pub fn tape_bin() -> &'static str {
    env!("CARGO_BIN_EXE_tape")
}

/// Runs a command to completion with `input` on stdin; fails as hung after
/// the watchdog.
pub fn run(cmd: &mut Command, input: &[u8]) -> Output {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut kid = Kid::spawn(&format!("{cmd:?}"), cmd);
    let mut stdin = kid.stdin();
    let input = input.to_vec();
    let feeder = std::thread::spawn(move || {
        // The command may exit without reading its input: that is its
        // business, not an error here.
        let _ = stdin.write_all(&input);
    });
    let out = collect(kid.child.stdout.take().expect("stdout piped"));
    let err = collect(kid.child.stderr.take().expect("stderr piped"));
    let status = kid.wait();
    let _ = feeder.join();
    Output {
        status,
        stdout: out.join().expect("stdout thread"),
        stderr: err.join().expect("stderr thread"),
    }
}

fn collect(mut r: impl Read + Send + 'static) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = r.read_to_end(&mut v);
        v
    })
}

/// Runs a command that must succeed; returns its stdout.
pub fn ok(cmd: &mut Command, input: &[u8]) -> Vec<u8> {
    let o = run(cmd, input);
    assert!(
        o.status.success(),
        "{cmd:?} failed with {}: {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    o.stdout
}

/// `1\n2\n...n\n` for `range`.
pub fn lines(range: std::ops::RangeInclusive<u64>) -> Vec<u8> {
    let mut v = Vec::new();
    for i in range {
        writeln!(v, "{i}").expect("write to vec");
    }
    v
}

/// Writes `input` to `w` in large chunks (one write per chunk).
pub fn feed(w: &mut impl Write, input: &[u8]) {
    for chunk in input.chunks(1 << 16) {
        w.write_all(chunk).expect("feed the writer");
    }
    w.flush().expect("flush the writer's stdin");
}

/// `tape write <journal> --page-size 1MiB` of `input`, which must succeed.
pub fn write_journal(root: &Root, journal: &str, input: &[u8]) {
    ok(
        &mut root.tape("write", &[journal, "--page-size", "1048576"]),
        input,
    );
}

/// A running `tape write` whose stdin the test holds.
#[derive(Debug)]
pub struct LiveWriter {
    pub kid: Kid,
    pub stdin: Option<ChildStdin>,
}

impl LiveWriter {
    pub fn start(root: &Root, journal: &str) -> LiveWriter {
        let mut kid = Kid::spawn(
            &format!("tape write {journal}"),
            root.tape("write", &[journal, "--page-size", "1048576"])
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit()),
        );
        let stdin = Some(kid.stdin());
        LiveWriter { kid, stdin }
    }

    pub fn pid(&self) -> u32 {
        self.kid.pid()
    }

    pub fn send(&mut self, input: &[u8]) {
        feed(self.stdin.as_mut().expect("stdin still open"), input);
    }

    /// Closes stdin and waits for a clean exit.
    pub fn finish(&mut self) {
        drop(self.stdin.take());
        let s = self.kid.wait();
        assert!(s.success(), "tape write exited with {s}");
    }
}

/// Lines of a child's stdout, collected by a thread.
#[derive(Debug)]
pub struct Lines {
    rx: mpsc::Receiver<String>,
    _thread: JoinHandle<()>,
}

impl Lines {
    pub fn of(r: impl Read + Send + 'static) -> Lines {
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            for line in BufReader::new(r).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Lines {
            rx,
            _thread: thread,
        }
    }

    /// The next line; fails as hung at the deadline, `None` at end of
    /// output.
    pub fn next(&self, d: &Deadline, what: &str) -> Option<String> {
        match self.rx.recv_timeout(d.left()) {
            Ok(l) => Some(l),
            Err(mpsc::RecvTimeoutError::Disconnected) => None,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!("watchdog: gave up waiting for {what}")
            }
        }
    }
}

/// Counts and checks the lines of a long output on a thread: line `i`
/// (from 0) must be `first + i`.
#[derive(Debug)]
pub struct Counter {
    pub state: Arc<Mutex<CountState>>,
    _thread: JoinHandle<()>,
}

/// What a [`Counter`] saw.
#[derive(Debug, Default, Clone)]
pub struct CountState {
    pub count: u64,
    pub error: Option<String>,
    pub ended: bool,
}

impl Counter {
    pub fn of(r: impl Read + Send + 'static, first: u64) -> Counter {
        let state = Arc::new(Mutex::new(CountState::default()));
        let s = state.clone();
        let thread = std::thread::spawn(move || {
            let mut r = BufReader::with_capacity(1 << 16, r);
            let mut line = String::new();
            let mut expect = first;
            let mut seen = 0u64;
            loop {
                line.clear();
                match r.read_line(&mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                let got = line.trim_end_matches('\n');
                if got != expect.to_string() {
                    let mut st = s.lock().unwrap();
                    st.error
                        .get_or_insert(format!("line {} is {got:?}, expected {expect}", seen + 1));
                }
                expect += 1;
                seen += 1;
                s.lock().unwrap().count = seen;
            }
            let mut st = s.lock().unwrap();
            st.count = seen;
            st.ended = true;
        });
        Counter {
            state,
            _thread: thread,
        }
    }

    pub fn get(&self) -> CountState {
        self.state.lock().unwrap().clone()
    }

    /// Waits until `n` lines have come, then checks there was no error.
    pub fn wait_for(&self, n: u64, what: &str) {
        let d = Deadline::new();
        loop {
            let st = self.get();
            assert!(st.error.is_none(), "{what}: {}", st.error.unwrap());
            if st.count >= n {
                assert_eq!(st.count, n, "{what}: more lines than written");
                return;
            }
            assert!(!st.ended, "{what}: output ended after {} lines", st.count);
            d.check(&format!("{what} ({} of {n} lines so far)", st.count));
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Parses JSON lines.
pub fn json_lines(out: &[u8]) -> Vec<serde_json::Value> {
    std::str::from_utf8(out)
        .expect("utf-8 output")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad json line {l:?}: {e}")))
        .collect()
}

/// `tape ls --json`.
pub fn ls_json(root: &Root) -> Vec<serde_json::Value> {
    json_lines(&ok(&mut root.tape("ls", &["--json"]), b""))
}

/// The `tape ls --json` entry of `journal`.
pub fn ls_entry(root: &Root, journal: &str) -> Option<serde_json::Value> {
    ls_json(root).into_iter().find(|e| e["journal"] == journal)
}

/// `tape tail <journals> --format json` (from the start, no follow).
pub fn tail_json(root: &Root, journals: &[&str]) -> Vec<serde_json::Value> {
    let mut args = journals.to_vec();
    args.extend(["--format", "json"]);
    json_lines(&ok(&mut root.tape("tail", &args), b""))
}

/// Sequence numbers of JSON frames.
pub fn seqs(frames: &[serde_json::Value]) -> Vec<u64> {
    frames
        .iter()
        .map(|f| f["seq"].as_u64().expect("seq is a number"))
        .collect()
}

/// The pid the service holds as the writer of `journal`, asked directly
/// (`tape ls` falls back to the lock file, so it cannot tell).
pub fn service_writer(root: &Root, journal: &str) -> Option<u32> {
    let mut c = tape_service::Client::connect(root.path()).ok()?;
    let js = c.journals().ok()?;
    js.into_iter()
        .find(|j| j.journal == journal)
        .and_then(|j| j.writer.map(|w| w.pid))
}

/// Pids of the readers the service lists for `journal`.
pub fn service_readers(root: &Root, journal: &str) -> Vec<u32> {
    let Ok(mut c) = tape_service::Client::connect(root.path()) else {
        return Vec::new();
    };
    let Ok(js) = c.journals() else {
        return Vec::new();
    };
    js.into_iter()
        .find(|j| j.journal == journal)
        .map(|j| j.readers.iter().map(|r| r.pid).collect())
        .unwrap_or_default()
}

/// Starts `tape tail <args>` with stdout piped and stderr captured.
pub fn spawn_tail(root: &Root, args: &[&str]) -> Kid {
    Kid::spawn(
        &format!("tape tail {args:?}"),
        root.tape("tail", args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit()),
    )
}

/// Waits until the service lists the `tape tail` with `pid` as a reader of
/// `journal` (so it is surely running and positioned).
pub fn wait_reader_registered(root: &Root, journal: &str, pid: u32) {
    wait_until(&format!("reader {pid} to register {journal}"), || {
        service_readers(root, journal).contains(&pid)
    });
}

/// Waits until `tape tail`'s reader named `tape-tail-<pid>` is known to the
/// service with at least one journal (works before the journal exists).
pub fn wait_tail_online(root: &Root, pid: u32) {
    let name = format!("tape-tail-{pid}");
    wait_until(&format!("{name} to be online"), || {
        tape_service::Client::connect(root.path())
            .ok()
            .and_then(|mut c| c.find(&name).ok().flatten())
            .is_some_and(|p| !p.journals.is_empty())
    });
}
