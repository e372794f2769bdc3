//! `tape nats import --dest 17`: the replica holds exactly the source's
//! frames whose dest is 17 or 0, in order, every header field but seq kept
//! (the replica numbers them 1, 2, 3, ...), also across a kill of the
//! import between the two halves.

use crate::bridge::setup::*;
use crate::common::*;
use crate::nats::engine::*;

fn dest_of(i: u64) -> u32 {
    match i % 5 {
        0 => 0,
        1 | 3 => 17,
        2 => 5,
        _ => 170,
    }
}

fn write_frames(a: &Side, range: std::ops::RangeInclusive<u64>) {
    let mut w = tape_writer::Writer::builder("signals")
        .root(a.root.path())
        .page_size(1 << 20)
        .create()
        .expect("a writer on root A");
    for i in range {
        w.set_dest(dest_of(i));
        w.set_source(i as u32 % 7);
        w.write(i as u32 % 3, format!("signal {i}").as_bytes())
            .unwrap();
    }
}

#[test]
fn dest_17_keeps_exactly_the_frames_for_17_or_everyone_in_order() {
    let a = Side::new();
    let b = Side::new();
    let engine = Engine::start(a.root.path(), None);
    let url = engine.url();
    write_frames(&a, 1..=5000);
    let _export = Nats::start(&a, "export", &url, &["signals"]);
    wait_stream(engine.port, "TAPE_signals", 5000);
    let mut import = Nats::start(
        &b,
        "import",
        &url,
        &["signals", "--dest", "17", "--into", "acct17"],
    );
    let want = |upto: u64| (1..=upto).filter(|i| matches!(dest_of(*i), 0 | 17)).count() as u64;
    let d = Deadline::new();
    while b.last_seq("acct17") < want(5000) {
        d.check("the filtered replica to take the first 5000");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    import.kid.kill9();
    write_frames(&a, 5001..=10_000);
    let _import = Nats::start(
        &b,
        "import",
        &url,
        &["signals", "--dest", "17", "--into", "acct17"],
    );
    b.wait_seq("acct17", want(10_000));
    // Frame by frame: the replica's k-th frame is the source's k-th frame
    // addressed to 17 or 0, every field but seq equal.
    let mut src = a.cursor("signals").unwrap();
    let mut dst = b.cursor("acct17").unwrap();
    let mut k = 0u64;
    while let Some(f) = src.next().unwrap() {
        if !matches!(f.dest(), 0 | 17) {
            continue;
        }
        let (h, payload) = (*f.header(), f.payload().to_vec());
        let g = dst
            .next()
            .unwrap()
            .expect("the replica has every frame for 17 or 0");
        k += 1;
        assert_eq!(g.seq(), k, "the replica numbers its frames 1, 2, 3, ...");
        let mut gh = *g.header();
        gh.seq = h.seq;
        assert_eq!(gh, h, "frame {k} (source seq {}) differs", h.seq);
        assert_eq!(g.payload(), &payload[..]);
    }
    assert!(dst.next().unwrap().is_none(), "nothing more in the replica");
    assert_eq!(k, want(10_000));
    ok(&mut b.root.tape("verify", &["acct17"]), b"");
}
