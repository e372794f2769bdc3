//! `tape call NAME [DATA]`: one request to a responder, its reply on
//! standard output; distinct exit codes for NO and TIMEOUT.

use anyhow::Result;
use std::io::Write;
use std::path::Path;
use std::time::Duration;
use tape_rpc::{CallError, Requester};

/// Exit status when no responder of that name is online (NO).
pub const EXIT_NO: u8 = 3;
/// Exit status when no reply came in time (TIMEOUT).
pub const EXIT_TIMEOUT: u8 = 4;

/// A call that ended with NO or TIMEOUT: `main` turns it into
/// [`EXIT_NO`] or [`EXIT_TIMEOUT`].
#[derive(Debug)]
pub struct Unanswered(pub CallError);

impl Unanswered {
    /// The exit status for this outcome.
    pub fn exit_code(&self) -> u8 {
        match self.0 {
            CallError::No { .. } => EXIT_NO,
            _ => EXIT_TIMEOUT,
        }
    }
}

impl std::fmt::Display for Unanswered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
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
        Err(e @ (CallError::No { .. } | CallError::Timeout { .. })) => Err(Unanswered(e).into()),
        Err(e) => Err(e.into()),
    }
}
