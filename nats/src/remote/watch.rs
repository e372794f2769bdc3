//! Which of the exposed names have a live responder on this root: a
//! thread that watches the local service's endpoint events.
//!
//! It connects to the service, sends `watch` (service/PROTOCOL.md, 4a),
//! takes the list of live endpoints, then applies each `up` and `down` of a
//! responder whose name is exposed, bumping a version and waking the
//! exposer ([`tokio::sync::Notify`]) after each change. When the service
//! goes away it keeps what it knew (a responder that runs still answers
//! through its journal) and connects again with backoff.

use std::collections::HashMap;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use tape_service::{Backoff, Change, Client, Peer, PeerKind};

/// What the watcher knows.
#[derive(Debug, Default, Clone)]
pub(crate) struct State {
    /// Bumped after each change.
    pub version: u64,
    /// The live responder of each exposed name that has one.
    pub online: HashMap<String, Peer>,
}

pub(crate) struct Shared {
    state: Mutex<State>,
    pub notify: tokio::sync::Notify,
    stop: AtomicBool,
    socket: Mutex<Option<UnixStream>>,
}

impl Shared {
    pub fn state(&self) -> State {
        tape_journal::sync::lock(&self.state).clone()
    }

    pub fn version(&self) -> u64 {
        tape_journal::sync::lock(&self.state).version
    }

    fn change(&self, f: impl FnOnce(&mut HashMap<String, Peer>)) {
        {
            let mut s = tape_journal::sync::lock(&self.state);
            f(&mut s.online);
            s.version += 1;
        }
        self.notify.notify_one();
    }
}

/// The watching thread; dropping it stops it.
pub(crate) struct Watcher {
    pub shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Watcher {
    /// Starts watching the service of `root` for responders named in
    /// `names`. Fails when no service runs there (checked once, here).
    pub fn start(root: &Path, names: &[String]) -> Result<Watcher, String> {
        let first = watch(root).map_err(|e| {
            format!("{e}: `tape rpc expose` needs the root's `tape service` running")
        })?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            notify: tokio::sync::Notify::new(),
            stop: AtomicBool::new(false),
            socket: Mutex::new(None),
        });
        let s = Arc::clone(&shared);
        let root: PathBuf = root.to_path_buf();
        let names: Vec<String> = names.to_vec();
        let thread = std::thread::Builder::new()
            .name("tape-expose-watch".into())
            .spawn(move || run(&s, &root, &names, Some(first)))
            .map_err(|e| format!("cannot start the watching thread: {e}"))?;
        Ok(Watcher {
            shared,
            thread: Some(thread),
        })
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(s) = tape_journal::sync::lock(&self.shared.socket).take() {
            // Ends the thread's blocking read.
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

type Watching = (Vec<Peer>, tape_service::Watch);

fn watch(root: &Path) -> Result<Watching, String> {
    let c = Client::connect(root).map_err(|e| e.to_string())?;
    c.watch().map_err(|e| e.to_string())
}

fn is_exposed(names: &[String], p: &Peer) -> bool {
    p.kind == PeerKind::Responder && names.contains(&p.name)
}

fn run(shared: &Shared, root: &Path, names: &[String], mut first: Option<Watching>) {
    let mut backoff = Backoff::SERVICE;
    loop {
        if shared.stop.load(Ordering::Acquire) {
            return;
        }
        let got = match first.take() {
            Some(w) => Ok(w),
            None => watch(root),
        };
        let Ok((list, mut w)) = got else {
            crate::sleep_unless(&shared.stop, backoff.next_wait());
            continue;
        };
        backoff.reset();
        {
            let mut sock = tape_journal::sync::lock(&shared.socket);
            if shared.stop.load(Ordering::Acquire) {
                return;
            }
            *sock = w.socket().ok();
        }
        shared.change(|online| {
            online.clear();
            for p in list.into_iter().filter(|p| is_exposed(names, p)) {
                online.insert(p.name.clone(), p);
            }
        });
        while let Ok((change, peer)) = w.next_event() {
            if !is_exposed(names, &peer) {
                continue;
            }
            match change {
                Change::Up => shared.change(|o| {
                    o.insert(peer.name.clone(), peer);
                }),
                Change::Down => shared.change(|o| {
                    if o.get(&peer.name).is_some_and(|p| p.id == peer.id) {
                        o.remove(&peer.name);
                    }
                }),
                // A change this version does not know.
                _ => {}
            }
        }
        tape_journal::sync::lock(&shared.socket).take();
    }
}
