//! The shared clock's keeper.

use super::*;

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
