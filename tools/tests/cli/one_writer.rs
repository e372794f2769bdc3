//! One writer per journal: a second `tape write` is refused naming the
//! first; a killed writer frees the journal at once and the next continues
//! its sequence.

use crate::common::*;

#[test]
fn second_writer_is_refused_then_free_after_sigkill() {
    let root = Root::new();
    let _service = Service::start(&root);
    let mut first = LiveWriter::start(&root, "md");
    first.send(b"1\n2\n3\n");
    wait_until("the first writer's 3 frames", || {
        ls_entry(&root, "md").is_some_and(|e| e["last_seq"] == 3)
    });

    let second = run(&mut root.tape("write", &["md"]), b"x\n");
    assert!(!second.status.success(), "a second writer must be refused");
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(
        err.contains(&first.pid().to_string()),
        "the refusal names the holder's pid {}: {err}",
        first.pid()
    );
    assert_eq!(err.trim_end().lines().count(), 1, "one sentence: {err}");

    first.kid.kill9();
    // At once: no retry, no sleep.
    let third = run(
        &mut root.tape("write", &["md", "--page-size", "1048576"]),
        b"4\n5\n",
    );
    assert!(
        third.status.success(),
        "a writer after SIGKILL of the holder must succeed at once: {}",
        String::from_utf8_lossy(&third.stderr)
    );
    let frames = tail_json(&root, &["md"]);
    assert_eq!(seqs(&frames), [1, 2, 3, 4, 5]);
    let payloads: Vec<&str> = frames
        .iter()
        .map(|f| f["payload"].as_str().unwrap())
        .collect();
    assert_eq!(payloads, ["1", "2", "3", "4", "5"]);
    let out = ok(&mut root.tape("verify", &["md"]), b"");
    assert!(String::from_utf8_lossy(&out).contains("ok"));
}
