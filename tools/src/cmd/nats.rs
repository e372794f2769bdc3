//! `tape nats export|import|status`: journals across machines on NATS
//! JetStream (the library is tape-nats; nats/README.md has the rules).

use anyhow::{bail, Result};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use tape_nats::{status, Auth, ExportOptions, ImportOptions, Server};

/// The subcommands of `tape nats`.
#[derive(Debug, clap::Subcommand)]
pub enum NatsCommand {
    /// Publish journals of this root to NATS JetStream, one stream each.
    ///
    /// Journal NAME becomes stream TAPE_<escaped NAME> on subject
    /// tape.journal.<escaped NAME> (escape: _ → __, . → _d), made when
    /// missing with --replicas, --max-age and --max-bytes. Each frame is one
    /// message (its 48-byte header and payload) stored at stream sequence
    /// = journal seq: published with the expected last sequence, so a
    /// restarted export neither skips nor repeats a frame. Resumes at the
    /// stream's last sequence + 1; rides out the server going away. Runs
    /// until SIGINT or SIGTERM; exits non-zero on what retrying cannot mend
    /// (refused credentials, a stream that is not this journal's, frames
    /// pruned before they were exported).
    Export(ExportArgs),
    /// Keep local replica journals of streams made by `tape nats export`.
    ///
    /// Appends each message, checked (length, seq, CRC32C), through a
    /// writer registered with this root's service, keeping every header
    /// field: the replica's frames are byte-identical to the source's.
    /// Resumes at the replica's last seq + 1. --dest ID keeps only frames
    /// with dest ID or 0, numbered 1, 2, 3, ... in the replica (the source
    /// position is kept in <root>/system/nats-import-<replica>.pos). Runs
    /// until SIGINT or SIGTERM; exits non-zero on what retrying cannot mend
    /// (refused credentials, no such stream, the replica held by another
    /// writer).
    Import(ImportArgs),
    /// Show the streams of journals on the server (first and last seq,
    /// messages, bytes, consumers) and every running export and import
    /// with its lag.
    Status(StatusArgs),
}

/// Where the server is and how to authenticate.
#[derive(Debug, clap::Args)]
pub struct ServerArgs {
    /// NATS server URL, comma-separated for the members of a cluster
    /// (default: $TAPE_NATS, else nats://127.0.0.1:4222).
    #[arg(long, value_name = "URL")]
    pub server: Option<String>,
    /// File holding the server's token (surrounding white space ignored).
    #[arg(long, value_name = "F", conflicts_with = "creds")]
    pub token_file: Option<PathBuf>,
    /// NATS credentials file (JWT and nkey seed).
    #[arg(long, value_name = "F")]
    pub creds: Option<PathBuf>,
}

impl ServerArgs {
    pub fn server(&self) -> Result<Server> {
        let auth = Auth::from_args(self.token_file.as_deref(), self.creds.as_deref())
            .map_err(anyhow::Error::msg)?;
        Ok(Server::resolve(self.server.as_deref(), auth))
    }
}

/// Arguments of `tape nats export`.
#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// Journals to export.
    #[arg(value_name = "JOURNAL", required = true)]
    pub journals: Vec<String>,
    /// Root folder (default: $TAPE_ROOT, else /tmp/trading).
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    #[command(flatten)]
    pub server: ServerArgs,
    /// Replicas of a stream the export creates (1 to 5; 3 on a cluster
    /// survives the loss of a node).
    #[arg(long, value_name = "N")]
    pub replicas: Option<u32>,
    /// Remove messages older than this from a stream the export creates
    /// (e.g. 90s, 15m, 12h, 7d).
    #[arg(long, value_name = "D")]
    pub max_age: Option<String>,
    /// Remove the oldest messages past this size from a stream the export
    /// creates (e.g. 512M, 10G).
    #[arg(long, value_name = "B")]
    pub max_bytes: Option<String>,
    /// Frames published and not yet acknowledged, at most.
    #[arg(long, value_name = "N", default_value_t = 4096)]
    pub window: u64,
    /// Poll the journals without ever sleeping: a busy core; lower latency
    /// only with a core to spare (worse than the default when busy threads
    /// outnumber the cores).
    #[arg(long)]
    pub busy_poll: bool,
}

/// Arguments of `tape nats import`.
#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// Journals to import (the source's names).
    #[arg(value_name = "JOURNAL", required = true)]
    pub journals: Vec<String>,
    /// Name of the local replica, once per JOURNAL in the same order
    /// (default: the source's name).
    #[arg(long = "into", value_name = "NAME")]
    pub into: Vec<String>,
    /// Keep only frames addressed to this id (dest = ID) or to everyone
    /// (dest = 0).
    #[arg(long, value_name = "ID")]
    pub dest: Option<u32>,
    /// Root folder (default: $TAPE_ROOT, else /tmp/trading).
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(flatten)]
    pub sync: super::SyncArg,
}

/// Arguments of `tape nats status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// One JSON object: server, streams, connectors.
    #[arg(long)]
    pub json: bool,
    /// How long to wait for the exports and imports to answer, in ms.
    #[arg(long, value_name = "MS", default_value_t = 500)]
    pub wait_ms: u64,
}

/// Runs a `tape nats` subcommand.
pub fn run(cmd: NatsCommand, out: &mut dyn Write) -> Result<()> {
    match cmd {
        NatsCommand::Export(a) => export(a),
        NatsCommand::Import(a) => import(a),
        NatsCommand::Status(a) => show_status(a, out),
    }
}

/// Log lines on stderr: UTC time to the millisecond, `prefix`, the line.
fn log(prefix: &'static str) -> tape_nats::Log {
    std::sync::Arc::new(move |line: &str| {
        let t = crate::timefmt::format_rfc3339(tape_journal::clock::now_ns());
        eprintln!("{}Z {prefix}: {line}", &t[..23]);
    })
}

fn export(a: ExportArgs) -> Result<()> {
    let stop = tape_service::shutdown_on_signals()?;
    let root = tape_journal::resolve_root(a.root.as_deref());
    let mut opts = ExportOptions::new(&root, a.server.server()?);
    opts.log = log("tape nats export");
    opts.journals = a.journals;
    opts.window = a.window;
    opts.busy_poll = a.busy_poll;
    if a.window == 0 {
        bail!("--window 0: at least one frame must be in flight");
    }
    if let Some(r) = a.replicas {
        if !(1..=5).contains(&r) {
            bail!("--replicas {r}: JetStream keeps 1 to 5 replicas");
        }
        opts.limits.replicas = r;
    }
    if let Some(d) = &a.max_age {
        opts.limits.max_age = Some(
            tape_service::units::parse_duration(d)
                .map_err(|e| anyhow::anyhow!("--max-age: {e}"))?,
        );
    }
    if let Some(b) = &a.max_bytes {
        opts.limits.max_bytes = Some(
            tape_service::units::parse_size(b).map_err(|e| anyhow::anyhow!("--max-bytes: {e}"))?,
        );
    }
    let say = opts.log.clone();
    tape_nats::export(&opts, stop).map_err(anyhow::Error::msg)?;
    if stop.load(Ordering::Acquire) {
        say("stopped");
    }
    Ok(())
}

fn import(a: ImportArgs) -> Result<()> {
    let stop = tape_service::shutdown_on_signals()?;
    let root = tape_journal::resolve_root(a.root.as_deref());
    if !a.into.is_empty() && a.into.len() != a.journals.len() {
        bail!(
            "{} --into for {} journals: give one --into per JOURNAL, in the same order, or none",
            a.into.len(),
            a.journals.len()
        );
    }
    let mut opts = ImportOptions::new(&root, a.server.server()?);
    opts.log = log("tape nats import");
    opts.dest = a.dest;
    opts.sync = a.sync.sync;
    for (i, j) in a.journals.iter().enumerate() {
        let into = a.into.get(i).unwrap_or(j);
        opts.journals.push((j.clone(), into.clone()));
    }
    let say = opts.log.clone();
    tape_nats::import(&opts, stop).map_err(anyhow::Error::msg)?;
    if stop.load(Ordering::Acquire) {
        say("stopped");
    }
    Ok(())
}

fn show_status(a: StatusArgs, out: &mut dyn Write) -> Result<()> {
    let server = a.server.server()?;
    let st = status::query(&server, std::time::Duration::from_millis(a.wait_ms))
        .map_err(anyhow::Error::msg)?;
    if a.json {
        serde_json::to_writer(&mut *out, &st)?;
        writeln!(out)?;
        return Ok(());
    }
    writeln!(out, "server {}", st.server)?;
    if st.streams.is_empty() {
        writeln!(out, "no stream of a journal (none exported yet)")?;
    } else {
        writeln!(
            out,
            "{:<20} {:<24} {:>12} {:>12} {:>12} {:>14} {:>9} {:>8}",
            "JOURNAL", "STREAM", "FIRST", "LAST", "MESSAGES", "BYTES", "CONSUMERS", "REPLICAS"
        )?;
        for s in &st.streams {
            let t = &s.state;
            writeln!(
                out,
                "{:<20} {:<24} {:>12} {:>12} {:>12} {:>14} {:>9} {:>8}",
                s.journal,
                t.name,
                t.first_seq,
                t.last_seq,
                t.messages,
                t.bytes,
                t.consumers,
                t.replicas
            )?;
        }
    }
    if st.connectors.is_empty() {
        writeln!(out, "no export or import running")?;
    } else {
        writeln!(
            out,
            "{:<7} {:<20} {:<20} {:>6} {:<16} {:>8} {:>12} {:>12} {:>10}",
            "KIND", "JOURNAL", "LOCAL", "DEST", "HOST", "PID", "SEQ", "LAST", "LAG"
        )?;
        for c in &st.connectors {
            writeln!(
                out,
                "{:<7} {:<20} {:<20} {:>6} {:<16} {:>8} {:>12} {:>12} {:>10}",
                c.kind,
                c.journal,
                c.replica,
                c.dest.map_or("-".to_string(), |d| d.to_string()),
                c.host,
                c.pid,
                c.seq,
                c.last_seq,
                c.lag
            )?;
        }
    }
    Ok(())
}
