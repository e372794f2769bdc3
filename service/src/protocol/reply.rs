//! The replies the service sends: exactly one per request, in request
//! order, and the events of a watching connection.

use serde::{Deserialize, Serialize};

use super::{Change, ErrorCode, JournalInfo, Peer};

/// A message from the service to a client: exactly one per request, in
/// request order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Reply {
    /// Answer to `hello`.
    Hello {
        /// Protocol version of the service.
        version: u32,
        /// Process id of the service.
        service_pid: u32,
    },
    /// Answer to `register_writer` / `register_reader`.
    Registered {
        /// The new registration id.
        id: u64,
    },
    /// Answer to `add_journal`.
    Ok,
    /// Answer to `find`.
    Peer {
        /// The peer, or `null` when none has that name.
        peer: Option<Peer>,
    },
    /// Answer to `list`.
    Peers {
        /// Total number of registered peers.
        total: u64,
        /// The page asked for (possibly empty).
        peers: Vec<Peer>,
    },
    /// Answer to `count`.
    Count {
        /// Number of registered peers.
        count: u64,
    },
    /// Answer to `journals`.
    Journals {
        /// Registered journals, ordered by `(dir, journal)`.
        journals: Vec<JournalInfo>,
    },
    /// Answer to `watch`: every live endpoint, by registration id. Events
    /// follow on the same connection.
    Watching {
        /// Live responders and requesters.
        endpoints: Vec<Peer>,
    },
    /// Sent unasked on a watching connection: an endpoint came or went.
    Event {
        /// Up or down.
        change: Change,
        /// The endpoint, as it was registered.
        peer: Peer,
    },
    /// The request failed.
    Error {
        /// What went wrong.
        code: ErrorCode,
        /// One lower-case sentence for people.
        message: String,
        /// With `held`: the pid of the writer holding the journal.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pid: Option<u32>,
    },
}

impl Reply {
    /// An error reply without a pid.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Reply {
        Reply::Error {
            code,
            message: message.into(),
            pid: None,
        }
    }
}
/// Decodes a reply body (client side).
pub fn decode_reply(body: &[u8]) -> Result<Reply, serde_json::Error> {
    serde_json::from_slice(body)
}
