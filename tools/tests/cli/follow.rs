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

/// CPU time (user + system) of process `pid` so far, in clock ticks
/// (fields 14 and 15 of /proc/<pid>/stat).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/<pid>/stat");
    // The command name (field 2) is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')').expect("stat has a command name") + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

/// An idle `tape tail --follow` sleeps on the journal's doorbell: under
/// 0.1 % of a core over 10 s (10 ms of CPU; a clock tick is 10 ms, so at
/// most one tick), and it still prints the next frame when it comes.
#[test]
fn idle_follow_sleeps_and_wakes_on_the_next_frame() {
    let root = Root::new();
    let _service = Service::start(&root);
    let mut w = LiveWriter::start(&root, "md");
    w.send(&lines(1..=10));
    wait_until("10 frames", || {
        ls_entry(&root, "md").is_some_and(|e| e["last_seq"] == 10)
    });
    let mut tail = spawn_tail(&root, &["--follow", "--from", "start", "md"]);
    let out = Counter::of(tail.child.stdout.take().unwrap(), 1);
    out.wait_for(10, "tail --follow of the first 10 frames");
    // Settled: start-up, the page helper's first looks, and the one look
    // for damage after 2 s of quiet (later ones are 64 s apart, or when
    // the writer rings with nothing readable).
    std::thread::sleep(std::time::Duration::from_secs(3));
    let before = cpu_ticks(tail.pid());
    std::thread::sleep(std::time::Duration::from_secs(10));
    let used = cpu_ticks(tail.pid()) - before;
    // SAFETY: sysconf takes a constant and reads no memory of ours.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    assert!(
        used * 1000 <= hz * 10,
        "an idle tail --follow used {used} ticks ({hz}/s) in 10 s: over 0.1 % of a core"
    );
    w.send(&lines(11..=11));
    out.wait_for(11, "the frame written after 10 s of quiet");
    w.finish();
    tail.kill9();
}
