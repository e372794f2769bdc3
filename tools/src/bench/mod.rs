//! `journal-bench`: one-way latency and throughput of tape between
//! processes, beside the floor of the same box measured in the same run.
//!
//! The coordinator (this module) starts a service on a temporary root
//! (tmpfs when the box has one), then runs the phases, each with fresh
//! processes of this same binary in a hidden role (see [`roles`]):
//!
//! 1. **floor**: a writer process stores its clock reading into one cache
//!    line of a shared mapping at the pace; a reader process polls it and
//!    subtracts it from its own clock. One cache-line transfer plus one
//!    clock read: nothing can do better on this box. Samples the reader
//!    missed (it was off its core) are reported apart (`floor_queued`).
//! 2. **latency**: a `Writer` appends frames at the pace (`--rate`); each
//!    `Reader` records, for every frame, its clock at receipt minus the
//!    frame's write time. Floor and latency alternate in ten rounds, so
//!    both see the same host conditions.
//! 3. **throughput**: the writer appends `--frames` frames as fast as it
//!    can; each reader checks every sequence number.
//!
//! The writer runs on the first core, the first reader on the second. The
//! writer makes the pages a phase needs before the phase starts
//! (`--pages-ahead`), as a trading box makes the day's pages at start-up.
//! The helper threads (page preparer, page mapper) run on the writer's core
//! while frames are paced, so they never preempt a pinned reader; in the
//! throughput phase the reader's page mapper runs on the reader's core,
//! which has time to spare, instead of taking the writer's. Readers beyond the cores there are
//! use an idle strategy (spin, yield, park), and so do all readers then.

pub mod ctl;
mod floors;
mod phases;
mod plot;
pub mod roles;

pub use phases::run;

use anyhow::{bail, Context, Result};
use ctl::{Ctl, Line};
use hdrhistogram::Histogram;
use roles::{Report, Role};
use serde::Serialize;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Options of a run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Frames in the throughput phase.
    pub frames: u64,
    /// Payload bytes per frame.
    pub size: usize,
    /// Pace of the floor and latency phases, frames per second.
    pub rate: u64,
    /// Seconds the floor and latency phases each last.
    pub latency_secs: f64,
    /// Round trips of the ping-pong phase (floor and tape each).
    pub pingpong: u64,
    /// Reader processes.
    pub readers: usize,
    /// Page size of the bench journals.
    pub page_size: u64,
    /// Pages made ahead before a phase starts (`None`: what it needs).
    pub pages_ahead: Option<u32>,
    /// An existing root with a running service, instead of a temporary one.
    pub root: Option<PathBuf>,
    /// Print progress on standard error.
    pub progress: bool,
}

/// Percentiles of a latency distribution.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50_ns: u64,
    /// 99th percentile.
    pub p99_ns: u64,
    /// 99.9th percentile.
    pub p999_ns: u64,
    /// 99.99th percentile.
    pub p9999_ns: u64,
    /// Largest.
    pub max_ns: u64,
    /// Samples.
    pub count: u64,
}

/// The result of a run; `--json` prints it (the keys DESIGN.md fixes
/// first, more after).
#[derive(Debug, Clone, Serialize)]
pub struct Results {
    /// Frames in the throughput phase.
    pub frames: u64,
    /// Payload bytes per frame.
    pub size: usize,
    /// Latency median.
    pub p50_ns: u64,
    /// Latency 99th percentile.
    pub p99_ns: u64,
    /// Latency 99.9th percentile.
    pub p999_ns: u64,
    /// Largest latency.
    pub max_ns: u64,
    /// Throughput phase: frames per second delivered to the slowest reader.
    pub throughput_fps: f64,
    /// Frames some reader did not get, both phases (must be 0).
    pub lost: u64,
    /// Page switches the writer made, both phases.
    pub page_switches: u64,
    /// Worst latency of the frames around a page switch (the last two of
    /// a page and the first 32 of the next, latency phase).
    pub switch_max_ns: u64,
    /// Median latency of the first frame of a page (latency phase): what a
    /// page switch itself costs, apart from whatever else lands in the
    /// window of `switch_max_ns`.
    pub switch_first_p50_ns: u64,
    /// Floor median.
    pub floor_ns: u64,
    /// Floor 99th percentile.
    pub floor_p99_ns: u64,
    /// Ping-pong over two journals, RTT/2: median.
    pub pingpong_p50_ns: u64,
    /// Ping-pong RTT/2, 99th percentile.
    pub pingpong_p99_ns: u64,
    /// Ping-pong RTT/2, 99.9th percentile.
    pub pingpong_p999_ns: u64,
    /// Ping-pong floor (one cache line each way), RTT/2: median.
    pub pingpong_floor_p50_ns: u64,
    /// Ping-pong floor RTT/2, 99th percentile.
    pub pingpong_floor_p99_ns: u64,
    /// Ping-pong floor RTT/2, 99.9th percentile.
    pub pingpong_floor_p999_ns: u64,
    /// Ring floor: a naive SPSC ring of 64-byte slots between the same two
    /// cores, slots per second.
    pub ring_fps: f64,
    /// Stream floor: records of the bytes tape writes per frame, in
    /// sequence into fresh pre-faulted memory, records per second.
    pub stream_fps: f64,
    /// Floor 99.9th percentile.
    pub floor_p999_ns: u64,
    /// Floor largest.
    pub floor_max_ns: u64,
    /// Floor samples the polling reader did not see (overwritten while it
    /// was off its core). The floor's percentiles are over the samples it
    /// saw, as the floor is defined; `floor_queued` counts the missed ones
    /// too, each at its latency estimated from the pace, as a queue (and
    /// tape) would have delivered it.
    pub floor_missed: u64,
    /// `floor_missed` as a share of the floor's samples, in percent: about
    /// the share of the time the reader's core was taken from it (by the
    /// kernel or the host) for longer than the pace. Frames written
    /// meanwhile wait in any queue: above 1 %, tape's p99 (and any queue's)
    /// is set by those pauses, not by the hot path.
    pub floor_missed_pct: f64,
    /// Pages made ahead before the throughput phase.
    pub pages_ahead: u32,
    /// Throughput phase: payload bytes per second.
    pub throughput_bytes_per_sec: f64,
    /// Throughput phase: frames per second the writer appended.
    pub writer_fps: f64,
    /// Pace of the floor and latency phases.
    pub rate: u64,
    /// Frames in the latency phase.
    pub latency_frames: u64,
    /// Reader processes.
    pub readers: usize,
    /// Page size.
    pub page_size: u64,
    /// Cores the box lets this process use.
    pub cores: usize,
    /// Whether readers used the idle strategy (more processes than cores).
    pub idle_readers: bool,
    /// Latency distribution, all readers.
    pub latency: Percentiles,
    /// Floor distribution (samples seen).
    pub floor: Percentiles,
    /// Floor distribution counting the samples missed (see `floor_missed`).
    pub floor_queued: Percentiles,
    /// Records of the stream floor (the throughput phase's frames, within
    /// 8 GiB and half the free memory).
    pub stream_frames: u64,
    /// Round trips of the ping-pong phase, floor and tape each.
    pub pingpong_round_trips: u64,
    /// Ping-pong RTT/2 distribution.
    pub pingpong: Percentiles,
    /// Ping-pong floor RTT/2 distribution.
    pub pingpong_floor: Percentiles,
    #[serde(skip)]
    hist_latency: Option<Histogram<u64>>,
    #[serde(skip)]
    hist_floor: Option<Histogram<u64>>,
}

impl Results {
    /// Writes the SVG plot of both percentile distributions.
    pub fn plot(&self, path: &Path) -> Result<()> {
        let (Some(l), Some(f)) = (&self.hist_latency, &self.hist_floor) else {
            bail!("no distributions to plot");
        };
        plot::percentiles(
            path,
            &[("tape one-way latency", l), ("floor (one cache line)", f)],
        )
    }
}

/// Kills the child processes still running when dropped.
struct Children(Vec<(String, Child)>);

impl Drop for Children {
    fn drop(&mut self) {
        for (_, c) in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Children {
    fn spawn(&mut self, what: &str, role: &Role) -> Result<()> {
        let exe = std::env::current_exe()?;
        let child = Command::new(exe)
            .arg("--role-spec")
            .arg(serde_json::to_string(role)?)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("cannot start the {what} process"))?;
        self.0.push((what.to_string(), child));
        Ok(())
    }

    /// Waits for every child and parses its report.
    fn reports(&mut self) -> Result<Vec<Report>> {
        let mut out = Vec::new();
        for (what, mut c) in self.0.drain(..) {
            let mut line = String::new();
            if let Some(s) = c.stdout.take() {
                BufReader::new(s).read_line(&mut line)?;
            }
            let status = c.wait()?;
            if !status.success() {
                bail!("the {what} process failed ({status})");
            }
            out.push(
                serde_json::from_str(&line)
                    .with_context(|| format!("the {what} process sent no report"))?,
            );
        }
        Ok(out)
    }
}

fn merge(reports: &[Report]) -> Result<Histogram<u64>> {
    let mut h = Histogram::<u64>::new_with_bounds(1, 3_600_000_000_000, 3)?;
    for r in reports {
        for &(v, n) in &r.hist {
            h.record_n(v, n)?;
        }
    }
    Ok(h)
}

fn percentiles(h: &Histogram<u64>) -> Percentiles {
    Percentiles {
        p50_ns: h.value_at_quantile(0.50),
        p99_ns: h.value_at_quantile(0.99),
        p999_ns: h.value_at_quantile(0.999),
        p9999_ns: h.value_at_quantile(0.9999),
        max_ns: h.max(),
        count: h.len(),
    }
}

/// The root of a run: a temporary one with its own in-process service, or
/// the one given.
struct Root {
    path: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    _service: Option<tape_service::Service>,
}

fn make_root(given: Option<&Path>) -> Result<Root> {
    if let Some(p) = given {
        tape_service::Client::connect(p)?;
        return Ok(Root {
            path: p.to_path_buf(),
            _tmp: None,
            _service: None,
        });
    }
    let shm = Path::new("/dev/shm");
    let tmp = if shm.is_dir() {
        tempfile::Builder::new()
            .prefix("journal-bench-")
            .tempdir_in(shm)?
    } else {
        tempfile::Builder::new()
            .prefix("journal-bench-")
            .tempdir()?
    };
    let service = tape_service::Service::start(tmp.path())?;
    Ok(Root {
        path: tmp.path().to_path_buf(),
        _tmp: Some(tmp),
        _service: Some(service),
    })
}

fn progress(cfg: &Config, msg: &str) {
    if cfg.progress {
        eprintln!("journal-bench: {msg}");
    }
}

/// Waits for the writer of a phase, printing its progress.
fn watch(cfg: &Config, ctl: &Ctl, what: &str, frames: u64) {
    if !cfg.progress {
        return;
    }
    let mut last = Instant::now();
    while ctl.get(Line::Done) == 0 {
        std::thread::sleep(Duration::from_millis(50));
        if last.elapsed() >= Duration::from_secs(1) {
            last = Instant::now();
            let done = ctl.get(Line::Progress) as f64 / frames.max(1) as f64;
            eprintln!("journal-bench: {what}: {:.0}%", done * 100.0);
        }
    }
}

/// Pages to make ahead for a phase of `frames` frames: `--pages-ahead`, else
/// every page past the first that the phase fills, within 8 GiB and half of
/// the memory available. Pages grow from 1 MiB to `--page-size` (FORMAT.md,
/// "Page sizes"), so each page's own size counts.
fn pages_ahead(cfg: &Config, frames: u64) -> u32 {
    if let Some(n) = cfg.pages_ahead {
        return n.max(1);
    }
    use tape_journal::format::{
        align_frame, Geometry, END_MARKER_ROOM, FRAME_HEADER_LEN, PAGE_HEADER_LEN,
    };
    let frame = align_frame(FRAME_HEADER_LEN + cfg.size) as u64;
    let geo = Geometry::new(cfg.page_size);
    let budget = (8u64 << 30).min(mem_available() / 2);
    let (mut size, mut left, mut bytes, mut pages) = (geo.first_page_size(), frames, 0u64, 0u64);
    while left > 0 {
        let per_page = ((size - (PAGE_HEADER_LEN + END_MARKER_ROOM) as u64) / frame).max(1);
        left = left.saturating_sub(per_page);
        size = geo.next_page_size(size);
        // The page after this one, made ahead.
        if bytes + size > budget {
            break;
        }
        bytes += size;
        pages += 1;
    }
    pages.clamp(1, u32::MAX as u64) as u32
}

/// MemAvailable of /proc/meminfo in bytes (0 when unknown).
fn mem_available() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("MemAvailable:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// Nanoseconds in a readable unit.
pub fn ns(v: u64) -> String {
    match v {
        0..=9_999 => format!("{v} ns"),
        10_000..=9_999_999 => format!("{:.1} µs", v as f64 / 1e3),
        _ => format!("{:.1} ms", v as f64 / 1e6),
    }
}

/// The human-readable report.
pub fn text(r: &Results) -> String {
    let ratio = |a: u64, b: u64| a as f64 / b.max(1) as f64;
    let mut s = String::new();
    use std::fmt::Write;
    let _ = writeln!(
        s,
        "journal-bench: 1 writer, {} reader(s), {}-byte payloads, pages growing to {} bytes, {} cores{}",
        r.readers,
        r.size,
        r.page_size,
        r.cores,
        if r.idle_readers {
            ", readers idle-poll"
        } else {
            ""
        }
    );
    let _ = writeln!(
        s,
        "                    p50        p99      p99.9    p99.99        max"
    );
    for (name, p) in [
        ("floor", &r.floor),
        ("floor queued", &r.floor_queued),
        ("tape latency", &r.latency),
    ] {
        let _ = writeln!(
            s,
            "{name:<14} {:>9} {:>10} {:>10} {:>9} {:>10}",
            ns(p.p50_ns),
            ns(p.p99_ns),
            ns(p.p999_ns),
            ns(p.p9999_ns),
            ns(p.max_ns)
        );
    }
    let _ = writeln!(
        s,
        "tape / floor   {:>8.2}x {:>9.2}x {:>9.2}x   ({} frames at {}/s, one-way, writer clock to reader clock)",
        ratio(r.p50_ns, r.floor_ns),
        ratio(r.p99_ns, r.floor_p99_ns),
        ratio(r.p999_ns, r.floor_p999_ns),
        r.latency_frames,
        r.rate
    );
    let _ = writeln!(
        s,
        "floor missed   {} samples ({:.2} %) overwritten before the floor's reader saw them: its core was taken from it that long (floor queued counts them at their estimated latency)",
        r.floor_missed, r.floor_missed_pct
    );
    let _ = writeln!(
        s,
        "page switches  {} (worst latency across a switch {}, {:.1}x p50; first frame of a page {} at the median)",
        r.page_switches,
        ns(r.switch_max_ns),
        ratio(r.switch_max_ns, r.p50_ns),
        ns(r.switch_first_p50_ns)
    );
    let _ = writeln!(
        s,
        "throughput     {:.2} M frames/s to every reader ({:.2} GB/s payload; writer alone {:.2} M frames/s), {} frames, {} pages made ahead",
        r.throughput_fps / 1e6,
        r.throughput_bytes_per_sec / 1e9,
        r.writer_fps / 1e6,
        r.frames,
        r.pages_ahead
    );
    let _ = writeln!(
        s,
        "ping-pong      RTT/2 p50 {}, p99 {}, p99.9 {} over two journals; floor (one cache line each way) {}, {}, {}: {:.2}x {:.2}x {:.2}x ({} round trips each)",
        ns(r.pingpong_p50_ns),
        ns(r.pingpong_p99_ns),
        ns(r.pingpong_p999_ns),
        ns(r.pingpong_floor_p50_ns),
        ns(r.pingpong_floor_p99_ns),
        ns(r.pingpong_floor_p999_ns),
        ratio(r.pingpong_p50_ns, r.pingpong_floor_p50_ns),
        ratio(r.pingpong_p99_ns, r.pingpong_floor_p99_ns),
        ratio(r.pingpong_p999_ns, r.pingpong_floor_p999_ns),
        r.pingpong_round_trips
    );
    let _ = writeln!(
        s,
        "floors         stream {:.2} M records/s ({} bytes each, fresh memory; tape {:.2}x), ring of 64-byte slots {:.2} M/s (tape {:.2}x)",
        r.stream_fps / 1e6,
        floors::stream_record(r.size),
        r.throughput_fps / r.stream_fps.max(1.0),
        r.ring_fps / 1e6,
        r.throughput_fps / r.ring_fps.max(1.0)
    );
    let _ = writeln!(s, "lost           {}", r.lost);
    s
}
