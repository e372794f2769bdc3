//! The rpc example, run as a newcomer runs it: OK replies from a responder
//! and NO at once for a name nobody answers.

use std::process::Command;

#[test]
fn the_echo_example_gets_its_replies_and_a_no() {
    let root = tape_testkit::Root::new();
    let _service = tape_service::Service::start(root.path()).unwrap();
    let mut cmd = Command::new(tape_testkit::example_bin("echo"));
    cmd.arg("4").env("TAPE_ROOT", root.path());
    tape_testkit::harden(&mut cmd);
    let out = cmd.output().expect("run the echo example");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let want: Vec<String> = (1..=4)
        .map(|i| format!("reply hello {i}"))
        .chain(["nobody-example: NO (not online)".to_string()])
        .collect();
    assert_eq!(text.lines().collect::<Vec<_>>(), want);
}
