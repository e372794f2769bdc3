//! Child processes: killed with the test, killed and reaped when dropped.

use crate::Deadline;
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::time::Duration;

/// Makes a child die with the test process (PR_SET_PDEATHSIG) and never
/// write a core file.
pub fn harden(cmd: &mut Command) {
    // SAFETY: the closure runs in the forked child before exec and calls
    // only async-signal-safe functions (prctl, setrlimit).
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            let zero = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            libc::setrlimit(libc::RLIMIT_CORE, &zero);
            Ok(())
        });
    }
}

/// A child process that is killed (SIGKILL) and reaped when dropped, so a
/// failing test leaves nothing running.
#[derive(Debug)]
pub struct Kid {
    /// The process.
    pub child: Child,
    what: String,
    done: Option<ExitStatus>,
}

impl Kid {
    /// Spawns `cmd`, panicking with `what` if it cannot start.
    pub fn spawn(what: &str, cmd: &mut Command) -> Kid {
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        Kid {
            child,
            what: what.to_string(),
            done: None,
        }
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Takes the child's stdin (it must have been piped).
    pub fn stdin(&mut self) -> ChildStdin {
        self.child.stdin.take().expect("stdin piped")
    }

    /// Whether it has exited (reaping it if so).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.done.is_none() {
            self.done = self.child.try_wait().expect("try_wait");
        }
        self.done
    }

    /// Waits for it to exit; fails as hung after the watchdog.
    pub fn wait(&mut self) -> ExitStatus {
        self.wait_until(&Deadline::new())
    }

    /// Waits for it to exit; fails as hung once `deadline` has passed.
    pub fn wait_until(&mut self, deadline: &Deadline) -> ExitStatus {
        loop {
            if let Some(s) = self.exited() {
                return s;
            }
            deadline.check(&format!("{} to exit", self.what));
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// SIGKILL and reap: once this returns the kernel has closed every
    /// descriptor of the child and released its locks.
    pub fn kill9(&mut self) -> ExitStatus {
        if self.done.is_none() {
            let _ = self.child.kill();
            self.done = Some(self.child.wait().expect("reap"));
        }
        self.done.expect("reaped")
    }
}

impl Drop for Kid {
    fn drop(&mut self) {
        if self.done.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The role this process plays when it is a re-executed test binary: the
/// value of environment variable `env` (each test binary names its own).
pub fn role(env: &str) -> Option<String> {
    std::env::var(env).ok()
}

/// Re-executes this test binary to run only `test` (its full path in the
/// binary, e.g. `processes::lock_names_holder`), with `env` set to `role`
/// and the extra variables `vars`; stdin and stdout null, stderr inherited.
/// Adjust the returned command's stdio before spawning it with
/// [`Kid::spawn`] where the role talks back.
pub fn role_command(
    test: &str,
    env: &str,
    role: &str,
    vars: &[(&str, &std::ffi::OsStr)],
) -> Command {
    let exe = std::env::current_exe().expect("current_exe");
    let mut cmd = Command::new(exe);
    cmd.args([test, "--exact", "--nocapture", "--test-threads=1", "-q"])
        .env(env, role)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    for (k, v) in vars {
        cmd.env(k, v);
    }
    harden(&mut cmd);
    cmd
}
