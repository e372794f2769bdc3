//! Cache hints for the hot paths: warm a line (and its address
//! translation) before the reads or writes that count in a frame's latency
//! get there.

/// Size of a base page: the unit of address translation warmed ahead.
pub(crate) const WARM_SHIFT: u32 = 12;
pub(crate) const WARM_BLOCK: usize = 1 << WARM_SHIFT;

/// `_MM_HINT_T0`: into every cache level, for reading.
const READ: i32 = 3;
/// `_MM_HINT_ET0`: into every cache level, owned, for writing (PREFETCHW).
const WRITE: i32 = 7;

#[inline(always)]
fn prefetch<const HINT: i32>(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 and PREFETCHW are hints: they do not fault on an
    // unmapped or invalid address and change no memory, so any pointer
    // value is sound.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<HINT>(p as *const i8)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Hints the CPU to bring the line at `p` into the cache for reading.
/// Never faults, whatever `p` is.
#[inline(always)]
pub(crate) fn prefetch_read(p: *const u8) {
    prefetch::<READ>(p)
}

/// Hints the CPU to bring the line at `p` into the cache owned, ready to
/// be written. Never faults, whatever `p` is.
#[inline(always)]
pub(crate) fn prefetch_write(p: *const u8) {
    prefetch::<WRITE>(p)
}
