//! Garbage on the service socket: the service answers with an error or
//! drops that one connection; the writer and reader registered beside it
//! see no change.

use crate::common::*;
use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;

/// Sends `bytes` on a new connection (then half-closes it if `close`) and
/// reads until the service drops it. Returns the reply frames' JSON.
fn abuse(root: &Root, what: &str, bytes: &[u8], close: bool) -> Vec<serde_json::Value> {
    let mut s = UnixStream::connect(root.socket()).expect("connect to the service");
    s.set_read_timeout(Some(WATCHDOG)).unwrap();
    // The service may drop the connection before it has read everything:
    // a failed write is one of the allowed outcomes.
    let _ = s.write_all(bytes);
    if close {
        let _ = s.shutdown(Shutdown::Write);
    }
    let mut got = Vec::new();
    match s.read_to_end(&mut got) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("{what}: the service neither answered nor dropped the connection: {e}"),
    }
    let mut replies = Vec::new();
    let mut rest = &got[..];
    while !rest.is_empty() {
        assert!(rest.len() >= 4, "{what}: a cut reply {rest:?}");
        let n = u32::from_le_bytes(rest[..4].try_into().unwrap()) as usize;
        assert!(rest.len() >= 4 + n, "{what}: a cut reply");
        let v: serde_json::Value = serde_json::from_slice(&rest[4..4 + n])
            .unwrap_or_else(|e| panic!("{what}: reply is not json: {e}"));
        replies.push(v);
        rest = &rest[4 + n..];
    }
    if let Some(last) = replies.last() {
        assert_eq!(last["type"], "error", "{what}: {last}");
    }
    replies
}

fn framed(body: &[u8]) -> Vec<u8> {
    let mut v = (body.len() as u32).to_le_bytes().to_vec();
    v.extend_from_slice(body);
    v
}

#[test]
fn malformed_messages_leave_writer_and_reader_untouched() {
    let root = Root::new();
    let mut service = Service::start(&root);
    let mut w = LiveWriter::start(&root, "md");
    w.send(&lines(1..=10));
    let mut tail = spawn_tail(&root, &["md", "--follow", "--from", "start"]);
    let out = Counter::of(tail.child.stdout.take().unwrap(), 1);
    out.wait_for(10, "tail before the abuse");
    wait_reader_registered(&root, "md", tail.pid());
    let before = ls_entry(&root, "md").unwrap();
    assert_eq!(before["writer_pid"].as_u64(), Some(w.pid() as u64));
    assert_eq!(service_writer(&root, "md"), Some(w.pid()));

    let mut hello_then_bad = framed(br#"{"type":"hello","version":1}"#);
    hello_then_bad.extend(framed(
        br#"{"type":"register_writer","dir":5,"journal":[]}"#,
    ));
    let mut truncated = 100u32.to_le_bytes().to_vec();
    truncated.extend_from_slice(b"{\"type\":\"h");
    let mut oversized = u32::MAX.to_le_bytes().to_vec();
    oversized.extend_from_slice(&[b'{'; 4096]);
    let just_over = ((64 * 1024 + 1) as u32).to_le_bytes().to_vec();
    let cases: Vec<(&str, Vec<u8>, bool)> = vec![
        ("garbage", b"GET / HTTP/1.0\r\n\r\n".to_vec(), true),
        ("binary body", framed(b"\xff\xfe\xfd\x00\x01\x02"), true),
        ("json that is not a message", framed(b"[1,2,3]"), true),
        ("malformed register after hello", hello_then_bad, true),
        ("truncated message, then eof", truncated.clone(), true),
        ("truncated message, then silence", truncated, false),
        ("oversized length prefix", oversized, true),
        ("length one past the limit", just_over, true),
        ("zero length", 0u32.to_le_bytes().to_vec(), true),
    ];
    for (what, bytes, close) in &cases {
        abuse(&root, what, bytes, *close);
        assert!(
            service.kid.exited().is_none() && tape_service::Client::connect(root.path()).is_ok(),
            "the service still answers after {what}"
        );
    }

    // Nothing changed for the registered writer and reader.
    let after = ls_entry(&root, "md").unwrap();
    assert_eq!(after["writer_pid"], before["writer_pid"], "{after}");
    assert_eq!(after["readers"], before["readers"], "{after}");
    assert_eq!(service_writer(&root, "md"), Some(w.pid()));
    assert!(service_readers(&root, "md").contains(&tail.pid()));
    w.send(&lines(11..=1000));
    out.wait_for(1000, "tail after the abuse");
    w.finish();
    assert!(tail.exited().is_none());
    tail.kill9();
}
