//! The bridge's wire format: message headers, the handshake messages, the
//! subscription, batches of frames. Pure encoding and decoding, no I/O;
//! `bridge/PROTOCOL.md` is the byte-level spec and the constants here are
//! the numbers it gives.
//!
//! Every decoder takes bytes another machine sent, checks every length
//! against a limit before using it, and returns an error for anything it
//! does not accept; none panics on any input (see the property tests;
//! `tools/tests/cli/bridge/fuzz.rs` feeds random and mutated byte streams to a
//! running server and a running pull).
//!
//! `wire/message.rs` holds the handshake and control messages,
//! `wire/batch.rs` the batches of frames; both are re-exported here.

mod batch;
mod message;

pub use batch::{Batch, BatchBuilder, BatchFrames};
pub use message::{
    ack_limit, check_account, decode_ack, decode_error, decode_opened, decode_subscribed,
    encode_ack, encode_error, encode_heartbeat, encode_mac, encode_opened, encode_subscribed,
    subscribed_limit, Hello, JournalState, Subscribe, Want, OPENED_LEN,
};

use tape_journal::format::{u32_at, u64_at};

/// The eight bytes that open a hello and a challenge.
pub const MAGIC: [u8; 8] = *b"TAPEBRDG";
/// The protocol version this crate speaks.
pub const VERSION: u32 = 1;
/// Size of every message header: `len` u32, `kind` u32.
pub const HEADER_LEN: usize = 8;
/// Size of a nonce.
pub const NONCE_LEN: usize = 32;
/// Size of an HMAC-SHA256.
pub const MAC_LEN: usize = 32;
/// Body size of a hello and of a challenge.
pub const HELLO_LEN: usize = 16 + NONCE_LEN;
/// Largest subscribe body.
pub const MAX_SUBSCRIBE: usize = 64 * 1024;
/// Longest account id.
pub const MAX_ACCOUNT: usize = 64;
/// Most journals in one subscription.
pub const MAX_JOURNALS: usize = 256;
/// Longest error text.
pub const MAX_ERROR_TEXT: usize = 1024;
/// Batch body bytes before the frames: journal u32, count u32, first_seq u64.
pub const BATCH_HEADER_LEN: usize = 16;
/// Batch body bytes after the frames: the CRC32C.
pub const BATCH_TRAILER_LEN: usize = 4;
/// A sender stops adding frames to a batch once its frames reach this
/// many bytes; a batch may pass it by one frame.
pub const BATCH_TARGET: usize = 256 * 1024;

/// Largest batch body a receiver accepts when the largest page among the
/// journals it has been told about (`opened`) is `page_size` bytes: a
/// frame never exceeds its page.
pub const fn batch_limit(page_size: u64) -> usize {
    BATCH_HEADER_LEN + BATCH_TARGET + page_size as usize + BATCH_TRAILER_LEN
}

/// Message kinds (the `kind` word of the header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Kind {
    /// Client → server, first message: magic, version, client nonce.
    Hello = 1,
    /// Server → client: magic, version, server nonce.
    Challenge = 2,
    /// Client → server: HMAC proving the token.
    Auth = 3,
    /// Server → client: HMAC proving the server knows the token too.
    Welcome = 4,
    /// Client → server: account and journals with their start sequences.
    Subscribe = 5,
    /// Server → client: the subscription is accepted; per journal its page
    /// size (0: does not exist yet) and last sequence number.
    Subscribed = 6,
    /// Server → client: a journal that did not exist has appeared.
    Opened = 7,
    /// Server → client: frames of one journal, with a CRC32C.
    Batch = 8,
    /// Server → client: nothing to send for a while.
    Heartbeat = 9,
    /// Client → server: the last sequence number of each replica; also the
    /// client's heartbeat.
    Ack = 10,
    /// Server → client: the subscription cannot be served; the connection
    /// closes after it.
    Error = 11,
}

impl Kind {
    /// The kind with this number.
    pub fn from_u32(k: u32) -> Option<Kind> {
        Some(match k {
            1 => Kind::Hello,
            2 => Kind::Challenge,
            3 => Kind::Auth,
            4 => Kind::Welcome,
            5 => Kind::Subscribe,
            6 => Kind::Subscribed,
            7 => Kind::Opened,
            8 => Kind::Batch,
            9 => Kind::Heartbeat,
            10 => Kind::Ack,
            11 => Kind::Error,
            _ => return None,
        })
    }
}

/// Error codes of an [`Kind::Error`] message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum ErrorCode {
    /// A journal asked for is not one this server exposes.
    NotServed = 1,
    /// The replica has frames past the source's last one: it was not made
    /// from this journal.
    Ahead = 2,
    /// The source no longer has the frame the replica needs next.
    Gap = 3,
    /// The source journal is damaged where the subscriber reads.
    Damaged = 4,
    /// The server has as many subscribers as it takes.
    Busy = 5,
    /// Anything else.
    Other = 6,
}

impl ErrorCode {
    /// The code with this number (unknown numbers are [`ErrorCode::Other`]).
    pub fn from_u32(c: u32) -> ErrorCode {
        match c {
            1 => ErrorCode::NotServed,
            2 => ErrorCode::Ahead,
            3 => ErrorCode::Gap,
            4 => ErrorCode::Damaged,
            5 => ErrorCode::Busy,
            _ => ErrorCode::Other,
        }
    }
}

/// Why bytes from the wire were not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireError {
    /// A message of a kind not expected here (or of no kind at all).
    UnexpectedKind {
        /// The kind word received.
        got: u32,
        /// What was expected.
        expected: &'static str,
    },
    /// A length beyond its limit (or not the fixed size of its kind).
    BadLength {
        /// The message kind.
        what: &'static str,
        /// The length announced.
        len: u64,
        /// The limit.
        limit: u64,
    },
    /// The body's content is not acceptable; the text says why.
    Malformed(String),
    /// A batch whose CRC32C does not match its bytes.
    Checksum {
        /// CRC32C carried by the batch.
        carried: u32,
        /// CRC32C of the bytes received.
        computed: u32,
    },
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WireError::UnexpectedKind { got, expected } => {
                write!(
                    f,
                    "got a message of kind {got} where {expected} was expected"
                )
            }
            WireError::BadLength { what, len, limit } => {
                write!(f, "a {what} of {len} bytes was announced (limit {limit})")
            }
            WireError::Malformed(why) => f.write_str(why),
            WireError::Checksum { carried, computed } => write!(
                f,
                "batch checksum mismatch (carried {carried:08x}, computed {computed:08x})"
            ),
        }
    }
}

impl std::error::Error for WireError {}

/// A message header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Body length in bytes.
    pub len: u32,
    /// Kind word (see [`Kind`]).
    pub kind: u32,
}

impl Header {
    /// Parses the 8 header bytes.
    pub fn parse(b: &[u8; HEADER_LEN]) -> Header {
        Header {
            len: u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            kind: u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
        }
    }

    /// Checks that this is a `kind` message of at most `limit` bytes (or
    /// exactly `limit` when `exact`).
    pub fn expect(
        &self,
        kind: Kind,
        what: &'static str,
        limit: usize,
        exact: bool,
    ) -> Result<usize, WireError> {
        if self.kind != kind as u32 {
            return Err(WireError::UnexpectedKind {
                got: self.kind,
                expected: what,
            });
        }
        let len = self.len as usize;
        if len > limit || (exact && len != limit) {
            return Err(WireError::BadLength {
                what,
                len: self.len as u64,
                limit: limit as u64,
            });
        }
        Ok(len)
    }
}

/// Appends a message header.
pub fn put_header(out: &mut Vec<u8>, kind: Kind, len: usize) {
    out.extend_from_slice(&(len as u32).to_le_bytes());
    out.extend_from_slice(&(kind as u32).to_le_bytes());
}

/// A reader over bytes that never reads past the end.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4).map(|b| u32_at(b, 0))
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8).map(|b| u64_at(b, 0))
    }
    fn str(&mut self, n: usize) -> Option<String> {
        self.take(n)
            .and_then(|b| std::str::from_utf8(b).ok())
            .map(str::to_string)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn header_limits() {
        let h = Header {
            len: u32::MAX,
            kind: Kind::Hello as u32,
        };
        assert!(matches!(
            h.expect(Kind::Hello, "hello", HELLO_LEN, true),
            Err(WireError::BadLength { .. })
        ));
        let h = Header { len: 48, kind: 99 };
        assert!(matches!(
            h.expect(Kind::Hello, "hello", HELLO_LEN, true),
            Err(WireError::UnexpectedKind { .. })
        ));
    }

    proptest! {
        #[test]
        fn decoders_never_panic(body in proptest::collection::vec(any::<u8>(), 0..600), n in 0usize..4) {
            let _ = Batch::check(&body, n, 1 << 20).map(|b| b.frames().count());
            let _ = Subscribe::decode(&body);
            let _ = Hello::decode(&body);
            let _ = decode_subscribed(&body, n);
            let _ = decode_opened(&body, n);
            let _ = decode_ack(&body, n);
            let _ = decode_error(&body);
        }
    }
}
