//! `tape bridge serve`: accepts subscribers on TCP and streams journals to
//! each of them from its own cursors, on its own thread.
//!
//! The journal is the buffer: a subscriber's thread holds one batch (about
//! [`BATCH_TARGET`](crate::wire::BATCH_TARGET) bytes) and reads the source
//! journal at the pace its socket takes data. A stalled or vanished
//! subscriber blocks nobody but its own thread, which drops it once its
//! socket has taken nothing for the stall timeout (or it has sent no ack
//! for the dead timeout); it resumes where it stopped when it reconnects.

mod handshake;
mod presence;
mod stream;

pub use crate::addr::resolve;
use crate::auth::Token;
use crate::net::{send_all, tune};
use crate::status::{ServerStatus, SERVE_KIND};
use crate::Log;
use crate::Polling;
use handshake::handshake;
use presence::Presence;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;
use stream::Subscriber;
use tape_service::status_socket::StatusSocket;

/// Handshakes in progress at once; a connection beyond it is closed at
/// once, and logged.
pub const MAX_PENDING: usize = 64;

/// How `tape bridge serve` serves.
#[derive(Clone)]
pub struct ServeOptions {
    /// The root whose journals are served.
    pub root: PathBuf,
    /// Address to listen on (`HOST:PORT`; a bare `PORT` means
    /// `127.0.0.1:PORT`).
    pub listen: String,
    /// The shared token; [`Token::none`] only on a loopback address.
    pub token: Token,
    /// The journals exposed; empty: every journal of the root.
    pub journals: Vec<String>,
    /// A heartbeat goes to an idle subscriber this often.
    pub heartbeat: Duration,
    /// A subscriber that sent no ack for this long is dropped.
    pub dead_after: Duration,
    /// A subscriber whose socket took no data for this long is dropped.
    pub stall_timeout: Duration,
    /// A peer must have completed the handshake this long after connecting.
    pub handshake_timeout: Duration,
    /// How subscriber threads wait for new frames.
    pub polling: Polling,
    /// Most subscribers at once.
    pub max_subscribers: usize,
    /// Publish the status socket `<root>/system/bridge-<pid>-<port>.sock`.
    pub status_socket: bool,
    /// Register each subscriber as a reader with the root's service (if one
    /// runs), so `tape ls` shows it.
    pub register_readers: bool,
    /// Where log lines go.
    pub log: Log,
}

impl std::fmt::Debug for ServeOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeOptions")
            .field("root", &self.root)
            .field("listen", &self.listen)
            .field("journals", &self.journals)
            .field("polling", &self.polling)
            .finish_non_exhaustive()
    }
}

impl ServeOptions {
    /// Defaults: listen on 127.0.0.1:7470, no token, every journal,
    /// heartbeat 1 s, dead after 5 s, stall timeout 5 s, handshake 5 s,
    /// 256 subscribers, status socket and reader registration on, log to
    /// stderr.
    pub fn new(root: impl Into<PathBuf>) -> ServeOptions {
        ServeOptions {
            root: root.into(),
            listen: crate::DEFAULT_LISTEN.to_string(),
            token: Token::none(),
            journals: Vec::new(),
            heartbeat: Duration::from_secs(1),
            dead_after: Duration::from_secs(5),
            stall_timeout: Duration::from_secs(5),
            handshake_timeout: Duration::from_secs(5),
            polling: Polling::default(),
            max_subscribers: 256,
            status_socket: true,
            register_readers: true,
            log: crate::stderr_log("tape bridge serve"),
        }
    }
}

/// Why a server could not start.
#[derive(Debug)]
pub enum ServeError {
    /// The listen address does not resolve.
    Address {
        /// The address given.
        addr: String,
        /// Why.
        source: io::Error,
    },
    /// The address could not be bound (in use, not this machine's).
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: io::Error,
    },
    /// No token for an address other machines can reach.
    NoToken(SocketAddr),
    /// A journal name given is not a journal name.
    BadJournal(tape_journal::files::BadName),
    /// The status socket could not be made (logged; the server runs
    /// without it).
    Status {
        /// Its path.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A thread could not be started.
    Spawn(io::Error),
}

impl std::fmt::Display for ServeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServeError::Address { addr, source } => write!(
                f,
                "cannot resolve the listen address {addr:?} ({source}): give HOST:PORT"
            ),
            ServeError::Bind { addr, source } => write!(
                f,
                "cannot listen on {addr}: {source}: use an address of this machine and a free port"
            ),
            ServeError::NoToken(addr) => write!(
                f,
                "serving on {addr} without a token would let anyone who reaches it read the journals: give --token-file"
            ),
            ServeError::BadJournal(e) => e.fmt(f),
            ServeError::Status { path, source } => write!(
                f,
                "cannot make the status socket {}: {source}",
                path.display()
            ),
            ServeError::Spawn(e) => write!(f, "cannot start a thread ({e}): the process is out of resources"),
        }
    }
}

impl std::error::Error for ServeError {}

/// State shared by the accept loop, the connection threads and the status
/// socket.
struct Shared {
    opts: ServeOptions,
    dir: PathBuf,
    listen: SocketAddr,
    started_ns: i64,
    stop: AtomicBool,
    pending: AtomicUsize,
    next_id: AtomicU64,
    subscribers: Mutex<Vec<Arc<Presence>>>,
    /// Clones of every open connection, to shut them down on stop.
    conns: Mutex<Vec<(u64, TcpStream)>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Shared {
    fn log(&self, line: &str) {
        (self.opts.log)(line)
    }
}

use tape_journal::sync::lock;
/// A bound bridge server, not yet serving.
pub struct Server {
    listener: TcpListener,
    shared: Arc<Shared>,
    status: Option<StatusSocket>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("listen", &self.shared.listen)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Binds the listen address (and the status socket).
    pub fn bind(opts: ServeOptions) -> Result<Server, ServeError> {
        for j in &opts.journals {
            tape_journal::check_name(j).map_err(ServeError::BadJournal)?;
        }
        let addr = resolve(&opts.listen).map_err(|source| ServeError::Address {
            addr: opts.listen.clone(),
            source,
        })?;
        if opts.token.is_empty() && !addr.ip().is_loopback() {
            return Err(ServeError::NoToken(addr));
        }
        let listener =
            TcpListener::bind(addr).map_err(|source| ServeError::Bind { addr, source })?;
        let listen = listener
            .local_addr()
            .map_err(|source| ServeError::Bind { addr, source })?;
        listener
            .set_nonblocking(true)
            .map_err(|source| ServeError::Bind { addr, source })?;
        let shared = Arc::new(Shared {
            dir: tape_journal::journal_dir(&opts.root),
            opts,
            listen,
            started_ns: tape_journal::clock::now_ns(),
            stop: AtomicBool::new(false),
            pending: AtomicUsize::new(0),
            next_id: AtomicU64::new(1),
            subscribers: Mutex::new(Vec::new()),
            conns: Mutex::new(Vec::new()),
            threads: Mutex::new(Vec::new()),
        });
        let status = if shared.opts.status_socket {
            let s = Arc::clone(&shared);
            let port = listen.port().to_string();
            match StatusSocket::start(&shared.opts.root, SERVE_KIND, &port, move || s.status()) {
                Ok(sock) => Some(sock),
                // Serving matters more than being listed: say so, go on.
                Err(tape_service::status_socket::StartError { path, source }) => {
                    shared.log(&format!(
                        "{}; `tape bridge status` will not list this server",
                        ServeError::Status { path, source }
                    ));
                    None
                }
            }
        } else {
            None
        };
        Ok(Server {
            listener,
            shared,
            status,
        })
    }

    /// The address it listens on (with the port the kernel chose for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.listen
    }

    /// Who is connected now.
    pub fn status(&self) -> ServerStatus {
        self.shared.status()
    }

    /// Accepts subscribers until `stop` becomes true (checked every 100
    /// ms), then closes every connection and waits for their threads.
    pub fn run(self, stop: &AtomicBool) {
        let fd = self.listener.as_raw_fd();
        while !stop.load(Ordering::Acquire) && !self.shared.stop.load(Ordering::Acquire) {
            let mut pfd = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd for the listener, alive for the call.
            let n = unsafe { libc::poll(&mut pfd, 1, 100) };
            if n <= 0 {
                continue;
            }
            loop {
                match self.listener.accept() {
                    Ok((s, peer)) => self.admit(s, peer),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        // Out of fds and the like: say so, and back off.
                        self.shared.log(&format!("cannot accept a connection: {e}"));
                        std::thread::sleep(Duration::from_millis(100));
                        break;
                    }
                }
            }
            lock(&self.shared.threads).retain(|t| !t.is_finished());
        }
        self.shutdown();
    }

    /// Serves on a background thread; dropping the handle stops it.
    pub fn spawn(self) -> Result<ServerHandle, ServeError> {
        let addr = self.local_addr();
        let shared = Arc::clone(&self.shared);
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("bridge-accept".into())
            .spawn(move || self.run(&flag))
            .map_err(ServeError::Spawn)?;
        Ok(ServerHandle {
            addr,
            shared,
            stop,
            thread: Some(thread),
        })
    }

    fn admit(&self, s: TcpStream, peer: SocketAddr) {
        let sh = &self.shared;
        if sh.pending.load(Ordering::Acquire) >= MAX_PENDING {
            sh.log(&format!(
                "refused {peer}: {MAX_PENDING} connections are already in their handshake"
            ));
            return;
        }
        if s.set_nonblocking(false).is_err() || tune(&s, sh.opts.stall_timeout).is_err() {
            return;
        }
        let id = sh.next_id.fetch_add(1, Ordering::Relaxed);
        if let Ok(c) = s.try_clone() {
            lock(&sh.conns).push((id, c));
        }
        sh.pending.fetch_add(1, Ordering::AcqRel);
        let shared = Arc::clone(sh);
        let spawned = std::thread::Builder::new()
            .name(format!("bridge-{peer}"))
            .spawn(move || {
                connection(&shared, s, peer, id);
                lock(&shared.conns).retain(|(i, _)| *i != id);
            });
        match spawned {
            Ok(t) => lock(&sh.threads).push(t),
            Err(e) => {
                sh.pending.fetch_sub(1, Ordering::AcqRel);
                lock(&sh.conns).retain(|(i, _)| *i != id);
                sh.log(&format!("refused {peer}: cannot start a thread: {e}"));
            }
        }
    }

    fn shutdown(&self) {
        self.shared.stop.store(true, Ordering::Release);
        for (_, c) in lock(&self.shared.conns).iter() {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
        let threads: Vec<_> = lock(&self.shared.threads).drain(..).collect();
        for t in threads {
            let _ = t.join();
        }
        if let Some(s) = &self.status {
            s.stop();
        }
    }
}

/// A server running on a background thread (see [`Server::spawn`]).
pub struct ServerHandle {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerHandle")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl ServerHandle {
    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Who is connected now.
    pub fn status(&self) -> ServerStatus {
        self.shared.status()
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One connection: handshake, then the subscriber's stream.
fn connection(sh: &Arc<Shared>, s: TcpStream, peer: SocketAddr, id: u64) {
    let hs = handshake(sh, &s);
    sh.pending.fetch_sub(1, Ordering::AcqRel);
    let sub = match hs {
        Ok(sub) => sub,
        Err(why) => {
            // A refused peer gets nothing more: the connection just closes.
            sh.log(&format!("refused {peer}: {why}"));
            return;
        }
    };
    let who = format!("{}@{peer}", sub.account);
    match Subscriber::start(sh, &s, peer, id, sub) {
        Ok(mut me) => {
            let why = me.stream(sh, &s);
            lock(&sh.subscribers).retain(|p| p.id != id);
            if !sh.stop.load(Ordering::Acquire) {
                sh.log(&format!("subscriber {who} left: {why}"));
            }
        }
        Err(why) => {
            sh.log(&format!("subscriber {who} refused: {why}"));
            let _ = send_all(&s, &why.encode());
        }
    }
}
