//! `tape bridge serve`: accepts subscribers on TCP and streams journals to
//! each of them from its own cursors, on its own thread.
//!
//! The journal is the buffer: a subscriber's thread holds one batch (about
//! [`BATCH_TARGET`] bytes) and reads the source
//! journal at the pace its socket takes data. A stalled or vanished
//! subscriber blocks nobody but its own thread, which drops it once its
//! socket has taken nothing for the stall timeout (or it has sent no ack
//! for the dead timeout); it resumes where it stopped when it reconnects.

use crate::auth::{nonce, Token};
use crate::net::{
    read_exact_by, send_all, tight_timer_slack, tune, MsgReader, ReadFail, RecvError,
};
use crate::status::{JournalStatus, ServerStatus, StatusSocket, SubscriberStatus};
use crate::wire::{
    ack_limit, decode_ack, encode_error, encode_heartbeat, encode_mac, encode_opened,
    encode_subscribed, BatchBuilder, ErrorCode, Header, Hello, JournalState, Kind, Subscribe,
    BATCH_TARGET, HEADER_LEN, HELLO_LEN, MAC_LEN, MAX_SUBSCRIBE, VERSION,
};
use crate::{Log, Polling};
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tape_journal::{Cursor, CursorOptions, OpenError, Start};

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

/// Resolves `HOST:PORT` (or a bare `PORT`, meaning `127.0.0.1:PORT`).
pub fn resolve(addr: &str) -> io::Result<SocketAddr> {
    let full = if addr.parse::<u16>().is_ok() {
        format!("127.0.0.1:{addr}")
    } else {
        addr.to_string()
    };
    full.to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address"))
}

/// What a subscriber's thread publishes about it, for the status.
#[derive(Debug)]
struct Presence {
    id: u64,
    account: String,
    addr: SocketAddr,
    since_ns: i64,
    journals: Vec<JournalPresence>,
}

#[derive(Debug)]
struct JournalPresence {
    name: String,
    from_seq: u64,
    /// Last sequence number sent (0: none yet).
    seq_sent: AtomicU64,
    /// Last sequence number the replica reported (0: none).
    seq_acked: AtomicU64,
}

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

    fn status(&self) -> ServerStatus {
        let subs: Vec<Arc<Presence>> = lock(&self.subscribers).clone();
        let mut lasts: Vec<(String, u64)> = Vec::new();
        let mut last_seq = |name: &str| -> u64 {
            if let Some((_, s)) = lasts.iter().find(|(n, _)| n == name) {
                return *s;
            }
            let s = source_last_seq(&self.dir, name);
            lasts.push((name.to_string(), s));
            s
        };
        let subscribers = subs
            .iter()
            .map(|p| SubscriberStatus {
                id: p.id,
                account: p.account.clone(),
                address: p.addr.to_string(),
                since_ns: p.since_ns,
                journals: p
                    .journals
                    .iter()
                    .map(|j| {
                        let last = last_seq(&j.name);
                        let sent = j.seq_sent.load(Ordering::Relaxed);
                        JournalStatus {
                            journal: j.name.clone(),
                            from_seq: j.from_seq,
                            seq_sent: sent,
                            seq_acked: j.seq_acked.load(Ordering::Relaxed),
                            last_seq: last,
                            lag: last.saturating_sub(sent),
                        }
                    })
                    .collect(),
            })
            .collect();
        ServerStatus {
            pid: std::process::id(),
            listen: self.listen.to_string(),
            root: self.opts.root.display().to_string(),
            journals: if self.opts.journals.is_empty() {
                None
            } else {
                Some(self.opts.journals.clone())
            },
            since_ns: self.started_ns,
            subscribers,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The last sequence number of a source journal (0: none, or no journal).
fn source_last_seq(dir: &Path, name: &str) -> u64 {
    Cursor::open(dir, name, Start::End, CursorOptions::default())
        .ok()
        .and_then(|c| c.next_seq())
        .map_or(0, |n| n - 1)
}

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
            match StatusSocket::start(&shared.opts.root, listen.port(), move || s.status()) {
                Ok(sock) => Some(sock),
                // Serving matters more than being listed: say so, go on.
                Err((path, source)) => {
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
        Err((code, why)) => {
            sh.log(&format!("subscriber {who} refused: {why}"));
            let _ = send_all(&s, &encode_error(code, &why));
        }
    }
}

/// The peer's part of the handshake, or why it was refused. Nothing is sent
/// to a peer before its hello is read and accepted; after that only the
/// challenge, until it has proved the token.
fn handshake(sh: &Shared, s: &TcpStream) -> Result<Subscribe, String> {
    let limit = sh.opts.handshake_timeout;
    let deadline = Instant::now() + limit;
    let secs = limit.as_secs_f64();
    let read = |buf: &mut [u8], what: &str| -> Result<(), String> {
        read_exact_by(s, buf, deadline).map_err(|e| match e {
            ReadFail::Eof { got: 0 } => format!("closed the connection without sending its {what}"),
            ReadFail::Eof { got } => {
                format!("closed the connection after {got} bytes of its {what}")
            }
            ReadFail::Timeout { got: 0 } => {
                format!("sent no {what} within {secs} s (silent peer): dropped")
            }
            ReadFail::Timeout { got } => {
                format!("sent {got} bytes of its {what}, then nothing within {secs} s: dropped")
            }
            ReadFail::Io(e) => format!("connection error during the handshake: {e}"),
        })
    };
    let mut hdr = [0u8; HEADER_LEN];
    read(&mut hdr, "hello")?;
    let h = Header::parse(&hdr);
    if h.kind != Kind::Hello as u32 {
        return Err(format!(
            "sent garbage instead of a hello (first bytes {})",
            hex(&hdr)
        ));
    }
    h.expect(Kind::Hello, "hello", HELLO_LEN, true)
        .map_err(|e| format!("{e}: refused before reading it"))?;
    let mut body = [0u8; HELLO_LEN];
    read(&mut body, "hello")?;
    let hello = Hello::decode(&body).map_err(|_| {
        format!(
            "sent garbage instead of a hello (no magic: {})",
            hex(&body[..8])
        )
    })?;
    let server_nonce = nonce().map_err(|e| format!("cannot make a nonce: {e}"))?;
    let challenge = Hello {
        version: VERSION,
        nonce: server_nonce,
    };
    send_all(s, &challenge.encode(Kind::Challenge))
        .map_err(|e| format!("cannot send the challenge: {e}"))?;
    if hello.version != VERSION {
        return Err(format!(
            "speaks bridge protocol version {}, this server speaks {VERSION}",
            hello.version
        ));
    }
    read(&mut hdr, "auth")?;
    Header::parse(&hdr)
        .expect(Kind::Auth, "auth", MAC_LEN, true)
        .map_err(|e| format!("garbage instead of an auth: {e}"))?;
    let mut proof = [0u8; MAC_LEN];
    read(&mut proof, "auth")?;
    if !sh
        .opts
        .token
        .check_client(&hello.nonce, &server_nonce, &proof)
    {
        let none = Token::none().check_client(&hello.nonce, &server_nonce, &proof);
        return Err(if none {
            "no token (authentication failed: the peer has no --token-file)".into()
        } else {
            "wrong token (authentication failed)".into()
        });
    }
    let welcome = sh.opts.token.server_proof(&hello.nonce, &server_nonce);
    send_all(s, &encode_mac(Kind::Welcome, &welcome))
        .map_err(|e| format!("cannot send the welcome: {e}"))?;
    read(&mut hdr, "subscribe")?;
    let len = Header::parse(&hdr)
        .expect(Kind::Subscribe, "subscribe", MAX_SUBSCRIBE, false)
        .map_err(|e| format!("{e}: refused before reading it"))?;
    let mut body = vec![0u8; len];
    read(&mut body, "subscribe")?;
    Subscribe::decode(&body).map_err(|e| format!("sent a bad subscribe: {e}"))
}

fn hex(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// One journal of a subscriber.
struct Feed {
    index: u32,
    name: String,
    /// First sequence number to send (0: whatever comes first).
    from_seq: u64,
    cursor: Option<Cursor>,
    /// Whether the first frame has been checked against `from_seq`.
    started: bool,
    next_try: Instant,
}

/// A subscriber's thread state.
struct Subscriber {
    presence: Arc<Presence>,
    feeds: Vec<Feed>,
    batch: BatchBuilder,
    acks: MsgReader,
    _lease: Option<tape_service::ReaderLease>,
}

impl Subscriber {
    /// Checks the subscription against what is served, registers the
    /// subscriber and answers `subscribed`.
    fn start(
        sh: &Shared,
        s: &TcpStream,
        peer: SocketAddr,
        id: u64,
        sub: Subscribe,
    ) -> Result<Subscriber, (ErrorCode, String)> {
        let served = &sh.opts.journals;
        for w in &sub.journals {
            if !served.is_empty() && !served.contains(&w.journal) {
                return Err((
                    ErrorCode::NotServed,
                    format!(
                        "journal {} is not served here (served: {})",
                        w.journal,
                        served.join(", ")
                    ),
                ));
            }
        }
        let mut feeds = Vec::with_capacity(sub.journals.len());
        let mut states = Vec::with_capacity(sub.journals.len());
        for (i, w) in sub.journals.iter().enumerate() {
            let last = source_last_seq(&sh.dir, &w.journal);
            if w.from_seq > last + 1 {
                return Err((
                    ErrorCode::Ahead,
                    format!(
                        "the replica of {} holds seq {} but the source ends at seq {last}: it was not made from this journal; move it aside",
                        w.journal,
                        w.from_seq - 1
                    ),
                ));
            }
            let mut feed = Feed {
                index: i as u32,
                name: w.journal.clone(),
                from_seq: w.from_seq,
                cursor: None,
                started: false,
                next_try: Instant::now(),
            };
            let page_size = feed
                .open(&sh.dir)
                .map_err(|e| (ErrorCode::Damaged, e))?
                .unwrap_or(0);
            states.push(JournalState {
                page_size,
                last_seq: last,
            });
            feeds.push(feed);
        }
        let presence = Arc::new(Presence {
            id,
            account: sub.account.clone(),
            addr: peer,
            since_ns: tape_journal::clock::now_ns(),
            journals: sub
                .journals
                .iter()
                .map(|w| JournalPresence {
                    name: w.journal.clone(),
                    from_seq: w.from_seq,
                    seq_sent: AtomicU64::new(w.from_seq.saturating_sub(1)),
                    seq_acked: AtomicU64::new(w.from_seq.saturating_sub(1)),
                })
                .collect(),
        });
        {
            let mut subs = lock(&sh.subscribers);
            if subs.len() >= sh.opts.max_subscribers {
                return Err((
                    ErrorCode::Busy,
                    format!(
                        "this server already has {} subscribers",
                        sh.opts.max_subscribers
                    ),
                ));
            }
            subs.push(Arc::clone(&presence));
        }
        let lease = if sh.opts.register_readers {
            let js: Vec<(PathBuf, String)> = sub
                .journals
                .iter()
                .map(|w| (sh.dir.clone(), w.journal.clone()))
                .collect();
            tape_service::ReaderLease::acquire(
                &sh.opts.root,
                &format!("bridge:{}@{peer}", sub.account),
                &js,
            )
            .ok()
        } else {
            None
        };
        let me = Subscriber {
            presence,
            feeds,
            batch: BatchBuilder::new(),
            acks: MsgReader::new(4096),
            _lease: lease,
        };
        if let Err(e) = send_all(s, &encode_subscribed(&states)) {
            lock(&sh.subscribers).retain(|p| p.id != id);
            return Err((ErrorCode::Other, format!("cannot answer: {e}")));
        }
        let list: Vec<String> = sub
            .journals
            .iter()
            .map(|w| match w.from_seq {
                0 => format!("{} from its first frame", w.journal),
                n => format!("{} from seq {n}", w.journal),
            })
            .collect();
        sh.log(&format!(
            "subscriber {}@{peer} connected: {}",
            sub.account,
            list.join(", ")
        ));
        Ok(me)
    }

    /// Streams until the connection ends; returns why it ended.
    fn stream(&mut self, sh: &Shared, s: &TcpStream) -> String {
        tight_timer_slack();
        let mut idle = sh.opts.polling.idle();
        let heartbeat = encode_heartbeat();
        let mut last_sent = Instant::now();
        let mut last_heard = Instant::now();
        let mut next_chores = Instant::now();
        let mut rr = 0usize;
        let n = self.feeds.len();
        loop {
            if sh.stop.load(Ordering::Acquire) {
                return "the server is stopping".into();
            }
            let mut sent = false;
            for k in 0..n {
                let i = (rr + k) % n;
                match self.send_batch(i, s, sh.opts.stall_timeout) {
                    Ok(true) => sent = true,
                    Ok(false) => {}
                    Err(why) => return why,
                }
            }
            rr = (rr + 1) % n.max(1);
            let now = if sent {
                idle.reset();
                let now = Instant::now();
                last_sent = now;
                now
            } else {
                idle.idle();
                Instant::now()
            };
            if now < next_chores {
                continue;
            }
            next_chores = now + Duration::from_millis(50);
            // Acks: the subscriber's heartbeat and progress.
            loop {
                let count = n;
                let got = self.acks.poll(s, true, |h| {
                    h.expect(Kind::Ack, "ack", ack_limit(), false).map(|_| ())
                });
                match got {
                    Ok(Some(h)) => {
                        match decode_ack(self.acks.body(&h), count) {
                            Ok(seqs) => {
                                for (j, seq) in self.presence.journals.iter().zip(seqs) {
                                    j.seq_acked.store(seq, Ordering::Relaxed);
                                }
                            }
                            Err(e) => return format!("sent a bad ack: {e}"),
                        }
                        self.acks.consume(&h);
                        last_heard = now;
                    }
                    Ok(None) => break,
                    Err(RecvError::Closed { .. }) => return "it closed the connection".into(),
                    Err(RecvError::Io(e)) => return format!("connection lost: {e}"),
                    Err(e) => return format!("protocol error: {e}"),
                }
            }
            if now.duration_since(last_heard) > sh.opts.dead_after {
                return format!(
                    "no ack for {} s (dead peer): dropped",
                    sh.opts.dead_after.as_secs_f64()
                );
            }
            if !sent && now.duration_since(last_sent) >= sh.opts.heartbeat {
                if let Err(e) = send_all(s, &heartbeat) {
                    return send_failed(sh.opts.stall_timeout, e);
                }
                last_sent = now;
            }
            for f in &mut self.feeds {
                if f.cursor.is_none() && now >= f.next_try {
                    match f.open(&sh.dir) {
                        Ok(Some(page_size)) => {
                            if let Err(e) = send_all(s, &encode_opened(f.index, page_size)) {
                                return send_failed(sh.opts.stall_timeout, e);
                            }
                        }
                        Ok(None) => f.next_try = now + Duration::from_millis(100),
                        Err(e) => {
                            let _ = send_all(s, &encode_error(ErrorCode::Damaged, &e));
                            return e;
                        }
                    }
                } else if let Some(c) = &mut f.cursor {
                    let _ = c.prefetch();
                }
            }
        }
    }

    /// Sends what journal `i` has ready, up to one batch. Returns whether
    /// it sent anything.
    #[inline]
    fn send_batch(&mut self, i: usize, s: &TcpStream, stall: Duration) -> Result<bool, String> {
        let feed = &mut self.feeds[i];
        let Some(cursor) = &mut feed.cursor else {
            return Ok(false);
        };
        self.batch.clear();
        while self.batch.frame_bytes() < BATCH_TARGET {
            match cursor.next() {
                Ok(Some(f)) => {
                    if !feed.started {
                        feed.started = true;
                        if feed.from_seq != 0 && f.seq() != feed.from_seq {
                            let why = format!(
                                "the source no longer has seq {} of {} (its first is {}): the replica cannot follow on",
                                feed.from_seq,
                                feed.name,
                                f.seq()
                            );
                            let _ = send_all(s, &encode_error(ErrorCode::Gap, &why));
                            return Err(why);
                        }
                    }
                    self.batch.push(f.seq(), f.raw());
                }
                Ok(None) => break,
                Err(e) => {
                    if self.batch.count() > 0 {
                        // Send what was good; the damage is reported on the
                        // next call.
                        break;
                    }
                    let why = format!("cannot read journal {}: {e}", feed.name);
                    let _ = send_all(s, &encode_error(ErrorCode::Damaged, &why));
                    return Err(why);
                }
            }
        }
        let count = self.batch.count();
        if count == 0 {
            return Ok(false);
        }
        let last = self.batch.first_seq() + count as u64 - 1;
        let msg = self.batch.finish(feed.index);
        if let Err(e) = send_all(s, msg) {
            return Err(send_failed(stall, e));
        }
        self.presence.journals[i]
            .seq_sent
            .store(last, Ordering::Relaxed);
        Ok(true)
    }
}

/// Why a send failed, for the log.
fn send_failed(stall: Duration, e: io::Error) -> String {
    if e.kind() == io::ErrorKind::TimedOut {
        format!(
            "its socket took no data for {} s (stalled subscriber): dropped; it resumes where it stopped when it reconnects",
            stall.as_secs_f64()
        )
    } else {
        format!("connection lost: {e}")
    }
}

impl Feed {
    /// Opens the cursor if the journal exists: `Ok(Some(page_size))`;
    /// `Ok(None)` when it does not exist yet.
    fn open(&mut self, dir: &Path) -> Result<Option<u64>, String> {
        let start = match self.from_seq {
            0 => Start::First,
            n => Start::Seq(n),
        };
        match Cursor::open(dir, &self.name, start, CursorOptions::default()) {
            Ok(c) => {
                let size = c.page_size();
                self.cursor = Some(c);
                Ok(Some(size))
            }
            Err(OpenError::NotFound { .. }) => Ok(None),
            Err(e) => Err(format!("cannot read journal {}: {e}", self.name)),
        }
    }
}
