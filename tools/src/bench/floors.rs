//! The floors the hot path is measured against, each between the same two
//! cores as tape in the same run:
//!
//! - **ping-pong floor**: one cache line each way (the coordinator's
//!   [`Ctl`] lines `Ping` and `Pong`); side A stores `i`, side B waits for
//!   it and stores `i` back; A times the round trip (RTT/2 recorded).
//! - **ring floor** (`ring_fps`): a naive Lamport single-producer
//!   single-consumer ring of 64-byte slots (a small buffer that stays in
//!   the caches), each side loading the other's index at every slot.
//! - **stream floor** (`stream_fps`): records of as many bytes as tape
//!   writes per frame (header and payload, 8-byte aligned), written in
//!   sequence into fresh, pre-faulted memory, each published by a release
//!   store of its length word, with a reader following behind: no header
//!   fields, checksum or clock. A journal never reuses memory, so this is
//!   the limit for any journal on this box.
//!
//! The ring's and the stream's memory is one shared file in the run's
//! system folder (tmpfs when the box has one), allocated whole by the
//! coordinator and mapped with `MAP_POPULATE` by both sides before the
//! clock starts.

use super::ctl::{Ctl, Line};
use super::roles::{deadline, histogram, Report, Role};
use anyhow::{Context, Result};
use memmap2::{MmapMut, MmapOptions};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use tape_journal::clock::now_ns;

/// Slots of the ring floor (64 KiB: cache-resident).
pub const RING_SLOTS: u64 = 1024;
/// Bytes of one ring slot.
pub const SLOT: usize = 64;
/// The ring's head (written by the writer) and tail (by the reader) live
/// on their own 128-byte lines before the slots.
const RING_HEAD: usize = 0;
const RING_TAIL: usize = 128;
const RING_SLOTS_AT: usize = 256;

/// Bytes of the ring floor's shared file.
pub fn ring_len() -> u64 {
    RING_SLOTS_AT as u64 + RING_SLOTS * SLOT as u64
}

/// Bytes of one stream-floor record: what tape writes for a payload of
/// `size` bytes.
pub fn stream_record(size: usize) -> usize {
    tape_journal::format::align_frame(tape_journal::format::FRAME_HEADER_LEN + size)
}

/// Creates the floors' shared file of `len` bytes, every byte allocated
/// (zero), so that neither side takes a fault to allocate while timed.
pub fn make_shm(path: &std::path::Path, len: u64) -> Result<()> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    use std::os::fd::AsRawFd;
    // SAFETY: posix_fallocate on a descriptor this function owns; no
    // memory effects.
    let rc = unsafe { libc::posix_fallocate(f.as_raw_fd(), 0, len as libc::off_t) };
    if rc != 0 {
        anyhow::bail!(
            "cannot allocate {len} bytes for {}: {}",
            path.display(),
            std::io::Error::from_raw_os_error(rc)
        );
    }
    Ok(())
}

fn map_shm(role: &Role) -> Result<MmapMut> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&role.shm)
        .with_context(|| format!("cannot open {}", role.shm.display()))?;
    // SAFETY: the file is made whole by the coordinator before either side
    // starts and is never truncated while mapped; the two sides share it
    // only through the atomics below and the bytes those atomics publish.
    let map = unsafe { MmapOptions::new().populate().map_mut(&f) }
        .with_context(|| format!("cannot map {}", role.shm.display()))?;
    Ok(map)
}

/// An atomic of type `A` at `off` in `map`.
///
/// # Safety
/// `off` must be inside the mapping and aligned for `A`; every process
/// must access those bytes only atomically.
unsafe fn atomic_at<A>(map: &MmapMut, off: usize) -> &A {
    debug_assert!(off + std::mem::size_of::<A>() <= map.len());
    debug_assert!((map.as_ptr() as usize + off) % std::mem::align_of::<A>() == 0);
    // SAFETY: the caller's contract.
    unsafe { &*(map.as_ptr().add(off) as *const A) }
}

/// A wait between looks: a spin, or on a box with one core (both sides on
/// it) a yield, so that the side being waited for can run.
#[inline(always)]
pub(super) fn pause(role: &Role) {
    if role.idle {
        std::thread::yield_now();
    } else {
        std::hint::spin_loop();
    }
}

/// Says ready and waits for the other side.
fn barrier(role: &Role, ctl: &Ctl) -> Result<()> {
    ctl.line(Line::Ready).fetch_add(1, Ordering::AcqRel);
    ctl.wait_at_least(Line::Ready, role.parties, deadline())
}

/// Ping-pong floor, side A: `frames` round trips, RTT/2 of each.
pub fn ping_floor_a(role: &Role, ctl: &Ctl, pin: impl Fn() -> Result<()>) -> Result<Report> {
    pin()?;
    let mut lat = vec![0u64; role.frames as usize];
    lat.clear();
    let (ping, pong) = (ctl.line(Line::Ping), ctl.line(Line::Pong));
    barrier(role, ctl)?;
    for i in 1..=role.frames as i64 {
        let t0 = now_ns();
        ping.store(i, Ordering::Release);
        while pong.load(Ordering::Acquire) != i {
            pause(role);
        }
        lat.push(((now_ns() - t0) / 2).max(0) as u64);
    }
    Ok(Report {
        frames: role.frames,
        hist: histogram(lat.into_iter())?,
        ..Report::default()
    })
}

/// Ping-pong floor, side B: answers each ping.
pub fn ping_floor_b(role: &Role, ctl: &Ctl, pin: impl Fn() -> Result<()>) -> Result<Report> {
    pin()?;
    let (ping, pong) = (ctl.line(Line::Ping), ctl.line(Line::Pong));
    barrier(role, ctl)?;
    for i in 1..=role.frames as i64 {
        while ping.load(Ordering::Acquire) != i {
            pause(role);
        }
        pong.store(i, Ordering::Release);
    }
    Ok(Report {
        frames: role.frames,
        ..Report::default()
    })
}

/// The ring's head and tail in its shared file.
fn ring_indices(map: &MmapMut) -> (&AtomicU64, &AtomicU64) {
    assert!(
        map.len() as u64 >= ring_len(),
        "the ring floor's file is too small"
    );
    // SAFETY: RING_HEAD and RING_TAIL are 128-aligned offsets inside the
    // mapping (checked above; the mapping is page-aligned), accessed only
    // atomically by both sides.
    unsafe {
        (
            atomic_at::<AtomicU64>(map, RING_HEAD),
            atomic_at::<AtomicU64>(map, RING_TAIL),
        )
    }
}

/// The ring floor's writer: `frames` 64-byte slots, as fast as the ring
/// lets it.
pub fn ring_writer(role: &Role, ctl: &Ctl, pin: impl Fn() -> Result<()>) -> Result<Report> {
    let map = map_shm(role)?;
    pin()?;
    let (head, tail) = ring_indices(&map);
    let base = map.as_ptr() as *mut u8;
    let payload = [0x5au8; SLOT];
    barrier(role, ctl)?;
    let start = now_ns();
    for i in 0..role.frames {
        while i - tail.load(Ordering::Acquire) >= RING_SLOTS {
            pause(role);
        }
        let off = RING_SLOTS_AT + (i % RING_SLOTS) as usize * SLOT;
        // SAFETY: the slot is inside the mapping and owned by the writer
        // until `head` passes it (the reader reads it only after the
        // release store below, and the writer reuses it only after the
        // reader's tail has passed it).
        unsafe {
            std::ptr::copy_nonoverlapping(payload.as_ptr(), base.add(off), SLOT);
            std::ptr::write_volatile(base.add(off), i as u8);
        }
        head.store(i + 1, Ordering::Release);
    }
    let end = now_ns();
    Ok(Report {
        frames: role.frames,
        start_ns: start,
        end_ns: end,
        ..Report::default()
    })
}

/// The ring floor's reader: takes every slot, checks its first byte.
pub fn ring_reader(role: &Role, ctl: &Ctl, pin: impl Fn() -> Result<()>) -> Result<Report> {
    let map = map_shm(role)?;
    pin()?;
    let (head, tail) = ring_indices(&map);
    let base = map.as_ptr();
    let mut lost = 0;
    barrier(role, ctl)?;
    let mut start = 0;
    for i in 0..role.frames {
        while head.load(Ordering::Acquire) == i {
            pause(role);
        }
        if i == 0 {
            start = now_ns();
        }
        let off = RING_SLOTS_AT + (i % RING_SLOTS) as usize * SLOT;
        // SAFETY: the slot is inside the mapping and was published by the
        // writer's release store of head (acquired above); the writer does
        // not reuse it until the tail store below.
        let b = unsafe { std::ptr::read_volatile(base.add(off)) };
        lost += u64::from(b != i as u8);
        tail.store(i + 1, Ordering::Release);
    }
    Ok(Report {
        frames: role.frames,
        lost,
        start_ns: start,
        end_ns: now_ns(),
        ..Report::default()
    })
}

/// The stream floor's writer: `frames` records in sequence, the payload
/// first, then the length word by a release store.
pub fn stream_writer(role: &Role, ctl: &Ctl, pin: impl Fn() -> Result<()>) -> Result<Report> {
    let map = map_shm(role)?;
    pin()?;
    let rec = stream_record(role.size);
    anyhow::ensure!(
        role.frames as usize * rec <= map.len(),
        "the stream floor's file is too small"
    );
    let base = map.as_ptr() as *mut u8;
    let payload = vec![0x5au8; role.size];
    barrier(role, ctl)?;
    let start = now_ns();
    let mut off = 0usize;
    for i in 0..role.frames {
        // SAFETY: off + rec <= frames * rec <= the mapping's length (checked
        // above); the record's bytes are the writer's until its length word
        // is stored, and the reader reads them only after it loads it.
        unsafe {
            let p = base.add(off);
            std::ptr::copy_nonoverlapping(payload.as_ptr(), p.add(8), payload.len());
            std::ptr::write_unaligned(p.add(4) as *mut u32, i as u32);
            (*(p as *const AtomicU32)).store(rec as u32, Ordering::Release);
        }
        off += rec;
    }
    let end = now_ns();
    Ok(Report {
        frames: role.frames,
        start_ns: start,
        end_ns: end,
        ..Report::default()
    })
}

/// The stream floor's reader: follows the writer record by record (spins
/// on the next length word), checks each record's index word.
pub fn stream_reader(role: &Role, ctl: &Ctl, pin: impl Fn() -> Result<()>) -> Result<Report> {
    let map = map_shm(role)?;
    pin()?;
    let rec = stream_record(role.size);
    anyhow::ensure!(
        role.frames as usize * rec <= map.len(),
        "the stream floor's file is too small"
    );
    let base = map.as_ptr();
    let mut lost = 0;
    barrier(role, ctl)?;
    let mut start = 0;
    let mut off = 0usize;
    for i in 0..role.frames {
        // SAFETY: off is 8-aligned and off + rec is inside the mapping
        // (checked above); the length word is only accessed atomically.
        let len = unsafe { &*(base.add(off) as *const AtomicU32) };
        while len.load(Ordering::Acquire) == 0 {
            pause(role);
        }
        if i == 0 {
            start = now_ns();
        }
        // SAFETY: the record was published by the release store of its
        // length (acquired above) and is never written again.
        let idx = unsafe { std::ptr::read_unaligned(base.add(off + 4) as *const u32) };
        lost += u64::from(idx != i as u32);
        off += rec;
    }
    Ok(Report {
        frames: role.frames,
        lost,
        start_ns: start,
        end_ns: now_ns(),
        ..Report::default()
    })
}
