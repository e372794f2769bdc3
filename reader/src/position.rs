//! A named reader's position on each journal it reads
//! ([`tape_journal::position`]): the `seen_seq` word [`Reader::next`]
//! stores into, opening the file, and where a resuming reader starts.
//!
//! [`Reader::next`]: crate::Reader::next

use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use tape_journal::position::{Position, PositionError, PositionOptions};
use tape_journal::{Cursor, OpenError, ReadError, Start};

/// Where `next` stores the seq of each frame it hands out: the position
/// file's `seen_seq` word when the reader keeps one, else a word of its
/// own. Always a valid word, so the hot path has one store and no branch.
#[derive(Debug)]
pub(crate) struct Seen {
    word: NonNull<AtomicU64>,
    /// The word stored into while there is no position file.
    own: Box<AtomicU64>,
    /// The position file, when the reader keeps one on this journal.
    position: Option<Position>,
}

// SAFETY: `word` points at `own` (a heap word this struct owns) or into
// the mapping of `position` (owned too, unmapped only when it drops), so
// it is valid wherever the struct goes; it is only accessed atomically.
unsafe impl Send for Seen {}
// SAFETY: as above; every access through `word` is atomic.
unsafe impl Sync for Seen {}

impl Seen {
    pub(crate) fn new(position: Option<Position>) -> Seen {
        let own = Box::new(AtomicU64::new(0));
        let mut s = Seen {
            word: NonNull::from(&*own),
            own,
            position: None,
        };
        s.set_position(position);
        s
    }

    /// Keeps `position` (if any) and stores into its word from now on.
    pub(crate) fn set_position(&mut self, position: Option<Position>) {
        self.word = match &position {
            Some(p) => NonNull::from(p.seen_word()),
            None => NonNull::from(&*self.own),
        };
        self.position = position;
    }

    /// The reader handed out frame `seq`: one Relaxed store.
    #[inline(always)]
    pub(crate) fn store(&self, seq: u64) {
        // SAFETY: `word` is valid while `self` lives (see the Send impl).
        unsafe { self.word.as_ref() }.store(seq, Ordering::Relaxed);
    }

    /// The seq of the last frame handed out (or, before the first, the seq
    /// before the start).
    pub(crate) fn get(&self) -> u64 {
        // SAFETY: as in `store`.
        unsafe { self.word.as_ref() }.load(Ordering::Relaxed)
    }

    pub(crate) fn position(&self) -> Option<&Position> {
        self.position.as_ref()
    }

    /// Commits the last frame handed out, if it is not committed yet.
    #[inline]
    pub(crate) fn commit(&self) {
        if let Some(p) = &self.position {
            let seen = self.get();
            if seen != p.committed_seq() {
                p.commit(seen);
            }
        }
    }

    /// The reader starts after seq `before` (see [`Position::begin`]).
    pub(crate) fn begin(&self, before: u64) {
        match &self.position {
            Some(p) => p.begin(before),
            None => self.store(before),
        }
    }

    /// A journal the reader was refused: a position made for it is
    /// deleted, a kept one stays as it was.
    pub(crate) fn abandon(self) {
        if let Some(p) = self.position {
            p.abandon();
        }
    }
}

/// Why a resuming reader cannot continue its kept position on a journal.
#[derive(Debug)]
pub struct ResumeError {
    /// The position file.
    pub path: PathBuf,
    /// The journal.
    pub journal: String,
    /// The seq committed there.
    pub committed_seq: u64,
    /// The seq the journal has after it: later than `committed_seq + 1`
    /// when frames were pruned, `None` when the journal ends before
    /// `committed_seq` (made again since).
    pub found: Found,
}

/// What a resuming reader found where its position said to continue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// The first frame left is this later seq: the frames between were
    /// pruned.
    Pruned(u64),
    /// The journal's last frame is this earlier seq (0: no frame): it is
    /// not the journal the position was taken on.
    EndsAt(u64),
}

impl std::fmt::Display for ResumeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let c = self.committed_seq;
        match self.found {
            Found::Pruned(first) => write!(
                f,
                "cannot resume journal {} after seq {c} ({}): its frames up to seq {} were pruned, so resuming would skip them; delete the position file to start over",
                self.journal,
                self.path.display(),
                first - 1
            ),
            Found::EndsAt(last) => write!(
                f,
                "cannot resume journal {} after seq {c} ({}): the journal ends at seq {last}, so it is not the journal this position was taken on; delete the position file to start over",
                self.journal,
                self.path.display()
            ),
        }
    }
}

impl std::error::Error for ResumeError {}

/// Opens the position of reader `reader` on journal `journal` in `dir`.
/// `Ok(None)`: the reader keeps none there (its name cannot name a file,
/// or it may not write the folder, or the folder is not there yet), which
/// is an error only for a resuming reader. A resuming reader makes the
/// journal's folder if it is missing, so that its position is kept from
/// the start.
pub(crate) fn open(
    dir: &Path,
    journal: &str,
    reader: &str,
    resume: bool,
) -> Result<Option<Position>, PositionError> {
    if !resume && !dir.is_dir() {
        return Ok(None);
    }
    if resume {
        std::fs::create_dir_all(dir).map_err(|source| PositionError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    match Position::open(dir, journal, reader, PositionOptions { resume }) {
        Ok(p) => Ok(Some(p)),
        Err(PositionError::BadReaderName(_)) if !resume => Ok(None),
        Err(e) if e.is_read_only() && !resume => Ok(None),
        Err(e) => Err(e),
    }
}

/// Where a reader with `position` reads a journal from: after a kept
/// position's committed seq, else `start`.
pub(crate) fn start_of(position: Option<&Position>, start: Start) -> Start {
    match position.and_then(Position::resumed) {
        // 0: nothing committed, the journal had no frame: its first.
        Some(0) => Start::First,
        Some(c) => Start::Seq(c + 1),
        None => start,
    }
}

/// The seq just before the frame `cursor` hands out next (0 when it is
/// at the beginning of a journal with no frame yet).
pub(crate) fn seq_before(cursor: &mut Cursor) -> Result<u64, OpenError> {
    let next = cursor.peek().map_err(|e| match e {
        ReadError::Damaged(d) => OpenError::Damaged(d),
        ReadError::Page(p) => OpenError::Page(p),
    })?;
    Ok(match next {
        Some(f) => f.seq().saturating_sub(1),
        None => cursor.expected_seq().map_or(0, |s| s - 1),
    })
}

/// Checks that a kept position continues where the journal is: `before`
/// is the seq before the cursor's next frame ([`seq_before`]), `None` when
/// the journal has no page at all.
pub(crate) fn check_resume(
    position: Option<&Position>,
    journal: &str,
    before: Option<u64>,
) -> Result<(), ResumeError> {
    let Some(p) = position else { return Ok(()) };
    let Some(c) = p.resumed().filter(|&c| c > 0) else {
        return Ok(());
    };
    let found = match before {
        Some(b) if b == c => return Ok(()),
        Some(b) if b > c => Found::Pruned(b + 1),
        Some(b) => Found::EndsAt(b),
        None => Found::EndsAt(0),
    };
    Err(ResumeError {
        path: p.path().to_path_buf(),
        journal: journal.to_string(),
        committed_seq: c,
        found,
    })
}
