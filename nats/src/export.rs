//! `tape nats export`: each journal becomes a stream whose sequence is the
//! journal's seq.
//!
//! # The resume rule
//!
//! Frame `s` is published with `Nats-Expected-Last-Sequence: s − 1`: the
//! server stores it only if the stream's last sequence is `s − 1`, so it
//! gets sequence `s`, and a frame can neither be skipped nor stored twice,
//! whatever died when. Each time the export (re)starts, and each time a
//! publish fails or the connection is made again, it reads the stream's
//! last sequence `L` and goes on from journal frame `L + 1`.
//!
//! - Up to `window` frames (default 4096) are in flight, their acks
//!   coming back on one wildcard subscription (`<inbox>.<round>.<seq>`).
//!   When one publish fails, every later pipelined one fails too (each
//!   expected the one before): the export stops, reads `L` again and
//!   resumes. An ack that does not come within 3 s counts as a failure.
//! - Before resuming after `L`, message `L` of the stream is compared with
//!   frame `L` of the journal, byte for byte (while both still hold it): a
//!   stream written from another journal of the same name, or by another
//!   publisher, is refused rather than continued.
//! - A stream that never held a message starts at the journal's first
//!   frame on disk. When old pages were pruned before the export first
//!   ran, that is not seq 1 but `F`: the export publishes `F − 1` empty
//!   placeholders (which no import writes: they are not frames) and purges
//!   the stream below `F` (`$JS.API.STREAM.PURGE` with `seq`), so the
//!   stream's first sequence is `F` and stream and journal sequences stay
//!   equal. (Purging the empty stream below `F` alone sets its first
//!   sequence too, but 2.9.10 then compares `Nats-Expected-Last-Sequence`
//!   with a counter left at 0, and every publish fails.)
//! - A journal whose frames after `L` were pruned before they were
//!   exported (the export was stopped too long) is refused: those frames
//!   are gone, and a stream with a hole would break the rule above.

use crate::api::{self, StreamLimits, StreamState};
use crate::conn::{backoff, connect_retrying, Conn, Fail, Server};
use crate::status::{self, Connector};
use crate::{names, sleep_driving, Log};
use async_nats::{HeaderMap, Subject};
use futures_util::StreamExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tape_journal::{Cursor, CursorOptions, OpenError, ReadError, Start};

/// How `tape nats export` exports.
#[derive(Clone)]
pub struct ExportOptions {
    /// The local root holding the journals.
    pub root: PathBuf,
    /// The server and credentials.
    pub server: Server,
    /// The journals to export.
    pub journals: Vec<String>,
    /// Replication and limits of the streams the export creates.
    pub limits: StreamLimits,
    /// Frames in flight at most (published, not yet acknowledged).
    pub window: u64,
    /// Poll the journals without ever sleeping.
    pub busy_poll: bool,
    /// Where log lines go.
    pub log: Log,
}

impl std::fmt::Debug for ExportOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExportOptions")
            .field("root", &self.root)
            .field("server", &self.server)
            .field("journals", &self.journals)
            .finish_non_exhaustive()
    }
}

impl ExportOptions {
    /// Defaults: a window of 4096, backoff polling, log to stderr.
    pub fn new(root: impl Into<PathBuf>, server: Server) -> ExportOptions {
        ExportOptions {
            root: root.into(),
            server,
            journals: Vec::new(),
            limits: StreamLimits::default(),
            window: 4096,
            busy_poll: false,
            log: crate::stderr_log("tape nats export"),
        }
    }
}

/// What one journal's export shares with its ack task and the status
/// responder.
#[derive(Debug, Default)]
struct Shared {
    round: AtomicU64,
    acked: AtomicU64,
    failed: AtomicBool,
    why: Mutex<String>,
}

impl Shared {
    fn fail(&self, why: String) {
        if !self.failed.swap(true, Ordering::AcqRel) {
            *tape_journal::sync::lock(&self.why) = why;
        }
    }
}

/// Exports until `stop` becomes true (`Ok`) or something retrying cannot
/// mend happens (the error, one sentence).
pub fn export(opts: &ExportOptions, stop: &AtomicBool) -> Result<(), String> {
    if opts.journals.is_empty() {
        return Err("no journal to export: name at least one".into());
    }
    for (i, j) in opts.journals.iter().enumerate() {
        tape_journal::check_name(j).map_err(|e| e.to_string())?;
        if opts.journals[..i].contains(j) {
            return Err(format!("journal {j} is named twice"));
        }
    }
    if opts.limits.replicas > 5 {
        return Err(format!(
            "--replicas {}: JetStream keeps 1 to 5 replicas",
            opts.limits.replicas
        ));
    }
    opts.server.addrs()?;
    let rt = crate::runtime_here()?;
    let Some(conn) = connect_retrying(&rt, &opts.server, "tape nats export", &opts.log, stop)?
    else {
        return Ok(());
    };
    let quit = AtomicBool::new(false);
    let fatal: Mutex<Option<String>> = Mutex::new(None);
    let mut exporters = Vec::new();
    for j in &opts.journals {
        let shared = Arc::new(Shared::default());
        let inbox = conn.client.new_inbox();
        let sub = rt
            .block_on(conn.client.subscribe(format!("{inbox}.>")))
            .map_err(|e| format!("cannot subscribe to the acks on {}: {e}", opts.server.url))?;
        rt.spawn(acks(sub, Arc::clone(&shared)));
        exporters.push(Exporter {
            opts: opts.clone(),
            conn: conn.clone(),
            journal: j.clone(),
            stream: names::stream_of(j),
            subject: Subject::from(names::subject_of(j)),
            inbox,
            shared,
            cursor: None,
            round: 0,
            progressed: false,
            said_limits: false,
        });
    }
    let connectors: Vec<Connector> = exporters
        .iter()
        .map(|e| {
            let shared = Arc::clone(&e.shared);
            let dir = tape_journal::journal_dir(&opts.root);
            let journal = e.journal.clone();
            Connector::new(
                "export",
                &e.journal,
                &e.journal,
                &e.stream,
                None,
                move || {
                    let acked = shared.acked.load(Ordering::Acquire);
                    let last = tape_journal::stats(&dir, &journal).map_or(0, |s| s.last_seq);
                    (acked, last, last.saturating_sub(acked))
                },
            )
        })
        .collect();
    rt.spawn(status::answer(conn.client.clone(), connectors));
    let rt = &rt;
    std::thread::scope(|s| {
        for mut e in exporters {
            let (quit, fatal) = (&quit, &fatal);
            std::thread::Builder::new()
                .name(format!("export-{}", e.journal))
                .spawn_scoped(s, move || {
                    let _rt = rt.enter();
                    let either = Either(stop, quit);
                    if let Err(err) = e.run(rt, &either) {
                        fatal
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .get_or_insert(err);
                        quit.store(true, Ordering::Release);
                    }
                })
                .map(|_| ())
                .unwrap_or_else(|err| {
                    fatal
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get_or_insert(format!("cannot start a thread: {err}"));
                    quit.store(true, Ordering::Release);
                });
        }
    });
    let fatal = fatal.into_inner().unwrap_or_else(|p| p.into_inner());
    rt.block_on(async {
        let _ = tokio::time::timeout(Duration::from_secs(1), conn.client.flush()).await;
    });
    match fatal {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Stops when either flag is set.
struct Either<'a>(&'a AtomicBool, &'a AtomicBool);

impl Either<'_> {
    fn is_set(&self) -> bool {
        self.0.load(Ordering::Acquire) || self.1.load(Ordering::Acquire)
    }
}

/// Reads the acks of one journal's publishes: reply subject
/// `<inbox>.<round>.<seq>`; a JSON `{"stream":..,"seq":N}` or an error.
async fn acks(mut sub: async_nats::Subscriber, shared: Arc<Shared>) {
    #[derive(serde::Deserialize)]
    struct Ack {
        #[serde(default)]
        seq: u64,
        #[serde(default)]
        error: Option<serde_json::Value>,
    }
    while let Some(m) = sub.next().await {
        let mut t = m.subject.rsplit('.');
        let (Some(seq), Some(round)) = (t.next(), t.next()) else {
            continue;
        };
        let (Ok(seq), Ok(round)) = (seq.parse::<u64>(), round.parse::<u64>()) else {
            continue;
        };
        if round != shared.round.load(Ordering::Acquire) {
            continue;
        }
        if let Some(st) = m.status {
            shared.fail(format!("publishing seq {seq} got status {st}"));
            continue;
        }
        match serde_json::from_slice::<Ack>(&m.payload) {
            Ok(Ack { error: Some(e), .. }) => {
                let d = e["description"].as_str().unwrap_or("an error");
                shared.fail(format!("the server refused seq {seq}: {d}"));
            }
            Ok(a) if a.seq == seq => {
                shared.acked.fetch_max(seq, Ordering::AcqRel);
            }
            Ok(a) => shared.fail(format!(
                "the server stored frame {seq} at stream seq {}",
                a.seq
            )),
            Err(e) => shared.fail(format!("the ack of seq {seq} is not JSON ({e})")),
        }
    }
}

/// The longest the export sleeps on the journal's doorbell with nothing in
/// flight before it drives the connection again.
const IDLE_WAIT: Duration = Duration::from_millis(2);

/// How the export waits while acks are due: [`crate::Poller`], or spinning
/// with `--busy-poll`.
enum Wait {
    Poll(crate::Poller),
    Spin,
}

impl Wait {
    fn new(busy: bool) -> Wait {
        if busy {
            Wait::Spin
        } else {
            crate::low_timer_slack();
            Wait::Poll(crate::Poller::new())
        }
    }

    fn idle(&mut self) {
        match self {
            Wait::Poll(p) => p.idle(),
            Wait::Spin => std::hint::spin_loop(),
        }
    }

    fn reset(&mut self) {
        if let Wait::Poll(p) = self {
            p.reset();
        }
    }
}

struct Exporter {
    opts: ExportOptions,
    conn: Conn,
    journal: String,
    stream: String,
    subject: Subject,
    inbox: String,
    shared: Arc<Shared>,
    cursor: Option<Cursor>,
    round: u64,
    progressed: bool,
    said_limits: bool,
}

impl Exporter {
    fn run(&mut self, rt: &tokio::runtime::Runtime, stop: &Either<'_>) -> Result<(), String> {
        let mut n = 0;
        let mut quiet = false;
        loop {
            if stop.is_set() {
                return Ok(());
            }
            self.progressed = false;
            match self.session(rt, stop) {
                Ok(()) => return Ok(()),
                Err(Fail::Fatal(e)) => return Err(e),
                Err(Fail::Retry(why)) => {
                    if self.progressed {
                        n = 0;
                        quiet = false;
                    }
                    if !quiet {
                        (self.opts.log)(&format!("{}: {why}; retrying", self.journal));
                    }
                    quiet = !self.progressed;
                    sleep_driving(rt, stop.0, backoff(n));
                    n += 1;
                }
            }
        }
    }

    /// Finds where to go on from (and whether the stream holds no message
    /// now); leaves the cursor there.
    fn sync(&mut self, rt: &tokio::runtime::Runtime) -> Result<(u64, bool), Fail> {
        let c = &self.conn.client;
        let dir = tape_journal::journal_dir(&self.opts.root);
        let name = &self.journal;
        let copts = CursorOptions {
            verify_crc: true,
            populate: false,
        };
        let damaged = |e: &dyn std::fmt::Display| Fail::Fatal(format!("journal {name}: {e}"));
        let (first, page_size) = match Cursor::open(&dir, name, Start::First, copts) {
            Ok(mut cur) => {
                let ps = cur.page_size();
                match cur.peek() {
                    Ok(Some(f)) => (f.seq(), ps),
                    Ok(None) => {
                        return Err(Fail::Retry(format!("journal {name} has no frame yet")))
                    }
                    Err(e) => return Err(damaged(&e)),
                }
            }
            Err(OpenError::NotFound { .. }) => {
                return Err(Fail::Retry(format!(
                    "journal {name} does not exist in {} yet",
                    dir.display()
                )))
            }
            Err(e) => return Err(damaged(&e)),
        };
        let info = match rt.block_on(api::stream_info(c, &self.stream))? {
            Some(i) => {
                let l = &self.opts.limits;
                if !self.said_limits
                    && (l.replicas > 0 || l.max_age.is_some() || l.max_bytes.is_some())
                {
                    (self.opts.log)(&format!(
                        "stream {} exists: its replicas and limits stay as they are (--replicas, --max-age and --max-bytes apply when the export creates it)",
                        self.stream
                    ));
                }
                i
            }
            None => {
                let desc = format!("tape journal {name}; page_size={page_size}");
                let i = rt.block_on(api::create_stream(
                    c,
                    &self.stream,
                    self.subject.as_str(),
                    &desc,
                    &self.opts.limits,
                ))?;
                (self.opts.log)(&format!(
                    "created stream {} (subject {}, {} replica{})",
                    self.stream,
                    self.subject,
                    i.replicas,
                    if i.replicas == 1 { "" } else { "s" }
                ));
                i
            }
        };
        self.said_limits = true;
        let next = self.resume_point(rt, &info, first, &dir, copts)?;
        let cur = Cursor::open(&dir, name, Start::Seq(next), copts).map_err(|e| damaged(&e))?;
        self.cursor = Some(cur);
        Ok((next, info.messages == 0))
    }

    fn resume_point(
        &self,
        rt: &tokio::runtime::Runtime,
        info: &StreamState,
        first: u64,
        dir: &std::path::Path,
        copts: CursorOptions,
    ) -> Result<u64, Fail> {
        let c = &self.conn.client;
        let (name, stream) = (&self.journal, &self.stream);
        let last = info.last_seq;
        if last == 0 {
            if first > 1 {
                self.start_at(rt, first)?;
                (self.opts.log)(&format!(
                    "journal {name} starts at seq {first} (older pages were pruned): stream {stream} starts there too"
                ));
            }
            return Ok(first);
        }
        let next = last + 1;
        if first > next {
            return Err(Fail::Fatal(format!(
                "frames {next} to {} of journal {name} were pruned before they were exported to stream {stream}: delete the stream to export the journal from its first frame on disk",
                first - 1
            )));
        }
        if first <= last && info.messages > 0 && last >= info.first_seq {
            let mut cur = Cursor::open(dir, name, Start::Seq(last), copts)
                .map_err(|e| Fail::Fatal(format!("journal {name}: {e}")))?;
            let frame: Option<Vec<u8>> = match cur.peek() {
                Ok(Some(f)) if f.seq() == last => Some(f.raw().to_vec()),
                Ok(_) => None,
                Err(e) => return Err(Fail::Fatal(format!("journal {name}: {e}"))),
            };
            let Some(frame) = frame else {
                return Err(Fail::Fatal(format!(
                    "stream {stream} holds seq {last} but journal {name} ends before it: the stream was exported from another journal of that name (delete the stream to start again)"
                )));
            };
            match rt.block_on(api::message(c, stream, last))? {
                Some(m) if m == frame => {}
                Some(_) => {
                    return Err(Fail::Fatal(format!(
                        "message {last} of stream {stream} is not frame {last} of journal {name}: another journal or publisher wrote to {} (delete the stream to start again)",
                        self.subject
                    )))
                }
                None => {}
            }
        }
        Ok(next)
    }

    /// Makes an empty stream's next sequence `first`: publishes `first − 1`
    /// empty placeholders (never a valid frame: an import passes over
    /// none of them, it refuses them), then purges below `first`. (A purge
    /// of an empty stream would set its first sequence too, but 2.9.10 then
    /// checks `Nats-Expected-Last-Sequence` against 0 for ever after.)
    fn start_at(&self, rt: &tokio::runtime::Runtime, first: u64) -> Result<(), Fail> {
        let c = &self.conn.client;
        let stream = &self.stream;
        rt.block_on(async {
            for _ in 1..first {
                c.publish(self.subject.clone(), bytes::Bytes::new())
                    .await
                    .map_err(|e| Fail::Retry(format!("cannot publish a placeholder: {e}")))?;
            }
            let _ = c.flush().await;
            Ok::<(), Fail>(())
        })?;
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            let st = rt
                .block_on(api::stream_info(c, stream))?
                .ok_or_else(|| Fail::Retry(format!("stream {stream} went away")))?;
            if st.last_seq == first - 1 {
                break;
            }
            if st.last_seq >= first {
                return Err(Fail::Fatal(format!(
                    "stream {stream} got messages from another publisher while the export set it to start at seq {first}: delete it and start again"
                )));
            }
            if Instant::now() > until {
                return Err(Fail::Retry(format!(
                    "stream {stream} took only {} of {} placeholders",
                    st.last_seq,
                    first - 1
                )));
            }
            rt.block_on(tokio::time::sleep(Duration::from_millis(20)));
        }
        rt.block_on(api::purge_below(c, stream, first))
    }

    fn session(&mut self, rt: &tokio::runtime::Runtime, stop: &Either<'_>) -> Result<(), Fail> {
        let epoch = self.conn.epoch.load(Ordering::Acquire);
        let (mut next, _) = self.sync(rt)?;
        self.round += 1;
        self.shared.acked.store(next - 1, Ordering::Release);
        self.shared.failed.store(false, Ordering::Release);
        self.shared.round.store(self.round, Ordering::Release);
        self.progressed = true;
        (self.opts.log)(&format!(
            "exporting {} to stream {} on {} from seq {next}",
            self.journal, self.stream, self.opts.server.url
        ));
        let mut last_acked = next - 1;
        let mut last_progress = Instant::now();
        let mut idle = Wait::new(self.opts.busy_poll);
        let mut driven = Instant::now();
        let window = self.opts.window.max(1);
        let stream_hdr = async_nats::HeaderValue::from(self.stream.as_str());
        let Some(mut cursor) = self.cursor.take() else {
            return Err(Fail::Retry("no cursor".into()));
        };
        let client = self.conn.client.clone();
        loop {
            if stop.is_set() {
                // Let what is in flight be acknowledged (not needed for
                // correctness: the next start reads the stream's end).
                let until = Instant::now() + Duration::from_secs(1);
                while self.shared.acked.load(Ordering::Acquire) < next - 1 && Instant::now() < until
                {
                    rt.block_on(tokio::time::sleep(Duration::from_millis(1)));
                }
                return Ok(());
            }
            if self.shared.failed.load(Ordering::Acquire) {
                let why = self
                    .shared
                    .why
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone();
                return Err(Fail::Retry(format!(
                    "{why}: reading the stream's last sequence again"
                )));
            }
            if self.conn.epoch.load(Ordering::Acquire) != epoch {
                return Err(Fail::Retry(
                    "the connection was made again: reading the stream's last sequence again"
                        .into(),
                ));
            }
            let acked = self.shared.acked.load(Ordering::Acquire);
            let now = Instant::now();
            if acked != last_acked {
                last_acked = acked;
                last_progress = now;
            }
            let inflight = next - 1 - acked;
            if inflight == 0 {
                last_progress = now;
            } else if now.duration_since(last_progress) > Duration::from_secs(3) {
                return Err(Fail::Retry(format!(
                    "no acknowledgement of seq {} for 3 s",
                    acked + 1
                )));
            }
            let mut sent = 0u64;
            while inflight + sent < window && sent < 512 {
                let f = match cursor.next() {
                    Ok(Some(f)) => f,
                    Ok(None) => break,
                    Err(ReadError::Damaged(d)) => {
                        return Err(Fail::Fatal(format!("journal {}: {d}", self.journal)))
                    }
                    Err(e) => return Err(Fail::Retry(format!("journal {}: {e}", self.journal))),
                };
                if f.seq() != next {
                    return Err(Fail::Fatal(format!(
                        "journal {} continues at seq {} where {next} was expected: frames were pruned before they were exported",
                        self.journal,
                        f.seq()
                    )));
                }
                let mut h = HeaderMap::new();
                h.insert("Nats-Expected-Stream", stream_hdr.clone());
                h.insert(
                    "Nats-Expected-Last-Sequence",
                    (next - 1).to_string().as_str(),
                );
                let reply = Subject::from(format!("{}.{}.{next}", self.inbox, self.round));
                let body = bytes::Bytes::copy_from_slice(f.raw());
                let publish =
                    client.publish_with_reply_and_headers(self.subject.clone(), reply, h, body);
                match rt.block_on(tokio::time::timeout(Duration::from_secs(2), publish)) {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        return Err(Fail::Retry(format!("cannot publish seq {next}: {e}")))
                    }
                    Err(_) => {
                        return Err(Fail::Retry(format!(
                            "cannot publish seq {next}: the client's queue stayed full for 2 s"
                        )))
                    }
                }
                next += 1;
                sent += 1;
            }
            // The runtime runs on this thread only inside `block_on`, and
            // a publish that finds room returns at once: let the connection
            // write what was queued and read the acks now, after a burst,
            // while acks are due, and at least every millisecond (pings,
            // status answers).
            if sent > 0 || inflight > 0 || driven.elapsed() > Duration::from_millis(1) {
                rt.block_on(tokio::task::yield_now());
                driven = Instant::now();
            }
            if sent == 0 && inflight == 0 && !self.opts.busy_poll {
                // Nothing to send, nothing to hear back: asleep on the
                // journal's doorbell, woken by the writer's next frame;
                // back within IDLE_WAIT to drive the connection (pings,
                // status answers).
                cursor.wait(IDLE_WAIT);
                // The next turn drives the connection, whatever it sends.
                driven = Instant::now() - Duration::from_millis(2);
            } else if sent == 0 {
                idle.idle();
            } else {
                idle.reset();
            }
        }
    }
}
