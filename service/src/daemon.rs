//! The daemon: the socket, the one-service-per-root lock, and one thread per
//! connection.
//!
//! # Why a thread per connection
//!
//! The service is on no hot path: a connection sends a handful of requests
//! in its life (handshake, register, perhaps some `add_journal`) and then
//! sits idle until its process exits. Blocking code on one thread per
//! connection reads top to bottom, needs no per-connection buffer state
//! machine, and a slow or hostile peer can only stall its own thread. The
//! cost is bounded: at most [`MAX_CONNECTIONS`] threads with a 256 KiB stack
//! each, sleeping in `poll(2)`. The shared state is one [`Registry`] behind
//! one mutex, held only for in-memory bookkeeping (never across I/O on a
//! peer's socket).
//!
//! # Liveness
//!
//! A registration lives as long as its connection. When a process exits or
//! is killed the kernel closes its socket; the connection thread then reads
//! end-of-file and drops the registration. So that "free at once" holds even
//! before that thread has run, every request that reads or changes the
//! registry first polls the sockets of all registered peers (one `poll(2)`
//! with a zero timeout) and drops those whose peer has hung up (`POLLHUP`:
//! the peer closed its socket or shut down both directions).
//!
//! # Watchers
//!
//! A connection that sent `watch` gets an `event` each time an endpoint
//! registers or goes away. The registry records those changes; whoever
//! releases the state lock after making them ([`StateGuard`]'s drop) puts
//! them on each watcher's queue and adds one to the watcher's wake-up
//! eventfd, without blocking (no I/O on a peer's socket under the lock).
//! The watcher's own connection thread, which sleeps in `poll(2)` on its
//! peer's socket and that eventfd, sends them. Changes reach every
//! watcher in the order they were made; a watcher more than
//! [`MAX_WATCH_QUEUE`] events behind is sent error `limit` and closed, so
//! that it reconnects and starts again from a fresh list.

use std::collections::{HashMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{FileExt, FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{getsockopt, sockopt};

use crate::protocol::{
    decode_request, encode_frame, read_frame, validate_dir, validate_journal_name,
    validate_peer_name, write_frame, EndpointRole, ErrorCode, FrameError, JournalId, NoSigPipe,
    Reply, Request, MAX_PER_PAGE, MAX_REPLY, MAX_REQUEST, PROTOCOL_VERSION,
};
use crate::registry::{Cred, Refusal, Registry};
use crate::{lock_path, socket_path};

/// Most connections served at once; one more is answered `busy` and closed.
pub const MAX_CONNECTIONS: usize = 1024;

/// A peer must send its `hello` within this time after connecting.
pub const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(5);

/// Once a frame has begun, each read of the rest must complete within this
/// time; each reply must be written within it too.
const IO_DEADLINE: Duration = Duration::from_secs(5);

/// How often the accept loop looks at the shutdown flag when nothing
/// happens.
const SHUTDOWN_POLL: Duration = Duration::from_millis(100);

/// Most events queued for one watcher; one more and it is closed.
pub const MAX_WATCH_QUEUE: usize = 4096;

/// Stack of a connection thread: JSON nesting is bounded (128 levels) by
/// serde_json, so a small stack is enough.
const CONN_STACK: usize = 256 * 1024;

/// Why the service could not start (or stopped with an error).
#[derive(Debug)]
#[non_exhaustive]
pub enum ServiceError {
    /// Another service holds the lock of this root.
    AlreadyRunning {
        /// The root asked for.
        root: PathBuf,
        /// Pid written in the lock file by the running service, if readable.
        pid: Option<u32>,
    },
    /// A folder under the root could not be created.
    CreateDir {
        /// The folder.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The lock file could not be opened, locked or written.
    Lock {
        /// The lock file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// Something that is not a socket sits where the socket must go.
    SocketInTheWay {
        /// The socket path.
        path: PathBuf,
    },
    /// The socket could not be created, bound or given its mode.
    Bind {
        /// The socket path.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// Installing the signal handlers failed.
    Signals {
        /// The OS error.
        source: io::Error,
    },
    /// The service thread could not be started.
    Spawn {
        /// The OS error.
        source: io::Error,
    },
}

impl std::fmt::Display for ServiceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServiceError::AlreadyRunning { root, pid } => {
                let who = pid.map_or_else(|| "pid unknown".to_string(), |p| format!("pid {p}"));
                write!(
                    f,
                    "a tape service is already running on {} ({who}): use that one, stop it first, or pick another --root",
                    root.display()
                )
            }
            ServiceError::CreateDir { path, source } => write!(
                f,
                "cannot create folder {}: {source}; check the permissions of the root",
                path.display()
            ),
            ServiceError::Lock { path, source } => write!(
                f,
                "cannot lock {}: {source}; check the permissions of the root",
                path.display()
            ),
            ServiceError::SocketInTheWay { path } => write!(
                f,
                "{} exists and is not a socket: move it away and start the service again",
                path.display()
            ),
            ServiceError::Bind { path, source } => write!(
                f,
                "cannot listen on {}: {source}; check the permissions of the root",
                path.display()
            ),
            ServiceError::Signals { source } => {
                write!(f, "cannot install signal handlers: {source}")
            }
            ServiceError::Spawn { source } => {
                write!(f, "cannot start the service thread: {source}")
            }
        }
    }
}

impl std::error::Error for ServiceError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ServiceError::CreateDir { source, .. }
            | ServiceError::Lock { source, .. }
            | ServiceError::Bind { source, .. }
            | ServiceError::Signals { source }
            | ServiceError::Spawn { source } => Some(source),
            _ => None,
        }
    }
}

/// Runs the service on `root` until `shutdown` becomes true (checked at
/// least every 100 ms). Blocks. Used by `tape service`; see
/// [`shutdown_on_signals`] for a flag that SIGINT/SIGTERM/SIGHUP set.
///
/// On return every connection has been closed (so writers and readers start
/// reconnecting), the socket is removed and the lock released.
pub fn run(root: &Path, shutdown: &AtomicBool) -> Result<(), ServiceError> {
    let daemon = Daemon::bind(root)?;
    // The box's shared TSC clock gets a keeper that lives as long as the
    // service (a no-op where the machine has no such clock).
    tape_journal::clock::keep();
    daemon.serve(shutdown);
    Ok(())
}

/// Installs handlers for SIGINT, SIGTERM and SIGHUP that set the returned
/// flag, for [`run`]. Calling it again returns the same flag.
pub fn shutdown_on_signals() -> Result<&'static AtomicBool, ServiceError> {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    static FLAG: AtomicBool = AtomicBool::new(false);
    extern "C" fn on_signal(_: libc::c_int) {
        // An atomic store is async-signal-safe.
        FLAG.store(true, Ordering::Release);
    }
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        // SAFETY: the handler only performs an atomic store on a static,
        // which is async-signal-safe, and it does not replace a handler that
        // Rust's runtime relies on (it only sets SIGPIPE, not these).
        unsafe { sigaction(sig, &action) }.map_err(|e| ServiceError::Signals {
            source: io::Error::from(e),
        })?;
    }
    Ok(&FLAG)
}

/// A service running on a thread of this process; dropping it stops it,
/// closes every connection and removes its socket.
///
/// For tests, benchmarks and single-process setups; `tape service` uses
/// [`run`].
#[derive(Debug)]
pub struct Service {
    root: PathBuf,
    socket: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Service {
    /// Takes the root's lock, binds the socket and serves on a background
    /// thread. Fails with [`ServiceError::AlreadyRunning`] when another
    /// service runs on `root`.
    pub fn start(root: &Path) -> Result<Service, ServiceError> {
        let daemon = Daemon::bind(root)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let socket = daemon.socket.clone();
        let thread = std::thread::Builder::new()
            .name("tape-service".into())
            .spawn(move || daemon.serve(&flag))
            .map_err(|source| ServiceError::Spawn { source })?;
        Ok(Service {
            root: root.to_path_buf(),
            socket,
            stop,
            thread: Some(thread),
        })
    }

    /// The root it serves.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Its socket, `<root>/system/service.sock`.
    pub fn socket_path(&self) -> &Path {
        &self.socket
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Wake the accept loop at once rather than at its next poll timeout.
        let _ = UnixStream::connect(&self.socket);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A bound, locked, not yet serving service.
struct Daemon {
    socket: PathBuf,
    listener: UnixListener,
    /// Held for the life of the daemon; released (by close) after the
    /// socket is removed.
    lock: Flock<File>,
}

impl Daemon {
    fn bind(root: &Path) -> Result<Daemon, ServiceError> {
        let socket = socket_path(root);
        let lock_file = lock_path(root);
        for dir in [root.join("system"), root.join("journal")] {
            fs::create_dir_all(&dir).map_err(|source| ServiceError::CreateDir {
                path: dir.clone(),
                source,
            })?;
        }
        let lock_err = |source| ServiceError::Lock {
            path: lock_file.clone(),
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_file)
            .map_err(lock_err)?;
        let lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            Err((mut file, Errno::EWOULDBLOCK)) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                return Err(ServiceError::AlreadyRunning {
                    root: root.to_path_buf(),
                    pid: text.trim().parse().ok(),
                });
            }
            Err((_, e)) => return Err(lock_err(io::Error::from(e))),
        };
        lock.set_len(0).map_err(lock_err)?;
        lock.write_all_at(format!("{}\n", std::process::id()).as_bytes(), 0)
            .map_err(lock_err)?;

        // We hold the lock, so a socket file here was left by a service that
        // died: take it over.
        match fs::symlink_metadata(&socket) {
            Ok(m) if m.file_type().is_socket() => {
                fs::remove_file(&socket).map_err(|source| ServiceError::Bind {
                    path: socket.clone(),
                    source,
                })?;
            }
            Ok(_) => return Err(ServiceError::SocketInTheWay { path: socket }),
            Err(_) => {}
        }
        let bind_err = |source| ServiceError::Bind {
            path: socket.clone(),
            source,
        };
        let listener = UnixListener::bind(&socket).map_err(bind_err)?;
        fs::set_permissions(&socket, fs::Permissions::from_mode(0o660)).map_err(bind_err)?;
        listener.set_nonblocking(true).map_err(bind_err)?;
        Ok(Daemon {
            socket,
            listener,
            lock,
        })
    }

    /// The accept loop; returns when `shutdown` is set.
    fn serve(self, shutdown: &AtomicBool) {
        let shared = Arc::new(Shared::default());
        let mut threads: Vec<JoinHandle<()>> = Vec::new();
        while !shutdown.load(Ordering::Acquire) {
            let mut fds = [PollFd::new(self.listener.as_fd(), PollFlags::POLLIN)];
            let timeout = PollTimeout::try_from(SHUTDOWN_POLL).unwrap_or(PollTimeout::NONE);
            match nix::poll::poll(&mut fds, timeout) {
                Ok(0) | Err(Errno::EINTR) => continue,
                Ok(_) => {}
                Err(_) => {
                    std::thread::sleep(SHUTDOWN_POLL);
                    continue;
                }
            }
            if shutdown.load(Ordering::Acquire) {
                break;
            }
            threads.retain(|t| !t.is_finished());
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if let Some(t) = shared.admit(stream) {
                        threads.push(t);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // Out of file descriptors or similar: do not spin.
                Err(_) => std::thread::sleep(SHUTDOWN_POLL),
            }
        }
        shared.stopping.store(true, Ordering::Release);
        for conn in shared.lock().conns.values() {
            let _ = conn.stream.shutdown(std::net::Shutdown::Both);
        }
        for t in threads {
            let _ = t.join();
        }
        // Remove the socket while still holding the lock, so that a service
        // that starts next never has its fresh socket removed by us.
        let _ = fs::remove_file(&self.socket);
        drop(self.listener);
        drop(self.lock);
    }
}

/// State shared by the accept loop and the connection threads.
#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    /// Set when the service stops: connection threads end.
    stopping: AtomicBool,
}

#[derive(Default)]
struct State {
    registry: Registry,
    /// Every open connection (for the limit, liveness checks and shutdown).
    conns: HashMap<u64, ConnEntry>,
    last_conn: u64,
    /// Connections that sent `watch`, by connection id.
    watchers: HashMap<u64, Arc<Watcher>>,
}

/// The event queue of one watching connection.
struct Watcher {
    queue: Mutex<WatchQueue>,
    /// An eventfd (non-blocking): incremented when events are queued,
    /// polled and drained by the watcher's connection thread.
    wake: std::os::fd::OwnedFd,
}

#[derive(Default)]
struct WatchQueue {
    events: VecDeque<Reply>,
    /// More than [`MAX_WATCH_QUEUE`] events were waiting: the watcher is
    /// closed.
    overflow: bool,
}

impl Watcher {
    fn new() -> io::Result<Watcher> {
        use std::os::fd::FromRawFd;
        // SAFETY: eventfd takes no pointer; a non-negative result is a new
        // file descriptor that nothing else owns.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Watcher {
            queue: Mutex::new(WatchQueue::default()),
            // SAFETY: fd was just created above and is owned by nobody else.
            wake: unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Adds one to the eventfd (a full counter means a wake-up is pending).
    fn wake(&self) {
        let _ = nix::unistd::write(&self.wake, &1u64.to_ne_bytes());
    }

    /// Resets the eventfd to zero.
    fn drain(&self) {
        let mut buf = [0u8; 8];
        let _ = nix::unistd::read(std::os::fd::AsRawFd::as_raw_fd(&self.wake), &mut buf);
    }

    fn queue(&self) -> MutexGuard<'_, WatchQueue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues events and wakes the watcher's thread; never blocks.
    fn push(&self, events: &[Reply]) {
        {
            let mut q = self.queue();
            if q.overflow {
                return;
            }
            if q.events.len() + events.len() > MAX_WATCH_QUEUE {
                q.overflow = true;
                q.events.clear();
            } else {
                q.events.extend(events.iter().cloned());
            }
        }
        self.wake();
    }
}

/// The locked state. Dropping it hands the endpoint changes made under the
/// lock to the watchers before unlocking, so every watcher sees them in the
/// order they were made.
struct StateGuard<'a>(MutexGuard<'a, State>);

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

struct ConnEntry {
    /// A clone of the connection's socket.
    stream: UnixStream,
    /// Its registration, if any.
    peer: Option<u64>,
}

impl Shared {
    /// The state; a poisoned mutex is still used (the registry stays
    /// consistent between statements, and the service must not die).
    fn lock(&self) -> StateGuard<'_> {
        StateGuard(self.state.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Takes a new connection: refuses it when full, else starts its thread.
    fn admit(self: &Arc<Self>, stream: UnixStream) -> Option<JoinHandle<()>> {
        let _ = stream.set_nonblocking(false);
        let _ = stream.set_write_timeout(Some(IO_DEADLINE));
        let clone = stream.try_clone().ok()?;
        let conn_id = {
            let mut st = self.lock();
            if st.conns.len() >= MAX_CONNECTIONS {
                drop(st);
                let _ = stream.set_write_timeout(Some(Duration::from_millis(100)));
                let _ = write_frame(
                    &mut NoSigPipe(&stream),
                    &Reply::error(
                        ErrorCode::Busy,
                        format!(
                            "the tape service already serves {MAX_CONNECTIONS} connections: close some and try again"
                        ),
                    ),
                );
                return None;
            }
            st.last_conn += 1;
            let id = st.last_conn;
            st.conns.insert(
                id,
                ConnEntry {
                    stream: clone,
                    peer: None,
                },
            );
            id
        };
        let shared = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name("tape-conn".into())
            .stack_size(CONN_STACK)
            .spawn(move || {
                Connection::new(&shared, conn_id, stream).serve();
                shared.forget_conn(conn_id);
            });
        match spawned {
            Ok(t) => Some(t),
            Err(_) => {
                self.forget_conn(conn_id);
                None
            }
        }
    }

    /// Drops a closed connection and its registration.
    fn forget_conn(&self, conn_id: u64) {
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
    fn flush_events(&mut self) {
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
    fn sweep_dead(&mut self) {
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

/// One connection's thread.
struct Connection<'a> {
    shared: &'a Shared,
    conn_id: u64,
    stream: UnixStream,
    cred: Cred,
    greeted: bool,
    /// This connection's registration id, once registered.
    peer: Option<u64>,
    /// Its event queue, once it sent `watch`.
    watch: Option<Arc<Watcher>>,
}

impl<'a> Connection<'a> {
    fn new(shared: &'a Shared, conn_id: u64, stream: UnixStream) -> Self {
        let cred = getsockopt(&stream, sockopt::PeerCredentials)
            .map(|c| Cred {
                pid: c.pid().max(0) as u32,
                uid: c.uid(),
                gid: c.gid(),
            })
            .unwrap_or(Cred {
                pid: 0,
                uid: u32::MAX,
                gid: u32::MAX,
            });
        let _ = stream.set_read_timeout(Some(IO_DEADLINE));
        Connection {
            shared,
            conn_id,
            stream,
            cred,
            greeted: false,
            peer: None,
            watch: None,
        }
    }

    fn serve(mut self) {
        let hello_by = Instant::now() + HANDSHAKE_DEADLINE;
        let mut buf = Vec::new();
        loop {
            let wait = if self.greeted {
                None
            } else {
                Some(hello_by.saturating_duration_since(Instant::now()))
            };
            let readable = match &self.watch {
                Some(w) => {
                    let w = Arc::clone(w);
                    self.wait_watching(&w)
                }
                None => wait_readable(&self.stream, wait),
            };
            match readable {
                Ok(true) => {}
                Ok(false) => {
                    self.send(&Reply::error(
                        ErrorCode::Timeout,
                        "no hello within 5 s of connecting: send hello first",
                    ));
                    return;
                }
                Err(_) => return,
            }
            if self.shared.stopping.load(Ordering::Acquire) {
                return;
            }
            let failure = match read_frame(&mut self.stream, MAX_REQUEST, &mut buf) {
                Ok(()) => None,
                Err(FrameError::Eof) | Err(FrameError::Io(_)) => return,
                Err(FrameError::Truncated) => Some(Reply::error(
                    ErrorCode::Truncated,
                    "the connection ended in the middle of a message: send whole frames",
                )),
                Err(FrameError::TooLarge(n)) => Some(Reply::error(
                    ErrorCode::TooLarge,
                    format!(
                        "a message length of {n} bytes is not allowed: send 1 to {MAX_REQUEST} bytes of json after the u32 little-endian length"
                    ),
                )),
                Err(FrameError::Timeout) => Some(Reply::error(
                    ErrorCode::Timeout,
                    "a message was not completed within 5 s: send whole frames",
                )),
            };
            if let Some(reply) = failure {
                self.send(&reply);
                return;
            }
            let reply = match decode_request(&buf) {
                Ok(req) => self.handle(req),
                Err(e) => Reply::error(e.code, e.message),
            };
            // An idle connection keeps no large buffer.
            if buf.capacity() > 4096 {
                buf = Vec::new();
            }
            let close = matches!(&reply, Reply::Error { code, .. } if code.closes_connection());
            if !self.send(&reply) || close {
                return;
            }
        }
    }

    /// Sleeps until the peer sends something (`Ok(true)`), sending the
    /// watcher's events as they come. An error means: close the connection
    /// (it broke, or its events overflowed).
    fn wait_watching(&mut self, w: &Watcher) -> io::Result<bool> {
        loop {
            let (peer_ready, woke) = {
                let mut fds = [
                    PollFd::new(self.stream.as_fd(), PollFlags::POLLIN),
                    PollFd::new(w.wake.as_fd(), PollFlags::POLLIN),
                ];
                match nix::poll::poll(&mut fds, PollTimeout::NONE) {
                    Ok(_) => {}
                    Err(Errno::EINTR) => continue,
                    Err(e) => return Err(io::Error::from(e)),
                }
                (fds[0].any().unwrap_or(true), fds[1].any().unwrap_or(true))
            };
            if woke {
                w.drain();
            }
            let (events, overflow) = {
                let mut q = w.queue();
                (std::mem::take(&mut q.events), q.overflow)
            };
            if overflow {
                self.send(&Reply::error(
                    ErrorCode::Limit,
                    format!(
                        "more than {MAX_WATCH_QUEUE} events went unread: connect and watch again"
                    ),
                ));
                return Err(io::Error::other("watcher overflow"));
            }
            for e in &events {
                if !self.send(e) {
                    return Err(io::Error::other("watcher gone"));
                }
            }
            if peer_ready {
                return Ok(true);
            }
        }
    }

    /// Writes a reply; false when the connection is broken.
    fn send(&mut self, reply: &Reply) -> bool {
        let frame = match encode_frame(reply) {
            Ok(f) if f.len() - 4 <= MAX_REPLY => f,
            Ok(_) => match encode_frame(&Reply::error(
                ErrorCode::Limit,
                "the answer is larger than 16 MiB: ask for a smaller page",
            )) {
                Ok(f) => f,
                Err(_) => return false,
            },
            Err(_) => return false,
        };
        NoSigPipe(&self.stream).write_all(&frame).is_ok()
    }

    fn handle(&mut self, req: Request) -> Reply {
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

/// Waits until `stream` is readable (or hung up). `Ok(false)` on timeout.
fn wait_readable(stream: &UnixStream, timeout: Option<Duration>) -> io::Result<bool> {
    let deadline = timeout.map(|t| Instant::now() + t);
    loop {
        let left = match deadline {
            None => PollTimeout::NONE,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Ok(false);
                }
                // Round up so that we never spin on a sub-millisecond rest.
                let ms = left.as_millis().saturating_add(1).min(i32::MAX as u128);
                PollTimeout::try_from(ms as i32).unwrap_or(PollTimeout::MAX)
            }
        };
        let mut fds = [PollFd::new(stream.as_fd(), PollFlags::POLLIN)];
        match nix::poll::poll(&mut fds, left) {
            Ok(0) => continue,
            Ok(_) => return Ok(true),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(io::Error::from(e)),
        }
    }
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watcher_queue_overflows_once_and_wakes() {
        let w = Watcher::new().unwrap();
        let ev = Reply::Count { count: 0 };
        w.push(&vec![ev.clone(); MAX_WATCH_QUEUE - 1]);
        assert!(wait_readable_fd(&w));
        w.drain();
        assert!(!wait_readable_fd(&w), "drained");
        assert!(!w.queue().overflow);
        w.push(&[ev.clone(), ev.clone()]);
        let q = w.queue();
        assert!(q.overflow && q.events.is_empty());
    }

    fn wait_readable_fd(w: &Watcher) -> bool {
        let mut fds = [PollFd::new(w.wake.as_fd(), PollFlags::POLLIN)];
        nix::poll::poll(&mut fds, PollTimeout::ZERO).unwrap() == 1
    }

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
