//! `seq 1 200000 | tape write md` on root A while `tape nats export md`
//! runs; `tape nats import md` on root B: the two roots' `tape tail
//! --format json` are equal, every field of every frame, `tape verify`
//! passes on both, and `tape nats status` shows the stream and both
//! connectors.

use crate::bridge::setup::*;
use crate::common::*;
use crate::nats::engine::*;

#[test]
fn two_hundred_thousand_frames_written_during_export_arrive_byte_identical() {
    let a = Side::new();
    let b = Side::new();
    let engine = Engine::start(a.root.path(), None);
    let url = engine.url();
    let mut w = LiveWriter::start(&a.root, "md");
    w.send(&lines(1..=1000));
    let export = Nats::start(&a, "export", &url, &["md"]);
    export.log.wait_for("the stream to be created", |l| {
        l.contains("created stream TAPE_md")
    });
    let import = Nats::start(&b, "import", &url, &["md"]);
    for chunk in (1001..=200_000u64).step_by(20_000) {
        w.send(&lines(chunk..=(chunk + 19_999).min(200_000)));
    }
    w.finish();
    b.wait_seq("md", 200_000);

    let st = status(&url);
    let s = &st["streams"][0];
    assert_eq!(s["journal"], "md");
    assert_eq!(s["name"], "TAPE_md");
    assert_eq!(
        (s["first_seq"].as_u64(), s["last_seq"].as_u64()),
        (Some(1), Some(200_000))
    );
    assert_eq!(s["messages"].as_u64(), Some(200_000));
    assert!(s["consumers"].as_u64().unwrap() >= 1, "{st}");
    let kinds: Vec<(String, u64)> = st["connectors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["kind"].as_str().unwrap().to_string(),
                c["lag"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        vec![("export".into(), 0), ("import".into(), 0)],
        "{st}"
    );

    let ta = ok(&mut a.root.tape("tail", &["md", "--format", "json"]), b"");
    let tb = ok(&mut b.root.tape("tail", &["md", "--format", "json"]), b"");
    assert_eq!(json_lines(&ta).len(), 200_000);
    assert!(
        ta == tb,
        "tape tail --format json differs between the roots"
    );
    assert_same_frames(&a, &b, "md", "md", 200_000);
    ok(&mut a.root.tape("verify", &["md"]), b"");
    ok(&mut b.root.tape("verify", &["md"]), b"");
    assert!(export.log.all().iter().all(|l| !l.contains("panicked")));
    drop((export, import));
}

#[test]
fn a_journal_pruned_before_its_first_export_starts_the_stream_at_its_first_frame() {
    let a = Side::new();
    let b = Side::new();
    let engine = Engine::start(a.root.path(), None);
    let url = engine.url();
    // 1 MiB pages: 20,000 frames of 100 bytes fill several; keep only the
    // newest two.
    write_journal(&a.root, "md", &wide_lines(1..=20_000, 100));
    ok(&mut a.root.tape("prune", &["md", "--keep-last", "2"]), b"");
    let first = a.cursor("md").unwrap().next().unwrap().unwrap().seq();
    assert!(first > 1, "the prune removed the first pages");
    let _export = Nats::start(&a, "export", &url, &["md"]);
    wait_stream(engine.port, "TAPE_md", first);
    let _import = Nats::start(&b, "import", &url, &["md"]);
    let d = Deadline::new();
    while b.last_seq("md") < 20_000 {
        d.check("the replica to reach seq 20000");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let info = js_api(engine.port, "$JS.API.STREAM.INFO.TAPE_md", "");
    assert_eq!(info["state"]["first_seq"].as_u64(), Some(first), "{info}");
    assert_eq!(info["state"]["last_seq"].as_u64(), Some(20_000));
    let mut ca = a.cursor("md").unwrap();
    let mut cb = b.cursor("md").unwrap();
    let mut n = 0;
    while let Some(fa) = ca.next().unwrap() {
        let raw = fa.raw().to_vec();
        let fb = cb.next().unwrap().expect("the replica has every frame");
        assert_eq!(raw, fb.raw(), "frame {}", fb.seq());
        n += 1;
    }
    assert!(cb.next().unwrap().is_none());
    assert_eq!(n, 20_000 - first + 1);
    ok(&mut b.root.tape("verify", &["md"]), b"");
}
