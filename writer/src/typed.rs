//! Typed appends on a [`Writer`]: zero-copy plain structs and serde
//! messages (see [`tape_typed`]).

use crate::Writer;
use tape_journal::WriteError;
use tape_typed::{
    ClaimError, PlainClaim, PlainMessage, SerdeMessage, SerdeWriteError, TypedAppend,
};

impl Writer {
    /// Appends `msg`'s bytes as one frame of type
    /// [`T::TYPE`](PlainMessage::TYPE); returns its sequence number.
    #[inline]
    pub fn write_plain<T: PlainMessage>(&mut self, msg: &T) -> Result<u64, WriteError> {
        self.appender.write_plain(msg)
    }

    /// Claims a frame for a `T` (zeroed) to fill in place through the
    /// claim's `&mut T`, then [`commit`](PlainClaim::commit) (zero-copy:
    /// the struct is built in the page itself). Dropping the claim
    /// publishes nothing.
    #[inline]
    pub fn claim_plain<T: PlainMessage>(&mut self) -> Result<PlainClaim<'_, T>, ClaimError> {
        self.appender.claim_plain()
    }

    /// Encodes `msg` with bincode straight into one frame of type
    /// [`T::TYPE`](SerdeMessage::TYPE) (measured, claimed, encoded in
    /// place: no allocation); returns its sequence number.
    #[inline]
    pub fn write_serde<T: SerdeMessage>(&mut self, msg: &T) -> Result<u64, SerdeWriteError> {
        self.appender.write_serde(msg)
    }
}
