//! tape-rpc: request/reply over journals, with OK, NO and TIMEOUT, pushed
//! events, and who is online.
//!
//! Two kinds of endpoint, each a process (or a part of one) that registers
//! a name with the `tape service` and writes one journal of its own,
//! `<root>/journal/rpc.<name>`:
//!
//! - a [`Responder`] reads the journals of the requesters the service tells
//!   it about (also those that come later), answers each request addressed
//!   to it with one reply in its own journal, and may publish events there
//!   for everyone ([`Responder::publish`]);
//! - a [`Requester`] writes requests into its journal and reads the
//!   replies from the responder's journal: [`Requester::call`] answers
//!   [`Reply`] (OK), [`CallError::No`] at once when the service knows no
//!   live responder of that name, or [`CallError::Timeout`] at the
//!   deadline. [`Requester::send_nowait`] returns once the request is
//!   published; its reply is read later with [`Requester::poll_reply`] or
//!   [`Requester::wait_reply`].
//!
//! | part | what it is |
//! |---|---|
//! | [`Responder`], [`ResponderBuilder`] | answers requests: [`poll`](Responder::poll) / [`run`](Responder::run) with a handler that writes through [`Respond`]; [`publish`](Responder::publish) events |
//! | [`Requester`], [`RequesterBuilder`] | [`call`](Requester::call), [`send_nowait`](Requester::send_nowait) + [`wait_reply`](Requester::wait_reply) / [`poll_reply`](Requester::poll_reply); presence: [`find`](Requester::find), [`list`](Requester::list), [`count`](Requester::count) |
//! | [`Request`], [`Reply`], [`OwnedReply`], [`Pending`] | what goes through, borrowed from the journals |
//! | [`Events`] | follows the events a responder publishes (no service needed) |
//! | [`endpoint_id`], [`journal_name`] | an endpoint's id in frames and its journal |
//! | [`EndpointCreateError`], [`CallError`], [`ServeError`], [`ReplyError`] | one error enum per operation |
//!
//! The binaries `tape call` and `tape online` are built on it, and so are
//! the example responders `tape-echo` and `tape-ticker` (in tools/).
//!
//! Each endpoint runs three helper threads that sleep nearly all the time:
//! its registration (which watches the service for endpoints coming and
//! going), the page helper (maps the next page of each journal it reads
//! ahead of time), and its journal's page preparer.
//!
//! Every request and reply is a frame in a journal: recorded, ordered, and
//! replayable with `tape tail rpc.<name>`. journal/FORMAT.md ("Request/reply
//! frames") gives the layout; service/PROTOCOL.md (section 4a) the
//! registration. In short: a request's `corr` is its own sequence number,
//! its payload starts with its timeout (its deadline is its write time plus
//! that), and its `source`/`dest` are endpoint ids ([`endpoint_id`], a hash
//! of the name); a reply carries the request's `corr`, and the requester's
//! id in `dest`; an event has `corr` 0.
//!
//! # Guarantees
//!
//! - **Correlation.** A reply is matched to its call by `corr`; a reply
//!   that comes after its call timed out is dropped, never handed to
//!   another call. Many calls may be in flight from one requester
//!   ([`Requester::send_nowait`]); replies that come while waiting for
//!   another are kept until asked for.
//! - **Restart.** A responder that crashes and starts again under the same
//!   name reads its own journal first and finds, per requester, the highest
//!   request sequence it answered; it answers nothing twice, answers the
//!   requests published while it was down that are not past their
//!   deadline, and drops the others (their callers got TIMEOUT). Those are
//!   the requests in flight when it went down, and any sent before the
//!   requester heard it had gone: once the service reports it gone, calls to
//!   it get NO and publish nothing until it is back.
//! - **No system call on the hot path.** A call appends to a mapped page and
//!   polls another; the service is asked only when a name is not known to
//!   be live (to answer NO for sure) and by a background thread that
//!   watches endpoints come and go. Waiting spins, then yields, then parks
//!   ([`tape_reader::Idle`]), so pollers never starve the process they wait
//!   for on a small box.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use tape_rpc::{CallError, Requester, Responder};
//!
//! # let root = tempfile::tempdir()?;
//! # let _service = tape_service::Service::start(root.path())?;
//! # let root = root.path();
//! let mut echo = Responder::builder("echo").root(root).page_size(1 << 20).create()?;
//! let server = std::thread::spawn(move || {
//!     // Answer one request: the same payload, as text in upper case.
//!     while !echo.poll(|req, out| {
//!         let _ = out.reply(req.msg_type(), &req.data().to_ascii_uppercase());
//!     })? {}
//!     Ok::<_, tape_rpc::ServeError>(())
//! });
//!
//! let mut client = Requester::builder("client").root(root).page_size(1 << 20).create()?;
//! let reply = client.call("echo", 7, b"hello", Duration::from_secs(30))?;
//! assert_eq!((reply.msg_type(), reply.data()), (7, &b"HELLO"[..]));
//! assert!(matches!(
//!     client.call("nobody", 7, b"?", Duration::from_secs(1)),
//!     Err(CallError::No { .. })
//! ));
//! server.join().unwrap()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

use std::io;
use std::path::Path;
use std::time::Duration;

use tape_journal::{OpenError, ReadError, WriteError};
use tape_service::{ConnectError, QueryError};

mod events;
mod registration;
mod requester;
mod responder;

pub use events::Events;
pub use requester::{OwnedReply, Pending, Reply, Requester, RequesterBuilder};
pub use responder::{ReplyError, Request, Respond, Responder, ResponderBuilder, ResponderStats};
pub use tape_journal::Start;
pub use tape_service::{endpoint_id, Peer, PeerKind};

/// Prefix of an endpoint's journal name: endpoint `echo` writes journal
/// `rpc.echo`.
pub const JOURNAL_PREFIX: &str = "rpc.";

/// Longest endpoint name, so that its journal name fits the 64 characters
/// of a journal name.
pub const MAX_NAME_LEN: usize = tape_journal::files::MAX_NAME_LEN - JOURNAL_PREFIX.len();

/// Bytes at the start of a request's payload holding its timeout: a `u64`,
/// little-endian, in ns; the request's deadline is the frame's `time_ns`
/// plus this (0 = no deadline).
pub const TIMEOUT_LEN: usize = 8;

/// Page size of an endpoint journal that does not exist yet, unless the
/// builder says otherwise: 16 MiB.
pub const DEFAULT_PAGE_SIZE: u64 = 16 << 20;

/// The journal an endpoint named `name` writes: `rpc.<name>`. Fails, with
/// a sentence saying why, when `name` is not 1 to 60 characters from
/// `A-Z a-z 0-9 _ - .` not starting with a dot.
pub fn journal_name(name: &str) -> Result<String, EndpointCreateError> {
    let bad = || EndpointCreateError::BadName(name.to_string());
    tape_journal::check_name(name).map_err(|_| bad())?;
    if name.len() > MAX_NAME_LEN {
        return Err(bad());
    }
    let journal = format!("{JOURNAL_PREFIX}{name}");
    tape_journal::check_name(&journal).map_err(|_| bad())?;
    Ok(journal)
}

/// Why a [`Responder`] or [`Requester`] could not be created. Nothing is
/// registered when this is returned.
#[derive(Debug)]
#[non_exhaustive]
pub enum EndpointCreateError {
    /// The name cannot be an endpoint name.
    BadName(String),
    /// The endpoint's journal could not be opened or created: its writer
    /// lock is held (the endpoint runs already), it is damaged, or the disk
    /// refused.
    Open(OpenError),
    /// The endpoint's own journal could not be read back at start (a
    /// responder reads it to find what it answered).
    Read(ReadError),
    /// No service runs on the root, or it cannot be reached.
    Connect(ConnectError),
    /// A live endpoint has this name (or a writer holds its journal).
    Online {
        /// The endpoint name.
        name: String,
        /// Pid of the process that has it.
        pid: u32,
    },
    /// The service refused the registration (for example: the name's
    /// endpoint id equals a live endpoint's), or the connection broke.
    Query(QueryError),
    /// A background thread could not be started.
    Spawn(io::Error),
}

impl std::fmt::Display for EndpointCreateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EndpointCreateError::BadName(n) => write!(
                f,
                "bad endpoint name {n:?}: use 1 to {MAX_NAME_LEN} characters from A-Z a-z 0-9 _ - . not starting with a dot"
            ),
            EndpointCreateError::Open(e) => write!(f, "cannot open the endpoint's journal: {e}"),
            EndpointCreateError::Read(e) => write!(f, "cannot read the endpoint's own journal: {e}"),
            EndpointCreateError::Connect(e) => e.fmt(f),
            EndpointCreateError::Online { name, pid } => write!(
                f,
                "endpoint {name} is already online (pid {pid}): stop it or choose another name"
            ),
            EndpointCreateError::Query(e) => e.fmt(f),
            EndpointCreateError::Spawn(e) => write!(
                f,
                "cannot start the endpoint's background thread ({e}): the process is out of resources"
            ),
        }
    }
}

impl std::error::Error for EndpointCreateError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            EndpointCreateError::Open(e) => Some(e),
            EndpointCreateError::Read(e) => Some(e),
            EndpointCreateError::Connect(e) => Some(e),
            EndpointCreateError::Query(e) => Some(e),
            EndpointCreateError::Spawn(e) => Some(e),
            _ => None,
        }
    }
}

impl From<ConnectError> for EndpointCreateError {
    fn from(e: ConnectError) -> Self {
        EndpointCreateError::Connect(e)
    }
}

impl From<QueryError> for EndpointCreateError {
    fn from(e: QueryError) -> Self {
        EndpointCreateError::Query(e)
    }
}

/// Why a call (or a reply asked for later) did not get a reply.
#[derive(Debug)]
#[non_exhaustive]
pub enum CallError {
    /// NO: the service knows no live responder of this name (or could not
    /// be asked). Nothing was sent.
    No {
        /// The name called.
        dest: String,
    },
    /// TIMEOUT: no reply came before the deadline. The request stays in
    /// the journal; a reply that comes later is dropped.
    Timeout {
        /// The name called.
        dest: String,
        /// The timeout the call was given.
        after: Duration,
    },
    /// The request could not be written (too large for a page, or the next
    /// page could not be made). Nothing was sent.
    Send(WriteError),
    /// The responder's journal could not be opened.
    Open {
        /// The name called.
        dest: String,
        /// Why.
        error: OpenError,
    },
    /// The responder's journal is damaged where the replies are read.
    Read {
        /// The name called.
        dest: String,
        /// Where and how.
        error: ReadError,
    },
    /// [`Requester::poll_reply`] or [`Requester::wait_reply`] of a request
    /// that is not waiting: its reply was taken already, or it was
    /// forgotten after its deadline.
    NotWaiting {
        /// Its correlation id.
        corr: u64,
    },
    /// Too many requests sent with [`Requester::send_nowait`] are still
    /// waiting for a reply (see [`MAX_WAITING`]). Nothing was sent.
    TooManyWaiting,
}

/// Most requests sent with [`Requester::send_nowait`] whose replies are not
/// taken yet; those past their deadline are forgotten to make room.
pub const MAX_WAITING: usize = 65536;

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::No { dest } => write!(
                f,
                "no endpoint {dest} is online: start it, or check the name with `tape online`"
            ),
            CallError::Timeout { dest, after } => write!(
                f,
                "no reply from {dest} within {} ms: it may be busy or stopped; try a longer timeout",
                after.as_millis()
            ),
            CallError::Send(e) => write!(f, "cannot send the request: {e}"),
            CallError::Open { dest, error } => {
                write!(f, "cannot open the journal of {dest}: {error}")
            }
            CallError::Read { dest, error } => {
                write!(f, "cannot read the replies of {dest}: {error}")
            }
            CallError::NotWaiting { corr } => write!(
                f,
                "request {corr} is not waiting for a reply: its reply was taken already or it expired"
            ),
            CallError::TooManyWaiting => write!(
                f,
                "{MAX_WAITING} requests are waiting for replies: take some replies before sending more"
            ),
        }
    }
}

impl std::error::Error for CallError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CallError::Send(e) => Some(e),
            CallError::Open { error, .. } => Some(error),
            CallError::Read { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// Why [`Responder::poll`] reports a problem. The responder stays usable.
#[derive(Debug)]
#[non_exhaustive]
pub enum ServeError {
    /// A reply (or an event) could not be written: the page is full and the
    /// next could not be made, or a payload is larger than a page. The
    /// request is not counted as answered.
    Reply {
        /// The requester.
        requester: String,
        /// The request's sequence number in the requester's journal.
        seq: u64,
        /// What went wrong.
        error: WriteError,
    },
    /// A requester's journal cannot be opened, or is damaged where it is
    /// read: the responder stops reading it and serves the others.
    Requester {
        /// The requester.
        name: String,
        /// What went wrong, in one sentence.
        message: String,
    },
}

impl std::fmt::Display for ServeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServeError::Reply {
                requester,
                seq,
                error,
            } => write!(
                f,
                "cannot write the reply to request {seq} of {requester}: {error}"
            ),
            ServeError::Requester { name, message } => write!(
                f,
                "stopped reading the requests of {name}: {message}; run `tape verify` on its journal"
            ),
        }
    }
}

impl std::error::Error for ServeError {}

/// Nanoseconds in `d`, saturating at `i64::MAX`.
fn nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// An endpoint's own journal `rpc.<name>`, opened (created, or recovered)
/// for appending.
struct OwnJournal {
    root: std::path::PathBuf,
    dir: std::path::PathBuf,
    journal: String,
    appender: tape_journal::Appender,
}

/// Opens the journal of endpoint `name` under `root` (default: the
/// environment's), in `dir` (default `<root>/journal`).
fn open_own_journal(
    name: &str,
    root: Option<&Path>,
    dir: Option<std::path::PathBuf>,
    page_size: u64,
) -> Result<OwnJournal, EndpointCreateError> {
    let journal = journal_name(name)?;
    let root = tape_journal::resolve_root(root);
    let dir = absolute(&dir.unwrap_or_else(|| tape_journal::journal_dir(&root)))?;
    let opts = tape_journal::AppendOptions {
        page_size,
        ..tape_journal::AppendOptions::default()
    };
    let appender =
        tape_journal::Appender::create(&dir, &journal, opts).map_err(EndpointCreateError::Open)?;
    Ok(OwnJournal {
        root,
        dir,
        journal,
        appender,
    })
}

/// The absolute form of a journal folder, as the service wants it.
fn absolute(dir: &Path) -> Result<std::path::PathBuf, EndpointCreateError> {
    std::path::absolute(dir).map_err(|e| {
        EndpointCreateError::Open(OpenError::Io {
            path: dir.to_path_buf(),
            source: e,
        })
    })
}
