//! `tape-ping`: an example requester. It calls a responder COUNT times, one
//! call in flight, with a payload of SIZE bytes that changes with every
//! call, checks that each reply carries the request's own bytes (an echo:
//! `tape-echo`, or the Python `python/examples/responder.py`), and prints
//! the round trips' percentiles.
//!
//! ```sh
//! tape service &
//! tape-echo &
//! tape-ping echo --calls 10000 --json   # {"calls":10000,"p50_ns":...,"p99_ns":...}
//! ```
//!
//! Exit status as `tape call`: 0 every reply came and matched, 3 NO (no
//! responder of that name online), 4 TIMEOUT, 1 any other error (a reply
//! that is not the echo of its request among them).

use clap::Parser;
use hdrhistogram::Histogram;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};
use tape_rpc::{CallError, Requester};

/// An example requester: calls an echo responder COUNT times and prints
/// the round trips' percentiles.
#[derive(Debug, Parser)]
#[command(name = "tape-ping", version, about, long_about)]
struct Args {
    /// Name of the responder to call (an echo).
    name: String,
    /// Root folder (default: $TAPE_ROOT, else /tmp/trading).
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
    /// Calls to time.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    calls: u64,
    /// Calls made first and not timed.
    #[arg(long, value_name = "N", default_value_t = 200)]
    warmup: u64,
    /// Payload size in bytes (at least 8: the call's number is in it).
    #[arg(long, value_name = "BYTES", default_value_t = 64)]
    size: usize,
    /// Timeout of each call, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 5000)]
    timeout: u64,
    /// Message type of the requests.
    #[arg(long = "type", value_name = "N", default_value_t = 0)]
    msg_type: u32,
    /// Print one JSON object (calls, p50_ns, p99_ns, p999_ns, max_ns,
    /// mean_ns) instead of a line of text.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match ping(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Call(e)) => {
            eprintln!("tape-ping: {e}");
            match e {
                CallError::No { .. } => ExitCode::from(3),
                CallError::Timeout { .. } => ExitCode::from(4),
                _ => ExitCode::FAILURE,
            }
        }
        Err(Failure::Other(e)) => {
            eprintln!("tape-ping: {}", tape_tools::message(&e));
            ExitCode::FAILURE
        }
    }
}

enum Failure {
    Call(CallError),
    Other(anyhow::Error),
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure::Other(e.into())
    }
}

fn ping(args: &Args) -> Result<(), Failure> {
    if args.size < 8 {
        return Err(
            anyhow::anyhow!("--size {} is too small: use at least 8 bytes", args.size).into(),
        );
    }
    let root = tape_journal::resolve_root(args.root.as_deref());
    let mut r = Requester::builder(&format!("tape-ping-{}", std::process::id()))
        .root(&root)
        .create()?;
    let timeout = Duration::from_millis(args.timeout);
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?;
    let mut payload = vec![0u8; args.size];
    let mut sum: u128 = 0;
    for i in 0..args.warmup + args.calls {
        payload[..8].copy_from_slice(&i.to_le_bytes());
        let start = Instant::now();
        let reply = r
            .call(&args.name, args.msg_type, &payload, timeout)
            .map_err(Failure::Call)?;
        let ns = start.elapsed().as_nanos();
        if reply.data() != payload.as_slice() {
            return Err(anyhow::anyhow!(
                "the reply to call {i} is not its request's bytes: is {} an echo?",
                args.name
            )
            .into());
        }
        if i >= args.warmup {
            hist.record(ns.clamp(1, u64::MAX as u128) as u64)?;
            sum += ns;
        }
    }
    let mean = if args.calls > 0 {
        sum / args.calls as u128
    } else {
        0
    };
    if args.json {
        println!(
            "{{\"calls\":{},\"size\":{},\"p50_ns\":{},\"p99_ns\":{},\"p999_ns\":{},\"max_ns\":{},\"mean_ns\":{}}}",
            args.calls,
            args.size,
            hist.value_at_quantile(0.5),
            hist.value_at_quantile(0.99),
            hist.value_at_quantile(0.999),
            hist.max(),
            mean
        );
    } else {
        println!(
            "{} calls of {} bytes to {}: p50 {} ns, p99 {} ns, p99.9 {} ns, max {} ns",
            args.calls,
            args.size,
            args.name,
            hist.value_at_quantile(0.5),
            hist.value_at_quantile(0.99),
            hist.value_at_quantile(0.999),
            hist.max()
        );
    }
    Ok(())
}
