//! tape-typed: typed messages over tape frames.
//!
//! A frame is a `u32` message type and bytes. This crate gives the bytes a
//! Rust type, two ways, both checked against the frame's type id:
//!
//! - **Zero-copy plain structs** ([`PlainMessage`]): a `#[repr(C)]` struct
//!   with no padding and no pointers whose bytes are the value, derived
//!   through [`zerocopy`] (`FromBytes`, `IntoBytes`, `KnownLayout`,
//!   `Immutable`: no hand-written casts). A writer claims a frame for a `T`
//!   ([`TypedAppend::claim_plain`]), fills it in place and commits; a
//!   reader gets `&T` straight from the mapping ([`TypedFrame::view`]) after
//!   the frame's type id, its length and the payload's alignment are
//!   checked. journal/FORMAT.md ("Payload alignment") guarantees every
//!   payload starts on an 8-byte boundary, so a `T` aligned to at most
//!   [`PAYLOAD_ALIGN`] always fits; a `T` aligned to more does not compile,
//!   and the alignment is checked at run time anyway.
//! - **serde types through bincode 2.0** ([`SerdeMessage`]):
//!   [`TypedAppend::write_serde`] encodes a value straight into the claimed
//!   frame (no allocation, no copy), [`TypedFrame::decode`] decodes one. A
//!   frame of another type, a truncated or malformed payload, or bytes left
//!   over are a [`DecodeError`] that says which, never a panic; bincode's
//!   limit keeps what the payload's length prefixes can make it allocate
//!   within a multiple of the payload's own length (see
//!   [`TypedFrame::decode`]).
//!
//! The raw path is unchanged: these are extension traits on
//! [`tape_journal::Frame`] ([`TypedFrame`]) and [`tape_journal::Appender`]
//! ([`TypedAppend`]). `tape_writer::Writer` has the same three appends as
//! methods of its own; `tape_reader` re-exports [`TypedFrame`] (a
//! `ReaderFrame` derefs to a `Frame`) and adds dispatch by type id
//! (`tape_reader::Dispatch`, `Reader::dispatch`). The journal crate knows
//! nothing of serde.
//!
//! ```
//! use tape_journal::{Appender, AppendOptions, Cursor, CursorOptions, Start};
//! use tape_typed::{PlainMessage, SerdeMessage, TypedAppend, TypedFrame};
//! use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};
//!
//! #[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Debug, PartialEq)]
//! #[repr(C)]
//! struct Tick { px: i64, qty: u32, venue: u32 }
//! impl PlainMessage for Tick { const TYPE: u32 = 1; }
//!
//! #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
//! enum Order { New { id: u64, px: i64, tag: Option<String> }, Cancel(u64) }
//! impl SerdeMessage for Order { const TYPE: u32 = 2; }
//!
//! let dir = tempfile::tempdir().unwrap();
//! let opts = AppendOptions { page_size: 1 << 20, ..AppendOptions::default() };
//! let mut app = Appender::create(dir.path(), "md", opts).unwrap();
//! let mut claim = app.claim_plain::<Tick>().unwrap();
//! claim.px = 10_125;            // filled in place, in the page itself
//! claim.qty = 7;
//! assert_eq!(claim.commit(), 1);
//! app.write_serde(&Order::Cancel(9)).unwrap();
//!
//! let mut cur = Cursor::open(dir.path(), "md", Start::First, CursorOptions::default()).unwrap();
//! let f = cur.next().unwrap().unwrap();
//! let tick: &Tick = f.view().unwrap(); // borrowed from the mapping
//! assert_eq!(tick, &Tick { px: 10_125, qty: 7, venue: 0 });
//! assert!(f.decode::<Order>().is_err()); // a Tick is not an Order
//! let f = cur.next().unwrap().unwrap();
//! assert_eq!(f.decode::<Order>().unwrap(), Order::Cancel(9));
//! ```
#![deny(unsafe_op_in_unsafe_fn)]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod encoded;
mod guard;
mod plain;

pub use encoded::{DecodeError, EncodeError, SerdeMessage, SerdeWriteError};
pub use plain::{ClaimError, PlainClaim, PlainMessage, ViewError, PAYLOAD_ALIGN};

pub use bincode;
pub use zerocopy;

use tape_journal::{Appender, Frame, WriteError};

/// Typed reads of a frame: [`view`](TypedFrame::view) a plain struct in
/// place, [`decode`](TypedFrame::decode) a serde type.
pub trait TypedFrame<'a> {
    /// The payload as a `&T`, borrowed from the mapping, after checking
    /// that the frame's type is [`T::TYPE`](PlainMessage::TYPE), that the
    /// payload is exactly `size_of::<T>()` bytes and that it starts on a
    /// multiple of `align_of::<T>()`.
    fn view<T: PlainMessage>(&self) -> Result<&'a T, ViewError>;

    /// The payload decoded as a `T` (bincode 2.0, standard configuration:
    /// little-endian, variable-length integers), after checking that the
    /// frame's type is [`T::TYPE`](SerdeMessage::TYPE). The whole payload
    /// must be used.
    ///
    /// Allocation: a string or byte buffer is allocated only after
    /// bincode's limit accepted its length, and the limit follows the
    /// payload's length (the smallest power of 16, from 256 B, at least 16
    /// times it: a valid value claims at most 16 bytes a payload byte), so
    /// what a lying length prefix can make it allocate is at most 256 times
    /// the payload's real length. A sequence or map preallocates room for at
    /// most as many elements as the payload has bytes (and at most serde's
    /// own 1 MiB), whatever its prefix says, and fails at the first element
    /// that is not there.
    fn decode<T: SerdeMessage>(&self) -> Result<T, DecodeError>;
}

impl<'a> TypedFrame<'a> for Frame<'a> {
    #[inline]
    fn view<T: PlainMessage>(&self) -> Result<&'a T, ViewError> {
        plain::view(self.msg_type(), self.payload())
    }

    #[inline]
    fn decode<T: SerdeMessage>(&self) -> Result<T, DecodeError> {
        encoded::decode(self.msg_type(), self.payload())
    }
}

/// Typed appends: a plain struct copied in ([`write_plain`]) or filled in
/// place ([`claim_plain`]), a serde value encoded in place
/// ([`write_serde`]). Each frame's type is the message's type id.
///
/// [`write_plain`]: TypedAppend::write_plain
/// [`claim_plain`]: TypedAppend::claim_plain
/// [`write_serde`]: TypedAppend::write_serde
pub trait TypedAppend {
    /// Appends `msg`'s bytes as one frame of type `T::TYPE`; returns its
    /// sequence number.
    fn write_plain<T: PlainMessage>(&mut self, msg: &T) -> Result<u64, WriteError>;

    /// Claims a frame for a `T`, zeroed, to fill in place through the
    /// claim's `&mut T` and publish with [`PlainClaim::commit`]. Dropping
    /// the claim publishes nothing.
    fn claim_plain<T: PlainMessage>(&mut self) -> Result<PlainClaim<'_, T>, ClaimError>;

    /// Encodes `msg` with bincode straight into a frame of type `T::TYPE`
    /// (its size is measured first, then the frame is claimed and encoded
    /// in place: no allocation, no copy); returns its sequence number.
    fn write_serde<T: SerdeMessage>(&mut self, msg: &T) -> Result<u64, SerdeWriteError>;
}

impl TypedAppend for Appender {
    #[inline]
    fn write_plain<T: PlainMessage>(&mut self, msg: &T) -> Result<u64, WriteError> {
        self.write(T::TYPE, plain::bytes_of(msg))
    }

    #[inline]
    fn claim_plain<T: PlainMessage>(&mut self) -> Result<PlainClaim<'_, T>, ClaimError> {
        PlainClaim::new(
            self.claim(std::mem::size_of::<T>())
                .map_err(ClaimError::Write)?,
        )
    }

    #[inline]
    fn write_serde<T: SerdeMessage>(&mut self, msg: &T) -> Result<u64, SerdeWriteError> {
        encoded::write(msg, move |len| self.claim(len))
    }
}
