//! `tape`: the command line of the tape journal middleware.

use clap::{Parser, Subcommand};
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use tape_tools::cmd;

/// tape: shared-memory journals for trading systems.
///
/// Journals live in <root>/journal; the service socket is
/// <root>/system/service.sock. The root is --root, else $TAPE_ROOT, else
/// /tmp/trading.
#[derive(Debug, Parser)]
#[command(name = "tape", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Args)]
struct RootArg {
    /// Root folder (default: $TAPE_ROOT, else /tmp/trading).
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
}

impl RootArg {
    fn root(&self) -> PathBuf {
        tape_journal::resolve_root(self.root.as_deref())
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the service of a root: one writer per journal, who is online.
    ///
    /// Listens on <root>/system/service.sock (mode 0660) until SIGINT or
    /// SIGTERM. One service per root; a stale socket left by a killed
    /// service is taken over.
    Service {
        #[command(flatten)]
        root: RootArg,
    },
    /// Append one frame per line of standard input to a journal.
    ///
    /// Each line (without its newline) is published as soon as it is read;
    /// exits 0 at the end of input. Needs a running `tape service`; refused,
    /// creating nothing, when another writer holds the journal.
    Write {
        /// Journal name.
        journal: String,
        #[command(flatten)]
        root: RootArg,
        /// Message type of the frames.
        #[arg(long = "type", value_name = "N", default_value_t = 0)]
        msg_type: u32,
        /// Page size when the journal is created (a power of two, 1 MiB to
        /// 1 GiB; default 128 MiB).
        #[arg(long, value_name = "BYTES")]
        page_size: Option<u64>,
    },
    /// Print the frames of journals, merged in write-time order.
    ///
    /// Without --follow, exits at the current end. Works with or without a
    /// running service.
    Tail {
        /// Journal names.
        #[arg(required = true)]
        journals: Vec<String>,
        #[command(flatten)]
        root: RootArg,
        /// Where to start: start, end, seq:N or time:RFC3339 (default: end
        /// with --follow, else start).
        #[arg(long, value_name = "POS", value_parser = cmd::tail::parse_from)]
        from: Option<tape_journal::Start>,
        /// Keep printing new frames as they are written.
        #[arg(long)]
        follow: bool,
        /// Output: the payload (text), one JSON object a line (json), or the
        /// payload in hex (hex).
        #[arg(long, value_enum, default_value = "text")]
        format: cmd::tail::Format,
    },
    /// List the journals of a root: pages, frames, last sequence, size on
    /// disk, writer pid, readers.
    Ls {
        #[command(flatten)]
        root: RootArg,
        /// One JSON object a line.
        #[arg(long)]
        json: bool,
    },
    /// Check every page and frame of a journal; exits non-zero naming the
    /// file and offset of the first damage.
    Verify {
        /// Journal name.
        journal: String,
        #[command(flatten)]
        root: RootArg,
    },
    /// Replicate journals to other machines over TCP: serve, pull, status.
    #[command(subcommand)]
    Bridge(cmd::bridge::BridgeCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = run(cli);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if tape_tools::is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tape: {}", tape_tools::message(&e));
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let stdout = io::stdout();
    match cli.command {
        Command::Service { root } => cmd::service::run(&root.root()),
        Command::Write {
            journal,
            root,
            msg_type,
            page_size,
        } => {
            let stdin = io::stdin();
            let mut input = stdin.lock();
            cmd::write::run(&root.root(), &journal, msg_type, page_size, &mut input).map(|_| ())
        }
        Command::Tail {
            journals,
            root,
            from,
            follow,
            format,
        } => {
            let root = root.root();
            let dir = tape_journal::journal_dir(&root);
            let opts = cmd::tail::TailOptions {
                from,
                follow,
                format,
            };
            let mut out = BufWriter::with_capacity(1 << 16, stdout.lock());
            cmd::tail::run(&root, &dir, &journals, &opts, &mut out)?;
            out.flush()?;
            Ok(())
        }
        Command::Ls { root, json } => {
            let root = root.root();
            let dir = tape_journal::journal_dir(&root);
            cmd::ls::run(&root, &dir, json, &mut stdout.lock())
        }
        Command::Verify { journal, root } => {
            let dir = tape_journal::journal_dir(&root.root());
            cmd::verify::run(&dir, &journal, &mut stdout.lock())
        }
        Command::Bridge(c) => cmd::bridge::run(c, &mut stdout.lock()),
    }
}
