//! `tape-echo`: an example responder. It answers every request with the
//! request's own message type and data.
//!
//! ```sh
//! tape service &
//! tape-echo &                      # answers as "echo"
//! tape call echo hello             # prints hello
//! tape tail rpc.echo --format json # every reply it wrote
//! ```
//!
//! The whole of it is [`tape_rpc::Responder::run`] with a handler of one
//! line; SIGINT or SIGTERM stop it cleanly.

use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;

/// An example responder: replies to each request with its own type and
/// data.
#[derive(Debug, Parser)]
#[command(name = "tape-echo", version, about, long_about)]
struct Args {
    /// Name to answer as (its journal is rpc.<NAME>).
    #[arg(default_value = "echo")]
    name: String,
    /// Root folder (default: $TAPE_ROOT, else /tmp/trading).
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
    /// Page size of its journal when it is created (a power of two, 1 MiB
    /// to 1 GiB; default 16 MiB).
    #[arg(long, value_name = "BYTES")]
    page_size: Option<u64>,
    /// Pin the serving thread to this CPU.
    #[arg(long, value_name = "N")]
    core: Option<usize>,
}

fn main() -> ExitCode {
    tape_tools::exit_with("tape-echo", serve(&Args::parse()))
}

fn serve(args: &Args) -> anyhow::Result<()> {
    let stop = tape_service::shutdown_on_signals()?;
    let root = tape_journal::resolve_root(args.root.as_deref());
    let mut r = tape_tools::demo_responder(Some(&root), &args.name, args.page_size)?;
    if let Some(c) = args.core {
        tape_journal::pin_thread(c)?;
    }
    eprintln!(
        "tape-echo: answering as {} on {} (pid {})",
        args.name,
        root.display(),
        std::process::id()
    );
    r.run(stop, |req, out| {
        // One reply per request; a failure is reported by run.
        let _ = out.reply(req.msg_type(), req.data());
    })?;
    let s = r.stats();
    eprintln!(
        "tape-echo: stopped after {} replies ({} expired, {} for others)",
        s.answered, s.expired, s.foreign
    );
    Ok(())
}
