//! tape-journal: the on-disk journal of tape.
//!
//! A journal is a named sequence of page files in one folder
//! (`<name>.<page_no:08>.journal`) that grow from 1 MiB to the journal's
//! largest page size, each page's size in its own header
//! ([`Geometry`](format::Geometry), FORMAT.md "Page sizes"). Each page starts with a
//! [`PageHeader`](format::PageHeader); frames follow, each a
//! [`FrameHeader`](format::FrameHeader) and a payload, 8-byte aligned, never
//! split across pages. The byte-level specification is `journal/FORMAT.md`;
//! const assertions in [`format`] keep the code equal to it.
//!
//! This crate has no IPC: it is the format, the single-writer
//! [`Appender`], the read-only [`Cursor`], recovery after a crashed writer
//! (in [`Appender::create`]), [`verify`] and [`stats`]. The service, the
//! registered `Writer` and the merging `Reader` are built on it in the
//! other crates of the workspace.
//!
//! - [`Appender`]: write a frame, or [`claim`](Appender::claim) room, fill
//!   it in place and commit. Sequence numbers run 1, 2, 3, ... across pages.
//!   The next page (or the next N, [`AppendOptions::pages_ahead`]) is made
//!   ready by a background preparer thread. Frames are stamped by
//!   [`clock::now_ns`], a TSC clock shared by the box's tape processes
//!   where the machine has an invariant TSC, else `clock_gettime`.
//! - [`Cursor`]: read frames in order, borrowed from a read-only mapping,
//!   starting at the [`Start`] you choose. A [`PageHelper`] thread maps each
//!   cursor's next page before it gets there and unmaps the ones it left,
//!   so that a page switch on the reading thread is a pointer swap.
//! - [`prune`]: delete a journal's oldest pages by a [`PruneRule`], never
//!   one that a reader or the writer has mapped (each holds a shared
//!   `flock` on the pages it maps).
//!
//! ## Memory ordering
//!
//! - A frame is published by its length word: the writer's Release store
//!   and the readers' Acquire-ordered load sit side by side in the crate's
//!   `publish.rs`, which also says how a load on a read-only mapping is
//!   made (a `Relaxed` load and an `Acquire` fence, as std allows there).
//! - The shared clock's parameters are under a seqlock (`clock.rs`, each
//!   fence commented with what it pairs with); the cursor's page hand-over
//!   is a few lock-free slots (`exchange.rs`). Loom models in
//!   `tests/loom.rs` check both, on the real code (`.ci/loom`).
//!
//! ### Stop flags
//!
//! A *stop flag* is an `AtomicBool` that one thread sets to ask others to
//! stop (the [`PageHelper`]'s, the service's shutdown flag, the flags
//! passed to a bridge's or a responder's `run`, test feeders'). Everywhere
//! in tape it is stored `true` with `Ordering::Release` and loaded with
//! `Ordering::Acquire`:
//!
//! - not weaker: a thread that sees the flag also sees whatever the
//!   stopper wrote before setting it, so no stop path has to reason about
//!   what else is visible yet; on x86-64 both are plain `mov`s, as
//!   `Relaxed` accesses would be;
//! - not stronger: `SeqCst` would order the flag against other `SeqCst`
//!   accesses, and no stop flag takes part in such a handshake (one
//!   thread storing it and then loading another flag while another does
//!   the reverse). Results travel through `join`, a channel or a lock,
//!   which synchronise on their own;
//! - a flag is a request, not a wake-up: a stopped thread sees it at its
//!   next poll, sleep or park timeout unless the stopper also wakes it
//!   (unpark, a connect, a socket shutdown). Storing it from a signal
//!   handler is async-signal-safe, whatever the ordering.
//!
//! ```
//! use tape_journal::{Appender, AppendOptions, Cursor, CursorOptions, Start};
//! let dir = tempfile::tempdir().unwrap();
//! let opts = AppendOptions { page_size: 1 << 20, ..AppendOptions::default() };
//! let mut app = Appender::create(dir.path(), "md", opts).unwrap();
//! assert_eq!(app.write(7, b"hello").unwrap(), 1);
//! let mut claim = app.claim(5).unwrap();
//! claim.copy_from_slice(b"world");
//! assert_eq!(claim.commit(7), 2);
//!
//! let mut cur = Cursor::open(dir.path(), "md", Start::First, CursorOptions::default()).unwrap();
//! let f = cur.next().unwrap().unwrap();
//! assert_eq!((f.seq(), f.msg_type(), f.payload()), (1, 7, &b"hello"[..]));
//! assert_eq!(cur.next().unwrap().unwrap().payload(), b"world");
//! assert!(cur.next().unwrap().is_none());
//! ```
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

#[cfg(not(all(target_os = "linux", target_endian = "little")))]
compile_error!("tape journals are little-endian and use Linux mmap semantics");

mod appender;
mod atomics;
mod bell;
pub mod clock;
mod cpu;
mod cursor;
mod dirwatch;
mod durable;
mod exchange;
pub mod files;
pub mod format;
mod hint;
mod idle;
mod locate;
mod pace;
mod page;
pub mod position;
mod prepare;
mod prune;
mod publish;
mod scan;
pub mod sync;
mod verify;

pub use appender::{AppendOptions, Appender, Claim, FrameMeta, ReplicaError, WriteError};
pub use bell::{bell_path, BELL_SUFFIX, NO_BELL_POLL};
pub use cpu::pin_thread;
pub use cursor::{wait_any, Cursor, CursorOptions, Frame, ReadError, Start};
pub use dirwatch::{wait_any_dir, DirWatch};
pub use durable::{SyncParseError, SyncPolicy, SyncStats};
pub use exchange::{PageHelper, PageHelperHandle, MAX_LOOK, MIN_LOOK};
pub use files::{
    check_name, journal_dir, list_journals, list_pages, lock_holder, resolve_root, root_of,
    JournalLock, LockError,
};
pub use idle::{Idle, AWAKE};
pub use locate::{page_starts, stats, JournalStats, OpenError, PageStart};
pub use page::{PageError, PrepareOptions};
pub use prune::{prune, InUse, PruneError, PruneReport, PruneRule};
pub use scan::Damage;
pub use verify::{verify, VerifyReport};

/// What the loom models (`tests/loom.rs`) drive: the real protocol code,
/// built with loom's atomics. Exists only with `--cfg loom`.
#[cfg(loom)]
#[doc(hidden)]
pub mod loom_api {
    pub use crate::clock::seqlock::{Params, Values};
    pub use crate::exchange::Slot;
}

/// Fuzzing and property-test entry points: parse untrusted bytes as a page
/// and walk its frames the way recovery and verify do.
pub mod parse {
    use crate::scan::{scan_page, Damage, ScanCheck};
    use std::path::Path;

    /// What walking a page found.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct PageSummary {
        /// Published frames.
        pub frames: u64,
        /// Offset just past the last frame.
        pub tail: usize,
        /// Whether the page ends with an end-of-page marker.
        pub ended: bool,
    }

    /// Walks the frames of `bytes` as if it were a page (its length must be
    /// a multiple of 8 and at least 64 + 48 bytes; anything else is
    /// reported as damage). Checks lengths, sequence continuity, times and
    /// checksums. Never panics on any input.
    pub fn walk_page(bytes: &[u8]) -> Result<PageSummary, Damage> {
        let file = Path::new("<bytes>");
        let min = crate::format::PAGE_HEADER_LEN + crate::format::FRAME_HEADER_LEN;
        if bytes.len() < min || bytes.len() % 8 != 0 {
            return Err(Damage::new(file, 0, "too short or not a multiple of 8"));
        }
        // The walk loads len words atomically, which needs 8-aligned memory.
        let mut words = vec![0u64; bytes.len() / 8];
        // SAFETY: words has exactly bytes.len() bytes, any bytes are valid u64s.
        let aligned =
            unsafe { std::slice::from_raw_parts_mut(words.as_mut_ptr() as *mut u8, bytes.len()) };
        aligned.copy_from_slice(bytes);
        let check = ScanCheck {
            crc: true,
            ..ScanCheck::default()
        };
        let s = scan_page(aligned, file, check)?;
        Ok(PageSummary {
            frames: s.frames,
            tail: s.tail,
            ended: s.ended,
        })
    }
}
