//! Presence: who is subscribed to a `tape bridge serve` and how far behind
//! each one is, and how far each `tape bridge pull` has got.
//!
//! Each server publishes a status socket
//! `<root>/system/bridge-<pid>-<port>.sock`, each pull
//! `<root>/system/bridge-pull-<pid>-<n>.sock` (mode 0660, like the
//! service's; [`tape_service::status_socket`]). A client connects and
//! reads one JSON object ([`ServerStatus`], [`PullStatus`]) followed by a
//! newline; the process then closes. Nothing is sent to it. [`query`] and
//! [`query_pulls`] ask every one of a root; sockets left by a process that
//! was killed are removed on the way.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;
pub use tape_service::status_socket::StatusError;

/// One server and its subscribers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerStatus {
    /// The server's process id.
    pub pid: u32,
    /// The address it listens on.
    pub listen: String,
    /// The root it serves.
    pub root: String,
    /// The journals it exposes; `null`: every journal of the root.
    pub journals: Option<Vec<String>>,
    /// When it started, ns since the Unix epoch.
    pub since_ns: i64,
    /// Who is connected, in order of arrival.
    pub subscribers: Vec<SubscriberStatus>,
}

/// One connected subscriber.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriberStatus {
    /// Connection id, unique within the server's run.
    pub id: u64,
    /// The account id it gave.
    pub account: String,
    /// Its address and port.
    pub address: String,
    /// When it subscribed, ns since the Unix epoch.
    pub since_ns: i64,
    /// Its journals.
    pub journals: Vec<JournalStatus>,
}

/// One journal of a subscriber.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalStatus {
    /// The source journal.
    pub journal: String,
    /// The sequence number it asked to start from (0: the first frame).
    pub from_seq: u64,
    /// Last sequence number sent to it.
    pub seq_sent: u64,
    /// Last sequence number its replica reported holding.
    pub seq_acked: u64,
    /// Last sequence number of the source journal now.
    pub last_seq: u64,
    /// Frames the source has that were not sent yet (`last_seq - seq_sent`).
    pub lag: u64,
    /// Frames sent to this subscriber since it subscribed.
    #[serde(default)]
    pub frames: u64,
    /// Payload bytes of those frames.
    #[serde(default)]
    pub bytes: u64,
}

/// The status socket kind of `tape bridge serve` (`bridge-<pid>-<port>.sock`).
pub const SERVE_KIND: &str = "bridge";
/// The status socket kind of `tape bridge pull` (`bridge-pull-<pid>-<n>.sock`).
pub const PULL_KIND: &str = "bridge-pull";

/// How long [`query`] and [`query_pulls`] wait for one process by default
/// (`tape bridge status`).
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// The status socket of the server with `pid` listening on `port`.
pub fn socket_path(root: &Path, pid: u32, port: u16) -> PathBuf {
    tape_service::status_socket::socket_path(root, SERVE_KIND, pid, &port.to_string())
}

/// The status of every `tape bridge serve` running on `root`, waiting at
/// most `timeout` for each.
pub fn query(root: &Path, timeout: Duration) -> Vec<Result<ServerStatus, StatusError>> {
    tape_service::status_socket::query(root, SERVE_KIND, timeout)
}

/// One running `tape bridge pull`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullStatus {
    /// Its process id.
    pub pid: u32,
    /// The server's address as given (`--from`).
    pub from: String,
    /// The account id it registers.
    pub account: String,
    /// The local root its replicas are in.
    pub root: String,
    /// When it started, ns since the Unix epoch.
    pub since_ns: i64,
    /// Whether a connection is subscribed now.
    pub connected: bool,
    /// Connections subscribed after the first one (the server restarted,
    /// the network or a check cut the connection).
    pub reconnects: u64,
    /// Its journals.
    pub journals: Vec<PullJournalStatus>,
}

/// One journal of a pull.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullJournalStatus {
    /// The source journal.
    pub journal: String,
    /// The local replica.
    pub replica: String,
    /// The replica's last sequence number.
    pub seq: u64,
    /// The source's last sequence number as far as the pull knows: what
    /// the server said at the subscription, or the last frame received
    /// since, whichever is higher. Frames the server has not sent are not
    /// known here (the serve side's lag counts them).
    pub last_seq: u64,
    /// `last_seq - seq`.
    pub lag: u64,
    /// Frames written to the replica since the pull started.
    pub frames: u64,
    /// Payload bytes of those frames.
    pub bytes: u64,
}

/// The status of every `tape bridge pull` running on `root`, waiting at
/// most `timeout` for each.
pub fn query_pulls(root: &Path, timeout: Duration) -> Vec<Result<PullStatus, StatusError>> {
    tape_service::status_socket::query(root, PULL_KIND, timeout)
}
