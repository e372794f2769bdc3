//! `tape rpc expose NAME...`: local responders callable from other
//! machines through NATS (the library is `tape_nats::remote`).

use super::nats::ServerArgs;
use anyhow::Result;
use std::path::PathBuf;
use tape_nats::remote::{expose, ExposeOptions};

/// The subcommands of `tape rpc`.
#[derive(Debug, clap::Subcommand)]
pub enum RpcCommand {
    /// Make local responders callable from other machines through NATS.
    ///
    /// Takes the calls to each NAME on subject tape.rpc.<escaped NAME>
    /// (queue group tape.rpc: several exposers of one name share its
    /// calls) while the root's service lists a live responder NAME, and
    /// forwards each as a local call through the requester tape-expose
    /// (so requests and replies are journaled here like local ones:
    /// `tape tail rpc.tape-expose rpc.NAME`). The outcome goes back in
    /// headers: OK with the reply, NO (the responder is not online here),
    /// TIMEOUT. Answers `tape online --server` with the names and whether
    /// each responder is online. Runs until SIGINT or SIGTERM; exits
    /// non-zero on what retrying cannot mend (refused credentials, no
    /// local service, a bad name); waits for a server that is away.
    Expose(ExposeArgs),
}

/// Arguments of `tape rpc expose`.
#[derive(Debug, clap::Args)]
pub struct ExposeArgs {
    /// Names of the local responders to expose.
    #[arg(value_name = "NAME", required = true)]
    pub names: Vec<String>,
    /// Root folder (default: $TAPE_ROOT, else /tmp/trading).
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// Runs a `tape rpc` subcommand.
pub fn run(c: RpcCommand) -> Result<()> {
    match c {
        RpcCommand::Expose(a) => {
            let stop = tape_service::shutdown_on_signals()?;
            let root = tape_journal::resolve_root(a.root.as_deref());
            let opts = ExposeOptions::new(root, a.server.server()?, a.names);
            expose(&opts, stop).map_err(anyhow::Error::msg)
        }
    }
}
