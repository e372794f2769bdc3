//! `tape-ticker`: an example responder that pushes events. Every interval
//! it publishes an event `tick N <time>` to its journal, which any process
//! can follow; it answers every request with the number of the last tick.
//!
//! ```sh
//! tape service &
//! tape-ticker --interval-ms 500 &             # answers as "ticker"
//! tape tail rpc.ticker --follow               # the ticks as they come
//! tape call ticker                            # prints the last tick number
//! ```
//!
//! From Rust, a client follows the events with [`tape_rpc::Events`]
//! (the frames of the journal with `corr` 0; replies are stepped over).

use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tape_reader::Idle;

/// Message type of the tick events.
const TICK: u32 = 1;

/// An example responder that publishes a tick event every interval and
/// answers each request with the last tick's number.
#[derive(Debug, Parser)]
#[command(name = "tape-ticker", version, about, long_about)]
struct Args {
    /// Name to answer as (its journal is rpc.<NAME>).
    #[arg(default_value = "ticker")]
    name: String,
    /// Root folder (default: $TAPE_ROOT, else /tmp/trading).
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
    /// Time between ticks, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    interval_ms: u64,
    /// Page size of its journal when it is created (default 16 MiB).
    #[arg(long, value_name = "BYTES")]
    page_size: Option<u64>,
}

fn main() -> ExitCode {
    tape_tools::exit_with("tape-ticker", serve(&Args::parse()))
}

fn serve(args: &Args) -> anyhow::Result<()> {
    let stop = tape_service::shutdown_on_signals()?;
    let root = tape_journal::resolve_root(args.root.as_deref());
    let mut r = tape_tools::demo_responder(Some(&root), &args.name, args.page_size)?;
    eprintln!(
        "tape-ticker: ticking as {} every {} ms (pid {})",
        args.name,
        args.interval_ms,
        std::process::id()
    );
    let interval = Duration::from_millis(args.interval_ms.max(1));
    let mut next = Instant::now();
    let mut ticks = 0u64;
    let mut idle = Idle::new();
    while !stop.load(Ordering::Acquire) {
        let mut busy = false;
        if Instant::now() >= next {
            ticks += 1;
            let now = tape_journal::clock::now_ns();
            let text = format!("tick {ticks} {}", tape_tools::timefmt::format_rfc3339(now));
            r.publish(TICK, text.as_bytes())?;
            next += interval;
            busy = true;
        }
        match r.poll(|req, out| {
            let _ = out.reply(req.msg_type(), ticks.to_string().as_bytes());
        }) {
            Ok(true) => busy = true,
            Ok(false) => {}
            Err(e @ tape_rpc::ServeError::Requester { .. }) => eprintln!("tape-ticker: {e}"),
            Err(e) => return Err(e.into()),
        }
        if busy {
            idle.reset();
        } else {
            idle.idle();
        }
    }
    Ok(())
}
