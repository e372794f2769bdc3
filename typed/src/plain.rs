//! Zero-copy plain structs: the payload's bytes are the value.

use std::marker::PhantomData;
use tape_journal::format::{FRAME_ALIGN, FRAME_HEADER_LEN, PAGE_HEADER_LEN};
use tape_journal::{Claim, WriteError};
use zerocopy::{ConvertError, FromBytes, Immutable, IntoBytes, KnownLayout};

/// The alignment journal/FORMAT.md guarantees every payload ("Payload
/// alignment"): pages are mapped at page boundaries, the first frame is at
/// offset 64, every frame starts on a multiple of 8 and its header is 48
/// bytes, so every payload starts on a multiple of 8 in memory.
pub const PAYLOAD_ALIGN: usize = 8;

const _: () = assert!(FRAME_ALIGN % PAYLOAD_ALIGN == 0);
const _: () = assert!(PAGE_HEADER_LEN % PAYLOAD_ALIGN == 0);
const _: () = assert!(FRAME_HEADER_LEN % PAYLOAD_ALIGN == 0);

/// A message type whose bytes are the value: `#[repr(C)]`, no padding, no
/// pointers, any bytes valid, aligned to at most [`PAYLOAD_ALIGN`] (a
/// larger alignment is a compile error where it is written or read).
/// Derive the zerocopy traits; implement this one with the type id:
///
/// ```
/// use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};
/// /// Python: `tape.Struct("<8sqqII", ["sym", "px", "qty", "venue", "flags"], type=1)`
/// #[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy, Debug)]
/// #[repr(C)]
/// struct Tick { sym: [u8; 8], px: i64, qty: i64, venue: u32, flags: u32 }
/// impl tape_typed::PlainMessage for Tick { const TYPE: u32 = 1; }
/// ```
///
/// `IntoBytes`'s derive refuses a struct with padding, so the layout is the
/// fields in order, little-endian, which a `struct` format string starting
/// with `<` describes byte for byte (the Python package's `tape.Struct`).
pub trait PlainMessage: FromBytes + IntoBytes + KnownLayout + Immutable + Sized {
    /// The frame's `msg_type` for this message.
    const TYPE: u32;
}

/// Fails to compile for a `T` that a payload's alignment cannot hold.
struct Fits<T>(PhantomData<T>);
impl<T> Fits<T> {
    const ALIGN: () = assert!(
        std::mem::align_of::<T>() <= PAYLOAD_ALIGN,
        "a PlainMessage may be aligned to at most 8 bytes (journal/FORMAT.md, Payload alignment)"
    );
}

/// Why a frame could not be viewed as a `T`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ViewError {
    /// The frame's type is not `T::TYPE`.
    WrongType {
        /// The Rust type asked for.
        type_name: &'static str,
        /// Its type id.
        expected: u32,
        /// The frame's.
        found: u32,
    },
    /// The payload is not `size_of::<T>()` bytes.
    WrongLength {
        /// The Rust type asked for.
        type_name: &'static str,
        /// `size_of::<T>()`.
        expected: usize,
        /// The payload's length.
        found: usize,
    },
    /// The payload does not start on a multiple of `align_of::<T>()`
    /// (never in a journal that follows FORMAT.md).
    Misaligned {
        /// The Rust type asked for.
        type_name: &'static str,
        /// `align_of::<T>()`.
        align: usize,
        /// The payload's address.
        addr: usize,
    },
}

impl std::fmt::Display for ViewError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ViewError::WrongType {
                type_name,
                expected,
                found,
            } => write!(
                f,
                "a frame of type {found} is not a {type_name} (type {expected}): check the frame's type before viewing it, or dispatch on it"
            ),
            ViewError::WrongLength {
                type_name,
                expected,
                found,
            } => write!(
                f,
                "a {type_name} is {expected} bytes but the frame's payload is {found}: the writer and this reader disagree on the struct's layout"
            ),
            ViewError::Misaligned {
                type_name,
                align,
                addr,
            } => write!(
                f,
                "the payload at {addr:#x} is not aligned to {align} bytes for a {type_name}: the journal breaks FORMAT.md's payload alignment"
            ),
        }
    }
}

impl std::error::Error for ViewError {}

/// Why a frame could not be claimed for a `T`.
#[derive(Debug)]
pub enum ClaimError {
    /// The journal refused the claim (too large, a new page could not be
    /// made).
    Write(WriteError),
    /// The claimed payload was not aligned, or not sized, for `T` (a bug
    /// in the appender: nothing was published).
    Layout(ViewError),
}

impl std::fmt::Display for ClaimError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClaimError::Write(e) => e.fmt(f),
            ClaimError::Layout(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for ClaimError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ClaimError::Write(e) => Some(e),
            ClaimError::Layout(e) => Some(e),
        }
    }
}

/// `msg`'s bytes.
#[inline(always)]
pub(crate) fn bytes_of<T: PlainMessage>(msg: &T) -> &[u8] {
    let () = Fits::<T>::ALIGN;
    msg.as_bytes()
}

/// The payload of a frame of type `msg_type` as a `&T`, checked.
#[inline]
pub(crate) fn view<T: PlainMessage>(msg_type: u32, payload: &[u8]) -> Result<&T, ViewError> {
    let () = Fits::<T>::ALIGN;
    if msg_type != T::TYPE {
        return Err(ViewError::WrongType {
            type_name: std::any::type_name::<T>(),
            expected: T::TYPE,
            found: msg_type,
        });
    }
    T::ref_from_bytes(payload).map_err(|e| match e {
        ConvertError::Alignment(_) => misaligned::<T>(payload.as_ptr()),
        ConvertError::Size(_) => ViewError::WrongLength {
            type_name: std::any::type_name::<T>(),
            expected: std::mem::size_of::<T>(),
            found: payload.len(),
        },
    })
}

fn misaligned<T>(at: *const u8) -> ViewError {
    ViewError::Misaligned {
        type_name: std::any::type_name::<T>(),
        align: std::mem::align_of::<T>(),
        addr: at as usize,
    }
}

/// A frame claimed for a `T`, filled in place through `&mut T` (it starts
/// zeroed: the journal keeps every byte past its tail zero) and published
/// with [`commit`](PlainClaim::commit). Dropping it publishes nothing.
#[derive(Debug)]
pub struct PlainClaim<'a, T: PlainMessage> {
    claim: Claim<'a>,
    _t: PhantomData<fn() -> T>,
}

impl<'a, T: PlainMessage> PlainClaim<'a, T> {
    /// Wraps a claim of `size_of::<T>()` bytes, checking its size and the
    /// alignment of its payload.
    pub fn new(mut claim: Claim<'a>) -> Result<Self, ClaimError> {
        let () = Fits::<T>::ALIGN;
        let at = claim.as_ptr();
        match T::mut_from_bytes(&mut claim) {
            Ok(_) => Ok(PlainClaim {
                claim,
                _t: PhantomData,
            }),
            Err(ConvertError::Alignment(_)) => Err(ClaimError::Layout(misaligned::<T>(at))),
            Err(ConvertError::Size(_)) => Err(ClaimError::Layout(ViewError::WrongLength {
                type_name: std::any::type_name::<T>(),
                expected: std::mem::size_of::<T>(),
                found: claim.len(),
            })),
        }
    }

    /// Publishes the frame with type `T::TYPE` and the writer's source and
    /// destination; returns its sequence number.
    #[inline]
    pub fn commit(self) -> u64 {
        self.claim.commit(T::TYPE)
    }

    /// Publishes the frame with type `T::TYPE` and the given source,
    /// destination and correlation id.
    #[inline]
    pub fn commit_to(self, source: u32, dest: u32, corr: u64) -> u64 {
        self.claim.commit_meta(&tape_journal::FrameMeta {
            msg_type: T::TYPE,
            source,
            dest,
            corr,
        })
    }
}

impl<T: PlainMessage> std::ops::Deref for PlainClaim<'_, T> {
    type Target = T;
    #[inline]
    fn deref(&self) -> &T {
        match T::ref_from_bytes(&self.claim) {
            Ok(t) => t,
            Err(_) => unreachable!("size and alignment were checked when the claim was made"),
        }
    }
}

impl<T: PlainMessage> std::ops::DerefMut for PlainClaim<'_, T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut T {
        match T::mut_from_bytes(&mut self.claim) {
            Ok(t) => t,
            Err(_) => unreachable!("size and alignment were checked when the claim was made"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Debug)]
    #[repr(C)]
    struct Pair {
        a: u64,
        b: u64,
    }
    impl PlainMessage for Pair {
        const TYPE: u32 = 3;
    }

    #[test]
    fn a_misaligned_payload_is_refused_not_assumed() {
        let words = [0u64; 4];
        let bytes = words.as_bytes();
        assert!(view::<Pair>(3, &bytes[..16]).is_ok());
        match view::<Pair>(3, &bytes[1..17]) {
            Err(ViewError::Misaligned { align: 8, addr, .. }) => {
                assert_eq!(addr, bytes[1..].as_ptr() as usize)
            }
            other => panic!("{other:?}"),
        }
        let e = view::<Pair>(3, &bytes[4..20]).unwrap_err();
        assert!(e.to_string().contains("not aligned to 8 bytes"), "{e}");
    }
}
