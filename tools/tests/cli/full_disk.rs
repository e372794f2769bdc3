//! A full disk: making the next page fails. The disk is "full" for one
//! process by lowering its file size limit (RLIMIT_FSIZE, with SIGXFSZ
//! ignored so that the limit shows as EFBIG, as ENOSPC would) from outside
//! with prlimit(2) while it writes. The writer gets a clear error, the
//! frames it published stay readable and intact, nothing half-made is left
//! behind, and once the limit is lifted the writer goes on.

use crate::child;
use crate::common::*;
use crate::roles::payload;
use std::os::unix::process::CommandExt;
use std::process::Stdio;

/// Sets the soft file size limit of process `pid` (the hard limit stays,
/// so that lifting it again needs no privilege).
fn set_fsize(pid: u32, bytes: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: prlimit writes the current limit through a valid pointer.
    let rc = unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_FSIZE,
            std::ptr::null(),
            &mut lim,
        )
    };
    assert_eq!(
        rc,
        0,
        "prlimit on {pid}: {}",
        std::io::Error::last_os_error()
    );
    lim.rlim_cur = (bytes as libc::rlim_t).min(lim.rlim_max);
    // SAFETY: prlimit reads one rlimit through a valid pointer and writes
    // nothing (old limit pointer is null).
    let rc = unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_FSIZE,
            &lim,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(
        rc,
        0,
        "prlimit on {pid}: {}",
        std::io::Error::last_os_error()
    );
}

fn tmp_files(root: &Root) -> Vec<String> {
    std::fs::read_dir(root.journal_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect()
}

/// `tape write` runs out of room in the middle of its input: it exits
/// non-zero with one line that names the page it could not make and says
/// what to do; every frame it published reads back, `verify` passes, no
/// half-made page is left, and the next `tape write` continues the
/// sequence.
#[test]
fn tape_write_on_a_full_disk_fails_clearly_and_loses_nothing() {
    let root = Root::new();
    let _service = Service::start(&root);
    let mut cmd = root.tape("write", &["md", "--page-size", "1048576"]);
    // SAFETY: runs in the child before exec; signal() is
    // async-signal-safe, and SIG_IGN survives exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            Ok(())
        });
    }
    let mut kid = Kid::spawn(
        "tape write md",
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    );
    let err = kid.child.stderr.take().unwrap();
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut { err }, &mut s).unwrap();
        s
    });
    let mut stdin = kid.stdin();
    feed(&mut stdin, &lines(1..=10_000));
    wait_until("the first 10000 frames", || {
        tape_journal::stats(&root.journal_dir(), "md").is_ok_and(|s| s.last_seq == 10_000)
    });
    // Page 2 is made ahead; page 3 is the one that will not fit.
    wait_until("page 2 to be made", || root.page("md", 2).exists());
    // The disk is full from now on: no file may grow past 64 KiB.
    set_fsize(kid.pid(), 64 << 10);
    let more = lines(10_001..=200_000);
    let feeder = std::thread::spawn(move || {
        // The writer stops reading when it fails: a broken pipe is expected.
        for chunk in more.chunks(1 << 16) {
            if std::io::Write::write_all(&mut stdin, chunk).is_err() {
                return;
            }
        }
    });
    let status = kid.wait();
    feeder.join().unwrap();
    let err = err.join().unwrap();
    assert!(!status.success(), "tape write must fail on a full disk");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(err.contains("cannot make the next page"), "{err}");
    assert!(err.contains("File too large"), "says why: {err}");
    assert!(
        err.contains("disk is full") && err.contains("tape prune"),
        "says what to do: {err}"
    );
    assert!(tmp_files(&root).is_empty(), "half-made pages left behind");

    let stats = tape_journal::stats(&root.journal_dir(), "md").unwrap();
    let last = stats.last_seq;
    assert!(
        (10_000..200_000).contains(&last),
        "wrote {last} frames before the disk was full"
    );
    assert!(stats.pages >= 2, "it got to a new page first");
    assert!(
        ok(&mut root.tape("tail", &["md"]), b"") == lines(1..=last),
        "published frames intact"
    );
    ok(&mut root.tape("verify", &["md"]), b"");

    // Space is back (a new process has no limit): the sequence goes on.
    write_journal(&root, "md", &lines(last + 1..=last + 30_000));
    assert!(ok(&mut root.tape("tail", &["md"]), b"") == lines(1..=last + 30_000));
    ok(&mut root.tape("verify", &["md"]), b"");
}

/// One writer process meets a full disk, keeps its `Writer`, retries (and
/// fails again, changing nothing), and once the limit is lifted goes on
/// across several new pages with no gap in the sequence: page creation is
/// retried on the next append.
#[test]
fn writer_works_again_once_space_is_back() {
    let root = Root::new();
    let _service = Service::start(&root);
    let mut kid = child::spawn_with("disk-writer", root.path(), "", Stdio::piped());
    let mut stdin = kid.stdin();
    let out = Lines::of(kid.child.stdout.take().unwrap());
    let d = Deadline::new();
    let next = |what: &str| loop {
        let l = out.next(&d, what).expect("the writer's output");
        if let Some(msg) = l.strip_prefix("ROLE ") {
            return msg.to_string();
        }
    };
    let mut tell = |cmd: &str| {
        std::io::Write::write_all(&mut stdin, format!("{cmd}\n").as_bytes()).unwrap();
    };
    assert_eq!(next("ready"), "ready");
    tell("write 5000");
    assert_eq!(next("5000 frames"), "wrote 5000");
    wait_until("page 2 to be made", || root.page("md", 2).exists());

    set_fsize(kid.pid(), 64 << 10);
    tell("write 100000");
    let msg = next("the full disk");
    let rest = msg.strip_prefix("error ").expect("an error");
    let (last, why) = rest.split_once(' ').unwrap();
    let last: u64 = last.parse().unwrap();
    assert!(last >= 5000, "{msg}");
    assert!(why.contains("cannot make the next page") && why.contains("File too large"));
    // Published frames are intact and readable while the writer lives.
    let check = |upto: u64| {
        let frames = tail_json(&root, &["md"]);
        assert_eq!(seqs(&frames), (1..=upto).collect::<Vec<_>>());
        let mut want = Vec::new();
        for f in &frames {
            payload(f["seq"].as_u64().unwrap(), &mut want);
            let hex: String = want.iter().map(|b| format!("{b:02x}")).collect();
            let got = f["payload_hex"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| {
                    f["payload"]
                        .as_str()
                        .unwrap()
                        .bytes()
                        .map(|b| format!("{b:02x}"))
                        .collect()
                });
            assert_eq!(got, hex, "frame {}", f["seq"]);
        }
        ok(&mut root.tape("verify", &["md"]), b"");
    };
    check(last);
    // Still full: the retry fails the same way and writes nothing.
    tell("write 10");
    assert_eq!(next("the retry"), format!("error {last} {why}"));
    assert!(tmp_files(&root).is_empty());

    set_fsize(kid.pid(), u64::MAX);
    tell("write 50000");
    assert_eq!(next("writing again"), format!("wrote {}", last + 50_000));
    let stats = tape_journal::stats(&root.journal_dir(), "md").unwrap();
    assert!(stats.pages >= 4, "crossed pages again: {stats:?}");
    check(last + 50_000);
}
