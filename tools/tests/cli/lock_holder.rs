//! The writer refused by a lock that another program holds (issue 21, item
//! 7): the refusal names the process the kernel lists as the holder, not
//! the pid of the last tape writer left in the lock file.

use crate::common::*;
use std::process::{Command, Stdio};

#[test]
fn refusal_names_the_real_holder_of_the_lock() {
    let root = Root::new();
    let _service = Service::start(&root);
    write_journal(&root, "md", &lines(1..=3));
    let lock = root.journal_dir().join("md.lock");
    let stale = std::fs::read_to_string(&lock).unwrap().trim().to_string();
    let holder = Kid::spawn(
        "flock md.lock",
        Command::new("flock")
            .arg(&lock)
            .args(["sleep", "60"])
            .stdin(Stdio::null()),
    );
    let pid = holder.pid().to_string();
    wait_until("flock(1) to hold md.lock", || {
        std::fs::read_to_string("/proc/locks")
            .unwrap()
            .lines()
            .any(|l| l.contains(" FLOCK ") && l.contains(&format!(" {pid} ")))
    });
    let o = run(&mut root.tape("write", &["md"]), b"more\n");
    assert!(!o.status.success(), "tape write appended under a held lock");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!("pid {pid}")),
        "names flock's pid {pid}: {err}"
    );
    assert!(
        !err.contains(&format!("pid {stale}")),
        "names the dead writer {stale}: {err}"
    );
    drop(holder);
}
