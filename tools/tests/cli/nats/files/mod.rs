//! `tape file`: files sent from one folder and received in another (two
//! machines), through a real `nats-server -js`, with every process real:
//! whole files SHA-256-equal, memory that does not grow with the file
//! (`whole`), a sender, receiver or the server killed half way (`kills`),
//! a damaged chunk and a wrong token (`refuse`).

mod kills;
mod refuse;
mod whole;

use crate::common::*;
use crate::nats::engine::*;
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};

pub const MIB: u64 = 1 << 20;

/// `tape file <args> --server <url>`.
pub fn file(url: &str, args: &[&str]) -> Command {
    let mut cmd = tape(&["file"]);
    cmd.args(args).args(["--server", url]);
    cmd
}

/// Runs `tape file ...` to its end: (exit code, stdout, stderr lines).
pub fn outcome(url: &str, args: &[&str]) -> (Option<i32>, String, Vec<String>) {
    let o = run(&mut file(url, args), b"");
    let err = String::from_utf8_lossy(&o.stderr);
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        err.lines().map(str::to_string).collect(),
    )
}

/// A file of `size` random bytes; returns its SHA-256 in hex.
pub fn random_file(path: &Path, size: u64) -> String {
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

pub fn sha_of(path: &Path) -> String {
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

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The names in a folder.
pub fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Peak resident memory of a live process (KiB), `None` once it is gone.
pub fn peak_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// Bytes the bucket's stream holds.
pub fn stream_bytes(port: u16) -> u64 {
    let v = js_api(port, "$JS.API.STREAM.INFO.OBJ_tape", "");
    v["state"]["bytes"].as_u64().unwrap_or(0)
}

/// Messages the bucket's stream holds on `subject`.
pub fn held(port: u16, subject: &str) -> u64 {
    let v = js_api(
        port,
        "$JS.API.STREAM.INFO.OBJ_tape",
        &serde_json::json!({ "subjects_filter": subject }).to_string(),
    );
    v["state"]["subjects"][subject].as_u64().unwrap_or(0)
}

/// `tape file ls --json`.
pub fn listing(url: &str) -> Vec<serde_json::Value> {
    json_lines(&ok(&mut file(url, &["ls", "--json"]), b""))
}

/// A long transfer's watchdog: the machine is small and shared.
pub fn long() -> Deadline {
    Deadline::secs(600)
}

/// Runs `tape file <args>` in the background, stdout and stderr collected.
pub fn spawn(url: &str, args: &[&str]) -> Kid {
    Kid::spawn(
        &format!("tape file {args:?}"),
        file(url, args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
}

/// The chunk subjects the bucket's stream holds (one per version).
pub fn chunk_subjects(port: u16) -> Vec<String> {
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
fn every_file_subcommand_explains_its_flags() {
    let cases: [(&[&str], &[&str]); 5] = [
        (&["file"], &["send", "recv", "ls", "rm", "exit 3"]),
        (
            &["file", "send"],
            &[
                "--name",
                "--bucket",
                "--server",
                "--token-file",
                "--creds",
                "SHA-256",
            ],
        ),
        (
            &["file", "recv"],
            &["-o", "--bucket", "--server", "temporary name", "exit 3"],
        ),
        (&["file", "ls"], &["--json", "--bucket", "--server"]),
        (&["file", "rm"], &["--bucket", "--server", "exit 3"]),
    ];
    for (verb, flags) in cases {
        let mut args = verb.to_vec();
        args.push("--help");
        let out = String::from_utf8(ok(&mut tape(&args), b"")).unwrap();
        for f in flags {
            assert!(out.contains(f), "tape {args:?} mentions {f}:\n{out}");
        }
    }
}
