//! The server's half of the handshake: hello, challenge, auth, welcome,
//! subscribe.

use super::Shared;
use crate::auth::{nonce, Token};
use crate::net::{read_exact_by, send_all, ReadFail};
use crate::wire::{
    encode_mac, Header, Hello, Kind, Subscribe, HEADER_LEN, HELLO_LEN, MAC_LEN, MAX_SUBSCRIBE,
    VERSION,
};
use std::net::TcpStream;
use std::time::Instant;

/// The peer's part of the handshake, or why it was refused. Nothing is sent
/// to a peer before its hello is read and accepted; after that only the
/// challenge, until it has proved the token.
pub(super) fn handshake(sh: &Shared, s: &TcpStream) -> Result<Subscribe, String> {
    let limit = sh.opts.handshake_timeout;
    let deadline = Instant::now() + limit;
    let secs = limit.as_secs_f64();
    let read = |buf: &mut [u8], what: &str| -> Result<(), String> {
        read_exact_by(s, buf, deadline).map_err(|e| match e {
            ReadFail::Eof { got: 0 } => format!("closed the connection without sending its {what}"),
            ReadFail::Eof { got } => {
                format!("closed the connection after {got} bytes of its {what}")
            }
            ReadFail::Timeout { got: 0 } => {
                format!("sent no {what} within {secs} s (silent peer): dropped")
            }
            ReadFail::Timeout { got } => {
                format!("sent {got} bytes of its {what}, then nothing within {secs} s: dropped")
            }
            ReadFail::Io(e) => format!("connection error during the handshake: {e}"),
        })
    };
    let mut hdr = [0u8; HEADER_LEN];
    read(&mut hdr, "hello")?;
    let h = Header::parse(&hdr);
    if h.kind != Kind::Hello as u32 {
        return Err(format!(
            "sent garbage instead of a hello (first bytes {})",
            hex(&hdr)
        ));
    }
    h.expect(Kind::Hello, "hello", HELLO_LEN, true)
        .map_err(|e| format!("{e}: refused before reading it"))?;
    let mut body = [0u8; HELLO_LEN];
    read(&mut body, "hello")?;
    let hello = Hello::decode(&body).map_err(|_| {
        format!(
            "sent garbage instead of a hello (no magic: {})",
            hex(&body[..8])
        )
    })?;
    let server_nonce = nonce().map_err(|e| format!("cannot make a nonce: {e}"))?;
    let challenge = Hello {
        version: VERSION,
        nonce: server_nonce,
    };
    send_all(s, &challenge.encode(Kind::Challenge))
        .map_err(|e| format!("cannot send the challenge: {e}"))?;
    if hello.version != VERSION {
        return Err(format!(
            "speaks bridge protocol version {}, this server speaks {VERSION}",
            hello.version
        ));
    }
    read(&mut hdr, "auth")?;
    Header::parse(&hdr)
        .expect(Kind::Auth, "auth", MAC_LEN, true)
        .map_err(|e| format!("garbage instead of an auth: {e}"))?;
    let mut proof = [0u8; MAC_LEN];
    read(&mut proof, "auth")?;
    if !sh
        .opts
        .token
        .check_client(&hello.nonce, &server_nonce, &proof)
    {
        let none = Token::none().check_client(&hello.nonce, &server_nonce, &proof);
        return Err(if none {
            "no token (authentication failed: the peer has no --token-file)".into()
        } else {
            "wrong token (authentication failed)".into()
        });
    }
    let welcome = sh.opts.token.server_proof(&hello.nonce, &server_nonce);
    send_all(s, &encode_mac(Kind::Welcome, &welcome))
        .map_err(|e| format!("cannot send the welcome: {e}"))?;
    read(&mut hdr, "subscribe")?;
    let len = Header::parse(&hdr)
        .expect(Kind::Subscribe, "subscribe", MAX_SUBSCRIBE, false)
        .map_err(|e| format!("{e}: refused before reading it"))?;
    let mut body = vec![0u8; len];
    read(&mut body, "subscribe")?;
    Subscribe::decode(&body).map_err(|e| format!("sent a bad subscribe: {e}"))
}

fn hex(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}
