//! What the two halves of the handshake share: reading one handshake
//! message (its header checked for kind and length before any room is made
//! for its body), and the refusal a server sends when it cannot serve a
//! subscription.
//!
//! The server's half is in `server/handshake.rs`, the client's in
//! `pull.rs`; each turns a [`MsgError`] into its own words.

use crate::net::{read_exact_by, ReadFail};
use crate::wire::{decode_error, encode_error, ErrorCode, Header, Kind, WireError, HEADER_LEN};
use std::net::TcpStream;
use std::time::Instant;

/// A handshake message a side accepts at some step: its kind, its name in
/// errors, and its body's limit (or exact size).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expect {
    /// The kind.
    pub kind: Kind,
    /// Its name in errors ("hello", "auth", ...).
    pub what: &'static str,
    /// Largest body accepted (the only size accepted when `exact`).
    pub limit: usize,
    /// Whether the body must be exactly `limit` bytes.
    pub exact: bool,
}

impl Expect {
    /// A message whose body is exactly `len` bytes.
    pub const fn exact(kind: Kind, what: &'static str, len: usize) -> Expect {
        Expect {
            kind,
            what,
            limit: len,
            exact: true,
        }
    }

    /// A message whose body is at most `limit` bytes.
    pub const fn at_most(kind: Kind, what: &'static str, limit: usize) -> Expect {
        Expect {
            kind,
            what,
            limit,
            exact: false,
        }
    }

    /// Checks a header against this expectation; the body length if it
    /// passes.
    pub fn check(&self, h: &Header) -> Result<usize, WireError> {
        h.expect(self.kind, self.what, self.limit, self.exact)
    }
}

/// Why [`read_message`] gave no message.
#[derive(Debug)]
pub enum MsgError {
    /// Reading the header failed (`got` counts header bytes).
    Header(ReadFail),
    /// The header was not accepted (kind or length); its bytes are kept
    /// for the log.
    Refused {
        /// The header as received.
        header: [u8; HEADER_LEN],
        /// Why it was not accepted.
        error: WireError,
    },
    /// Reading the body failed (`got` counts body bytes).
    Body(ReadFail),
}

impl std::fmt::Display for MsgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MsgError::Header(e) | MsgError::Body(e) => e.fmt(f),
            MsgError::Refused { error, .. } => error.fmt(f),
        }
    }
}

impl std::error::Error for MsgError {}

/// Reads one handshake message before `deadline`: its header, which must
/// be of one of the kinds in `accept` with a body within that kind's limit
/// (a kind in none of them is checked against the first, and refused),
/// then its body. Returns the kind and the body.
pub fn read_message(
    s: &TcpStream,
    deadline: Instant,
    accept: &[Expect],
) -> Result<(Kind, Vec<u8>), MsgError> {
    let mut header = [0u8; HEADER_LEN];
    read_exact_by(s, &mut header, deadline).map_err(MsgError::Header)?;
    let h = Header::parse(&header);
    let expect = accept
        .iter()
        .find(|e| e.kind as u32 == h.kind)
        .or(accept.first())
        .expect("read_message accepts at least one kind");
    let len = expect
        .check(&h)
        .map_err(|error| MsgError::Refused { header, error })?;
    let mut body = vec![0u8; len];
    read_exact_by(s, &mut body, deadline).map_err(MsgError::Body)?;
    Ok((expect.kind, body))
}

/// Why a server cannot serve a subscription, or cannot go on serving it:
/// the code and the words of a [`Kind::Error`] message (the connection
/// closes after it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// A journal asked for is not one this server exposes.
    NotServed(String),
    /// The replica has frames past the source's last one.
    Ahead(String),
    /// The source no longer has the frame the replica needs next.
    Gap(String),
    /// The source journal is damaged where the subscriber reads.
    Damaged(String),
    /// The server has as many subscribers as it takes.
    Busy(String),
    /// Anything else.
    Other(String),
}

impl Refusal {
    /// A refusal of `code` saying `text`.
    pub fn new(code: ErrorCode, text: impl Into<String>) -> Refusal {
        let text = text.into();
        match code {
            ErrorCode::NotServed => Refusal::NotServed(text),
            ErrorCode::Ahead => Refusal::Ahead(text),
            ErrorCode::Gap => Refusal::Gap(text),
            ErrorCode::Damaged => Refusal::Damaged(text),
            ErrorCode::Busy => Refusal::Busy(text),
            ErrorCode::Other => Refusal::Other(text),
        }
    }

    /// Its code on the wire.
    pub fn code(&self) -> ErrorCode {
        match self {
            Refusal::NotServed(_) => ErrorCode::NotServed,
            Refusal::Ahead(_) => ErrorCode::Ahead,
            Refusal::Gap(_) => ErrorCode::Gap,
            Refusal::Damaged(_) => ErrorCode::Damaged,
            Refusal::Busy(_) => ErrorCode::Busy,
            Refusal::Other(_) => ErrorCode::Other,
        }
    }

    /// Its words.
    pub fn text(&self) -> &str {
        match self {
            Refusal::NotServed(t)
            | Refusal::Ahead(t)
            | Refusal::Gap(t)
            | Refusal::Damaged(t)
            | Refusal::Busy(t)
            | Refusal::Other(t) => t,
        }
    }

    /// The whole error message that tells it.
    pub fn encode(&self) -> Vec<u8> {
        encode_error(self.code(), self.text())
    }

    /// The refusal an error message's body tells.
    pub fn decode(body: &[u8]) -> Refusal {
        let (code, text) = decode_error(body);
        Refusal::new(code, text)
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.text())
    }
}

impl std::error::Error for Refusal {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_round_trips_every_code() {
        for code in [
            ErrorCode::NotServed,
            ErrorCode::Ahead,
            ErrorCode::Gap,
            ErrorCode::Damaged,
            ErrorCode::Busy,
            ErrorCode::Other,
        ] {
            let r = Refusal::new(code, "why");
            assert_eq!(r.code(), code);
            assert_eq!(Refusal::decode(&r.encode()[HEADER_LEN..]), r);
            assert_eq!(r.to_string(), "why");
        }
    }
}
