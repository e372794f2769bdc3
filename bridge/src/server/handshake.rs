//! The server's half of the handshake: hello, challenge, auth, welcome,
//! subscribe, each message read by [`read_message`].

use super::Shared;
use crate::auth::{nonce, Token};
use crate::handshake::{read_message, Expect, MsgError};
use crate::net::{send_all, ReadFail};
use crate::wire::{
    encode_mac, Hello, Kind, Subscribe, WireError, HEADER_LEN, HELLO_LEN, MAC_LEN, MAX_SUBSCRIBE,
    VERSION,
};
use std::io;
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Why a peer failed the server's half of the handshake. Nothing is told
/// to it: the connection just closes, and this is logged.
#[derive(Debug)]
pub(super) enum HandshakeError {
    /// Reading its `what` failed (closed, silent past the handshake
    /// timeout, socket error).
    Read {
        /// The message being read.
        what: &'static str,
        /// How the read ended.
        fail: ReadFail,
        /// The handshake timeout.
        limit: Duration,
    },
    /// Its first message is not a hello: its first bytes.
    NotHello([u8; HEADER_LEN]),
    /// Its hello body has no magic: its first bytes.
    NoMagic([u8; 8]),
    /// A hello header of a length beyond its limit, or a subscribe header
    /// not accepted (kind or length): refused before its body is read.
    BeforeBody(WireError),
    /// A header where the auth should be that is not one.
    NotAuth(WireError),
    /// A subscribe that does not decode.
    BadSubscribe(WireError),
    /// No nonce could be made.
    Nonce(io::Error),
    /// Sending the challenge or the welcome failed.
    Send {
        /// The message being sent.
        what: &'static str,
        /// Why.
        source: io::Error,
    },
    /// It speaks another protocol version.
    Version(u32),
    /// It has no token where the server has one.
    NoToken,
    /// Its token is not the server's.
    WrongToken,
}

impl std::fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HandshakeError::Read { what, fail, limit } => {
                let secs = limit.as_secs_f64();
                match fail {
                    ReadFail::Eof { got: 0 } => {
                        write!(f, "closed the connection without sending its {what}")
                    }
                    ReadFail::Eof { got } => {
                        write!(f, "closed the connection after {got} bytes of its {what}")
                    }
                    ReadFail::Timeout { got: 0 } => {
                        write!(f, "sent no {what} within {secs} s (silent peer): dropped")
                    }
                    ReadFail::Timeout { got } => write!(
                        f,
                        "sent {got} bytes of its {what}, then nothing within {secs} s: dropped"
                    ),
                    ReadFail::Io(e) => write!(f, "connection error during the handshake: {e}"),
                }
            }
            HandshakeError::NotHello(first) => write!(
                f,
                "sent garbage instead of a hello (first bytes {})",
                hex(first)
            ),
            HandshakeError::NoMagic(first) => write!(
                f,
                "sent garbage instead of a hello (no magic: {})",
                hex(first)
            ),
            HandshakeError::BeforeBody(e) => write!(f, "{e}: refused before reading it"),
            HandshakeError::NotAuth(e) => write!(f, "garbage instead of an auth: {e}"),
            HandshakeError::BadSubscribe(e) => write!(f, "sent a bad subscribe: {e}"),
            HandshakeError::Nonce(e) => write!(f, "cannot make a nonce: {e}"),
            HandshakeError::Send { what, source } => write!(f, "cannot send the {what}: {source}"),
            HandshakeError::Version(v) => write!(
                f,
                "speaks bridge protocol version {v}, this server speaks {VERSION}"
            ),
            HandshakeError::NoToken => {
                f.write_str("no token (authentication failed: the peer has no --token-file)")
            }
            HandshakeError::WrongToken => f.write_str("wrong token (authentication failed)"),
        }
    }
}

impl std::error::Error for HandshakeError {}

/// The peer's part of the handshake, or why it was refused. Nothing is sent
/// to a peer before its hello is read and accepted; after that only the
/// challenge, until it has proved the token.
pub(super) fn handshake(sh: &Shared, s: &TcpStream) -> Result<Subscribe, HandshakeError> {
    let limit = sh.opts.handshake_timeout;
    let deadline = Instant::now() + limit;
    let read =
        |what: &'static str| move |fail: ReadFail| HandshakeError::Read { what, fail, limit };
    let (_, body) = read_message(
        s,
        deadline,
        &[Expect::exact(Kind::Hello, "hello", HELLO_LEN)],
    )
    .map_err(|e| match e {
        MsgError::Header(f) | MsgError::Body(f) => read("hello")(f),
        MsgError::Refused {
            header,
            error: WireError::UnexpectedKind { .. },
        } => HandshakeError::NotHello(header),
        MsgError::Refused { error, .. } => HandshakeError::BeforeBody(error),
    })?;
    let hello = Hello::decode(&body).map_err(|_| {
        let mut first = [0u8; 8];
        first.copy_from_slice(&body[..8]);
        HandshakeError::NoMagic(first)
    })?;
    let server_nonce = nonce().map_err(HandshakeError::Nonce)?;
    let challenge = Hello {
        version: VERSION,
        nonce: server_nonce,
    };
    send_all(s, &challenge.encode(Kind::Challenge)).map_err(|source| HandshakeError::Send {
        what: "challenge",
        source,
    })?;
    if hello.version != VERSION {
        return Err(HandshakeError::Version(hello.version));
    }
    let (_, proof) = read_message(s, deadline, &[Expect::exact(Kind::Auth, "auth", MAC_LEN)])
        .map_err(|e| match e {
            MsgError::Header(f) | MsgError::Body(f) => read("auth")(f),
            MsgError::Refused { error, .. } => HandshakeError::NotAuth(error),
        })?;
    if !sh
        .opts
        .token
        .check_client(&hello.nonce, &server_nonce, &proof)
    {
        let none = Token::none().check_client(&hello.nonce, &server_nonce, &proof);
        return Err(if none {
            HandshakeError::NoToken
        } else {
            HandshakeError::WrongToken
        });
    }
    let welcome = sh.opts.token.server_proof(&hello.nonce, &server_nonce);
    send_all(s, &encode_mac(Kind::Welcome, &welcome)).map_err(|source| HandshakeError::Send {
        what: "welcome",
        source,
    })?;
    let (_, body) = read_message(
        s,
        deadline,
        &[Expect::at_most(Kind::Subscribe, "subscribe", MAX_SUBSCRIBE)],
    )
    .map_err(|e| match e {
        MsgError::Header(f) | MsgError::Body(f) => read("subscribe")(f),
        MsgError::Refused { error, .. } => HandshakeError::BeforeBody(error),
    })?;
    Subscribe::decode(&body).map_err(HandshakeError::BadSubscribe)
}

fn hex(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}
