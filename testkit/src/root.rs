//! A temporary root, the real `tape` binary, a real `tape service`.

use crate::{harden, Deadline, Kid};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// The `tape` binary under test: `$TAPE_BIN` if set, else `tape` beside
/// the running test binary's folder (`target/<profile>/tape`, which cargo
/// builds before the integration tests of `tape-tools`; other crates'
/// tests that need it build it with `cargo build --bin tape` first).
pub fn tape_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("TAPE_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test>-<hash>
    let profile = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary under target/<profile>/deps");
    profile.join("tape")
}

/// Example `name` of the package under test (`target/<profile>/examples/
/// <name>`, which `cargo test` builds before running the package's
/// integration tests).
pub fn example_bin(name: &str) -> PathBuf {
    tape_bin().with_file_name("examples").join(name)
}

/// Example `name` of the package under test as a command on `root`
/// (`TAPE_ROOT` set to it), hardened.
pub fn example(name: &str, root: &Path) -> Command {
    let mut cmd = Command::new(example_bin(name));
    cmd.env("TAPE_ROOT", root);
    harden(&mut cmd);
    cmd
}

/// Runs `cmd` to completion and returns its standard output as text,
/// failing the test (with its standard error) if it did not exit 0.
pub fn stdout_of(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run the command");
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// A `tape` command with the given arguments, hardened, with no
/// `TAPE_ROOT` inherited.
pub fn tape(args: &[&str]) -> Command {
    let mut cmd = Command::new(tape_bin());
    cmd.args(args);
    cmd.env_remove("TAPE_ROOT");
    harden(&mut cmd);
    cmd
}

/// One temporary root, deleted when the test ends.
#[derive(Debug)]
pub struct Root {
    dir: tempfile::TempDir,
}

impl Default for Root {
    fn default() -> Self {
        Root::new()
    }
}

impl Root {
    /// A new empty root under the system's temporary folder.
    pub fn new() -> Root {
        Root {
            dir: tempfile::Builder::new()
                .prefix("tape-test-")
                .tempdir()
                .expect("create a temporary root"),
        }
    }

    /// Its folder.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `--root <this>` as a string.
    pub fn arg(&self) -> &str {
        self.dir.path().to_str().expect("utf-8 temp path")
    }

    /// `<root>/journal`.
    pub fn journal_dir(&self) -> PathBuf {
        self.path().join("journal")
    }

    /// `<root>/system/service.sock`.
    pub fn socket(&self) -> PathBuf {
        self.path().join("system").join("service.sock")
    }

    /// Page file `page_no` of journal `name`.
    pub fn page(&self, name: &str, page_no: u64) -> PathBuf {
        self.journal_dir()
            .join(format!("{name}.{page_no:08}.journal"))
    }

    /// `tape <verb> <args...> --root <root>`.
    pub fn tape(&self, verb: &str, args: &[&str]) -> Command {
        let mut cmd = tape(&[verb]);
        cmd.args(args).arg("--root").arg(self.arg());
        cmd
    }
}

/// A running `tape service` on a root, killed (SIGKILL) when dropped.
#[derive(Debug)]
pub struct RunningService {
    /// The process.
    pub kid: Kid,
}

impl RunningService {
    /// Starts `tape service --root <root>` and waits until its socket
    /// accepts connections.
    pub fn start(root: &Root) -> RunningService {
        let mut kid = Kid::spawn(
            "tape service",
            root.tape("service", &[])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        let sock = root.socket();
        let d = Deadline::new();
        loop {
            if let Some(s) = kid.exited() {
                panic!("tape service exited at start: {s}");
            }
            if UnixStream::connect(&sock).is_ok() {
                break;
            }
            d.check("the service socket to accept connections");
            std::thread::sleep(Duration::from_millis(5));
        }
        RunningService { kid }
    }
}
