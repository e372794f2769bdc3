//! Remote calls: a local responder called from other machines through NATS
//! request/reply (`tape rpc expose` on the responder's box, `tape call
//! NAME --server URL` and [`RemoteRequester`] anywhere).
//!
//! # The path of a call
//!
//! ```text
//! caller ── tape.rpc.<escaped NAME> ──▶ nats-server ──▶ exposer (queue group tape.rpc)
//!                                                         │ Requester::send_nowait (journal rpc.tape-expose)
//!                                                         ▼
//!                                                   local responder NAME (journal rpc.NAME)
//! caller ◀── <caller's inbox>.<id> ── nats-server ◀── exposer (the outcome in headers)
//! ```
//!
//! The exposer ([`expose()`]) forwards each request as a local
//! [`tape_rpc::Requester`] call, so requests and replies are frames of the
//! responder's box like any local call (`tape tail rpc.tape-expose
//! rpc.NAME`). Calls are not serialized: each is sent with
//! `send_nowait`, and the replies are taken as they come, many in flight.
//!
//! # Subjects (the name rule of [`crate::names`])
//!
//! | what | subject |
//! |---|---|
//! | calls to `NAME` | `tape.rpc.<escaped NAME>` (`_` → `__`, `.` → `_d`), queue group `tape.rpc` |
//! | who exposes what | `tape.online`, answered by every exposer |
//! | a caller's replies | `<its inbox>.<id>`, one wildcard subscription per caller |
//!
//! An exposer subscribes to a name's subject only while the local service
//! lists a live responder of that name (it watches the service's endpoint
//! events): a call to a name that no machine has online then meets no
//! subscriber, and the server answers the caller at once with the
//! no-responders status (503; the client announces `headers` and
//! `no_responders`, which nats-server 2.9.10 honours). Two exposers of one
//! name (two boxes, or two on one box) share its calls through the queue
//! group. A call that comes in the moment between the responder going
//! away and the exposer hearing of it is answered NO by the exposer.
//!
//! # Headers
//!
//! A request carries the data as payload and:
//!
//! | header | value |
//! |---|---|
//! | `Tape-Id` | the request's id (decimal), unique per caller; also the last token of its reply subject |
//! | `Tape-Type` | the message type (decimal u32, default 0) |
//! | `Tape-Timeout-Us` | the caller's timeout in µs: the local call's deadline |
//!
//! The reply carries the responder's data as payload and:
//!
//! | header | value |
//! |---|---|
//! | `Tape-Id` | the request's id, checked by the caller against the reply subject's |
//! | `Tape-Outcome` | `OK`, `NO` (the responder is not online there), `TIMEOUT` (no local reply by the deadline) or `ERROR` |
//! | `Tape-Type` | the reply's message type (with `OK`) |
//! | `Tape-Error` | one sentence (with `ERROR`: a request the exposer could not forward) |
//! | `Tape-Host` | the exposer's host name |
//!
//! A reply is matched to its call by id: a reply whose id is not waiting
//! (late, or a second one) is counted ([`RemoteStats`]) and dropped, never
//! handed to another call.
//!
//! # Presence
//!
//! Every exposer answers a request on `tape.online` with one JSON object
//! ([`Exposer`]): its host, root, pid, and each exposed name with whether
//! its responder is online there (pid, since). [`online()`] sends one
//! request and gathers the answers (scatter/gather, core NATS only, so it
//! shows what runs now: a killed exposer answers nothing): until
//! [`GATHER_QUIET`] passes with no new answer, at most [`GATHER_MAX`]; with
//! no exposer at all the server's no-responders status ends it at once.
//! `tape online --server` finds, pages and counts the (machine, name)
//! entries.
//!
//! # What happens when
//!
//! | fault | what the caller gets |
//! |---|---|
//! | nobody exposes the name, or no exposer has its responder online | NO at once (no-responders) |
//! | the responder went down a moment ago | NO from the exposer |
//! | the responder is stopped (SIGSTOP) or slow | TIMEOUT at the caller's deadline |
//! | the exposer is killed with calls in flight | those calls TIMEOUT; none is answered twice (the request may have run on the responder, as with a local TIMEOUT); new calls go to another exposer, or NO |
//! | wrong token | a one-line error, exit 1; nothing is sent, nothing is made on the root |

mod expose;
mod inbound;
mod presence;
mod requester;
mod watch;

pub use expose::{expose, ExposeOptions, BUSY, REQUESTER};
pub use presence::{online, Exposed, Exposer};
pub use requester::{RemotePending, RemoteReply, RemoteRequester, RemoteStats};

use std::time::Duration;

/// Prefix of the subject of an exposed name.
pub const SUBJECT_PREFIX: &str = "tape.rpc.";
/// The queue group of every exposer's subscriptions.
pub const QUEUE_GROUP: &str = "tape.rpc";
/// The subject every exposer answers with what it exposes.
pub const ONLINE_SUBJECT: &str = "tape.online";
/// How long [`online()`] goes on gathering after the last answer.
pub const GATHER_QUIET: Duration = Duration::from_millis(300);
/// The longest [`online()`] gathers.
pub const GATHER_MAX: Duration = Duration::from_secs(3);

/// Header names.
pub mod header {
    /// The request's id.
    pub const ID: &str = "Tape-Id";
    /// Message type of the request or of the reply.
    pub const TYPE: &str = "Tape-Type";
    /// The caller's timeout, µs.
    pub const TIMEOUT_US: &str = "Tape-Timeout-Us";
    /// `OK`, `NO`, `TIMEOUT` or `ERROR`.
    pub const OUTCOME: &str = "Tape-Outcome";
    /// With `ERROR`: what went wrong.
    pub const ERROR: &str = "Tape-Error";
    /// The exposer's host name.
    pub const HOST: &str = "Tape-Host";
}

/// The subject calls to `name` are sent on: `tape.rpc.<escaped name>`.
pub fn subject_of(name: &str) -> String {
    format!("{SUBJECT_PREFIX}{}", crate::names::escape(name))
}

/// The name a call subject stands for.
pub fn name_of(subject: &str) -> Option<String> {
    let s = subject.strip_prefix(SUBJECT_PREFIX)?;
    // A name's escape is the escape of a journal name (without the `rpc.`).
    crate::names::unescape(s)
}

/// Why a remote call got no reply, or could not be made.
#[derive(Debug, Clone)]
pub enum RemoteError {
    /// NO: no machine exposes `dest` with its responder online (`host`
    /// `None`: nobody answered the subject), or the exposer on `host` says
    /// its responder is not online. Nothing ran.
    No {
        /// The name called.
        dest: String,
        /// The exposer that said NO, if one did.
        host: Option<String>,
    },
    /// TIMEOUT: no reply by the deadline.
    Timeout {
        /// The name called.
        dest: String,
        /// The timeout given.
        after: Duration,
    },
    /// The exposer could not forward the request, or the reply was not a
    /// tape reply; the text says which.
    Failed {
        /// The name called.
        dest: String,
        /// One sentence.
        message: String,
    },
    /// Anything else (the server, the credentials, a bad name); the text
    /// says what to do.
    Other(String),
}

impl std::fmt::Display for RemoteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RemoteError::No { dest, host: None } => write!(
                f,
                "no machine exposes {dest} with its responder online: start it and `tape rpc expose {dest}` there, or check with `tape online --server`"
            ),
            RemoteError::No {
                dest,
                host: Some(h),
            } => write!(
                f,
                "{dest} is exposed on {h} but its responder is not online there: start it, or check with `tape online --server`"
            ),
            RemoteError::Timeout { dest, after } => write!(
                f,
                "no reply from {dest} within {} ms: it may be busy or stopped; try a longer timeout",
                after.as_millis()
            ),
            RemoteError::Failed { dest, message } => write!(f, "calling {dest}: {message}"),
            RemoteError::Other(s) => f.write_str(s),
        }
    }
}

impl std::error::Error for RemoteError {}

/// Checks a name a call can be made to (a tape-rpc endpoint name).
pub(crate) fn check_name(name: &str) -> Result<(), RemoteError> {
    tape_rpc::journal_name(name)
        .map(|_| ())
        .map_err(|e| RemoteError::Other(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_round_trip() {
        for n in ["echo", "md.sh", "a_b", "x-y.z_"] {
            let s = subject_of(n);
            assert!(!s[SUBJECT_PREFIX.len()..].contains('.'), "{s}");
            assert_eq!(name_of(&s).as_deref(), Some(n));
        }
        assert_eq!(subject_of("md.sh"), "tape.rpc.md_dsh");
        assert_eq!(name_of("tape.rpc.md_x"), None);
        assert_eq!(name_of("tape.journal.md"), None);
    }
}
