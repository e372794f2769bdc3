//! The publication word: a frame's `len`, stored by the writer and loaded
//! by readers, both sides here (as Aeron's `FrameDescriptor` keeps
//! `frameLengthOrdered` beside `frameLengthVolatile`). Nothing else in the
//! crate touches a `len` word (or the end-of-page marker, which is a `len`
//! word too) other than through these functions.
//!
//! ## The protocol
//!
//! The writer fills a frame's header fields and payload with plain stores,
//! then stores its `len` with **Release** ([`store_len`]). A reader loads
//! `len` ([`load_len`]); when it is non-zero, the load is ordered as an
//! **Acquire** before everything the reader reads after it, so it reads the
//! header and payload the writer stored before the Release, all of it, and
//! a published frame is never written again. A `len` of 0 means "not yet
//! published": the reader reads nothing else of that frame.
//!
//! The writer's pages are mapped read-write ([`PageMut`](crate::page::PageMut))
//! and the readers' read-only ([`PageRef`](crate::page::PageRef)), in other
//! processes, both `MAP_SHARED` views of the same file. The Rust memory
//! model speaks of one program; tape applies it to the bytes of the shared
//! file, which the hardware keeps coherent across every mapping of it: the
//! writer's atomic Release store pairs with the reader's atomic load and
//! Acquire fence exactly as two threads' would (x86-64's TSO gives both for
//! plain `mov`s; the orderings keep the compiler from moving the payload
//! stores after the `len` store, or the payload loads before the `len`
//! load).
//!
//! ## Loads on read-only memory
//!
//! The std docs (`std::sync::atomic`, "Atomic accesses to read-only
//! memory") make every atomic access to memory mapped read-only undefined
//! behaviour except "sufficiently small" loads with `Ordering::Relaxed`
//! (up to 8 bytes on x86-64 and aarch64, 4 on 32-bit targets), and say: "If
//! you need to do an acquire load on read-only memory, you can do a relaxed
//! load followed by an acquire fence instead." That is what [`load_len`]
//! does: a `u32` `Relaxed` load, then `fence(Acquire)`. On x86-64 it is the
//! same single `mov` as an `Acquire` load. The same rule governs the
//! clock's read-only mapping (`clock.rs`).

use crate::format::END_MARKER_ROOM;
use std::sync::atomic::{fence, AtomicU32, Ordering};

/// Writer side: publishes the frame that starts at `frame` in a page,
/// storing its `len` (or [`END_OF_PAGE`](crate::format::END_OF_PAGE)) with
/// Release ordering: every store the writer made before it (the frame's
/// header and payload, or, for the marker, the next page's creation) is
/// visible to a reader whose [`load_len`] returns this value.
///
/// # Safety
///
/// `frame` points into a page mapped read-write, at an 8-aligned offset
/// (so the word is 4-aligned: mappings are page-aligned) with at least 4
/// bytes of the mapping from there, and that word is only ever accessed
/// atomically (through this function and [`load_len`]) while the mapping
/// lives.
#[inline(always)]
pub(crate) unsafe fn store_len(frame: *mut u8, len: u32) {
    // SAFETY: by the caller's contract the pointer is in a live read-write
    // mapping, aligned for a u32 (AtomicU32 has u32's alignment) and valid
    // for reads and writes, as `AtomicU32::from_ptr` requires; every other
    // access to the word is atomic, so this store races with nothing.
    unsafe { AtomicU32::from_ptr(frame.cast::<u32>()) }.store(len, Ordering::Release);
}

/// Reader side: loads the publication word of the frame at `off` of
/// `page`: 0 (not published yet), [`END_OF_PAGE`](crate::format::END_OF_PAGE)
/// or a frame length. Ordered as an Acquire load: when it returns what a
/// [`store_len`] stored, everything the writer did before that store is
/// visible to what the caller reads after this call.
///
/// Works on read-only mappings: a `Relaxed` 4-byte load followed by an
/// Acquire fence, as std allows there (see the module docs).
///
/// Panics (a bug, not bad input) if `off` is not an 8-aligned offset with
/// room for the end-of-page marker: callers keep `off` inside the page.
#[inline(always)]
pub(crate) fn load_len(page: &[u8], off: usize) -> u32 {
    assert!(off % 8 == 0 && off + END_MARKER_ROOM <= page.len());
    debug_assert!(page
        .as_ptr()
        .wrapping_add(off)
        .cast::<AtomicU32>()
        .is_aligned());
    // SAFETY: `off + 4 <= page.len()` (checked above), so the word lies in
    // memory `page` lets us read while this function runs;
    // it is 4-aligned because `off` is a multiple of 8 and `page` starts
    // 8-aligned (a mapping is page-aligned, and `parse::walk_page` copies
    // into u64s). The memory may be mapped read-only: only a Relaxed load
    // of at most 8 bytes is made through this reference, which std defines
    // on read-only memory. The writer may store the word concurrently
    // (from its own mapping of the same file; `page`'s docs, "Safety of the
    // mappings"), always atomically (`store_len`), so the two accesses do
    // not race.
    let word = unsafe { &*page.as_ptr().add(off).cast::<AtomicU32>() };
    let len = word.load(Ordering::Relaxed);
    // Pairs with the Release in `store_len`: if `len` is the value a
    // writer stored, the frame bytes it wrote before are visible to every
    // load after this fence (the Relaxed load plus this fence is an
    // Acquire load, in the form std allows on read-only memory).
    fence(Ordering::Acquire);
    len
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_then_load() {
        let mut words = [0u64; 4];
        let base = words.as_mut_ptr().cast::<u8>();
        // SAFETY: `words` is 32 writable bytes, 8-aligned; only these two
        // functions touch its words while `base` is used.
        unsafe {
            store_len(base.add(8), 123);
            store_len(base.add(16), crate::format::END_OF_PAGE);
        }
        // SAFETY: as above; the stores are done.
        let page = unsafe { std::slice::from_raw_parts(base, 32) };
        assert_eq!(load_len(page, 0), 0);
        assert_eq!(load_len(page, 8), 123);
        assert_eq!(load_len(page, 16), crate::format::END_OF_PAGE);
    }

    #[test]
    #[should_panic]
    fn load_out_of_bounds_panics() {
        let words = [0u64; 2];
        // SAFETY: `words` is 16 readable bytes.
        let page = unsafe { std::slice::from_raw_parts(words.as_ptr().cast::<u8>(), 16) };
        load_len(page, 16);
    }
}
