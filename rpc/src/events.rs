//! Reading the events a responder pushes: the frames of its journal with
//! `corr` 0 (replies, which carry a `corr`, are stepped over).

use std::path::Path;

use tape_journal::{Cursor, CursorOptions, Frame, OpenError, ReadError, Start};

use crate::journal_name;

/// The events of one responder, read from its journal. No service is
/// needed: any process that can read the journal folder can follow them,
/// live or afterwards.
///
/// ```no_run
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = tape_journal::journal_dir("/tmp/trading".as_ref());
/// let mut ev = tape_rpc::Events::open(&dir, "ticker", tape_rpc::Start::End)?;
/// let mut idle = tape_journal::Idle::new();
/// loop {
///     match ev.next()? {
///         Some(f) => { idle.reset(); println!("{} {:?}", f.seq(), f.payload()); }
///         None => idle.idle(),
///     }
/// }
/// # }
/// ```
#[derive(Debug)]
pub struct Events {
    cursor: Cursor,
}

impl Events {
    /// The events of responder `name` whose journal (`rpc.<name>`) is in
    /// folder `dir` (a root's is `<root>/journal`), from `start`: the same
    /// `(dir, name)` as `Cursor::open` and `Reader::add_journal`.
    pub fn open(dir: &Path, name: &str, start: Start) -> Result<Events, OpenError> {
        let journal = journal_name(name)
            .map_err(|_| OpenError::BadName(tape_journal::files::BadName(name.to_string())))?;
        let opts = CursorOptions {
            verify_crc: false,
            populate: true,
        };
        Ok(Events {
            cursor: Cursor::open(dir, &journal, start, opts)?,
        })
    }

    /// The next event, or `None` when there is none yet. Never blocks.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<Frame<'_>>, ReadError> {
        loop {
            match self.cursor.peek()? {
                None => return Ok(None),
                Some(f) if f.corr() == 0 => break,
                Some(_) => {
                    self.cursor.next()?;
                }
            }
        }
        self.cursor.next()
    }
}
