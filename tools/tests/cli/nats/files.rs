//! `tape file`: files sent from one folder and received in another (two
//! machines), through a real `nats-server -js`, with every process real:
//! whole files SHA-256-equal, memory that does not grow with the file, a
//! sender or receiver killed half way, a damaged chunk, a wrong token.

use crate::common::*;
use crate::nats::engine::*;
use base64::Engine as _;
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::io::FromRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const MIB: u64 = 1 << 20;

/// `tape file <args> --server <url>`.
fn file(url: &str, args: &[&str]) -> Command {
    let mut cmd = tape(&["file"]);
    cmd.args(args).args(["--server", url]);
    cmd
}

/// Runs `tape file ...` to its end: (exit code, stdout, stderr lines).
fn outcome(url: &str, args: &[&str]) -> (Option<i32>, String, Vec<String>) {
    let o = run(&mut file(url, args), b"");
    let err = String::from_utf8_lossy(&o.stderr);
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        err.lines().map(str::to_string).collect(),
    )
}

/// A file of `size` random bytes; returns its SHA-256 in hex.
fn random_file(path: &Path, size: u64) -> String {
    let mut src = File::open("/dev/urandom").unwrap().take(size);
    let mut out = File::create(path).unwrap();
    let mut h = Sha256::new();
    let mut buf = vec![0u8; MIB as usize];
    loop {
        let n = src.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        out.write_all(&buf[..n]).unwrap();
    }
    hex(&h.finalize())
}

fn sha_of(path: &Path) -> String {
    let mut f = File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut h = Sha256::new();
    let mut buf = vec![0u8; MIB as usize];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            return hex(&h.finalize());
        }
        h.update(&buf[..n]);
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The names in a folder.
fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Peak resident memory of a live process (KiB), `None` once it is gone.
fn peak_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// Bytes the bucket's stream holds.
fn stream_bytes(port: u16) -> u64 {
    let v = js_api(port, "$JS.API.STREAM.INFO.OBJ_tape", "");
    v["state"]["bytes"].as_u64().unwrap_or(0)
}

/// Messages the bucket's stream holds on `subject`.
fn held(port: u16, subject: &str) -> u64 {
    let v = js_api(
        port,
        "$JS.API.STREAM.INFO.OBJ_tape",
        &serde_json::json!({ "subjects_filter": subject }).to_string(),
    );
    v["state"]["subjects"][subject].as_u64().unwrap_or(0)
}

/// `tape file ls --json`.
fn listing(url: &str) -> Vec<serde_json::Value> {
    json_lines(&ok(&mut file(url, &["ls", "--json"]), b""))
}

/// A long transfer's watchdog: the machine is small and shared.
fn long() -> Deadline {
    Deadline::secs(600)
}

/// Runs `tape file <args>` in the background, stdout and stderr collected.
fn spawn(url: &str, args: &[&str]) -> Kid {
    Kid::spawn(
        &format!("tape file {args:?}"),
        file(url, args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
}

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

/// The NATS headers of a raw `MSG.GET` answer (`NATS/1.0\r\nK: V\r\n...`).
fn headers_of(msg: &serde_json::Value) -> Vec<(String, String)> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let raw = b64
        .decode(msg["hdrs"].as_str().unwrap_or_default())
        .unwrap();
    String::from_utf8(raw)
        .unwrap()
        .split("\r\n")
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

#[test]
fn a_damaged_chunk_is_refused_naming_it_and_the_file_at_the_target_stays_as_it_was() {
    let a = Root::new();
    let b = Root::new();
    let engine = Engine::start(a.path(), None);
    let url = engine.url();
    let src = a.path().join("d.bin");
    random_file(&src, MIB);
    ok(&mut file(&url, &["send", src.to_str().unwrap()]), b"");
    let nuid = listing(&url)[0]["nuid"].as_str().unwrap().to_string();
    let subject = format!("$O.tape.C.{nuid}");
    assert_eq!(held(engine.port, &subject), 8);

    // Chunks 3 to 7 taken out and put back in order, chunk 3 with one
    // byte changed and its headers (index, digest) as they were.
    let info = js_api(engine.port, "$JS.API.STREAM.INFO.OBJ_tape", "");
    let last = info["state"]["last_seq"].as_u64().unwrap();
    let mut chunks = Vec::new();
    for seq in 1..=last {
        let m = js_api(
            engine.port,
            "$JS.API.STREAM.MSG.GET.OBJ_tape",
            &format!("{{\"seq\":{seq}}}"),
        );
        if m["message"]["subject"] == subject.as_str() {
            chunks.push((seq, m["message"].clone()));
        }
    }
    assert_eq!(chunks.len(), 8);
    let mut raw = Raw::connect(engine.port, None).unwrap();
    for (i, (seq, m)) in chunks.iter().enumerate().skip(3) {
        let del = js_api(
            engine.port,
            "$JS.API.STREAM.MSG.DELETE.OBJ_tape",
            &format!("{{\"seq\":{seq}}}"),
        );
        assert_eq!(del["success"], true, "{del}");
        let h = headers_of(m);
        assert!(h.contains(&("Tape-Chunk".into(), i.to_string())), "{h:?}");
        let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let mut body = base64::engine::general_purpose::STANDARD
            .decode(m["data"].as_str().unwrap())
            .unwrap();
        if i == 3 {
            body[1000] ^= 0x5a;
        }
        raw.publish(&subject, &h, &body);
    }
    wait_until("the chunks to be put back", || {
        held(engine.port, &subject) == 8
    });

    let dst = b.path().join("d.bin");
    std::fs::write(&dst, b"the file that was there").unwrap();
    let (code, _, err) = outcome(&url, &["recv", "d.bin", "-o", b.path().to_str().unwrap()]);
    assert_eq!(code, Some(1), "{err:?}");
    assert_eq!(err.len(), 1, "one line: {err:?}");
    assert!(
        err[0].contains("chunk 3 of file d.bin is damaged"),
        "{}",
        err[0]
    );
    assert!(err[0].contains("nothing written at"), "{}", err[0]);
    assert_eq!(std::fs::read(&dst).unwrap(), b"the file that was there");
    assert_eq!(names_in(b.path()), ["d.bin"], "no temporary file left");

    // A chunk gone: refused before anything is written.
    let damaged = js_api(
        engine.port,
        "$JS.API.STREAM.MSG.GET.OBJ_tape",
        &serde_json::json!({ "last_by_subj": subject }).to_string(),
    )["message"]["seq"]
        .as_u64()
        .unwrap();
    let seq3 = damaged - 4;
    let del = js_api(
        engine.port,
        "$JS.API.STREAM.MSG.DELETE.OBJ_tape",
        &format!("{{\"seq\":{seq3}}}"),
    );
    assert_eq!(del["success"], true, "{del}");
    let (code, _, err) = outcome(&url, &["recv", "d.bin", "-o", b.path().to_str().unwrap()]);
    assert_eq!(code, Some(1), "{err:?}");
    assert_eq!(err.len(), 1, "one line: {err:?}");
    assert!(
        err[0].contains("file d.bin is incomplete on the server: it holds 7 of its 8 chunks"),
        "{}",
        err[0]
    );
    assert_eq!(std::fs::read(&dst).unwrap(), b"the file that was there");
    assert_eq!(names_in(b.path()), ["d.bin"]);
}

#[test]
fn a_wrong_token_is_one_line_naming_the_server_and_nothing_is_written() {
    let a = Root::new();
    let b = Root::new();
    let engine = Engine::start(a.path(), Some("right-token-3"));
    let url = engine.url();
    let src = a.path().join("f.bin");
    let sha = random_file(&src, 3 * MIB);
    let token = |t: &str| -> PathBuf {
        let p = a.path().join(format!("token-{}", t.len()));
        std::fs::write(&p, format!("{t}\n")).unwrap();
        p
    };
    let wrong = token("wrong-token");
    let wrong = wrong.to_str().unwrap();
    let out = b.path().to_str().unwrap();
    for args in [
        vec!["send", src.to_str().unwrap()],
        vec!["recv", "f.bin", "-o", out],
        vec!["ls"],
        vec!["rm", "f.bin"],
    ] {
        let mut args = args.clone();
        args.extend(["--token-file", wrong]);
        let (code, stdout, err) = outcome(&url, &args);
        assert_eq!(code, Some(1), "{args:?}: {err:?}");
        assert_eq!(err.len(), 1, "{args:?}: one line: {err:?}");
        assert!(err[0].contains(&url), "names the server: {}", err[0]);
        assert!(err[0].contains("refused the credentials"), "{}", err[0]);
        assert_eq!(stdout, "");
    }
    let streams = js_api_as(
        engine.port,
        Some("right-token-3"),
        "$JS.API.STREAM.NAMES",
        "",
    );
    assert_eq!(
        streams["total"].as_u64(),
        Some(0),
        "no bucket made: {streams}"
    );
    assert_eq!(names_in(b.path()), Vec::<String>::new(), "nothing written");

    // The right token works; a name that is not there exits 3.
    let right = token("right-token-3");
    let right = right.to_str().unwrap();
    let s = src.to_str().unwrap();
    ok(&mut file(&url, &["send", s, "--token-file", right]), b"");
    ok(
        &mut file(&url, &["recv", "f.bin", "-o", out, "--token-file", right]),
        b"",
    );
    assert_eq!(sha_of(&b.path().join("f.bin")), sha);
    let (code, _, err) = outcome(&url, &["recv", "nope", "-o", out, "--token-file", right]);
    assert_eq!(code, Some(3), "{err:?}");
    assert_eq!(err.len(), 1, "{err:?}");
    ok(
        &mut file(&url, &["rm", "f.bin", "--token-file", right]),
        b"",
    );
    let (code, _, err) = outcome(&url, &["rm", "f.bin", "--token-file", right]);
    assert_eq!(code, Some(3), "removed: {err:?}");
    assert_eq!(names_in(b.path()), ["f.bin"]);
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

/// The chunk subjects the bucket's stream holds (one per version).
fn chunk_subjects(port: u16) -> Vec<String> {
    let v = js_api(
        port,
        "$JS.API.STREAM.INFO.OBJ_tape",
        r#"{"subjects_filter":"$O.tape.C.>"}"#,
    );
    let mut s: Vec<String> = v["state"]["subjects"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    s.sort();
    s
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
