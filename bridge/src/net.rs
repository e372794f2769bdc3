//! Socket helpers: sending without SIGPIPE, reading with a deadline, and a
//! buffered reader of whole messages that checks each announced length
//! against a limit before it makes room for the body.

use crate::wire::{Header, WireError, HEADER_LEN};
use std::io;
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// Sends all of `buf`. `MSG_NOSIGNAL`: a peer that went away is an error
/// (`EPIPE`), never a SIGPIPE that would kill the process. With a send
/// timeout on the socket, a peer that takes nothing for that long gives
/// [`io::ErrorKind::TimedOut`].
pub fn send_all(s: &TcpStream, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        // SAFETY: buf is a live slice; the fd belongs to `s` for the call.
        let n = unsafe {
            libc::send(
                s.as_raw_fd(),
                buf.as_ptr() as *const libc::c_void,
                buf.len(),
                libc::MSG_NOSIGNAL,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the peer took no data for the whole send timeout",
                    ))
                }
                _ => return Err(e),
            }
        }
        buf = &buf[n as usize..];
    }
    Ok(())
}

/// How a read with a deadline ended early.
#[derive(Debug)]
pub enum ReadFail {
    /// The peer closed the connection after `got` bytes.
    Eof {
        /// Bytes read before the end.
        got: usize,
    },
    /// The deadline passed after `got` bytes.
    Timeout {
        /// Bytes read before the deadline.
        got: usize,
    },
    /// Another socket error.
    Io(io::Error),
}

impl std::fmt::Display for ReadFail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadFail::Eof { .. } => f.write_str("the peer closed the connection"),
            ReadFail::Timeout { .. } => f.write_str("the peer sent nothing in time"),
            ReadFail::Io(e) => e.fmt(f),
        }
    }
}

/// Reads exactly `buf.len()` bytes before `deadline`.
pub fn read_exact_by(s: &TcpStream, buf: &mut [u8], deadline: Instant) -> Result<(), ReadFail> {
    let mut got = 0;
    while got < buf.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ReadFail::Timeout { got });
        }
        s.set_read_timeout(Some(left)).map_err(ReadFail::Io)?;
        match recv(s, &mut buf[got..], 0) {
            Ok(0) => return Err(ReadFail::Eof { got }),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if is_timeout(&e) => return Err(ReadFail::Timeout { got }),
            Err(e) => return Err(ReadFail::Io(e)),
        }
    }
    Ok(())
}

/// Whether an error is a read or send timeout.
pub fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

fn recv(s: &TcpStream, buf: &mut [u8], flags: libc::c_int) -> io::Result<usize> {
    // SAFETY: buf is a live, writable slice; the fd belongs to `s`.
    let n = unsafe {
        libc::recv(
            s.as_raw_fd(),
            buf.as_mut_ptr() as *mut libc::c_void,
            buf.len(),
            flags,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Why [`MsgReader::poll`] gave no message.
#[derive(Debug)]
pub enum RecvError {
    /// The peer closed the connection (`partial`: in the middle of a
    /// message).
    Closed {
        /// Whether part of a message had arrived.
        partial: bool,
    },
    /// A message header was not accepted (kind or length).
    Wire(WireError),
    /// A socket error.
    Io(io::Error),
}

impl std::fmt::Display for RecvError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecvError::Closed { partial: false } => f.write_str("the peer closed the connection"),
            RecvError::Closed { partial: true } => {
                f.write_str("the peer closed the connection in the middle of a message")
            }
            RecvError::Wire(e) => e.fmt(f),
            RecvError::Io(e) => e.fmt(f),
        }
    }
}

/// Reads whole messages into one reused buffer.
#[derive(Debug)]
pub struct MsgReader {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl MsgReader {
    /// A reader whose buffer starts at `capacity` bytes (it grows to the
    /// largest message accepted).
    pub fn new(capacity: usize) -> MsgReader {
        MsgReader {
            buf: vec![0; capacity.max(HEADER_LEN)],
            start: 0,
            end: 0,
        }
    }

    /// The next whole message, reading from `s` as needed. `check` sees
    /// each header before any room is made for its body and refuses what
    /// it does not accept. Returns `Ok(None)` when a read found nothing in
    /// time (the socket's read timeout, or at once when `nonblocking`).
    pub fn poll(
        &mut self,
        s: &TcpStream,
        nonblocking: bool,
        mut check: impl FnMut(&Header) -> Result<(), WireError>,
    ) -> Result<Option<Header>, RecvError> {
        loop {
            let have = self.end - self.start;
            let mut need = HEADER_LEN;
            if have >= HEADER_LEN {
                let h = Header::parse(
                    self.buf[self.start..self.start + HEADER_LEN]
                        .try_into()
                        .expect("8 bytes"),
                );
                check(&h).map_err(RecvError::Wire)?;
                need = HEADER_LEN + h.len as usize;
                if have >= need {
                    return Ok(Some(h));
                }
            }
            if self.buf.len() - self.start < need {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
                if self.buf.len() < need {
                    self.buf.resize(need, 0);
                }
            }
            let flags = if nonblocking { libc::MSG_DONTWAIT } else { 0 };
            match recv(s, &mut self.buf[self.end..], flags) {
                Ok(0) => {
                    return Err(RecvError::Closed {
                        partial: self.end > self.start,
                    })
                }
                Ok(n) => self.end += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_timeout(&e) => return Ok(None),
                Err(e) => return Err(RecvError::Io(e)),
            }
        }
    }

    /// The body of the message `poll` just returned.
    pub fn body(&self, h: &Header) -> &[u8] {
        &self.buf[self.start + HEADER_LEN..self.start + HEADER_LEN + h.len as usize]
    }

    /// Moves past the message `poll` just returned.
    pub fn consume(&mut self, h: &Header) {
        self.start += HEADER_LEN + h.len as usize;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Whether bytes of a next message are already buffered.
    pub fn has_pending(&self) -> bool {
        self.end > self.start
    }
}

/// Sets `TCP_NODELAY` (a frame leaves at once) and the send timeout.
pub fn tune(s: &TcpStream, send_timeout: Duration) -> io::Result<()> {
    s.set_nodelay(true)?;
    s.set_write_timeout(Some(send_timeout.max(Duration::from_millis(1))))
}

/// Sets this thread's timer slack to 1 µs, so that its short sleeps while
/// idle end when asked rather than up to 50 µs later (Linux's default).
pub fn tight_timer_slack() {
    // SAFETY: PR_SET_TIMERSLACK takes an integer argument and changes only
    // the calling thread's timer slack.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1000 as libc::c_ulong, 0, 0, 0);
    }
}
