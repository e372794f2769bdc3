//! More roles for child processes (see [`crate::child`]): the writers,
//! readers and intruders of the fault tests and crash campaigns. Each
//! prints `ROLE ...` lines on stdout and, where it takes orders, reads one
//! command a line on stdin.
//!
//! Frames are checkable by content: frame `seq` carries [`payload`]`(seq)`
//! (its sequence number, then bytes derived from it) and its CRC32C, and
//! the `source` field names the writer generation that wrote it.

use std::io::{BufRead, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tape_reader::{Idle, Reader, ServiceMode, Start};
use tape_writer::{Writer, WriterCreateError};

/// Runs role `role` on `root` with argument `arg`.
pub fn run(role: &str, root: &Path, arg: &str) {
    match role {
        "seq-writer" => seq_writer(root, arg),
        "check-reader" => check_reader(root, arg),
        "intruder" => intruder(root),
        "hold-reader" => hold_reader(root, arg.parse().expect("frames to read")),
        "disk-writer" => disk_writer(root),
        "other-user" => other_user(root),
        other => panic!("unknown role {other}"),
    }
}

pub fn say(msg: &str) {
    let mut out = std::io::stdout().lock();
    // A parent that stopped listening is not this role's problem.
    let _ = writeln!(out, "ROLE {msg}");
    let _ = out.flush();
}

/// SplitMix64.
pub fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The payload of frame `seq`: its sequence number (8 bytes, little
/// endian) and 0 to 191 bytes derived from it.
pub fn payload(seq: u64, buf: &mut Vec<u8>) {
    let n = 8 + (mix(seq) % 192) as usize;
    buf.clear();
    buf.extend_from_slice(&seq.to_le_bytes());
    let mut x = mix(seq ^ 0x5EED);
    while buf.len() < n {
        buf.push(x as u8);
        x = x.rotate_right(8) ^ buf.len() as u64;
    }
}

/// Reads stdin lines on a thread; the flag is set by a line `stop`.
fn stop_on_stdin() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            match line {
                Ok(l) if l.trim() == "stop" => {
                    flag.store(true, Ordering::Release);
                    return;
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    });
    stop
}

fn arg_value(arg: &str, key: &str) -> Option<u64> {
    arg.split(',')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.parse().ok())
}

/// A registered writer of `md` (1 MiB pages) that appends frame after
/// frame, mixing `write`, claim/commit and claims dropped half filled, with
/// `source` = generation `gen`. Prints `ready NEXT_SEQ` once it writes and
/// `at SEQ` every 256 frames (SEQ is published by then); paced by
/// `burst=B,pause_us=P` if given; with `meta=1` its plain writes also set
/// `dest` and `corr` (derived from the sequence number). Stops on a line
/// `stop`, printing `stopped LAST_SEQ`. `refused MESSAGE` and exit 3 when
/// it may not write.
fn seq_writer(root: &Path, arg: &str) {
    let gen = arg_value(arg, "gen").unwrap_or(0);
    let meta = arg_value(arg, "meta").unwrap_or(0) != 0;
    let burst = arg_value(arg, "burst").unwrap_or(0);
    let pause = Duration::from_micros(arg_value(arg, "pause_us").unwrap_or(0));
    let stop = stop_on_stdin();
    let mut w = match Writer::builder("md").root(root).page_size(1 << 20).create() {
        Ok(w) => w,
        Err(e) => {
            say(&format!("refused {e}"));
            std::process::exit(3);
        }
    };
    w.set_source(gen as u32);
    say(&format!("ready {}", w.next_seq()));
    let mut buf = Vec::with_capacity(256);
    let mut n = 0u64;
    while !stop.load(Ordering::Acquire) {
        let seq = w.next_seq();
        payload(seq, &mut buf);
        let got = match mix(seq ^ gen) % 4 {
            0 | 1 if meta => {
                let m = tape_journal::FrameMeta {
                    msg_type: seq as u32,
                    source: gen as u32,
                    dest: mix(seq ^ 0xDE57) as u32,
                    corr: mix(seq ^ 0xC022),
                };
                w.write_meta(&m, &buf).expect("write")
            }
            0 | 1 => w.write(seq as u32, &buf).expect("write"),
            2 => {
                let mut c = w.claim(buf.len()).expect("claim");
                let h = buf.len() / 2;
                c[..h].copy_from_slice(&buf[..h]);
                c[h..].copy_from_slice(&buf[h..]);
                c.commit(seq as u32)
            }
            _ => {
                {
                    let mut c = w.claim(buf.len()).expect("claim");
                    c[..4].fill(0xEE);
                } // dropped: publishes nothing
                w.write(seq as u32, &buf).expect("write")
            }
        };
        assert_eq!(got, seq);
        n += 1;
        if n % 256 == 0 {
            say(&format!("at {seq}"));
        }
        if burst > 0 && n % burst == 0 {
            std::thread::sleep(pause);
        }
    }
    say(&format!("stopped {}", w.next_seq() - 1));
}

/// A registered reader of `md` from its first frame that checks every
/// frame: sequence numbers 1, 2, 3, ... with no gap, payload and checksum
/// as [`payload`] makes them, writer generations that never go back. Prints
/// `ready` once registered and `first` when the first frame came. On a
/// line `end N` it reads up to frame N,
/// makes sure nothing follows and the journal is not stuck at damage, and
/// prints `done COUNT LAST`.
fn check_reader(root: &Path, name: &str) {
    let give_up = Instant::now() + Duration::from_secs(600);
    let mut r = Reader::builder(name)
        .root(root)
        .start(Start::First)
        .service(ServiceMode::Required)
        .verify_crc(true)
        .create()
        .expect("create the reader");
    r.add_journal(tape_journal::journal_dir(root), "md")
        .expect("add md");
    let target = Arc::new(AtomicU64::new(u64::MAX));
    {
        let target = target.clone();
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { return };
                if let Some(n) = line.trim().strip_prefix("end ") {
                    target.store(n.parse().expect("end N"), Ordering::SeqCst);
                }
            }
        });
    }
    say("ready");
    let mut idle = Idle::new();
    let mut last = 0u64;
    let mut gen = 0u32;
    let mut buf = Vec::new();
    let mut quiet = Instant::now();
    loop {
        match r.next().expect("read") {
            Some(f) => {
                idle.reset();
                assert_eq!(
                    f.seq(),
                    last + 1,
                    "{name}: a frame lost, twice or out of order"
                );
                payload(f.seq(), &mut buf);
                assert!(f.payload() == &buf[..], "{name}: frame {} differs", f.seq());
                assert!(
                    f.source() >= gen,
                    "{name}: frame {} from an older writer",
                    f.seq()
                );
                gen = f.source();
                last = f.seq();
                quiet = Instant::now();
                if last == 1 {
                    say("first");
                }
            }
            None => {
                let t = target.load(Ordering::SeqCst);
                if last >= t {
                    break;
                }
                assert!(Instant::now() < give_up, "{name}: gave up at seq {last}");
                if quiet.elapsed() > Duration::from_secs(1) {
                    r.check_stalled()
                        .expect("a quiet journal is not stuck at damage");
                    quiet = Instant::now();
                }
                if idle.is_parking() {
                    // Opens the journal as soon as it appears.
                    r.housekeeping();
                }
                idle.idle();
            }
        }
    }
    for _ in 0..1000 {
        if let Some(f) = r.next().expect("read") {
            panic!("{name}: frame {} after the last one", f.seq());
        }
    }
    r.check_stalled().expect("the end is the live end");
    say(&format!("done {last} {last}"));
}

/// Tries to become the writer of `md` again and again until a line `stop`:
/// prints `attempt N KIND` for each refusal, KIND being `down` (no service
/// to register with), `held` (the service names another writer), `locked`
/// (the journal's lock is held) or `other: MESSAGE`; and `violation` (then
/// writes an INTRUDER frame and exits 4) if it ever may write.
fn intruder(root: &Path) {
    let stop = stop_on_stdin();
    let mut n = 0u64;
    while !stop.load(Ordering::Acquire) {
        n += 1;
        let kind = match Writer::builder("md").root(root).page_size(1 << 20).create() {
            Ok(mut w) => {
                say("violation");
                let _ = w.write(0, b"INTRUDER");
                std::process::exit(4);
            }
            Err(WriterCreateError::Register(tape_service::RegisterError::Held { .. })) => {
                "held".into()
            }
            // No service, or it died while we talked to it.
            Err(WriterCreateError::Register(
                tape_service::RegisterError::Connect(_)
                | tape_service::RegisterError::Query(tape_service::QueryError::Io(_)),
            )) => "down".to_string(),
            Err(WriterCreateError::Open(tape_journal::OpenError::Locked(_))) => "locked".into(),
            Err(e) => format!("other: {e}"),
        };
        say(&format!("attempt {n} {kind}"));
        std::thread::sleep(Duration::from_millis(1));
    }
    say(&format!("stopped {n}"));
}

/// A reader of `md` (no service) that reads `k` frames, prints `holding
/// SEQ`, then waits for a line `go` and reads to the end, printing `done
/// LAST` (every frame from 1 checked).
fn hold_reader(root: &Path, k: u64) {
    let mut r = Reader::builder("holder")
        .root(root)
        .start(Start::First)
        .service(ServiceMode::Never)
        .create()
        .expect("create the reader");
    r.add_journal(tape_journal::journal_dir(root), "md")
        .expect("add md");
    let mut last = 0u64;
    let mut read = |r: &mut Reader, until: u64| {
        while last < until {
            match r.next().expect("read") {
                Some(f) => {
                    assert_eq!(f.seq(), last + 1, "hold-reader: a gap");
                    last = f.seq();
                }
                None => break,
            }
        }
        last
    };
    let held = read(&mut r, k);
    say(&format!("holding {held}"));
    let mut line = String::new();
    loop {
        line.clear();
        if std::io::stdin().lock().read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        if line.trim() == "go" {
            break;
        }
    }
    let last = read(&mut r, u64::MAX);
    say(&format!("done {last}"));
}

/// A registered writer of `md` (1 MiB pages) that ignores SIGXFSZ (so a
/// file size limit shows as EFBIG) and takes commands: `write N` appends N
/// frames ([`payload`]) and prints `wrote LAST`, or stops at the first
/// error and prints `error LAST MESSAGE`.
fn disk_writer(root: &Path) {
    // SAFETY: sets a signal disposition to "ignore"; no handler runs.
    unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
    let mut w = Writer::builder("md")
        .root(root)
        .page_size(1 << 20)
        .create()
        .expect("create the writer");
    say("ready");
    let mut buf = Vec::new();
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { return };
        let Some(n) = line.trim().strip_prefix("write ") else {
            continue;
        };
        let n: u64 = n.parse().expect("write N");
        let mut result = Ok(());
        for _ in 0..n {
            let seq = w.next_seq();
            payload(seq, &mut buf);
            if let Err(e) = w.write(1, &buf) {
                result = Err(e);
                break;
            }
        }
        let last = w.next_seq() - 1;
        match result {
            Ok(()) => say(&format!("wrote {last}")),
            Err(e) => say(&format!("error {last} {e}")),
        }
    }
}

/// Run as another user: tries to connect to the service socket, to
/// register as the writer of `md`, to open `md` for appending and to open
/// its first page for writing, printing `NAME refused MESSAGE` or `NAME
/// allowed` for each.
fn other_user(root: &Path) {
    let report = |what: &str, r: Result<(), String>| match r {
        Ok(()) => say(&format!("{what} allowed")),
        Err(e) => say(&format!("{what} refused {e}")),
    };
    report(
        "connect",
        std::os::unix::net::UnixStream::connect(tape_service::socket_path(root))
            .map(drop)
            .map_err(|e| e.to_string()),
    );
    report(
        "register",
        Writer::builder("md")
            .root(root)
            .create()
            .map(drop)
            .map_err(|e| e.to_string()),
    );
    let dir = tape_journal::journal_dir(root);
    let opts = tape_journal::AppendOptions {
        page_size: 1 << 20,
        background: false,
        ..tape_journal::AppendOptions::default()
    };
    report(
        "append",
        tape_journal::Appender::create(&dir, "md", opts)
            .map(drop)
            .map_err(|e| e.to_string()),
    );
    let page = tape_journal::files::page_path(&dir, "md", 1);
    report(
        "page",
        std::fs::OpenOptions::new()
            .write(true)
            .open(&page)
            .map(drop)
            .map_err(|e| format!("{}: {e}", page.display())),
    );
}
