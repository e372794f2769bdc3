//! tape-writer: the [`Writer`] a market-data process appends with.
//!
//! A `Writer` is three things together:
//!
//! - a registration with the `tape service` of its root
//!   ([`WriterLease`](tape_service::WriterLease)), which refuses a second
//!   writer of the same journal with the holder's pid and knows who is
//!   online; it re-registers on its own if the service restarts;
//! - the journal's writer lock, which the kernel holds for as long as the
//!   process lives (so the one-writer rule holds through a service restart);
//! - a raw [`Appender`](tape_journal::Appender) whose next page is made
//!   ready on a background thread, so the hot path ([`Writer::write`],
//!   [`Writer::claim`]) makes no system call, takes no lock and allocates
//!   nothing, page switches included. [`WriterBuilder::pages_ahead`] keeps
//!   more pages ready, up to a whole session's made at start-up.
//!
//! Faults: a writer killed by any means frees the journal at once (the
//! service's registration and the lock die with its process) and the next
//! writer recovers it, continuing the sequence. A writer refuses to open a
//! journal damaged where it would write (a bad frame or a hole of zeros in
//! its last page, or a page before it without its end marker) rather than
//! write over or after the damage. On a full disk, the append that needs a
//! new page fails with [`WriteError::NewPage`](tape_journal::WriteError)
//! and writes nothing; the frames published before stay intact and the
//! next append tries to make the page again.
//!
//! ```
//! # let root = tempfile::tempdir().unwrap();
//! # let _service = tape_service::Service::start(root.path()).unwrap();
//! use tape_writer::Writer;
//! let dir = tape_journal::journal_dir(root.path());
//! let mut w = Writer::builder("md").root(root.path()).page_size(1 << 20).create().unwrap();
//! assert_eq!(w.write(1, b"tick").unwrap(), 1);
//! let mut claim = w.claim(8).unwrap();
//! claim.copy_from_slice(&42u64.to_le_bytes());
//! assert_eq!(claim.commit(2), 2);
//! # drop(w);
//! # assert!(dir.join("md.00000001.journal").exists());
//! ```
//!
//! Durability ([`WriterBuilder::sync`]): by default frames are safe
//! against any process crash (they are in the kernel's page cache from
//! their publication) and reach the disk when the kernel writes them back;
//! [`SyncPolicy::Page`] syncs each page when the writer leaves it and
//! [`SyncPolicy::Interval`] bounds what a power cut can lose to an
//! interval's frames, both off the hot path ([`SyncPolicy`] says what each
//! guarantees and costs). [`Writer::sync_stats`] counts the syncs and keeps
//! the last failure.
//!
//! Typed messages ([`tape_typed`]): [`Writer::write_plain`] and
//! [`Writer::claim_plain`] append a zero-copy plain struct (filled in place
//! in the page), [`Writer::write_serde`] a serde value encoded with bincode
//! straight into its frame; each frame's type is the message's type id.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

mod typed;

use std::path::{Path, PathBuf};
use tape_journal::{
    AppendOptions, Appender, Claim, FrameMeta, OpenError, ReplicaError, WriteError,
};
pub use tape_journal::{SyncPolicy, SyncStats};
use tape_service::{RegisterError, WriterLease};

pub use tape_journal::format::DEFAULT_PAGE_SIZE;
pub use tape_typed::{
    ClaimError, PlainClaim, PlainMessage, SerdeMessage, SerdeWriteError, TypedAppend,
};

/// Why a [`Writer`] could not be created. No page file is created when the
/// service refuses.
#[derive(Debug)]
pub enum WriterCreateError {
    /// The service refused the registration (not running, another writer
    /// holds the journal, a bad name).
    Register(RegisterError),
    /// The journal could not be opened, created or recovered (a damaged
    /// journal, a full disk, the writer lock held by another process).
    Open(OpenError),
}

impl std::fmt::Display for WriterCreateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WriterCreateError::Register(e) => e.fmt(f),
            WriterCreateError::Open(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for WriterCreateError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            WriterCreateError::Register(e) => Some(e),
            WriterCreateError::Open(e) => Some(e),
        }
    }
}

/// Builds a [`Writer`] with options other than the defaults.
#[derive(Debug, Clone)]
pub struct WriterBuilder {
    name: String,
    root: Option<PathBuf>,
    dir: Option<PathBuf>,
    opts: AppendOptions,
}

impl WriterBuilder {
    /// The root whose service to register with. Default: the root the
    /// journal's folder belongs to ([`tape_journal::root_of`]: the nearest
    /// of the folder and its parents where a service has run), else
    /// `$TAPE_ROOT`, else `/tmp/trading`.
    pub fn root(mut self, root: impl Into<PathBuf>) -> Self {
        self.root = Some(root.into());
        self
    }

    /// The folder of the journal (default: `<root>/journal`).
    pub fn dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = Some(dir.into());
        self
    }

    /// Largest page size for a journal this writer creates (default
    /// 128 MiB): its pages grow from 1 MiB to it, each twice the one before
    /// (journal/FORMAT.md, "Page sizes"); an existing journal keeps its
    /// own.
    pub fn page_size(mut self, bytes: u64) -> Self {
        self.opts.page_size = bytes;
        self
    }

    /// `mlock` each page as it is made ready (best effort).
    pub fn mlock(mut self, on: bool) -> Self {
        self.opts.prepare.mlock = on;
        self
    }

    /// Pin the background page preparer to this CPU (e.g. the writer's own
    /// core, so its work never preempts a reader pinned elsewhere).
    pub fn helper_core(mut self, core: Option<usize>) -> Self {
        self.opts.helper_core = core;
        self
    }

    /// Pages to keep made and pre-faulted ahead of the current one
    /// (default 1). Start-up can make a whole session's pages this way;
    /// [`Writer::wait_pages_ready`] waits for them, [`Writer::pages_ready`]
    /// says how many are done.
    pub fn pages_ahead(mut self, pages: u32) -> Self {
        self.opts.pages_ahead = pages.max(1);
        self
    }

    /// When frames are made durable on disk (default [`SyncPolicy::None`]:
    /// the kernel's own write-back, safe against a process crash but not a
    /// power cut). [`SyncPolicy::Page`] syncs each page as the writer leaves
    /// it (on a sync thread of its own) and the last one at a clean close;
    /// [`SyncPolicy::Interval`] syncs every interval what was published in
    /// it (on a thread of its own). Neither adds a system call or a store
    /// to [`Writer::write`]; see [`SyncPolicy`] for the costs.
    pub fn sync(mut self, policy: SyncPolicy) -> Self {
        self.opts.sync = policy;
        self
    }

    /// Registers with the service, then opens (creates, or recovers) the
    /// journal.
    pub fn create(self) -> Result<Writer, WriterCreateError> {
        let (root, dir) = match (self.root, self.dir) {
            (Some(root), Some(dir)) => (root, dir),
            (Some(root), None) => {
                let dir = tape_journal::journal_dir(&root);
                (root, dir)
            }
            (None, Some(dir)) => (
                tape_journal::root_of(&dir).unwrap_or_else(|| tape_journal::resolve_root(None)),
                dir,
            ),
            (None, None) => {
                let root = tape_journal::resolve_root(None);
                let dir = tape_journal::journal_dir(&root);
                (root, dir)
            }
        };
        tape_journal::check_name(&self.name)
            .map_err(|e| WriterCreateError::Open(OpenError::BadName(e)))?;
        let lease =
            WriterLease::acquire(&root, &dir, &self.name).map_err(WriterCreateError::Register)?;
        let appender =
            Appender::create(&dir, &self.name, self.opts).map_err(WriterCreateError::Open)?;
        Ok(Writer {
            appender,
            _lease: lease,
            root,
        })
    }
}

/// The single writer of one journal, registered with the service.
#[derive(Debug)]
pub struct Writer {
    appender: Appender,
    _lease: WriterLease,
    root: PathBuf,
}

impl Writer {
    /// Registers with the service of the root `dir` belongs to (the nearest
    /// of `dir` and its parents where a service has run, else the default
    /// root: see [`WriterBuilder::root`]) and opens journal `name` in `dir`,
    /// creating it if needed. Fails, creating nothing, when that service is
    /// not running (the error names its socket: start `tape service --root`
    /// there) or another writer holds the journal.
    pub fn create(dir: impl AsRef<Path>, name: &str) -> Result<Writer, WriterCreateError> {
        Writer::builder(name).dir(dir.as_ref()).create()
    }

    /// A builder for journal `name` with default options.
    pub fn builder(name: &str) -> WriterBuilder {
        WriterBuilder {
            name: name.to_string(),
            root: None,
            dir: None,
            opts: AppendOptions::default(),
        }
    }

    /// Appends one frame and returns its sequence number.
    #[inline]
    pub fn write(&mut self, msg_type: u32, payload: &[u8]) -> Result<u64, WriteError> {
        self.appender.write(msg_type, payload)
    }

    /// Appends one frame with every header field chosen.
    #[inline]
    pub fn write_meta(&mut self, meta: &FrameMeta, payload: &[u8]) -> Result<u64, WriteError> {
        self.appender.write_meta(meta, payload)
    }

    /// Claims room for a payload of `len` bytes, to fill in place and
    /// publish with [`Claim::commit`] (zero-copy). Dropping the claim
    /// publishes nothing.
    #[inline]
    pub fn claim(&mut self, len: usize) -> Result<Claim<'_>, WriteError> {
        self.appender.claim(len)
    }

    /// Appends a frame replicated from another journal, keeping its
    /// sequence number and write time (see
    /// [`Appender::write_replica`]).
    pub fn write_replica(
        &mut self,
        seq: u64,
        time_ns: i64,
        meta: &FrameMeta,
        payload: &[u8],
    ) -> Result<(), ReplicaError> {
        self.appender.write_replica(seq, time_ns, meta, payload)
    }

    /// Appends a frame copied whole from another journal, keeping every
    /// header field, after checking its length and CRC32C (see
    /// [`Appender::write_replica_frame`](tape_journal::Appender::write_replica_frame)).
    pub fn write_replica_frame(
        &mut self,
        header: &tape_journal::format::FrameHeader,
        payload: &[u8],
    ) -> Result<(), ReplicaError> {
        self.appender.write_replica_frame(header, payload)
    }

    /// Sets the source id of frames written with [`write`](Self::write).
    pub fn set_source(&mut self, source: u32) {
        self.appender.set_source(source);
    }

    /// Sets the destination id of frames written with
    /// [`write`](Self::write).
    pub fn set_dest(&mut self, dest: u32) {
        self.appender.set_dest(dest);
    }

    /// Sequence number the next frame gets.
    pub fn next_seq(&self) -> u64 {
        self.appender.next_seq()
    }

    /// The syncs made under this writer's [`SyncPolicy`] so far, and the
    /// last one that failed (clone it to read it after the writer is
    /// dropped, when the last page's sync at close is counted too).
    pub fn sync_stats(&self) -> &SyncStats {
        self.appender.sync_stats()
    }

    /// Waits until the pages kept ahead ([`WriterBuilder::pages_ahead`])
    /// are all made and pre-faulted, for at most `timeout`; returns how many
    /// are ready. For start-up, before the session's first frame.
    pub fn wait_pages_ready(&self, timeout: std::time::Duration) -> usize {
        self.appender.wait_pages_ready(timeout)
    }

    /// How many pages past the current one are made and ready.
    pub fn pages_ready(&self) -> usize {
        self.appender.pages_ready()
    }

    /// Whether the service currently has this writer registered (false for
    /// a moment while a restarted service is reconnected to).
    pub fn is_registered(&self) -> bool {
        self._lease.is_registered()
    }

    /// The root this writer registered with.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The raw appender, for statistics (page switches, position).
    pub fn appender(&self) -> &Appender {
        &self.appender
    }
}
