//! Reader positions through real processes: `tape tail --resume NAME`
//! refuses a second live reader of its name naming the first, a plain
//! `tape tail` shows its position while it runs and leaves none behind,
//! and a folder the reader may not write gives no position (and a clear
//! refusal when asked to resume). The kill campaign is
//! `campaign::reader_kill`.

use crate::common::*;
use crate::other_user::{is_root, runnable, NOBODY};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use tape_journal::position::{list_positions, position_path, readers_dir, PositionView};

fn view(root: &Root, reader: &str) -> Option<PositionView> {
    PositionView::open(&position_path(&root.journal_dir(), "md", reader)).ok()
}

#[test]
fn a_second_live_reader_of_the_same_name_is_refused_naming_the_first() {
    let root = Root::new();
    let _service = Service::start(&root);
    write_journal(&root, "md", &lines(1..=100));
    let mut first = spawn_tail(
        &root,
        &["md", "--follow", "--resume", "dup", "--from", "start"],
    );
    let out = Counter::of(first.child.stdout.take().unwrap(), 1);
    out.wait_for(100, "the first reader");
    wait_until("the first reader to commit frame 100", || {
        view(&root, "dup").is_some_and(|v| v.committed_seq == 100)
    });
    let v = view(&root, "dup").unwrap();
    assert_eq!(
        (v.seen_seq, v.holder, v.pid),
        (100, Some(first.pid()), first.pid())
    );
    assert!(v.resumes());

    for args in [
        vec!["md", "--resume", "dup"],
        vec!["md", "--follow", "--resume", "dup"],
    ] {
        let o = run(&mut root.tape("tail", &args), b"");
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "tape tail {args:?}: {err}");
        assert!(o.stdout.is_empty(), "the refused reader printed frames");
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
        assert!(
            err.contains(&format!("pid {}", first.pid()))
                && err.contains("\"dup\" already reads journal md"),
            "names the holder: {err}"
        );
    }
    // The refusals changed nothing.
    assert_eq!(view(&root, "dup").unwrap(), v);

    first.kill9();
    // Once the first is gone its name is free, and it resumes after 100.
    let mut w = LiveWriter::start(&root, "md");
    w.send(&lines(101..=110));
    w.finish();
    let out = ok(&mut root.tape("tail", &["md", "--resume", "dup"]), b"");
    assert!(out == lines(101..=110), "{}", String::from_utf8_lossy(&out));
}

#[test]
fn a_plain_tail_shows_its_position_while_it_runs_and_leaves_none() {
    let root = Root::new();
    let _service = Service::start(&root);
    write_journal(&root, "md", &lines(1..=50));
    let mut tail = spawn_tail(&root, &["md", "--follow", "--from", "start"]);
    let name = format!("tape-tail-{}", tail.pid());
    let out = Counter::of(tail.child.stdout.take().unwrap(), 1);
    out.wait_for(50, "tail --follow");
    wait_until("its position at frame 50", || {
        view(&root, &name).is_some_and(|v| v.seen_seq == 50)
    });
    let v = view(&root, &name).unwrap();
    assert_eq!((v.holder, v.committed_seq), (Some(tail.pid()), 0));
    assert!(!v.resumes());
    // Killed: its file stays, no one holds it.
    tail.kill9();
    assert_eq!(view(&root, &name).unwrap().holder, None);
    // The next reader sweeps it, and deletes its own at its end.
    assert!(ok(&mut root.tape("tail", &["md"]), b"") == lines(1..=50));
    assert!(list_positions(&root.journal_dir(), "md")
        .unwrap()
        .is_empty());
    assert!(!readers_dir(&root.journal_dir(), "md").exists());
}

#[test]
fn a_folder_the_reader_may_not_write_gives_no_position_and_no_resume() {
    let root = Root::new();
    write_journal_no_service(&root);
    let dir = root.journal_dir();
    let page = std::fs::read(root.page("md", 1)).unwrap();
    // As root: the other user, in the journal's group (which may read the
    // 0640 pages, not write the 0755 folder). Otherwise: the folder made
    // read-only.
    let exes = if is_root() {
        std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        Some(runnable())
    } else {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o555)).unwrap();
        None
    };
    let tail = |args: &[&str]| {
        let mut c = match &exes {
            Some(e) => {
                let mut c = std::process::Command::new(&e.tape);
                c.uid(NOBODY).gid(0);
                c
            }
            None => std::process::Command::new(tape_bin()),
        };
        c.arg("tail").args(args).arg("--root").arg(root.arg());
        c.env_remove("TAPE_ROOT");
        harden(&mut c);
        run(&mut c, b"")
    };
    let o = tail(&["md"]);
    assert!(
        o.status.success(),
        "a plain tail reads on: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.stdout == lines(1..=20));
    assert!(!readers_dir(&dir, "md").exists(), "no position folder");

    let o = tail(&["md", "--resume", "r"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(o.stdout.is_empty());
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(
        err.contains("cannot keep a reader position")
            && err.contains("md.readers")
            && err.contains("do not ask it to resume"),
        "says why and what to do: {err}"
    );
    assert!(!readers_dir(&dir, "md").exists());
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert!(std::fs::read(root.page("md", 1)).unwrap() == page);
}

/// `tape write md` of 1..=20 with a service that is stopped after.
fn write_journal_no_service(root: &Root) {
    let _service = Service::start(root);
    write_journal(root, "md", &lines(1..=20));
}
