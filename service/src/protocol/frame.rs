//! Framing: a `u32` little-endian length, then that many bytes of JSON;
//! the length is checked against its limit before anything is allocated.

use std::io::{self, Read, Write};

use serde::Serialize;

/// Why a frame could not be read.
#[derive(Debug)]
pub enum FrameError {
    /// The peer closed the connection cleanly before a frame began.
    Eof,
    /// The peer closed the connection in the middle of a frame.
    Truncated,
    /// The length prefix is zero or larger than the limit.
    TooLarge(u32),
    /// A read timed out in the middle of a frame.
    Timeout,
    /// Another I/O error.
    Io(io::Error),
}

/// Reads one frame into `buf` (cleared first). The length prefix is checked
/// against `max` before anything is allocated.
pub fn read_frame<R: Read>(r: &mut R, max: usize, buf: &mut Vec<u8>) -> Result<(), FrameError> {
    let mut len = [0u8; 4];
    read_exact_or(r, &mut len, true)?;
    let n = u32::from_le_bytes(len);
    if n == 0 || n as usize > max {
        return Err(FrameError::TooLarge(n));
    }
    buf.clear();
    buf.resize(n as usize, 0);
    read_exact_or(r, buf, false)
}

/// `read_exact` that tells a clean EOF (nothing read, `at_start`) from a
/// truncated frame and maps timeouts.
fn read_exact_or<R: Read>(r: &mut R, mut out: &mut [u8], at_start: bool) -> Result<(), FrameError> {
    let mut got_any = false;
    while !out.is_empty() {
        match r.read(out) {
            Ok(0) if at_start && !got_any => return Err(FrameError::Eof),
            Ok(0) => return Err(FrameError::Truncated),
            Ok(k) => {
                got_any = true;
                out = &mut out[k..];
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(FrameError::Timeout)
            }
            Err(e) => return Err(FrameError::Io(e)),
        }
    }
    Ok(())
}

/// Writes one frame: the length prefix and the JSON of `msg`.
pub fn write_frame<W: Write, T: Serialize>(w: &mut W, msg: &T) -> io::Result<()> {
    w.write_all(&encode_frame(msg)?)
}

/// One whole frame: the `u32` little-endian length, then the JSON of `msg`.
pub fn encode_frame<T: Serialize>(msg: &T) -> io::Result<Vec<u8>> {
    let mut frame = vec![0u8; 4];
    serde_json::to_writer(&mut frame, msg).map_err(io::Error::other)?;
    let len = u32::try_from(frame.len() - 4)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "message too large"))?;
    frame[..4].copy_from_slice(&len.to_le_bytes());
    Ok(frame)
}

/// A writer for a Unix socket that never raises SIGPIPE: it uses `send(2)`
/// with `MSG_NOSIGNAL`, so a peer that has gone away is an `EPIPE` error,
/// even in a process that restored SIGPIPE's default action (as command-line
/// tools that stop quietly on a closed pipe do).
#[derive(Debug)]
pub struct NoSigPipe<'a>(pub &'a std::os::unix::net::UnixStream);

impl Write for NoSigPipe<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        use nix::sys::socket::{send, MsgFlags};
        use std::os::fd::AsRawFd;
        loop {
            match send(self.0.as_raw_fd(), buf, MsgFlags::MSG_NOSIGNAL) {
                Ok(n) => return Ok(n),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
