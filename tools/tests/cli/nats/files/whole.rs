//! A 200 MiB random file arrives whole while neither side's memory grows
//! with it; the progress line on a terminal.

use super::*;
use crate::common::*;
use crate::nats::engine::*;
use std::fs::File;
use std::io::Read;
use std::os::unix::io::FromRawFd;
use std::process::Stdio;
use std::time::Duration;

#[test]
fn a_200_mib_random_file_arrives_whole_and_neither_side_holds_more_than_a_window() {
    let a = Root::new();
    let b = Root::new();
    let engine = Engine::start(a.path(), None);
    let url = engine.url();
    let src = a.path().join("ticks.bin");
    let size = 200 * MIB;
    let sha = random_file(&src, size);

    // The sender: its peak memory sampled while it runs, also once more
    // than half the file is on the server.
    let mut send = Kid::spawn(
        "tape file send",
        file(&url, &["send", src.to_str().unwrap()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    let (mut peak, mut late) = (0u64, false);
    let d = long();
    while send.exited().is_none() {
        let on_server = stream_bytes(engine.port);
        if let Some(p) = peak_kib(send.pid()) {
            peak = peak.max(p);
            late |= on_server > size / 2;
        }
        d.check("the send");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut out = String::new();
    send.child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let mut err = String::new();
    send.child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(send.wait().success(), "send: {err}");
    assert!(
        out.contains(&format!(
            "sent ticks.bin ({size} bytes, 1600 chunks, sha256 {sha})"
        )),
        "{out}"
    );
    assert_eq!(err, "", "no progress line when stderr is not a terminal");
    assert!(late, "the sender's memory was sampled past half the file");
    assert!(
        peak < 64 * 1024,
        "the sender peaked at {peak} KiB for a {} MiB file",
        size / MIB
    );

    let ls = listing(&url);
    assert_eq!(ls.len(), 1, "{ls:?}");
    assert_eq!(ls[0]["name"], "ticks.bin");
    assert_eq!(ls[0]["size"], size);
    assert_eq!(ls[0]["chunks"], 1600);
    assert_eq!(ls[0]["sha256"], sha.as_str());
    assert!(ls[0]["modified"].as_str().unwrap().ends_with('Z'));

    // The receiver, into the other folder.
    let dst = b.path().join("got.bin");
    let part = b.path().join(".got.bin.tape-part");
    let mut recv = Kid::spawn(
        "tape file recv",
        file(&url, &["recv", "ticks.bin", "-o", dst.to_str().unwrap()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let (mut peak, mut late) = (0u64, false);
    let d = long();
    while recv.exited().is_none() {
        let written = std::fs::metadata(&part).map_or(0, |m| m.len());
        if let Some(p) = peak_kib(recv.pid()) {
            peak = peak.max(p);
            late |= written > size / 2;
        }
        d.check("the receive");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(recv.wait().success());
    assert!(late, "the receiver's memory was sampled past half the file");
    assert!(
        peak < 64 * 1024,
        "the receiver peaked at {peak} KiB for a {} MiB file",
        size / MIB
    );
    assert_eq!(sha_of(&dst), sha, "the file received is the file sent");
    assert_eq!(names_in(b.path()), ["got.bin"], "no temporary file left");
}

/// A pseudo-terminal: (master, slave).
fn pty() -> (File, File) {
    let (mut m, mut s) = (0, 0);
    // SAFETY: openpty writes two descriptors into the integers it is
    // given; the name, termios and winsize pointers may be null.
    let r = unsafe {
        libc::openpty(
            &mut m,
            &mut s,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(r, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors were just opened by openpty and nothing
    // else owns them.
    unsafe { (File::from_raw_fd(m), File::from_raw_fd(s)) }
}

#[test]
fn on_a_terminal_send_and_recv_draw_a_progress_line() {
    let a = Root::new();
    let b = Root::new();
    let engine = Engine::start(a.path(), None);
    let url = engine.url();
    let src = a.path().join("p.bin");
    random_file(&src, 8 * MIB);
    for args in [
        vec!["send", src.to_str().unwrap()],
        vec!["recv", "p.bin", "-o", b.path().to_str().unwrap()],
    ] {
        let (mut master, slave) = pty();
        let mut cmd = file(&url, &args);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(slave));
        let mut kid = Kid::spawn("tape file on a terminal", &mut cmd);
        drop(cmd);
        let reader = std::thread::spawn(move || {
            let mut seen = Vec::new();
            let mut buf = [0u8; 4096];
            // EIO once the child and every copy of the slave are gone.
            while let Ok(n) = master.read(&mut buf) {
                if n == 0 {
                    break;
                }
                seen.extend_from_slice(&buf[..n]);
            }
            String::from_utf8_lossy(&seen).into_owned()
        });
        assert!(kid.wait().success(), "{args:?}");
        let seen = reader.join().unwrap();
        let verb = args[0];
        assert!(seen.contains(&format!("\r{verb} p.bin")), "{seen:?}");
        assert!(seen.contains("8.0/8.0 MiB  100%"), "{seen:?}");
        assert!(seen.contains(" MB/s"), "{seen:?}");
    }
    assert_eq!(sha_of(&b.path().join("p.bin")), sha_of(&src));
}
