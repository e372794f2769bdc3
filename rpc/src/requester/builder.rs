//! Building a [`Requester`]: its options, then opening its journal and
//! registering it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use tape_journal::PageHelper;
use tape_service::{endpoint_id, EndpointRole, JournalId};

use super::{Cleanup, Requester};
use crate::registration::Registration;
use crate::{open_own_journal, EndpointCreateError, OwnJournal};

/// Builds a [`Requester`].
#[derive(Debug, Clone)]
pub struct RequesterBuilder {
    pub(super) name: String,
    pub(super) root: Option<PathBuf>,
    pub(super) dir: Option<PathBuf>,
    pub(super) page_size: u64,
    pub(super) nowait_timeout: Duration,
    pub(super) ephemeral: bool,
}

impl RequesterBuilder {
    /// The root whose service to register with (default: `$TAPE_ROOT`,
    /// else `/tmp/trading`).
    pub fn root(mut self, root: impl Into<PathBuf>) -> Self {
        self.root = Some(root.into());
        self
    }

    /// The folder of the requester's journal (default `<root>/journal`).
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

    /// Deadline of requests sent with [`Requester::send_nowait`] (default
    /// 60 s): a responder that restarts later does not answer them.
    pub fn nowait_timeout(mut self, t: Duration) -> Self {
        self.nowait_timeout = t;
        self
    }

    /// Delete the requester's journal when it is dropped (for one-shot
    /// tools such as `tape call`, whose names are used once).
    pub fn ephemeral(mut self, on: bool) -> Self {
        self.ephemeral = on;
        self
    }

    /// Opens (or creates) the journal `rpc.<name>` and registers the
    /// requester with the service.
    pub fn create(self) -> Result<Requester, EndpointCreateError> {
        let OwnJournal {
            root,
            dir,
            journal,
            appender,
        } = open_own_journal(&self.name, self.root.as_deref(), self.dir, self.page_size)?;
        let cleanup = self.ephemeral.then(|| Cleanup {
            dir: dir.clone(),
            journal: journal.clone(),
        });
        let jid = JournalId {
            dir: dir.clone(),
            journal,
        };
        let pager =
            PageHelper::spawn("tape-rpc-pages", None).map_err(EndpointCreateError::Spawn)?;
        let reg = Registration::start(&root, &self.name, EndpointRole::Requester, jid, None)?;
        Ok(Requester {
            id: endpoint_id(&self.name),
            name: self.name,
            root,
            seen: u64::MAX,
            dests: Vec::new(),
            last: 0,
            waiting: HashMap::new(),
            taken: None,
            query: None,
            nowait_timeout: self.nowait_timeout,
            pager,
            reg,
            appender,
            _cleanup: cleanup,
        })
    }
}
