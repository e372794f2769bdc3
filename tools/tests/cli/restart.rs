//! The service killed with SIGKILL and restarted in the middle of a stream:
//! the writer and the readers go on, nothing lost, nothing twice, and both
//! register again.

use crate::child;
use crate::common::*;

const N: u64 = 1_000_000;

#[test]
fn service_sigkill_and_restart_mid_stream_loses_nothing() {
    let root = Root::new();
    let mut service = Service::start(&root);

    // Two readers from the start: a `Reader` in a process of its own, and
    // `tape tail --follow`.
    let mut reader = child::spawn("count-reader", root.path(), &N.to_string());
    let reader_out = Lines::of(reader.child.stdout.take().unwrap());
    let d = Deadline::new();
    loop {
        let l = reader_out
            .next(&d, "the reader child to start")
            .expect("reader child output");
        if child::role_lines(&l) == ["ready"] {
            break;
        }
    }
    let mut tail = spawn_tail(&root, &["md", "--follow", "--from", "start"]);
    let tail_out = Counter::of(tail.child.stdout.take().unwrap(), 1);
    wait_tail_online(&root, tail.pid());

    let mut w = LiveWriter::start(&root, "md");
    let input = lines(1..=N);
    let cut = |n: u64| {
        // Byte offset of the line `n + 1` (lines are 1..=N).
        input
            .iter()
            .enumerate()
            .filter(|(_, b)| **b == b'\n')
            .nth(n as usize - 1)
            .map(|(i, _)| i + 1)
            .unwrap()
    };
    let (a, b) = (cut(400_000), cut(700_000));
    w.send(&input[..a]);
    wait_until("the writer to publish 400000 frames", || {
        tape_journal::stats(&root.journal_dir(), "md").is_ok_and(|s| s.last_seq >= 400_000)
    });
    assert_eq!(service_writer(&root, "md"), Some(w.pid()));

    // Frames flow while the service dies and comes back.
    let mut stdin = w.stdin.take().unwrap();
    let middle = input[a..b].to_vec();
    let feeder = std::thread::spawn(move || {
        feed(&mut stdin, &middle);
        stdin
    });
    service.kid.kill9();
    let mut service = Service::start(&root);
    let stdin = feeder.join().expect("feeder");
    w.stdin = Some(stdin);

    // Both register again with the new service.
    wait_until("the writer to register again", || {
        service_writer(&root, "md") == Some(w.pid())
    });
    wait_until("both readers to register again", || {
        let r = service_readers(&root, "md");
        r.contains(&reader.pid()) && r.contains(&tail.pid())
    });
    let e = ls_entry(&root, "md").expect("md in tape ls");
    assert_eq!(e["writer_pid"].as_u64(), Some(w.pid() as u64), "{e}");
    assert_eq!(e["readers"].as_array().map(|r| r.len()), Some(2), "{e}");

    w.send(&input[b..]);
    w.finish();
    assert!(service.kid.exited().is_none(), "the new service still runs");

    // Every frame exactly once, in order, in both readers.
    tail_out.wait_for(N, "tape tail --follow across the restart");
    let d = Deadline::new();
    let mut done = None;
    while let Some(l) = reader_out.next(&d, "the reader child to read every frame") {
        if let Some(msg) = child::role_lines(&l).first() {
            done = Some(msg.to_string());
            break;
        }
    }
    assert_eq!(done.as_deref(), Some("done 1000000"), "reader child result");
    let s = reader.wait();
    assert!(s.success(), "reader child exited with {s}");
    assert!(tail.exited().is_none(), "tape tail --follow still runs");
    tail.kill9();

    let stats = tape_journal::stats(&root.journal_dir(), "md").unwrap();
    assert_eq!((stats.frames, stats.last_seq), (N, N));
    ok(&mut root.tape("verify", &["md"]), b"");
}
