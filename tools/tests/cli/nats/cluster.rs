//! A 3-node cluster on loopback and a stream with 3 replicas: the node
//! leading the stream is killed mid-stream; export and import go on
//! through the other two; the replica is compared frame by frame.

use crate::bridge::setup::*;
use crate::common::*;
use crate::nats::engine::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[test]
fn the_stream_leader_killed_mid_stream_loses_and_repeats_nothing() {
    let a = Side::new();
    let b = Side::new();
    let mut nodes = Engine::cluster(a.root.path());
    let urls = nodes.iter().map(Engine::url).collect::<Vec<_>>().join(",");
    let n = 60_000;
    let mut w = LiveWriter::start(&a.root, "md");
    let stop = Arc::new(AtomicBool::new(false));
    let feed = feeder(
        a.root.journal_dir(),
        b.root.journal_dir(),
        w.stdin.take().unwrap(),
        500,
        10_000,
        Arc::clone(&stop),
        n,
    );
    let export = Nats::start(&a, "export", &urls, &["md", "--replicas", "3"]);
    wait_stream(nodes[0].port, "TAPE_md", 1);
    let import = Nats::start(&b, "import", &urls, &["md"]);
    let d = Deadline::new();
    while b.last_seq("md") < n / 3 {
        d.check("the replica to reach a third");
        std::thread::sleep(Duration::from_millis(5));
    }
    let info = js_api(nodes[0].port, "$JS.API.STREAM.INFO.TAPE_md", "");
    assert_eq!(info["config"]["num_replicas"].as_u64(), Some(3), "{info}");
    let leader = info["cluster"]["leader"]
        .as_str()
        .expect("a leader")
        .to_string();
    let i = nodes
        .iter()
        .position(|e| e.name == leader)
        .expect("the leader is ours");
    nodes[i].kill9();
    eprintln!(
        "killed the stream leader {leader} at replica seq {}",
        b.last_seq("md")
    );
    let (stdin, wrote) = feed.join().expect("feeder");
    assert_eq!(wrote, n);
    w.stdin = Some(stdin);
    w.finish();
    b.wait_seq("md", n);
    assert_same_frames(&a, &b, "md", "md", n);
    ok(&mut b.root.tape("verify", &["md"]), b"");
    let other = nodes.iter().find(|e| e.kid.is_some()).unwrap();
    let info = js_api(other.port, "$JS.API.STREAM.INFO.TAPE_md", "");
    assert_ne!(
        info["cluster"]["leader"].as_str(),
        Some(leader.as_str()),
        "a new leader"
    );
    assert_eq!(info["state"]["last_seq"].as_u64(), Some(n));
    assert_eq!(info["state"]["messages"].as_u64(), Some(n));
    stop.store(true, Ordering::Relaxed);
    drop((export, import));
}
