//! serde types through bincode 2.0: encoded in place, decoded checked.

use crate::guard::Guard;
use bincode::config::{Config, Configuration};
use bincode::error::DecodeError as Bincode;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tape_journal::{Claim, WriteError};

pub use bincode::error::EncodeError;

/// A message type sent as bincode (2.0, standard configuration:
/// little-endian, variable-length integers) through serde. Derive
/// `Serialize` and `Deserialize`; implement this with the type id:
///
/// ```
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct Order { id: u64, px: i64, qty: u32, tag: Option<String> }
/// impl tape_typed::SerdeMessage for Order { const TYPE: u32 = 20; }
/// ```
pub trait SerdeMessage: Serialize + DeserializeOwned {
    /// The frame's `msg_type` for this message.
    const TYPE: u32;
}

/// bincode's standard configuration, the one tape writes.
fn config() -> Configuration {
    bincode::config::standard()
}

/// Why a frame could not be decoded as a `T`.
#[derive(Debug)]
pub enum DecodeError {
    /// The frame's type is not `T::TYPE`.
    WrongType {
        /// The Rust type asked for.
        type_name: &'static str,
        /// Its type id.
        expected: u32,
        /// The frame's.
        found: u32,
    },
    /// The payload ends before the value does.
    Truncated {
        /// The Rust type asked for.
        type_name: &'static str,
        /// The payload's length.
        len: usize,
        /// How many more bytes the value needed where it stopped.
        missing: usize,
    },
    /// A length in the payload claims more bytes than the payload holds
    /// (refused by bincode's limit before anything was allocated for it).
    TooLong {
        /// The Rust type asked for.
        type_name: &'static str,
        /// The payload's length.
        len: usize,
    },
    /// The payload is not a valid `T` (a bad enum tag, bool, char, UTF-8,
    /// an integer out of range, ...).
    Malformed {
        /// The Rust type asked for.
        type_name: &'static str,
        /// What bincode found wrong.
        error: Bincode,
    },
    /// The value ended before the payload did.
    TrailingBytes {
        /// The Rust type asked for.
        type_name: &'static str,
        /// Bytes the value used.
        used: usize,
        /// The payload's length.
        len: usize,
    },
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::WrongType {
                type_name,
                expected,
                found,
            } => write!(
                f,
                "a frame of type {found} is not a {type_name} (type {expected}): check the frame's type before decoding it, or dispatch on it"
            ),
            DecodeError::Truncated {
                type_name,
                len,
                missing,
            } => write!(
                f,
                "the {len}-byte payload ends {missing} byte(s) before a whole {type_name}: it was cut short or is another type"
            ),
            DecodeError::TooLong { type_name, len } => write!(
                f,
                "a length inside the {len}-byte payload claims more than the payload holds, decoding a {type_name}: the payload is damaged or another type"
            ),
            DecodeError::Malformed { type_name, error } => write!(
                f,
                "the payload is not a valid {type_name} ({error}): the writer and this reader disagree on the type"
            ),
            DecodeError::TrailingBytes {
                type_name,
                used,
                len,
            } => write!(
                f,
                "a {type_name} used {used} of the payload's {len} bytes: the writer and this reader disagree on the type"
            ),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Why a serde message could not be written. Nothing was published.
#[derive(Debug)]
pub enum SerdeWriteError {
    /// serde or bincode refused the value (a sequence of unknown length, a
    /// `Serialize` that failed).
    Encode(EncodeError),
    /// The journal refused the frame (too large, no new page).
    Write(WriteError),
    /// The value encoded to another length than it was measured at (a
    /// `Serialize` that is not deterministic): the frame was dropped.
    Unstable {
        /// Bytes measured first.
        measured: usize,
    },
}

impl std::fmt::Display for SerdeWriteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SerdeWriteError::Encode(e) => write!(f, "cannot encode the message: {e}"),
            SerdeWriteError::Write(e) => e.fmt(f),
            SerdeWriteError::Unstable { measured } => write!(
                f,
                "the message measured {measured} bytes but encoded to another length: its Serialize must give the same bytes each time; nothing was written"
            ),
        }
    }
}

impl std::error::Error for SerdeWriteError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SerdeWriteError::Encode(e) => Some(e),
            SerdeWriteError::Write(e) => Some(e),
            SerdeWriteError::Unstable { .. } => None,
        }
    }
}

/// Measures `msg`, claims a frame that size with `claim`, encodes into it
/// and commits it as `T::TYPE`.
#[inline]
pub(crate) fn write<'a, T: SerdeMessage>(
    msg: &T,
    claim: impl FnOnce(usize) -> Result<Claim<'a>, WriteError>,
) -> Result<u64, SerdeWriteError> {
    let mut size = bincode::enc::write::SizeWriter::default();
    bincode::serde::encode_into_writer(msg, &mut size, config())
        .map_err(SerdeWriteError::Encode)?;
    let measured = size.bytes_written;
    let mut frame = claim(measured).map_err(SerdeWriteError::Write)?;
    // A claim dropped on an error below publishes nothing.
    let written =
        bincode::serde::encode_into_slice(msg, &mut frame, config()).map_err(|e| match e {
            EncodeError::UnexpectedEnd => SerdeWriteError::Unstable { measured },
            e => SerdeWriteError::Encode(e),
        })?;
    if written != measured {
        return Err(SerdeWriteError::Unstable { measured });
    }
    Ok(frame.commit(T::TYPE))
}

/// Decodes a `T` from the payload of a frame of type `msg_type`.
#[inline]
pub(crate) fn decode<T: SerdeMessage>(msg_type: u32, payload: &[u8]) -> Result<T, DecodeError> {
    let type_name = std::any::type_name::<T>();
    if msg_type != T::TYPE {
        return Err(DecodeError::WrongType {
            type_name,
            expected: T::TYPE,
            found: msg_type,
        });
    }
    let len = payload.len();
    let (value, used) = decode_limited::<T>(payload).map_err(|e| match e {
        Bincode::UnexpectedEnd { additional } => DecodeError::Truncated {
            type_name,
            len,
            missing: additional,
        },
        Bincode::LimitExceeded => DecodeError::TooLong { type_name, len },
        error => DecodeError::Malformed { type_name, error },
    })?;
    if used != len {
        return Err(DecodeError::TrailingBytes {
            type_name,
            used,
            len,
        });
    }
    Ok(value)
}

/// The bytes of a payload not read yet (bincode's own slice reader does not
/// say how far it got when it is used through serde).
struct Rest<'a>(&'a [u8]);

impl bincode::de::read::Reader for Rest<'_> {
    #[inline]
    fn read(&mut self, bytes: &mut [u8]) -> Result<(), Bincode> {
        let Some((now, rest)) = self.0.split_at_checked(bytes.len()) else {
            return Err(Bincode::UnexpectedEnd {
                additional: bytes.len() - self.0.len(),
            });
        };
        bytes.copy_from_slice(now);
        self.0 = rest;
        Ok(())
    }

    #[inline]
    fn peek_read(&mut self, n: usize) -> Option<&[u8]> {
        self.0.get(..n)
    }

    #[inline]
    fn consume(&mut self, n: usize) {
        self.0 = self.0.get(n..).unwrap_or_default();
    }
}

/// bincode's limit (the bytes a decode may claim, counted as it decodes:
/// each primitive its size in memory, each string or byte buffer its
/// length before it is allocated) set from the payload's length. A valid
/// value claims at most 16 bytes per payload byte (a `u128` in one varint
/// byte; a string's bytes one for one), so the limit is the smallest power
/// of 16, from 256 B, at least 16 times the payload: no valid value is
/// refused, and a lying length prefix gets at most 256 times the payload.
#[inline]
fn decode_limited<T: DeserializeOwned>(payload: &[u8]) -> Result<(T, usize), Bincode> {
    #[inline]
    fn with<T: DeserializeOwned, C: Config>(payload: &[u8], c: C) -> Result<(T, usize), Bincode> {
        let mut rest = Rest(payload);
        let value = {
            let mut de = bincode::serde::OwnedSerdeDecoder::from_reader(&mut rest, c);
            // Sequences and maps preallocate at most one element a payload
            // byte.
            T::deserialize(Guard {
                inner: de.as_deserializer(),
                cap: payload.len(),
            })?
        };
        Ok((value, payload.len() - rest.0.len()))
    }
    let c = config();
    match payload.len() {
        n if n <= 1 << 4 => with(payload, c.with_limit::<{ 1 << 8 }>()),
        n if n <= 1 << 8 => with(payload, c.with_limit::<{ 1 << 12 }>()),
        n if n <= 1 << 12 => with(payload, c.with_limit::<{ 1 << 16 }>()),
        n if n <= 1 << 16 => with(payload, c.with_limit::<{ 1 << 20 }>()),
        n if n <= 1 << 20 => with(payload, c.with_limit::<{ 1 << 24 }>()),
        n if n <= 1 << 24 => with(payload, c.with_limit::<{ 1 << 28 }>()),
        n if n <= 1 << 28 => with(payload, c.with_limit::<{ 1 << 32 }>()),
        // A payload is below 4 GiB (its length is a u32 in the header).
        _ => with(payload, c.with_limit::<{ 1 << 36 }>()),
    }
}
