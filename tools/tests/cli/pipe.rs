//! `tape tail md | head -1`: a closed pipe ends tail quietly with exit 0.

use crate::common::*;
use std::io::{BufRead, BufReader};
use std::process::Stdio;

fn tail_into_closed_pipe(root: &Root, args: &[&str]) {
    let mut tail = Kid::spawn(
        "tape tail",
        root.tape("tail", args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    let mut out = BufReader::new(tail.child.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    assert!(first.contains('1'), "first line {first:?}");
    drop(out);
    let err = tail.child.stderr.take().unwrap();
    let s = tail.wait();
    let mut msg = String::new();
    std::io::Read::read_to_string(&mut { err }, &mut msg).unwrap();
    assert!(
        s.success(),
        "tape tail {args:?} into a closed pipe exits 0, not {s}: {msg}"
    );
    assert_eq!(msg, "", "nothing on stderr");
}

#[test]
fn tail_into_a_closed_pipe_exits_quietly() {
    let root = Root::new();
    let _service = Service::start(&root);
    // Far more than a pipe holds, so tail is still writing when the pipe
    // closes.
    write_journal(&root, "md", &lines(1..=100_000));
    tail_into_closed_pipe(&root, &["md"]);
    tail_into_closed_pipe(&root, &["md", "--format", "json"]);
    tail_into_closed_pipe(&root, &["md", "--follow", "--from", "start"]);
}
