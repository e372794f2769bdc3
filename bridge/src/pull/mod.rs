//! `tape bridge pull`: keeps local replicas of remote journals, frame for
//! frame, reconnecting with backoff whenever the connection ends.
//!
//! Each replica is appended through a [`Writer`] registered with the local
//! service, so it has one writer like any journal and local readers see it
//! like any journal. On every (re)connection the subscription asks for
//! each journal from the replica's last sequence number + 1, which the
//! writer's recovery found: whatever point the connection or either
//! process died at, nothing is lost and nothing is written twice.
//!
//! A batch is written only once it has passed every check (its CRC32C,
//! frame lengths, sequence numbers following on the replica's, write
//! times); each frame's own CRC32C is checked by the appender before it is
//! written. A batch that fails closes the connection; the next one asks
//! again from the replica's end.

mod session;

use crate::addr::resolve;
use crate::auth::Token;
use crate::net::tune;
use crate::status::{PullJournalStatus, PullStatus, PULL_KIND};
use crate::wire::ErrorCode;
use crate::Log;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tape_journal::ReplicaError;
use tape_service::status_socket::{next_tag, StatusSocket};
use tape_writer::{SyncPolicy, Writer};

/// How `tape bridge pull` pulls.
#[derive(Clone)]
pub struct PullOptions {
    /// The local root: its service registers the replicas' writers.
    pub root: PathBuf,
    /// The server's address, `HOST:PORT`.
    pub from: String,
    /// (source journal, replica journal) pairs, sharing one connection.
    pub journals: Vec<(String, String)>,
    /// The shared token.
    pub token: Token,
    /// The account id to register.
    pub account: String,
    /// How often to tell the server how far the replicas are (also the
    /// client's heartbeat).
    pub ack_every: Duration,
    /// With nothing from the server (not even a heartbeat) for this long,
    /// the connection is taken for dead and made again.
    pub dead_after: Duration,
    /// First wait before reconnecting; doubles up to `backoff_max`.
    pub backoff_min: Duration,
    /// Longest wait between reconnections.
    pub backoff_max: Duration,
    /// When the replicas' frames are made durable on disk (default
    /// [`SyncPolicy::None`]; see [`tape_writer::WriterBuilder::sync`]). A
    /// failed sync is logged, once per failure.
    pub sync: SyncPolicy,
    /// Publish the status socket `<root>/system/bridge-pull-<pid>-<n>.sock`
    /// ([`crate::status::query_pulls`]).
    pub status_socket: bool,
    /// Where log lines go.
    pub log: Log,
}

impl std::fmt::Debug for PullOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PullOptions")
            .field("root", &self.root)
            .field("from", &self.from)
            .field("journals", &self.journals)
            .field("account", &self.account)
            .finish_non_exhaustive()
    }
}

impl PullOptions {
    /// Defaults: no token, ack every 500 ms, dead after 5 s, backoff 50 ms
    /// doubling to 2 s, status socket on, log to stderr.
    pub fn new(root: impl Into<PathBuf>, from: &str, account: &str) -> PullOptions {
        PullOptions {
            root: root.into(),
            from: from.to_string(),
            journals: Vec::new(),
            token: Token::none(),
            account: account.to_string(),
            ack_every: Duration::from_millis(500),
            dead_after: Duration::from_secs(5),
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_secs(2),
            sync: SyncPolicy::None,
            status_socket: true,
            log: crate::stderr_log("tape bridge pull"),
        }
    }

    /// Adds a journal, replicated under the same name.
    pub fn journal(mut self, name: &str) -> PullOptions {
        self.journals.push((name.to_string(), name.to_string()));
        self
    }
}

/// Why `pull` stopped for good (anything else is retried).
#[derive(Debug)]
pub enum PullError {
    /// The options are not usable; the text says why.
    Options(String),
    /// No service runs on the local root (the replicas' writers register
    /// with it).
    Service(tape_service::ConnectError),
    /// A replica could not be opened for writing (no service on the local
    /// root, another writer holds it, a damaged journal).
    Replica {
        /// The replica journal.
        journal: String,
        /// Why.
        source: tape_writer::WriterCreateError,
    },
    /// The server refused the token.
    Refused(SocketAddr),
    /// The server could not prove it knows the token.
    Impostor(SocketAddr),
    /// The peer is not a tape bridge, or speaks another version.
    Protocol(String),
    /// The server refused the subscription.
    Server {
        /// Its error code.
        code: ErrorCode,
        /// Its words.
        message: String,
    },
    /// A frame cannot be written to its replica however often it is
    /// fetched (larger than the replica's pages).
    Write {
        /// The replica journal.
        journal: String,
        /// Why.
        source: ReplicaError,
    },
}

impl std::fmt::Display for PullError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PullError::Options(why) => f.write_str(why),
            PullError::Service(e) => e.fmt(f),
            PullError::Replica { journal, source } => {
                write!(f, "cannot open the replica {journal} for writing: {source}")
            }
            PullError::Refused(a) => write!(
                f,
                "the bridge at {a} refused the token: check --token-file (it must hold the server's token)"
            ),
            PullError::Impostor(a) => write!(
                f,
                "the bridge at {a} could not prove it knows the token: check --from and --token-file"
            ),
            PullError::Protocol(why) => f.write_str(why),
            PullError::Server { message, .. } => write!(f, "the server refused: {message}"),
            PullError::Write { journal, source } => {
                write!(f, "cannot write to the replica {journal}: {source}")
            }
        }
    }
}

impl std::error::Error for PullError {}

/// How a session ended.
enum End {
    Fatal(PullError),
    /// Try again after a pause; the text is for the log.
    Retry(String),
    Stop,
}

impl From<PullError> for End {
    fn from(e: PullError) -> End {
        End::Fatal(e)
    }
}

/// One replica.
struct Replica {
    source: String,
    name: String,
    writer: Option<Writer>,
    page_size: u64,
    /// Sync failures of `writer` already logged.
    sync_failures: u64,
    /// What the status socket reports of it.
    progress: Arc<Progress>,
}

/// One replica's progress, for the status socket.
#[derive(Debug, Default)]
struct Progress {
    /// The replica's last seq.
    seq: AtomicU64,
    /// The source's last seq as far as known.
    known: AtomicU64,
    frames: AtomicU64,
    bytes: AtomicU64,
}

/// What the whole pull reports, for the status socket.
#[derive(Debug, Default)]
struct PullState {
    connected: AtomicBool,
    /// Connections that got their subscription accepted.
    sessions: AtomicU64,
}

impl Puller {
    fn status(&self) -> impl Fn() -> PullStatus + Send + 'static {
        let state = Arc::clone(&self.state);
        let journals: Vec<(String, String, Arc<Progress>)> = self
            .replicas
            .iter()
            .map(|r| (r.source.clone(), r.name.clone(), Arc::clone(&r.progress)))
            .collect();
        let (from, account) = (self.opts.from.clone(), self.opts.account.clone());
        let root = self.opts.root.display().to_string();
        let since_ns = tape_journal::clock::now_ns();
        move || PullStatus {
            pid: std::process::id(),
            from: from.clone(),
            account: account.clone(),
            root: root.clone(),
            since_ns,
            connected: state.connected.load(Ordering::Relaxed),
            reconnects: state.sessions.load(Ordering::Relaxed).saturating_sub(1),
            journals: journals
                .iter()
                .map(|(journal, replica, p)| {
                    let seq = p.seq.load(Ordering::Relaxed);
                    let last_seq = p.known.load(Ordering::Relaxed).max(seq);
                    PullJournalStatus {
                        journal: journal.clone(),
                        replica: replica.clone(),
                        seq,
                        last_seq,
                        lag: last_seq - seq,
                        frames: p.frames.load(Ordering::Relaxed),
                        bytes: p.bytes.load(Ordering::Relaxed),
                    }
                })
                .collect(),
        }
    }
}

impl Replica {
    fn last_seq(&self) -> u64 {
        self.writer.as_ref().map_or(0, |w| w.next_seq() - 1)
    }
}

/// The pulling client's state across sessions.
struct Puller {
    opts: PullOptions,
    addr: SocketAddr,
    replicas: Vec<Replica>,
    /// A session got its subscription accepted (the backoff starts over).
    progressed: bool,
    state: Arc<PullState>,
}

/// Pulls until `stop` becomes true (returns `Ok`) or something that
/// retrying cannot mend happens (returns the error).
pub fn pull(opts: &PullOptions, stop: &AtomicBool) -> Result<(), PullError> {
    let mut p = Puller::new(opts.clone())?;
    let _status = if opts.status_socket {
        match StatusSocket::start(&opts.root, PULL_KIND, &next_tag(), p.status()) {
            Ok(s) => Some(s),
            // Pulling matters more than being listed: say so, go on.
            Err(e) => {
                (opts.log)(&format!("{e}; `tape top` will not list this pull"));
                None
            }
        }
    } else {
        None
    };
    let mut backoff = tape_service::Backoff::new(opts.backoff_min, opts.backoff_max);
    let mut quiet = false;
    loop {
        if stop.load(Ordering::Acquire) {
            return Ok(());
        }
        p.progressed = false;
        let end = p.session(stop);
        p.state.connected.store(false, Ordering::Relaxed);
        match end {
            End::Stop => return Ok(()),
            End::Fatal(e) => return Err(e),
            End::Retry(why) => {
                if p.progressed {
                    backoff.reset();
                    quiet = false;
                }
                if !quiet {
                    (opts.log)(&format!(
                        "{why}; reconnecting (every {} ms at most)",
                        opts.backoff_max.as_millis()
                    ));
                }
                // Say it once per outage, not once per attempt.
                quiet = !p.progressed;
                let wait = backoff.next_wait();
                let until = Instant::now() + wait;
                while Instant::now() < until {
                    if stop.load(Ordering::Acquire) {
                        return Ok(());
                    }
                    std::thread::sleep(Duration::from_millis(10).min(wait));
                }
            }
        }
    }
}

/// A [`pull`] running on a background thread; dropping it stops it.
pub struct PullHandle {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<(), PullError>>>,
}

impl std::fmt::Debug for PullHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PullHandle").finish_non_exhaustive()
    }
}

impl PullHandle {
    /// Starts pulling on a thread.
    pub fn spawn(opts: PullOptions) -> std::io::Result<PullHandle> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("bridge-pull".into())
            .spawn(move || pull(&opts, &flag))?;
        Ok(PullHandle {
            stop,
            thread: Some(thread),
        })
    }

    /// Whether it has stopped (on a fatal error).
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Stops it and returns how it ended.
    pub fn stop(mut self) -> Result<(), PullError> {
        self.stop.store(true, Ordering::Release);
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(PullError::Protocol("the pull thread panicked".into())),
            None => Ok(()),
        }
    }
}

impl Drop for PullHandle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Puller {
    fn new(opts: PullOptions) -> Result<Puller, PullError> {
        if opts.journals.is_empty() {
            return Err(PullError::Options(
                "no journal to pull: give --journal NAME".into(),
            ));
        }
        crate::wire::check_account(&opts.account).map_err(PullError::Options)?;
        if opts.journals.len() > crate::wire::MAX_JOURNALS {
            return Err(PullError::Options(format!(
                "{} journals in one pull: at most {} share a connection",
                opts.journals.len(),
                crate::wire::MAX_JOURNALS
            )));
        }
        let addr = resolve(&opts.from).map_err(|e| {
            PullError::Options(format!(
                "cannot resolve the server address {:?} ({e}): give HOST:PORT",
                opts.from
            ))
        })?;
        // The replicas' writers register with the local service: say at
        // once when there is none, rather than after the first connection.
        tape_service::Client::connect(&opts.root).map_err(PullError::Service)?;
        let dir = tape_journal::journal_dir(&opts.root);
        let mut replicas: Vec<Replica> = Vec::new();
        for (source, name) in &opts.journals {
            for n in [source, name] {
                tape_journal::check_name(n).map_err(|e| PullError::Options(e.to_string()))?;
            }
            if replicas
                .iter()
                .any(|r| r.source == *source || r.name == *name)
            {
                return Err(PullError::Options(format!(
                    "journal {source} or replica {name} is named twice"
                )));
            }
            // A replica with pages is opened (and held) now; one that does
            // not exist yet is made with the source's page size once the
            // server has said what it is.
            let exists = tape_journal::list_pages(&dir, name).is_ok_and(|p| !p.is_empty());
            let writer = if exists {
                Some(open_writer(&opts, name, None)?)
            } else {
                None
            };
            let progress = Arc::new(Progress::default());
            let seq = writer.as_ref().map_or(0, |w| w.next_seq() - 1);
            progress.seq.store(seq, Ordering::Relaxed);
            replicas.push(Replica {
                source: source.clone(),
                name: name.clone(),
                writer,
                page_size: 0,
                sync_failures: 0,
                progress,
            });
        }
        Ok(Puller {
            opts,
            addr,
            replicas,
            progressed: false,
            state: Arc::default(),
        })
    }

    fn session(&mut self, stop: &AtomicBool) -> End {
        let addr = resolve(&self.opts.from).unwrap_or(self.addr);
        let s = match TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
            Ok(s) => s,
            Err(e) => return End::Retry(format!("cannot connect to {addr}: {e}")),
        };
        if let Err(e) = tune(&s, self.opts.dead_after) {
            return End::Retry(format!("cannot set up the connection to {addr}: {e}"));
        }
        if let Err(end) = self.handshake(&s, addr) {
            return end;
        }
        self.progressed = true;
        self.state.sessions.fetch_add(1, Ordering::Relaxed);
        self.state.connected.store(true, Ordering::Relaxed);
        let what: Vec<String> = self
            .replicas
            .iter()
            .map(|r| match r.last_seq() {
                0 => format!("{} from its first frame", r.source),
                n => format!("{} from seq {}", r.source, n + 1),
            })
            .collect();
        (self.opts.log)(&format!(
            "connected to {addr} as {}: {}",
            self.opts.account,
            what.join(", ")
        ));
        match self.stream(&s, stop) {
            End::Retry(why) => End::Retry(format!("connection to {addr} lost: {why}")),
            other => other,
        }
    }
}

fn open_writer(
    opts: &PullOptions,
    name: &str,
    page_size: Option<u64>,
) -> Result<Writer, PullError> {
    let mut b = Writer::builder(name).root(&opts.root).sync(opts.sync);
    if let Some(ps) = page_size {
        b = b.page_size(ps);
    }
    b.create().map_err(|source| PullError::Replica {
        journal: name.to_string(),
        source,
    })
}
