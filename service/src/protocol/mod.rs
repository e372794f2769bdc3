//! The wire protocol: framing, the messages both sides exchange, and the
//! decoder that turns bytes from the socket into a [`Request`].
//!
//! service/PROTOCOL.md is the normative description; this module is its
//! implementation. Every message is a frame: a `u32` little-endian length
//! followed by that many bytes of one UTF-8 JSON object whose `"type"` field
//! names the message. A frame is checked against its limit *before* any
//! buffer is allocated for it, so a peer can never make us allocate more than
//! [`MAX_REQUEST`] bytes per connection.
//!
//! `protocol/frame.rs` reads and writes frames, `protocol/request.rs` holds
//! the requests and their decoder, `protocol/reply.rs` the replies; all are
//! re-exported here.

mod frame;
mod reply;
mod request;

pub use frame::{encode_frame, read_frame, write_frame, FrameError, NoSigPipe};
pub use reply::{decode_reply, Reply};
pub use request::{decode_request, DecodeError, Request};

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Protocol version spoken by this crate; sent in the `hello` handshake.
pub const PROTOCOL_VERSION: u32 = 1;

/// Largest request body (JSON bytes after the length prefix) the service
/// accepts: 64 KiB.
pub const MAX_REQUEST: usize = 64 * 1024;

/// Largest reply body the client accepts: 16 MiB. Replies can be larger
/// than requests because `list` and `journals` return many entries.
pub const MAX_REPLY: usize = 16 * 1024 * 1024;

/// Longest journal or peer name, in bytes.
pub const MAX_NAME: usize = 255;

/// Longest journal directory, in bytes (Linux `PATH_MAX`).
pub const MAX_DIR: usize = 4096;

/// Largest `per_page` a `list` request may ask for.
pub const MAX_PER_PAGE: u32 = 1000;

/// Most journals one reader registration may hold.
pub const MAX_READER_JOURNALS: usize = 1024;

/// One journal: the folder that holds its pages and its name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct JournalId {
    /// Absolute folder of the journal's page files (canonical once the
    /// service has registered it).
    pub dir: PathBuf,
    /// Journal name: 1 to 255 bytes, no `/`, no NUL, no control character,
    /// not `.` or `..`.
    pub journal: String,
}

/// What a registered peer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum PeerKind {
    /// Holds one journal for writing.
    Writer,
    /// Reads one or more journals.
    Reader,
    /// A request/reply endpoint that answers requests (holds its reply
    /// journal for writing).
    Responder,
    /// A request/reply endpoint that sends requests (holds its request
    /// journal for writing).
    Requester,
    /// A kind this client does not know (sent by a newer service).
    #[serde(other)]
    Other,
}

/// A registered peer, as the service reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peer {
    /// Registration id: unique within one service run, increasing in
    /// registration order (starts at 1). `list` is ordered by it.
    pub id: u64,
    /// Writer or reader.
    pub kind: PeerKind,
    /// The reader's name, or the journal name for a writer.
    pub name: String,
    /// Process id of the peer (from `SO_PEERCRED`).
    pub pid: u32,
    /// User id of the peer (from `SO_PEERCRED`).
    pub uid: u32,
    /// Group id of the peer (from `SO_PEERCRED`).
    pub gid: u32,
    /// When it registered: nanoseconds since the Unix epoch (CLOCK_REALTIME).
    pub since_ns: i64,
    /// The journal a writer holds, or the journals a reader reads.
    pub journals: Vec<JournalId>,
}

/// A peer as named in a [`JournalInfo`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalPeer {
    /// Registration id (see [`Peer::id`]).
    pub id: u64,
    /// Peer name (see [`Peer::name`]).
    pub name: String,
    /// Process id.
    pub pid: u32,
}

/// One registered journal with its writer and readers (the `journals` query).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalInfo {
    /// Canonical folder of the journal.
    pub dir: PathBuf,
    /// Journal name.
    pub journal: String,
    /// The writer holding it, if any.
    pub writer: Option<JournalPeer>,
    /// Readers that registered it, by registration id.
    pub readers: Vec<JournalPeer>,
}

/// Error codes carried by an `error` reply (see PROTOCOL.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// The `hello` carried a protocol version the service does not speak.
    Version,
    /// The frame is not a JSON object with a string `type`, or its fields
    /// have the wrong types.
    Malformed,
    /// The length prefix exceeds the limit, or is zero.
    TooLarge,
    /// The connection closed in the middle of a frame.
    Truncated,
    /// No `hello` within the handshake deadline, or a frame was not
    /// completed in time.
    Timeout,
    /// The `type` names no message this service knows.
    UnknownType,
    /// The first message was not `hello`, or `hello` was sent twice.
    HandshakeRequired,
    /// The connection already registered a writer or reader.
    AlreadyRegistered,
    /// `add_journal` on a connection that is not a registered reader.
    NotRegistered,
    /// A field has a value out of range (bad name, relative dir, ...).
    Invalid,
    /// Another writer holds the journal; the reply carries its `pid`.
    Held,
    /// A per-connection limit was hit (e.g. journals per reader).
    Limit,
    /// The service has reached its connection limit.
    Busy,
    /// A code this client does not know (sent by a newer service).
    #[serde(other)]
    Other,
}

impl ErrorCode {
    /// Whether the service closes the connection after sending this error.
    pub fn closes_connection(self) -> bool {
        matches!(
            self,
            ErrorCode::Version
                | ErrorCode::Malformed
                | ErrorCode::TooLarge
                | ErrorCode::Truncated
                | ErrorCode::Timeout
                | ErrorCode::UnknownType
                | ErrorCode::HandshakeRequired
                | ErrorCode::Busy
        )
    }
}
/// What a request/reply endpoint does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndpointRole {
    /// Answers requests ([`PeerKind::Responder`]).
    Responder,
    /// Sends requests ([`PeerKind::Requester`]).
    Requester,
}

impl EndpointRole {
    /// The peer kind an endpoint of this role is listed as.
    pub fn kind(self) -> PeerKind {
        match self {
            EndpointRole::Responder => PeerKind::Responder,
            EndpointRole::Requester => PeerKind::Requester,
        }
    }
}

/// What happened to an endpoint (in an `event` on a watching connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Change {
    /// It registered.
    Up,
    /// Its registration is gone (it closed its connection, exited or was
    /// killed).
    Down,
    /// A change this client does not know (sent by a newer service).
    #[serde(other)]
    Other,
}

/// The id of endpoint `name` in the `source` and `dest` fields of frames:
/// the 32-bit FNV-1a hash of the name's UTF-8 bytes (offset basis
/// 2166136261, prime 16777619), or 1 where that hash is 0 (0 means
/// "everyone"). See journal/FORMAT.md, "Request/reply frames".
pub fn endpoint_id(name: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in name.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    if h == 0 {
        1
    } else {
        h
    }
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Checks a journal name; the error is a lower-case sentence.
pub fn validate_journal_name(name: &str) -> Result<(), String> {
    // The journal crate's rule, the one rule of the workspace; the text
    // quotes at most 64 bytes of what came over the wire.
    tape_journal::check_name(name).map_err(|_| {
        format!(
            "journal name {:?} must be 1 to {} characters from A-Z a-z 0-9 _ - . not starting with a dot",
            truncate(name, 64),
            tape_journal::files::MAX_NAME_LEN
        )
    })
}

/// Checks a reader name; the error is a lower-case sentence.
pub fn validate_peer_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(format!(
            "name {:?} must be 1 to {MAX_NAME} bytes long",
            truncate(name, 64)
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(format!(
            "name {:?} must not contain control characters",
            truncate(name, 64)
        ));
    }
    Ok(())
}

/// Checks a journal folder as sent on the wire: absolute, at most
/// [`MAX_DIR`] bytes, no NUL.
pub fn validate_dir(dir: &std::path::Path) -> Result<(), String> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = dir.as_os_str().as_bytes();
    if !dir.is_absolute() || bytes.len() > MAX_DIR || bytes.contains(&0) {
        return Err(format!(
            "journal folder {:?} must be an absolute path of at most {MAX_DIR} bytes",
            truncate(&dir.to_string_lossy(), 128)
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::io::Cursor;

    fn frame(body: &[u8]) -> Vec<u8> {
        let mut v = (body.len() as u32).to_le_bytes().to_vec();
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn round_trip_requests() {
        let reqs = [
            Request::Hello { version: 1 },
            Request::RegisterWriter {
                dir: "/a/b".into(),
                journal: "md".into(),
            },
            Request::RegisterReader {
                name: "s1".into(),
                journals: vec![JournalId {
                    dir: "/a".into(),
                    journal: "x".into(),
                }],
            },
            Request::List {
                page: 2,
                per_page: 7,
            },
            Request::Count,
            Request::Journals,
            Request::RegisterEndpoint {
                name: "echo".into(),
                role: EndpointRole::Responder,
                dir: "/a".into(),
                journal: "rpc.echo".into(),
            },
            Request::FindEndpoint {
                name: "echo".into(),
            },
            Request::Watch,
        ];
        for r in reqs {
            let mut wire = Vec::new();
            write_frame(&mut wire, &r).unwrap();
            let mut buf = Vec::new();
            read_frame(&mut Cursor::new(wire), MAX_REQUEST, &mut buf).unwrap();
            assert_eq!(decode_request(&buf).unwrap(), r);
        }
    }

    #[test]
    fn documented_examples_decode() {
        // The exact bytes PROTOCOL.md shows.
        let r = decode_request(br#"{"type":"hello","version":1}"#).unwrap();
        assert_eq!(r, Request::Hello { version: 1 });
        let r = decode_request(br#"{"type":"count"}"#).unwrap();
        assert_eq!(r, Request::Count);
        let r = decode_request(br#"{"type":"register_reader","name":"s"}"#).unwrap();
        assert!(matches!(r, Request::RegisterReader { journals, .. } if journals.is_empty()));
        let reply =
            decode_reply(br#"{"type":"error","code":"held","message":"m","pid":7}"#).unwrap();
        assert!(matches!(
            reply,
            Reply::Error {
                code: ErrorCode::Held,
                pid: Some(7),
                ..
            }
        ));
        let reply =
            decode_reply(br#"{"type":"error","code":"from_the_future","message":"m"}"#).unwrap();
        assert!(matches!(
            reply,
            Reply::Error {
                code: ErrorCode::Other,
                ..
            }
        ));
    }

    #[test]
    fn endpoint_messages_as_documented() {
        let r = decode_request(
            br#"{"type":"register_endpoint","name":"echo","role":"responder","dir":"/r/journal","journal":"rpc.echo"}"#,
        )
        .unwrap();
        assert!(matches!(
            r,
            Request::RegisterEndpoint {
                role: EndpointRole::Responder,
                ..
            }
        ));
        assert_eq!(
            decode_request(br#"{"type":"watch"}"#).unwrap(),
            Request::Watch
        );
        let e = decode_reply(
            br#"{"type":"event","change":"down","peer":{"id":3,"kind":"requester","name":"c","pid":1,"uid":0,"gid":0,"since_ns":5,"journals":[]}}"#,
        )
        .unwrap();
        assert!(matches!(
            e,
            Reply::Event {
                change: Change::Down,
                peer: Peer {
                    kind: PeerKind::Requester,
                    ..
                }
            }
        ));
        let e = decode_reply(
            br#"{"type":"event","change":"sideways","peer":{"id":3,"kind":"gadget","name":"c","pid":1,"uid":0,"gid":0,"since_ns":5,"journals":[]}}"#,
        )
        .unwrap();
        assert!(matches!(
            e,
            Reply::Event {
                change: Change::Other,
                peer: Peer {
                    kind: PeerKind::Other,
                    ..
                }
            }
        ));
    }

    #[test]
    fn endpoint_ids_are_fnv1a() {
        // Published FNV-1a 32-bit test vectors.
        assert_eq!(endpoint_id("a"), 0xe40c_292c);
        assert_eq!(endpoint_id("foobar"), 0xbf9c_f968);
        assert_eq!(endpoint_id(""), 0x811c_9dc5);
        assert_ne!(endpoint_id("echo"), 0);
    }

    #[test]
    fn classify_bad_bodies() {
        assert_eq!(
            decode_request(b"\xff\x00garbage").unwrap_err().code,
            ErrorCode::Malformed
        );
        assert_eq!(
            decode_request(b"[1,2]").unwrap_err().code,
            ErrorCode::Malformed
        );
        assert_eq!(
            decode_request(br#"{"type":"launch_missiles"}"#)
                .unwrap_err()
                .code,
            ErrorCode::UnknownType
        );
        assert_eq!(
            decode_request(br#"{"type":"list","page":"x","per_page":1}"#)
                .unwrap_err()
                .code,
            ErrorCode::Malformed
        );
    }

    #[test]
    fn frame_limits() {
        let mut buf = Vec::new();
        let big = (u32::MAX).to_le_bytes();
        assert!(matches!(
            read_frame(&mut Cursor::new(big), MAX_REQUEST, &mut buf),
            Err(FrameError::TooLarge(u32::MAX))
        ));
        assert!(buf.capacity() == 0, "nothing allocated for a refused frame");
        assert!(matches!(
            read_frame(&mut Cursor::new([0u8; 4]), MAX_REQUEST, &mut buf),
            Err(FrameError::TooLarge(0))
        ));
        assert!(matches!(
            read_frame(&mut Cursor::new(Vec::new()), MAX_REQUEST, &mut buf),
            Err(FrameError::Eof)
        ));
        assert!(matches!(
            read_frame(&mut Cursor::new([5u8, 0]), MAX_REQUEST, &mut buf),
            Err(FrameError::Truncated)
        ));
        let mut t = frame(b"{\"type\":\"count\"}");
        t.truncate(10);
        assert!(matches!(
            read_frame(&mut Cursor::new(t), MAX_REQUEST, &mut buf),
            Err(FrameError::Truncated)
        ));
    }

    #[test]
    fn names() {
        assert!(validate_journal_name("md").is_ok());
        assert!(validate_journal_name("rpc.echo-1_a").is_ok());
        for bad in ["", ".", "..", ".md", "a/b", "a\0b", "a\nb", "a b", "é"] {
            assert!(validate_journal_name(bad).is_err(), "{bad:?}");
        }
        assert!(validate_journal_name(&"x".repeat(64)).is_ok());
        assert!(validate_journal_name(&"x".repeat(65)).is_err());
        assert!(validate_peer_name("strategy one").is_ok());
        assert!(validate_peer_name("").is_err());
        assert!(validate_dir(std::path::Path::new("rel")).is_err());
        assert!(validate_dir(std::path::Path::new("/abs")).is_ok());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Arbitrary bytes through framing and decoding: never a panic, and
        /// never a buffer larger than the request limit.
        #[test]
        fn decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut cur = Cursor::new(&bytes);
            let mut buf = Vec::new();
            for _ in 0..8 {
                match read_frame(&mut cur, MAX_REQUEST, &mut buf) {
                    Ok(()) => {
                        prop_assert!(buf.capacity() <= MAX_REQUEST);
                        let _ = decode_request(&buf);
                    }
                    Err(_) => break,
                }
            }
            let _ = decode_request(&bytes);
        }

        /// A well-framed body of arbitrary JSON-ish text decodes or is
        /// refused with a code that closes the connection.
        #[test]
        fn json_like_bodies(body in "\\{(\"type\":\"[a-z_]{0,16}\",?)?(\"[a-z_]{1,8}\":(\\d{1,20}|\"[^\"]{0,8}\"|null|\\[\\]|\\{\\}),?){0,4}\\}") {
            let wire = frame(body.as_bytes());
            let mut buf = Vec::new();
            read_frame(&mut Cursor::new(wire), MAX_REQUEST, &mut buf).unwrap();
            if let Err(e) = decode_request(&buf) {
                prop_assert!(e.code.closes_connection());
            }
        }

        /// A length prefix of any value never allocates past the limit.
        #[test]
        fn length_prefix_bounded(len in any::<u32>(), tail in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut wire = len.to_le_bytes().to_vec();
            wire.extend_from_slice(&tail);
            let mut buf = Vec::new();
            let _ = read_frame(&mut Cursor::new(wire), MAX_REQUEST, &mut buf);
            prop_assert!(buf.capacity() <= MAX_REQUEST);
        }
    }
}
