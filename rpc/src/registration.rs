//! An endpoint's registration with the service, kept alive, and the table
//! of live endpoints it keeps by watching.
//!
//! One connection per endpoint does both: `register_endpoint`, then
//! `watch` (service/PROTOCOL.md, section 4a). A background thread blocks on
//! that connection's events and applies each to the shared [`Directory`]:
//! it updates the table under a mutex, calls the owner's hook for a
//! requester that came up (the responder opens its journal there, so the
//! serving thread makes no system call for it), then bumps
//! [`Directory::version`] with a Release store. The serving thread only
//! loads that counter (Acquire) on its hot path and takes the mutex when it
//! moved.
//!
//! If the service goes away the thread reconnects with backoff (20 ms
//! doubling to 500 ms), registers again and replaces the table with the
//! list the new watch starts with; meanwhile the table keeps what it knew.
//! Dropping the [`Registration`] shuts the connection down (the service
//! sees the endpoint go at once) and joins the thread.

use std::collections::HashMap;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use tape_service::{
    Backoff, Change, Client, EndpointRole, JournalId, Peer, PeerKind, QueryError, Watch,
};

use crate::EndpointCreateError;

/// Called on the registration thread for each requester that comes up
/// (and for each in the list a new watch starts with).
pub(crate) type Hook = Box<dyn FnMut(&Peer) + Send>;

/// What the registration thread knows, shared with the endpoint.
#[derive(Debug)]
pub(crate) struct Directory {
    /// Bumped after every change to the table (and after the hook ran).
    version: AtomicU64,
    /// Live endpoints by name.
    table: Mutex<HashMap<String, Peer>>,
    /// Whether the service knows this endpoint right now.
    registered: AtomicBool,
    control: Mutex<Control>,
    wake: Condvar,
}

#[derive(Debug, Default)]
struct Control {
    stop: bool,
    /// A clone of the thread's current connection.
    socket: Option<UnixStream>,
}

impl Directory {
    /// The change counter: compare with the last value seen, take
    /// [`table`](Self::table) when it moved.
    #[inline(always)]
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// The live endpoints by name.
    pub fn table(&self) -> MutexGuard<'_, HashMap<String, Peer>> {
        tape_journal::sync::lock(&self.table)
    }

    pub fn is_registered(&self) -> bool {
        self.registered.load(Ordering::SeqCst)
    }

    fn control(&self) -> MutexGuard<'_, Control> {
        tape_journal::sync::lock(&self.control)
    }

    /// Records the current connection; false when stopping.
    fn publish(&self, socket: Option<UnixStream>) -> bool {
        let mut c = self.control();
        c.socket = socket;
        !c.stop
    }

    fn bump(&self) {
        self.version.fetch_add(1, Ordering::Release);
    }
}

/// The live registration of one endpoint; dropping it ends it.
#[derive(Debug)]
pub(crate) struct Registration {
    dir: Arc<Directory>,
    thread: Option<JoinHandle<()>>,
}

/// What to register.
struct Spec {
    root: PathBuf,
    name: String,
    role: EndpointRole,
    journal: JournalId,
}

impl Registration {
    /// Registers endpoint `name` (on the caller's thread, so a refusal is
    /// returned here), then keeps the registration and the table alive on a
    /// background thread.
    pub fn start(
        root: &Path,
        name: &str,
        role: EndpointRole,
        journal: JournalId,
        mut hook: Option<Hook>,
    ) -> Result<Registration, EndpointCreateError> {
        let spec = Spec {
            root: root.to_path_buf(),
            name: name.to_string(),
            role,
            journal,
        };
        let (list, watch) = spec.register().map_err(|e| match e {
            Attempt::Refused(e) => e,
            Attempt::Gone(e) => e,
        })?;
        let dir = Arc::new(Directory {
            version: AtomicU64::new(0),
            table: Mutex::new(HashMap::new()),
            registered: AtomicBool::new(true),
            control: Mutex::new(Control::default()),
            wake: Condvar::new(),
        });
        dir.publish(watch.socket().ok());
        apply_list(&dir, list, &mut hook);
        let shared = Arc::clone(&dir);
        let thread = std::thread::Builder::new()
            .name("tape-rpc-registration".into())
            .spawn(move || run(&shared, &spec, watch, hook))
            .map_err(EndpointCreateError::Spawn)?;
        Ok(Registration {
            dir,
            thread: Some(thread),
        })
    }

    pub fn directory(&self) -> &Directory {
        &self.dir
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        {
            let mut c = self.dir.control();
            c.stop = true;
            if let Some(s) = c.socket.take() {
                // Ends the blocking read of the thread, and the
                // registration at once.
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
        }
        self.dir.wake.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Why one registration attempt failed.
enum Attempt {
    /// The service refused: worth a log line when retrying.
    Refused(EndpointCreateError),
    /// No service, or it went away: retry quietly.
    Gone(EndpointCreateError),
}

impl Spec {
    fn register(&self) -> Result<(Vec<Peer>, Watch), Attempt> {
        let mut client = Client::connect(&self.root).map_err(|e| Attempt::Gone(e.into()))?;
        match client.register_endpoint(&self.name, self.role, &self.journal) {
            Ok(Ok(_)) => {}
            Ok(Err(pid)) => {
                return Err(Attempt::Refused(EndpointCreateError::Online {
                    name: self.name.clone(),
                    pid,
                }))
            }
            Err(e @ QueryError::Refused { .. }) => return Err(Attempt::Refused(e.into())),
            Err(e) => return Err(Attempt::Gone(e.into())),
        }
        client.watch().map_err(|e| Attempt::Gone(e.into()))
    }
}

/// The registration thread.
fn run(dir: &Directory, spec: &Spec, first: Watch, mut hook: Option<Hook>) {
    let mut watch = Some(first);
    let mut backoff = Backoff::SERVICE;
    let mut logged = false;
    loop {
        if let Some(mut w) = watch.take() {
            dir.registered.store(true, Ordering::SeqCst);
            backoff.reset();
            logged = false;
            while let Ok((change, peer)) = w.next_event() {
                apply_event(dir, change, peer, &mut hook);
            }
            dir.registered.store(false, Ordering::SeqCst);
            if !dir.publish(None) {
                return;
            }
        }
        {
            let c = dir.control();
            if c.stop {
                return;
            }
            let (c, _) = tape_journal::sync::wait_timeout(&dir.wake, c, backoff.next_wait());
            if c.stop {
                return;
            }
        }
        match spec.register() {
            Ok((list, w)) => {
                if !dir.publish(w.socket().ok()) {
                    return;
                }
                apply_list(dir, list, &mut hook);
                watch = Some(w);
            }
            Err(Attempt::Gone(_)) => {}
            Err(Attempt::Refused(e)) => {
                if !logged {
                    eprintln!(
                        "tape-rpc: registering endpoint {} again with the tape service failed: {e}; retrying",
                        spec.name
                    );
                    logged = true;
                }
            }
        }
    }
}

fn apply_list(dir: &Directory, list: Vec<Peer>, hook: &mut Option<Hook>) {
    let requesters: Vec<Peer> = list
        .iter()
        .filter(|p| p.kind == PeerKind::Requester)
        .cloned()
        .collect();
    {
        let mut t = dir.table();
        t.clear();
        for p in list {
            t.insert(p.name.clone(), p);
        }
    }
    if let Some(h) = hook {
        for p in &requesters {
            h(p);
        }
    }
    dir.bump();
}

fn apply_event(dir: &Directory, change: Change, peer: Peer, hook: &mut Option<Hook>) {
    match change {
        Change::Up => {
            dir.table().insert(peer.name.clone(), peer.clone());
            if peer.kind == PeerKind::Requester {
                if let Some(h) = hook {
                    h(&peer);
                }
            }
        }
        Change::Down => {
            let mut t = dir.table();
            if t.get(&peer.name).is_some_and(|p| p.id == peer.id) {
                t.remove(&peer.name);
            }
        }
        // A change this version does not know: nothing to apply.
        _ => return,
    }
    dir.bump();
}
