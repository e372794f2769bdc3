//! `tape replay JOURNAL...`: write the frames of recorded journals, merged
//! in time order, into replay journals at the pace at which they were
//! written (or a multiple of it, or as fast as they can be copied).
//!
//! - Each journal `J` is replayed into `<PREFIX>J` (`--into`, default
//!   `replay.`) in the same folder, through a [`Writer`] registered with
//!   the root's service (so a strategy under test reads it like a live
//!   journal, and the one-writer rule holds).
//! - A replayed frame is the recorded one, byte for byte: the same type,
//!   source, dest, corr, payload and checksum, **and the same `seq` and
//!   `time_ns`**. The original write time is the replay frame's `time_ns`
//!   (what `ReaderFrame::time_ns` and `tape tail --format json` show); when
//!   a frame was replayed is when a reader sees it. Keeping the sequence
//!   numbers keeps request/reply pairs (`corr` = the request's `seq`)
//!   matched in the replay.
//! - Pacing ([`tape_reader::ReaderBuilder::paced`]): the first frame is
//!   written 2 ms after the replay starts (a lead-in, through the same
//!   sleep and spin as the others); a frame recorded `d` after it is
//!   written `d / speed` after it on the monotonic clock (asleep, then a spin of the last tens
//!   of µs). `max`: no pacing.
//! - Bounds: `--from` is inclusive (the first frame written at or after
//!   it), `--to` exclusive (frames written before it); without them, from
//!   the first frame on disk to the last one written when the replay gets
//!   there.
//! - A replay journal that already has frames is refused (its frames
//!   would come before the replayed ones, whose sequence numbers and
//!   times they do not continue): delete it or name another prefix. One
//!   that exists with no frame (a replay stopped before its first) is
//!   written into.

use anyhow::{bail, Context, Result};
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};
use tape_reader::{Reader, ServiceMode, Speed, Start};
use tape_writer::Writer;

/// The default `--into`.
pub const DEFAULT_PREFIX: &str = "replay.";

/// How long after its start a paced replay writes its first frame.
const LEAD_IN: Duration = Duration::from_millis(2);

/// Options of `tape replay`.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// Replay frames written at or after this time (ns since the epoch).
    pub from: Option<i64>,
    /// Replay frames written before this time (ns since the epoch).
    pub to: Option<i64>,
    /// The pace.
    pub speed: Speed,
    /// Prefix of the replay journals' names.
    pub into: String,
}

/// What a replay did.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplayReport {
    /// Per journal: (source, replay journal, frames written).
    pub journals: Vec<(String, String, u64)>,
    /// Frames written in all.
    pub frames: u64,
    /// From the start of the copy (just before the first frame is read)
    /// to the last frame written.
    pub elapsed: Duration,
}

/// Parses `--from`/`--to`: `time:RFC3339` (or `time:NANOS`).
pub fn parse_time(s: &str) -> Result<i64, String> {
    match s.strip_prefix("time:") {
        Some(t) => crate::timefmt::parse_time(t),
        None => Err(format!(
            "{s:?} is not a time bound: use time:RFC3339, e.g. time:2026-11-21T09:30:00Z"
        )),
    }
}

/// Replays `journals` (in `dir`, registering with the service of `root`)
/// and prints one line saying what it wrote to `out`.
pub fn run(
    root: &Path,
    dir: &Path,
    journals: &[String],
    opts: &ReplayOptions,
    out: &mut dyn Write,
) -> Result<ReplayReport> {
    let targets = check(dir, journals, opts)?;
    let mut writers = Vec::with_capacity(journals.len());
    for (src, dst) in journals.iter().zip(&targets) {
        // The replay journal grows by the same rule up to its source's
        // largest page size.
        let page_size = tape_journal::stats(dir, src)
            .with_context(|| format!("cannot read journal {src}"))?
            .max_page_size;
        let w = Writer::builder(dst)
            .root(root)
            .dir(dir)
            .page_size(page_size)
            .create()
            .with_context(|| format!("cannot open the replay journal {dst} for writing"))?;
        // Made by someone else since it was looked at.
        if w.next_seq() != 1 {
            bail!("{}", already_there(dir, dst, w.next_seq() - 1));
        }
        writers.push(w);
    }
    let mut reader = Reader::builder(&format!("tape-replay-{}", std::process::id()))
        .root(root)
        .start(opts.from.map_or(Start::First, Start::Time))
        .service(ServiceMode::IfRunning)
        .paced(opts.speed)
        .create()?;
    for j in journals {
        reader
            .add_journal(dir, j)
            .with_context(|| format!("cannot read journal {j}"))?;
    }
    if opts.speed != Speed::Max {
        tighten_timer_slack();
        // The pace starts a moment ahead, so that the first frame is
        // written through the same sleep and spin as every other (not
        // straight away, while everything is cold): the offsets a reader
        // sees count from a first frame that is on time like the rest.
        if let Some(t) = reader.next_time()? {
            let at = tape_reader::monotonic_ns() + LEAD_IN.as_nanos() as u64;
            if let Some(p) = reader.pacer() {
                p.start_at(t, at);
            }
        }
    }
    let to = opts.to.unwrap_or(i64::MAX);
    let mut counts = vec![0u64; journals.len()];
    let started = Instant::now();
    let mut at_end = false;
    loop {
        match reader.next()? {
            Some(f) => {
                if f.time_ns() >= to {
                    break;
                }
                let dst = &mut writers[f.journal];
                dst.write_replica_frame(f.header(), f.payload())
                    .with_context(|| {
                        format!(
                            "cannot write frame seq {} of {} to {}",
                            f.seq(),
                            f.journal_name,
                            targets[f.journal]
                        )
                    })?;
                counts[f.journal] += 1;
            }
            // Not due yet, or the end of what is written.
            None => match reader.next_time()? {
                None => {
                    at_end = true;
                    break;
                }
                Some(t) if t >= to => break,
                Some(_) => {
                    reader.wait(Duration::from_secs(1));
                }
            },
        }
    }
    let elapsed = started.elapsed();
    if at_end {
        // The end of what is written, or damage that stops a journal early?
        reader.check_stalled()?;
    }
    let frames = counts.iter().sum();
    let report = ReplayReport {
        journals: journals
            .iter()
            .zip(targets)
            .zip(counts)
            .map(|((s, d), n)| (s.clone(), d, n))
            .collect(),
        frames,
        elapsed,
    };
    writeln!(out, "{}", summary(&report))?;
    Ok(report)
}

/// The line `tape replay` prints.
fn summary(r: &ReplayReport) -> String {
    let secs = r.elapsed.as_secs_f64();
    let per_s = if secs > 0.0 {
        r.frames as f64 / secs
    } else {
        0.0
    };
    let rate = match per_s {
        x if x >= 1e6 => format!(", {:.2} M frames/s", x / 1e6),
        x if x > 0.0 => format!(", {x:.0} frames/s"),
        _ => String::new(),
    };
    let each: Vec<String> = r
        .journals
        .iter()
        .map(|(s, d, n)| format!("{s} -> {d} {n}"))
        .collect();
    format!(
        "replayed {} frames in {secs:.3} s{rate}: {}",
        r.frames,
        each.join(", ")
    )
}

/// Checks the command before anything is written; returns each journal's
/// replay journal name.
fn check(dir: &Path, journals: &[String], opts: &ReplayOptions) -> Result<Vec<String>> {
    if let (Some(from), Some(to)) = (opts.from, opts.to) {
        if from >= to {
            bail!(
                "--from {} is not before --to {}: nothing to replay (--from is inclusive, --to exclusive)",
                crate::timefmt::format_rfc3339(from),
                crate::timefmt::format_rfc3339(to)
            );
        }
    }
    for (i, j) in journals.iter().enumerate() {
        tape_journal::check_name(j).with_context(|| format!("cannot replay {j:?}"))?;
        if journals[..i].contains(j) {
            bail!("journal {j} is named twice: name each journal once");
        }
    }
    super::tail::require_journals(dir, journals)?;
    let mut targets = Vec::with_capacity(journals.len());
    for j in journals {
        let dst = format!("{}{j}", opts.into);
        tape_journal::check_name(&dst).with_context(|| {
            format!(
                "--into {:?} makes the replay journal name {dst:?}, which is not a journal name",
                opts.into
            )
        })?;
        if journals.contains(&dst) {
            bail!(
                "the replay journal of {j} would be {dst}, which is also replayed: name another prefix with --into"
            );
        }
        if !tape_journal::list_pages(dir, &dst)
            .with_context(|| format!("cannot list {}", dir.display()))?
            .is_empty()
        {
            let frames = tape_journal::stats(dir, &dst)
                .with_context(|| format!("replay journal {dst} exists and cannot be read"))?
                .frames;
            if frames > 0 {
                bail!("{}", already_there(dir, &dst, frames));
            }
        }
        targets.push(dst);
    }
    Ok(targets)
}

fn already_there(dir: &Path, dst: &str, frames: u64) -> String {
    format!(
        "replay journal {dst} already exists with {frames} frames: a replay never appends; delete it ({}/{dst}.*) or name another prefix with --into",
        dir.display()
    )
}

/// Sets this thread's timer slack to 1 µs, so that a paced sleep ends
/// within a µs of its moment and the spin after it stays short.
fn tighten_timer_slack() {
    // SAFETY: PR_SET_TIMERSLACK takes one integer argument and changes
    // only the calling thread's timer slack.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1000 as libc::c_ulong, 0, 0, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_bounds_parse_and_other_positions_are_refused() {
        assert_eq!(parse_time("time:1970-01-01T00:00:01Z"), Ok(1_000_000_000));
        assert_eq!(parse_time("time:42"), Ok(42));
        for bad in ["start", "seq:3", "2026-11-21T09:30:00Z", "time:soon"] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn summary_names_each_journal() {
        let r = ReplayReport {
            journals: vec![("md".into(), "replay.md".into(), 3)],
            frames: 3,
            elapsed: Duration::from_millis(500),
        };
        assert_eq!(
            summary(&r),
            "replayed 3 frames in 0.500 s, 6 frames/s: md -> replay.md 3"
        );
    }
}
