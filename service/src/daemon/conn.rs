//! One connection's thread: its handshake deadline, reading requests and
//! writing replies.

use std::io::{self, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{getsockopt, sockopt};

use super::state::Shared;
use super::watch::Watcher;
use super::{HANDSHAKE_DEADLINE, IO_DEADLINE};
use crate::protocol::{
    decode_request, encode_frame, read_frame, ErrorCode, FrameError, NoSigPipe, Reply, MAX_REPLY,
    MAX_REQUEST,
};
use crate::registry::Cred;

/// One connection's thread.
pub(super) struct Connection<'a> {
    pub(super) shared: &'a Shared,
    pub(super) conn_id: u64,
    pub(super) stream: UnixStream,
    pub(super) cred: Cred,
    pub(super) greeted: bool,
    /// This connection's registration id, once registered.
    pub(super) peer: Option<u64>,
    /// Its event queue, once it sent `watch`.
    pub(super) watch: Option<Arc<Watcher>>,
}

impl<'a> Connection<'a> {
    pub(super) fn new(shared: &'a Shared, conn_id: u64, stream: UnixStream) -> Self {
        let cred = getsockopt(&stream, sockopt::PeerCredentials)
            .map(|c| Cred {
                pid: c.pid().max(0) as u32,
                uid: c.uid(),
                gid: c.gid(),
            })
            .unwrap_or(Cred {
                pid: 0,
                uid: u32::MAX,
                gid: u32::MAX,
            });
        let _ = stream.set_read_timeout(Some(IO_DEADLINE));
        Connection {
            shared,
            conn_id,
            stream,
            cred,
            greeted: false,
            peer: None,
            watch: None,
        }
    }

    pub(super) fn serve(mut self) {
        let hello_by = Instant::now() + HANDSHAKE_DEADLINE;
        let mut buf = Vec::new();
        loop {
            let wait = if self.greeted {
                None
            } else {
                Some(hello_by.saturating_duration_since(Instant::now()))
            };
            let readable = match &self.watch {
                Some(w) => {
                    let w = Arc::clone(w);
                    self.wait_watching(&w)
                }
                None => wait_readable(&self.stream, wait),
            };
            match readable {
                Ok(true) => {}
                Ok(false) => {
                    self.send(&Reply::error(
                        ErrorCode::Timeout,
                        "no hello within 5 s of connecting: send hello first",
                    ));
                    return;
                }
                Err(_) => return,
            }
            if self.shared.stopping.load(Ordering::Acquire) {
                return;
            }
            let failure = match read_frame(&mut self.stream, MAX_REQUEST, &mut buf) {
                Ok(()) => None,
                Err(FrameError::Eof) | Err(FrameError::Io(_)) => return,
                Err(FrameError::Truncated) => Some(Reply::error(
                    ErrorCode::Truncated,
                    "the connection ended in the middle of a message: send whole frames",
                )),
                Err(FrameError::TooLarge(n)) => Some(Reply::error(
                    ErrorCode::TooLarge,
                    format!(
                        "a message length of {n} bytes is not allowed: send 1 to {MAX_REQUEST} bytes of json after the u32 little-endian length"
                    ),
                )),
                Err(FrameError::Timeout) => Some(Reply::error(
                    ErrorCode::Timeout,
                    "a message was not completed within 5 s: send whole frames",
                )),
            };
            if let Some(reply) = failure {
                self.send(&reply);
                return;
            }
            let reply = match decode_request(&buf) {
                Ok(req) => self.handle(req),
                Err(e) => Reply::error(e.code, e.message),
            };
            // An idle connection keeps no large buffer.
            if buf.capacity() > 4096 {
                buf = Vec::new();
            }
            let close = matches!(&reply, Reply::Error { code, .. } if code.closes_connection());
            if !self.send(&reply) || close {
                return;
            }
        }
    }

    /// Writes a reply; false when the connection is broken.
    pub(super) fn send(&mut self, reply: &Reply) -> bool {
        let frame = match encode_frame(reply) {
            Ok(f) if f.len() - 4 <= MAX_REPLY => f,
            Ok(_) => match encode_frame(&Reply::error(
                ErrorCode::Limit,
                "the answer is larger than 16 MiB: ask for a smaller page",
            )) {
                Ok(f) => f,
                Err(_) => return false,
            },
            Err(_) => return false,
        };
        NoSigPipe(&self.stream).write_all(&frame).is_ok()
    }
}

/// Waits until `stream` is readable (or hung up). `Ok(false)` on timeout.
fn wait_readable(stream: &UnixStream, timeout: Option<Duration>) -> io::Result<bool> {
    let deadline = timeout.map(|t| Instant::now() + t);
    loop {
        let left = match deadline {
            None => PollTimeout::NONE,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Ok(false);
                }
                // Round up so that we never spin on a sub-millisecond rest.
                let ms = left.as_millis().saturating_add(1).min(i32::MAX as u128);
                PollTimeout::try_from(ms as i32).unwrap_or(PollTimeout::MAX)
            }
        };
        let mut fds = [PollFd::new(stream.as_fd(), PollFlags::POLLIN)];
        match nix::poll::poll(&mut fds, left) {
            Ok(0) => continue,
            Ok(_) => return Ok(true),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(io::Error::from(e)),
        }
    }
}
