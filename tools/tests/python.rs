//! Runs the Python package's tests (`python/tests/`, unittest) against the
//! `tape` binary cargo built, so `cargo test --workspace` covers the Python
//! reader and writer too: they read what Rust writes byte for byte, write
//! what `tape tail` and `tape verify` accept, and keep the one-writer rule
//! with Rust writers both ways; `tape.Requester` and `tape.Responder` call
//! and answer the Rust `tape-echo`, `tape call` and `tape-ping`
//! (`python/tests/test_rpc.py`); `tape.Struct` reads, field by field, the
//! zero-copy structs that tape-examples' `typed-md` writes
//! (`python/tests/test_typed.py`: it finds `typed-md` beside `tape`, which
//! `cargo test --workspace` builds; alone, `cargo build -p tape-examples`
//! first). Each Python test starts its own `tape service` on its own
//! temporary root.
//!
//! Needs `python3` (3.8 or later) on the PATH; the tests of `tape.Vars`
//! (`python/tests/test_vars.py`) also need nats-py and `nats-server`, which
//! `./test.sh` installs when missing (they fail without them, never skip).

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Generous: the Python suite takes seconds; this only catches a hang.
const WATCHDOG: Duration = Duration::from_secs(600);

#[test]
fn python_package_tests_pass() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tools/ has a parent");
    let out = tempfile::NamedTempFile::new().expect("temporary file for the output");
    let mut child = Command::new("python3")
        .args(["-m", "unittest", "discover", "-s", "python/tests", "-v"])
        .current_dir(repo)
        .env("TAPE_BIN", env!("CARGO_BIN_EXE_tape"))
        .env("TAPE_ECHO_BIN", env!("CARGO_BIN_EXE_tape-echo"))
        .env("TAPE_PING_BIN", env!("CARGO_BIN_EXE_tape-ping"))
        .env("TAPE_PY_REQUIRE_BIN", "1")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env_remove("TAPE_ROOT")
        .stdin(Stdio::null())
        .stdout(out.reopen().expect("reopen the output file"))
        .stderr(out.reopen().expect("reopen the output file"))
        .spawn()
        .expect("cannot run python3: install Python 3.8 or later");
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for python3") {
            break Some(s);
        }
        if start.elapsed() > WATCHDOG {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut text = String::new();
    out.reopen()
        .expect("reopen the output file")
        .read_to_string(&mut text)
        .expect("read the Python test output");
    println!("{text}");
    let status = status.unwrap_or_else(|| panic!("watchdog: the Python tests hung\n{text}"));
    assert!(
        status.success(),
        "the Python tests failed ({status}):\n{text}"
    );
    // unittest ends with "Ran N tests" and "OK": a run of no test, or one
    // that skipped the tests needing the binary, is a failure here.
    let ran = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("Ran ")?
                .split(' ')
                .next()?
                .parse::<u32>()
                .ok()
        })
        .unwrap_or(0);
    assert!(ran >= 20, "the Python suite ran {ran} tests:\n{text}");
    assert!(
        !text.contains(" ... skipped"),
        "Python tests were skipped:\n{text}"
    );
}
