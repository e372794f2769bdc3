//! Retention through the command line: `tape prune` deletes whole old
//! pages by rule and never one a reader process still reads; `tape ls`
//! shows the space used shrink; the journal reads, verifies and takes new
//! frames afterwards. `tape service --retain` does the same on its own.

use crate::child;
use crate::common::*;
use std::process::Stdio;

/// About five and a half pages of 1 MiB (frames of 56 bytes).
const N: u64 = 100_000;

fn ls_md(root: &Root) -> serde_json::Value {
    ls_entry(root, "md").expect("md in tape ls")
}

fn prune(root: &Root, args: &[&str]) -> String {
    let mut a = vec!["md"];
    a.extend_from_slice(args);
    String::from_utf8(ok(&mut root.tape("prune", &a), b"")).unwrap()
}

/// A reader that has read 10 frames (and so holds page 1) and waits.
fn holder(root: &Root) -> (Kid, Lines) {
    let mut kid = child::spawn_with("hold-reader", root.path(), "10", Stdio::piped());
    let out = Lines::of(kid.child.stdout.take().unwrap());
    let d = Deadline::new();
    loop {
        let l = out.next(&d, "the reader to hold page 1").expect("output");
        if let Some(m) = l.strip_prefix("ROLE ") {
            assert_eq!(m, "holding 10");
            return (kid, out);
        }
    }
}

/// Tells the holder to read on; waits for it to have read every frame.
fn release(kid: &mut Kid, out: &Lines, last: u64) {
    use std::io::Write;
    kid.child
        .stdin
        .as_mut()
        .unwrap()
        .write_all(b"go\n")
        .unwrap();
    let d = Deadline::new();
    loop {
        let l = out.next(&d, "the reader to read on").expect("output");
        if let Some(m) = l.strip_prefix("ROLE ") {
            assert_eq!(m, format!("done {last}"), "the reader saw every frame");
            return;
        }
    }
}

#[test]
fn tape_prune_deletes_old_pages_but_not_a_readers() {
    let root = Root::new();
    let _service = Service::start(&root);
    write_journal(&root, "md", &lines(1..=N));
    let before = ls_md(&root);
    let pages = before["pages"].as_u64().unwrap();
    assert!(pages >= 6, "{before}");
    let disk = before["disk_bytes"].as_u64().unwrap();
    assert!(
        disk >= pages * (1 << 20),
        "ls shows the space used: {before}"
    );

    // A reader on page 1: nothing may go.
    let (mut kid, out) = holder(&root);
    let said = prune(&root, &["--keep-last", "2"]);
    assert!(said.contains("nothing to delete"), "{said}");
    assert!(
        said.contains("kept page 1") && said.contains(&format!("pid {}", kid.pid())),
        "names the reader: {said}"
    );
    assert_eq!(ls_md(&root)["pages"], pages);

    // Released, it reads on to the end and holds only the last page.
    release(&mut kid, &out, N);
    let said = prune(&root, &["--keep-last", "2", "--dry-run"]);
    assert!(said.contains("would delete pages 1..="), "{said}");
    assert_eq!(ls_md(&root)["pages"], pages, "a dry run deleted");
    let said = prune(&root, &["--keep-last", "2"]);
    assert!(said.contains("deleted pages 1..="), "{said}");
    let after = ls_md(&root);
    let left = after["pages"].as_u64().unwrap();
    assert!((2..=3).contains(&left), "{after}");
    assert!(after["disk_bytes"].as_u64().unwrap() < disk / 2, "{after}");
    let first = after["first_seq"].as_u64().unwrap();
    assert!(
        first > 1 && after["first_page"].as_u64().unwrap() > 1,
        "{after}"
    );
    assert_eq!(
        (after["last_seq"].as_u64(), after["frames"].as_u64()),
        (Some(N), Some(N - first + 1))
    );

    // The pruned journal reads from its new first frame and verifies; a
    // writer continues its sequence.
    assert!(ok(&mut root.tape("tail", &["md"]), b"") == lines(first..=N));
    ok(&mut root.tape("verify", &["md"]), b"");
    write_journal(&root, "md", &lines(N + 1..=N + 10));
    assert!(ok(&mut root.tape("tail", &["md", "--from", "seq:1"]), b"") == lines(first..=N + 10));

    // Nothing is old enough; the most eager rule keeps the last frame's page.
    assert!(prune(&root, &["--older-than", "1h"]).contains("nothing to delete"));
    let said = prune(&root, &["--max-size", "1"]);
    let last = ls_md(&root);
    assert!(last["pages"].as_u64().unwrap() >= 1, "{said}");
    assert_eq!(last["last_seq"].as_u64(), Some(N + 10));
    ok(&mut root.tape("verify", &["md"]), b"");
    kid.kill9();

    // A bad rule is one clear line.
    let o = run(
        &mut root.tape("prune", &["md", "--older-than", "soon"]),
        b"",
    );
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("not a duration"));
}

/// `tape service --retain md:keep-last=2 --retain-every 100ms`: while a
/// reader holds page 1 the service deletes nothing and says so (naming the
/// reader); once the reader has read on, the old pages go on their own, and
/// the reader saw every frame.
#[test]
fn service_applies_a_retention_rule() {
    let root = Root::new();
    let mut service = Kid::spawn(
        "tape service --retain",
        root.tape(
            "service",
            &["--retain", "md:keep-last=2", "--retain-every", "100ms"],
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped()),
    );
    let log = Lines::of(service.child.stderr.take().unwrap());
    let d = Deadline::new();
    let l = log
        .next(&d, "the service to start")
        .expect("service output");
    assert!(l.contains("listening"), "{l}");
    let l = log
        .next(&d, "the service to start")
        .expect("service output");
    assert!(l.contains("retention md:keep-last=2"), "{l}");

    write_journal(&root, "md", &lines(1..=1000));
    let (mut kid, out) = holder(&root);
    write_journal(&root, "md", &lines(1001..=N));
    let pages = ls_md(&root)["pages"].as_u64().unwrap();
    assert!(pages >= 6);
    let held = format!("pid {}", kid.pid());
    loop {
        let l = log
            .next(&d, "retention to meet the reader")
            .expect("service output");
        assert!(
            !l.contains("deleted page"),
            "deleted a page a reader holds: {l}"
        );
        if l.contains("nothing deleted, page 1 is in use") {
            assert!(l.contains(&held), "names the reader: {l}");
            break;
        }
    }
    assert_eq!(ls_md(&root)["pages"], pages);

    release(&mut kid, &out, N);
    let l = loop {
        let l = log.next(&d, "retention to delete").expect("service output");
        if l.contains("deleted pages") {
            break l;
        }
    };
    assert!(l.contains("md: deleted pages 1..="), "{l}");
    wait_until("the old pages to go", || {
        ls_md(&root)["pages"].as_u64().is_some_and(|p| p <= 3)
    });
    let first = ls_md(&root)["first_seq"].as_u64().unwrap();
    assert!(ok(&mut root.tape("tail", &["md"]), b"") == lines(first..=N));
    ok(&mut root.tape("verify", &["md"]), b"");
    assert!(service.exited().is_none(), "the service still runs");
    kid.kill9();
}
