//! Sleeping until a frame: [`Reader::wait`] on the journals' doorbells,
//! and on inotify watches for journals that do not exist yet.

use crate::pace::{monotonic_ns, sleep_until};
use crate::{Reader, State};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tape_journal::{Cursor, DirWatch};

/// How often [`Reader::wait`] looks for a journal that does not exist yet
/// where inotify is refused (and at most how long it sleeps on the
/// doorbells of the others meanwhile).
pub const JOURNAL_APPEARS_POLL: Duration = Duration::from_millis(10);

impl Reader {
    /// Blocks until [`next`](Self::next) has a frame (or an error) to
    /// return, or `timeout` passes; returns whether it has. Sleeps on the
    /// doorbells of all the reader's journals at once (no CPU while it
    /// waits; woken within microseconds of a frame's publication in any of
    /// them). A journal that does not exist yet is waited for on an
    /// inotify watch of its folder: looked for only when a file appears
    /// there (every [`JOURNAL_APPEARS_POLL`] where inotify is refused), and
    /// read from its first frame.
    ///
    /// A paced reader ([`ReaderBuilder::paced`](crate::ReaderBuilder::paced))
    /// with a frame waiting sleeps until that frame falls due instead
    /// ([`sleep_until`]: asleep, then a spin of the
    /// last tens of µs), or until the timeout if that comes first.
    ///
    /// ```no_run
    /// # let mut r = tape_reader::Reader::create("strategy").unwrap();
    /// loop {
    ///     while let Some(f) = r.next().unwrap() {
    ///         println!("{}", f.seq());
    ///     }
    ///     r.wait(std::time::Duration::from_secs(1));
    /// }
    /// ```
    pub fn wait(&mut self, timeout: Duration) -> bool {
        if self.pacer.is_none() {
            return self.wait_frame(timeout);
        }
        let deadline = monotonic_ns().saturating_add(timeout.as_nanos() as u64);
        loop {
            let head = match self.head() {
                Ok(h) => h,
                // next() has the error to return.
                Err(_) => return true,
            };
            match head {
                Some((_, t)) => {
                    let at = self.pacer.as_mut().expect("a paced reader").due_at(t);
                    sleep_until(at.min(deadline));
                    return at <= deadline;
                }
                None => {
                    let left = deadline.saturating_sub(monotonic_ns());
                    if left == 0 || !self.wait_frame(Duration::from_nanos(left)) {
                        return false;
                    }
                }
            }
        }
    }

    /// [`wait`](Self::wait) for a frame to be there, due or not.
    fn wait_frame(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        if self.is_waiting() && self.watch_missing() {
            // A new watch: look once after it is made (a page made before
            // is seen by this look, one made after it by the watch).
            self.housekeeping();
        }
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let n = self.sources.len();
            let mut cursors: Vec<&mut Cursor> = self
                .sources
                .iter_mut()
                .filter_map(|s| match &mut s.state {
                    State::Open { cursor } => Some(cursor),
                    State::Waiting => None,
                })
                .collect();
            let waiting = cursors.len() < n;
            let ready = if cursors.is_empty() {
                // Only journals not there yet: asleep on their folders.
                let (dirs, mut watches): (Vec<PathBuf>, Vec<DirWatch>) =
                    self.watches.drain(..).unzip();
                let appeared = if watches.is_empty() {
                    std::thread::sleep(left.min(JOURNAL_APPEARS_POLL));
                    true
                } else {
                    tape_journal::wait_any_dir(&mut watches, left)
                };
                self.watches = dirs.into_iter().zip(watches).collect();
                if appeared {
                    self.housekeeping();
                }
                false
            } else if waiting {
                let ready = tape_journal::wait_any(&mut cursors, left.min(JOURNAL_APPEARS_POLL));
                let appeared = self
                    .watches
                    .iter_mut()
                    .fold(false, |a, (_, w)| w.drain() | a);
                if appeared {
                    self.housekeeping();
                }
                ready
            } else {
                tape_journal::wait_any(&mut cursors, left)
            };
            if ready || self.ready_now() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
        }
    }

    /// Whether a journal was added that does not exist yet.
    fn is_waiting(&self) -> bool {
        self.sources
            .iter()
            .any(|s| matches!(s.state, State::Waiting))
    }

    /// The folders of the journals not there yet, each once, in order.
    fn watch_dirs(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = Vec::new();
        for s in &self.sources {
            if matches!(s.state, State::Waiting) && !dirs.contains(&s.dir) {
                dirs.push(s.dir.clone());
            }
        }
        dirs
    }

    /// An inotify watch on each folder of a journal not there yet (none
    /// where inotify is refused: those are looked for every
    /// [`JOURNAL_APPEARS_POLL`]). Returns whether a folder has no watch
    /// from before (a look is due).
    fn watch_missing(&mut self) -> bool {
        let dirs = self.watch_dirs();
        self.watches.retain(|(d, _)| dirs.contains(d));
        let mut new = false;
        for d in dirs {
            if !self.watches.iter().any(|(w, _)| *w == d) {
                new = true;
                if let Ok(w) = DirWatch::new(&d) {
                    self.watches.push((d, w));
                }
            }
        }
        new
    }

    /// Whether an open journal has a frame ready now.
    fn ready_now(&mut self) -> bool {
        self.sources.iter_mut().any(|s| match &mut s.state {
            State::Open { cursor } => cursor.peek().map_or(true, |f| f.is_some()),
            State::Waiting => false,
        })
    }

    /// How many times this reader looked for journals not there yet (each
    /// look lists a folder): [`wait`](Self::wait) looks only when a file
    /// appears in the folder.
    pub fn journal_looks(&self) -> u64 {
        self.looks
    }
}
