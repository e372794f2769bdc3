//! `--sync none|page|interval=MS` (journal/src/durable.rs): real `tape
//! write`, `tape bridge pull` and `tape nats import` processes under
//! `strace -f -c`, counting the msync, fsync and fdatasync calls each
//! policy makes (the writer's threads included), and the errors bad values
//! get.
//!
//! strace is needed, never skipped: test.sh installs it when it is missing.

use crate::common::*;
use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Calls per syscall, from `strace -c -o FILE`'s table.
fn counts(summary: &Path) -> HashMap<String, u64> {
    let text = std::fs::read_to_string(summary).expect("strace's summary");
    let mut m = HashMap::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        // "% time  seconds  usecs/call  calls  [errors]  syscall"
        if f.len() >= 5 && f[0].parse::<f64>().is_ok() {
            if let (Ok(calls), Some(name)) = (f[3].parse::<u64>(), f.last()) {
                if *name != "total" {
                    m.insert(name.to_string(), calls);
                }
            }
        }
    }
    m
}

/// `strace -f -c -o summary` counting the sync calls of the command
/// that follows.
fn strace(summary: &Path) -> Command {
    assert!(
        Command::new("strace")
            .arg("-V")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success()),
        "strace is missing: install it (test.sh does: apt-get install strace)"
    );
    let mut cmd = Command::new("strace");
    cmd.args(["-f", "-qq", "-c", "-e", "trace=msync,fsync,fdatasync", "-o"])
        .arg(summary)
        .arg(tape_bin());
    cmd
}

/// `strace -f -c` of `tape write md --sync POLICY --page-size 1MiB`.
fn traced_write(root: &Root, policy: &str, summary: &Path) -> Command {
    let mut cmd = strace(summary);
    cmd.args(["write", "md", "--page-size", "1048576", "--sync", policy])
        .arg("--root")
        .arg(root.arg())
        .env_remove("TAPE_ROOT");
    cmd
}

/// Page files of md that hold a frame or an end marker (a page made ahead
/// and never written has 0 at offset 64).
fn written_pages(root: &Root) -> u64 {
    let dir = root.journal_dir();
    let mut n = 0;
    for no in tape_journal::list_pages(&dir, "md").unwrap() {
        let bytes = std::fs::read(tape_journal::files::page_path(&dir, "md", no)).unwrap();
        if bytes[64..68] != [0; 4] {
            n += 1;
        }
    }
    n
}

/// 200-byte lines, `n` of them: 1 MiB pages hold about 4000.
fn wide_lines(n: usize) -> Vec<u8> {
    let mut v = Vec::new();
    for i in 0..n {
        writeln!(v, "{i:0>200}").unwrap();
    }
    v
}

fn syncs(c: &HashMap<String, u64>) -> (u64, u64, u64) {
    let g = |k: &str| c.get(k).copied().unwrap_or(0);
    (g("msync"), g("fsync"), g("fdatasync"))
}

#[test]
fn sync_none_makes_no_sync_call() {
    let root = Root::new();
    let _service = Service::start(&root);
    let summary = root.path().join("strace.txt");
    ok(
        &mut traced_write(&root, "none", &summary),
        &wide_lines(20_000),
    );
    assert!(written_pages(&root) >= 4);
    assert_eq!(syncs(&counts(&summary)), (0, 0, 0));
    let none = ok(&mut root.tape("tail", &["md"]), b"");
    assert_eq!(none, wide_lines(20_000));
}

#[test]
fn sync_page_makes_one_msync_and_one_folder_fsync_per_page_written() {
    let root = Root::new();
    let _service = Service::start(&root);
    let summary = root.path().join("strace.txt");
    ok(
        &mut traced_write(&root, "page", &summary),
        &wide_lines(20_000),
    );
    let pages = written_pages(&root);
    assert!(pages >= 4, "{pages} pages");
    // Each page the writer left (synced by the sync thread) and the last
    // one (synced at the close), each followed by the folder's fsync.
    assert_eq!(syncs(&counts(&summary)), (pages, pages, 0));
    assert_eq!(ok(&mut root.tape("tail", &["md"]), b""), wide_lines(20_000));
}

#[test]
fn sync_interval_syncs_while_writing_and_nothing_while_idle() {
    let root = Root::new();
    let _service = Service::start(&root);
    let summary = root.path().join("strace.txt");
    let mut cmd = traced_write(&root, "interval=5", &summary);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    let mut w = Kid::spawn("strace tape write --sync interval=5", &mut cmd);
    let mut stdin = w.stdin();
    let started = Instant::now();
    // One line, then 200 intervals with nothing written: the header and
    // that line are synced (one or two looks), then no look finds anything.
    feed(&mut stdin, b"first\n");
    std::thread::sleep(Duration::from_secs(1));
    drop(stdin);
    assert!(w.wait().success());
    let (msync, fsync, fdatasync) = syncs(&counts(&summary));
    assert!((1..=2).contains(&msync), "{msync} msyncs for one line");
    assert_eq!((fsync, fdatasync), (0, 0));

    // A stream across pages: syncs while it runs, at most one per look
    // plus one per page passed, and the folder once per page passed.
    let root = Root::new();
    let _service = Service::start(&root);
    let mut cmd = traced_write(&root, "interval=20", &summary);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    let mut w = Kid::spawn("strace tape write --sync interval=20", &mut cmd);
    let mut stdin = w.stdin();
    let input = wide_lines(20_000);
    for chunk in input.chunks(input.len() / 20) {
        feed(&mut stdin, chunk);
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(stdin);
    assert!(w.wait().success());
    let elapsed = started.elapsed();
    let pages = written_pages(&root);
    let (msync, fsync, fdatasync) = syncs(&counts(&summary));
    let looks = elapsed.as_millis() as u64 / 20 + 2;
    assert!(
        msync >= 2 && msync <= looks + pages,
        "{msync} msyncs in {elapsed:?} over {pages} pages"
    );
    assert_eq!((fsync, fdatasync), (pages - 1, 0), "{pages} pages");
    assert_eq!(ok(&mut root.tape("tail", &["md"]), b""), input);
}

#[test]
fn a_bad_sync_value_gets_one_line_and_creates_nothing() {
    let root = Root::new();
    let _service = Service::start(&root);
    for (bad, why) in [
        ("interval=0", "at least 1 ms"),
        ("interval=abc", "not a whole number of milliseconds"),
        ("always", "unknown policy"),
    ] {
        let o = run(&mut root.tape("write", &["md", "--sync", bad]), b"1\n");
        assert!(!o.status.success(), "--sync {bad} was taken");
        let err = String::from_utf8_lossy(&o.stderr);
        let first = err.lines().next().unwrap_or("");
        assert!(
            first.contains(&format!("bad sync policy \"{bad}\"")) && first.contains(why),
            "--sync {bad}: {err}"
        );
        assert!(first.contains("use none, page or interval=MS"), "{err}");
        assert!(!root.journal_dir().join("md.00000001.journal").exists());
    }
    // The replicas' commands take the same values.
    for args in [
        &["bridge", "pull", "--from", "127.0.0.1:1", "--journal", "md"][..],
        &["nats", "import", "md"][..],
    ] {
        let mut cmd = tape(args);
        cmd.args(["--sync", "interval=0", "--root", root.arg()]);
        let o = run(&mut cmd, b"");
        assert!(!o.status.success(), "{args:?} took --sync interval=0");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("the interval must be at least 1 ms"), "{err}");
    }
}

#[test]
fn bridge_pull_syncs_its_replica_by_the_page() {
    use crate::bridge::setup::{Log, Serve, Side, TOKEN};
    let src = Side::new();
    let dst = Side::new();
    let serve = Serve::with_token(&src, &[]);
    let tok = dst.token_file(TOKEN);
    let summary = dst.root.path().join("strace.txt");
    let mut cmd = strace(&summary);
    cmd.args(["bridge", "pull", "--from", &serve.addr, "--journal", "md"])
        .args([
            "--account",
            "acct-1",
            "--sync",
            "page",
            "--root",
            dst.root.arg(),
        ])
        .arg("--token-file")
        .arg(&tok)
        .env_remove("TAPE_ROOT")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut pull = Kid::spawn("strace tape bridge pull --sync page", &mut cmd);
    let log = Log::of(pull.child.stderr.take().unwrap(), "pull");
    log.wait_for("the pull to connect", |l| l.contains("connected to"));
    write_journal(&src.root, "md", &wide_lines(20_000));
    dst.wait_seq("md", 20_000);
    stop_traced(&mut pull, &log);
    let pages = written_pages(&dst.root);
    assert!(pages >= 4, "{pages} pages");
    assert_eq!(syncs(&counts(&summary)), (pages, pages, 0));
}

/// A clean stop of the `tape` process strace runs (SIGTERM to strace's
/// child): it closes its replicas, which syncs their last pages.
fn stop_traced(kid: &mut Kid, log: &crate::bridge::setup::Log) {
    let children = format!("/proc/{}/task/{}/children", kid.pid(), kid.pid());
    let tape_pid: i32 = std::fs::read_to_string(&children)
        .unwrap()
        .split_whitespace()
        .next()
        .expect("strace's child")
        .parse()
        .unwrap();
    // SAFETY: kill has no memory effects; the pid is our grandchild, alive
    // (strace waits for it).
    assert_eq!(unsafe { libc::kill(tape_pid, libc::SIGTERM) }, 0);
    assert!(kid.wait().success(), "{:?}", log.all());
}

#[test]
fn nats_import_syncs_its_replica_by_the_page() {
    use crate::bridge::setup::{Log, Side};
    use crate::nats::engine::{Engine, Nats};
    let src = Side::new();
    let dst = Side::new();
    let engine = Engine::start(src.root.path(), None);
    let url = engine.url();
    write_journal(&src.root, "md", &wide_lines(20_000));
    let export = Nats::start(&src, "export", &url, &["md"]);
    export.log.wait_for("the stream to be created", |l| {
        l.contains("created stream TAPE_md")
    });
    let summary = dst.root.path().join("strace.txt");
    let mut cmd = strace(&summary);
    cmd.args(["nats", "import", "md", "--sync", "page", "--server", &url])
        .args(["--root", dst.root.arg()])
        .env_remove("TAPE_ROOT")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut import = Kid::spawn("strace tape nats import --sync page", &mut cmd);
    let log = Log::of(import.child.stderr.take().unwrap(), "import");
    dst.wait_seq("md", 20_000);
    stop_traced(&mut import, &log);
    let pages = written_pages(&dst.root);
    assert!(pages >= 4, "{pages} pages");
    assert_eq!(syncs(&counts(&summary)), (pages, pages, 0));
}
