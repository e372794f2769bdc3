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
    /// service is taken over. With --retain it also prunes old pages of
    /// journals on its own, as `tape prune` would.
    Service {
        #[command(flatten)]
        root: RootArg,
        /// A retention rule, NAME:RULE[,RULE...]: NAME is a journal, or "*"
        /// for all; RULE is keep-last=N, older-than=DURATION or
        /// max-size=BYTES; e.g. md:keep-last=20 or "*:older-than=7d".
        /// Repeat for more journals.
        #[arg(long, value_name = "NAME:RULES")]
        retain: Vec<tape_service::Retention>,
        /// How often to apply the retention rules.
        #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = tape_service::units::parse_duration)]
        retain_every: std::time::Duration,
        /// Serve Prometheus metrics at http://ADDR/metrics (e.g.
        /// 127.0.0.1:9464): per journal frames, bytes, last seq, readers
        /// and each reader's lag; the service's connections,
        /// registrations and refusals; the progress, lag and counters of
        /// each bridge serve and pull, NATS export and import of the
        /// root. Names in service/PROTOCOL.md, "Metrics".
        #[arg(long, value_name = "ADDR")]
        metrics: Option<String>,
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
        /// Largest page size when the journal is created (a power of two,
        /// 1 MiB to 1 GiB; default 128 MiB): its pages grow from 1 MiB to
        /// it, each twice the one before, so a small journal takes a few
        /// MiB. An existing journal keeps its own.
        #[arg(long, value_name = "BYTES")]
        page_size: Option<u64>,
        #[command(flatten)]
        sync: cmd::SyncArg,
    },
    /// Print the frames of journals, merged in write-time order.
    ///
    /// Without --follow, exits at the current end. Works with or without a
    /// running service.
    ///
    /// Every frame is checked before it is printed: its sequence number,
    /// its CRC32C and that its write time does not go back; at the end (and
    /// while --follow waits) it also looks for frames published past a hole
    /// of zeros, in this page or a later one. Damage stops it with exit 1
    /// and one line naming the page file and offset, as `tape verify` does.
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
        /// Do not check each frame's CRC32C and time order (faster on a
        /// large journal you trust; sequence numbers are still checked).
        #[arg(long)]
        no_check: bool,
        /// Read as the resuming reader NAME: start each journal after the
        /// last frame a `tape tail --resume NAME` (or a resuming reader of
        /// that name) committed there, or at --from where none did; keep
        /// the position when it exits. Each frame is committed right after
        /// its line has been written to standard output (the write has
        /// returned; output is not buffered across frames then): a kill
        /// after that write and before the commit prints that one frame
        /// again at the next start, so every frame is printed at least
        /// once and none is skipped. A second live reader named NAME on a
        /// journal is refused. The position is kept in
        /// <journal>.readers/NAME.pos beside the journal.
        #[arg(long, value_name = "NAME")]
        resume: Option<String>,
    },
    /// Replay recorded journals at the pace at which they were written.
    ///
    /// Writes the frames of the journals, merged in write-time order, into
    /// replay journals (<PREFIX><journal>, in the same folder: md becomes
    /// replay.md) at --speed times the recorded pace: the first frame 2 ms
    /// after it starts, each next one when as much time has passed since
    /// the first, divided by the speed, as between them when they were
    /// written (max: as fast as they copy). Each
    /// replayed frame is the recorded one byte for byte: type, source,
    /// dest, corr, payload, and its seq and write time (time_ns, the
    /// original write time, which a strategy reads as ReaderFrame::time_ns
    /// and `tape tail --format json` shows); when it was replayed is when a
    /// reader sees it. Ends at --to or at the last frame written when it
    /// gets there, and prints how many frames it wrote.
    ///
    /// Needs a running `tape service` (the replay journals' writers
    /// register with it). A replay journal that already has frames is
    /// refused (delete it, or name another --into); one with no frame is
    /// written into.
    Replay {
        /// Journal names (one or more, merged in time order).
        #[arg(required = true)]
        journals: Vec<String>,
        /// Replay frames written at or after this time (inclusive):
        /// time:RFC3339, e.g. time:2026-11-21T09:30:00+08:00, or
        /// time:NANOS (default: the first frame on disk).
        #[arg(long, value_name = "time:RFC3339", value_parser = cmd::replay::parse_time)]
        from: Option<i64>,
        /// Replay frames written before this time (exclusive), as --from
        /// (default: up to the last frame written).
        #[arg(long, value_name = "time:RFC3339", value_parser = cmd::replay::parse_time)]
        to: Option<i64>,
        /// Pace: a positive number of times the recorded pace (1 = as
        /// written, 10 = ten times faster, 0.5 = half as fast), or max (as
        /// fast as the frames can be copied).
        #[arg(long, value_name = "X|max", default_value = "1")]
        speed: tape_reader::Speed,
        /// Prefix of the replay journals' names.
        #[arg(long, value_name = "PREFIX", default_value = cmd::replay::DEFAULT_PREFIX)]
        into: String,
        #[command(flatten)]
        root: RootArg,
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
    /// Delete a journal's oldest pages: by count, age or size.
    ///
    /// Deletes whole page files, oldest first, that any of the rules asks
    /// for. Never deletes the page holding the last frame or a later one,
    /// and stops at the first page that a reader or the writer still has
    /// mapped (each holds a lock on the pages it maps), so no running
    /// reader loses a frame. `tape ls` shows the space the pages take.
    #[command(group(clap::ArgGroup::new("rule").required(true).multiple(true)))]
    Prune {
        /// Journal name.
        journal: String,
        #[command(flatten)]
        root: RootArg,
        /// Keep the last N pages (counted back from the page with the last
        /// frame; at least 1).
        #[arg(long, value_name = "N", group = "rule")]
        keep_last: Option<u64>,
        /// Delete pages whose frames are all older than this: 90s, 15m,
        /// 12h, 7d.
        #[arg(long, value_name = "DURATION", group = "rule", value_parser = tape_service::units::parse_duration)]
        older_than: Option<std::time::Duration>,
        /// Delete oldest pages until the journal takes at most this much
        /// disk: bytes, or with K, M, G, T (binary units), e.g. 10G.
        #[arg(long, value_name = "BYTES", group = "rule", value_parser = tape_service::units::parse_size)]
        max_size: Option<u64>,
        /// Say what would be deleted, delete nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// A live view of the box, refreshed every second: every journal with
    /// frames/s, MB/s, last seq, writer pid, and each reader with its lag
    /// (frames behind the writer, from its position file); every bridge
    /// serve and pull, NATS export and import of the root (from their
    /// status sockets in <root>/system/) with its seq and lag.
    ///
    /// Keys: q or Esc quit; n, f, b, l sort by name, frames/s, MB/s,
    /// worst reader lag. --once --json prints one JSON object instead
    /// (journals: name, last_seq, fps, bytes_per_s, writer_pid, readers:
    /// name, pid, lag; connectors: name, kind (bridge-serve, bridge-pull,
    /// nats-export, nats-import), journal, pid, seq, last_seq, lag,
    /// frames, bytes, reconnects; unanswered): it takes two samples
    /// a second apart to give the rates, so it takes about a second.
    /// Watching costs the writers and readers nothing: it reads journals
    /// and position files read-only.
    Top {
        #[command(flatten)]
        root: RootArg,
        /// Print one snapshot and exit (with --json).
        #[arg(long, requires = "json")]
        once: bool,
        /// JSON output (with --once).
        #[arg(long, requires = "once")]
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
    /// Send one request to a responder and print its reply.
    ///
    /// Prints the reply's payload and a newline. Exit status: 0 OK (a
    /// reply came); 3 NO (no responder of that name is online; nothing was
    /// sent); 4 TIMEOUT (no reply within --timeout; a late reply is
    /// dropped); 1 any other error. The request is made by a requester
    /// named tape-call-<pid>, whose journal is deleted when it ends.
    /// With --server: a name exposed with `tape rpc expose` on any
    /// machine, the same outcomes and exit codes (NO at once when no
    /// machine has it online).
    Call {
        /// Name of the responder.
        name: String,
        /// Request payload (default: empty).
        data: Option<String>,
        #[command(flatten)]
        root: RootArg,
        /// Message type of the request.
        #[arg(long = "type", value_name = "N", default_value_t = 0)]
        msg_type: u32,
        /// How long to wait for the reply, in milliseconds.
        #[arg(long, value_name = "MS", default_value_t = 5000)]
        timeout: u64,
        #[command(flatten)]
        remote: cmd::call::RemoteArgs,
    },
    /// Show who is registered with the service: writers, readers,
    /// responders and requesters, with pid and since when.
    ///
    /// With NAME: that one (exit 3 if nothing of that name is online).
    /// Without: one page, in registration order, so that walking pages 0,
    /// 1, 2, ... sees each once while nobody comes or goes. --count: how
    /// many. Needs a running `tape service`. With --server: the names
    /// exposed with `tape rpc expose` on every machine, one entry per
    /// machine and name, with whether its responder is online there.
    Online {
        /// Show only this name.
        name: Option<String>,
        #[command(flatten)]
        root: RootArg,
        /// Page to show, from 0.
        #[arg(long, value_name = "N", default_value_t = 0)]
        page: u64,
        /// Entries per page, 1 to 1000.
        #[arg(long, value_name = "M", default_value_t = 100,
              value_parser = clap::value_parser!(u32).range(1..=1000))]
        per_page: u32,
        /// Print only the number registered.
        #[arg(long, conflicts_with = "name")]
        count: bool,
        /// One JSON object a line (id, kind, name, pid, since_ns, since,
        /// endpoint_id, journals).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: cmd::call::RemoteArgs,
    },
    /// Replicate journals to other machines over TCP: serve, pull, status.
    #[command(subcommand)]
    Bridge(cmd::bridge::BridgeCommand),
    /// Journals across machines on NATS JetStream: export, import, status.
    #[command(subcommand)]
    Nats(cmd::nats::NatsCommand),
    /// Shared variables across machines (JSON values in a NATS JetStream
    /// key-value bucket), each change a compare-and-set.
    ///
    /// get, del, dict-del, list-pop and list-remove exit 3 when the
    /// variable (or key, or item) is not there.
    #[command(subcommand)]
    Var(cmd::var::VarCommand),
    /// Files across machines (a NATS JetStream object store): send, recv,
    /// ls, rm; each chunk and the whole file checked with SHA-256.
    ///
    /// recv and rm exit 3 when there is no such file.
    #[command(subcommand)]
    File(cmd::file::FileCommand),
    /// Remote calls: make local responders callable from other machines.
    #[command(subcommand)]
    Rpc(cmd::rpc::RpcCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = run(cli);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if tape_tools::is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tape: {}", tape_tools::message(&e));
            // NO and TIMEOUT have exit statuses of their own.
            if let Some(u) = e.downcast_ref::<cmd::call::Unanswered>() {
                ExitCode::from(u.exit_code())
            } else if matches!(
                e.downcast_ref::<tape_nats::VarError>(),
                Some(tape_nats::VarError::Missing(_))
            ) || e.is::<cmd::online::NotOnline>()
            {
                // A variable that does not exist, a name not online: 3.
                ExitCode::from(cmd::call::EXIT_NO)
            } else if matches!(
                e.downcast_ref::<tape_nats::FileError>(),
                Some(tape_nats::FileError::Missing(_))
            ) {
                // A file that is not in the bucket: 3.
                ExitCode::from(cmd::call::EXIT_NO)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let stdout = io::stdout();
    match cli.command {
        Command::Service {
            root,
            retain,
            retain_every,
            metrics,
        } => cmd::service::run(&root.root(), &retain, retain_every, metrics.as_deref()),
        Command::Top { root, once, json } => {
            if once && json {
                cmd::top::once_json(&root.root(), &mut stdout.lock())
            } else {
                cmd::top::run(&root.root())
            }
        }
        Command::Write {
            journal,
            root,
            msg_type,
            page_size,
            sync,
        } => {
            let stdin = io::stdin();
            let mut input = stdin.lock();
            let opts = cmd::write::Options {
                msg_type,
                page_size,
                sync: sync.sync,
            };
            cmd::write::run(&root.root(), &journal, &opts, &mut input).map(|_| ())
        }
        Command::Tail {
            journals,
            root,
            from,
            follow,
            format,
            no_check,
            resume,
        } => {
            let root = root.root();
            let dir = tape_journal::journal_dir(&root);
            let opts = cmd::tail::TailOptions {
                from,
                follow,
                format,
                check: !no_check,
                resume,
            };
            let mut out = BufWriter::with_capacity(1 << 16, stdout.lock());
            cmd::tail::run(&root, &dir, &journals, &opts, &mut out)?;
            out.flush()?;
            Ok(())
        }
        Command::Replay {
            journals,
            from,
            to,
            speed,
            into,
            root,
        } => {
            let root = root.root();
            let dir = tape_journal::journal_dir(&root);
            let opts = cmd::replay::ReplayOptions {
                from,
                to,
                speed,
                into,
            };
            cmd::replay::run(&root, &dir, &journals, &opts, &mut stdout.lock()).map(|_| ())
        }
        Command::Ls { root, json } => {
            let root = root.root();
            let dir = tape_journal::journal_dir(&root);
            cmd::ls::run(&root, &dir, json, &mut stdout.lock())
        }
        Command::Prune {
            journal,
            root,
            keep_last,
            older_than,
            max_size,
            dry_run,
        } => {
            let dir = tape_journal::journal_dir(&root.root());
            let rule = tape_journal::PruneRule {
                keep_last,
                older_than,
                max_size,
            };
            cmd::prune::run(&dir, &journal, &rule, dry_run, &mut stdout.lock()).map(|_| ())
        }
        Command::Verify { journal, root } => {
            let dir = tape_journal::journal_dir(&root.root());
            cmd::verify::run(&dir, &journal, &mut stdout.lock())
        }
        Command::Call {
            name,
            data,
            root,
            msg_type,
            timeout,
            remote,
        } => {
            let data = data.unwrap_or_default();
            let timeout = std::time::Duration::from_millis(timeout);
            let mut out = stdout.lock();
            if let Some(s) = remote.server()? {
                let d = data.as_bytes();
                return cmd::call::run_remote(&s, &name, msg_type, timeout, d, &mut out);
            }
            cmd::call::run(
                &root.root(),
                &name,
                msg_type,
                timeout,
                data.as_bytes(),
                &mut out,
            )
        }
        Command::Online {
            name,
            root,
            page,
            per_page,
            count,
            json,
            remote,
        } => {
            let query = match (name, count) {
                (_, true) => cmd::online::Query::Count,
                (Some(n), false) => cmd::online::Query::Find(n),
                (None, false) => cmd::online::Query::Page { page, per_page },
            };
            if let Some(s) = remote.server()? {
                return cmd::online::run_remote(&s, &query, json, &mut stdout.lock());
            }
            cmd::online::run(&root.root(), &query, json, &mut stdout.lock())
        }
        Command::Bridge(c) => cmd::bridge::run(c, &mut stdout.lock()),
        Command::Nats(c) => cmd::nats::run(c, &mut stdout.lock()),
        Command::Var(c) => cmd::var::run(c, &mut stdout.lock()),
        Command::File(c) => cmd::file::run(c, &mut stdout.lock()),
        Command::Rpc(c) => cmd::rpc::run(c),
    }
}
