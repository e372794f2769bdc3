//! `journal-bench`: the latency tool of the trading box. See
//! `tape_tools::bench` for what it measures and how.

use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;
use tape_tools::bench;

/// Measure tape between processes: one-way latency percentiles beside the
/// floor of this box (one cache line between two cores, measured in the
/// same run on the same cores at the same pace), throughput, frames lost,
/// page switches.
///
/// With no --root it starts its own service on a temporary root (on tmpfs
/// when the box has /dev/shm) and removes it afterwards.
#[derive(Debug, Parser)]
#[command(name = "journal-bench", version, about, long_about)]
struct Args {
    /// Frames in the throughput phase.
    #[arg(long, default_value_t = 20_000_000)]
    frames: u64,
    /// Payload bytes per frame.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Pace of the floor and latency phases, frames per second.
    #[arg(long, default_value_t = 500_000)]
    rate: u64,
    /// Reader processes.
    #[arg(long, default_value_t = 1)]
    readers: usize,
    /// Largest page size of the bench journals (a power of two, 1 MiB to
    /// 1 GiB): their pages grow from 1 MiB to it, each twice the one before
    /// (journal/FORMAT.md, "Page sizes"), so every phase switches pages.
    /// The default is a journal's default, 128 MiB.
    #[arg(long, default_value_t = tape_journal::format::DEFAULT_PAGE_SIZE)]
    page_size: u64,
    /// Pages the writer makes and pre-faults before a phase starts, as a
    /// trading box makes the day's pages at start-up (default: all the
    /// phase needs, within 8 GiB and half the free memory; 1 = only the
    /// next page, made while the writer writes).
    #[arg(long, value_name = "N")]
    pages_ahead: Option<u32>,
    /// Seconds the floor and the latency phase each last.
    #[arg(long, default_value_t = 4.0)]
    latency_secs: f64,
    /// Round trips of the ping-pong phase (two journals, RTT/2), and as
    /// many over one cache line each way (its floor), in alternating rounds.
    #[arg(long, default_value_t = 1_000_000)]
    pingpong: u64,
    /// Use this root, whose `tape service` must be running, instead of a
    /// temporary one.
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
    /// Draw both latency percentile distributions into this SVG file.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
    /// No progress lines on standard error.
    #[arg(long)]
    quiet: bool,
    #[arg(long, hide = true)]
    role_spec: Option<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(spec) = &args.role_spec {
        return tape_tools::exit_with("journal-bench", bench::roles::run(spec));
    }
    let cfg = bench::Config {
        frames: args.frames,
        size: args.size,
        rate: args.rate,
        latency_secs: args.latency_secs,
        pingpong: args.pingpong,
        readers: args.readers,
        page_size: args.page_size,
        pages_ahead: args.pages_ahead,
        root: args.root,
        progress: !args.quiet,
    };
    let result = bench::run(&cfg).and_then(|r| {
        if let Some(p) = &args.plot {
            r.plot(p)?;
        }
        Ok(r)
    });
    match result {
        Ok(r) => {
            if args.json {
                println!("{}", serde_json::to_string(&r).expect("results serialize"));
            } else {
                print!("{}", bench::text(&r));
            }
            if r.lost > 0 {
                eprintln!("journal-bench: {} frames were lost", r.lost);
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("journal-bench: {}", tape_tools::message(&e));
            ExitCode::FAILURE
        }
    }
}
