//! `tape bridge serve|pull|status`: replicate journals to other machines
//! over TCP (the library is tape-bridge; `bridge/PROTOCOL.md` is the wire
//! spec).

use anyhow::{bail, Result};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use tape_bridge::{Polling, PullOptions, ServeOptions, Server, Token};

/// The subcommands of `tape bridge`.
#[derive(Debug, clap::Subcommand)]
pub enum BridgeCommand {
    /// Serve this root's journals to `tape bridge pull` on other machines.
    ///
    /// Each subscriber proves it knows the token (never sent), names its
    /// account and the journals it wants with the sequence it already
    /// has, and gets every frame from there on, read at its own pace: a
    /// slow or dead subscriber never slows the writer or the others. Runs
    /// until SIGINT or SIGTERM; one log line on stderr per subscriber that
    /// comes, leaves or is refused. `tape bridge status` lists who is
    /// connected.
    Serve(ServeArgs),
    /// Keep local replicas of journals served by `tape bridge serve`.
    ///
    /// Connects, authenticates, and appends the frames to a local journal
    /// (same name, or --into) through a writer registered with this root's
    /// service, keeping the source's sequence numbers and write times: the
    /// replica's frames are byte-identical. Reconnects with backoff when
    /// the connection ends and resumes after the replica's last frame.
    /// Runs until SIGINT or SIGTERM; exits non-zero on what retrying
    /// cannot mend (a refused token, a journal not served, no service).
    Pull(PullArgs),
    /// Show the subscribers of every `tape bridge serve` on this root:
    /// account, address, journals, sequence sent and acked, lag.
    Status(StatusArgs),
}

/// Arguments of `tape bridge serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on, HOST:PORT (0.0.0.0:PORT for every interface).
    /// The default listens on this machine only.
    #[arg(long, value_name = "ADDR", default_value = tape_bridge::DEFAULT_LISTEN)]
    pub listen: String,
    /// Root folder (default: $TAPE_ROOT, else /tmp/trading).
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// File holding the shared token (surrounding white space ignored).
    /// Required unless ADDR is a loopback address.
    #[arg(long, value_name = "F")]
    pub token_file: Option<PathBuf>,
    /// Journal to expose (repeat for more). Default: every journal of the
    /// root, including ones made later.
    #[arg(long = "journal", value_name = "NAME")]
    pub journals: Vec<String>,
    /// Drop a subscriber whose socket took no data for this many seconds
    /// (it resumes where it stopped when it reconnects).
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    pub stall_timeout: f64,
    /// Poll the journals without ever sleeping: the lowest latency, at the
    /// cost of one busy core per subscriber.
    #[arg(long)]
    pub busy_poll: bool,
}

/// Arguments of `tape bridge pull`.
#[derive(Debug, clap::Args)]
pub struct PullArgs {
    /// Address of the `tape bridge serve`, HOST:PORT.
    #[arg(long, value_name = "ADDR")]
    pub from: String,
    /// Journal to replicate (repeat for more; all share one connection).
    #[arg(long = "journal", value_name = "NAME", required = true)]
    pub journals: Vec<String>,
    /// Name of the local replica, once per --journal in the same order
    /// (default: the source's name).
    #[arg(long = "into", value_name = "NAME")]
    pub into: Vec<String>,
    /// Root folder (default: $TAPE_ROOT, else /tmp/trading).
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// File holding the shared token (surrounding white space ignored).
    #[arg(long, value_name = "F")]
    pub token_file: Option<PathBuf>,
    /// Account id to register with the server (1 to 64 of A-Z a-z 0-9
    /// _ - . @ :). Default: this machine's host name.
    #[arg(long, value_name = "ID")]
    pub account: Option<String>,
    #[command(flatten)]
    pub sync: super::SyncArg,
}

/// Arguments of `tape bridge status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Root folder (default: $TAPE_ROOT, else /tmp/trading).
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// One JSON object a line per server.
    #[arg(long)]
    pub json: bool,
}

/// Runs a `tape bridge` subcommand.
pub fn run(cmd: BridgeCommand, out: &mut dyn Write) -> Result<()> {
    match cmd {
        BridgeCommand::Serve(a) => serve(a),
        BridgeCommand::Pull(a) => pull(a),
        BridgeCommand::Status(a) => status(a, out),
    }
}

/// Log lines on stderr: UTC time to the millisecond, `prefix`, the line.
fn log(prefix: &'static str) -> tape_bridge::Log {
    std::sync::Arc::new(move |line: &str| {
        let t = crate::timefmt::format_rfc3339(tape_journal::clock::now_ns());
        eprintln!("{}Z {prefix}: {line}", &t[..23]);
    })
}

fn token(file: Option<&Path>) -> Result<Token> {
    Ok(match file {
        Some(f) => Token::from_file(f)?,
        None => Token::none(),
    })
}

fn serve(a: ServeArgs) -> Result<()> {
    let stop = tape_service::shutdown_on_signals()?;
    let root = tape_journal::resolve_root(a.root.as_deref());
    if !(a.stall_timeout > 0.0 && a.stall_timeout < 1e6) {
        bail!(
            "--stall-timeout {} is not a number of seconds above 0",
            a.stall_timeout
        );
    }
    let mut opts = ServeOptions::new(&root);
    opts.log = log("tape bridge serve");
    opts.listen = a.listen;
    opts.token = token(a.token_file.as_deref())?;
    opts.journals = a.journals;
    opts.stall_timeout = std::time::Duration::from_secs_f64(a.stall_timeout);
    if a.busy_poll {
        opts.polling = Polling::Busy;
    }
    let no_token = opts.token.is_empty();
    let what = if opts.journals.is_empty() {
        format!("every journal of {}", root.display())
    } else {
        opts.journals.join(", ")
    };
    let say = opts.log.clone();
    let server = Server::bind(opts)?;
    say(&format!(
        "listening on {} (pid {}), serving {what}{}",
        server.local_addr(),
        std::process::id(),
        if no_token {
            "; no token: only this machine can connect"
        } else {
            ""
        }
    ));
    server.run(stop);
    say("stopped");
    Ok(())
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: buf is writable for its whole length, which is passed.
    let r = unsafe { libc::gethostname(buf.as_mut_ptr() as *mut libc::c_char, buf.len()) };
    let name = if r == 0 {
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end]).into_owned()
    } else {
        String::new()
    };
    let clean: String = name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "_-.@:".contains(*c))
        .take(tape_bridge::wire::MAX_ACCOUNT)
        .collect();
    if clean.is_empty() {
        "anonymous".into()
    } else {
        clean
    }
}

fn pull(a: PullArgs) -> Result<()> {
    let stop = tape_service::shutdown_on_signals()?;
    let root = tape_journal::resolve_root(a.root.as_deref());
    if !a.into.is_empty() && a.into.len() != a.journals.len() {
        bail!(
            "{} --into for {} --journal: give one --into per --journal, in the same order, or none",
            a.into.len(),
            a.journals.len()
        );
    }
    let account = a.account.unwrap_or_else(hostname);
    let mut opts = PullOptions::new(&root, &a.from, &account);
    opts.sync = a.sync.sync;
    opts.log = log("tape bridge pull");
    opts.token = token(a.token_file.as_deref())?;
    for (i, j) in a.journals.iter().enumerate() {
        let into = a.into.get(i).unwrap_or(j);
        opts.journals.push((j.clone(), into.clone()));
    }
    let say = opts.log.clone();
    tape_bridge::pull(&opts, stop)?;
    if stop.load(Ordering::Acquire) {
        say("stopped");
    }
    Ok(())
}

fn status(a: StatusArgs, out: &mut dyn Write) -> Result<()> {
    let root = tape_journal::resolve_root(a.root.as_deref());
    let all = tape_bridge::status::query(&root, tape_bridge::status::QUERY_TIMEOUT);
    if all.is_empty() && !a.json {
        writeln!(out, "no tape bridge serve runs on {}", root.display())?;
        return Ok(());
    }
    let mut failed = None;
    for r in all {
        let st = match r {
            Ok(st) => st,
            Err(e) => {
                eprintln!("tape: {e}");
                failed = Some(e);
                continue;
            }
        };
        if a.json {
            serde_json::to_writer(&mut *out, &st)?;
            writeln!(out)?;
            continue;
        }
        let journals = st
            .journals
            .as_ref()
            .map_or_else(|| "every journal".to_string(), |j| j.join(", "));
        writeln!(
            out,
            "serve pid {} on {} ({journals}): {} subscriber{}",
            st.pid,
            st.listen,
            st.subscribers.len(),
            if st.subscribers.len() == 1 { "" } else { "s" }
        )?;
        if st.subscribers.is_empty() {
            continue;
        }
        writeln!(
            out,
            "  {:<20} {:<22} {:<16} {:>12} {:>12} {:>12} {:>10}",
            "ACCOUNT", "ADDRESS", "JOURNAL", "SENT", "ACKED", "LAST", "LAG"
        )?;
        for s in &st.subscribers {
            for j in &s.journals {
                writeln!(
                    out,
                    "  {:<20} {:<22} {:<16} {:>12} {:>12} {:>12} {:>10}",
                    s.account, s.address, j.journal, j.seq_sent, j.seq_acked, j.last_seq, j.lag
                )?;
            }
        }
    }
    if let Some(e) = failed {
        return Err(e.into());
    }
    Ok(())
}
