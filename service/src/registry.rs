//! The service's bookkeeping: who is registered, which journal each writer
//! holds. Pure data, no I/O; the daemon wraps it in one mutex.

use std::collections::{BTreeMap, HashMap};

use crate::protocol::{
    endpoint_id, Change, EndpointRole, JournalId, JournalInfo, JournalPeer, Peer, PeerKind,
    MAX_READER_JOURNALS,
};

/// Identity of a connection as the kernel reported it (`SO_PEERCRED`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cred {
    pub pid: u32,
    pub uid: u32,
    pub gid: u32,
}

/// Why a registration was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Another writer (this pid) holds the journal.
    Held { pid: u32 },
    /// The reader already reads [`MAX_READER_JOURNALS`] journals.
    Limit,
    /// No such registration (evicted, or never a reader).
    NotReader,
    /// A live endpoint (this pid) already has the name.
    NameTaken { pid: u32 },
    /// The name's endpoint id equals that of live endpoint `other`.
    IdCollision { other: String },
}

/// Registered peers and the writer of each journal.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    /// Last id handed out; ids start at 1.
    last_id: u64,
    /// Peers by registration id: iteration order is registration order.
    peers: BTreeMap<u64, Peer>,
    /// Writer peer id of each held journal (endpoints hold theirs too).
    writers: HashMap<JournalId, u64>,
    /// Peer id of each live endpoint, by name.
    endpoints: HashMap<String, u64>,
    /// Endpoint changes not yet sent to watchers, oldest first.
    events: Vec<(Change, Peer)>,
}

impl Registry {
    fn next_id(&mut self) -> u64 {
        self.last_id += 1;
        self.last_id
    }

    /// Registers a writer of `journal` unless another writer holds it.
    pub fn register_writer(
        &mut self,
        cred: Cred,
        since_ns: i64,
        journal: JournalId,
    ) -> Result<u64, Refusal> {
        if let Some(holder) = self.writers.get(&journal).and_then(|id| self.peers.get(id)) {
            return Err(Refusal::Held { pid: holder.pid });
        }
        let id = self.next_id();
        self.writers.insert(journal.clone(), id);
        self.peers.insert(
            id,
            Peer {
                id,
                kind: PeerKind::Writer,
                name: journal.journal.clone(),
                pid: cred.pid,
                uid: cred.uid,
                gid: cred.gid,
                since_ns,
                journals: vec![journal],
            },
        );
        Ok(id)
    }

    /// Registers a reader; duplicate journals are kept once.
    pub fn register_reader(
        &mut self,
        cred: Cred,
        since_ns: i64,
        name: String,
        journals: Vec<JournalId>,
    ) -> Result<u64, Refusal> {
        let mut unique: Vec<JournalId> = Vec::with_capacity(journals.len());
        for j in journals {
            if !unique.contains(&j) {
                unique.push(j);
            }
        }
        if unique.len() > MAX_READER_JOURNALS {
            return Err(Refusal::Limit);
        }
        let id = self.next_id();
        self.peers.insert(
            id,
            Peer {
                id,
                kind: PeerKind::Reader,
                name,
                pid: cred.pid,
                uid: cred.uid,
                gid: cred.gid,
                since_ns,
                journals: unique,
            },
        );
        Ok(id)
    }

    /// Registers a request/reply endpoint: a name unique among live
    /// endpoints, whose endpoint id is unique among them too, holding its
    /// journal as a writer does.
    pub fn register_endpoint(
        &mut self,
        cred: Cred,
        since_ns: i64,
        name: String,
        role: EndpointRole,
        journal: JournalId,
    ) -> Result<u64, Refusal> {
        if let Some(p) = self.endpoints.get(&name).and_then(|id| self.peers.get(id)) {
            return Err(Refusal::NameTaken { pid: p.pid });
        }
        if let Some(holder) = self.writers.get(&journal).and_then(|id| self.peers.get(id)) {
            return Err(Refusal::Held { pid: holder.pid });
        }
        let eid = endpoint_id(&name);
        if let Some(other) = self.endpoints.keys().find(|n| endpoint_id(n) == eid) {
            return Err(Refusal::IdCollision {
                other: other.clone(),
            });
        }
        let id = self.next_id();
        self.writers.insert(journal.clone(), id);
        self.endpoints.insert(name.clone(), id);
        let peer = Peer {
            id,
            kind: role.kind(),
            name,
            pid: cred.pid,
            uid: cred.uid,
            gid: cred.gid,
            since_ns,
            journals: vec![journal],
        };
        self.events.push((Change::Up, peer.clone()));
        self.peers.insert(id, peer);
        Ok(id)
    }

    /// The live endpoint named `name`.
    pub fn find_endpoint(&self, name: &str) -> Option<Peer> {
        self.endpoints
            .get(name)
            .and_then(|id| self.peers.get(id))
            .cloned()
    }

    /// Every live endpoint, by registration id.
    pub fn endpoints(&self) -> Vec<Peer> {
        self.peers
            .values()
            .filter(|p| is_endpoint(p.kind))
            .cloned()
            .collect()
    }

    /// The endpoint changes since the last call, oldest first.
    pub fn take_events(&mut self) -> Vec<(Change, Peer)> {
        std::mem::take(&mut self.events)
    }

    /// Whether endpoint changes are waiting for [`take_events`](Self::take_events).
    pub fn has_events(&self) -> bool {
        !self.events.is_empty()
    }

    /// Adds a journal to reader `id`; adding one it already reads is a no-op.
    pub fn add_journal(&mut self, id: u64, journal: JournalId) -> Result<(), Refusal> {
        let peer = match self.peers.get_mut(&id) {
            Some(p) if p.kind == PeerKind::Reader => p,
            _ => return Err(Refusal::NotReader),
        };
        if peer.journals.contains(&journal) {
            return Ok(());
        }
        if peer.journals.len() >= MAX_READER_JOURNALS {
            return Err(Refusal::Limit);
        }
        peer.journals.push(journal);
        Ok(())
    }

    /// Forgets registration `id` (and frees its journal if it is a writer).
    /// Removing an unknown id is a no-op.
    pub fn remove(&mut self, id: u64) {
        if let Some(peer) = self.peers.remove(&id) {
            if peer.kind != PeerKind::Reader {
                for j in &peer.journals {
                    if self.writers.get(j) == Some(&id) {
                        self.writers.remove(j);
                    }
                }
            }
            if is_endpoint(peer.kind) {
                if self.endpoints.get(&peer.name) == Some(&id) {
                    self.endpoints.remove(&peer.name);
                }
                self.events.push((Change::Down, peer));
            }
        }
    }

    /// The oldest peer named `name`.
    pub fn find(&self, name: &str) -> Option<Peer> {
        self.peers.values().find(|p| p.name == name).cloned()
    }

    /// Page `page` (zero-based) of `per_page` peers, by registration id.
    pub fn list(&self, page: u64, per_page: u32) -> Vec<Peer> {
        let skip = page.saturating_mul(u64::from(per_page));
        let skip = usize::try_from(skip).unwrap_or(usize::MAX);
        self.peers
            .values()
            .skip(skip)
            .take(per_page as usize)
            .cloned()
            .collect()
    }

    /// Number of registered peers.
    pub fn count(&self) -> u64 {
        self.peers.len() as u64
    }

    /// Every journal named by a registration, with its writer and readers.
    pub fn journals(&self) -> Vec<JournalInfo> {
        let mut map: BTreeMap<&JournalId, JournalInfo> = BTreeMap::new();
        for peer in self.peers.values() {
            let who = JournalPeer {
                id: peer.id,
                name: peer.name.clone(),
                pid: peer.pid,
            };
            for j in &peer.journals {
                let entry = map.entry(j).or_insert_with(|| JournalInfo {
                    dir: j.dir.clone(),
                    journal: j.journal.clone(),
                    writer: None,
                    readers: Vec::new(),
                });
                match peer.kind {
                    PeerKind::Reader => entry.readers.push(who.clone()),
                    // Writers and endpoints hold their journal.
                    _ => entry.writer = Some(who.clone()),
                }
            }
        }
        map.into_values().collect()
    }
}

/// Whether peers of this kind are request/reply endpoints.
fn is_endpoint(kind: PeerKind) -> bool {
    matches!(kind, PeerKind::Responder | PeerKind::Requester)
}

#[cfg(test)]
mod tests {
    use super::*;

    const C: Cred = Cred {
        pid: 10,
        uid: 1,
        gid: 1,
    };

    fn j(name: &str) -> JournalId {
        JournalId {
            dir: "/r/journal".into(),
            journal: name.into(),
        }
    }

    #[test]
    fn one_writer_per_journal() {
        let mut r = Registry::default();
        let a = r.register_writer(C, 0, j("md")).unwrap();
        let other = Cred { pid: 11, ..C };
        assert_eq!(
            r.register_writer(other, 0, j("md")),
            Err(Refusal::Held { pid: 10 })
        );
        assert!(r.register_writer(other, 0, j("md2")).is_ok());
        r.remove(a);
        assert!(r.register_writer(other, 0, j("md")).is_ok());
    }

    #[test]
    fn readers_and_journals() {
        let mut r = Registry::default();
        let w = r.register_writer(C, 0, j("md")).unwrap();
        let rd = r
            .register_reader(C, 0, "s".into(), vec![j("md"), j("md")])
            .unwrap();
        r.add_journal(rd, j("x")).unwrap();
        r.add_journal(rd, j("x")).unwrap();
        assert_eq!(r.add_journal(w, j("x")), Err(Refusal::NotReader));
        let js = r.journals();
        assert_eq!(js.len(), 2);
        assert_eq!(js[0].journal, "md");
        assert_eq!(js[0].writer.as_ref().unwrap().id, w);
        assert_eq!(js[0].readers.len(), 1);
        assert_eq!(js[1].journal, "x");
        assert!(js[1].writer.is_none());
        assert_eq!(r.find("s").unwrap().journals.len(), 2);
        assert_eq!(r.count(), 2);
        assert_eq!(r.list(0, 1)[0].id, w);
        assert_eq!(r.list(1, 1)[0].id, rd);
        assert!(r.list(2, 1).is_empty());
        assert!(r.list(u64::MAX, u32::MAX).is_empty());
    }

    #[test]
    fn reader_journal_limit() {
        let mut r = Registry::default();
        let many: Vec<_> = (0..=MAX_READER_JOURNALS)
            .map(|i| j(&i.to_string()))
            .collect();
        assert_eq!(
            r.register_reader(C, 0, "s".into(), many.clone()),
            Err(Refusal::Limit)
        );
        let id = r
            .register_reader(C, 0, "s".into(), many[..MAX_READER_JOURNALS].to_vec())
            .unwrap();
        assert_eq!(
            r.add_journal(id, many[MAX_READER_JOURNALS].clone()),
            Err(Refusal::Limit)
        );
    }

    #[test]
    fn endpoints_names_journals_and_events() {
        let mut r = Registry::default();
        let other = Cred { pid: 11, ..C };
        let e = r
            .register_endpoint(C, 5, "echo".into(), EndpointRole::Responder, j("rpc.echo"))
            .unwrap();
        // The name is taken, whatever the journal.
        assert_eq!(
            r.register_endpoint(other, 0, "echo".into(), EndpointRole::Requester, j("x")),
            Err(Refusal::NameTaken { pid: 10 })
        );
        // The journal is held, as by a writer.
        assert_eq!(
            r.register_writer(other, 0, j("rpc.echo")),
            Err(Refusal::Held { pid: 10 })
        );
        assert_eq!(
            r.register_endpoint(
                other,
                0,
                "e2".into(),
                EndpointRole::Requester,
                j("rpc.echo")
            ),
            Err(Refusal::Held { pid: 10 })
        );
        let c = r
            .register_endpoint(
                other,
                6,
                "client".into(),
                EndpointRole::Requester,
                j("rpc.client"),
            )
            .unwrap();
        let rd = r.register_reader(C, 0, "echo".into(), vec![]).unwrap();
        assert_eq!(r.find_endpoint("echo").unwrap().id, e);
        assert_eq!(r.find_endpoint("client").unwrap().kind, PeerKind::Requester);
        assert!(r.find_endpoint("nobody").is_none());
        assert_eq!(
            r.endpoints().iter().map(|p| p.id).collect::<Vec<_>>(),
            [e, c]
        );
        let js = r.journals();
        let echo = js.iter().find(|i| i.journal == "rpc.echo").unwrap();
        assert_eq!(echo.writer.as_ref().unwrap().id, e);
        assert!(echo.readers.is_empty());
        r.remove(e);
        r.remove(rd);
        assert!(r.find_endpoint("echo").is_none());
        assert!(r.register_writer(other, 0, j("rpc.echo")).is_ok());
        let ev: Vec<_> = r
            .take_events()
            .into_iter()
            .map(|(ch, p)| (ch, p.id))
            .collect();
        assert_eq!(ev, [(Change::Up, e), (Change::Up, c), (Change::Down, e)]);
        assert!(!r.has_events());
    }

    #[test]
    fn endpoint_id_collision_refused() {
        // Two names with one FNV-1a hash: found by brute force, once.
        let (a, b) = colliding_names();
        let mut r = Registry::default();
        r.register_endpoint(C, 0, a.clone(), EndpointRole::Responder, j("a"))
            .unwrap();
        assert_eq!(
            r.register_endpoint(C, 0, b, EndpointRole::Responder, j("b")),
            Err(Refusal::IdCollision { other: a })
        );
    }

    fn colliding_names() -> (String, String) {
        let mut seen = HashMap::new();
        for i in 0u64.. {
            let n = format!("n{i}");
            if let Some(prev) = seen.insert(endpoint_id(&n), n.clone()) {
                return (prev, n);
            }
        }
        unreachable!()
    }
}
