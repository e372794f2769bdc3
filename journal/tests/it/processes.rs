//! Tests between real processes: a writer process and a reader process, a
//! writer killed at random moments, the writer lock, read-only mappings.

use crate::common::*;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::{Duration, Instant};
use tape_journal::{
    verify, AppendOptions, Appender, Cursor, CursorOptions, LockError, OpenError, Start,
};

const NAME: &str = "md";

/// Opens a cursor at the first frame once the journal exists.
fn open_when_created(dir: &Path, opts: CursorOptions, deadline: &Deadline) -> Cursor {
    loop {
        match Cursor::open(dir, NAME, Start::First, opts) {
            Ok(c) => return c,
            Err(OpenError::NotFound { .. }) => {}
            Err(e) => panic!("cursor open: {e}"),
        }
        deadline.check("the journal to be created");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Checks that `f` is frame `want` exactly as the writers of these tests
/// make it: type, checksum and every payload byte.
fn check_frame(f: &tape_journal::Frame<'_>, want: u64, max: usize, buf: &mut Vec<u8>) {
    assert_eq!(f.seq(), want, "sequence gap or reorder");
    assert_eq!(f.msg_type(), want as u32, "type of frame {want}");
    assert!(f.checksum_ok(), "checksum of frame {want}");
    buf.resize(payload_len(want, max), 0);
    fill_payload(want, buf);
    if f.payload() != &buf[..] {
        let i = (0..buf.len())
            .find(|&i| f.payload()[i] != buf[i])
            .unwrap_or(0);
        let addr = f.payload().as_ptr() as usize + i;
        panic!(
            "payload of frame {want} differs at byte {i} of {} (address {addr:#x}, {} into a 4 KiB page): {:#04x} where {:#04x} was written",
            buf.len(),
            addr % 4096,
            f.payload()[i],
            buf[i]
        );
    }
}

const MILLION: u64 = 1_000_000;
const MIXED_MAX: usize = 300;

/// Child: appends frames 1..=MILLION of mixed sizes, one in three through
/// claim/commit, on 1 MiB pages with the background preparer.
fn million_writer(dir: &Path) {
    let mut app = Appender::create(dir, NAME, background()).expect("writer opens");
    let mut buf = vec![0u8; MIXED_MAX];
    for seq in 1..=MILLION {
        let n = payload_len(seq, MIXED_MAX);
        fill_payload(seq, &mut buf[..n]);
        let got = if seq % 3 == 0 {
            let mut c = app.claim(n).expect("claim");
            c.copy_from_slice(&buf[..n]);
            c.commit(seq as u32)
        } else {
            app.write(seq as u32, &buf[..n]).expect("append")
        };
        assert_eq!(got, seq);
    }
    assert!(
        app.page_switches() > 100,
        "{} switches",
        app.page_switches()
    );
}

/// A writer process appends 1,000,000 frames of 0..=300 bytes over 1 MiB
/// pages while this process reads them concurrently: every frame arrives,
/// in order, seq 1..=N without a gap, its payload byte for byte and its
/// CRC right, across some 190 page switches.
#[test]
fn writer_process_to_reader_process_million_frames() {
    if let Some((role, dir)) = role() {
        assert_eq!(role, "writer");
        return million_writer(&dir);
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let deadline = Deadline::secs(120);
    let mut child = spawn_role(
        "processes::writer_process_to_reader_process_million_frames",
        "writer",
        dir,
    );
    let opts = CursorOptions {
        verify_crc: true,
        populate: false,
    };
    let mut cur = open_when_created(dir, opts, &deadline);
    let mut buf = Vec::new();
    let mut want = 1u64;
    let mut idle = 0u32;
    while want <= MILLION {
        match cur.next().expect("read") {
            Some(f) => {
                check_frame(&f, want, MIXED_MAX, &mut buf);
                want += 1;
                idle = 0;
            }
            None => {
                idle += 1;
                if idle % 64 == 0 {
                    deadline.check("scribbler");
                    if let Some(st) = child.exited() {
                        // The writer is gone: whatever it published is
                        // readable now, so a None here is a lost frame.
                        if cur.next().expect("read").is_none() {
                            panic!("writer exited ({st}) and frame {want} never came");
                        }
                        continue;
                    }
                    std::thread::sleep(Duration::from_micros(100));
                } else {
                    std::thread::yield_now();
                }
            }
        }
    }
    let st = child.wait_until(&deadline);
    assert!(st.success(), "writer failed: {st}");
    assert!(cur.next().unwrap().is_none(), "a frame after the last");
    let report = verify(dir, NAME).expect("verify");
    assert_eq!((report.frames, report.last_seq), (MILLION, MILLION));
    assert!(report.pages > 100);
}

const CRASH_ROUND_FRAMES: u64 = 30_000;
const CRASH_MAX: usize = 200;

/// Child: appends in a tight loop, mixing `append`, claims filled in two
/// steps then committed, and claims abandoned half filled; stops after
/// CRASH_ROUND_FRAMES frames and waits to be killed.
fn crash_writer(dir: &Path) {
    let mut app = Appender::create(dir, NAME, background()).expect("writer opens");
    let limit = app.next_seq() + CRASH_ROUND_FRAMES;
    let mut buf = [0u8; CRASH_MAX];
    loop {
        let seq = app.next_seq();
        if seq >= limit {
            std::thread::sleep(Duration::from_secs(1));
            continue;
        }
        let n = payload_len(seq, CRASH_MAX);
        fill_payload(seq, &mut buf[..n]);
        let got = match mix(seq) >> 62 {
            0 | 1 => app.write(seq as u32, &buf[..n]).expect("append"),
            2 => {
                let mut c = app.claim(n).expect("claim");
                let h = n / 2;
                c[..h].copy_from_slice(&buf[..h]);
                c[h..].copy_from_slice(&buf[h..n]);
                c.commit(seq as u32)
            }
            _ => {
                {
                    let mut c = app.claim(n).expect("claim");
                    c[..n / 2].fill(0xEE);
                } // dropped uncommitted: publishes nothing
                app.write(seq as u32, &buf[..n]).expect("append")
            }
        };
        assert_eq!(got, seq);
    }
}

/// Reads what is published now; returns how many frames it read.
fn drain(cur: &mut Cursor, last: &mut u64, max: usize, buf: &mut Vec<u8>) -> u64 {
    let mut n = 0;
    while let Some(f) = cur.next().expect("read") {
        check_frame(&f, *last + 1, max, buf);
        *last += 1;
        n += 1;
    }
    n
}

/// A writer process appending in a tight loop is killed with SIGKILL at a
/// random moment, 12 times. Meanwhile this process reads. After each kill a
/// new Appender continues the sequence right after the last published frame,
/// the frames read stay unchanged, no garbage frame is ever returned (each
/// frame's payload is a function of its seq), and `verify` passes.
#[test]
fn writer_killed_at_random_moments_recovers() {
    if let Some((role, dir)) = role() {
        assert_eq!(role, "crash-writer");
        return crash_writer(&dir);
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let deadline = Deadline::secs(120);
    let mut rng = 0x1234_5678u64 ^ std::process::id() as u64;
    let mut cur: Option<Cursor> = None;
    let mut last = 0u64;
    let mut buf = Vec::new();
    let opts = CursorOptions {
        verify_crc: true,
        populate: false,
    };
    for round in 0..12 {
        rng = mix(rng);
        let run_for = Duration::from_micros(2_000 + rng % 60_000);
        let mut child = spawn_role(
            "processes::writer_killed_at_random_moments_recovers",
            "crash-writer",
            dir,
        );
        let start = Instant::now();
        // The first round lasts until a frame is read, so that a loaded
        // machine (the child slow to start in every short round) cannot
        // leave the journal empty; later rounds kill it at random moments,
        // start-up included.
        while start.elapsed() < run_for || (round == 0 && last == 0) {
            if cur.is_none() {
                cur = match Cursor::open(dir, NAME, Start::First, opts) {
                    Ok(c) => Some(c),
                    Err(OpenError::NotFound { .. }) => None,
                    Err(e) => panic!("cursor open: {e}"),
                };
            }
            if let Some(c) = cur.as_mut() {
                drain(c, &mut last, CRASH_MAX, &mut buf);
            }
            deadline.check("scribbler");
            std::thread::sleep(Duration::from_micros(200));
        }
        let st = child.kill9();
        assert_eq!(st.signal(), Some(libc::SIGKILL), "round {round}: {st}");
        if let Some(c) = cur.as_mut() {
            drain(c, &mut last, CRASH_MAX, &mut buf);
        }
        let app = Appender::create(dir, NAME, foreground()).expect("reopen after kill");
        assert_eq!(app.next_seq(), last + 1, "round {round}");
        drop(app);
        if cur.is_none() {
            cur = Some(Cursor::open(dir, NAME, Start::First, opts).unwrap());
        }
        // Recovery published nothing.
        assert_eq!(
            drain(cur.as_mut().unwrap(), &mut last, CRASH_MAX, &mut buf),
            0
        );
    }
    assert!(last > 0, "no frame in 12 rounds");
    // Everything read during the rounds reads the same again.
    let mut again = Cursor::open(dir, NAME, Start::First, opts).unwrap();
    let mut n = 0;
    assert_eq!(drain(&mut again, &mut n, CRASH_MAX, &mut buf), last);
    let report = verify(dir, NAME).expect("verify after crashes");
    assert_eq!((report.frames, report.last_seq), (last, last));
}

/// Child: holds the writer lock until killed.
fn lock_holder_child(dir: &Path) {
    let mut app = Appender::create(dir, NAME, foreground()).expect("holder opens");
    app.write(1, b"held").unwrap();
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// A second Appender of a journal that a writer process holds is refused
/// with `OpenError::Locked` naming the holder's pid; once the holder is
/// SIGKILLed, a new appender opens at the first try.
#[test]
fn second_writer_refused_until_holder_killed() {
    if let Some((role, dir)) = role() {
        assert_eq!(role, "holder");
        return lock_holder_child(&dir);
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let deadline = Deadline::secs(30);
    let mut child = spawn_role(
        "processes::second_writer_refused_until_holder_killed",
        "holder",
        dir,
    );
    // The lock is taken before the first frame is written.
    while tape_journal::lock_holder(dir, NAME) != Some(child.pid())
        || tape_journal::stats(dir, NAME).map_or(0, |s| s.frames) == 0
    {
        assert!(child.exited().is_none(), "holder exited");
        deadline.check("scribbler");
        std::thread::sleep(Duration::from_millis(2));
    }
    match Appender::create(dir, NAME, foreground()) {
        Err(OpenError::Locked(LockError::Held { pid, ref path })) => {
            assert_eq!(pid, child.pid());
            assert!(path.starts_with(dir));
            let msg = Appender::create(dir, NAME, foreground())
                .unwrap_err()
                .to_string();
            assert!(msg.contains(&format!("pid {}", child.pid())), "{msg}");
        }
        other => panic!("expected Locked naming pid {}, got {other:?}", child.pid()),
    }
    child.kill9();
    let mut app = Appender::create(dir, NAME, foreground()).expect("free once the holder died");
    assert_eq!(app.next_seq(), 2);
    assert_eq!(app.write(1, b"next").unwrap(), 2);
}

/// Child: writes through the address of a frame a Cursor returned.
fn scribbler(dir: &Path) {
    let mut cur = Cursor::open(dir, NAME, Start::First, CursorOptions::default()).unwrap();
    let f = cur.next().unwrap().expect("a frame");
    let p = f.payload().as_ptr() as *mut u8;
    // SAFETY: deliberately unsound: the mapping is read-only, and this write
    // is expected to kill the process with SIGSEGV.
    unsafe { p.write_volatile(0xAA) };
    eprintln!("wrote through a reader's mapping and survived");
}

/// A reader process that writes through a frame's address dies with
/// SIGSEGV (pages are mapped read-only) and the journal is unchanged.
#[test]
fn reader_cannot_write_the_journal() {
    if let Some((role, dir)) = role() {
        assert_eq!(role, "scribbler");
        return scribbler(&dir);
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    {
        let mut app = Appender::create(dir, NAME, AppendOptions { ..foreground() }).unwrap();
        for i in 0..10u32 {
            app.write(i, format!("frame {i}").as_bytes()).unwrap();
        }
    }
    let before = snapshot(dir);
    let deadline = Deadline::secs(30);
    let mut child = spawn_role(
        "processes::reader_cannot_write_the_journal",
        "scribbler",
        dir,
    );
    let st = child.wait_until(&deadline);
    assert_eq!(st.signal(), Some(libc::SIGSEGV), "child ended with {st}");
    assert!(before == snapshot(dir), "the journal changed");
    assert_eq!(verify(dir, NAME).unwrap().frames, 10);
}
