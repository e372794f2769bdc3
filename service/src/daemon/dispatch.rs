//! Request dispatch: what the service answers to each request.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::conn::Connection;
use super::state::State;
use super::watch::Watcher;
use crate::protocol::{
    validate_dir, validate_journal_name, validate_peer_name, EndpointRole, ErrorCode, JournalId,
    Reply, Request, MAX_PER_PAGE, PROTOCOL_VERSION,
};
use crate::registry::Refusal;

impl Connection<'_> {
    pub(super) fn handle(&mut self, req: Request) -> Reply {
        let registers = matches!(
            req,
            Request::RegisterWriter { .. }
                | Request::RegisterReader { .. }
                | Request::RegisterEndpoint { .. }
        );
        let reply = self.answer(req);
        if registers && self.greeted {
            let c = &self.shared.counters;
            let counter = match &reply {
                Reply::Registered { .. } => &c.registrations,
                _ => &c.refusals,
            };
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        reply
    }

    fn answer(&mut self, req: Request) -> Reply {
        match req {
            Request::Hello { version } => self.hello(version),
            _ if !self.greeted => Reply::error(
                ErrorCode::HandshakeRequired,
                "the first message must be hello: send {\"type\":\"hello\",\"version\":1} first",
            ),
            Request::RegisterWriter { dir, journal } => self.register_writer(dir, journal),
            Request::RegisterReader { name, journals } => self.register_reader(name, journals),
            Request::AddJournal { dir, journal } => self.add_journal(dir, journal),
            Request::Find { name } => {
                let mut st = self.shared.lock();
                st.sweep_dead();
                Reply::Peer {
                    peer: st.registry.find(&name),
                }
            }
            Request::List { page, per_page } => {
                if per_page == 0 || per_page > MAX_PER_PAGE {
                    return Reply::error(
                        ErrorCode::Invalid,
                        format!("per_page must be 1 to {MAX_PER_PAGE}, not {per_page}"),
                    );
                }
                let mut st = self.shared.lock();
                st.sweep_dead();
                Reply::Peers {
                    total: st.registry.count(),
                    peers: st.registry.list(page, per_page),
                }
            }
            Request::Count => {
                let mut st = self.shared.lock();
                st.sweep_dead();
                Reply::Count {
                    count: st.registry.count(),
                }
            }
            Request::Journals => {
                let mut st = self.shared.lock();
                st.sweep_dead();
                Reply::Journals {
                    journals: st.registry.journals(),
                }
            }
            Request::RegisterEndpoint {
                name,
                role,
                dir,
                journal,
            } => self.register_endpoint(name, role, dir, journal),
            Request::FindEndpoint { name } => {
                let mut st = self.shared.lock();
                st.sweep_dead();
                Reply::Peer {
                    peer: st.registry.find_endpoint(&name),
                }
            }
            Request::Watch => self.watch(),
        }
    }

    fn register_endpoint(
        &mut self,
        name: String,
        role: EndpointRole,
        dir: PathBuf,
        journal: String,
    ) -> Reply {
        if let Some(r) = self.already_registered() {
            return r;
        }
        if let Err(e) = validate_peer_name(&name) {
            return Reply::error(ErrorCode::Invalid, e);
        }
        let id = match check_journal(dir, journal) {
            Ok(id) => id,
            Err(r) => return r,
        };
        let journal_name = id.journal.clone();
        let mut st = self.shared.lock();
        st.sweep_dead();
        match st
            .registry
            .register_endpoint(self.cred, now_ns(), name.clone(), role, id)
        {
            Ok(peer) => {
                self.set_peer(&mut st, peer);
                Reply::Registered { id: peer }
            }
            Err(Refusal::NameTaken { pid }) => Reply::Error {
                code: ErrorCode::Held,
                message: format!("endpoint {name} is already online (pid {pid})"),
                pid: Some(pid),
            },
            Err(Refusal::Held { pid }) => Reply::Error {
                code: ErrorCode::Held,
                message: format!("journal {journal_name} is held by another writer (pid {pid})"),
                pid: Some(pid),
            },
            Err(other) => refusal_reply(other),
        }
    }

    fn watch(&mut self) -> Reply {
        if self.watch.is_some() {
            return Reply::error(
                ErrorCode::Invalid,
                "this connection already watches: its events keep coming",
            );
        }
        let w = match Watcher::new() {
            Ok(w) => Arc::new(w),
            Err(e) => {
                return Reply::error(
                    ErrorCode::Limit,
                    format!("the service cannot watch now ({e}): try again later"),
                )
            }
        };
        let mut st = self.shared.lock();
        st.sweep_dead();
        // Changes made before the list is taken go to the other watchers
        // only: this one learns them from the list.
        st.flush_events();
        let endpoints = st.registry.endpoints();
        if st.conns.contains_key(&self.conn_id) {
            st.watchers.insert(self.conn_id, Arc::clone(&w));
        }
        drop(st);
        self.watch = Some(w);
        Reply::Watching { endpoints }
    }

    fn hello(&mut self, version: u32) -> Reply {
        if self.greeted {
            return Reply::error(
                ErrorCode::HandshakeRequired,
                "hello was already sent on this connection: send it once, first",
            );
        }
        if version != PROTOCOL_VERSION {
            return Reply::error(
                ErrorCode::Version,
                format!(
                    "this tape service speaks protocol version {PROTOCOL_VERSION}, not {version}: use a client of the same tape version"
                ),
            );
        }
        self.greeted = true;
        Reply::Hello {
            version: PROTOCOL_VERSION,
            service_pid: std::process::id(),
        }
    }

    fn already_registered(&self) -> Option<Reply> {
        self.peer.map(|_| {
            Reply::error(
                ErrorCode::AlreadyRegistered,
                "this connection is already registered: open another connection to register again",
            )
        })
    }

    fn register_writer(&mut self, dir: PathBuf, journal: String) -> Reply {
        if let Some(r) = self.already_registered() {
            return r;
        }
        let id = match check_journal(dir, journal) {
            Ok(id) => id,
            Err(r) => return r,
        };
        let name = id.journal.clone();
        let mut st = self.shared.lock();
        st.sweep_dead();
        match st.registry.register_writer(self.cred, now_ns(), id) {
            Ok(peer) => {
                self.set_peer(&mut st, peer);
                Reply::Registered { id: peer }
            }
            Err(Refusal::Held { pid }) => Reply::Error {
                code: ErrorCode::Held,
                message: format!("journal {name} is held by another writer (pid {pid})"),
                pid: Some(pid),
            },
            Err(other) => refusal_reply(other),
        }
    }

    fn register_reader(&mut self, name: String, journals: Vec<JournalId>) -> Reply {
        if let Some(r) = self.already_registered() {
            return r;
        }
        if let Err(e) = validate_peer_name(&name) {
            return Reply::error(ErrorCode::Invalid, e);
        }
        let mut checked = Vec::with_capacity(journals.len());
        for j in journals {
            match check_journal(j.dir, j.journal) {
                Ok(j) => checked.push(j),
                Err(r) => return r,
            }
        }
        let mut st = self.shared.lock();
        st.sweep_dead();
        match st
            .registry
            .register_reader(self.cred, now_ns(), name, checked)
        {
            Ok(peer) => {
                self.set_peer(&mut st, peer);
                Reply::Registered { id: peer }
            }
            Err(e) => refusal_reply(e),
        }
    }

    fn add_journal(&mut self, dir: PathBuf, journal: String) -> Reply {
        let Some(peer) = self.peer else {
            return refusal_reply(Refusal::NotReader);
        };
        let id = match check_journal(dir, journal) {
            Ok(id) => id,
            Err(r) => return r,
        };
        match self.shared.lock().registry.add_journal(peer, id) {
            Ok(()) => Reply::Ok,
            Err(e) => refusal_reply(e),
        }
    }

    fn set_peer(&mut self, st: &mut State, peer: u64) {
        self.peer = Some(peer);
        match st.conns.get_mut(&self.conn_id) {
            Some(c) => c.peer = Some(peer),
            // The service is stopping and already forgot us: undo.
            None => st.registry.remove(peer),
        }
    }
}

fn refusal_reply(r: Refusal) -> Reply {
    match r {
        Refusal::Held { pid } => Reply::Error {
            code: ErrorCode::Held,
            message: format!("the journal is held by another writer (pid {pid})"),
            pid: Some(pid),
        },
        Refusal::Limit => Reply::error(
            ErrorCode::Limit,
            format!(
                "a reader may read at most {} journals: open another reader",
                crate::protocol::MAX_READER_JOURNALS
            ),
        ),
        Refusal::NotReader => Reply::error(
            ErrorCode::NotRegistered,
            "only a registered reader can add journals: send register_reader first",
        ),
        Refusal::NameTaken { pid } => Reply::Error {
            code: ErrorCode::Held,
            message: format!("the endpoint name is already online (pid {pid})"),
            pid: Some(pid),
        },
        Refusal::IdCollision { other } => Reply::error(
            ErrorCode::Invalid,
            format!(
                "the endpoint id of this name equals that of live endpoint {other:?}: choose another name"
            ),
        ),
    }
}

/// Validates a journal from the wire and canonicalizes its folder.
fn check_journal(dir: PathBuf, journal: String) -> Result<JournalId, Reply> {
    validate_journal_name(&journal).map_err(|e| Reply::error(ErrorCode::Invalid, e))?;
    validate_dir(&dir).map_err(|e| Reply::error(ErrorCode::Invalid, e))?;
    Ok(JournalId {
        dir: canonical_dir(&dir),
        journal,
    })
}

/// `dir` with its longest existing prefix canonicalized (symlinks resolved)
/// and the rest appended, so a journal folder that does not exist yet still
/// gets one stable key.
pub(crate) fn canonical_dir(dir: &Path) -> PathBuf {
    let mut existing = dir.to_path_buf();
    let mut rest = Vec::new();
    loop {
        if let Ok(mut c) = existing.canonicalize() {
            for part in rest.iter().rev() {
                c.push(part);
            }
            return c;
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_owned());
                existing = parent.to_path_buf();
            }
            _ => return dir.to_path_buf(),
        }
    }
}

/// Registration times: the box's one wall clock, as frames are stamped.
fn now_ns() -> i64 {
    tape_journal::clock::now_ns()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_dir_of_missing_folder() {
        let tmp = tempfile::tempdir().unwrap();
        let real = tmp.path().canonicalize().unwrap();
        let missing = tmp.path().join("a/./b");
        assert_eq!(canonical_dir(&missing), real.join("a").join("b"));
        std::os::unix::fs::symlink(&real, real.join("link")).unwrap();
        assert_eq!(canonical_dir(&real.join("link/x")), real.join("x"));
    }
}
