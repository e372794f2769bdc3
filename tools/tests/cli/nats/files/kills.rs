//! A sender, a receiver or the server SIGKILLed half way: never a wrong
//! file, never a half one visible; what a killed send leaves is swept.

use super::*;
use crate::common::*;
use crate::nats::engine::*;
use std::process::Stdio;
use std::time::Duration;

#[test]
fn a_sender_killed_half_way_shows_nothing_new_and_its_restart_leaves_the_whole_file() {
    let a = Root::new();
    let b = Root::new();
    let engine = Engine::start(a.path(), None);
    let url = engine.url();
    let size = 96 * MIB;
    let (v1, v2) = (a.path().join("v1"), a.path().join("v2"));
    let (sha1, sha2) = (random_file(&v1, size), random_file(&v2, size));
    let dst = b.path().join("big.bin");
    let dst_arg = dst.to_str().unwrap();
    let send = |path: &Path| -> Kid {
        spawn(&url, &["send", path.to_str().unwrap(), "--name", "big.bin"])
    };
    let kill_half_way = |mut k: Kid, before: u64| {
        let d = long();
        while stream_bytes(engine.port) < before + 16 * MIB {
            assert!(k.exited().is_none(), "the send ended before it was killed");
            d.check("chunks of the send on the server");
            std::thread::sleep(Duration::from_millis(2));
        }
        k.kill9();
    };

    // No file of that name yet: a killed send leaves none.
    kill_half_way(send(&v1), 0);
    let (code, _, err) = outcome(&url, &["recv", "big.bin", "-o", dst_arg]);
    assert_eq!(code, Some(3), "{err:?}");
    assert_eq!(err.len(), 1, "one line: {err:?}");
    assert!(err[0].contains("there is no file big.bin"), "{}", err[0]);
    assert_eq!(names_in(b.path()), Vec::<String>::new(), "nothing written");
    assert_eq!(listing(&url), Vec::<serde_json::Value>::new());
    // Started again, it finishes: the whole right file.
    let mut k = send(&v1);
    assert!(k.wait_until(&long()).success());
    ok(&mut file(&url, &["recv", "big.bin", "-o", dst_arg]), b"");
    assert_eq!(sha_of(&dst), sha1);
    let old_nuid = listing(&url)[0]["nuid"].as_str().unwrap().to_string();

    // A new version killed half way: receivers still get the old one,
    // whole.
    kill_half_way(send(&v2), stream_bytes(engine.port));
    std::fs::remove_file(&dst).unwrap();
    ok(&mut file(&url, &["recv", "big.bin", "-o", dst_arg]), b"");
    assert_eq!(sha_of(&dst), sha1, "the old version, whole");
    // Started again: the new version, whole; the old one's chunks gone.
    let mut k = send(&v2);
    assert!(k.wait_until(&long()).success());
    ok(&mut file(&url, &["recv", "big.bin", "-o", dst_arg]), b"");
    assert_eq!(sha_of(&dst), sha2, "the new version, whole");
    assert_eq!(
        held(engine.port, &format!("$O.tape.C.{old_nuid}")),
        0,
        "the replaced version's chunks are purged"
    );
    assert_eq!(names_in(b.path()), ["big.bin"]);
}

#[test]
fn a_receiver_killed_half_way_leaves_no_file_and_the_next_receive_writes_it_whole() {
    let a = Root::new();
    let b = Root::new();
    let engine = Engine::start(a.path(), None);
    let url = engine.url();
    let src = a.path().join("big.bin");
    let sha = random_file(&src, 200 * MIB);
    ok(&mut file(&url, &["send", src.to_str().unwrap()]), b"");
    let dst = b.path().join("big.bin");
    let part = b.path().join(".big.bin.tape-part");
    let mut recv = spawn(&url, &["recv", "big.bin", "-o", b.path().to_str().unwrap()]);
    let d = long();
    while std::fs::metadata(&part).map_or(0, |m| m.len()) < 16 * MIB {
        assert!(
            recv.exited().is_none(),
            "the receive ended before it was killed"
        );
        d.check("the receive to write 16 MiB");
        std::thread::sleep(Duration::from_millis(2));
    }
    recv.kill9();
    assert!(!dst.exists(), "nothing at the target");
    // The next receive takes the leftover over and writes the whole file.
    let out = ok(
        &mut file(&url, &["recv", "big.bin", "-o", b.path().to_str().unwrap()]),
        b"",
    );
    let out = String::from_utf8_lossy(&out);
    assert!(out.contains(&format!("sha256 {sha}")), "{out}");
    assert_eq!(sha_of(&dst), sha);
    assert_eq!(names_in(b.path()), ["big.bin"], "the leftover is gone");
}

#[test]
fn the_chunks_of_a_killed_send_are_swept_once_old_and_a_files_chunks_never() {
    let a = Root::new();
    let engine = Engine::start(a.path(), None);
    let url = engine.url();
    let small = a.path().join("keep.bin");
    let sha = random_file(&small, MIB);
    ok(&mut file(&url, &["send", small.to_str().unwrap()]), b"");
    let keep = format!("$O.tape.C.{}", listing(&url)[0]["nuid"].as_str().unwrap());
    let big = a.path().join("big.bin");
    random_file(&big, 96 * MIB);
    let before = stream_bytes(engine.port);
    let mut k = spawn(&url, &["send", big.to_str().unwrap()]);
    let d = long();
    while stream_bytes(engine.port) < before + 16 * MIB {
        assert!(k.exited().is_none(), "the send ended before it was killed");
        d.check("chunks of the send on the server");
        std::thread::sleep(Duration::from_millis(2));
    }
    k.kill9();
    assert_eq!(
        chunk_subjects(engine.port).len(),
        2,
        "the killed send's chunks"
    );

    let files = tape_nats::Files::open(tape_nats::FilesOptions::new(tape_nats::Server {
        url: url.clone(),
        auth: tape_nats::Auth::None,
    }))
    .unwrap();
    assert_eq!(
        files.sweep(Duration::from_secs(3600)).unwrap(),
        0,
        "younger than the age given: kept (a sender may be at work)"
    );
    assert_eq!(chunk_subjects(engine.port).len(), 2);
    assert_eq!(files.sweep(Duration::ZERO).unwrap(), 1);
    assert_eq!(
        chunk_subjects(engine.port),
        [keep],
        "only the file's chunks left"
    );
    let b = Root::new();
    ok(
        &mut file(
            &url,
            &["recv", "keep.bin", "-o", b.path().to_str().unwrap()],
        ),
        b"",
    );
    assert_eq!(sha_of(&b.path().join("keep.bin")), sha);
    assert_eq!(listing(&url).len(), 1, "the killed send left no file");
}

#[test]
fn the_server_killed_mid_send_is_one_error_line_and_nothing_visible() {
    let a = Root::new();
    let mut engine = Engine::start(a.path(), None);
    let url = engine.url();
    let src = a.path().join("big.bin");
    let sha = random_file(&src, 200 * MIB);
    let mut send = Kid::spawn(
        "tape file send",
        file(&url, &["send", src.to_str().unwrap()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    );
    let err = Lines::of(send.child.stderr.take().unwrap());
    let d = long();
    while stream_bytes(engine.port) < 16 * MIB {
        assert!(
            send.exited().is_none(),
            "the send ended before the server died"
        );
        d.check("chunks of the send on the server");
        std::thread::sleep(Duration::from_millis(2));
    }
    engine.kill9();
    let status = send.wait_until(&long());
    engine.restart();
    engine.wait_ready();
    let mut lines = Vec::new();
    while let Some(l) = err.next(&Deadline::new(), "the send's stderr") {
        lines.push(l);
    }
    assert_eq!(status.code(), Some(1), "the send failed: {lines:?}");
    // Before it, the client's own log lines (lost the connection, ...).
    let last = lines.last().expect("an error line");
    assert!(
        last.starts_with("tape: ") && last.contains(&url) && last.contains("send it again"),
        "{lines:?}"
    );
    assert!(lines.iter().all(|l| !l.contains("panicked")), "{lines:?}");
    assert_eq!(listing(&url), Vec::<serde_json::Value>::new(), "no file");
    // Sent again, it is there whole.
    ok(&mut file(&url, &["send", src.to_str().unwrap()]), b"");
    assert_eq!(listing(&url)[0]["sha256"], sha.as_str());
}

#[test]
fn a_receive_goes_on_where_it_was_when_the_server_is_killed_and_started_again() {
    let a = Root::new();
    let b = Root::new();
    let mut engine = Engine::start(a.path(), None);
    let url = engine.url();
    let src = a.path().join("big.bin");
    let sha = random_file(&src, 200 * MIB);
    ok(&mut file(&url, &["send", src.to_str().unwrap()]), b"");
    let part = b.path().join(".big.bin.tape-part");
    let mut recv = Kid::spawn(
        "tape file recv",
        file(&url, &["recv", "big.bin", "-o", b.path().to_str().unwrap()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    );
    let err = Lines::of(recv.child.stderr.take().unwrap());
    let d = long();
    while std::fs::metadata(&part).map_or(0, |m| m.len()) < 16 * MIB {
        assert!(
            recv.exited().is_none(),
            "the receive ended before the server died"
        );
        d.check("the receive to write 16 MiB");
        std::thread::sleep(Duration::from_millis(2));
    }
    engine.kill9();
    engine.restart();
    let status = recv.wait_until(&long());
    let mut lines = Vec::new();
    while let Some(l) = err.next(&Deadline::new(), "the receive's stderr") {
        lines.push(l);
    }
    assert!(status.success(), "{lines:?}");
    assert!(
        lines.iter().any(|l| l.contains("going on from chunk")),
        "it went on: {lines:?}"
    );
    assert_eq!(sha_of(&b.path().join("big.bin")), sha);
    assert_eq!(names_in(b.path()), ["big.bin"]);
}
