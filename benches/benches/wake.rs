//! Wake-up latency of a sleeping reader (issue 16): a writer publishes a
//! frame every 200 µs (so a waiting reader is asleep when each comes) and
//! the reader measures publication → its own clock read, three ways in
//! the same run, alternating:
//!
//! - **spin**: the reader busy-polls `Cursor::next` on its own core (the
//!   floor of the box for this pace);
//! - **bell**: the reader sleeps in `Cursor::wait` on the journal's
//!   doorbell (futex), woken by the writer;
//! - **sleep-poll**: the reader polls with 20 µs sleeps (timer slack
//!   1 µs): how tape's waiting readers waited before the doorbell;
//! - **bare-futex**: no journal: the writer stores its clock reading in a
//!   word and `FUTEX_WAKE`s the reader asleep in `FUTEX_WAIT` on another
//!   word (the kernel's and the VM's own cost of a wake-up across cores:
//!   the floor of any sleeping reader here).
//!
//! Writer and reader are threads pinned to cores 0 and 1.
//!
//! `cargo bench -p tape-benches --bench wake` (`WAKE_RUNS`, default 5;
//! `WAKE_FRAMES`, default 20000 per mode and run).

use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tape_benches::{fmt_ns, hist_from, temp_dir, tight_timer_slack, Pcts};
use tape_journal::{clock, AppendOptions, Appender, Cursor, CursorOptions, Start};

const PACE: Duration = Duration::from_micros(200);

#[derive(Clone, Copy, Debug)]
enum Mode {
    Spin,
    Bell,
    SleepPoll,
    BareFutex,
}

fn pin(core: usize) {
    let _ = tape_journal::pin_thread(core);
}

fn futex(word: &AtomicU32, op: i32, val: u32) {
    let ts = libc::timespec {
        tv_sec: 1,
        tv_nsec: 0,
    };
    // SAFETY: FUTEX_WAIT/FUTEX_WAKE (private) on a live aligned u32 of this
    // process, with a timeout that outlives the call.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            op | libc::FUTEX_PRIVATE_FLAG,
            val,
            &ts,
        );
    }
}

fn bare_futex(frames: u64) -> Pcts {
    let word = Arc::new(AtomicU32::new(0));
    let stamp = Arc::new(AtomicI64::new(0));
    let (w2, s2) = (Arc::clone(&word), Arc::clone(&stamp));
    let writer = std::thread::spawn(move || {
        pin(0);
        tight_timer_slack();
        let mut next = Instant::now() + Duration::from_millis(20);
        for _ in 0..frames {
            pace_until(next);
            next += PACE;
            s2.store(clock::now_ns(), Ordering::Release);
            w2.fetch_add(1, Ordering::Release);
            futex(&w2, libc::FUTEX_WAKE, i32::MAX as u32);
        }
    });
    pin(1);
    tight_timer_slack();
    let mut h = hist_from(10);
    let mut seen = 0u32;
    while u64::from(seen) < frames {
        let v = word.load(Ordering::Acquire);
        if v == seen {
            futex(&word, libc::FUTEX_WAIT, v);
            continue;
        }
        let lat = (clock::now_ns() - stamp.load(Ordering::Acquire)).max(1) as u64;
        h.record(lat.min(60_000_000_000)).unwrap();
        seen = v;
    }
    writer.join().unwrap();
    Pcts::of(&h)
}

/// Sleeps most of the way to `next`, spins the last 30 µs: the same pace
/// for every mode, with the writer's core free for the reader's wake-ups.
fn pace_until(next: Instant) {
    let now = Instant::now();
    if next > now + Duration::from_micros(30) {
        std::thread::sleep(next - now - Duration::from_micros(30));
    }
    while Instant::now() < next {
        std::hint::spin_loop();
    }
}

fn run(mode: Mode, frames: u64) -> Pcts {
    if let Mode::BareFutex = mode {
        return bare_futex(frames);
    }
    let dir = temp_dir();
    let opts = AppendOptions {
        page_size: 64 << 20,
        ..AppendOptions::default()
    };
    let mut a = Appender::create(dir.path(), "wake", opts).unwrap();
    a.write(0, &[0u8; 64]).unwrap();
    let mut c = Cursor::open(dir.path(), "wake", Start::Seq(2), CursorOptions::default()).unwrap();
    let writer = std::thread::spawn(move || {
        pin(0);
        tight_timer_slack();
        let mut next = Instant::now() + Duration::from_millis(20);
        for _ in 0..frames {
            pace_until(next);
            next += PACE;
            a.write(1, &[7u8; 64]).unwrap();
        }
        a
    });
    pin(1);
    tight_timer_slack();
    let mut h = hist_from(10);
    let mut seen = 0;
    while seen < frames {
        if let Some(f) = c.next().unwrap() {
            let lat = (clock::now_ns() - f.time_ns()).max(1) as u64;
            h.record(lat.min(60_000_000_000)).unwrap();
            seen += 1;
            continue;
        }
        match mode {
            Mode::Spin => std::hint::spin_loop(),
            Mode::Bell => {
                c.wait(Duration::from_secs(1));
            }
            Mode::SleepPoll => std::thread::sleep(Duration::from_micros(20)),
            Mode::BareFutex => unreachable!("no journal"),
        }
    }
    drop(writer.join().unwrap());
    Pcts::of(&h)
}

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

fn main() {
    let runs: usize = std::env::var("WAKE_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let frames: u64 = std::env::var("WAKE_FRAMES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let modes = [Mode::Spin, Mode::Bell, Mode::SleepPoll, Mode::BareFutex];
    let mut p50 = vec![Vec::new(); modes.len()];
    let mut p99 = vec![Vec::new(); modes.len()];
    for r in 1..=runs {
        let mut line = format!("run {r}:");
        for (i, m) in modes.iter().enumerate() {
            let p = run(*m, frames);
            line += &format!(" {m:?} p50 {} p99 {} |", fmt_ns(p.p50), fmt_ns(p.p99));
            p50[i].push(p.p50);
            p99[i].push(p.p99);
        }
        println!("{}", line.trim_end_matches(" |"));
    }
    let mut line = format!(
        "median of {runs} ({frames} frames every {} µs):",
        PACE.as_micros()
    );
    for (i, m) in modes.iter().enumerate() {
        line += &format!(
            " {m:?} p50 {} p99 {} |",
            fmt_ns(median(p50[i].clone())),
            fmt_ns(median(p99[i].clone()))
        );
    }
    println!("{}", line.trim_end_matches(" |"));
}
