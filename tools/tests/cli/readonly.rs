//! A reader cannot write: a process that writes through a frame it read
//! dies with SIGSEGV and the journal is unchanged.

use crate::child;
use crate::common::*;
use std::io::Read;
use std::os::unix::process::ExitStatusExt;

fn scribbler_dies(role: &str) {
    let root = Root::new();
    let _service = Service::start(&root);
    let input = lines(1..=100);
    write_journal(&root, "md", &input);
    let page = std::fs::read(root.page("md", 1)).unwrap();

    let mut kid = child::spawn(role, root.path(), "");
    let mut out = kid.child.stdout.take().unwrap();
    let s = kid.wait();
    let mut text = String::new();
    out.read_to_string(&mut text).unwrap();
    let said = child::role_lines(&text);
    assert!(
        said.first().is_some_and(|l| l.starts_with("writing at")),
        "{role} got a frame: {text}"
    );
    assert!(!said.contains(&"wrote"), "{role} wrote into the journal");
    assert_eq!(s.signal(), Some(libc::SIGSEGV), "{role} exit: {s}");

    assert_eq!(
        std::fs::read(root.page("md", 1)).unwrap(),
        page,
        "page unchanged"
    );
    ok(&mut root.tape("verify", &["md"]), b"");
    assert!(ok(&mut root.tape("tail", &["md"]), b"") == input);
}

#[test]
fn a_reader_writing_through_a_frame_dies_with_sigsegv() {
    scribbler_dies("scribble-reader");
}

#[test]
fn a_cursor_writing_through_a_frame_dies_with_sigsegv() {
    scribbler_dies("scribble-cursor");
}
