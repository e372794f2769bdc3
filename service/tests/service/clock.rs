//! The shared clock's keeper.

use super::*;

/// This test binary in clock role `role` on `root`, with a clock file of
/// its own in `root` (no other process on the box keeps it).
fn clock_role(role: &str, root: &Path) -> Command {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args(["child_role", "--exact", "--nocapture", "--test-threads=1"])
        .env(ROLE_ENV, role)
        .env(ROOT_ENV, root)
        .env(tape_journal::clock::SHARED_PATH_ENV, root.join("clock"))
        .env_remove("TAPE_CLOCK")
        .stderr(Stdio::inherit());
    c
}

/// Runs clock role `role` to its end; the rest of its `CLOCK ` line.
fn clock_line(role: &str, root: &Path) -> String {
    let out = clock_role(role, root).output().unwrap();
    assert!(out.status.success(), "{role} failed");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .find_map(|l| l.split_once("CLOCK ").map(|(_, r)| r.to_string()))
        .unwrap_or_else(|| panic!("{role} printed no CLOCK line: {text}"))
}

/// `Service::start` in-process keeps the shared clock, as `tape service`
/// does: without it the first writer finds the clock stale and stamps with
/// the vDSO until it has made itself the keeper from inside `write()`.
#[test]
fn in_process_service_keeps_the_clock() {
    let _w = watchdog("service_keeps_clock");
    let run = |role: &str| {
        let root = tempfile::tempdir().unwrap();
        let line = clock_line(role, root.path());
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

/// A keeper that is stopped (SIGSTOP, or hung) keeps the clock file's
/// lock, so no process can take over: the others then keep the TSC with
/// the last published rate and anchors of their own (`Source::Local`),
/// within microseconds of CLOCK_REALTIME, instead of every stamp paying a
/// stale check and a vDSO read. Once the keeper is gone, the next process
/// takes over.
#[test]
fn a_stopped_keeper_leaves_the_others_on_the_tsc_and_a_dead_one_is_replaced() {
    let _w = watchdog("stopped_keeper");
    let root = tempfile::tempdir().unwrap();
    let probe = || -> (String, bool, i64) {
        let line = clock_line("clock-probe", root.path());
        let field = |k: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(k))
                .unwrap_or_else(|| panic!("no {k} in {line}"))
                .to_string()
        };
        (
            field("source="),
            field("keeps=") == "true",
            field("err=").parse().unwrap(),
        )
    };
    /// Killed on drop, stopped or not (a failed assertion must not leave
    /// a stopped process holding the test's output pipes).
    struct Keeper(std::process::Child);
    impl Drop for Keeper {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut keeper = Keeper(
        clock_role("clock-keeper", root.path())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let out = keeper.0.stdout.take().unwrap();
    let mut lines = BufReader::new(out).lines();
    assert!(
        lines.any(|l| l.is_ok_and(|l| l.trim_end().ends_with("READY"))),
        "the keeper did not start"
    );
    let (fresh, probe_keeps, _) = probe();
    if fresh == "Vdso" {
        // No invariant TSC here: no shared clock, nothing to take over.
        return;
    }
    assert_eq!(fresh, "Shared");
    assert!(!probe_keeps, "the keeper holds the lock");

    // Stopped past the parameters' two seconds.
    let pid = nix::unistd::Pid::from_raw(keeper.0.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    std::thread::sleep(Duration::from_millis(2_300));
    let (stale, probe_keeps, err) = probe();
    assert_eq!(
        stale, "Local",
        "a stopped keeper sent the others to the vDSO"
    );
    assert!(
        !probe_keeps,
        "took the lock of a keeper that is only stopped"
    );
    assert!(err < 5_000, "own anchors {err} ns off CLOCK_REALTIME");

    // Dead: its lock goes with it, and the next reader of the clock keeps it.
    drop(keeper);
    let (after, probe_keeps, err) = probe();
    assert_eq!(after, "Shared");
    assert!(probe_keeps, "nobody took over from a dead keeper");
    assert!(
        err < 5_000,
        "the new keeper's clock {err} ns off CLOCK_REALTIME"
    );
}
