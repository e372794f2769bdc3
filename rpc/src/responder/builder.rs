//! Building a [`Responder`]: its options, then opening its journal,
//! finding what it answered before, and registering it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tape_journal::{clock::now_ns, Cursor, CursorOptions, OpenError, PageHelper, Start};
use tape_service::{endpoint_id, EndpointRole, JournalId, Peer};

use super::{Responder, ResponderStats, Shared};
use crate::registration::{Hook, Registration};
use crate::{open_own_journal, EndpointCreateError, OwnJournal};

/// Builds a [`Responder`].
#[derive(Debug, Clone)]
pub struct ResponderBuilder {
    pub(super) name: String,
    pub(super) root: Option<PathBuf>,
    pub(super) dir: Option<PathBuf>,
    pub(super) page_size: u64,
}

impl ResponderBuilder {
    /// The root whose service to register with (default: `$TAPE_ROOT`,
    /// else `/tmp/trading`).
    pub fn root(mut self, root: impl Into<PathBuf>) -> Self {
        self.root = Some(root.into());
        self
    }

    /// The folder of the responder's journal (default `<root>/journal`).
    pub fn dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = Some(dir.into());
        self
    }

    /// Page size of the journal if it is created (default
    /// [`DEFAULT_PAGE_SIZE`](crate::DEFAULT_PAGE_SIZE)).
    pub fn page_size(mut self, bytes: u64) -> Self {
        self.page_size = bytes;
        self
    }

    /// Opens (or creates, or recovers) the journal `rpc.<name>`, reads it to
    /// find which requests were answered already, and registers the
    /// responder with the service.
    pub fn create(self) -> Result<Responder, EndpointCreateError> {
        let OwnJournal {
            root,
            dir,
            journal,
            appender,
        } = open_own_journal(&self.name, self.root.as_deref(), self.dir, self.page_size)?;
        let id = endpoint_id(&self.name);
        let answered = answered_in(&dir, &journal)?;
        let pager =
            PageHelper::spawn("tape-rpc-pages", None).map_err(EndpointCreateError::Spawn)?;
        let shared = Arc::new(Shared {
            incoming: Mutex::new(Vec::new()),
            answered: Mutex::new(answered),
            pager: pager.handle(),
        });
        let hook: Hook = {
            let shared = Arc::clone(&shared);
            Box::new(move |p: &Peer| shared.open(p))
        };
        let jid = JournalId {
            dir: dir.clone(),
            journal,
        };
        let reg = Registration::start(&root, &self.name, EndpointRole::Responder, jid, Some(hook))?;
        Ok(Responder {
            id,
            name: self.name,
            shared,
            seen: u64::MAX,
            sources: Vec::new(),
            turn: 0,
            idle_polls: 0,
            now: now_ns(),
            stats: ResponderStats::default(),
            _pager: pager,
            reg,
            appender,
        })
    }
}

/// The highest request answered per requester id, from the responder's own
/// journal.
fn answered_in(
    dir: &std::path::Path,
    journal: &str,
) -> Result<HashMap<u32, u64>, EndpointCreateError> {
    let mut answered = HashMap::new();
    let opts = CursorOptions {
        verify_crc: false,
        populate: false,
    };
    let mut c = match Cursor::open(dir, journal, Start::First, opts) {
        Ok(c) => c,
        Err(OpenError::NotFound { .. }) => return Ok(answered),
        Err(e) => return Err(EndpointCreateError::Open(e)),
    };
    while let Some(f) = c.next().map_err(EndpointCreateError::Read)? {
        if f.corr() != 0 && f.dest() != 0 {
            let a = answered.entry(f.dest()).or_insert(0);
            *a = f.corr().max(*a);
        }
    }
    Ok(answered)
}
