//! Addresses as `tape bridge serve --listen` and `tape bridge pull --from`
//! take them.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};

/// Resolves `HOST:PORT` (or a bare `PORT`, meaning `127.0.0.1:PORT`).
pub fn resolve(addr: &str) -> io::Result<SocketAddr> {
    let full = if addr.parse::<u16>().is_ok() {
        format!("127.0.0.1:{addr}")
    } else {
        addr.to_string()
    };
    full.to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address"))
}
