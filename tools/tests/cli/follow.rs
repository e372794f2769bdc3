//! `tape tail --follow` before the journal exists, and late readers that
//! start at a sequence number or a time.

use crate::common::*;
use tape_tools::timefmt::format_rfc3339;

#[test]
fn follow_started_before_the_writer_sees_every_frame() {
    const N: u64 = 50_000;
    let root = Root::new();
    let _service = Service::start(&root);
    let mut tail = spawn_tail(&root, &["--follow", "md"]);
    assert!(!root.page("md", 1).exists());
    wait_tail_online(&root, tail.pid());

    let out = Counter::of(tail.child.stdout.take().unwrap(), 1);
    let mut w = LiveWriter::start(&root, "md");
    w.send(&lines(1..=N));
    out.wait_for(N, "tail --follow of a journal made after it started");
    w.finish();
    assert!(root.page("md", 2).exists(), "the stream crossed a page");
    assert!(tail.exited().is_none(), "--follow keeps running");
}

#[test]
fn late_readers_start_at_a_sequence_or_a_time() {
    let root = Root::new();
    let _service = Service::start(&root);
    let mut w = LiveWriter::start(&root, "md");
    w.send(&lines(1..=1000));
    wait_until("1000 frames", || {
        ls_entry(&root, "md").is_some_and(|e| e["last_seq"] == 1000)
    });
    let frames = tail_json(&root, &["md"]);
    assert_eq!(seqs(&frames), (1..=1000).collect::<Vec<_>>());

    // --from seq:N, no follow.
    let out = ok(&mut root.tape("tail", &["md", "--from", "seq:600"]), b"");
    assert!(out == lines(600..=1000), "--from seq:600 prints 600..1000");

    // --from time:T, T an RFC 3339 time taken from frame 700.
    let t = frames[699]["time_ns"].as_i64().unwrap();
    let first = frames
        .iter()
        .position(|f| f["time_ns"].as_i64().unwrap() >= t)
        .unwrap() as u64
        + 1;
    let from = format!("time:{}", format_rfc3339(t));
    let out = ok(&mut root.tape("tail", &["md", "--from", &from]), b"");
    assert!(
        out == lines(first..=1000),
        "--from {from} starts at seq {first}, got {:?}...",
        String::from_utf8_lossy(&out[..out.len().min(40)])
    );

    // The same two, following, while the writer goes on.
    let mut by_seq = spawn_tail(&root, &["md", "--follow", "--from", "seq:600"]);
    let mut by_time = spawn_tail(&root, &["md", "--follow", "--from", &from]);
    let seq_out = Counter::of(by_seq.child.stdout.take().unwrap(), 600);
    let time_out = Counter::of(by_time.child.stdout.take().unwrap(), first);
    seq_out.wait_for(401, "tail --follow --from seq:600");
    time_out.wait_for(1001 - first, "tail --follow --from time");
    w.send(&lines(1001..=1100));
    seq_out.wait_for(501, "tail --follow --from seq:600, new frames");
    time_out.wait_for(1101 - first, "tail --follow --from time, new frames");
    w.finish();
    by_seq.kill9();
    by_time.kill9();
}
