//! The Rust end of `python/bench/latency.py`: reads a journal that another
//! process (the Python writer) appends to, and records, for every frame,
//! the receipt clock minus the frame's `time_ns` (both CLOCK_REALTIME) in a
//! histogram: the one-way latency from the writer's clock reading to the
//! reader having the frame.
//!
//! ```text
//! latency_reader DIR JOURNAL FRAMES [--core N] [--warmup K]
//! ```
//!
//! Prints `ready` once it polls (the journal may not exist yet: it is read
//! from its first frame once it appears), then, after FRAMES frames, one
//! JSON line: `frames`, `warmup`, `p50_ns`, `p99_ns`, `p999_ns`, `max_ns`,
//! `lost` (sequence gaps; must be 0). The first K frames (default 1000) are
//! read but not recorded.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;
use tape_journal::clock::now_ns;
use tape_reader::{Reader, ServiceMode, Start};

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(dir), Some(journal), Some(frames)) = (args.next(), args.next(), args.next()) else {
        bail!("usage: latency_reader DIR JOURNAL FRAMES [--core N] [--warmup K]");
    };
    let dir = PathBuf::from(dir);
    let frames: u64 = frames.parse().context("FRAMES is a number")?;
    let mut core = None;
    let mut warmup = 1000u64;
    while let Some(a) = args.next() {
        let v = args.next().context("an option needs a value")?;
        match a.as_str() {
            "--core" => core = Some(v.parse::<usize>().context("--core is a number")?),
            "--warmup" => warmup = v.parse().context("--warmup is a number")?,
            _ => bail!("unknown option {a}: use --core N or --warmup K"),
        }
    }
    if let Some(c) = core {
        tape_journal::pin_thread(c).with_context(|| format!("cannot pin to core {c}"))?;
    }
    let mut reader = Reader::builder("latency-reader")
        .service(ServiceMode::Never)
        .start(Start::First)
        .create()?;
    reader.add_journal(&dir, &journal)?;
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?;
    println!("ready");
    std::io::stdout().flush()?;
    let (mut seen, mut lost, mut last_seq) = (0u64, 0u64, 0u64);
    while seen < frames {
        let Some(f) = reader.next()? else {
            std::hint::spin_loop();
            continue;
        };
        let now = now_ns();
        let seq = f.seq();
        if last_seq != 0 && seq != last_seq + 1 {
            lost += seq.saturating_sub(last_seq + 1);
        }
        last_seq = seq;
        if seen >= warmup {
            hist.saturating_record(now.saturating_sub(f.time_ns()).max(1) as u64);
        }
        seen += 1;
    }
    println!(
        "{{\"frames\":{},\"warmup\":{warmup},\"p50_ns\":{},\"p99_ns\":{},\"p999_ns\":{},\"max_ns\":{},\"lost\":{lost}}}",
        hist.len(),
        hist.value_at_quantile(0.5),
        hist.value_at_quantile(0.99),
        hist.value_at_quantile(0.999),
        hist.max()
    );
    Ok(())
}
