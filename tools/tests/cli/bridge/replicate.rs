//! `seq 1 200000 | tape write md` on the source while `tape bridge pull`
//! runs on the replica: the replica equals the source frame for frame;
//! several journals share one connection; presence in `tape bridge status`
//! and `tape ls`.

use crate::bridge::setup::*;
use crate::common::*;
use std::process::{Command, Stdio};

#[test]
fn seq_pipe_replica_equals_source_frame_for_frame() {
    let src = Side::new();
    let dst = Side::new();
    let serve = Serve::with_token(&src, &[]);
    // Two journals over one connection; the second under another name.
    let tok = dst.token_file(TOKEN);
    let mut pull = Pull::start(
        &dst,
        &serve.addr,
        &[
            "--token-file",
            tok.to_str().unwrap(),
            "--account",
            "acct-1",
            "--journal",
            "md",
            "--journal",
            "fb",
            "--into",
            "md",
            "--into",
            "fb-copy",
        ],
    );
    pull.log
        .wait_for("the pull to connect", |l| l.contains("connected to"));

    // The pipe, literally: seq 1 200000 | tape write md.
    let mut seq = Command::new("seq");
    seq.args(["1", "200000"]).stdout(Stdio::piped());
    harden(&mut seq);
    let mut seq = Kid::spawn("seq", &mut seq);
    let mut write = src.root.tape("write", &["md", "--page-size", "1048576"]);
    write
        .stdin(Stdio::from(seq.child.stdout.take().unwrap()))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    let mut write = Kid::spawn("tape write md", &mut write);
    write_journal(&src.root, "fb", &lines(1..=1000));
    assert!(write.wait().success(), "tape write md");
    assert!(seq.wait().success(), "seq");

    dst.wait_seq("md", 200_000);
    dst.wait_seq("fb-copy", 1000);
    let a = tail_json(&src.root, &["md"]);
    let b = tail_json(&dst.root, &["md"]);
    assert_eq!(a.len(), 200_000);
    assert_eq!(a, b, "tape tail --format json of source and replica");
    assert_eq!(a[199_999]["payload"], "200000");
    assert_same_frames(&src, &dst, "md", "md", 200_000);
    assert_same_frames(&src, &dst, "fb", "fb-copy", 1000);
    ok(&mut dst.root.tape("verify", &["md"]), b"");

    // The replica's writer is the pull, registered with the local service.
    assert_eq!(service_writer(&dst.root, "md"), Some(pull.kid.pid()));
    assert_eq!(service_writer(&dst.root, "fb-copy"), Some(pull.kid.pid()));

    // Presence: one subscriber (one connection) with both journals, all
    // sent and acknowledged, no lag; and a reader in the source's tape ls.
    wait_until("the status to show everything acked", || {
        let st = status_json(&src);
        let subs = st["subscribers"].as_array().unwrap();
        subs.len() == 1
            && subs[0]["journals"][0]["seq_acked"] == 200_000
            && subs[0]["journals"][1]["seq_acked"] == 1000
    });
    let st = status_json(&src);
    let sub = &st["subscribers"][0];
    assert_eq!(sub["account"], "acct-1");
    assert!(sub["address"].as_str().unwrap().starts_with("127.0.0.1:"));
    let md = &sub["journals"][0];
    assert_eq!(
        (&md["journal"], &md["seq_sent"], &md["last_seq"], &md["lag"]),
        (&"md".into(), &200_000.into(), &200_000.into(), &0.into())
    );
    let text = String::from_utf8(ok(&mut src.root.tape("bridge", &["status"]), b"")).unwrap();
    assert!(text.contains("acct-1") && text.contains("200000"), "{text}");
    let e = ls_entry(&src.root, "md").unwrap();
    let readers = e["readers"].as_array().unwrap();
    assert!(
        readers
            .iter()
            .any(|r| r.as_str().unwrap().starts_with("bridge:acct-1@127.0.0.1:")),
        "{e}"
    );

    // Live: a frame written now arrives too.
    write_journal(&src.root, "md", b"one more\n");
    dst.wait_seq("md", 200_001);
    assert_same_frames(&src, &dst, "md", "md", 200_001);
    assert!(pull.kid.exited().is_none(), "the pull still runs");
}

/// `tape bridge status --root <src> --json`, the only server's object.
pub fn status_json(side: &Side) -> serde_json::Value {
    let out = ok(&mut side.root.tape("bridge", &["status", "--json"]), b"");
    let mut v = json_lines(&out);
    assert_eq!(v.len(), 1, "one server: {}", String::from_utf8_lossy(&out));
    v.remove(0)
}
