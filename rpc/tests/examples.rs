//! The rpc example, run as a newcomer runs it: OK replies from a responder
//! and NO at once for a name nobody answers.

use tape_testkit::{example, stdout_of};

#[test]
fn the_echo_example_gets_its_replies_and_a_no() {
    let root = tape_testkit::Root::new();
    let _service = tape_service::Service::start(root.path()).unwrap();
    let text = stdout_of(example("echo", root.path()).arg("4"));
    let want: Vec<String> = (1..=4)
        .map(|i| format!("reply hello {i}"))
        .chain(["nobody-example: NO (not online)".to_string()])
        .collect();
    assert_eq!(text.lines().collect::<Vec<_>>(), want);
}
