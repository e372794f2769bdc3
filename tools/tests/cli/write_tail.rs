//! `tape write` then `tape tail`: every line comes back once, in order, in
//! each format, across pages and across journals.

use crate::common::*;
use std::collections::BTreeSet;
use std::process::Stdio;

const JSON_KEYS: [&str; 7] = [
    "journal", "seq", "time_ns", "type", "source", "dest", "payload",
];

#[test]
fn write_100k_lines_then_tail_prints_them_all() {
    let root = Root::new();
    let _service = Service::start(&root);
    let input = lines(1..=100_000);
    write_journal(&root, "md", &input);
    assert!(
        root.page("md", 3).exists(),
        "100000 frames in 1 MiB pages fill more than two pages"
    );

    let text = ok(&mut root.tape("tail", &["md"]), b"");
    assert!(
        text == input,
        "tape tail md does not print exactly 1..100000"
    );

    let frames = tail_json(&root, &["md"]);
    assert_eq!(frames.len(), 100_000);
    let mut last_time = i64::MIN;
    for (i, f) in frames.iter().enumerate() {
        let n = i as u64 + 1;
        let obj = f.as_object().expect("an object a line");
        let keys: BTreeSet<&str> = obj.keys().map(|k| k.as_str()).collect();
        assert_eq!(keys, JSON_KEYS.into_iter().collect(), "keys of {f}");
        assert_eq!(f["journal"], "md");
        assert_eq!(f["seq"].as_u64(), Some(n), "contiguous seq");
        assert_eq!(f["payload"].as_str(), Some(n.to_string().as_str()));
        assert_eq!(f["type"], 0);
        let t = f["time_ns"].as_i64().expect("time_ns");
        assert!(t >= last_time, "time_ns goes back at seq {n}");
        last_time = t;
    }
}

#[test]
fn json_gives_payload_hex_for_bytes_that_are_not_utf8() {
    let root = Root::new();
    let _service = Service::start(&root);
    let input = b"plain\n\xff\xfe\x00a\n\n";
    ok(
        &mut root.tape("write", &["md", "--type", "7", "--page-size", "1048576"]),
        input,
    );
    let frames = tail_json(&root, &["md"]);
    assert_eq!(frames.len(), 3, "{frames:?}");
    assert_eq!(frames[0]["payload"], "plain");
    assert_eq!(frames[0]["type"], 7);
    assert_eq!(frames[1]["payload_hex"], "fffe0061");
    assert!(frames[1].get("payload").is_none(), "{}", frames[1]);
    assert_eq!(frames[2]["payload"], "", "an empty line is an empty frame");
    assert_eq!(seqs(&frames), [1, 2, 3]);

    let hex = ok(&mut root.tape("tail", &["md", "--format", "hex"]), b"");
    assert_eq!(String::from_utf8(hex).unwrap(), "706c61696e\nfffe0061\n\n");
}

#[test]
fn three_journals_written_at_once_come_back_merged_in_time_order() {
    const N: u64 = 30_000;
    let root = Root::new();
    let _service = Service::start(&root);
    let names = ["a", "b", "c"];
    let mut writers: Vec<Kid> = names
        .iter()
        .map(|j| {
            Kid::spawn(
                &format!("tape write {j}"),
                root.tape("write", &[j, "--page-size", "1048576"])
                    .stdin(Stdio::piped())
                    .stdout(Stdio::null())
                    .stderr(Stdio::inherit()),
            )
        })
        .collect();
    // Feed the three at once, in small chunks, so that their frames
    // interleave in time.
    let feeders: Vec<_> = writers
        .iter_mut()
        .zip(names)
        .map(|(w, j)| {
            let mut stdin = w.stdin();
            std::thread::spawn(move || {
                let mut input = Vec::new();
                for i in 1..=N {
                    input.extend_from_slice(format!("{j}{i}\n").as_bytes());
                }
                for chunk in input.chunks(4096) {
                    std::io::Write::write_all(&mut stdin, chunk).expect("feed");
                }
            })
        })
        .collect();
    for f in feeders {
        f.join().expect("feeder");
    }
    for w in &mut writers {
        let s = w.wait();
        assert!(s.success(), "tape write exited with {s}");
    }

    let frames = tail_json(&root, &names);
    assert_eq!(frames.len() as u64, 3 * N);
    let mut last_time = i64::MIN;
    let mut next_seq = [1u64; 3];
    for f in &frames {
        let t = f["time_ns"].as_i64().expect("time_ns");
        assert!(t >= last_time, "merged output goes back in time at {f}");
        last_time = t;
        let j = names
            .iter()
            .position(|n| f["journal"] == *n)
            .expect("journal a, b or c");
        let seq = f["seq"].as_u64().unwrap();
        assert_eq!(seq, next_seq[j], "each journal in order, once: {f}");
        assert_eq!(f["payload"], format!("{}{seq}", names[j]));
        next_seq[j] += 1;
    }
    assert_eq!(next_seq, [N + 1; 3]);
    let text = ok(&mut root.tape("tail", &names), b"");
    let text = String::from_utf8(text).unwrap();
    let got: BTreeSet<&str> = text.lines().collect();
    assert_eq!(text.lines().count() as u64, 3 * N);
    assert_eq!(got.len() as u64, 3 * N, "every frame once");
}

/// Big frames switch pages faster than the background preparer makes
/// them, so the writer's own page creation races the preparer's.
#[test]
fn big_frames_switching_pages_fast_lose_nothing() {
    const LINES: usize = 300;
    const LEN: usize = 200 * 1024;
    let root = Root::new();
    let _service = Service::start(&root);
    let mut input = Vec::with_capacity(LINES * (LEN + 1));
    for i in 0..LINES {
        input.extend(vec![b'a' + (i % 26) as u8; LEN]);
        input.push(b'\n');
    }
    write_journal(&root, "big", &input);
    let verify = run(&mut root.tape("verify", &["big"]), b"");
    let out = ok(&mut root.tape("tail", &["big"]), b"");
    if out != input {
        let got: Vec<&[u8]> = out.split(|b| *b == b'\n').collect();
        let want: Vec<&[u8]> = input.split(|b| *b == b'\n').collect();
        let bad = got.iter().zip(&want).position(|(g, w)| g != w);
        panic!(
            "tail gives {} lines, {} written; first differing line {bad:?} ({:?}); verify: {}{}",
            got.len(),
            want.len(),
            bad.map(|i| (got[i].len(), got[i].first(), want[i].len(), want[i].first())),
            String::from_utf8_lossy(&verify.stdout),
            String::from_utf8_lossy(&verify.stderr)
        );
    }
    assert!(verify.status.success(), "verify after big frames");
}
