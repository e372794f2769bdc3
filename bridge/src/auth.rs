//! The shared token, nonces and the HMAC-SHA256 challenge and response.
//!
//! Neither side ever sends the token. The client proves it knows it with
//! `HMAC(token, "tape-bridge v1 client" ‖ client_nonce ‖ server_nonce)`,
//! the server answers with `HMAC(token, "tape-bridge v1 server" ‖
//! server_nonce ‖ client_nonce)`: different labels so that one side's
//! proof can never be replayed as the other's, both nonces so that no
//! proof is good for a second connection. The check is
//! [`hmac::Mac::verify_slice`], which compares in constant time.

use crate::wire::{MAC_LEN, NONCE_LEN};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::io;
use std::path::Path;

const CLIENT_LABEL: &[u8] = b"tape-bridge v1 client";
const SERVER_LABEL: &[u8] = b"tape-bridge v1 server";

/// The secret both sides share. Empty when no token file is given: then
/// only a peer without a token gets in (for loopback use).
#[derive(Clone, Default)]
pub struct Token(Vec<u8>);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Token({} bytes)", self.0.len())
    }
}

/// Why a token file could not be used.
#[derive(Debug)]
pub enum TokenError {
    /// The file could not be read.
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The file holds nothing but white space.
    Empty(std::path::PathBuf),
}

impl std::fmt::Display for TokenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenError::Read { path, source } => write!(
                f,
                "cannot read the token file {}: {source}",
                path.display()
            ),
            TokenError::Empty(path) => write!(
                f,
                "the token file {} is empty: put a long random secret in it (e.g. `head -c 32 /dev/urandom | base64 > {}`)",
                path.display(),
                path.display()
            ),
        }
    }
}

impl std::error::Error for TokenError {}

impl Token {
    /// A token from bytes.
    pub fn new(secret: impl Into<Vec<u8>>) -> Token {
        Token(secret.into())
    }

    /// No token.
    pub fn none() -> Token {
        Token(Vec::new())
    }

    /// Reads a token file: its content without white space at either end.
    pub fn from_file(path: &Path) -> Result<Token, TokenError> {
        let bytes = std::fs::read(path).map_err(|source| TokenError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let trimmed = bytes.trim_ascii();
        if trimmed.is_empty() {
            return Err(TokenError::Empty(path.to_path_buf()));
        }
        Ok(Token(trimmed.to_vec()))
    }

    /// Whether this is no token at all.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn mac(&self, label: &[u8], a: &[u8; NONCE_LEN], b: &[u8; NONCE_LEN]) -> Hmac<Sha256> {
        let mut m =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("HMAC takes a key of any length");
        m.update(label);
        m.update(a);
        m.update(b);
        m
    }

    /// The client's proof.
    pub fn client_proof(
        &self,
        client: &[u8; NONCE_LEN],
        server: &[u8; NONCE_LEN],
    ) -> [u8; MAC_LEN] {
        self.mac(CLIENT_LABEL, client, server)
            .finalize()
            .into_bytes()
            .into()
    }

    /// Whether `proof` is the client's proof (constant time).
    pub fn check_client(
        &self,
        client: &[u8; NONCE_LEN],
        server: &[u8; NONCE_LEN],
        proof: &[u8],
    ) -> bool {
        self.mac(CLIENT_LABEL, client, server)
            .verify_slice(proof)
            .is_ok()
    }

    /// The server's proof.
    pub fn server_proof(
        &self,
        client: &[u8; NONCE_LEN],
        server: &[u8; NONCE_LEN],
    ) -> [u8; MAC_LEN] {
        self.mac(SERVER_LABEL, server, client)
            .finalize()
            .into_bytes()
            .into()
    }

    /// Whether `proof` is the server's proof (constant time).
    pub fn check_server(
        &self,
        client: &[u8; NONCE_LEN],
        server: &[u8; NONCE_LEN],
        proof: &[u8],
    ) -> bool {
        self.mac(SERVER_LABEL, server, client)
            .verify_slice(proof)
            .is_ok()
    }
}

/// A fresh nonce from the kernel's random source (`getrandom(2)`, which
/// reads the same pool as /dev/urandom).
pub fn nonce() -> io::Result<[u8; NONCE_LEN]> {
    let mut buf = [0u8; NONCE_LEN];
    let mut filled = 0;
    while filled < NONCE_LEN {
        // SAFETY: the pointer and length describe the unfilled tail of
        // `buf`, which lives across the call.
        let n = unsafe {
            libc::getrandom(
                buf[filled..].as_mut_ptr() as *mut libc::c_void,
                NONCE_LEN - filled,
                0,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        filled += n as usize;
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proofs_check_and_differ() {
        let t = Token::new("secret");
        let (c, s) = (nonce().unwrap(), nonce().unwrap());
        assert_ne!(c, s);
        let p = t.client_proof(&c, &s);
        assert!(t.check_client(&c, &s, &p));
        assert!(
            !t.check_server(&c, &s, &p),
            "a client proof is no server proof"
        );
        assert!(!Token::new("secreT").check_client(&c, &s, &p));
        assert!(!Token::none().check_client(&c, &s, &p));
        assert!(
            !t.check_client(&s, &c, &p),
            "nonces are not interchangeable"
        );
        assert!(!t.check_client(&c, &s, &p[..31]));
        let sp = t.server_proof(&c, &s);
        assert!(t.check_server(&c, &s, &sp));
        // No token on both sides still works (loopback without a token).
        let n = Token::none();
        assert!(n.check_client(&c, &s, &n.client_proof(&c, &s)));
    }

    #[test]
    fn token_file_is_trimmed_and_not_empty() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t");
        std::fs::write(&p, "  abc\n").unwrap();
        assert_eq!(Token::from_file(&p).unwrap().0, b"abc");
        std::fs::write(&p, " \n").unwrap();
        assert!(matches!(Token::from_file(&p), Err(TokenError::Empty(_))));
        assert!(Token::from_file(&dir.path().join("nope")).is_err());
    }
}
