//! A resuming reader process, `tape tail --follow --resume NAME`, killed
//! with SIGKILL at random moments, over and over, while a `tape write`
//! process streams frames into the journal; each time a new one is
//! started at once under the same name.
//!
//! A quarter of the kills land within 30 ms of the start (often before the
//! reader has opened its position), the others up to 300 ms after its first
//! line. After each kill, from the reader's output (read to its end) and
//! its position file: the lines it printed are consecutive frames, the
//! first one the frame after the position committed when it started
//! ("each restart continues from its last commit"), and it committed its
//! last line or the one before (a frame is committed right after its line
//! is written: at most one frame falls between a consumption and its
//! commit). At the end the writer stops and a last `tape tail --resume
//! NAME` (no follow) prints the rest. Over the campaign every frame
//! 1..=N is printed, with the payload its seq gives it, exactly once, or
//! exactly twice when it was a killed reader's last line and not committed
//! (the next reader starts at it); nothing is printed three times, nothing
//! after N.

use super::Rng;
use crate::common::*;
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tape_journal::position::{position_path, PositionView};

const NAME: &str = "kill-me";

/// `(seq, payload)` of each JSON line printed.
fn frames(lines: &[String]) -> Vec<(u64, String)> {
    lines
        .iter()
        .map(|l| {
            let v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line {l:?}: {e}"));
            (
                v["seq"].as_u64().expect("seq"),
                v["payload"].as_str().expect("payload").to_string(),
            )
        })
        .collect()
}

/// Checks one reader's output: consecutive frames from `from`, each with
/// its own payload. Returns the last seq printed, if any.
fn check_run(run: &str, got: &[(u64, String)], from: u64) -> Option<u64> {
    for (i, (seq, payload)) in got.iter().enumerate() {
        assert_eq!(
            *seq,
            from + i as u64,
            "{run}: line {} is frame {seq}, expected {} (started after commit {})",
            i + 1,
            from + i as u64,
            from - 1
        );
        assert_eq!(*payload, seq.to_string(), "{run}: frame {seq}'s payload");
    }
    got.last().map(|(s, _)| *s)
}

fn committed(root: &Root) -> Option<PositionView> {
    PositionView::open(&position_path(&root.journal_dir(), "md", NAME)).ok()
}

fn campaign(runs: u64) {
    let root = Root::new();
    let _service = Service::start(&root);
    let mut rng = Rng::new("reader-kill");

    // The writer streams all along, about 4000 frames a second.
    let stop = Arc::new(AtomicBool::new(false));
    let mut w = LiveWriter::start(&root, "md");
    let feeder = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Acquire) {
                w.send(&lines(n + 1..=n + 20));
                n += 20;
                std::thread::sleep(Duration::from_millis(5));
            }
            w.finish();
            n
        })
    };

    let mut count = Vec::<u8>::new(); // times each seq was printed
    let mut between = Vec::new(); // printed, then killed before its commit
    let mut last_commit = 0u64;
    let mut early = 0;
    let mut record = |got: &[(u64, String)]| {
        for (s, _) in got {
            let s = *s as usize;
            if count.len() <= s {
                count.resize(s + 1, 0);
            }
            count[s] += 1;
        }
    };
    for run in 0..runs {
        let mut tail = Kid::spawn(
            "tape tail --follow --resume",
            root.tape(
                "tail",
                &[
                    "md", "--follow", "--resume", NAME, "--from", "start", "--format", "json",
                ],
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit()),
        );
        let out = Lines::of(tail.child.stdout.take().unwrap());
        let mut printed = Vec::new();
        if rng.below(4) == 0 {
            early += 1;
            std::thread::sleep(Duration::from_micros(rng.below(30_000)));
        } else {
            let first = out.next(&Deadline::new(), "the restarted reader's first frame");
            printed.extend(first);
            std::thread::sleep(Duration::from_micros(rng.below(300_000)));
        }
        let st = tail.kill9();
        assert_eq!(
            st.signal(),
            Some(libc::SIGKILL),
            "run {run}: the reader ended by itself: {st}"
        );
        let d = Deadline::new();
        while let Some(l) = out.next(&d, "the killed reader's output to end") {
            printed.push(l);
        }
        let got = frames(&printed);
        let run_name = format!("run {run}");
        let last = check_run(&run_name, &got, last_commit + 1);
        let view = committed(&root);
        let now = view.as_ref().map_or(0, |v| v.committed_seq);
        if let Some(v) = &view {
            assert!(v.resumes(), "{run_name}: the position is a resuming one");
            assert_eq!(
                v.holder, None,
                "{run_name}: the killed reader holds nothing"
            );
        }
        match last {
            Some(last) => {
                assert!(
                    now == last || now + 1 == last,
                    "{run_name}: printed up to {last}, committed {now}"
                );
                if now + 1 == last {
                    between.push(last);
                }
            }
            None => assert_eq!(
                now, last_commit,
                "{run_name}: committed with nothing printed"
            ),
        }
        record(&got);
        last_commit = now;
    }

    stop.store(true, Ordering::Release);
    let n = feeder.join().expect("the feeder");
    // The last reader, no follow: the rest, to the end.
    let out = ok(
        &mut root.tape("tail", &["md", "--resume", NAME, "--format", "json"]),
        b"",
    );
    let rest: Vec<String> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    let got = frames(&rest);
    let last = check_run("the last reader", &got, last_commit + 1);
    assert_eq!(last.unwrap_or(last_commit), n, "the last reader ends at N");
    assert_eq!(committed(&root).unwrap().committed_seq, n);
    record(&got);

    assert_eq!(count.len() as u64, n + 1, "nothing after frame {n}");
    let mut twice = 0;
    for (s, &c) in count.iter().enumerate().skip(1) {
        let expect = 1 + between.contains(&(s as u64)) as u8;
        assert_eq!(
            c,
            expect,
            "frame {s} printed {c} times (killed between its line and its commit: {})",
            expect == 2
        );
        twice += (c == 2) as u64;
    }
    ok(&mut root.tape("verify", &["md"]), b"");
    eprintln!(
        "campaign reader-kill: runs {runs}, frames {n}, kills {runs} ({early} early), lost 0, printed twice {twice} (each a killed reader's last line, not committed)"
    );
}

#[test]
fn a_resuming_reader_killed_twenty_times_prints_every_frame_at_least_once() {
    campaign(20);
}

#[test]
#[ignore = "long form: cargo test -p tape-tools --test cli campaign -- --ignored"]
fn a_resuming_reader_killed_a_hundred_times() {
    campaign(100);
}
