//! One frame as one JetStream message.
//!
//! The message's data is the frame exactly as the journal stores it,
//! without the padding: the 48-byte header (little-endian, the layout of
//! journal/FORMAT.md: `len` u32 at 0, `type` u32 at 4, `seq` u64 at 8,
//! `time_ns` i64 at 16, `source` u32 at 24, `dest` u32 at 28, `corr` u64 at
//! 32, `crc` u32 at 40, `flags` u32 at 44) followed by the payload. `len`
//! is 48 + the payload's length, so it is also the message's length.
//!
//! The export publishes it on the journal's subject with the NATS headers
//! `Nats-Expected-Stream` (the stream) and `Nats-Expected-Last-Sequence`
//! (seq − 1), which is what makes the stream's sequence equal to the
//! journal's.
//!
//! [`decode`] checks a message before anything of it is written: at least
//! 48 bytes, `len` equal to the message's length, `seq` equal to the
//! stream sequence the server delivered it at, and the payload's CRC32C.

use tape_journal::format::{checksum, FrameHeader, FRAME_HEADER_LEN};

/// Why a message is not a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BadMessage {
    /// Fewer bytes than a frame header.
    Short(usize),
    /// The header's length is not the message's length (a message cut off,
    /// or with bytes after the frame).
    Length {
        /// `len` in the header.
        header: u32,
        /// The message's length.
        message: usize,
    },
    /// The header's sequence number is not the stream sequence.
    Seq {
        /// `seq` in the header.
        frame: u64,
        /// The stream sequence of the message.
        stream: u64,
    },
    /// The payload's CRC32C is not the header's.
    Crc {
        /// `crc` in the header.
        header: u32,
        /// The payload's.
        payload: u32,
    },
}

impl std::fmt::Display for BadMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BadMessage::Short(n) => write!(
                f,
                "{n} bytes, fewer than a frame header ({FRAME_HEADER_LEN})"
            ),
            BadMessage::Length { header, message } => write!(
                f,
                "the frame header says {header} bytes, the message has {message}"
            ),
            BadMessage::Seq { frame, stream } => {
                write!(f, "the frame says seq {frame}, the stream {stream}")
            }
            BadMessage::Crc { header, payload } => write!(
                f,
                "the payload's CRC32C is {payload:#010x}, the header says {header:#010x}"
            ),
        }
    }
}

impl std::error::Error for BadMessage {}

/// The message data for a frame: header then payload.
pub fn encode_into(out: &mut Vec<u8>, header: &FrameHeader, payload: &[u8]) {
    out.clear();
    out.extend_from_slice(&header.to_bytes());
    out.extend_from_slice(payload);
}

/// Checks a message delivered at `stream_seq` and splits it into header and
/// payload.
pub fn decode(data: &[u8], stream_seq: u64) -> Result<(FrameHeader, &[u8]), BadMessage> {
    let h = FrameHeader::parse(data).ok_or(BadMessage::Short(data.len()))?;
    if h.len as usize != data.len() {
        return Err(BadMessage::Length {
            header: h.len,
            message: data.len(),
        });
    }
    if h.seq != stream_seq {
        return Err(BadMessage::Seq {
            frame: h.seq,
            stream: stream_seq,
        });
    }
    let payload = &data[FRAME_HEADER_LEN..];
    let crc = checksum(payload);
    if crc != h.crc {
        return Err(BadMessage::Crc {
            header: h.crc,
            payload: crc,
        });
    }
    Ok((h, payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(seq: u64, payload: &[u8]) -> Vec<u8> {
        let h = FrameHeader {
            len: (FRAME_HEADER_LEN + payload.len()) as u32,
            msg_type: 3,
            seq,
            time_ns: 1_700_000_000_000_000_000,
            source: 5,
            dest: 17,
            corr: 99,
            crc: checksum(payload),
            flags: 0,
        };
        let mut v = Vec::new();
        encode_into(&mut v, &h, payload);
        v
    }

    #[test]
    fn a_frame_round_trips() {
        let m = frame(7, b"hello");
        let (h, p) = decode(&m, 7).unwrap();
        assert_eq!((h.seq, h.dest, h.corr, p), (7, 17, 99, &b"hello"[..]));
    }

    #[test]
    fn every_damage_is_named() {
        let m = frame(7, b"hello");
        assert_eq!(decode(&m[..10], 7), Err(BadMessage::Short(10)));
        assert!(matches!(
            decode(&m[..50], 7),
            Err(BadMessage::Length { .. })
        ));
        assert!(matches!(decode(&m, 8), Err(BadMessage::Seq { .. })));
        let mut bad = m.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert!(matches!(decode(&bad, 7), Err(BadMessage::Crc { .. })));
        let mut longer = m;
        longer.push(0);
        assert!(matches!(decode(&longer, 7), Err(BadMessage::Length { .. })));
    }
}
