//! `tape bridge ... --help` exits 0 and names every flag.

use crate::common::*;

#[test]
fn bridge_help_explains_its_flags() {
    let cases: [(&[&str], &[&str]); 5] = [
        (&[], &["bridge"]),
        (&["bridge"], &["serve", "pull", "status"]),
        (
            &["bridge", "serve"],
            &[
                "--listen",
                "--root",
                "--token-file",
                "--journal",
                "--stall-timeout",
                "--busy-poll",
            ],
        ),
        (
            &["bridge", "pull"],
            &[
                "--from",
                "--journal",
                "--into",
                "--root",
                "--token-file",
                "--account",
            ],
        ),
        (&["bridge", "status"], &["--root", "--json"]),
    ];
    for (verb, flags) in cases {
        let mut args = verb.to_vec();
        args.push("--help");
        let out = String::from_utf8(ok(&mut tape(&args), b"")).unwrap();
        for f in flags {
            assert!(out.contains(f), "tape {args:?} mentions {f}:\n{out}");
        }
    }
}

#[test]
fn status_without_a_server_says_so() {
    let root = Root::new();
    let out = String::from_utf8(ok(&mut root.tape("bridge", &["status"]), b"")).unwrap();
    assert!(out.contains("no tape bridge serve runs on"), "{out}");
    let out = ok(&mut root.tape("bridge", &["status", "--json"]), b"");
    assert!(out.is_empty());
}
