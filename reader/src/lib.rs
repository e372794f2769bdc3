//! tape-reader: the [`Reader`] a strategy polls many journals with.
//!
//! A `Reader` reads any number of journals ([`Reader::add_journal`], also
//! while reading) and [`Reader::next`] returns, without blocking, the unread
//! frame with the smallest write time among them, borrowed straight from
//! the read-only mapping of its page. Pages are followed and unmapped on
//! their own.
//!
//! Registration: [`Reader::create`] registers the reader's name with the
//! `tape service` of its root (so `tape ls` and the service's "who is
//! online" show it) and re-registers if the service restarts. Each journal
//! is registered with the service of the root its folder belongs to
//! ([`tape_journal::root_of`]): the reader's own, or another root's, where
//! the reader then registers too. **A reader also works with no service at all**:
//! [`ReaderBuilder::service`] with [`ServiceMode::Never`] (replay and
//! analysis of journal files) or [`ServiceMode::IfRunning`] (register when a
//! service runs, read regardless). Reading never talks to the service.
//!
//! A journal that does not exist yet when it is added is waited for: it is
//! read from its first frame once its first page appears.
//!
//! Faults: a damaged frame stops [`Reader::next`] with an error naming the
//! file and offset. A hole of zeros looks like "nothing new yet" to a
//! poller; [`Reader::check_stalled`], called now and then off the hot path,
//! tells the two apart. While a page is mapped the reader holds a shared
//! lock on it (one descriptor per mapped page: the page being read and the
//! next, mapped ahead, and after a switch the page left, until the reader's
//! next empty poll hands it to the helper to unmap), so `tape prune` and the
//! service's retention never
//! delete a page it still reads; pruned journals start at their first page
//! left.
//!
//! ```
//! # let root = tempfile::tempdir().unwrap();
//! use tape_reader::{Reader, ServiceMode, Start};
//! use tape_journal::{Appender, AppendOptions};
//! let dir = tape_journal::journal_dir(root.path());
//! let opts = AppendOptions { page_size: 1 << 20, ..AppendOptions::default() };
//! let mut a = Appender::create(&dir, "a", opts).unwrap();
//! let mut b = Appender::create(&dir, "b", opts).unwrap();
//! a.write(1, b"a1").unwrap();
//! b.write(1, b"b1").unwrap();
//! a.write(1, b"a2").unwrap();
//!
//! let mut r = Reader::builder("strategy").root(root.path())
//!     .service(ServiceMode::Never).start(Start::First).create().unwrap();
//! r.add_journal(&dir, "a").unwrap();
//! r.add_journal(&dir, "b").unwrap();
//! let mut got = Vec::new();
//! while let Some(f) = r.next().unwrap() {
//!     got.push(f.payload().to_vec());
//! }
//! assert_eq!(got, [b"a1".to_vec(), b"b1".to_vec(), b"a2".to_vec()]);
//! ```
//!
//! Typed messages ([`tape_typed`]): with [`TypedFrame`] in scope, a frame
//! gives its payload as a zero-copy plain struct
//! ([`view::<T>()`](TypedFrame::view), a `&T` borrowed from the mapping)
//! or decodes it as a serde type ([`decode::<T>()`](TypedFrame::decode)),
//! each after checking the frame's type id and the payload.
//! [`Reader::dispatch`] hands each frame to the [`Dispatch`] handler of
//! its type.
//!
//! ## Positions and resuming
//!
//! A reader keeps its position on each journal it reads in a small file
//! beside the journal, `<journal>.readers/<reader name>.pos`
//! ([`tape_journal::position`], FORMAT.md "Reader positions"), so that
//! `tape top` and the service's metrics show how far behind it is. For
//! each frame [`Reader::next`] hands out it stores the frame's seq there
//! (`seen_seq`): one Relaxed store into the mapping, the only thing this
//! adds to `next`. The file is locked for the reader's life: a second live
//! reader **of the same name** on the same journal is refused
//! ([`AddError::Position`], naming the holder's pid), in this process or
//! another. A reader whose name is not a valid file name (the journal
//! name rules), or that may not write the journal's folder, keeps no
//! file and reads on. When the reader is dropped its files are deleted,
//! unless it resumes.
//!
//! **Resuming** ([`ReaderBuilder::resume`]): the files are kept when the
//! reader ends or dies, and a reader of the same name that resumes starts
//! each journal at the frame after the seq committed there; where there is
//! no file (or a file a reader that did not resume left), at the builder's
//! [`start`](ReaderBuilder::start), and that start counts as committed at
//! once, so a crash before the first commit restarts there. A position
//! that the journal cannot continue is refused ([`AddError::Resume`]): its
//! next frames were pruned, or the journal ends before it.
//!
//! **When a position is committed**: when the program calls
//! [`Reader::commit`], and only then. It commits, for every journal, the
//! last frame `next` handed out (two stores, no system call): call it once
//! the frames handed out so far are done with (written out, acted on).
//! Nothing is committed by `next`, by dropping the reader, or in the
//! background. What a crash replays: a resuming reader restarted after a
//! crash hands out again every frame after the last commit, so each frame
//! is handed out **at least once**; a frame the program had used after its
//! last commit, before the crash, is handed out twice, and no frame is
//! skipped. A commit is a store into the page cache: it survives any
//! crash of the process, not a power cut of the machine.
//!
//! ```
//! # let root = tempfile::tempdir().unwrap();
//! use tape_reader::{Reader, ServiceMode, Start};
//! use tape_journal::{Appender, AppendOptions};
//! let dir = tape_journal::journal_dir(root.path());
//! let opts = AppendOptions { page_size: 1 << 20, ..AppendOptions::default() };
//! let mut md = Appender::create(&dir, "md", opts).unwrap();
//! for i in 1..=3u8 { md.write(1, &[i]).unwrap(); }
//! let reader = || Reader::builder("strategy").service(ServiceMode::Never)
//!     .start(Start::First).resume().create().unwrap();
//!
//! let mut r = reader();
//! r.add_journal(&dir, "md").unwrap();
//! assert_eq!(r.next().unwrap().unwrap().payload(), [1]);
//! r.commit(); // frame 1 is done with
//! assert_eq!(r.next().unwrap().unwrap().payload(), [2]);
//! drop(r); // ended (or crashed) before committing frame 2
//!
//! let mut r = reader();
//! r.add_journal(&dir, "md").unwrap();
//! assert_eq!(r.next().unwrap().unwrap().payload(), [2]); // again: at least once
//! ```
//!
//! ## Replay
//!
//! Recorded journals are read at the pace at which they were written with
//! [`ReaderBuilder::paced`]: the first frame [`Reader::next`] returns sets
//! the pace, and a frame recorded `d` ns after it is returned no earlier
//! than `d / speed` ns later (on `CLOCK_MONOTONIC`, each moment computed
//! from the first, so errors do not add up). Until then `next` returns
//! `None`; [`Reader::due_in`] says how long is left, [`Reader::next_time`]
//! which frame is next, and [`Reader::wait`] sleeps until it is due (a
//! spin only for the last tens of µs, [`sleep_until`]). Nothing is copied.
//!
//! `tape replay` copies recorded journals into replay journals at their
//! pace instead, for a strategy that reads live journals: each replayed
//! frame is the recorded one byte for byte, its `seq` and `time_ns`
//! included. So in a replay journal [`Frame::time_ns`] (through
//! [`ReaderFrame`]) **is the original write time**, and the moment the
//! reader sees the frame is when it was replayed.
//!
//! ```
//! # let dir = tempfile::tempdir().unwrap();
//! use tape_reader::{Reader, ServiceMode, Speed, Start};
//! use tape_journal::{Appender, AppendOptions, FrameMeta};
//! let opts = AppendOptions { page_size: 1 << 20, ..AppendOptions::default() };
//! let mut md = Appender::create(dir.path(), "md", opts).unwrap();
//! let t0 = tape_journal::clock::now_ns() - 3_600_000_000_000; // an hour ago
//! md.write_replica(1, t0, &FrameMeta::default(), b"open").unwrap();
//! md.write_replica(2, t0 + 20_000_000, &FrameMeta::default(), b"tick").unwrap();
//!
//! let mut r = Reader::builder("backtest").service(ServiceMode::Never)
//!     .start(Start::First).paced(Speed::Times(10.0)).create().unwrap();
//! r.add_journal(dir.path(), "md").unwrap();
//! let start = std::time::Instant::now();
//! let mut got = Vec::new();
//! while got.len() < 2 {
//!     match r.next().unwrap() {
//!         Some(f) => got.push((f.time_ns(), f.payload().to_vec())),
//!         None => { r.wait(std::time::Duration::from_secs(1)); }
//!     }
//! }
//! // 20 ms recorded, 2 ms at ten times the pace.
//! assert!(start.elapsed() >= std::time::Duration::from_millis(2));
//! assert_eq!(got[1], (t0 + 20_000_000, b"tick".to_vec()));
//! ```
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

mod dispatch;
mod merge;
mod pace;
mod position;
mod wait;

use merge::Merge;
use position::Seen;
use std::path::{Path, PathBuf};
use tape_journal::{Cursor, CursorOptions, DirWatch, OpenError, PageHelper, ReadError};
use tape_service::{ReaderLease, RegisterError};

pub use dispatch::{Dispatch, DispatchError};
pub use pace::{monotonic_ns, sleep_until, BadSpeed, Pacer, Speed, SPIN_NS};
pub use position::{Found, ResumeError};
pub use tape_journal::position::{Position, PositionError};
pub use tape_journal::{Frame, Idle, Start, AWAKE};
pub use tape_typed::{DecodeError, PlainMessage, SerdeMessage, TypedFrame, ViewError};
pub use wait::JOURNAL_APPEARS_POLL;

/// Whether a reader registers with the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ServiceMode {
    /// Register; fail if no service runs.
    #[default]
    Required,
    /// Register if a service runs; read regardless.
    IfRunning,
    /// Do not talk to any service (replay, analysis).
    Never,
}

/// Why a [`Reader`] could not be created.
#[derive(Debug)]
pub enum ReaderCreateError {
    /// The service refused or is not running (with [`ServiceMode::Required`]).
    Register(RegisterError),
}

impl std::fmt::Display for ReaderCreateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReaderCreateError::Register(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for ReaderCreateError {}

/// Why a journal could not be added.
#[derive(Debug)]
pub enum AddError {
    /// The journal exists but cannot be read (a bad page, damage).
    Open(OpenError),
    /// The service refused the journal's registration.
    Register(RegisterError),
    /// The reader's position on the journal could not be kept: another
    /// live reader of the same name reads it (named), or a resuming
    /// reader may not write the journal's folder, or the file there is not
    /// a position file.
    Position(PositionError),
    /// A resuming reader's kept position cannot be continued without
    /// skipping frames or reading another journal.
    Resume(ResumeError),
}

impl std::fmt::Display for AddError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AddError::Open(e) => e.fmt(f),
            AddError::Register(e) => e.fmt(f),
            AddError::Position(e) => e.fmt(f),
            AddError::Resume(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for AddError {}

/// Builds a [`Reader`].
#[derive(Debug, Clone)]
pub struct ReaderBuilder {
    name: String,
    root: Option<PathBuf>,
    start: Start,
    service: ServiceMode,
    opts: CursorOptions,
    background: bool,
    helper_core: Option<usize>,
    speed: Speed,
    resume: bool,
}

impl ReaderBuilder {
    /// Map next pages ahead and unmap old ones on a helper thread (default
    /// on), so that `next` never makes a system call or takes a page fault
    /// at a page switch. Off: the reading thread does it.
    pub fn background(mut self, on: bool) -> Self {
        self.background = on;
        self
    }

    /// Pin the helper thread to this CPU (e.g. a core other than the
    /// reader's own).
    pub fn helper_core(mut self, core: Option<usize>) -> Self {
        self.helper_core = core;
        self
    }

    /// The root whose service to register with (default: `$TAPE_ROOT`, else
    /// `/tmp/trading`).
    pub fn root(mut self, root: impl Into<PathBuf>) -> Self {
        self.root = Some(root.into());
        self
    }

    /// Where journals added later start (default [`Start::End`]: frames
    /// published from now on).
    pub fn start(mut self, start: Start) -> Self {
        self.start = start;
        self
    }

    /// Whether to register with the service (default
    /// [`ServiceMode::Required`]).
    pub fn service(mut self, mode: ServiceMode) -> Self {
        self.service = mode;
        self
    }

    /// Check every payload's CRC32C and that each journal's write times
    /// never go back, reporting a mismatch as damage (a verified read;
    /// sequence numbers are checked either way).
    pub fn verify_crc(mut self, on: bool) -> Self {
        self.opts.verify_crc = on;
        self
    }

    /// Pre-fault each page's mapping when it is mapped (default on): no page
    /// faults while reading. With the background helper the cost is paid
    /// there; without it, a few ms per page at the switch.
    pub fn populate(mut self, on: bool) -> Self {
        self.opts.populate = on;
        self
    }

    /// Hand out recorded frames at `speed` times the pace at which they
    /// were written (default [`Speed::Max`]: as soon as they are there).
    /// The first frame [`next`](Reader::next) returns sets the pace; a
    /// frame recorded `d` ns after it is returned no earlier than
    /// `d / speed` ns after it (on `CLOCK_MONOTONIC`): until then `next`
    /// returns `None`, [`Reader::due_in`] says how long is left and
    /// [`Reader::wait`] sleeps until then. Nothing is copied: the frames
    /// are read from the recorded journals themselves. See the crate docs,
    /// "Replay".
    pub fn paced(mut self, speed: Speed) -> Self {
        self.speed = speed;
        self
    }

    /// Resume: keep this reader's position on each journal it reads when it
    /// ends, and start each journal after the position committed there
    /// (by [`Reader::commit`]) by the last reader of this name, or at the
    /// builder's [`start`](Self::start) where there is none. See the crate
    /// docs, "Positions and resuming".
    pub fn resume(mut self) -> Self {
        self.resume = true;
        self
    }

    /// Creates the reader (registering it, per the service mode).
    pub fn create(self) -> Result<Reader, ReaderCreateError> {
        let root = tape_journal::resolve_root(self.root.as_deref());
        let lease = match self.service {
            ServiceMode::Never => None,
            ServiceMode::Required => Some(
                ReaderLease::acquire(&root, &self.name, &[])
                    .map_err(ReaderCreateError::Register)?,
            ),
            ServiceMode::IfRunning => ReaderLease::acquire(&root, &self.name, &[]).ok(),
        };
        let helper = if self.background {
            // Without the thread (it could not start) the reader maps
            // next pages itself in housekeeping.
            PageHelper::spawn("tape-reader-pages", self.helper_core).ok()
        } else {
            None
        };
        let pacer = match self.speed {
            Speed::Max => None,
            speed => Some(Pacer::new(speed)),
        };
        Ok(Reader {
            name: self.name,
            root,
            start: self.start,
            opts: self.opts,
            lease,
            service: self.service,
            other_roots: Vec::new(),
            sources: Vec::new(),
            merge: Merge::default(),
            empty: Vec::new(),
            last: None,
            idle: 0,
            helper,
            watches: Vec::new(),
            looks: 0,
            pacer,
            single: false,
            resume: self.resume,
        })
    }
}

/// One journal of a reader.
#[derive(Debug)]
struct Source {
    dir: PathBuf,
    name: String,
    state: State,
    /// Where `next` stores the seq of each frame it hands out from this
    /// journal, and the position file.
    seen: Seen,
}

#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // few sources; the hot path keeps the cursor inline
enum State {
    /// The journal has no page yet; opened at its first frame once it has.
    Waiting,
    /// Reading.
    Open { cursor: Cursor },
}

/// A frame returned by [`Reader::next`]: the frame and the journal it is
/// from.
#[derive(Debug, Clone, Copy)]
pub struct ReaderFrame<'a> {
    /// Index of the journal, in the order it was added.
    pub journal: usize,
    /// Name of the journal.
    pub journal_name: &'a str,
    /// The frame, borrowed from the mapping.
    pub frame: Frame<'a>,
}

impl<'a> std::ops::Deref for ReaderFrame<'a> {
    type Target = Frame<'a>;
    fn deref(&self) -> &Frame<'a> {
        &self.frame
    }
}

/// How many empty polls pass between the housekeeping steps (retrying
/// journals that do not exist yet, mapping next pages ahead).
const HOUSEKEEPING_EVERY: u32 = 1 << 12;

/// Reads many journals merged in write-time order.
#[derive(Debug)]
pub struct Reader {
    name: String,
    root: PathBuf,
    start: Start,
    opts: CursorOptions,
    lease: Option<ReaderLease>,
    service: ServiceMode,
    /// Registrations with the services of other roots, for journals whose
    /// folder belongs to another root than the reader's.
    other_roots: Vec<(PathBuf, Option<ReaderLease>)>,
    sources: Vec<Source>,
    /// The write time of each open journal's next frame, where known.
    merge: Merge,
    /// Open journals with no next frame known: looked at on every call.
    empty: Vec<usize>,
    /// The journal the last frame came from: its next frame is looked up
    /// on the next call (the frame returned borrows its cursor).
    last: Option<usize>,
    idle: u32,
    helper: Option<PageHelper>,
    /// inotify watches on the folders of journals not there yet, made by
    /// the first [`Reader::wait`] that has such a journal.
    watches: Vec<(PathBuf, DirWatch)>,
    /// Looks for journals not there yet (each lists a folder).
    looks: u64,
    /// The pace of a paced reader ([`ReaderBuilder::paced`]).
    pacer: Option<Pacer>,
    /// One journal and no pacer: [`Reader::next`] is the cursor's own poll.
    single: bool,
    /// Whether positions are kept and continued ([`ReaderBuilder::resume`]).
    resume: bool,
}

impl Reader {
    /// A reader named `name`, registered with the service of the default
    /// root, reading journals from their end (new frames).
    pub fn create(name: &str) -> Result<Reader, ReaderCreateError> {
        Reader::builder(name).create()
    }

    /// A builder for a reader named `name`.
    pub fn builder(name: &str) -> ReaderBuilder {
        ReaderBuilder {
            name: name.to_string(),
            root: None,
            start: Start::End,
            service: ServiceMode::Required,
            opts: CursorOptions {
                verify_crc: false,
                populate: true,
            },
            background: true,
            helper_core: None,
            speed: Speed::Max,
            resume: false,
        }
    }

    /// Adds journal `name` in `dir`, read from the reader's start position.
    /// Returns its index (as in [`ReaderFrame::journal`]).
    pub fn add_journal(&mut self, dir: impl AsRef<Path>, name: &str) -> Result<usize, AddError> {
        let start = self.start;
        self.add_journal_at(dir, name, start)
    }

    /// Adds journal `name` in `dir`, read from `start` (a resuming reader
    /// with a kept position there: from the frame after its committed
    /// seq). Refused ([`AddError::Position`]) while another live reader of
    /// this name reads the journal.
    pub fn add_journal_at(
        &mut self,
        dir: impl AsRef<Path>,
        name: &str,
        start: Start,
    ) -> Result<usize, AddError> {
        let dir = dir.as_ref().to_path_buf();
        tape_journal::check_name(name).map_err(|e| AddError::Open(OpenError::BadName(e)))?;
        let pos =
            position::open(&dir, name, &self.name, self.resume).map_err(AddError::Position)?;
        let start = position::start_of(pos.as_ref(), start);
        let seen = Seen::new(pos);
        let (state, before) = match Cursor::open(&dir, name, start, self.opts) {
            Ok(mut cursor) => {
                if let Some(h) = &self.helper {
                    h.add(&mut cursor);
                }
                let before = position::seq_before(&mut cursor).map_err(AddError::Open);
                (State::Open { cursor }, Some(before))
            }
            Err(OpenError::NotFound { .. }) => (State::Waiting, None),
            Err(e) => {
                seen.abandon();
                return Err(AddError::Open(e));
            }
        };
        let before = match before.transpose() {
            Ok(b) => b,
            Err(e) => {
                seen.abandon();
                return Err(e);
            }
        };
        if let Err(e) = position::check_resume(seen.position(), name, before) {
            seen.abandon();
            return Err(AddError::Resume(e));
        }
        seen.begin(before.unwrap_or(0));
        let registered = match self.lease_for(&dir) {
            Ok(Some(lease)) => lease.add_journal(&dir, name).map_err(AddError::Register),
            Ok(None) => Ok(()),
            Err(e) => Err(e),
        };
        if let Err(e) = registered {
            seen.abandon();
            return Err(e);
        }
        // Only once registered: a refused journal leaves no trace.
        let index = self.sources.len();
        if matches!(state, State::Open { .. }) {
            self.empty.push(index);
        }
        self.merge.grow(index);
        self.sources.push(Source {
            dir,
            name: name.to_string(),
            state,
            seen,
        });
        self.single = self.sources.len() == 1 && self.pacer.is_none();
        Ok(self.sources.len() - 1)
    }

    /// The unread frame with the smallest write time among the journals
    /// (ties go to the journal added first), or `None` when no journal has
    /// an unread frame. Never blocks.
    #[inline(always)]
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<ReaderFrame<'_>>, ReadError> {
        // One journal, no housekeeping due: the cursor's own poll, inlined
        // into the caller's loop (a call per poll, and the frame handed back
        // through memory, cost a few ns each time).
        if self.single && self.idle < HOUSEKEEPING_EVERY {
            return self.next_one();
        }
        self.next_general()
    }

    /// One journal: no merge, no peek.
    #[inline(always)]
    fn next_one(&mut self) -> Result<Option<ReaderFrame<'_>>, ReadError> {
        let src = &mut self.sources[0];
        if let State::Open { cursor } = &mut src.state {
            if let Some(frame) = cursor.next()? {
                src.seen.store(frame.seq());
                return Ok(Some(ReaderFrame {
                    journal: 0,
                    journal_name: &src.name,
                    frame,
                }));
            }
        }
        self.idle += 1;
        Ok(None)
    }

    /// [`next`](Self::next) with housekeeping due, several journals to
    /// merge, or a pace to keep.
    #[inline(never)]
    fn next_general(&mut self) -> Result<Option<ReaderFrame<'_>>, ReadError> {
        if self.idle >= HOUSEKEEPING_EVERY {
            self.idle = 0;
            self.housekeeping();
        }
        if self.sources.len() == 1 && self.pacer.is_none() {
            return self.next_one();
        }
        let Some((i, time_ns)) = self.head()? else {
            self.idle += 1;
            return Ok(None);
        };
        if let Some(p) = &mut self.pacer {
            if !p.is_due(time_ns) {
                self.idle += 1;
                return Ok(None);
            }
        }
        if self.sources.len() == 1 {
            return self.next_one();
        }
        self.last = Some(i);
        let src = &mut self.sources[i];
        let State::Open { cursor } = &mut src.state else {
            unreachable!("only open journals are merged")
        };
        let frame = cursor.next()?.expect("a peeked frame is still there");
        src.seen.store(frame.seq());
        Ok(Some(ReaderFrame {
            journal: i,
            journal_name: &src.name,
            frame,
        }))
    }

    /// The journal of the frame [`next`](Self::next) returns next (due or
    /// not) and its write time, without reading past it.
    fn head(&mut self) -> Result<Option<(usize, i64)>, ReadError> {
        if self.sources.len() == 1 {
            return Ok(match &mut self.sources[0].state {
                State::Open { cursor } => cursor.peek()?.map(|f| (0, f.time_ns())),
                State::Waiting => None,
            });
        }
        // Many journals: a tournament tree over the write time of each
        // one's next frame (O(log k) a frame), and the journals with none
        // known looked at on every call.
        if let Some(i) = self.last {
            let State::Open { cursor } = &mut self.sources[i].state else {
                unreachable!("only open journals are merged")
            };
            // On an error `last` stays, and so does the journal's stale
            // entry, which the merge is not asked for before it is replaced.
            let t = cursor.peek()?.map(|f| f.time_ns());
            self.last = None;
            self.merge.set(i, t);
            if t.is_none() {
                self.empty.push(i);
            }
        }
        if !self.empty.is_empty() {
            self.look_at_empty()?;
        }
        Ok(self.merge.first_with_time())
    }

    /// The write time of the frame [`next`](Self::next) returns next,
    /// whether or not it is due yet on a paced reader; `None` when no
    /// journal has an unread frame. Reads past nothing. A replay stops at
    /// a time bound with it, without waiting for a frame past the bound
    /// to fall due.
    pub fn next_time(&mut self) -> Result<Option<i64>, ReadError> {
        Ok(self.head()?.map(|(_, t)| t))
    }

    /// How long until the frame [`next`](Self::next) returns next falls
    /// due ([`ReaderBuilder::paced`]): zero when it is due (always, on a
    /// reader that is not paced), `None` when no journal has an unread
    /// frame.
    pub fn due_in(&mut self) -> Result<Option<std::time::Duration>, ReadError> {
        let Some((_, t)) = self.head()? else {
            return Ok(None);
        };
        Ok(Some(match &mut self.pacer {
            Some(p) => p.due_in(t),
            None => std::time::Duration::ZERO,
        }))
    }

    /// The pace of a paced reader (`None` when it is not paced): the
    /// moment each recorded frame falls due, on `CLOCK_MONOTONIC`.
    pub fn pacer(&mut self) -> Option<&mut Pacer> {
        self.pacer.as_mut()
    }

    /// Looks for a next frame in each open journal that had none.
    #[inline(never)]
    fn look_at_empty(&mut self) -> Result<(), ReadError> {
        let mut j = 0;
        while j < self.empty.len() {
            let i = self.empty[j];
            let State::Open { cursor } = &mut self.sources[i].state else {
                unreachable!("only open journals are merged")
            };
            match cursor.peek()? {
                Some(f) => {
                    self.merge.set(i, Some(f.time_ns()));
                    self.empty.swap_remove(j);
                }
                None => j += 1,
            }
        }
        Ok(())
    }

    /// Opens journals that appeared since they were added and maps next
    /// pages ahead of time. [`Reader::next`] calls it every few thousand
    /// empty polls; call it yourself after a pause if you like.
    pub fn housekeeping(&mut self) {
        for (i, src) in self.sources.iter_mut().enumerate() {
            match &mut src.state {
                State::Waiting => {
                    self.looks += 1;
                    if let Ok(mut cursor) =
                        Cursor::open(&src.dir, &src.name, Start::First, self.opts)
                    {
                        if let Some(h) = &self.helper {
                            h.add(&mut cursor);
                        }
                        if src.seen.position().is_none() && !self.resume {
                            // The folder was not there when the journal was
                            // added: keep the position now, if it can be.
                            let pos = position::open(&src.dir, &src.name, &self.name, false);
                            src.seen.set_position(pos.ok().flatten());
                        }
                        // A journal made after the reader began, read from
                        // its first frame (not always seq 1: a replica).
                        if let Ok(before) = position::seq_before(&mut cursor) {
                            src.seen.begin(before);
                        }
                        src.state = State::Open { cursor };
                        self.empty.push(i);
                    }
                }
                State::Open { cursor, .. } => {
                    if self.helper.is_none() {
                        let _ = cursor.prefetch();
                    }
                }
            }
        }
    }

    /// Off the hot path: whether a journal this reader has no frame from is
    /// stopped at damage rather than at its live end (a hole of zeros with
    /// frames published after it, or a page without its end-of-page marker
    /// while the next page has frames), returned with file and offset. See
    /// [`Cursor::check_stall`]: it reads the rest of each waiting
    /// journal's current page, so call it after a quiet while (every few
    /// seconds of idleness, or at the end of a replay), never per poll.
    pub fn check_stalled(&mut self) -> Result<(), ReadError> {
        for (i, src) in self.sources.iter_mut().enumerate() {
            let known = self.merge.is_known(i) && self.last != Some(i);
            if let (State::Open { cursor }, false) = (&mut src.state, known) {
                cursor.check_stall()?;
            }
        }
        Ok(())
    }

    /// Commits the reader's position on every journal it reads: the last
    /// frame [`next`](Self::next) handed out from each (a frame still
    /// borrowed from `next` cannot be outlived by this call, so it is the
    /// frame the caller has finished with). Two stores per journal that
    /// moved since the last commit, into the position file's mapping (a
    /// Release store of `committed_seq`, after `committed_ns`): no system
    /// call. A resuming reader of this name restarts each journal at the
    /// frame after its last commit. Journals without a position file
    /// (a folder this process may not write) are skipped.
    #[inline]
    pub fn commit(&self) {
        for src in &self.sources {
            src.seen.commit();
        }
    }

    /// The position kept on journal `journal` (its index, as in
    /// [`ReaderFrame::journal`]): `None` when the reader keeps none there
    /// (see the crate docs, "Positions and resuming").
    pub fn position(&self, journal: usize) -> Option<&Position> {
        self.sources.get(journal)?.seen.position()
    }

    /// Whether the reader resumes ([`ReaderBuilder::resume`]).
    pub fn resumes(&self) -> bool {
        self.resume
    }

    /// Whether every added journal exists and is being read.
    pub fn all_open(&self) -> bool {
        self.sources
            .iter()
            .all(|s| matches!(s.state, State::Open { .. }))
    }

    /// Number of journals added.
    pub fn journals(&self) -> usize {
        self.sources.len()
    }

    /// The reader's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether the reader is registered with a service right now.
    pub fn is_registered(&self) -> bool {
        self.lease.as_ref().is_some_and(|l| l.is_registered())
            && self
                .other_roots
                .iter()
                .all(|(_, l)| l.as_ref().is_some_and(ReaderLease::is_registered))
    }

    /// The registration a journal in `dir` is added to: the reader's own,
    /// or (made on first use, per the service mode) the one with the
    /// service of the other root `dir` belongs to.
    fn lease_for(&mut self, dir: &Path) -> Result<Option<&mut ReaderLease>, AddError> {
        if self.service == ServiceMode::Never {
            return Ok(None);
        }
        let root = match tape_journal::root_of(dir) {
            Some(r) if !same_folder(&r, &self.root) => r,
            _ => return Ok(self.lease.as_mut()),
        };
        let at = match self
            .other_roots
            .iter()
            .position(|(r, _)| same_folder(r, &root))
        {
            Some(i) => i,
            None => {
                let lease = match self.service {
                    ServiceMode::Required => Some(
                        ReaderLease::acquire(&root, &self.name, &[]).map_err(AddError::Register)?,
                    ),
                    _ => ReaderLease::acquire(&root, &self.name, &[]).ok(),
                };
                self.other_roots.push((root, lease));
                self.other_roots.len() - 1
            }
        };
        Ok(self.other_roots[at].1.as_mut())
    }
}

fn same_folder(a: &Path, b: &Path) -> bool {
    a == b
        || match (a.canonicalize(), b.canonicalize()) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        }
}
