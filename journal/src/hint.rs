//! Cache hints for the hot paths: warm a line (and its address
//! translation) before the reads or writes that count in a frame's latency
//! get there.

/// Size of a base page: the unit of address translation warmed ahead.
pub(crate) const WARM_SHIFT: u32 = 12;
pub(crate) const WARM_BLOCK: usize = 1 << WARM_SHIFT;

/// Hints the CPU to bring the line at `p` into the cache for reading.
/// Never faults, whatever `p` is.
#[inline(always)]
pub(crate) fn prefetch_read(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 is a hint: it does not fault on an unmapped or
    // invalid address and changes no memory, so any pointer value is sound.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p as *const i8)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Hints the CPU to bring the line at `p` into the cache owned, ready to
/// be written (PREFETCHW). Never faults, whatever `p` is.
// The pointer is an address for the hint, never read or written through:
// `nomem` is exact, and lets the compiler keep stores and loads around it.
#[allow(clippy::pointers_in_nomem_asm_block)]
#[inline(always)]
pub(crate) fn prefetch_write(p: *const u8) {
    // `_mm_prefetch` with the write hint compiles to PREFETCHT0 unless the
    // crate is built with the `prfchw` target feature; the instruction
    // itself is on every AMD64 CPU (a no-op on Intel's before Broadwell).
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHW is a hint like PREFETCHT0: it does not fault, reads
    // and writes no memory as far as the program can tell, and touches no
    // register but its address operand, whatever the pointer.
    unsafe {
        std::arch::asm!("prefetchw [{p}]", p = in(reg) p, options(nostack, nomem, preserves_flags))
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}
