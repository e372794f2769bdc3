//! `--help` of every subcommand exits 0 and names its flags.

use crate::common::*;

#[test]
fn every_subcommand_explains_its_flags() {
    let cases: [(&[&str], &[&str]); 7] = [
        (&[], &["service", "write", "tail", "ls", "verify", "replay"]),
        (&["service"], &["--root"]),
        (&["write"], &["--root", "--type", "--page-size"]),
        (
            &["tail"],
            &[
                "--root",
                "--from",
                "--follow",
                "--format",
                "seq:",
                "time:",
                "corr",
                "--resume",
                "committed right after",
            ],
        ),
        (&["ls"], &["--root", "--json"]),
        (&["verify"], &["--root"]),
        (
            &["replay"],
            &[
                "--root",
                "--from",
                "--to",
                "--speed",
                "--into",
                "time:",
                "max",
                "inclusive",
                "exclusive",
                "time_ns",
            ],
        ),
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
