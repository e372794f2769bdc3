//! Reader positions: one small shared file per (reader name, journal) that
//! says how far a named reader has got, for the reader itself (to resume
//! after a crash) and for watchers (`tape top`, the service's metrics).
//!
//! The file is `<journal dir>/<journal>.readers/<reader>.pos`, 64 bytes,
//! little-endian (FORMAT.md, "Reader positions"):
//!
//! | offset | size | field | meaning |
//! |---|---|---|---|
//! | 0 | 4 | magic | ASCII `TPOS`, stored last when the file is made |
//! | 4 | 4 | version | 1 |
//! | 8 | 4 | pid | the process that holds it now (written after the flock is taken) |
//! | 12 | 4 | flags | bit 0 ([`FLAG_RESUME`]): the reader resumes (keeps the file when it ends) |
//! | 16 | 8 | seen_seq | seq of the last frame handed out (before the first: the seq before the reader's start; 0: none) |
//! | 24 | 8 | committed_seq | last committed seq (0: none) |
//! | 32 | 8 | committed_ns | CLOCK_REALTIME of the last commit (0: never) |
//! | 40 | 24 | reserved | zeros |
//!
//! The reader ([`Position`]) maps the file shared, read-write, and holds an
//! exclusive `flock` on it for its whole life, so a second live reader of
//! the same name on the same journal is refused, naming the holder the way
//! the writer lock does ([`LockError::Held`]). [`Position::seen`] is one
//! `Relaxed` store; [`Position::commit`] a `Release` store of
//! `committed_seq` after a `Relaxed` one of `committed_ns`: no system call.
//! A store made before the process dies is in the file (the mapping is the
//! page cache): a commit survives any crash of the process, not a power
//! cut.
//!
//! Watchers ([`PositionView`], [`list_positions`]) open the file read-only,
//! map it read-only, load the words, and never lock it (a watcher's lock,
//! even a shared one for a moment, would make a starting reader's
//! `LOCK_EX | LOCK_NB` fail): whether a live process holds it comes from
//! `/proc/locks`.
//!
//! ```
//! use tape_journal::position::{list_positions, Position, PositionOptions};
//! let dir = tempfile::tempdir().unwrap();
//! let pos = Position::open(dir.path(), "md", "strategy", PositionOptions { resume: true }).unwrap();
//! pos.seen(41);
//! pos.commit(41);
//! let views = list_positions(dir.path(), "md").unwrap();
//! assert_eq!((views[0].reader.as_str(), views[0].seen_seq, views[0].committed_seq), ("strategy", 41, 41));
//! assert_eq!(views[0].holder, Some(std::process::id()));
//! drop(pos); // a resuming reader keeps its file
//! let again = Position::open(dir.path(), "md", "strategy", PositionOptions { resume: true }).unwrap();
//! assert_eq!(again.resumed(), Some(41));
//! ```

use crate::files::{check_name, exclusive_holder, lock_exclusive, LockError};
use std::fs::{File, OpenOptions};
use std::io;
use std::mem::{offset_of, size_of};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{fence, AtomicI64, AtomicU32, AtomicU64, Ordering};

/// Suffix of the folder of a journal's reader positions:
/// `<journal>.readers`.
pub const READERS_SUFFIX: &str = ".readers";
/// Suffix of a position file: `<reader>.pos`.
pub const POS_SUFFIX: &str = ".pos";
/// Length of a position file.
pub const POS_LEN: usize = 64;
/// `magic`: ASCII `TPOS`.
pub const POS_MAGIC: u32 = u32::from_le_bytes(*b"TPOS");
/// `version` of this layout.
pub const POS_VERSION: u32 = 1;
/// `flags` bit 0: the reader resumes from this file (keeps it when it
/// ends).
pub const FLAG_RESUME: u32 = 1;

/// The file's words, as mapped.
#[repr(C, align(64))]
struct Words {
    magic: AtomicU32,
    version: AtomicU32,
    pid: AtomicU32,
    flags: AtomicU32,
    seen_seq: AtomicU64,
    committed_seq: AtomicU64,
    committed_ns: AtomicI64,
    reserved: [AtomicU64; 3],
}

const _: () = assert!(offset_of!(Words, magic) == 0);
const _: () = assert!(offset_of!(Words, version) == 4);
const _: () = assert!(offset_of!(Words, pid) == 8);
const _: () = assert!(offset_of!(Words, flags) == 12);
const _: () = assert!(offset_of!(Words, seen_seq) == 16);
const _: () = assert!(offset_of!(Words, committed_seq) == 24);
const _: () = assert!(offset_of!(Words, committed_ns) == 32);
const _: () = assert!(offset_of!(Words, reserved) == 40);
const _: () = assert!(size_of::<Words>() == POS_LEN);

/// The folder of journal `journal`'s reader positions in `dir`.
pub fn readers_dir(dir: &Path, journal: &str) -> PathBuf {
    dir.join(format!("{journal}{READERS_SUFFIX}"))
}

/// The position file of reader `reader` on journal `journal` in `dir`.
pub fn position_path(dir: &Path, journal: &str, reader: &str) -> PathBuf {
    readers_dir(dir, journal).join(format!("{reader}{POS_SUFFIX}"))
}

/// How a reader opens its position.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PositionOptions {
    /// The reader resumes: it continues a kept position
    /// ([`Position::resumed`]) and keeps the file when it ends. Otherwise
    /// the file is deleted when the [`Position`] is dropped.
    pub resume: bool,
}

/// Why a reader's position could not be opened.
#[derive(Debug)]
pub enum PositionError {
    /// The journal's name is not valid.
    BadJournalName(String),
    /// The reader's name cannot name a file (the journal name rules).
    BadReaderName(String),
    /// Another live reader of the same name reads this journal: the
    /// writer lock's error, naming the holder.
    Held {
        /// The reader's name.
        reader: String,
        /// The journal.
        journal: String,
        /// The lock error, with the file and the holder's pid.
        lock: LockError,
    },
    /// This process may not write the journal's folder (or its
    /// `.readers` folder): a reader that does not resume reads on with no
    /// position ([`PositionError::is_read_only`]).
    ReadOnly {
        /// The folder or file.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
    /// The file is there but is not a position file of this version; it
    /// is left as it is.
    NotPosition {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        what: String,
    },
    /// A reader that does not resume found the position a resuming reader
    /// of the same name keeps: it would delete it when it ends, so it is
    /// refused and the file is left as it is.
    Kept {
        /// The file.
        path: PathBuf,
        /// Its committed seq.
        committed_seq: u64,
    },
    /// Any other failure of the file system.
    Io {
        /// The folder or file.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
}

impl PositionError {
    /// Whether the only trouble is that this process may not write there
    /// (a read-only folder, another user's journal): such a reader reads
    /// with no position file, unless it asked to resume.
    pub fn is_read_only(&self) -> bool {
        matches!(self, PositionError::ReadOnly { .. })
    }

    fn io(path: &Path, source: io::Error) -> PositionError {
        let path = path.to_path_buf();
        match source.raw_os_error() {
            Some(libc::EACCES | libc::EPERM | libc::EROFS) => {
                PositionError::ReadOnly { path, source }
            }
            _ => PositionError::Io { path, source },
        }
    }
}

impl std::fmt::Display for PositionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PositionError::BadJournalName(n) => {
                write!(f, "{}", crate::files::BadName(n.clone()))
            }
            PositionError::BadReaderName(n) => write!(
                f,
                "reader name {n:?} cannot name a position file: use 1 to {} characters from A-Z a-z 0-9 _ - . not starting with a dot",
                crate::files::MAX_NAME_LEN
            ),
            PositionError::Held {
                reader,
                journal,
                lock,
            } => write!(
                f,
                "a reader named {reader:?} already reads journal {journal}: {lock} (or give this reader another name)"
            ),
            PositionError::ReadOnly { path, source } => write!(
                f,
                "cannot keep a reader position in {}: {source} (run the reader as a user who may write the journal's folder, or do not ask it to resume)",
                path.display()
            ),
            PositionError::NotPosition { path, what } => write!(
                f,
                "{} is not a tape reader position file ({what}): move it away or delete it",
                path.display()
            ),
            PositionError::Kept {
                path,
                committed_seq,
            } => write!(
                f,
                "{} is the position a resuming reader of this name keeps (committed seq {committed_seq}): read with resume, give this reader another name, or delete the file to start over",
                path.display()
            ),
            PositionError::Io { path, source } => {
                write!(f, "cannot keep a reader position in {}: {source}", path.display())
            }
        }
    }
}

impl std::error::Error for PositionError {}

/// A shared read-write mapping of one position file's 64 bytes.
struct Mapping {
    words: *const Words,
}

// SAFETY: `words` points into a shared mapping that lives as long as the
// Mapping (unmapped in Drop) and is only accessed through atomics.
unsafe impl Send for Mapping {}
// SAFETY: as above: every access is atomic.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps the first 64 bytes of `file` (at least that long), read-write
    /// when `write`, else read-only.
    fn new(file: &File, write: bool) -> io::Result<Mapping> {
        let prot = if write {
            libc::PROT_READ | libc::PROT_WRITE
        } else {
            libc::PROT_READ
        };
        // SAFETY: a new shared mapping of POS_LEN bytes of a file at least
        // that long (the callers check); page-aligned, so Words' alignment
        // holds. It is unmapped only in Drop, and only accessed through
        // atomics (the other processes that map the file too).
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                POS_LEN,
                prot,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapping {
            words: p as *const Words,
        })
    }

    #[inline(always)]
    fn w(&self) -> &Words {
        // SAFETY: mapped for the Mapping's whole life (see `new`).
        unsafe { &*self.words }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once.
        unsafe { libc::munmap(self.words as *mut libc::c_void, POS_LEN) };
    }
}

/// A live reader's position on one journal: its file, mapped, and the
/// `flock` that says the reader is alive.
pub struct Position {
    map: Mapping,
    file: File,
    path: PathBuf,
    resume: bool,
    /// The committed seq of the kept file this position continues.
    resumed: Option<u64>,
}

impl std::fmt::Debug for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Position")
            .field("path", &self.path)
            .field("resume", &self.resume)
            .field("resumed", &self.resumed)
            .field("seen_seq", &self.seen_seq())
            .field("committed_seq", &self.committed_seq())
            .finish()
    }
}

impl Position {
    /// Opens (making it, and the `.readers` folder, if missing) the
    /// position of reader `reader` on journal `journal` in `dir`, and takes
    /// its lock.
    ///
    /// - Another live holder: [`PositionError::Held`] naming it (an flock
    ///   belongs to the open file description: a second `Position` of the
    ///   same name in the same process is refused too).
    /// - A file no one holds is a reader that is gone. With
    ///   [`PositionOptions::resume`], a kept file (flag [`FLAG_RESUME`])
    ///   is continued: [`resumed`](Self::resumed) is its committed seq and
    ///   its words stay as they are. Any other is made new: seen and
    ///   committed 0, until the reader sets them.
    /// - Without resume, a kept file is refused ([`PositionError::Kept`]),
    ///   since this reader would delete it when it ends.
    ///
    /// The `.readers` folder is made with mode 0750 and the file with 0640
    /// (less what the umask takes).
    pub fn open(
        dir: &Path,
        journal: &str,
        reader: &str,
        opts: PositionOptions,
    ) -> Result<Position, PositionError> {
        check_name(journal).map_err(|_| PositionError::BadJournalName(journal.into()))?;
        check_name(reader).map_err(|_| PositionError::BadReaderName(reader.into()))?;
        let folder = readers_dir(dir, journal);
        match std::fs::DirBuilder::new().mode(0o750).create(&folder) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(PositionError::io(&folder, e)),
        }
        sweep_gone(&folder);
        let path = position_path(dir, journal, reader);
        // A reader that ends unlinks its file while it holds the lock: a
        // file locked after that is no longer at `path`, so lock again.
        for _ in 0..100 {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o640)
                .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
                .open(&path)
                .map_err(|e| PositionError::io(&path, e))?;
            let recorded = || recorded_pid(&file);
            lock_exclusive(&file, &path, recorded).map_err(|lock| match lock {
                LockError::Io { path, source } => PositionError::io(&path, source),
                held => PositionError::Held {
                    reader: reader.into(),
                    journal: journal.into(),
                    lock: held,
                },
            })?;
            if !same_file(&file, &path) {
                continue;
            }
            return Position::take(file, path, opts);
        }
        Err(PositionError::Io {
            path,
            source: io::Error::other("the file kept being replaced while it was locked"),
        })
    }

    /// The file is open and locked: check it, make it new or continue it.
    fn take(file: File, path: PathBuf, opts: PositionOptions) -> Result<Position, PositionError> {
        let len = file
            .metadata()
            .map_err(|e| PositionError::io(&path, e))?
            .len();
        if len != 0 && len != POS_LEN as u64 {
            return Err(PositionError::NotPosition {
                path,
                what: format!("{len} bytes long, not {POS_LEN}"),
            });
        }
        if len == 0 {
            file.set_len(POS_LEN as u64)
                .map_err(|e| PositionError::io(&path, e))?;
        }
        let map = Mapping::new(&file, true).map_err(|e| PositionError::io(&path, e))?;
        let w = map.w();
        let magic = w.magic.load(Ordering::Acquire);
        let valid = match magic {
            // Made by a reader that died before it finished: new.
            0 => false,
            POS_MAGIC => {
                let version = w.version.load(Ordering::Relaxed);
                if version != POS_VERSION {
                    return Err(PositionError::NotPosition {
                        path,
                        what: format!("version {version}, this build reads {POS_VERSION}"),
                    });
                }
                true
            }
            other => {
                return Err(PositionError::NotPosition {
                    path,
                    what: format!("magic {:?}", other.to_le_bytes()),
                })
            }
        };
        let kept = valid && w.flags.load(Ordering::Relaxed) & FLAG_RESUME != 0;
        let committed = w.committed_seq.load(Ordering::Relaxed);
        if kept && !opts.resume {
            return Err(PositionError::Kept {
                path,
                committed_seq: committed,
            });
        }
        let resumed = (kept && opts.resume).then_some(committed);
        if resumed.is_none() {
            // New: nothing seen, nothing committed. The magic goes last,
            // so that a file cut short by a crash here reads as new.
            w.magic.store(0, Ordering::Relaxed);
            w.seen_seq.store(0, Ordering::Relaxed);
            w.committed_seq.store(0, Ordering::Relaxed);
            w.committed_ns.store(0, Ordering::Relaxed);
            for r in &w.reserved {
                r.store(0, Ordering::Relaxed);
            }
            w.version.store(POS_VERSION, Ordering::Relaxed);
        }
        w.pid.store(std::process::id(), Ordering::Relaxed);
        let flags = if opts.resume { FLAG_RESUME } else { 0 };
        w.flags.store(flags, Ordering::Relaxed);
        w.magic.store(POS_MAGIC, Ordering::Release);
        Ok(Position {
            map,
            file,
            path,
            resume: opts.resume,
            resumed,
        })
    }

    /// The committed seq of the kept position this one continues (a
    /// resuming reader, a file a reader of its name kept): the reader
    /// starts at the frame after it. `None` for a new position.
    pub fn resumed(&self) -> Option<u64> {
        self.resumed
    }

    /// Where the reader starts: `before` is the seq just before the first
    /// frame it will hand out (0 at the journal's beginning). Stored as
    /// `seen_seq`, and for a new resuming position as `committed_seq` too,
    /// so that a crash before the first commit restarts here, not at the
    /// journal's beginning. A continued position ([`resumed`](Self::resumed))
    /// keeps its committed seq.
    pub fn begin(&self, before: u64) {
        self.seen(before);
        if self.resume && self.resumed.is_none() {
            self.commit(before);
        }
    }

    /// Drops the position as if it had never been taken (its reader was
    /// refused the journal): the file is deleted when this position made
    /// it new, a resuming one's too; a kept position it continued stays as
    /// it is.
    pub fn abandon(mut self) {
        if self.resumed.is_none() {
            self.resume = false;
        }
    }

    /// Whether the file is kept when the position is dropped.
    pub fn resumes(&self) -> bool {
        self.resume
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records that the reader handed out the frame `seq`: one `Relaxed`
    /// store into the shared mapping.
    #[inline(always)]
    pub fn seen(&self, seq: u64) {
        self.map.w().seen_seq.store(seq, Ordering::Relaxed);
    }

    /// The `seen_seq` word itself, for a reader that stores into it on its
    /// hot path without going through the `Position` (valid while the
    /// `Position` lives; the mapping does not move when the `Position`
    /// does).
    pub fn seen_word(&self) -> &AtomicU64 {
        &self.map.w().seen_seq
    }

    /// The last seq [`seen`](Self::seen).
    pub fn seen_seq(&self) -> u64 {
        self.map.w().seen_seq.load(Ordering::Relaxed)
    }

    /// Commits `seq`: the reader restarts at `seq + 1` if it resumes.
    /// `committed_ns` (CLOCK_REALTIME, [`crate::clock::now_ns`]) with a
    /// `Relaxed` store, then `committed_seq` with a `Release` one (a
    /// watcher that loads that seq with Acquire sees at least that commit's
    /// time). No system call.
    #[inline]
    pub fn commit(&self, seq: u64) {
        let w = self.map.w();
        w.committed_ns
            .store(crate::clock::now_ns(), Ordering::Relaxed);
        w.committed_seq.store(seq, Ordering::Release);
    }

    /// The last seq committed.
    pub fn committed_seq(&self) -> u64 {
        self.map.w().committed_seq.load(Ordering::Relaxed)
    }
}

impl Drop for Position {
    fn drop(&mut self) {
        if !self.resume {
            // Unlinked while the lock is held, and only if it is still this
            // file: a reader opening it now locks the unlinked file, sees
            // it is no longer at the path, and makes a new one.
            if same_file(&self.file, &self.path) {
                let _ = std::fs::remove_file(&self.path);
            }
            // The folder goes with its last file (fails while others are
            // in it).
            if let Some(folder) = self.path.parent() {
                let _ = std::fs::remove_dir(folder);
            }
        }
    }
}

/// Deletes the files in `folder` of readers that did not resume and are
/// gone without deleting theirs (killed, or crashed): a valid position
/// file with flag [`FLAG_RESUME`] clear whose lock this process can take.
/// Under that lock, as a reader that ends deletes its own, so a reader
/// opening that file meanwhile makes a new one. Best effort.
fn sweep_gone(folder: &Path) {
    let Ok(entries) = std::fs::read_dir(folder) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some(&POS_SUFFIX[1..]) {
            continue;
        }
        let Ok(file) = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&path)
        else {
            continue;
        };
        // Not a regular file, not ours to judge.
        if !file
            .metadata()
            .is_ok_and(|m| m.is_file() && m.len() == POS_LEN as u64)
        {
            continue;
        }
        if lock_exclusive(&file, &path, || None).is_err() {
            continue; // a live reader's
        }
        let gone = Mapping::new(&file, false).is_ok_and(|m| {
            let w = m.w();
            w.magic.load(Ordering::Relaxed) == POS_MAGIC
                && w.version.load(Ordering::Relaxed) == POS_VERSION
                && w.flags.load(Ordering::Relaxed) & FLAG_RESUME == 0
        });
        if gone && same_file(&file, &path) {
            let _ = std::fs::remove_file(&path);
        }
    }
}

/// Whether `path` names the open file `file` (same device and inode).
fn same_file(file: &File, path: &Path) -> bool {
    match (file.metadata(), std::fs::symlink_metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// The pid a position file records, read without mapping it.
fn recorded_pid(file: &File) -> Option<u32> {
    use std::os::unix::fs::FileExt;
    let mut b = [0u8; 12];
    file.read_exact_at(&mut b, 0).ok()?;
    (b[..4] == *b"TPOS").then(|| u32::from_le_bytes([b[8], b[9], b[10], b[11]]))
}

/// What a watcher reads of a reader's position: a snapshot, taken without
/// locking the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PositionView {
    /// The reader's name (the file's name without `.pos`).
    pub reader: String,
    /// The file.
    pub path: PathBuf,
    /// The process that holds it now, or held it last.
    pub pid: u32,
    /// The flags word (bit 0, [`FLAG_RESUME`]: the reader resumes).
    pub flags: u32,
    /// Seq of the last frame the reader handed out (before its first: the
    /// seq before its start; 0 when none).
    pub seen_seq: u64,
    /// Last committed seq (0: none).
    pub committed_seq: u64,
    /// CLOCK_REALTIME of the last commit, ns (0: never).
    pub committed_ns: i64,
    /// The pid of the live process that holds the file's lock, from
    /// `/proc/locks`; `None` when nobody does (the reader is gone: it
    /// crashed, or it resumes and ended). Where `/proc/locks` cannot be
    /// read, `pid` when that process is alive.
    pub holder: Option<u32>,
}

impl PositionView {
    /// Reads the position file at `path` (read-only, no lock). Fails with
    /// `NotFound` when it is gone and `InvalidData` when it is not a
    /// position file of this version or is still being made.
    pub fn open(path: &Path) -> io::Result<PositionView> {
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(path)?;
        let len = file.metadata()?.len();
        if len != POS_LEN as u64 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {len} bytes, not a position file", path.display()),
            ));
        }
        let map = Mapping::new(&file, false)?;
        let w = map.w();
        // Read-only memory: Relaxed loads (as std allows there), and an
        // Acquire fence after the magic and after committed_seq, which pair
        // with the Release stores in `Position::take` and `commit`.
        let magic = w.magic.load(Ordering::Relaxed);
        fence(Ordering::Acquire);
        let version = w.version.load(Ordering::Relaxed);
        if magic != POS_MAGIC || version != POS_VERSION {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{}: not a version {POS_VERSION} position file",
                    path.display()
                ),
            ));
        }
        let committed_seq = w.committed_seq.load(Ordering::Relaxed);
        fence(Ordering::Acquire);
        let pid = w.pid.load(Ordering::Relaxed);
        let view = PositionView {
            reader: path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(POS_SUFFIX))
                .unwrap_or_default()
                .to_string(),
            path: path.to_path_buf(),
            pid,
            flags: w.flags.load(Ordering::Relaxed),
            seen_seq: w.seen_seq.load(Ordering::Relaxed),
            committed_seq,
            committed_ns: w.committed_ns.load(Ordering::Relaxed),
            holder: exclusive_holder(&file, || Some(pid)),
        };
        Ok(view)
    }

    /// Whether a live process holds the position (the reader is running).
    pub fn is_live(&self) -> bool {
        self.holder.is_some()
    }

    /// Whether the reader resumes (keeps its position when it ends).
    pub fn resumes(&self) -> bool {
        self.flags & FLAG_RESUME != 0
    }

    /// Frames the reader is behind a journal whose last seq is `last_seq`.
    pub fn lag(&self, last_seq: u64) -> u64 {
        last_seq.saturating_sub(self.seen_seq)
    }
}

/// The positions of journal `journal`'s readers in `dir`, by reader name:
/// live ones and gone ones (see [`PositionView::holder`]). Files that are
/// not position files, or vanish or are being made while they are listed,
/// are left out. Empty when the journal has no `.readers` folder.
pub fn list_positions(dir: &Path, journal: &str) -> io::Result<Vec<PositionView>> {
    let folder = readers_dir(dir, journal);
    let entries = match std::fs::read_dir(&folder) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut views = Vec::new();
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let Some(reader) = name.to_str().and_then(|n| n.strip_suffix(POS_SUFFIX)) else {
            continue;
        };
        if check_name(reader).is_err() {
            continue;
        }
        if let Ok(v) = PositionView::open(&entry.path()) {
            views.push(v);
        }
    }
    views.sort_by(|a, b| a.reader.cmp(&b.reader));
    Ok(views)
}

#[cfg(test)]
mod tests {
    use super::*;

    const RESUME: PositionOptions = PositionOptions { resume: true };
    const ONCE: PositionOptions = PositionOptions { resume: false };

    #[test]
    fn layout_is_the_one_in_format_md() {
        let dir = tempfile::tempdir().unwrap();
        let pos = Position::open(dir.path(), "md", "r1", RESUME).unwrap();
        pos.seen(7);
        pos.commit(5);
        let b = std::fs::read(position_path(dir.path(), "md", "r1")).unwrap();
        assert_eq!(b.len(), 64);
        assert_eq!(&b[0..4], b"TPOS");
        assert_eq!(u32::from_le_bytes(b[4..8].try_into().unwrap()), 1);
        assert_eq!(
            u32::from_le_bytes(b[8..12].try_into().unwrap()),
            std::process::id()
        );
        assert_eq!(u32::from_le_bytes(b[12..16].try_into().unwrap()), 1);
        assert_eq!(u64::from_le_bytes(b[16..24].try_into().unwrap()), 7);
        assert_eq!(u64::from_le_bytes(b[24..32].try_into().unwrap()), 5);
        let ns = i64::from_le_bytes(b[32..40].try_into().unwrap());
        assert!((ns - crate::clock::vdso_ns()).abs() < 60_000_000_000);
        assert!(b[40..].iter().all(|&x| x == 0));
    }

    #[test]
    fn a_second_holder_is_refused_naming_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let _pos = Position::open(dir.path(), "md", "r", ONCE).unwrap();
        match Position::open(dir.path(), "md", "r", ONCE) {
            Err(e @ PositionError::Held { .. }) => {
                let PositionError::Held {
                    lock: LockError::Held { pid, .. },
                    ..
                } = &e
                else {
                    panic!("{e:?}")
                };
                assert_eq!(*pid, std::process::id());
                let msg = e.to_string();
                assert!(
                    msg.contains("\"r\"") && msg.contains(&format!("pid {pid}")),
                    "{msg}"
                );
            }
            other => panic!("expected Held, got {other:?}"),
        }
        // Another name, or another journal, is another position.
        let _b = Position::open(dir.path(), "md", "r2", ONCE).unwrap();
        let _c = Position::open(dir.path(), "other", "r", ONCE).unwrap();
    }

    #[test]
    fn once_deletes_resume_keeps() {
        let dir = tempfile::tempdir().unwrap();
        let p = Position::open(dir.path(), "md", "once", ONCE).unwrap();
        let path = p.path().to_path_buf();
        assert!(path.exists());
        drop(p);
        assert!(!path.exists());
        assert!(!readers_dir(dir.path(), "md").exists());

        let p = Position::open(dir.path(), "md", "keep", RESUME).unwrap();
        assert_eq!(p.resumed(), None);
        p.seen(10);
        p.commit(9);
        drop(p);
        let v = PositionView::open(&position_path(dir.path(), "md", "keep")).unwrap();
        assert_eq!((v.seen_seq, v.committed_seq, v.holder), (10, 9, None));
        assert!(v.resumes() && !v.is_live());
        let p = Position::open(dir.path(), "md", "keep", RESUME).unwrap();
        assert_eq!(p.resumed(), Some(9));
        assert_eq!((p.seen_seq(), p.committed_seq()), (10, 9));
        drop(p);
        // A reader that does not resume leaves the kept file alone.
        match Position::open(dir.path(), "md", "keep", ONCE) {
            Err(PositionError::Kept { committed_seq, .. }) => assert_eq!(committed_seq, 9),
            other => panic!("expected Kept, got {other:?}"),
        }
        assert!(position_path(dir.path(), "md", "keep").exists());
    }

    #[test]
    fn a_gone_readers_file_that_was_not_kept_starts_new() {
        let dir = tempfile::tempdir().unwrap();
        let p = Position::open(dir.path(), "md", "r", ONCE).unwrap();
        p.seen(5);
        p.commit(5);
        // A crash: the file stays, unlocked (forget keeps the lock, so
        // take a copy of the bytes instead).
        let path = p.path().to_path_buf();
        let bytes = std::fs::read(&path).unwrap();
        drop(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &bytes).unwrap();
        let p = Position::open(dir.path(), "md", "r", RESUME).unwrap();
        assert_eq!(p.resumed(), None);
        assert_eq!((p.seen_seq(), p.committed_seq()), (0, 0));
    }

    #[test]
    fn foreign_files_are_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(readers_dir(dir.path(), "md")).unwrap();
        let path = position_path(dir.path(), "md", "r");
        std::fs::write(&path, b"hello").unwrap();
        let e = Position::open(dir.path(), "md", "r", RESUME).unwrap_err();
        assert!(matches!(e, PositionError::NotPosition { .. }), "{e:?}");
        std::fs::write(&path, [7u8; 64]).unwrap();
        let e = Position::open(dir.path(), "md", "r", RESUME).unwrap_err();
        assert!(e.to_string().contains("not a tape reader position"), "{e}");
        assert_eq!(std::fs::read(&path).unwrap(), [7u8; 64]);
        assert!(list_positions(dir.path(), "md").unwrap().is_empty());
        assert!(matches!(
            Position::open(dir.path(), "md", "a/b", RESUME),
            Err(PositionError::BadReaderName(_))
        ));
    }

    #[test]
    fn a_gone_non_resuming_readers_file_is_swept_by_the_next_reader() {
        let dir = tempfile::tempdir().unwrap();
        let live = Position::open(dir.path(), "md", "live", ONCE).unwrap();
        let kept = Position::open(dir.path(), "md", "kept", RESUME).unwrap();
        drop(kept);
        // A reader killed without deleting its file: its bytes, no lock.
        let gone = Position::open(dir.path(), "md", "gone", ONCE).unwrap();
        let bytes = std::fs::read(gone.path()).unwrap();
        let gone_path = gone.path().to_path_buf();
        drop(gone);
        std::fs::write(&gone_path, &bytes).unwrap();
        assert_eq!(list_positions(dir.path(), "md").unwrap().len(), 3);
        let _next = Position::open(dir.path(), "md", "next", ONCE).unwrap();
        let names: Vec<String> = list_positions(dir.path(), "md")
            .unwrap()
            .into_iter()
            .map(|v| v.reader)
            .collect();
        assert_eq!(names, ["kept", "live", "next"]);
        drop(live);
    }

    #[test]
    fn list_shows_live_and_gone() {
        let dir = tempfile::tempdir().unwrap();
        assert!(list_positions(dir.path(), "md").unwrap().is_empty());
        let a = Position::open(dir.path(), "md", "a", ONCE).unwrap();
        a.seen(3);
        let b = Position::open(dir.path(), "md", "b", RESUME).unwrap();
        drop(b);
        let v = list_positions(dir.path(), "md").unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(
            (v[0].reader.as_str(), v[0].holder),
            ("a", Some(std::process::id()))
        );
        assert_eq!(v[0].lag(10), 7);
        assert_eq!((v[1].reader.as_str(), v[1].holder), ("b", None));
        drop(a);
    }
}
