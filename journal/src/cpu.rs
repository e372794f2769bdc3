//! Where a thread runs: the one home of thread pinning, used by the page
//! threads ([`PageHelper`](crate::PageHelper), the writer's preparer) and
//! by the benches and tools that pin a writer and a reader to separate
//! cores.

/// Pins the calling thread to CPU `core` (`sched_setaffinity` on the
/// calling thread only). Fails with `EINVAL` for a core beyond the CPU
/// set's size, or with the system's error (e.g. a core this process may
/// not use).
pub fn pin_thread(core: usize) -> std::io::Result<()> {
    // SAFETY: cpu_set_t is plain data; zeroed is the empty set, CPU_SET
    // writes inside it (core is checked against the set's size).
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if core >= 8 * std::mem::size_of::<libc::cpu_set_t>() {
            return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
        }
        libc::CPU_SET(core, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}
