//! The requests a client sends, and the decoder that tells a malformed
//! body from an unknown type.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{truncate, EndpointRole, ErrorCode, JournalId};

/// A message from a client to the service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Request {
    /// Handshake: must be the first message of every connection.
    Hello {
        /// Protocol version the client speaks.
        version: u32,
    },
    /// Register this connection as the writer of one journal.
    RegisterWriter {
        /// Absolute journal folder.
        dir: PathBuf,
        /// Journal name.
        journal: String,
    },
    /// Register this connection as a reader.
    RegisterReader {
        /// Reader name.
        name: String,
        /// Journals it reads (may be empty).
        #[serde(default)]
        journals: Vec<JournalId>,
    },
    /// Add one journal to this connection's reader registration.
    AddJournal {
        /// Absolute journal folder.
        dir: PathBuf,
        /// Journal name.
        journal: String,
    },
    /// Find the oldest registered peer with this name.
    Find {
        /// Peer name.
        name: String,
    },
    /// One page of registered peers, ordered by registration id.
    List {
        /// Zero-based page index.
        page: u64,
        /// Peers per page, 1 to 1000.
        per_page: u32,
    },
    /// Number of registered peers.
    Count,
    /// Every registered journal with its writer and readers.
    Journals,
    /// Register this connection as a request/reply endpoint that holds one
    /// journal for writing (see PROTOCOL.md, "Endpoints").
    RegisterEndpoint {
        /// Endpoint name, unique among live endpoints.
        name: String,
        /// `responder` or `requester`.
        role: EndpointRole,
        /// Absolute folder of the endpoint's journal.
        dir: PathBuf,
        /// The endpoint's journal name.
        journal: String,
    },
    /// Find the live endpoint (responder or requester) with this name.
    FindEndpoint {
        /// Endpoint name.
        name: String,
    },
    /// Receive every live endpoint now, then an `event` each time one
    /// registers or goes away.
    Watch,
}
/// The `type` values [`Request`] knows, to tell `unknown_type` from
/// `malformed`.
const REQUEST_TYPES: &[&str] = &[
    "hello",
    "register_writer",
    "register_reader",
    "add_journal",
    "find",
    "list",
    "count",
    "journals",
    "register_endpoint",
    "find_endpoint",
    "watch",
];
/// Why a frame body is not a valid request: the error code and message to
/// send back before closing the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// `malformed` or `unknown_type`.
    pub code: ErrorCode,
    /// One lower-case sentence.
    pub message: String,
}
/// Decodes a frame body into a request. Never panics; allocation is bounded
/// by the body size (serde_json also bounds nesting depth at 128).
pub fn decode_request(body: &[u8]) -> Result<Request, DecodeError> {
    let malformed = |what: String| DecodeError {
        code: ErrorCode::Malformed,
        message: what,
    };
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
        malformed(format!(
            "the message is not valid json ({e}): send one utf-8 json object per frame"
        ))
    })?;
    let ty =
        match value.get("type") {
            Some(serde_json::Value::String(s)) => s.clone(),
            _ => return Err(malformed(
                "the message is not a json object with a string \"type\" field: see PROTOCOL.md"
                    .into(),
            )),
        };
    if !REQUEST_TYPES.contains(&ty.as_str()) {
        return Err(DecodeError {
            code: ErrorCode::UnknownType,
            message: format!(
                "unknown message type {:?}: use one of {}",
                truncate(&ty, 64),
                REQUEST_TYPES.join(", ")
            ),
        });
    }
    serde_json::from_value(value).map_err(|e| {
        malformed(format!(
            "bad fields in a {ty} message ({e}): see PROTOCOL.md for its fields"
        ))
    })
}
