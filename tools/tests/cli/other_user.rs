//! A process of another user (uid and gid 65534, "nobody", no
//! supplementary group) cannot register as a writer, connect to the
//! service socket, open a journal for appending, write a page file or
//! prune, and each refusal says why. The modes that make it so are
//! checked too: socket 0660, page and lock files 0640.
//!
//! Needs root (to drop privileges in the child); says so and passes
//! without checking anything otherwise.

use crate::child;
use crate::common::*;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;

pub(crate) const NOBODY: u32 = 65534;

pub(crate) fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Copies of this test binary and of `tape` that the other user can run:
/// the build folder may sit under a private one (a checkout in a
/// `mktemp -d` folder, mode 0700), where it could not even reach them.
pub(crate) struct Runnable {
    _dir: tempfile::TempDir,
    test: std::path::PathBuf,
    pub(crate) tape: std::path::PathBuf,
}

pub(crate) fn runnable() -> Runnable {
    let dir = tempfile::Builder::new()
        .prefix("tape-other-user-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let copy = |from: &std::path::Path, name: &str| {
        let to = dir.path().join(name);
        std::fs::copy(from, &to).unwrap();
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755)).unwrap();
        to
    };
    let test = copy(&std::env::current_exe().unwrap(), "cli-test");
    let tape = copy(std::path::Path::new(tape_bin()), "tape");
    Runnable {
        _dir: dir,
        test,
        tape,
    }
}

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn another_user_cannot_write_register_or_connect() {
    if !is_root() {
        eprintln!("another_user_cannot_write_register_or_connect: skipped, needs root");
        return;
    }
    let root = Root::new();
    // The temporary root is private (0700): open it up like /tmp/trading,
    // so that only the modes of tape's own files keep the other user out.
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let _service = Service::start(&root);
    write_journal(&root, "md", &lines(1..=1000));
    let page = root.page("md", 1);
    let lock = root.journal_dir().join("md.lock");
    assert_eq!(mode(&root.socket()), 0o660, "service socket mode");
    assert_eq!(mode(&page), 0o640, "page file mode");
    assert_eq!(mode(&lock), 0o640, "lock file mode");
    assert_eq!(
        mode(&root.journal_dir()) & 0o002,
        0,
        "journal folder writable by others"
    );
    let before = std::fs::read(&page).unwrap();

    let exes = runnable();
    let mut cmd = child::command_of(&exes.test, "other-user", root.path(), "");
    cmd.uid(NOBODY).gid(NOBODY);
    let mut kid = Kid::spawn("the other-user role", &mut cmd);
    let out = Lines::of(kid.child.stdout.take().unwrap());
    let d = Deadline::new();
    let mut said = Vec::new();
    while let Some(l) = out.next(&d, "the other user's attempts") {
        if let Some(m) = l.strip_prefix("ROLE ") {
            said.push(m.to_string());
        }
    }
    let s = kid.wait();
    assert!(s.success(), "the role failed: {s}; said {said:?}");
    assert_eq!(said.len(), 4, "{said:?}");
    let refused = |what: &str| -> String {
        let line = said
            .iter()
            .find(|l| l.starts_with(&format!("{what} ")))
            .unwrap_or_else(|| panic!("no {what} in {said:?}"));
        line.strip_prefix(&format!("{what} refused "))
            .unwrap_or_else(|| panic!("the other user was allowed: {line}"))
            .to_string()
    };
    let connect = refused("connect");
    assert!(connect.contains("Permission denied"), "{connect}");
    let register = refused("register");
    assert!(
        register.contains("Permission denied")
            && register.contains("may not talk to the tape service"),
        "{register}"
    );
    let append = refused("append");
    assert!(
        append.contains("Permission denied") && append.contains("may not write this journal"),
        "{append}"
    );
    assert!(append.contains("md.lock"), "names the file: {append}");
    let page_err = refused("page");
    assert!(page_err.contains("Permission denied"), "{page_err}");

    // The command line as that user: one line saying why.
    for (verb, args) in [
        ("write", vec!["md"]),
        ("prune", vec!["md", "--keep-last", "1"]),
    ] {
        let mut c = std::process::Command::new(&exes.tape);
        c.arg(verb).args(&args).arg("--root").arg(root.arg());
        c.env_remove("TAPE_ROOT");
        harden(&mut c);
        c.uid(NOBODY).gid(NOBODY);
        let o = run(&mut c, b"intruder\n");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "tape {verb} as another user succeeded");
        assert!(err.contains("Permission denied"), "tape {verb}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "tape {verb}: {err}");
    }

    assert!(
        std::fs::read(&page).unwrap() == before,
        "the journal changed"
    );
    assert_eq!(std::fs::metadata(&page).unwrap().uid(), 0);
    assert!(ok(&mut root.tape("tail", &["md"]), b"") == lines(1..=1000));
    ok(&mut root.tape("verify", &["md"]), b"");
}
