//! `tape replay`: recorded journals written again, merged in time order,
//! at their own pace (or a multiple of it), every frame kept byte for
//! byte, time bounds exact, bad input refused with nothing written.
//!
//! The pace is measured the way a strategy under test sees it: a reader in
//! this process reads the replay journals while the real `tape replay`
//! writes them, and stamps each frame as it arrives. Assertions
//! are on the median over the frames (the box is a shared 2-vCPU VM: one
//! frame may be late by a preemption, the median is not).

use crate::common::*;
use std::path::Path;
use std::time::{Duration, Instant};
use tape_journal::{AppendOptions, Appender, FrameMeta};
use tape_reader::{Reader, ServiceMode, Start};

/// A recorded frame: journal, write time, header fields, payload.
#[derive(Debug, Clone)]
struct Rec {
    journal: &'static str,
    time_ns: i64,
    meta: FrameMeta,
    payload: Vec<u8>,
}

/// Write times an hour ago, so that nothing recorded is in the future.
fn base_ns() -> i64 {
    tape_journal::clock::now_ns() - 3_600_000_000_000
}

/// Writes `recs` into their journals in `dir` with exactly their write
/// times (an appender in this process; each journal's seq from 1).
fn record(dir: &Path, recs: &[Rec]) {
    let opts = AppendOptions {
        page_size: 1 << 20,
        ..AppendOptions::default()
    };
    let mut apps: Vec<(&str, Appender)> = Vec::new();
    for r in recs {
        let i = match apps.iter().position(|(j, _)| *j == r.journal) {
            Some(i) => i,
            None => {
                let a = Appender::create(dir, r.journal, opts).expect("create a recorded journal");
                apps.push((r.journal, a));
                apps.len() - 1
            }
        };
        let a = &mut apps[i].1;
        let seq = a.next_seq();
        a.write_replica(seq, r.time_ns, &r.meta, &r.payload)
            .expect("record a frame");
    }
}

fn rec(journal: &'static str, time_ns: i64, payload: String) -> Rec {
    Rec {
        journal,
        time_ns,
        meta: FrameMeta::default(),
        payload: payload.into_bytes(),
    }
}

/// One journal, `n` frames, the gaps between them cycling through
/// 10 ms, 50 ms, 0.
fn gapped(journal: &'static str, n: usize) -> Vec<Rec> {
    let gaps = [10_000_000i64, 50_000_000, 0];
    let mut t = base_ns();
    (0..n)
        .map(|i| {
            if i > 0 {
                t += gaps[(i - 1) % 3];
            }
            rec(journal, t, format!("{journal}{i}"))
        })
        .collect()
}

/// Held while a paced replay is measured.
static PACED: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A frame as a reader of the replay journals saw it.
#[derive(Debug)]
struct Seen {
    arrived: Instant,
    journal: String,
    time_ns: i64,
    payload: Vec<u8>,
}

/// Runs `tape replay <journals> --speed <speed>` while a reader in this
/// process reads the replay journals (`replay.<journal>`), asleep on their
/// doorbells between frames (no CPU taken from the replay); returns what
/// it saw, in the order it saw it, once every frame of `recs` came and the
/// replay exited 0.
fn replay_and_watch(root: &Root, journals: &[&str], speed: &str, recs: &[Rec]) -> Vec<Seen> {
    // One paced replay at a time: three at once on a 2-vCPU box measure
    // each other.
    let _one = PACED.lock().unwrap_or_else(|e| e.into_inner());
    let dir = root.journal_dir();
    // The replay journals made empty beforehand (a replay writes into an
    // empty one), so that this reader is reading them, not still looking
    // for them, when the first frame comes: its offsets count from it.
    let opts = AppendOptions {
        page_size: 1 << 20,
        ..AppendOptions::default()
    };
    for j in journals {
        drop(
            Appender::create(&dir, &format!("replay.{j}"), opts).expect("an empty replay journal"),
        );
    }
    let mut r = Reader::builder("replay-watch")
        .root(root.path())
        .service(ServiceMode::Never)
        .start(Start::First)
        .create()
        .expect("a reader");
    for j in journals {
        r.add_journal(&dir, &format!("replay.{j}"))
            .expect("watch a replay journal");
    }
    let mut cmd_args: Vec<&str> = journals.to_vec();
    cmd_args.extend(["--speed", speed]);
    let mut kid = Kid::spawn(
        "tape replay",
        root.tape("replay", &cmd_args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit()),
    );
    let deadline = Deadline::new();
    let mut seen: Vec<Seen> = Vec::with_capacity(recs.len());
    while seen.len() < recs.len() {
        match r.next().expect("read the replay journals") {
            Some(f) => seen.push(Seen {
                arrived: Instant::now(),
                journal: f.journal_name.to_string(),
                time_ns: f.time_ns(),
                payload: f.payload().to_vec(),
            }),
            None => {
                deadline.check("the replayed frames");
                r.wait(Duration::from_millis(100));
            }
        }
    }
    let status = kid.wait_until(&deadline);
    assert!(status.success(), "tape replay exited {status}");
    seen
}

fn median(mut v: Vec<f64>) -> f64 {
    assert!(!v.is_empty());
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// For each frame after the first: how far its offset from the first
/// frame, as this reader saw them arrive, is from its recorded offset from
/// the first divided by `speed`, in ns.
///
/// The first frame's arrival is one sample: a reader preempted or slow to
/// wake at that moment would shift every other offset by as much. So the
/// moment the first frame counts from is the median over all frames of
/// (arrival - recorded offset / speed), which is the first frame's arrival
/// when it was seen as promptly as the others (the plain first-frame
/// figure is printed beside it).
fn pace_errors(seen: &[Seen], speed: f64) -> Vec<f64> {
    let (a0, t0) = (seen[0].arrived, seen[0].time_ns);
    let lag: Vec<f64> = seen
        .iter()
        .map(|s| {
            let got = s.arrived.duration_since(a0).as_nanos() as f64;
            got - (s.time_ns - t0) as f64 / speed
        })
        .collect();
    let plain = median(lag[1..].iter().map(|l| l.abs()).collect());
    let first = median(lag.clone());
    eprintln!(
        "first frame seen {:.1} µs later than the others' median; from its own arrival the median error is {:.1} µs",
        -first / 1e3,
        plain / 1e3
    );
    lag[1..].iter().map(|l| (l - first).abs()).collect()
}

fn check_pace(speed: &str, frames: usize, limit_ns: f64) {
    let root = Root::new();
    let _service = Service::start(&root);
    let recs = gapped("md", frames);
    record(&root.journal_dir(), &recs);
    let seen = replay_and_watch(&root, &["md"], speed, &recs);
    let want: Vec<&[u8]> = recs.iter().map(|r| &r.payload[..]).collect();
    let got: Vec<&[u8]> = seen.iter().map(|s| &s.payload[..]).collect();
    assert_eq!(got, want, "every frame once, in order");
    let errs = pace_errors(&seen, speed.parse().expect("a number"));
    let med = median(errs.clone());
    let worst = errs.iter().cloned().fold(0.0, f64::max);
    eprintln!(
        "--speed {speed}: {} frames, offset error median {:.1} µs, worst {:.1} µs",
        frames,
        med / 1e3,
        worst / 1e3
    );
    assert!(
        med <= limit_ns,
        "--speed {speed}: the median offset error is {:.1} µs, above {:.1} µs",
        med / 1e3,
        limit_ns / 1e3
    );
}

#[test]
fn speed_1_keeps_each_frames_offset_within_a_millisecond() {
    // 10 ms, 50 ms, 0 gaps: 46 frames, 0.9 s.
    check_pace("1", 46, 1e6);
}

#[test]
fn speed_10_keeps_each_offset_within_a_fifth_of_a_millisecond_of_a_tenth() {
    // Recorded gaps of 10 ms, 50 ms, 0: replayed as 1 ms, 5 ms, 0; 0.25 s.
    check_pace("10", 139, 0.2e6);
}

#[test]
fn three_journals_are_replayed_merged_in_time_order_at_their_pace() {
    let root = Root::new();
    let _service = Service::start(&root);
    // Frames of a, b, c interleaved 10 ms apart (1 ms at --speed 10), in a
    // shuffled order of journals, and two at the very same time in two.
    let names = ["a", "b", "c"];
    let base = base_ns();
    let mut recs = Vec::new();
    for k in 0..60usize {
        let j = names[(k * 7 + k / 5) % 3];
        recs.push(rec(j, base + k as i64 * 10_000_000, format!("{j}-{k}")));
    }
    recs.push(rec("a", base + 600_000_000, "a-tie".into()));
    recs.push(rec("c", base + 600_000_000, "c-tie".into()));
    record(&root.journal_dir(), &recs);

    let seen = replay_and_watch(&root, &names, "10", &recs);
    let mut want: Vec<(i64, String)> = recs
        .iter()
        .map(|r| (r.time_ns, String::from_utf8(r.payload.clone()).unwrap()))
        .collect();
    want.sort();
    let mut got: Vec<(i64, String)> = seen
        .iter()
        .map(|s| (s.time_ns, String::from_utf8(s.payload.clone()).unwrap()))
        .collect();
    got.sort();
    assert_eq!(got, want, "every frame once, with its write time");
    for s in &seen {
        let j = s.journal.strip_prefix("replay.").expect("a replay journal");
        assert!(String::from_utf8_lossy(&s.payload).starts_with(j));
    }
    // Written in time order: a reader of all three sees them in time order.
    // (A reader stalled while two frames land in two journals may see the
    // later one first, at the same moment: a frame written out of order
    // would come a whole gap, 1 ms, after a later one.)
    for (i, w) in seen.windows(2).enumerate() {
        let apart = w[1].arrived.duration_since(w[0].arrived);
        assert!(
            w[0].time_ns <= w[1].time_ns || apart < Duration::from_micros(300),
            "frame {} ({}, {:?}) came {apart:?} after {} ({}, {:?}), written later",
            i + 1,
            w[1].journal,
            String::from_utf8_lossy(&w[1].payload),
            i,
            w[0].journal,
            String::from_utf8_lossy(&w[0].payload),
        );
    }
    // And at the pace of the merge: offsets from the first frame of all.
    let med = median(pace_errors(&seen, 10.0));
    eprintln!(
        "three journals at --speed 10: median offset error {:.1} µs",
        med / 1e3
    );
    assert!(med <= 0.2e6, "median offset error {:.1} µs", med / 1e3);
}

#[test]
fn every_field_is_kept_and_the_original_write_time_is_the_frames_time() {
    let root = Root::new();
    let _service = Service::start(&root);
    let base = base_ns();
    let recs: Vec<Rec> = (0..50u32)
        .map(|i| Rec {
            journal: "md",
            time_ns: base + i as i64 * 1_234_567,
            meta: FrameMeta {
                msg_type: 100 + i,
                source: 7 * i,
                dest: i % 3,
                corr: if i % 2 == 0 { 0 } else { 1000 + i as u64 },
            },
            payload: if i % 5 == 0 {
                vec![0xff, i as u8, 0, 0xfe]
            } else {
                format!("tick {i}").into_bytes()
            },
        })
        .collect();
    record(&root.journal_dir(), &recs);
    let out = ok(&mut root.tape("replay", &["md", "--speed", "max"]), b"");
    let out = String::from_utf8(out).unwrap();
    assert!(
        out.starts_with("replayed 50 frames") && out.contains("md -> replay.md 50"),
        "{out}"
    );
    let orig = tail_json(&root, &["md"]);
    let replayed = tail_json(&root, &["replay.md"]);
    assert_eq!(orig.len(), 50);
    assert_eq!(replayed.len(), 50);
    for (o, r) in orig.iter().zip(&replayed) {
        let mut o = o.clone();
        o["journal"] = "replay.md".into();
        assert_eq!(r, &o, "a replayed frame differs from its original");
    }
    // Through the reader API: the frame's time_ns is the original write
    // time, the header the original's byte for byte.
    let mut r = Reader::builder("check")
        .root(root.path())
        .service(ServiceMode::Never)
        .start(Start::First)
        .create()
        .unwrap();
    r.add_journal(root.journal_dir(), "replay.md").unwrap();
    let mut n = 0;
    while let Some(f) = r.next().unwrap() {
        let want = &recs[n];
        assert_eq!(f.time_ns(), want.time_ns);
        assert_eq!(
            (f.msg_type(), f.source(), f.dest(), f.corr()),
            (
                want.meta.msg_type,
                want.meta.source,
                want.meta.dest,
                want.meta.corr
            )
        );
        assert_eq!(f.payload(), &want.payload[..]);
        assert_eq!(f.seq(), n as u64 + 1);
        n += 1;
    }
    assert_eq!(n, 50);
    ok(&mut root.tape("verify", &["replay.md"]), b"");
}

#[test]
fn from_is_inclusive_and_to_exclusive_to_the_nanosecond() {
    let root = Root::new();
    let _service = Service::start(&root);
    // Seq 1..=40; each pair (1,2), (3,4), ... shares a write time, 1 µs
    // plus 1 ns after the pair before.
    let base = base_ns();
    let time = |seq: i64| base + ((seq - 1) / 2) * 1_001;
    let recs: Vec<Rec> = (1..=40)
        .map(|s| rec("md", time(s), s.to_string()))
        .collect();
    record(&root.journal_dir(), &recs);
    let rfc = |ns: i64| format!("time:{}", tape_tools::timefmt::format_rfc3339(ns));
    let cases: [(Option<i64>, Option<i64>, std::ops::RangeInclusive<u64>); 5] = [
        // Both frames at --from are in, both at --to are out.
        (Some(time(11)), Some(time(25)), 11..=24),
        // One ns after a pair's time: that pair is out.
        (Some(time(11) + 1), Some(time(25) + 1), 13..=26),
        (Some(time(31)), None, 31..=40),
        (None, Some(time(3)), 1..=2),
        (None, None, 1..=40),
    ];
    for (i, (from, to, want)) in cases.into_iter().enumerate() {
        let prefix = format!("r{i}.");
        let mut args = vec!["md".to_string(), "--speed".into(), "max".into()];
        args.extend(["--into".to_string(), prefix.clone()]);
        if let Some(f) = from {
            args.extend(["--from".to_string(), rfc(f)]);
        }
        if let Some(t) = to {
            args.extend(["--to".to_string(), rfc(t)]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        ok(&mut root.tape("replay", &args), b"");
        let got = tail_json(&root, &[&format!("{prefix}md")]);
        assert_eq!(seqs(&got), want.clone().collect::<Vec<_>>(), "{args:?}");
        for f in &got {
            let s = f["seq"].as_i64().unwrap();
            assert_eq!(f["time_ns"].as_i64(), Some(time(s)));
        }
    }
    // time:NANOS works too.
    let (f, t) = (time(5).to_string(), time(7).to_string());
    let from = format!("time:{f}");
    let to = format!("time:{t}");
    ok(
        &mut root.tape(
            "replay",
            &[
                "md", "--speed", "max", "--into", "ns.", "--from", &from, "--to", &to,
            ],
        ),
        b"",
    );
    assert_eq!(seqs(&tail_json(&root, &["ns.md"])), [5, 6]);
}

/// `tape replay` with `args` fails; returns its standard error.
fn refused(root: &Root, args: &[&str]) -> String {
    let o = run(&mut root.tape("replay", args), b"");
    assert!(!o.status.success(), "tape replay {args:?} succeeded");
    String::from_utf8(o.stderr).unwrap()
}

fn replay_files(root: &Root) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(root.journal_dir())
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("replay.") || n.starts_with("r."))
        .collect();
    v.sort();
    v
}

#[test]
fn bad_input_is_refused_with_a_clear_error_and_nothing_written() {
    let root = Root::new();
    // No service yet: refused, nothing made.
    let recs = gapped("md", 5);
    record(&root.journal_dir(), &recs);
    let e = refused(&root, &["md", "--speed", "max"]);
    assert!(e.contains("replay.md") && e.contains("service"), "{e}");
    assert_eq!(replay_files(&root), Vec::<String>::new());

    let _service = Service::start(&root);
    let e = refused(&root, &["md", "nope"]);
    assert!(e.contains("journal nope not found"), "{e}");
    let e = refused(
        &root,
        &[
            "md",
            "--from",
            "time:2026-11-21T10:00:00Z",
            "--to",
            "time:2026-11-21T09:00:00Z",
        ],
    );
    assert!(e.contains("is not before --to"), "{e}");
    for bad in ["0", "-2", "fast", "nan"] {
        let e = refused(&root, &["md", &format!("--speed={bad}")]);
        assert!(e.contains("is not a speed"), "{bad}: {e}");
    }
    let e = refused(&root, &["md", "--from", "2026-11-21T10:00:00Z"]);
    assert!(e.contains("time:RFC3339"), "{e}");
    let e = refused(&root, &["md", "md"]);
    assert!(e.contains("named twice"), "{e}");
    let e = refused(&root, &["md", "--into", ""]);
    assert!(e.contains("also replayed"), "{e}");
    let e = refused(&root, &["md", "--into", "a/"]);
    assert!(e.contains("not a journal name"), "{e}");
    assert_eq!(replay_files(&root), Vec::<String>::new());

    // A replay journal with frames is refused and stays as it was.
    ok(&mut root.tape("replay", &["md", "--speed", "max"]), b"");
    let before = tail_json(&root, &["replay.md"]);
    assert_eq!(before.len(), 5);
    let e = refused(&root, &["md", "--speed", "max"]);
    assert!(
        e.contains("replay journal replay.md already exists with 5 frames") && e.contains("--into"),
        "{e}"
    );
    assert_eq!(tail_json(&root, &["replay.md"]), before);
    // Another prefix works.
    ok(
        &mut root.tape("replay", &["md", "--speed", "max", "--into", "r."]),
        b"",
    );
    assert_eq!(tail_json(&root, &["r.md"]).len(), 5);
}

#[test]
fn a_replay_journal_with_no_frame_is_written_into() {
    let root = Root::new();
    let _service = Service::start(&root);
    record(&root.journal_dir(), &gapped("md", 4));
    // Nothing before --to: the replay journal is made, with no frame.
    ok(
        &mut root.tape("replay", &["md", "--speed", "max", "--to", "time:0"]),
        b"",
    );
    assert!(root.page("replay.md", 1).exists());
    assert!(tail_json(&root, &["replay.md"]).is_empty());
    ok(&mut root.tape("replay", &["md", "--speed", "max"]), b"");
    assert_eq!(seqs(&tail_json(&root, &["replay.md"])), [1, 2, 3, 4]);
}
