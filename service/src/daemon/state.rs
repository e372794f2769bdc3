//! The state shared by the accept loop and the connection threads: the
//! registry, the open connections and the watchers, behind one mutex.

use std::collections::HashMap;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex, MutexGuard};

use nix::poll::{PollFd, PollFlags, PollTimeout};

use super::watch::Watcher;
use crate::protocol::Reply;
use crate::registry::Registry;

/// State shared by the accept loop and the connection threads.
#[derive(Default)]
pub(super) struct Shared {
    pub(super) state: Mutex<State>,
    /// Set when the service stops: connection threads end.
    pub(super) stopping: AtomicBool,
    /// What `/metrics` counts (`tape service --metrics`).
    pub(super) counters: Arc<Counters>,
}

/// Counters of a running service, only ever incremented (Relaxed: each is
/// read on its own, by a metrics scrape).
#[derive(Debug, Default)]
pub struct Counters {
    /// Connections accepted.
    pub connections: AtomicU64,
    /// Registrations accepted (writers, readers, endpoints).
    pub registrations: AtomicU64,
    /// Registrations refused (journal held, name taken, limits, invalid).
    pub refusals: AtomicU64,
}

#[derive(Default)]
pub(super) struct State {
    pub(super) registry: Registry,
    /// Every open connection (for the limit, liveness checks and shutdown).
    pub(super) conns: HashMap<u64, ConnEntry>,
    pub(super) last_conn: u64,
    /// Connections that sent `watch`, by connection id.
    pub(super) watchers: HashMap<u64, Arc<Watcher>>,
}

/// The locked state. Dropping it hands the endpoint changes made under the
/// lock to the watchers before unlocking, so every watcher sees them in the
/// order they were made.
pub(super) struct StateGuard<'a>(MutexGuard<'a, State>);

impl std::ops::Deref for StateGuard<'_> {
    type Target = State;
    fn deref(&self) -> &State {
        &self.0
    }
}

impl std::ops::DerefMut for StateGuard<'_> {
    fn deref_mut(&mut self) -> &mut State {
        &mut self.0
    }
}

impl Drop for StateGuard<'_> {
    fn drop(&mut self) {
        self.0.flush_events();
    }
}

pub(super) struct ConnEntry {
    /// A clone of the connection's socket.
    pub(super) stream: UnixStream,
    /// Its registration, if any.
    pub(super) peer: Option<u64>,
}

impl Shared {
    /// The state; a poisoned mutex is still used (the registry stays
    /// consistent between statements, and the service must not die).
    pub(super) fn lock(&self) -> StateGuard<'_> {
        StateGuard(tape_journal::sync::lock(&self.state))
    }

    /// Drops a closed connection and its registration.
    pub(super) fn forget_conn(&self, conn_id: u64) {
        let mut st = self.lock();
        st.watchers.remove(&conn_id);
        if let Some(entry) = st.conns.remove(&conn_id) {
            if let Some(peer) = entry.peer {
                st.registry.remove(peer);
            }
        }
    }
}

impl State {
    /// Hands the endpoint changes recorded by the registry to every
    /// watcher.
    pub(super) fn flush_events(&mut self) {
        if !self.registry.has_events() {
            return;
        }
        let events: Vec<Reply> = self
            .registry
            .take_events()
            .into_iter()
            .map(|(change, peer)| Reply::Event { change, peer })
            .collect();
        for w in self.watchers.values() {
            w.push(&events);
        }
    }

    /// Drops the registrations whose peer has hung up, before the
    /// connection thread has noticed (see the module docs).
    pub(super) fn sweep_dead(&mut self) {
        let registered: Vec<u64> = self
            .conns
            .iter()
            .filter(|(_, c)| c.peer.is_some())
            .map(|(id, _)| *id)
            .collect();
        let dead: Vec<u64> = {
            let mut fds: Vec<PollFd<'_>> = registered
                .iter()
                .map(|id| PollFd::new(self.conns[id].stream.as_fd(), PollFlags::empty()))
                .collect();
            if nix::poll::poll(&mut fds, PollTimeout::ZERO).is_err() {
                return;
            }
            // POLLHUP is reported when the peer has closed its socket (or
            // shut down both directions), whatever `events` asked for.
            let gone = PollFlags::POLLHUP | PollFlags::POLLERR | PollFlags::POLLNVAL;
            registered
                .iter()
                .zip(&fds)
                .filter(|(_, fd)| fd.revents().is_some_and(|r| r.intersects(gone)))
                .map(|(id, _)| *id)
                .collect()
        };
        for id in dead {
            if let Some(peer) = self.conns.get_mut(&id).and_then(|c| c.peer.take()) {
                self.registry.remove(peer);
            }
        }
    }
}
