//! The tape service: one writer per journal, and who is online.
//!
//! One service runs per root (`tape service --root DIR`). Writers and
//! readers register with it over the Unix socket `<root>/system/service.sock`;
//! a registration lives exactly as long as its connection, so a writer that
//! exits or is killed frees its journal at once. The service is on no hot
//! path: it is asked at registration time and for `tape ls`, never per
//! frame.
//!
//! # Map
//!
//! | part | what it is |
//! |---|---|
//! | [`run`], [`shutdown_on_signals`] | the daemon, blocking (for `tape service`) |
//! | [`Service`] | the same daemon on a thread of this process; dropping it stops it |
//! | [`Client`] | a connection for the queries [`find`](Client::find), [`list`](Client::list), [`count`](Client::count), [`journals`](Client::journals) |
//! | [`WriterLease`] | "I am the one writer of this journal", renewed on its own after a service restart |
//! | [`ReaderLease`] | "I read these journals", likewise |
//! | [`Peer`], [`JournalInfo`], [`JournalId`] | what the queries return |
//! | [`Client::register_endpoint`], [`Client::watch`], [`Watch`] | request/reply endpoints (the `tape-rpc` crate builds on them) and their events |
//! | [`protocol`] | framing and messages; `service/PROTOCOL.md` is the spec |
//! | [`Retainer`], [`Retention`] | retention rules the service applies on its own (`tape service --retain`) |
//! | [`status_socket`] | `<root>/system/<kind>-<pid>-<tag>.sock`: what a bridge or NATS connector of the root is doing, one JSON object per connection (`tape top`, `/metrics`) |
//!
//! Errors: one enum per operation, [`ServiceError`] (start or run the
//! daemon), [`ConnectError`] (reach it), [`QueryError`] (ask it),
//! [`RegisterError`] (register with it).
//!
//! The one-writer rule *across a service restart* is not this crate's: the
//! journal crate holds an `flock` on the journal itself, which dies with the
//! writer process. After a restart a lease re-registers; if the service says
//! someone else holds the journal, the lease logs one line to stderr and
//! keeps retrying.
//!
//! # Example
//!
//! ```
//! use tape_service::{Client, ReaderLease, RegisterError, Service, WriterLease};
//!
//! let root = tempfile::tempdir()?;
//! let service = Service::start(root.path())?;
//! let journals = root.path().join("journal");
//!
//! let writer = WriterLease::acquire(root.path(), &journals, "md")?;
//! // A second writer of the same journal is refused, naming the holder.
//! match WriterLease::acquire(root.path(), &journals, "md") {
//!     Err(RegisterError::Held { pid, .. }) => assert_eq!(pid, std::process::id()),
//!     other => panic!("expected held, got {other:?}"),
//! }
//! let reader = ReaderLease::acquire(root.path(), "strategy", &[(journals.clone(), "md".into())])?;
//!
//! let mut client = Client::connect(root.path())?;
//! assert_eq!(client.count()?, 2);
//! assert_eq!(client.find("strategy")?.unwrap().pid, std::process::id());
//! let md = &client.journals()?[0];
//! assert_eq!(md.writer.as_ref().unwrap().pid, std::process::id());
//! assert_eq!(md.readers[0].name, "strategy");
//!
//! drop(writer); // the journal is free at once
//! let _again = WriterLease::acquire(root.path(), &journals, "md")?;
//! # drop(reader);
//! drop(service);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]
#![warn(missing_docs)]

use std::path::{Path, PathBuf};

mod backoff;
mod client;
mod daemon;
mod lease;
pub mod protocol;
mod registry;
pub mod retention;
pub mod status_socket;
pub mod units;

pub use backoff::Backoff;
pub use client::{Client, ConnectError, QueryError, Watch};
pub use daemon::{
    run, shutdown_on_signals, Counters, Service, ServiceError, HANDSHAKE_DEADLINE, MAX_CONNECTIONS,
};
pub use lease::{ReaderLease, RegisterError, WriterLease};
pub use protocol::{
    endpoint_id, Change, EndpointRole, ErrorCode, JournalId, JournalInfo, JournalPeer, Peer,
    PeerKind,
};
pub use retention::{Retainer, Retention};

/// The service socket of `root`: `<root>/system/service.sock`.
pub fn socket_path(root: &Path) -> PathBuf {
    root.join("system").join("service.sock")
}

/// The lock file that makes one service per root:
/// `<root>/system/service.lock` (it holds the service's pid).
pub fn lock_path(root: &Path) -> PathBuf {
    root.join("system").join("service.lock")
}
