//! The bench's child processes: the same binary re-executed with a hidden
//! `--role-spec`, one role each.

use super::ctl::{Ctl, Line};
use super::floors;
use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tape_journal::clock::now_ns;
use tape_reader::{Idle, Reader, Start};
use tape_writer::Writer;

/// What a child process does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    /// Stores its clock into one cache line at the pace.
    FloorWriter,
    /// Polls that cache line.
    FloorReader,
    /// Appends frames through a `Writer`.
    Writer,
    /// Reads them through a `Reader`.
    Reader,
    /// Ping-pong floor, the side that times the round trips.
    PingFloorA,
    /// Ping-pong floor, the side that answers.
    PingFloorB,
    /// tape ping-pong: writes `journal`, reads `journal2`, times each round trip.
    PingA,
    /// tape ping-pong: reads `journal`, answers on `journal2`.
    PingB,
    /// Ring floor writer.
    RingWriter,
    /// Ring floor reader.
    RingReader,
    /// Stream floor writer.
    StreamWriter,
    /// Stream floor reader.
    StreamReader,
}

/// Everything a child needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Role {
    /// What it does.
    pub kind: Kind,
    /// Control block file.
    pub ctl: PathBuf,
    /// Root of the service and journals.
    pub root: PathBuf,
    /// Journal name.
    pub journal: String,
    /// Frames to write or read.
    pub frames: u64,
    /// Payload bytes.
    pub size: usize,
    /// Frames per second, 0 = as fast as possible.
    pub rate: u64,
    /// Page size.
    pub page_size: u64,
    /// Core to pin the main thread to.
    pub core: Option<usize>,
    /// Core to pin helper threads to.
    pub helper_core: Option<usize>,
    /// Use an idle strategy when there is nothing to read.
    pub idle: bool,
    /// Processes that must be ready before the writer starts.
    pub parties: i64,
    /// Record per-frame latency.
    pub latency: bool,
    /// Reader index.
    pub index: usize,
    /// Pages the writer makes ahead before it says it is ready.
    pub pages_ahead: u32,
    /// Ping-pong: the journal the answers come back on.
    #[serde(default)]
    pub journal2: String,
    /// Ring and stream floors: their shared file.
    #[serde(default)]
    pub shm: PathBuf,
}

/// What a child reports on its standard output (one JSON line).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Report {
    /// Frames written or received.
    pub frames: u64,
    /// Frames the reader expected but did not get.
    pub lost: u64,
    /// Clock when the writer began / the reader got its first frame.
    pub start_ns: i64,
    /// Clock when the writer ended / the reader got its last frame.
    pub end_ns: i64,
    /// Page switches the writer made.
    pub page_switches: u64,
    /// Worst latency of the frames around a page switch.
    pub switch_max_ns: u64,
    /// Latency of the first frame of each page after the first.
    #[serde(default)]
    pub switch_first_ns: Vec<u64>,
    /// Latency histogram as (value, count) pairs.
    pub hist: Vec<(u64, u64)>,
    /// Floor only: the histogram with the samples the reader missed counted
    /// at their estimated latency (`hist` has only those it saw).
    #[serde(default)]
    pub hist_queued: Vec<(u64, u64)>,
    /// Sequence number of the slowest frame (latency phase).
    pub max_seq: u64,
}

/// Runs one role to completion and prints its report.
pub fn run(spec: &str) -> Result<()> {
    let role: Role = serde_json::from_str(spec).context("bad --role-spec")?;
    // Threads started while setting up (service lease, page helpers)
    // inherit this: they belong on the helper core, the main thread on its
    // own core (pinned once set up).
    if let Some(c) = role.helper_core.or(role.core) {
        tape_journal::pin_thread(c).with_context(|| format!("cannot pin to core {c}"))?;
    }
    let ctl = Ctl::open(&role.ctl, false)?;
    let pin = || -> Result<()> {
        if let Some(c) = role.core {
            tape_journal::pin_thread(c).with_context(|| format!("cannot pin to core {c}"))?;
        }
        Ok(())
    };
    let report = match role.kind {
        Kind::FloorWriter => floor_writer(&role, &ctl, pin)?,
        Kind::FloorReader => floor_reader(&role, &ctl, pin)?,
        Kind::Writer => writer(&role, &ctl, pin)?,
        Kind::Reader => reader(&role, &ctl, pin)?,
        Kind::PingFloorA => floors::ping_floor_a(&role, &ctl, pin)?,
        Kind::PingFloorB => floors::ping_floor_b(&role, &ctl, pin)?,
        Kind::PingA => ping(&role, &ctl, pin, true)?,
        Kind::PingB => ping(&role, &ctl, pin, false)?,
        Kind::RingWriter => floors::ring_writer(&role, &ctl, pin)?,
        Kind::RingReader => floors::ring_reader(&role, &ctl, pin)?,
        Kind::StreamWriter => floors::stream_writer(&role, &ctl, pin)?,
        Kind::StreamReader => floors::stream_reader(&role, &ctl, pin)?,
    };
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

pub(super) fn deadline() -> Instant {
    Instant::now() + Duration::from_secs(60)
}

/// Calls `f(i)` for i in 0..n at `rate` per second (as fast as possible
/// when 0), spinning between calls; never bursts to catch up.
#[inline(always)]
fn paced(n: u64, rate: u64, ctl: &Ctl, mut f: impl FnMut(u64) -> Result<()>) -> Result<()> {
    let period = if rate == 0 {
        0
    } else {
        1_000_000_000 / rate as i64
    };
    let mut next = now_ns();
    for i in 0..n {
        if period > 0 {
            let mut now = now_ns();
            while now < next {
                std::hint::spin_loop();
                now = now_ns();
            }
            next = (next + period).max(now);
        }
        f(i)?;
        if i & 0xffff == 0 {
            ctl.set(Line::Progress, i as i64);
        }
    }
    Ok(())
}

/// Runs `write` for every frame of the role at its pace, then tells the
/// readers it is done; the report has the frame count and the times.
fn write_all(role: &Role, ctl: &Ctl, mut write: impl FnMut() -> Result<()>) -> Result<Report> {
    let start = now_ns();
    paced(role.frames, role.rate, ctl, |_| write())?;
    let end = now_ns();
    ctl.set(Line::Done, 1);
    Ok(Report {
        frames: role.frames,
        start_ns: start,
        end_ns: end,
        ..Report::default()
    })
}

/// The floor's cache line holds one word: the sample's index in the top
/// 24 bits and the low 40 bits of its clock reading (18 minutes of
/// nanoseconds, far more than any latency), stored at once.
const FLOOR_TIME_BITS: u32 = 40;
const FLOOR_TIME_MASK: u64 = (1 << FLOOR_TIME_BITS) - 1;
const FLOOR_INDEX_MASK: u64 = (1 << (64 - FLOOR_TIME_BITS)) - 1;

fn floor_writer(role: &Role, ctl: &Ctl, pin: impl Fn() -> Result<()>) -> Result<Report> {
    pin()?;
    ctl.wait_at_least(Line::Ready, role.parties, deadline())?;
    let mut index = 0u64;
    write_all(role, ctl, || {
        index += 1;
        let word =
            (index & FLOOR_INDEX_MASK) << FLOOR_TIME_BITS | (now_ns() as u64 & FLOOR_TIME_MASK);
        ctl.set(Line::Floor, word as i64);
        Ok(())
    })
}

/// Polls the floor's line. A sample overwritten before the reader saw it
/// (the reader was off its core) is not dropped: it is counted at the
/// latency a queue would have given it, its write time estimated between
/// the samples seen before and after it (the writer is paced evenly), so
/// that the floor and tape's latency count the same frames.
fn floor_reader(role: &Role, ctl: &Ctl, pin: impl Fn() -> Result<()>) -> Result<Report> {
    pin()?;
    // Touched before the clock starts, as the tape reader's is: a page
    // fault while measuring would count against the floor.
    let mut lat = vec![0u64; role.frames as usize];
    lat.clear();
    let mut seen_lat = vec![0u64; role.frames as usize];
    seen_lat.clear();
    let line = ctl.line(Line::Floor);
    let mut last = line.load(std::sync::atomic::Ordering::Acquire);
    let mut seen: Option<(u64, i64)> = None;
    let mut missed = 0u64;
    let mut writer_done = false;
    let period = 1_000_000_000 / role.rate.max(1) as i64;
    ctl.line(Line::Ready)
        .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    let mut idle = Idle::new();
    let debug = std::env::var_os("JOURNAL_BENCH_DEBUG").is_some();
    let mut last_poll = now_ns();
    while (lat.len() as u64) < role.frames {
        if debug {
            let t = now_ns();
            if t - last_poll > 50_000 {
                eprintln!("floor stall {} us", (t - last_poll) / 1000);
            }
            last_poll = t;
        }
        let v = line.load(std::sync::atomic::Ordering::Acquire);
        if v != last {
            let now = now_ns();
            last = v;
            let word = v as u64;
            let index = word >> FLOOR_TIME_BITS;
            // Sign-extended: the writer's clock may read a few ns ahead.
            let delta = (now as u64).wrapping_sub(word) & FLOOR_TIME_MASK;
            let age = ((delta << (64 - FLOOR_TIME_BITS)) as i64) >> (64 - FLOOR_TIME_BITS);
            let written = now - age;
            let age = age.max(0) as u64;
            // Before the first sample seen there is no earlier one: the
            // missed ones are placed back from it at the pace.
            let (prev_index, prev_written) = seen.unwrap_or((0, written - index as i64 * period));
            let gap = index.wrapping_sub(prev_index).wrapping_sub(1) & FLOOR_INDEX_MASK;
            let step = (written - prev_written) / (gap as i64 + 1);
            for k in 1..=gap as i64 {
                lat.push((now - (prev_written + k * step)).max(0) as u64);
            }
            missed += gap;
            seen = Some((index, written));
            lat.push(age);
            seen_lat.push(age);
            idle.reset();
        } else if writer_done {
            // Done was seen before this look at the line: it is final.
            break;
        } else {
            writer_done = ctl.get(Line::Done) != 0;
            if role.idle {
                idle.idle();
            } else {
                std::hint::spin_loop();
            }
        }
    }
    Ok(Report {
        frames: lat.len() as u64,
        lost: missed,
        hist: histogram(seen_lat.iter().copied())?,
        hist_queued: histogram(lat.iter().copied())?,
        ..Report::default()
    })
}

/// The role's writer on `journal`, its pages made ahead before it returns
/// (as a trading box makes the day's pages at start-up).
fn open_writer(role: &Role, journal: &str) -> Result<Writer> {
    let w = Writer::builder(journal)
        .root(&role.root)
        .page_size(role.page_size)
        .helper_core(role.helper_core)
        .pages_ahead(role.pages_ahead)
        .create()?;
    if w.wait_pages_ready(Duration::from_secs(300)) < role.pages_ahead as usize {
        anyhow::bail!(
            "the writer could not make {} pages ahead in time",
            role.pages_ahead
        );
    }
    Ok(w)
}

fn writer(role: &Role, ctl: &Ctl, _pin: impl Fn() -> Result<()>) -> Result<Report> {
    let mut w = open_writer(role, &role.journal)?;
    ctl.line(Line::Ready)
        .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    ctl.wait_at_least(Line::Ready, role.parties, deadline())?;
    let payload = vec![0x5au8; role.size];
    let report = write_all(role, ctl, || {
        w.write(1, &payload)?;
        Ok(())
    })?;
    Ok(Report {
        page_switches: w.appender().page_switches(),
        ..report
    })
}

/// tape ping-pong over two journals, one process at each end, each
/// spinning on its own core. Side A writes frame `i` on `journal` and
/// spins until frame `i` comes back on `journal2` (RTT/2 recorded); side
/// B spins on `journal` and writes each frame's answer on `journal2`.
fn ping(role: &Role, ctl: &Ctl, pin: impl Fn() -> Result<()>, a: bool) -> Result<Report> {
    let (out, back) = if a {
        (&role.journal, &role.journal2)
    } else {
        (&role.journal2, &role.journal)
    };
    let mut w = open_writer(role, out)?;
    // Both journals exist once both sides have their writer.
    let ready = ctl.line(Line::Ready);
    ready.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    ctl.wait_at_least(Line::Ready, role.parties, deadline())?;
    let dir = tape_journal::journal_dir(&role.root);
    let mut r = Reader::builder(&format!("bench-ping-{}", if a { "a" } else { "b" }))
        .root(&role.root)
        .start(Start::First)
        .helper_core(role.helper_core)
        .create()?;
    r.add_journal(&dir, back)?;
    pin()?;
    let n = role.frames;
    let mut lat = vec![0u64; if a { n as usize } else { 0 }];
    lat.clear();
    let payload = vec![0x5au8; role.size];
    ready.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    ctl.wait_at_least(Line::Ready, 2 * role.parties, deadline())?;
    let mut take = |i: u64| -> Result<()> {
        loop {
            if let Some(f) = r.next()? {
                anyhow::ensure!(
                    f.seq() == i,
                    "ping-pong: seq {} where {i} was expected",
                    f.seq()
                );
                return Ok(());
            }
            floors::pause(role);
        }
    };
    for i in 1..=n {
        if a {
            let t0 = now_ns();
            w.write(1, &payload)?;
            take(i)?;
            lat.push(((now_ns() - t0) / 2).max(0) as u64);
        } else {
            take(i)?;
            w.write(1, &payload)?;
        }
    }
    Ok(Report {
        frames: n,
        page_switches: w.appender().page_switches(),
        hist: histogram(lat.into_iter())?,
        ..Report::default()
    })
}

fn reader(role: &Role, ctl: &Ctl, pin: impl Fn() -> Result<()>) -> Result<Report> {
    let dir = tape_journal::journal_dir(&role.root);
    let mut r = Reader::builder(&format!("bench-reader-{}", role.index))
        .root(&role.root)
        .start(Start::First)
        .helper_core(role.helper_core)
        .background(std::env::var_os("JOURNAL_BENCH_NOHELPER").is_none())
        .create()?;
    r.add_journal(&dir, &role.journal)?;
    pin()?;
    let n = role.frames as usize;
    let mut lat: Vec<u32> = if role.latency {
        vec![u32::MAX; n]
    } else {
        Vec::new()
    };
    let mut expected = 1u64;
    let mut received = 0u64;
    let mut start = 0i64;
    // Readers beyond the cores share the readers' core: a short spin, then
    // yields (a spin would hold the core from the other readers for the
    // rest of its slice: p50 0.37 ms with 200 spins, 7 µs with yields),
    // then the doorbell once the journal is quiet for AWAKE.
    let mut idle = if role.idle {
        Idle::awake(16, tape_reader::AWAKE)
    } else {
        Idle::new()
    };
    let mut writer_done = false;
    let debug = std::env::var_os("JOURNAL_BENCH_DEBUG").is_some();
    let mut stalls: Vec<(i64, i64)> = Vec::with_capacity(1 << 16);
    let mut last_poll = now_ns();
    ctl.line(Line::Ready)
        .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    loop {
        if debug {
            let t = now_ns();
            if t - last_poll > 50_000 && stalls.len() < stalls.capacity() {
                stalls.push((last_poll, t - last_poll));
            }
            last_poll = t;
        }
        match r.next()? {
            Some(f) => {
                let seq = f.seq();
                if role.latency {
                    let now = now_ns();
                    if let Some(slot) = lat.get_mut(seq as usize - 1) {
                        *slot = (now - f.time_ns()).clamp(0, u32::MAX as i64 - 1) as u32;
                    }
                } else if received == 0 {
                    start = now_ns();
                }
                if seq != expected {
                    anyhow::bail!(
                        "reader {}: seq {seq} where {expected} was expected",
                        role.index
                    );
                }
                expected = seq + 1;
                received += 1;
                if received == role.frames {
                    break;
                }
                idle.reset();
            }
            None => {
                // Done was seen before this empty poll: nothing more comes.
                if writer_done {
                    break;
                }
                writer_done = ctl.get(Line::Done) != 0;
                if role.idle {
                    // More processes than cores: spin and yield a little,
                    // then sleep on the journal's doorbell until the next
                    // frame (the writer rings only while one sleeps).
                    if idle.is_parking() {
                        r.wait(std::time::Duration::from_millis(10));
                        idle.reset();
                    } else {
                        idle.idle();
                    }
                } else {
                    // As the floor's reader does: a busy spin, with the
                    // pause hint between looks.
                    std::hint::spin_loop();
                }
            }
        }
    }
    let end = now_ns();
    let mut report = Report {
        frames: received,
        lost: role.frames - received,
        start_ns: start,
        end_ns: end,
        ..Report::default()
    };
    if debug {
        let starts = tape_journal::page_starts(&dir, &role.journal)?;
        for (at, len) in &stalls {
            let near = starts
                .iter()
                .filter_map(|(no, f)| f.map(|(_, t)| (no, (at - t) / 1000)))
                .min_by_key(|(_, d)| d.abs());
            eprintln!(
                "stall {} us at {} (nearest page start {:?} us)",
                len / 1000,
                at,
                near
            );
        }
    }
    if role.latency {
        report.hist = histogram(lat.iter().filter(|&&v| v != u32::MAX).map(|&v| v as u64))?;
        report.max_seq = lat
            .iter()
            .enumerate()
            .filter(|(_, &v)| v != u32::MAX)
            .max_by_key(|(_, &v)| v)
            .map_or(0, |(i, _)| i as u64 + 1);
        // The frames around each page switch: the last two of a page and
        // the first 32 of the next.
        for (_, first) in tape_journal::page_starts(&dir, &role.journal)?
            .iter()
            .skip(1)
        {
            if let Some((s, _)) = *first {
                if let Some(&v) = lat.get(s as usize - 1).filter(|&&v| v != u32::MAX) {
                    report.switch_first_ns.push(v as u64);
                }
                let lo = (s as usize).saturating_sub(3);
                let hi = (s as usize + 31).min(n);
                if debug {
                    let v: Vec<u32> = lat.get(lo..hi).unwrap_or(&[]).to_vec();
                    eprintln!("switch at seq {s}: {:?}", v);
                }
                for &v in lat.get(lo..hi).unwrap_or(&[]) {
                    if v != u32::MAX {
                        report.switch_max_ns = report.switch_max_ns.max(v as u64);
                    }
                }
            }
        }
    }
    Ok(report)
}

/// A latency histogram as (value, count) pairs.
pub(super) fn histogram(values: impl Iterator<Item = u64>) -> Result<Vec<(u64, u64)>> {
    let mut h = Histogram::<u64>::new_with_bounds(1, 3_600_000_000_000, 3)?;
    for v in values {
        h.saturating_record(v.max(1));
    }
    Ok(h.iter_recorded()
        .map(|v| (v.value_iterated_to(), v.count_at_value()))
        .collect())
}
