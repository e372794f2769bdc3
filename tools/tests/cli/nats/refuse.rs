//! What retrying cannot mend ends with one line and a non-zero exit,
//! writing nothing; what a peer sends that is not a frame is never
//! written, and never panics anything.

use crate::bridge::setup::*;
use crate::common::*;
use crate::nats::engine::*;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Runs `tape nats ...` to its end; returns (exit code, stderr lines).
fn refused(side: &Side, args: &[&str]) -> (Option<i32>, Vec<String>) {
    let out = run(&mut side.root.tape("nats", args), b"");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code(), err.lines().map(str::to_string).collect())
}

fn no_journal_files(side: &Side) -> bool {
    std::fs::read_dir(side.root.journal_dir()).map_or(true, |d| d.count() == 0)
}

#[test]
fn a_wrong_token_is_one_line_naming_the_server_and_nothing_is_written() {
    let a = Side::new();
    let b = Side::new();
    let engine = Engine::start(a.root.path(), Some("right-token-1"));
    let url = engine.url();
    write_journal(&a.root, "md", &lines(1..=10));
    let wrong = a.token_file("wrong-token");
    let wrong = wrong.to_str().unwrap();
    for (side, verb) in [(&a, "export"), (&b, "import")] {
        let (code, err) = refused(side, &[verb, "md", "--server", &url, "--token-file", wrong]);
        assert_eq!(code, Some(1), "{verb}: {err:?}");
        assert_eq!(err.len(), 1, "{verb}: one line: {err:?}");
        assert!(err[0].contains(&url), "{verb} names the server: {}", err[0]);
        assert!(err[0].contains("refused the credentials"), "{}", err[0]);
    }
    let streams = js_api_as(
        engine.port,
        Some("right-token-1"),
        "$JS.API.STREAM.NAMES",
        "",
    );
    assert_eq!(
        streams["total"].as_u64(),
        Some(0),
        "no stream made: {streams}"
    );
    assert!(no_journal_files(&b), "no replica made");
    // The right token works.
    let right = a.token_file("right-token-1");
    let right = right.to_str().unwrap();
    let e = Nats::start(&a, "export", &url, &["md", "--token-file", right]);
    e.log.wait_for("the export to start", |l| {
        l.contains("exporting md to stream TAPE_md")
    });
    let _i = Nats::start(&b, "import", &url, &["md", "--token-file", right]);
    b.wait_seq("md", 10);
}

#[test]
fn no_such_stream_and_a_held_replica_are_one_line_each() {
    let a = Side::new();
    let b = Side::new();
    let engine = Engine::start(a.root.path(), None);
    let url = engine.url();
    let (code, err) = refused(&b, &["import", "nothere", "--server", &url]);
    assert_eq!(code, Some(1));
    assert_eq!(err.len(), 1, "{err:?}");
    assert!(
        err[0].contains("TAPE_nothere") && err[0].contains(&url),
        "{}",
        err[0]
    );
    assert!(no_journal_files(&b));

    write_journal(&a.root, "md", &lines(1..=10));
    let _e = Nats::start(&a, "export", &url, &["md"]);
    let d = Deadline::new();
    while js_api(engine.port, "$JS.API.STREAM.INFO.TAPE_md", "")["state"]["last_seq"] != 10 {
        d.check("the export");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let mut holder = LiveWriter::start(&b.root, "md");
    holder.send(b"mine\n");
    b.wait_seq("md", 1);
    let (code, err) = refused(&b, &["import", "md", "--server", &url]);
    assert_eq!(code, Some(1));
    assert_eq!(err.len(), 1, "{err:?}");
    assert!(
        err[0].contains("replica md") && err[0].contains(&holder.pid().to_string()),
        "{}",
        err[0]
    );
    assert_eq!(b.last_seq("md"), 1, "nothing written into the held journal");
    holder.finish();
}

#[test]
fn garbage_on_the_stream_is_never_written_and_the_export_refuses_to_go_on_after_it() {
    let a = Side::new();
    let b = Side::new();
    let engine = Engine::start(a.root.path(), None);
    let url = engine.url();
    write_journal(&a.root, "md", &lines(1..=100));
    let mut export = Nats::start(&a, "export", &url, &["md"]);
    let info = || js_api(engine.port, "$JS.API.STREAM.INFO.TAPE_md", "");
    let d = Deadline::new();
    while info()["state"]["last_seq"] != 100 {
        d.check("the export");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    export.kid.kill9();
    // By hand, on the journal's subject: a frame with a bad CRC at 101,
    // a cut-off frame at 102, then a peer that drops in the middle of a
    // message (the server must drop it whole).
    let mut raw = Raw::connect(engine.port, None).unwrap();
    let mut frame = vec![0u8; 48 + 8];
    frame[0..4].copy_from_slice(&56u32.to_le_bytes());
    frame[8..16].copy_from_slice(&101u64.to_le_bytes());
    frame[40..44].copy_from_slice(&0xdead_beefu32.to_le_bytes());
    raw.publish(
        "tape.journal.md",
        &[("Nats-Expected-Last-Sequence", "100")],
        &frame,
    );
    let mut cut = frame.clone();
    cut[8..16].copy_from_slice(&102u64.to_le_bytes());
    raw.publish(
        "tape.journal.md",
        &[("Nats-Expected-Last-Sequence", "101")],
        &cut[..30],
    );
    raw.send(b"PING\r\n").unwrap();
    let mut half = Raw::connect(engine.port, None).unwrap();
    half.send(b"PUB tape.journal.md 500\r\n").unwrap();
    half.send(&[7u8; 200]).unwrap();
    drop(half);
    let d = Deadline::new();
    while info()["state"]["last_seq"] != 102 {
        d.check("the garbage to be stored");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }

    let mut import = Nats::start(&b, "import", &url, &["md"]);
    b.wait_seq("md", 100);
    import.log.wait_for("the bad message to be logged", |l| {
        l.contains("message 101 of stream TAPE_md is not a valid frame")
            && l.contains("not written")
    });
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(b.last_seq("md"), 100, "nothing of the garbage written");
    assert!(import.kid.exited().is_none(), "the import stays up");
    assert!(import.log.all().iter().all(|l| !l.contains("panicked")));
    ok(&mut b.root.tape("verify", &["md"]), b"");
    let mut verify = b.root.tape("tail", &["md", "--format", "json"]);
    assert_eq!(json_lines(&ok(&mut verify, b"")).len(), 100);

    // The export, started again, finds a stream whose end is not its
    // journal's: one line, non-zero exit, nothing published.
    let (code, err) = refused(&a, &["export", "md", "--server", &url]);
    assert_eq!(code, Some(1), "{err:?}");
    let last = err.last().unwrap();
    assert!(
        last.contains("stream TAPE_md holds seq 102 but journal md ends before it"),
        "{last}"
    );
    assert_eq!(info()["state"]["last_seq"].as_u64(), Some(102));
    import.kid.kill9();
}

/// Forwards to the server; on the first connection, cuts both sides once
/// `cut_after` bytes from the server have passed (in the middle of a
/// message, most likely).
fn cutting_proxy(upstream: u16, cut_after: usize) -> (u16, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let conns = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&conns);
    std::thread::spawn(move || {
        for client in l.incoming() {
            let Ok(client) = client else { return };
            let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                continue;
            };
            let first = seen.fetch_add(1, Ordering::SeqCst) == 0;
            let (mut c2, mut s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut c2, &mut s2);
                let _ = s2.shutdown(Shutdown::Both);
            });
            let (mut c, mut s) = (client, server);
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 4096];
                let mut passed = 0usize;
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    let take = if first { n.min(cut_after - passed) } else { n };
                    if c.write_all(&buf[..take]).is_err() {
                        break;
                    }
                    passed += take;
                    if first && passed >= cut_after {
                        break;
                    }
                }
                let _ = c.shutdown(Shutdown::Both);
                let _ = s.shutdown(Shutdown::Both);
            });
        }
    });
    (port, conns)
}

#[test]
fn a_connection_cut_in_the_middle_of_a_message_writes_no_partial_frame() {
    let a = Side::new();
    let b = Side::new();
    let engine = Engine::start(a.root.path(), None);
    write_journal(&a.root, "md", &wide_lines(1..=20_000, 100));
    let _export = Nats::start(&a, "export", &engine.url(), &["md"]);
    wait_stream(engine.port, "TAPE_md", 20_000);
    let (port, conns) = cutting_proxy(engine.port, 300_001);
    let import = Nats::start(&b, "import", &format!("nats://127.0.0.1:{port}"), &["md"]);
    b.wait_seq("md", 20_000);
    assert!(
        conns.load(Ordering::SeqCst) >= 2,
        "the import connected again"
    );
    assert!(import
        .log
        .all()
        .iter()
        .any(|l| l.contains("lost the connection")));
    assert_same_frames(&a, &b, "md", "md", 20_000);
    ok(&mut b.root.tape("verify", &["md"]), b"");
}
