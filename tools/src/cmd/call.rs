//! `tape call NAME [DATA]`: one request to a responder, its reply on
//! standard output; distinct exit codes for NO and TIMEOUT. With
//! `--server URL`, to a name exposed with `tape rpc expose` on any
//! machine, with the same outcomes.

use anyhow::Result;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tape_nats::{Auth, RemoteError, RemoteRequester, Server};
use tape_rpc::{CallError, Requester};

/// Exit status when no responder of that name is online (NO).
pub const EXIT_NO: u8 = 3;
/// Exit status when no reply came in time (TIMEOUT).
pub const EXIT_TIMEOUT: u8 = 4;

/// A call that ended with NO or TIMEOUT, on this box or through NATS:
/// `main` turns it into [`EXIT_NO`] or [`EXIT_TIMEOUT`].
#[derive(Debug)]
pub enum Unanswered {
    /// A local call.
    Local(CallError),
    /// A call through `--server`.
    Remote(RemoteError),
}

impl Unanswered {
    /// The exit status for this outcome.
    pub fn exit_code(&self) -> u8 {
        match self {
            Unanswered::Local(CallError::No { .. })
            | Unanswered::Remote(RemoteError::No { .. }) => EXIT_NO,
            _ => EXIT_TIMEOUT,
        }
    }
}

impl std::fmt::Display for Unanswered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unanswered::Local(e) => e.fmt(f),
            Unanswered::Remote(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for Unanswered {}

/// Calls responder `name` of `root` with `msg_type` and `data`, waiting at
/// most `timeout`, and writes the reply's payload and a newline to `out`.
///
/// The call is made by a requester named `tape-call-<pid>` whose journal
/// (1 MiB pages) is deleted when the command ends.
pub fn run(
    root: &Path,
    name: &str,
    msg_type: u32,
    timeout: Duration,
    data: &[u8],
    out: &mut dyn Write,
) -> Result<()> {
    let me = format!("tape-call-{}", std::process::id());
    let mut req = Requester::builder(&me)
        .root(root)
        .page_size(1 << 20)
        .ephemeral(true)
        .create()?;
    match req.call(name, msg_type, data, timeout) {
        Ok(reply) => {
            out.write_all(reply.data())?;
            out.write_all(b"\n")?;
            out.flush()?;
            Ok(())
        }
        Err(e @ (CallError::No { .. } | CallError::Timeout { .. })) => {
            Err(Unanswered::Local(e).into())
        }
        Err(e) => Err(e.into()),
    }
}

/// `--server URL` and its credentials: across machines, through NATS.
#[derive(Debug, Clone, clap::Args)]
pub struct RemoteArgs {
    /// Across machines: through this NATS server, the names exposed with
    /// `tape rpc expose` on any machine (comma-separated for a cluster's
    /// members).
    #[arg(long, value_name = "URL")]
    pub server: Option<String>,
    /// With --server: file holding the server's token.
    #[arg(long, value_name = "F", requires = "server", conflicts_with = "creds")]
    pub token_file: Option<PathBuf>,
    /// With --server: NATS credentials file (JWT and nkey seed).
    #[arg(long, value_name = "F", requires = "server")]
    pub creds: Option<PathBuf>,
}

impl RemoteArgs {
    /// The server, when `--server` was given.
    pub fn server(&self) -> Result<Option<Server>> {
        let Some(url) = &self.server else {
            return Ok(None);
        };
        let auth = Auth::from_args(self.token_file.as_deref(), self.creds.as_deref())
            .map_err(anyhow::Error::msg)?;
        Ok(Some(Server::resolve(Some(url), auth)))
    }
}

/// [`run`] through NATS: calls `name` exposed on any machine.
pub fn run_remote(
    server: &Server,
    name: &str,
    msg_type: u32,
    timeout: Duration,
    data: &[u8],
    out: &mut dyn Write,
) -> Result<()> {
    let mut req = RemoteRequester::connect(server)?;
    match req.call(name, msg_type, data, timeout) {
        Ok(reply) => {
            out.write_all(&reply.data)?;
            out.write_all(b"\n")?;
            out.flush()?;
            Ok(())
        }
        Err(e @ (RemoteError::No { .. } | RemoteError::Timeout { .. })) => {
            Err(Unanswered::Remote(e).into())
        }
        Err(e) => Err(e.into()),
    }
}
