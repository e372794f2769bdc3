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

use crate::auth::{nonce, Token};
use crate::net::{read_exact_by, send_all, tune, MsgReader, ReadFail, RecvError};
use crate::server::resolve;
use crate::wire::{
    batch_limit, decode_error, decode_opened, decode_subscribed, encode_ack, encode_mac,
    subscribed_limit, Batch, ErrorCode, Header, Hello, Kind, Subscribe, Want, WireError,
    HEADER_LEN, HELLO_LEN, MAC_LEN, MAX_ERROR_TEXT, VERSION,
};
use crate::Log;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tape_journal::format::{max_payload, FRAME_HEADER_LEN};
use tape_journal::AppendError;
use tape_writer::Writer;

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
    /// doubling to 2 s, log to stderr.
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
        source: tape_writer::CreateError,
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
        source: AppendError,
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
}

/// Pulls until `stop` becomes true (returns `Ok`) or something that
/// retrying cannot mend happens (returns the error).
pub fn pull(opts: &PullOptions, stop: &AtomicBool) -> Result<(), PullError> {
    let mut p = Puller::new(opts.clone())?;
    let mut backoff = opts.backoff_min;
    let mut quiet = false;
    loop {
        if stop.load(Ordering::Acquire) {
            return Ok(());
        }
        p.progressed = false;
        match p.session(stop) {
            End::Stop => return Ok(()),
            End::Fatal(e) => return Err(e),
            End::Retry(why) => {
                if p.progressed {
                    backoff = opts.backoff_min;
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
                let until = Instant::now() + backoff;
                while Instant::now() < until {
                    if stop.load(Ordering::Acquire) {
                        return Ok(());
                    }
                    std::thread::sleep(Duration::from_millis(10).min(backoff));
                }
                backoff = (backoff * 2).min(opts.backoff_max);
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
            replicas.push(Replica {
                source: source.clone(),
                name: name.clone(),
                writer,
                page_size: 0,
            });
        }
        Ok(Puller {
            opts,
            addr,
            replicas,
            progressed: false,
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

    fn handshake(&mut self, s: &TcpStream, addr: SocketAddr) -> Result<(), End> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let io_fail = |e: std::io::Error| End::Retry(format!("handshake with {addr} failed: {e}"));
        let read = |buf: &mut [u8]| -> Result<(), ReadFail> { read_exact_by(s, buf, deadline) };
        let retry = |e: ReadFail| End::Retry(format!("handshake with {addr} failed: {e}"));
        let client_nonce = nonce().map_err(io_fail)?;
        let hello = Hello {
            version: VERSION,
            nonce: client_nonce,
        };
        send_all(s, &hello.encode(Kind::Hello)).map_err(io_fail)?;
        let not_bridge = |e: WireError| {
            End::Fatal(PullError::Protocol(format!(
                "{addr} does not answer like a tape bridge ({e}): check --from"
            )))
        };
        let mut hdr = [0u8; HEADER_LEN];
        read(&mut hdr).map_err(retry)?;
        Header::parse(&hdr)
            .expect(Kind::Challenge, "challenge", HELLO_LEN, true)
            .map_err(not_bridge)?;
        let mut body = [0u8; HELLO_LEN];
        read(&mut body).map_err(retry)?;
        let challenge = Hello::decode(&body).map_err(not_bridge)?;
        if challenge.version != VERSION {
            return Err(End::Fatal(PullError::Protocol(format!(
                "the bridge at {addr} speaks protocol version {}, this one {VERSION}: run the same tape version on both machines",
                challenge.version
            ))));
        }
        let proof = self
            .opts
            .token
            .client_proof(&client_nonce, &challenge.nonce);
        send_all(s, &encode_mac(Kind::Auth, &proof)).map_err(io_fail)?;
        match read(&mut hdr) {
            Ok(()) => {}
            // The server closes without a word on a wrong token.
            Err(ReadFail::Eof { got: 0 }) | Err(ReadFail::Io(_)) => {
                return Err(End::Fatal(PullError::Refused(addr)))
            }
            Err(e) => return Err(retry(e)),
        }
        Header::parse(&hdr)
            .expect(Kind::Welcome, "welcome", MAC_LEN, true)
            .map_err(not_bridge)?;
        let mut mac = [0u8; MAC_LEN];
        read(&mut mac).map_err(retry)?;
        if !self
            .opts
            .token
            .check_server(&client_nonce, &challenge.nonce, &mac)
        {
            return Err(End::Fatal(PullError::Impostor(addr)));
        }
        let sub = Subscribe {
            account: self.opts.account.clone(),
            journals: self
                .replicas
                .iter()
                .map(|r| Want {
                    journal: r.source.clone(),
                    from_seq: match r.last_seq() {
                        0 => 0,
                        n => n + 1,
                    },
                })
                .collect(),
        };
        send_all(s, &sub.encode()).map_err(io_fail)?;
        read(&mut hdr).map_err(retry)?;
        let h = Header::parse(&hdr);
        if h.kind == Kind::Error as u32 {
            let len = h
                .expect(Kind::Error, "error", 4 + MAX_ERROR_TEXT, false)
                .map_err(not_bridge)?;
            let mut body = vec![0u8; len];
            read(&mut body).map_err(retry)?;
            let (code, message) = decode_error(&body);
            if code == ErrorCode::Busy {
                // Full now, maybe not in a moment.
                return Err(End::Retry(format!("{addr} is busy: {message}")));
            }
            return Err(End::Fatal(PullError::Server { code, message }));
        }
        let len = h
            .expect(Kind::Subscribed, "subscribed", subscribed_limit(), false)
            .map_err(not_bridge)?;
        let mut body = vec![0u8; len];
        read(&mut body).map_err(retry)?;
        let states = decode_subscribed(&body, self.replicas.len()).map_err(not_bridge)?;
        for (i, st) in states.iter().enumerate() {
            if st.page_size != 0 {
                self.opened(i, st.page_size)?;
            } else {
                (self.opts.log)(&format!(
                    "journal {} does not exist on {addr} yet: waiting for it",
                    self.replicas[i].source
                ));
            }
        }
        Ok(())
    }

    /// The source journal `i` exists with pages of `page_size`: make its
    /// replica if it does not exist yet.
    fn opened(&mut self, i: usize, page_size: u64) -> Result<(), End> {
        let r = &mut self.replicas[i];
        r.page_size = page_size;
        if r.writer.is_none() {
            r.writer = Some(open_writer(&self.opts, &r.name, Some(page_size))?);
        }
        Ok(())
    }

    fn stream(&mut self, s: &TcpStream, stop: &AtomicBool) -> End {
        if let Err(e) = s.set_read_timeout(Some(Duration::from_millis(100))) {
            return End::Retry(e.to_string());
        }
        let mut reader = MsgReader::new(1 << 20);
        let count = self.replicas.len();
        let mut last_heard = Instant::now();
        let mut next_ack = Instant::now();
        loop {
            if stop.load(Ordering::Acquire) {
                return End::Stop;
            }
            let largest = self.replicas.iter().map(|r| r.page_size).max().unwrap_or(0);
            let limit = batch_limit(largest);
            let got = reader.poll(s, false, |h| match Kind::from_u32(h.kind) {
                Some(Kind::Batch) => h.expect(Kind::Batch, "batch", limit, false).map(|_| ()),
                Some(Kind::Heartbeat) => {
                    h.expect(Kind::Heartbeat, "heartbeat", 0, true).map(|_| ())
                }
                Some(Kind::Opened) => h
                    .expect(Kind::Opened, "opened", crate::wire::OPENED_LEN, true)
                    .map(|_| ()),
                Some(Kind::Error) => h
                    .expect(Kind::Error, "error", 4 + MAX_ERROR_TEXT, false)
                    .map(|_| ()),
                _ => Err(WireError::UnexpectedKind {
                    got: h.kind,
                    expected: "a batch, heartbeat, opened or error",
                }),
            });
            let now = Instant::now();
            match got {
                Ok(Some(h)) => {
                    last_heard = now;
                    let body = reader.body(&h);
                    let r = match Kind::from_u32(h.kind) {
                        Some(Kind::Batch) => {
                            let max_frame = FRAME_HEADER_LEN + max_payload(largest.max(1 << 20));
                            match Batch::check(body, count, max_frame) {
                                Ok(b) => self.write(&b),
                                Err(e) => Err(End::Retry(format!(
                                    "{e}: the batch was not written and is fetched again"
                                ))),
                            }
                        }
                        Some(Kind::Opened) => match decode_opened(body, count) {
                            Ok((i, ps)) => self.opened(i, ps),
                            Err(e) => Err(End::Retry(e.to_string())),
                        },
                        Some(Kind::Error) => {
                            let (code, message) = decode_error(body);
                            Err(End::Fatal(PullError::Server { code, message }))
                        }
                        _ => Ok(()),
                    };
                    if let Err(end) = r {
                        return end;
                    }
                    reader.consume(&h);
                }
                Ok(None) => {}
                Err(RecvError::Closed { partial }) => {
                    return End::Retry(if partial {
                        "the server closed the connection in the middle of a message".into()
                    } else {
                        "the server closed the connection".into()
                    })
                }
                Err(e) => return End::Retry(e.to_string()),
            }
            if now.duration_since(last_heard) > self.opts.dead_after {
                return End::Retry(format!(
                    "nothing from the server for {} s (not even a heartbeat)",
                    self.opts.dead_after.as_secs_f64()
                ));
            }
            if now >= next_ack {
                next_ack = now + self.opts.ack_every;
                let seqs: Vec<u64> = self.replicas.iter().map(Replica::last_seq).collect();
                if let Err(e) = send_all(s, &encode_ack(&seqs)) {
                    return End::Retry(format!("cannot send an ack: {e}"));
                }
            }
        }
    }

    /// Appends a checked batch to its replica.
    fn write(&mut self, b: &Batch<'_>) -> Result<(), End> {
        let r = &mut self.replicas[b.journal];
        let Some(w) = r.writer.as_mut() else {
            return Err(End::Retry(format!(
                "a batch of {} came before the journal was opened",
                r.source
            )));
        };
        let next = w.next_seq();
        let has_frames = next > 1;
        if has_frames && b.first_seq != next {
            return Err(End::Retry(format!(
                "a batch of {} starts at seq {} where {next} was expected",
                r.source, b.first_seq
            )));
        }
        if b.first_time_ns() < w.appender().last_time_ns() {
            return Err(End::Retry(format!(
                "a batch of {} goes back in time at seq {}",
                r.source, b.first_seq
            )));
        }
        for (h, payload) in b.frames() {
            match w.write_replica_frame(&h, payload) {
                Ok(()) => {}
                Err(e @ AppendError::TooLarge { .. }) => {
                    return Err(End::Fatal(PullError::Write {
                        journal: r.name.clone(),
                        source: e,
                    }))
                }
                Err(e) => {
                    return Err(End::Retry(format!(
                        "cannot append to the replica {}: {e}",
                        r.name
                    )))
                }
            }
        }
        Ok(())
    }
}

fn open_writer(
    opts: &PullOptions,
    name: &str,
    page_size: Option<u64>,
) -> Result<Writer, PullError> {
    let mut b = Writer::builder(name).root(&opts.root);
    if let Some(ps) = page_size {
        b = b.page_size(ps);
    }
    b.create().map_err(|source| PullError::Replica {
        journal: name.to_string(),
        source,
    })
}
